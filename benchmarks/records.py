"""Accuracy and training-time records for the presets, over several seeds.

For each preset: test accuracy (mean, min, max over seeds) and training seconds (median), with
the machine it ran on. The test set is evaluated once per run, after training; nothing is
selected on it.

    .venv/bin/python benchmarks/records.py --presets fast --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/records.py --presets default --seeds 0 1 2   # the plain cnn
    .venv/bin/python benchmarks/records.py --presets best --seeds 0 1 2 --ensemble
    .venv/bin/python benchmarks/records.py --presets default --epochs 4 --seeds 0 1 2 3 4 --tta
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    import torch

    from digitlab.artifacts import make_ensemble
    from digitlab.data import load_dataset
    from digitlab.evaluation import evaluate_dir
    from digitlab.training import PRESETS, TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["fast", "default"],
                    help=f"presets ({', '.join(PRESETS)}) or 'default' for the plain cnn")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ensemble", action="store_true", help="also evaluate the ensemble of each preset's seeds")
    ap.add_argument("--tta", action="store_true", help="also report test-time augmentation accuracy")
    ap.add_argument("--keep", metavar="DIR", help="keep the model directories here")
    ap.add_argument("--epochs", type=int, help="override every preset's number of epochs")
    args = ap.parse_args()

    ds = load_dataset("mnist")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    machine = (torch.cuda.get_device_name() if device.startswith("cuda")
               else f"{cpu_name()}, {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for preset in args.presets:
            accs, tta_accs, secs, dirs = [], [], [], []
            for seed in args.seeds:
                out = root / f"{preset}-seed{seed}"
                cfg = TrainConfig(preset=None if preset == "default" else preset, seed=seed,
                                  device=args.device, epochs=args.epochs)
                s = train(cfg, out=out, dataset=ds, force=True, evaluate_test=False)
                # the test set, once, after training
                acc = evaluate_dir(out, ds, device=args.device, write=False)["test"]["accuracy"]
                accs.append(acc)
                secs.append(s["train_seconds"])
                dirs.append(out)
                line = f"  {preset} seed {seed}: {100 * acc:.2f}% in {s['train_seconds']:.1f}s"
                if args.tta:
                    tta_accs.append(evaluate_dir(out, ds, device=args.device, tta=True, write=False)["test"]["accuracy"])
                    line += f" (TTA {100 * tta_accs[-1]:.2f}%)"
                print(line, file=sys.stderr, flush=True)
            label = preset + (f" ({args.epochs} epoch{'s' if args.epochs != 1 else ''})" if args.epochs else "")
            row = {"preset": label, "n": len(accs), "mean": statistics.mean(accs), "min": min(accs),
                   "max": max(accs), "median_s": statistics.median(secs)}
            if tta_accs:
                row["tta_mean"] = statistics.mean(tta_accs)
            if args.ensemble and len(dirs) > 1:
                ens = make_ensemble(dirs, root / f"{preset}-ensemble")
                row["ensemble"] = evaluate_dir(ens, ds, device=args.device, write=False)["test"]["accuracy"]
            rows.append(row)

    print(f"machine: {machine}; torch {torch.__version__}; seeds {args.seeds}")
    print("| preset | seeds | test acc mean | min | max | train s (median) | TTA mean | ensemble |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        tta = f"{100 * r['tta_mean']:.2f}%" if "tta_mean" in r else "-"
        ens = f"{100 * r['ensemble']:.2f}%" if "ensemble" in r else "-"
        print(f"| {r['preset']} | {r['n']} | {100 * r['mean']:.2f}% | {100 * r['min']:.2f}% | "
              f"{100 * r['max']:.2f}% | {r['median_s']:.1f} | {tta} | {ens} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
