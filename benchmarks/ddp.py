"""Data-parallel training: one process against two (torchrun, gloo), same recipe and seeds.

For each model and seed: ``digitlab train`` in one process, then the same command under
``torchrun --standalone --nproc-per-node 2`` (the same global batch: each process takes half of
every batch). Prints test accuracy per seed and its mean for both, the difference, the time per
optimiser step and the scaling efficiency (speed-up / processes). Each run is a fresh process,
one after the other, so the two sides see the same machine.

    .venv/bin/python benchmarks/ddp.py                                 # mlp100 and cnn, seeds 0-4
    .venv/bin/python benchmarks/ddp.py --models mlp100 --seeds 0 1

On a 2-core machine two processes cannot be faster than one process using both cores (a
single process already runs its matrix products on two threads; each torchrun worker gets
one): the efficiency column says how much the gradient exchange costs, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(model: str, seed: int, nproc: int, out: Path, extra: list[str]) -> dict:
    cmd = ["-m", "digitlab", "train", "--model", model, "--seed", str(seed), "--out", str(out),
           "--quiet", "--force", *extra]
    if nproc > 1:
        cmd = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *cmd]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    subprocess.run([sys.executable, *cmd], check=True, capture_output=True, text=True, env=env)
    cfg = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    t = cfg["training"]
    return {"accuracy": metrics["test"]["accuracy"], "seconds": t["train_seconds"],
            "steps": t["steps"], "world_size": t.get("world_size", 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["mlp100", "cnn"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                    help="extra `digitlab train` options for every run (last on the line)")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            one, many = [], []
            for seed in args.seeds:
                one.append(run(model, seed, 1, Path(tmp) / "one", args.train_args))
                many.append(run(model, seed, args.nproc, Path(tmp) / "many", args.train_args))
                print(f"  {model} seed {seed}: {100 * one[-1]['accuracy']:.2f}% (1 process) "
                      f"{100 * many[-1]['accuracy']:.2f}% ({args.nproc})", file=sys.stderr,
                      flush=True)
            rows.append((model, one, many))

    def step_ms(runs):
        return 1000 * statistics.median(r["seconds"] / r["steps"] for r in runs)

    print(f"| model | seeds | test accuracy, 1 process | {args.nproc} processes | difference "
          f"(points) | ms per step, 1 process | {args.nproc} processes | scaling efficiency |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for model, one, many in rows:
        a1 = statistics.mean(r["accuracy"] for r in one)
        a2 = statistics.mean(r["accuracy"] for r in many)
        s1, s2 = step_ms(one), step_ms(many)
        per_seed = lambda runs: " ".join(f"{100 * r['accuracy']:.2f}" for r in runs)  # noqa: E731
        print(f"| {model} | {' '.join(map(str, args.seeds))} | {100 * a1:.2f}% ({per_seed(one)}) | "
              f"{100 * a2:.2f}% ({per_seed(many)}) | {100 * (a2 - a1):+.2f} | {s1:.1f} | {s2:.1f} | "
              f"{s1 / s2 / args.nproc:.2f} |")


if __name__ == "__main__":
    main()
