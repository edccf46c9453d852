"""Compare `digitlab train` recipes on the *validation* split, over seeds.

Each candidate is a string of `digitlab train` flags; every (candidate, seed) trains with
``--no-eval`` into ``ROOT/<name>/seed<S>`` (kept, so the chosen recipe can be scored on the test
set afterwards with ``--test``), and the script prints the final epoch's validation accuracy and
the training seconds ``digitlab train`` recorded, read back from the model directory's
config.json. Nothing here looks at the test set unless ``--test`` is given.

    .venv/bin/python benchmarks/recipe_search.py --root runs/recipe --seeds 0 1 2 3 4 \\
        --candidate default="" --candidate e7c2="--epochs 7 --clean-epochs 2"
    .venv/bin/python benchmarks/recipe_search.py --root runs/recipe --seeds 0 1 2 3 4 \\
        --candidate default="" --test          # test accuracy of already trained runs

A run whose model directory is already complete is not retrained (its recorded numbers are
read back), so an interrupted search can be restarted with the same command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def read_run(out: Path) -> dict:
    cfg = json.loads((out / "config.json").read_text())
    hist = cfg["history"]
    return {"val_acc": hist[-1]["val_acc"], "train_seconds": cfg["training"]["train_seconds"],
            "epochs": len(hist)}


def test_acc(out: Path) -> float:
    r = subprocess.run([str(BIN / "digitlab"), "evaluate", "--model-dir", str(out), "--json",
                        "--no-write"], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)["test"]["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/recipe", help="where the model directories go")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--candidate", action="append", required=True, metavar='NAME="FLAGS"',
                    help="a name and the `digitlab train` flags of one recipe (repeatable)")
    ap.add_argument("--test", action="store_true",
                    help="also evaluate each run on the test set (only for the chosen recipe)")
    args = ap.parse_args()

    cands = []
    for c in args.candidate:
        name, _, flags = c.partition("=")
        cands.append((name, shlex.split(flags)))
    root = Path(args.root)
    res: dict[str, list[dict]] = {n: [] for n, _ in cands}
    # seeds outermost: candidates take turns, so a slow spell on the machine falls on all alike
    for seed in args.seeds:
        for name, flags in cands:
            out = root / name / f"seed{seed}"
            if not ((out / "config.json").is_file() and (out / "model.safetensors").is_file()):
                cmd = [str(BIN / "digitlab"), "train", "--model", "cnn", *flags, "--seed", str(seed),
                       "--out", str(out), "--force", "--no-eval", "--quiet"]
                print("$ " + shlex.join(cmd), file=sys.stderr, flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            r = read_run(out)
            if args.test:
                r["test_acc"] = test_acc(out)
            res[name].append(r)
            line = f"{name} seed {seed}: val {100 * r['val_acc']:.2f}% in {r['train_seconds']:.1f}s"
            if "test_acc" in r:
                line += f", test {100 * r['test_acc']:.2f}%"
            print(line, file=sys.stderr, flush=True)

    hdr = "| candidate | flags | " + " | ".join(f"val s{s}" for s in args.seeds) + \
          " | val mean | val min | train s (median) |"
    if args.test:
        hdr += " " + " | ".join(f"test s{s}" for s in args.seeds) + " | test mean | test min |"
    print(hdr)
    print("|" + " --- |" * (hdr.count("|") - 1))
    for name, flags in cands:
        rs = res[name]
        v = [r["val_acc"] for r in rs]
        row = (f"| {name} | `{shlex.join(flags) or '(defaults)'}` | "
               + " | ".join(f"{100 * x:.2f}" for x in v)
               + f" | {100 * statistics.mean(v):.3f} | {100 * min(v):.2f} | "
               f"{statistics.median(r['train_seconds'] for r in rs):.1f} |")
        if args.test:
            t = [r["test_acc"] for r in rs]
            row += " " + " | ".join(f"{100 * x:.2f}" for x in t) + \
                   f" | {100 * statistics.mean(t):.3f} | {100 * min(t):.2f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
