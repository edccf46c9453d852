"""`digitlab models | train | evaluate | ensemble | compare | finetune | download`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import DigitlabError
from .common import (_err, _fraction, _model_arg, _nonneg_float,
                     _nonneg_int, _positive_float, _positive_int, _without_option)


def cmd_models(args) -> int:
    from ..models import MODELS, list_models
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


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from ..config import AUGMENTS, OPTIMIZERS, PRECISIONS, PRESET_HELP, PRESETS, SCHEDULES
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
                        "thickness, light pen, 10%% non-digits trained towards uniform)")
    g.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                   help="same as --augment none")
    g.add_argument("--clean-epochs", type=_nonneg_int, metavar="N",
                   help="train the last N epochs on the images as they are, without augmentation "
                        "(default 0; fast-99.5 uses 2)")
    g.add_argument("--situations", type=_nonneg_int, metavar="N",
                   help="also train on N training digits rendered into form boxes, graph and "
                        "ruled paper and tiny crops, as preprocessing hands them over "
                        f"(default 0; robust uses {PRESETS['robust']['situations']})")
    g.add_argument("--lookalikes", type=_nonneg_int, metavar="N",
                   help="with --augment robust: N look-alike non-digits (letters, signs) among "
                        f"the outliers (default 0; robust uses {PRESETS['robust']['lookalikes']})")
    g = p.add_argument_group("knowledge distillation (see docs/training.md)")
    g.add_argument("--teacher", action="append", default=[], metavar="DIR", dest="teachers",
                   help="a model directory whose predictions the new model also learns (its "
                        "probabilities softened, averaged over every --teacher); repeatable")
    g.add_argument("--distill-weight", type=_positive_float, default=0.5, metavar="W",
                   help="the teachers' share of the loss, in (0, 1] (default 0.5)")
    g.add_argument("--distill-temperature", type=_positive_float, default=2.0, metavar="T",
                   help="softening of teacher and student outputs (default 2)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--split-seed", type=int, metavar="SEED",
                   help="hold out the validation digits that seed SEED holds out (default: --seed), "
                        "e.g. for ensemble members that are compared on the same digits")
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
    from ..config import TrainConfig
    return TrainConfig(
        model=args.model, model_kwargs=dict(args.model_arg), preset=args.preset, data=args.data_dir,
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        warmup=args.warmup, label_smoothing=args.label_smoothing, augment=args.augment,
        clean_epochs=args.clean_epochs, situations=args.situations, lookalikes=args.lookalikes,
        val_size=args.val_size, seed=args.seed, split_seed=args.split_seed,
        device=args.device, precision=args.precision, subset=args.subset,
        max_steps=args.max_steps, tta=args.tta, sync_bn=args.sync_bn, teachers=args.teachers,
        distill_weight=args.distill_weight, distill_temperature=args.distill_temperature)


class _TrainingOutput:
    """Progress bars (stderr) for a training loop's callbacks, and a line per epoch."""

    def __init__(self, show: bool):
        self.show, self.bar = show, None

    def on_progress(self, p) -> None:
        if not self.show:
            return
        from tqdm import tqdm
        if self.bar is None or self.bar.desc != f"epoch {p.epoch}/{p.epochs}":
            self.close()
            self.bar = tqdm(total=p.steps, desc=f"epoch {p.epoch}/{p.epochs}", unit="step",
                            leave=False, file=sys.stderr, dynamic_ncols=True)
        self.bar.update(p.step - self.bar.n)
        self.bar.set_postfix(loss=f"{p.loss:.4f}", acc=f"{100 * p.acc:.2f}%", refresh=False)

    def on_note(self, what: str, total: int):
        if not self.show:
            return None
        from tqdm import tqdm
        note = tqdm(total=total, desc=what, unit="img", leave=False, file=sys.stderr,
                    dynamic_ncols=True)

        def done(k: int) -> None:
            note.update(k)
            if note.n >= total:
                note.close()
        return done

    def on_epoch(self, row: dict) -> None:
        self.close()
        if self.show:
            val = ("" if row["val_loss"] != row["val_loss"]  # NaN: no validation split
                   else f" | val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%")
            _err(f"epoch {row['epoch']:>3}: train loss {row['train_loss']:.4f} acc "
                 f"{100 * row['train_acc']:.2f}%{val} | {row['seconds']:.1f}s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_train(args) -> int:
    from ..checkpoint import describe, resume_plan
    from ..training import DISTRIBUTED_OUT, default_out_dir, train, wants_resume

    cfg = train_config_from_args(args)
    if args.resume and not args.out:
        raise DigitlabError("--resume needs --out DIR (the interrupted run's directory)")
    resolved = cfg.resolved()  # validate before any work
    from ..artifacts import read_config
    for teacher in resolved.teachers:  # (each is a readable model directory)
        read_config(teacher)
    if not args.out and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DigitlabError(DISTRIBUTED_OUT)
    out = Path(args.out) if args.out else default_out_dir(resolved.model)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from ..distributed import launch
        # every process must write to the same directory: name it once, here
        argv = _without_option(args.argv, "--nproc")
        return launch(args.nproc, argv if args.out else [*argv, "--out", str(out)])
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 prints
    show = not args.quiet and rank == 0
    ui = _TrainingOutput(show)

    from ..data import load_dataset
    # a worker that torchrun replaced after a failure picks up where the run stopped
    resume = wants_resume(out, args.resume)
    dataset = None if resume else load_dataset(resolved.data, progress=show)
    if resume:
        note = {"restart": "no checkpoint yet (stopped during epoch 1): training again from the "
                           "start, with the run's own options",
                "report": "the model was saved before the run stopped: writing its report"}
        plan = resume_plan(out)
        if plan in note and rank == 0:
            _err(f"{out}: {note[plan]}")
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
                        on_progress=ui.on_progress, on_epoch=ui.on_epoch, on_note=ui.on_note,
                        evaluate_test=not args.no_eval)
    except KeyboardInterrupt:
        ui.close()
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


def cmd_evaluate(args) -> int:
    from ..evaluation import evaluate
    m = evaluate(args.model_dir, args.data_dir, tta=args.tta, device=args.device,
                 write=not args.no_write, backend=args.backend, precision=args.precision)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"backend: {m['backend']} ({m['precision']})")
    t = m["test"]
    print(f"{m['dataset']['name']} test: accuracy {100 * t['accuracy']:.2f}% "
          f"({t['n'] - t['errors']}/{t['n']}), loss {t['loss']:.4f}, macro F1 {t['macro_f1']:.4f}")
    print(f"{'class':>8} {'precision':>9} {'recall':>8} {'f1':>8} {'support':>8}")
    for r in m["per_class"]:
        print(f"{r['class']:>8} {r['precision']:>9.4f} {r['recall']:>8.4f} {r['f1']:>8.4f} {r['support']:>8}")
    if not args.no_write and args.model_dir:
        print(f"report: {Path(args.model_dir) / 'report.md'}")
    return 0


def cmd_ensemble(args) -> int:
    from ..artifacts import make_ensemble
    from ..data import load_dataset
    from ..evaluation import evaluate_dir
    from ..io import require_empty_dir
    out = require_empty_dir(args.out, args.force)
    make_ensemble(args.model_dirs, out)
    print(f"ensemble of {len(args.model_dirs)} models -> {out}")
    if not args.no_eval:
        m = evaluate_dir(out, load_dataset(args.data_dir), tta=args.tta)
        print(f"test accuracy {100 * m['test']['accuracy']:.2f}%  loss {m['test']['loss']:.4f}  "
              f"report: {out / 'report.md'}")
    return 0


def cmd_compare(args) -> int:
    from .. import compare
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


def cmd_finetune(args) -> int:
    import tempfile

    from ..artifacts import default_model_dir
    from ..data import load_dataset
    from ..finetune import finetune, pct

    model_dir = args.model_dir or default_model_dir()
    with tempfile.TemporaryDirectory(prefix="digitlab-feedback-") as tmp:
        source = args.data_dir
        if args.feedback_db:
            from ..feedback import export_dataset, open_store
            with open_store(args.feedback_db, create=False) as store:
                export_dataset(store, Path(tmp) / "export")
            source = Path(tmp) / "export"
        feedback = load_dataset(source, progress=not args.quiet)
        _err(f"fine-tuning {Path(model_dir).name} on {len(feedback.train_images)} feedback "
             f"images ({100 * args.holdout:.0f}% held out) with {100 * args.replay:.0f}% MNIST "
             f"replay, {args.epochs} epochs -> {args.out}")
        ui = _TrainingOutput(not args.quiet)
        r = finetune(model_dir, feedback, args.out, epochs=args.epochs, replay=args.replay,
                     holdout=args.holdout, lr=args.lr, augment=args.augment, seed=args.seed,
                     force=args.force,
                     on_progress=ui.on_progress, on_epoch=ui.on_epoch)
    b, a = r["before"], r["after"]
    print(f"fine-tuned in {r['seconds']:.1f}s -> {args.out}")
    print(f"held-out feedback ({r['held_out']}): {pct(b['feedback_holdout'])} -> "
          f"{pct(a['feedback_holdout'])}   MNIST test: {pct(b['mnist_test'])} -> "
          f"{pct(a['mnist_test'])}   report: {Path(args.out) / 'report.md'}")
    return 0


def cmd_download(args) -> int:
    from ..data import download
    path = download(args.name, args.dir)
    print(f"{args.name} -> {path}")
    return 0


def register(sub) -> None:
    from ..config import AUGMENTS
    from ..onnxrt import BACKEND_HELP, BACKENDS

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
    s.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    s.add_argument("--precision", choices=("auto", "fp32", "int8"), default="auto",
                   help="in ONNX Runtime: auto (default) runs model.int8.onnx where the directory "
                        "has one and the CPU has 8-bit dot-product instructions, else model.onnx; "
                        "fp32: model.onnx; int8: model.int8.onnx. PyTorch runs at the precision "
                        "the model was trained at")
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
    s.add_argument("--epochs", type=_positive_int, default=10, help="default 10 (8,000 images each)")
    s.add_argument("--replay", type=_fraction, default=0.75, metavar="F",
                   help="fraction of each epoch that is MNIST training digits (default 0.75)")
    s.add_argument("--holdout", type=_fraction, default=0.1, metavar="F",
                   help="fraction of the feedback kept aside to score before/after (default 0.1)")
    s.add_argument("--augment", choices=AUGMENTS,
                   help="augmentation while fine-tuning (default: the model's own recipe's); "
                   "outlier exposure stays as the model was trained")
    s.add_argument("--lr", type=_positive_float, help="peak learning rate (default: a tenth of "
                   "the model's recipe)")
    s.add_argument("--seed", type=int, default=0, help="seeds the held-out slice, replay and "
                   "augmentation")
    s.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    s.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("download", help="download a public MNIST-format dataset (needs internet)")
    s.add_argument("name", help="dataset name, e.g. fashion-mnist")
    s.add_argument("--dir", help="target folder (default: ~/.cache/digitlab/NAME)")
    s.set_defaults(func=cmd_download)
