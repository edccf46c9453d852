"""The ``digitlab`` command: parse arguments, call the library, print.

Each subcommand is a ``cmd_<name>(args) -> int`` function. User errors (``DigitlabError``) are
printed as one line and exit with code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _fraction(text: str) -> float:
    v = _nonneg_float(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction below 1, got {v}")
    return v


def _model_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# models


def cmd_models(args) -> int:
    from .models import MODELS, list_models
    rows = []
    for name in list_models():
        spec = MODELS[name]
        rows.append({"name": name, "parameters": spec.count(),
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
    from .config import AUGMENTS, OPTIMIZERS, PRECISIONS, PRESET_HELP, PRESETS, SCHEDULES
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
    g = p.add_argument_group("many processes (see docs/training.md)")
    g.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                   help="data-parallel training in N processes on this machine (starts "
                        "torchrun's elastic agent; --batch-size stays the global batch)")
    g.add_argument("--sync-bn", action="store_true",
                   help="distributed runs on GPUs: batch-norm statistics over all processes")
    g = p.add_argument_group("smoke runs")
    g.add_argument("--subset", type=_positive_int, help="train on the first N images only")
    g.add_argument("--max-steps", type=_positive_int, help="stop after N optimiser steps")


def train_config_from_args(args):
    from .config import TrainConfig
    return TrainConfig(
        model=args.model, model_kwargs=dict(args.model_arg), preset=args.preset, data=args.data_dir,
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        warmup=args.warmup, label_smoothing=args.label_smoothing, augment=args.augment,
        clean_epochs=args.clean_epochs, situations=args.situations, lookalikes=args.lookalikes,
        val_size=args.val_size, seed=args.seed,
        device=args.device, precision=args.precision, subset=args.subset,
        max_steps=args.max_steps, tta=args.tta, sync_bn=args.sync_bn)


def cmd_train(args) -> int:
    from tqdm import tqdm

    from .checkpoint import describe, resume_plan
    from .training import DISTRIBUTED_OUT, default_out_dir, train

    cfg = train_config_from_args(args)
    if args.resume and not args.out:
        raise DigitlabError("--resume needs --out DIR (the interrupted run's directory)")
    resolved = cfg.resolved()  # validate before any work
    if not args.out and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DigitlabError(DISTRIBUTED_OUT)
    out = Path(args.out) if args.out else default_out_dir(resolved.model)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from .distributed import launch
        # every process must write to the same directory: name it once, here
        argv = _without_option(args.argv, "--nproc")
        return launch(args.nproc, argv if args.out else [*argv, "--out", str(out)])
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 prints
    show = not args.quiet and rank == 0
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
    from .distributed import restarted
    # a worker that torchrun replaced after a failure picks up where the run stopped
    resume = args.resume or (restarted() and resume_plan(out) in ("continue", "restart", "report"))
    dataset = None if resume else load_dataset(resolved.data, progress=show)
    if resume:
        note = {"restart": "no checkpoint yet (stopped during epoch 1): training again from the "
                           "start, with the run's own options",
                "report": "the model was saved before the run stopped: writing its report"}
        if resume_plan(out) in note and rank == 0:
            _err(f"{out}: {note[resume_plan(out)]}")
        where = describe(out)
        if where and rank == 0:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            _err(f"resuming {out} at epoch {where['epoch'] + 1}/{where['epochs']}, step "
                 f"{where['step']}" + ("" if where["world_size"] == world else
                                       f" (saved by {where['world_size']} processes, continued "
                                       f"by {world}: same data order, new augmentation draws)"))
    if show and not resume:
        _err(f"training {resolved.model} on {dataset.name}: {resolved.epochs} epochs, "
             f"batch {resolved.batch_size}, {resolved.optimizer} lr {resolved.lr} {resolved.schedule}, "
             f"augment {resolved.augment}"
             + (f" (the last {resolved.clean_epochs} epochs without)" if resolved.clean_epochs else "")
             + f" -> {out}")
    try:
        summary = train(cfg, out=out, dataset=dataset, resume=resume, force=args.force,
                        on_progress=on_progress, on_epoch=on_epoch, on_note=on_note,
                        evaluate_test=not args.no_eval)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if rank == 0:
            _err(f"\ninterrupted: checkpoint saved; continue with: digitlab train --resume "
                 f"--out {out}")
        return 130
    if rank != 0:
        return 0
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
    from .io import require_empty_dir
    out = require_empty_dir(args.out, args.force)
    make_ensemble(args.model_dirs, out)
    print(f"ensemble of {len(args.model_dirs)} models -> {out}")
    if not args.no_eval:
        m = evaluate_dir(out, load_dataset(args.data_dir), tta=args.tta)
        print(f"test accuracy {100 * m['test']['accuracy']:.2f}%  loss {m['test']['loss']:.4f}  "
              f"report: {out / 'report.md'}")
    return 0


# ---------------------------------------------------------------------------------------------
# compare


def cmd_compare(args) -> int:
    from . import compare
    runs = compare.load_runs(args.model_dirs)
    written = compare.write(runs, args.out) if args.out else {}
    if args.json:
        print(json.dumps(compare.to_json(runs), indent=2))
    else:
        print(compare.to_text(runs))
    for path in written.values():
        _err(f"wrote {path}")
    if args.out and "figure" not in written:
        _err("no validation curves: none of these runs has a per-epoch history")
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
    from .server.app import Settings
    from .server.protocol import serve

    model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()
    load_model(model_dir)  # a bad directory is a one-line error here, not a traceback per worker
    feedback, feedback_db = _serve_feedback_settings(args)
    with socket.socket() as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise DigitlabError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    if args.log_format == "text":  # json: every line is a JSON object (uvicorn says it too)
        print(f"serving {model_dir} at http://{args.host}:{args.port}/ (API docs at /docs), "
              f"{args.workers} worker(s); Ctrl-C stops", flush=True)
        if feedback_db:
            print(f"storing feedback in {feedback_db}", flush=True)
    settings = Settings(model_dir=str(model_dir), torch_threads=args.threads,
                        workers=args.workers, access_log=args.access_log, **feedback)
    serve(settings, args.host, args.port, log_level=args.log_level,
          log_format=args.log_format, graceful_timeout=args.graceful_timeout)
    return 0


def _serve_feedback_settings(args) -> tuple[dict, str | None]:
    """The feedback and admin settings of `digitlab serve`, checked, and the database as it is
    shown (no password). The database is created or upgraded here, once, before any worker
    starts."""
    import os

    from .server.admin import ADMIN_TOKEN_ENV, check_token

    token = args.admin_token if args.admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
    out = dict(feedback_db=None, feedback_rate=args.feedback_rate,
               feedback_burst=args.feedback_burst, admin_token=check_token(token))
    if not args.feedback_db:
        return out, None
    from .feedback import open_store
    from .feedback.store import shown
    with open_store(args.feedback_db) as store:
        out["feedback_db"] = args.feedback_db
        return out, shown(store.url)


# ---------------------------------------------------------------------------------------------
# feedback


def cmd_feedback(args) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from .feedback import export_dataset, open_store
    try:
        with open_store(args.db, create=False) as store:
            if args.feedback_command == "stats":
                stats = store.stats()
                if args.json:
                    print(json.dumps(stats.to_dict(), indent=2))
                    return 0
                print(f"{stats.total} stored: {stats.right} right, {stats.wrong} wrong, "
                      f"{stats.rejected} without an answer")
                print(f"{'label':>5} {'total':>7} {'right':>7} {'wrong':>7} {'rejected':>9}")
                for label, c in stats.by_label.items():
                    print(f"{label:>5} {c['total']:>7} {c['right']:>7} {c['wrong']:>7} "
                          f"{c['rejected']:>9}")
                return 0
            if args.feedback_command == "export":
                summary = export_dataset(store, args.out, force=args.force)
                print(f"{summary['images']} images -> {args.out}/<label>/<id>.png"
                      + (f" ({summary['duplicates_skipped']} duplicates skipped)"
                         if summary["duplicates_skipped"] else "")
                      + f"; train with: digitlab train --data-dir {args.out}")
                return 0
            deleted = store.delete(args.ids)
            missing = sorted(set(args.ids) - set(deleted))
            print(f"deleted {len(deleted)} row(s)" + (f": {' '.join(map(str, deleted))}"
                                                      if deleted else ""))
            if missing:
                _err(f"digitlab feedback delete: no feedback with id {' '.join(map(str, missing))}")
                return 1
            return 0
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise DigitlabError(f"feedback database: {str(reason).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------
# finetune


def cmd_finetune(args) -> int:
    import tempfile

    from .artifacts import default_model_dir
    from .data import load_dataset
    from .finetune import finetune

    model_dir = args.model_dir or default_model_dir()
    with tempfile.TemporaryDirectory(prefix="digitlab-feedback-") as tmp:
        source = args.data_dir
        if args.feedback_db:
            from .feedback import export_dataset, open_store
            with open_store(args.feedback_db, create=False) as store:
                export_dataset(store, Path(tmp) / "export")
            source = Path(tmp) / "export"
        feedback = load_dataset(source, progress=not args.quiet)
        _err(f"fine-tuning {Path(model_dir).name} on {len(feedback.train_images)} feedback "
             f"images ({100 * args.holdout:.0f}% held out) with {100 * args.replay:.0f}% MNIST "
             f"replay, {args.epochs} epochs -> {args.out}")
        r = finetune(model_dir, feedback, args.out, epochs=args.epochs, replay=args.replay,
                     holdout=args.holdout, lr=args.lr, seed=args.seed, force=args.force)

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"
    b, a = r["before"], r["after"]
    print(f"fine-tuned in {r['seconds']:.1f}s -> {args.out}")
    print(f"held-out feedback ({r['held_out']}): {pct(b['feedback_holdout'])} -> "
          f"{pct(a['feedback_holdout'])}   MNIST test: {pct(b['mnist_test'])} -> "
          f"{pct(a['mnist_test'])}   report: {Path(args.out) / 'report.md'}")
    return 0


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
    from .config import PRECISIONS
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

    s = sub.add_parser("compare", help="put trained model directories side by side",
                       description="One table (model, parameters, epochs, training time, test "
                                   "accuracy and loss, per-class F1) from each directory's "
                                   "config.json and metrics.json, and with --out a figure of "
                                   "the runs' validation curves.")
    s.add_argument("model_dirs", nargs="+", metavar="DIR", help="model directories with test "
                   "metrics (written by `digitlab train` or `digitlab evaluate`)")
    s.add_argument("--out", metavar="DIR", help="also write comparison.md, comparison.json and "
                                                "validation_curves.png to DIR")
    s.add_argument("--json", action="store_true", help="print JSON, one object per run")
    s.set_defaults(func=cmd_compare)

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
    g = s.add_argument_group("feedback and admin (docs/server.md: Learning from users)")
    g.add_argument("--feedback-db", metavar="PATH|URL",
                   help="store what users say about the answers: an SQLite file (made if "
                        "missing) or a SQLAlchemy URL such as postgresql+psycopg://user@host/db "
                        "(default: nothing is stored)")
    g.add_argument("--feedback-rate", type=_positive_float, default=30.0, metavar="N",
                   help="feedback posts per minute per client address (default 30)")
    g.add_argument("--feedback-burst", type=_positive_int, default=10, metavar="N",
                   help="feedback posts one client may send at once (default 10)")
    g.add_argument("--admin-token", metavar="TOKEN",
                   help="bearer token of the admin endpoints (model reload, deleting feedback); "
                        "default: $DIGITLAB_ADMIN_TOKEN, which other users cannot see in the "
                        "process list; without either they are off")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("feedback", help="the feedback a server stored: stats, export, delete",
                       description="Read and manage a feedback database written by "
                                   "`digitlab serve --feedback-db`. Its schema is upgraded in "
                                   "place if an older digitlab wrote it.")
    fsub = s.add_subparsers(dest="feedback_command", metavar="ACTION", required=True,
                            parser_class=_Parser)
    db_help = "the feedback database: SQLite file or SQLAlchemy URL"
    f = fsub.add_parser("stats", help="counts by label, right and wrong")
    f.add_argument("--db", required=True, metavar="PATH|URL", help=db_help)
    f.add_argument("--json", action="store_true", help="print JSON")
    f = fsub.add_parser("export", help="write DIR/<label>/<id>.png for `digitlab train --data-dir`",
                        description="Write the stored original images as an image-folder "
                                    "dataset DIR/<label>/<id>.png (all ten label folders; an "
                                    "image stored twice with the same label once) and "
                                    "DIR/feedback-export.json.")
    f.add_argument("--db", required=True, metavar="PATH|URL", help=db_help)
    f.add_argument("--out", required=True, metavar="DIR", help="folder to write (new or empty)")
    f.add_argument("--force", action="store_true", help="replace an earlier export in DIR")
    f = fsub.add_parser("delete", help="delete stored images by id (privacy requests)")
    f.add_argument("--db", required=True, metavar="PATH|URL", help=db_help)
    f.add_argument("ids", nargs="+", type=_nonneg_int, metavar="ID", help="row ids (the id "
                   "POST /api/feedback answered)")
    s.set_defaults(func=cmd_feedback)

    s = sub.add_parser("finetune", help="train a model further on users' corrections",
                       description="Start from a model directory's weights and recipe, train on "
                                   "feedback images mixed with MNIST replay (so that it does not "
                                   "forget), and write a model directory whose report shows "
                                   "the accuracy before and after on held-out feedback and on "
                                   "the MNIST test set.")
    s.add_argument("--model-dir", metavar="DIR", help="model to start from (default: the shipped model)")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", metavar="DIR", help="feedback images, DIR/<label>/*.png "
                     "(what `digitlab feedback export` writes)")
    src.add_argument("--feedback-db", metavar="PATH|URL",
                     help="read the feedback straight from a server's database")
    s.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    s.add_argument("--epochs", type=_positive_int, default=3, help="default 3 (8,000 images each)")
    s.add_argument("--replay", type=_fraction, default=0.75, metavar="F",
                   help="fraction of each epoch that is MNIST training digits (default 0.75)")
    s.add_argument("--holdout", type=_fraction, default=0.2, metavar="F",
                   help="fraction of the feedback kept aside to score before/after (default 0.2)")
    s.add_argument("--lr", type=_positive_float, help="peak learning rate (default: a tenth of "
                   "the model's recipe)")
    s.add_argument("--seed", type=int, default=0, help="seeds the held-out slice, replay and "
                   "augmentation")
    s.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_finetune)

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
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
