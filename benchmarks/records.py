"""Accuracy and training-time records for the presets, over several seeds.

For each preset: test accuracy (mean, min, max over seeds) and training seconds (median), with
the machine it ran on. The test set is evaluated once per run, after training; nothing is
selected on it.

    .venv/bin/python benchmarks/records.py --presets fast --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/records.py --presets default --seeds 0 1 2   # the plain cnn
    .venv/bin/python benchmarks/records.py --presets best --seeds 0 1 2 --ensemble
    .venv/bin/python benchmarks/records.py --presets default --epochs 4 --seeds 0 1 2 3 4 --tta
    .venv/bin/python benchmarks/records.py --presets fast-99.5 default --seeds 0 1 2 3 4 --tta

Presets named together take turns seed by seed; with ``default`` among them, the table also
gives each preset's training time as a multiple of the plain cnn's (measured side by side).
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
    from digitlab.config import PRESETS, TrainConfig
    from digitlab.training import train

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
    runs = {p: {"accs": [], "tta": [], "secs": [], "dirs": []} for p in args.presets}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        # Seeds outermost, presets inside: presets compared in one run take turns on the
        # machine, so a slow spell (other load, a noisy neighbour) falls on all of them alike.
        for seed in args.seeds:
            for preset in args.presets:
                r = runs[preset]
                out = root / f"{preset}-seed{seed}"
                cfg = TrainConfig(preset=None if preset == "default" else preset, seed=seed,
                                  device=args.device, epochs=args.epochs)
                s = train(cfg, out=out, dataset=ds, force=True, evaluate_test=False)
                # the test set, once, after training
                acc = evaluate_dir(out, ds, device=args.device, write=False)["test"]["accuracy"]
                r["accs"].append(acc)
                r["secs"].append(s["train_seconds"])
                r["dirs"].append(out)
                line = f"  {preset} seed {seed}: {100 * acc:.2f}% in {s['train_seconds']:.1f}s"
                if args.tta:
                    r["tta"].append(evaluate_dir(out, ds, device=args.device, tta=True, write=False)["test"]["accuracy"])
                    line += f" (TTA {100 * r['tta'][-1]:.2f}%)"
                print(line, file=sys.stderr, flush=True)
        for preset, r in runs.items():
            accs = r["accs"]
            label = preset + (f" ({args.epochs} epoch{'s' if args.epochs != 1 else ''})" if args.epochs else "")
            row = {"preset": label, "name": preset, "n": len(accs), "mean": statistics.mean(accs),
                   "min": min(accs), "max": max(accs), "median_s": statistics.median(r["secs"])}
            if r["tta"]:
                row["tta_mean"] = statistics.mean(r["tta"])
            if args.ensemble and len(r["dirs"]) > 1:
                ens = make_ensemble(r["dirs"], root / f"{preset}-ensemble")
                row["ensemble"] = evaluate_dir(ens, ds, device=args.device, write=False)["test"]["accuracy"]
            rows.append(row)

    print(f"machine: {machine}; torch {torch.__version__}; seeds {args.seeds}")
    # time relative to the plain cnn, when it ran alongside (a ratio survives a slow machine)
    ref = next((r["median_s"] for r in rows if r["name"] == "default"), None)
    print("| preset | seeds | test acc mean | min | max | train s (median) | vs default | TTA mean | ensemble |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        tta = f"{100 * r['tta_mean']:.2f}%" if "tta_mean" in r else "-"
        ens = f"{100 * r['ensemble']:.2f}%" if "ensemble" in r else "-"
        vs = f"{r['median_s'] / ref:.2f}x" if ref else "-"
        print(f"| {r['preset']} | {r['n']} | {100 * r['mean']:.2f}% | {100 * r['min']:.2f}% | "
              f"{100 * r['max']:.2f}% | {r['median_s']:.1f} | {vs} | {tta} | {ens} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
