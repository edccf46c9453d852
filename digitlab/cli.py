"""The ``digitlab`` command: parse arguments, call the library, print.

Each subcommand is a ``cmd_<name>(args) -> int`` function. User errors (``DigitlabError``) are
printed as one line and exit with code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import DigitlabError


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are a single line (plus a pointer to --help)."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(cast, minimum, strict: bool = False):
    """An argparse type: ``cast`` (int or float) that must be >= minimum (> if strict)."""
    kind = "a whole number" if cast is int else "a number"

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if (v <= minimum) if strict else (v < minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum}, got {v}")
        return v
    return parse


_positive_int = _number(int, 1)
_nonneg_int = _number(int, 0)
_positive_float = _number(float, 0.0, strict=True)
_nonneg_float = _number(float, 0.0)


def _model_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# models


def cmd_models(args) -> int:
    from .models import MODELS, count_parameters, create_model, list_models
    rows = []
    for name in list_models():
        spec = MODELS[name]
        rows.append({"name": name, "parameters": count_parameters(create_model(name)),
                     "description": spec.description, "defaults": spec.defaults})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'name':<{w}}  {'params':>9}  description")
    for r in rows:
        print(f"{r['name']:<{w}}  {r['parameters']:>9,}  {r['description']}")
    return 0


# ---------------------------------------------------------------------------------------------
# train


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .training import AUGMENTS, OPTIMIZERS, PRECISIONS, PRESET_HELP, PRESETS, SCHEDULES
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="cnn", help="architecture from `digitlab models` (default: cnn)")
    g.add_argument("--model-arg", action="append", type=_model_arg, default=[], metavar="KEY=VALUE",
                   help="architecture option, JSON value (e.g. widths=[16,32,64], depth=2, stem=stride); repeatable")
    presets = "; ".join(f"{k}: {PRESET_HELP[k]}" for k in sorted(PRESETS)).replace("%", "%%")
    g.add_argument("--preset", choices=sorted(PRESETS),
                   help=f"named recipe; explicit flags still win. {presets}")
    g.add_argument("--data-dir", default="mnist", metavar="DIR",
                   help="dataset folder (IDX files, or DIR/<label>/ images) or name (default: bundled mnist)")
    g.add_argument("--val-size", type=_nonneg_int, default=5000,
                   help="training images held out for validation (default: 5000)")
    g = p.add_argument_group("optimisation (defaults depend on the model; see `digitlab models --json`)")
    g.add_argument("--epochs", type=_positive_int)
    g.add_argument("--batch-size", type=_positive_int)
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--lr", type=_positive_float, help="peak learning rate")
    g.add_argument("--momentum", type=_nonneg_float, default=0.9, help="sgd momentum / adam beta1 (default 0.9)")
    g.add_argument("--schedule", choices=SCHEDULES)
    g.add_argument("--warmup", type=_nonneg_float, default=0.2, help="warm-up fraction of steps (default 0.2)")
    g.add_argument("--weight-decay", type=_nonneg_float)
    g.add_argument("--label-smoothing", type=_nonneg_float)
    g.add_argument("--augment", choices=AUGMENTS,
                   help="none | standard (rotation, scale, shift) | robust (+ slant, stroke "
                        "thickness, light pen, 5%% non-digits trained towards uniform)")
    g.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                   help="same as --augment none")
    g.add_argument("--clean-epochs", type=_nonneg_int, metavar="N",
                   help="train the last N epochs on the images as they are, without augmentation "
                        "(default 0; fast-99.5 uses 2)")
    g.add_argument("--situations", type=_nonneg_int, metavar="N",
                   help="also train on N training digits rendered into form boxes, graph and "
                        "ruled paper and tiny crops, as preprocessing hands them over "
                        "(default 0; robust uses 24000)")
    g.add_argument("--lookalikes", type=_nonneg_int, metavar="N",
                   help="with --augment robust: N look-alike non-digits (letters, signs) among "
                        "the outliers (default 0; robust uses 10000)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    g.add_argument("--precision", choices=PRECISIONS, help="auto uses bf16 autocast where the hardware is fast at it")
    g.add_argument("--tta", action="store_true", help="test-time augmentation (shifts) in the final evaluation")
    g.add_argument("--out", metavar="DIR", help="model directory to write (default: runs/<model>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    g.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    g.add_argument("--no-eval", action="store_true", help="skip the final test-set evaluation and report")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("smoke runs")
    g.add_argument("--subset", type=_positive_int, help="train on the first N images only")
    g.add_argument("--max-steps", type=_positive_int, help="stop after N optimiser steps")


def train_config_from_args(args):
    from .training import TrainConfig
    return TrainConfig(
        model=args.model, model_kwargs=dict(args.model_arg), preset=args.preset, data=args.data_dir,
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        warmup=args.warmup, label_smoothing=args.label_smoothing, augment=args.augment,
        clean_epochs=args.clean_epochs, situations=args.situations, lookalikes=args.lookalikes,
        val_size=args.val_size, seed=args.seed,
        device=args.device, precision=args.precision, subset=args.subset,
        max_steps=args.max_steps, tta=args.tta)


def cmd_train(args) -> int:
    from tqdm import tqdm

    from .training import default_out_dir, resume_plan, train

    cfg = train_config_from_args(args)
    if args.resume and not args.out:
        raise DigitlabError("--resume needs --out DIR (the interrupted run's directory)")
    resolved = cfg.resolved()  # validate before any work
    out = Path(args.out) if args.out else default_out_dir(resolved.model)
    show = not args.quiet
    bar = None

    def on_progress(p):
        nonlocal bar
        if not show:
            return
        if bar is None or bar.desc != f"epoch {p.epoch}/{p.epochs}":
            if bar is not None:
                bar.close()
            bar = tqdm(total=p.steps, desc=f"epoch {p.epoch}/{p.epochs}", unit="step",
                       leave=False, file=sys.stderr, dynamic_ncols=True)
        bar.update(p.step - bar.n)
        bar.set_postfix(loss=f"{p.loss:.4f}", acc=f"{100 * p.acc:.2f}%", refresh=False)

    def on_note(what: str, total: int):
        if not show:
            return None
        note = tqdm(total=total, desc=what, unit="img", leave=False, file=sys.stderr,
                    dynamic_ncols=True)

        def done(k: int) -> None:
            note.update(k)
            if note.n >= total:
                note.close()
        return done

    def on_epoch(row):
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        if show:
            _err(f"epoch {row['epoch']:>3}: train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%"
                 f" | val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}% | {row['seconds']:.1f}s")

    from .data import load_dataset
    dataset = None if args.resume else load_dataset(resolved.data, progress=show)
    if args.resume:
        note = {"restart": "no checkpoint yet (stopped during epoch 1): training again from the "
                           "start, with the run's own options",
                "report": "the model was saved before the run stopped: writing its report"}
        if resume_plan(out) in note:
            _err(f"{out}: {note[resume_plan(out)]}")
    if show and not args.resume:
        _err(f"training {resolved.model} on {dataset.name}: {resolved.epochs} epochs, "
             f"batch {resolved.batch_size}, {resolved.optimizer} lr {resolved.lr} {resolved.schedule}, "
             f"augment {resolved.augment}"
             + (f" (the last {resolved.clean_epochs} epochs without)" if resolved.clean_epochs else "")
             + f" -> {out}")
    try:
        summary = train(cfg, out=out, dataset=dataset, resume=args.resume, force=args.force,
                        on_progress=on_progress, on_epoch=on_epoch, on_note=on_note,
                        evaluate_test=not args.no_eval)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        _err(f"\ninterrupted: checkpoint saved; continue with: digitlab train --resume --out {out}")
        return 130
    print(f"trained {resolved.model} in {summary['train_seconds']:.1f}s -> {summary['out']}")
    if "test" in summary:
        t = summary["test"]
        print(f"test accuracy {100 * t['accuracy']:.2f}%  loss {t['loss']:.4f}  "
              f"report: {Path(summary['out']) / 'report.md'}")
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate
    m = evaluate(args.model_dir, args.data_dir, tta=args.tta, device=args.device,
                 write=not args.no_write)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    t = m["test"]
    print(f"{m['dataset']['name']} test: accuracy {100 * t['accuracy']:.2f}% "
          f"({t['n'] - t['errors']}/{t['n']}), loss {t['loss']:.4f}, macro F1 {t['macro_f1']:.4f}")
    print(f"{'class':>8} {'precision':>9} {'recall':>8} {'f1':>8} {'support':>8}")
    for r in m["per_class"]:
        print(f"{r['class']:>8} {r['precision']:>9.4f} {r['recall']:>8.4f} {r['f1']:>8.4f} {r['support']:>8}")
    if not args.no_write and args.model_dir:
        print(f"report: {Path(args.model_dir) / 'report.md'}")
    return 0


# ---------------------------------------------------------------------------------------------
# ensemble


def cmd_ensemble(args) -> int:
    from .artifacts import make_ensemble
    from .data import load_dataset
    from .evaluation import evaluate_dir
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise DigitlabError(f"{out}: already exists and is not empty; use --force to overwrite")
    make_ensemble(args.model_dirs, out)
    print(f"ensemble of {len(args.model_dirs)} models -> {out}")
    if not args.no_eval:
        m = evaluate_dir(out, load_dataset(args.data_dir), tta=args.tta)
        print(f"test accuracy {100 * m['test']['accuracy']:.2f}%  loss {m['test']['loss']:.4f}  "
              f"report: {out / 'report.md'}")
    return 0


# ---------------------------------------------------------------------------------------------
# export


def cmd_export(args) -> int:
    from .export import export_onnx
    r = export_onnx(args.model_dir, args.out)
    print(f"exported {args.model_dir or 'the shipped model'} -> {r.path} ({r.bytes / 1024:,.0f} KB, "
          f"ONNX opset {r.opset}, model id {r.model_id[:12]})")
    print(f"checked against PyTorch on {r.images:,} MNIST test images: same prediction for all, "
          f"max abs difference {r.max_abs_diff_logits:.2g} (logits), "
          f"{r.max_abs_diff_probs:.2g} (probabilities)")
    return 0


# ---------------------------------------------------------------------------------------------
# download


def cmd_download(args) -> int:
    from .data import download
    path = download(args.name, args.dir)
    print(f"{args.name} -> {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# serve


def cmd_serve(args) -> int:
    import socket

    from .artifacts import default_model_dir, load_model
    from .server.protocol import serve

    model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()
    load_model(model_dir)  # a bad directory is a one-line error here, not a traceback per worker
    with socket.socket() as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise DigitlabError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    if args.log_format == "text":  # json: every line is a JSON object (uvicorn says it too)
        print(f"serving {model_dir} at http://{args.host}:{args.port}/ (API docs at /docs), "
              f"{args.workers} worker(s); Ctrl-C stops", flush=True)
    serve(model_dir, args.host, args.port, workers=args.workers, threads=args.threads,
          log_level=args.log_level, log_format=args.log_format, access_log=args.access_log,
          graceful_timeout=args.graceful_timeout)
    return 0


# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# predict


def _describe(p, number: bool) -> str:
    """One human-readable line per prediction."""
    name = p.path if p.path is not None else "<image>"
    if p.error:
        return p.error if p.error.startswith(name) else f"{name}: error: {p.error}"
    if number and p.digits is not None:
        if p.number is None:
            return f"{name}: no number ({p.reason})"
        parts = " ".join(f"{d.top_k[0][0] if d.top_k else '?'}:{d.confidence:.0%}"
                         f"{' (unsure)' if d.rejected else ''}" for d in p.digits)
        tail = f"  [{p.reason}]" if p.reason else ""
        return f"{name}: {p.number}  (per digit {parts}){tail}"
    top = ", ".join(f"{k} {v:.1%}" for k, v in p.top_k)
    if p.rejected:
        return f"{name}: no digit ({p.reason})" + (f"  top-{len(p.top_k)}: {top}" if top else "")
    return f"{name}: {p.digit}  ({p.confidence:.1%})  top-{len(p.top_k)}: {top}"


def cmd_predict(args) -> int:
    from .predict import Predictor, expand_inputs, printable, row, save_stages, write_results
    if args.output and Path(args.output).suffix.lower() not in (".csv", ".json"):
        raise DigitlabError(f"{args.output}: --output must end in .csv or .json")
    paths, expanded = expand_inputs(args.images)
    if not paths:
        raise DigitlabError(f"no images found in {' '.join(args.images)}")
    predictor = Predictor(args.model_dir, reject_threshold=args.reject_threshold,
                          precision=args.precision)
    bar = None
    if len(paths) > 3 and (expanded or sys.stderr.isatty()):
        from tqdm import tqdm
        bar = tqdm(total=len(paths), unit="img", desc="predicting", file=sys.stderr, leave=False)
    try:
        preds = predictor.predict(paths, top_k=args.top_k, number=args.number,
                                  keep_stages=bool(args.debug_dir),
                                  progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if args.debug_dir:
        used: set[str] = set()
        for i, p in enumerate(preds):
            if p.error:
                continue
            name = Path(paths[i]).stem or f"image{i}"
            name = f"{name}-{i}" if name in used else name
            used.add(name)
            save_stages(p, Path(args.debug_dir) / name)
    if args.output:
        write_results(args.output, preds, args.number)
    if args.json:
        print(json.dumps([row(p, args.number) for p in preds], indent=2))
    else:
        for p in preds:
            print(printable(_describe(p, args.number)))
    failed = sum(p.error is not None for p in preds)
    if failed:
        _err(f"digitlab predict: {failed} of {len(preds)} images could not be read")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    from .training import PRECISIONS  # imported by the train options below anyway
    p = _Parser(prog="digitlab", description="Train, evaluate and serve handwritten-digit classifiers.")
    p.add_argument("--version", action="version", version=f"digitlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("models", help="list the model zoo")
    s.add_argument("--json", action="store_true", help="print JSON (with each model's training defaults)")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("train", help="train a model on bundled MNIST or your data",
                       description="Train a model and write its model directory "
                                   "(model.safetensors, config.json, metrics and report).")
    _add_train_args(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="test metrics and report for a model directory")
    s.add_argument("--model-dir", metavar="DIR", help="model directory (default: the shipped model)")
    s.add_argument("--data-dir", default="mnist", metavar="DIR",
                   help="dataset folder or name (default: bundled mnist)")
    s.add_argument("--json", action="store_true", help="print the metrics as JSON")
    s.add_argument("--tta", action="store_true", help="test-time augmentation (small shifts)")
    s.add_argument("--device", default="auto")
    s.add_argument("--no-write", action="store_true", help="do not write metrics.json / report files")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("ensemble", help="combine model directories into one (averaged probabilities)")
    s.add_argument("model_dirs", nargs="+", metavar="DIR", help="two or more model directories")
    s.add_argument("--out", required=True, metavar="DIR", help="ensemble model directory to write")
    s.add_argument("--data-dir", default="mnist", metavar="DIR", help="test set for the report (default: mnist)")
    s.add_argument("--tta", action="store_true", help="test-time augmentation in the report")
    s.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation")
    s.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    s.set_defaults(func=cmd_ensemble)

    s = sub.add_parser("predict", help="read the digit (or number) in your images",
                       description="Read digits in photos, scans and drawings: any size, colour "
                                   "and position. Exit code 1 if some files could not be read.")
    s.add_argument("images", nargs="+", metavar="IMAGE|DIR|GLOB",
                   help="image files, folders (searched recursively) or glob patterns")
    s.add_argument("--model-dir", metavar="DIR", help="model directory (default: the shipped model)")
    s.add_argument("--top-k", type=_positive_int, default=3, metavar="K",
                   help="how many candidates to show (default 3)")
    s.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    s.add_argument("--number", action="store_true",
                   help="read a row of digits (a whole number) left to right")
    s.add_argument("--output", metavar="FILE", help="also write the results to FILE (.csv or .json)")
    s.add_argument("--debug-dir", metavar="DIR",
                   help="write the preprocessing stages of each image (what the model saw)")
    s.add_argument("--reject-threshold", type=float, metavar="P",
                   help="reject digits whose confidence is below P (default: the model's, "
                        "see docs/predict.md)")
    s.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default) classifies batches of 32+ digits under bf16 autocast "
                        "where the hardware is fast at it; fp32 never does")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("export", help="export a model directory to ONNX (checked against PyTorch)",
                       description="Write the model as an ONNX graph (dynamic batch, float32 "
                                   "(N, 1, 28, 28) in [0, 1], ink bright on dark; class names and "
                                   "model id in its metadata), run it with ONNX Runtime next to "
                                   "PyTorch on 1,000 MNIST test images, and keep it only if "
                                   "both agree.")
    s.add_argument("--model-dir", metavar="DIR", help="model directory (default: the shipped model)")
    s.add_argument("--format", choices=["onnx"], default="onnx", help="output format (default: onnx)")
    s.add_argument("--out", metavar="FILE.onnx",
                   help="file to write (default: DIR/model.onnx, beside model.safetensors)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("download", help="download a public MNIST-format dataset (needs internet)")
    s.add_argument("name", help="dataset name, e.g. fashion-mnist")
    s.add_argument("--dir", help="target folder (default: ~/.cache/digitlab/NAME)")
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("serve", help="run the web service and drawing page",
                       description="Serve the JSON API (/api, docs at /docs) and the drawing page "
                                   "(/) with uvicorn. The model is loaded once per worker.")
    s.add_argument("--model-dir", metavar="DIR", help="model directory (default: the shipped model)")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1; "
                                                       "0.0.0.0 for every interface)")
    s.add_argument("--port", type=_positive_int, default=8000, help="TCP port (default: 8000)")
    s.add_argument("--workers", type=_positive_int, default=1,
                   help="worker processes, each with its own copy of the model (default: 1)")
    s.add_argument("--threads", type=_positive_int, default=1,
                   help="torch threads per worker (default: 1: requests are single small images)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info",
                                                           "debug"])
    s.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="text (default) or json: one JSON object per line (time, level, message; "
                        "access lines add request_id, method, path, status, duration_ms)")
    s.add_argument("--access-log", action="store_true",
                   help="log every request (with its X-Request-ID and duration)")
    s.add_argument("--graceful-timeout", type=_nonneg_float, default=10.0, metavar="SECONDS",
                   help="on SIGTERM, stop accepting connections and give the requests in flight "
                        "this long to finish (default: 10)")
    s.set_defaults(func=cmd_serve)

    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except DigitlabError as exc:
        _err(f"digitlab {args.command}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
