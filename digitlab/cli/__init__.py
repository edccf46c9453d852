"""The ``digitlab`` command: parse arguments, call the library, print.

Each subcommand is a ``cmd_<name>(args) -> int`` function in the module of its concern
(training, predict, serve), which also registers its arguments. User errors
(``DigitlabError``) are printed as one line and exit with code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import DigitlabError
from . import predict, serve, training
from .common import _err, _Parser

# What `pip install 'digitlab[train]'` adds (training, evaluation, plots, export).
TRAIN_EXTRA = {"torch", "matplotlib", "onnx", "onnxscript"}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="digitlab", description="Train, evaluate and serve handwritten-digit classifiers.")
    p.add_argument("--version", action="version", version=f"digitlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (training, predict, serve):
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # `train --nproc` hands the same command to each process
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except DigitlabError as exc:
        _err(f"digitlab {args.command}: error: {exc}")
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in TRAIN_EXTRA:
            raise
        # an install without the train extra reads and serves digits, but cannot train
        _err(f"digitlab {args.command}: error: this needs {exc.name}, which is not installed: "
             f"pip install 'digitlab[train]'")
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
