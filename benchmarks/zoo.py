"""Benchmark the model zoo: epochs, test accuracy, training seconds and peak memory per model.

Each model trains with its own defaults in a fresh process (so peak RSS is that model's alone),
on the bundled MNIST, with several seeds; prints a table (markdown with --markdown).

    .venv/bin/python benchmarks/zoo.py                 # all models, 1 seed
    .venv/bin/python benchmarks/zoo.py --models cnn --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

ONE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from digitlab.config import TrainConfig
from digitlab.training import train
model, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = train(TrainConfig(model=model, seed=seed), out=out, force=True)
print(json.dumps({"epochs": len(s["history"]), "accuracy": s["test"]["accuracy"],
                  "train_seconds": s["train_seconds"], "process_seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_one(model: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([sys.executable, "-c", ONE, model, str(seed), os.path.join(tmp, "m")],
                           capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    from digitlab.models import get_spec, list_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list_models())
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    rows = []
    for name in args.models:
        runs = []
        for seed in args.seeds:
            r = run_one(name, seed)
            runs.append(r)
            print(f"  {name} seed {seed}: {100 * r['accuracy']:.2f}% in {r['train_seconds']:.1f}s",
                  file=sys.stderr, flush=True)
        accs = [r["accuracy"] for r in runs]
        rows.append({
            "model": name, "params": get_spec(name).count(), "epochs": runs[0]["epochs"],
            "acc_median": statistics.median(accs), "acc_min": min(accs), "acc_max": max(accs),
            "train_s": statistics.median(r["train_seconds"] for r in runs),
            "process_s": statistics.median(r["process_seconds"] for r in runs),
            "peak_mb": max(r["peak_rss_mb"] for r in runs),
        })
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"seeds {args.seeds}; medians over seeds")
    head = ["model", "params", "epochs", "test acc (median)", "min-max", "train s", "whole process s", "peak RSS MB"]
    lines = [[r["model"], f"{r['params']:,}", str(r["epochs"]), f"{100 * r['acc_median']:.2f}%",
              f"{100 * r['acc_min']:.2f}-{100 * r['acc_max']:.2f}", f"{r['train_s']:.1f}",
              f"{r['process_s']:.1f}", f"{r['peak_mb']:.0f}"] for r in rows]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + " --- |" * len(head))
        for ln in lines:
            print("| " + " | ".join(ln) + " |")
    else:
        widths = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for ln in lines:
            print("  ".join(c.ljust(w) for c, w in zip(ln, widths)))


if __name__ == "__main__":
    main()
