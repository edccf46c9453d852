"""digitlab vs the reference Keras tutorial, side by side on the same machine in one run.

Keras: 784-100-10 (relu, softmax), Adam, batch 32, 10 epochs: the workflow people copy.
digitlab: `digitlab train --model mlp100` with its own defaults.
Both are timed as whole processes (start-up, data loading, training, test evaluation), alternating,
`--repeats` times each; the table shows medians and the wall-time ratio.

TensorFlow is needed only here and lives in its own venv so it never touches the project's:

    python3 -m venv .venv-keras && .venv-keras/bin/pip install tensorflow-cpu
    .venv/bin/python benchmarks/keras_compare.py --keras-python .venv-keras/bin/python
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The tutorial, loading the same bundled MNIST files (keras.datasets would download them).
KERAS = r"""
import gzip, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import keras
def idx(p):
    b = gzip.open(p).read(); nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)
d = sys.argv[1]
xtr = idx(f"{d}/train-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
ytr = idx(f"{d}/train-labels-idx1-ubyte.gz")
xte = idx(f"{d}/t10k-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
yte = idx(f"{d}/t10k-labels-idx1-ubyte.gz")
model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(100, activation="relu"),
                          keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(xtr, ytr, batch_size=32, epochs=10, verbose=0)
print("ACCURACY", model.evaluate(xte, yte, verbose=0)[1])
"""


def timed(cmd: list[str], pattern: str) -> tuple[float, float]:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    m = re.search(pattern, p.stdout)
    if not m:
        sys.exit(f"no accuracy in output of {' '.join(cmd)}:\n{p.stdout[-1000:]}")
    return wall, float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keras-python", default=".venv-keras/bin/python",
                    help="a Python with tensorflow-cpu installed")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not Path(args.keras_python).exists():
        sys.exit(f"{args.keras_python} not found; see this script's docstring for the set-up")

    from digitlab.data import bundled_mnist_dir
    digitlab_bin = str(Path(sys.executable).with_name("digitlab"))
    keras_runs, dl_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            keras_runs.append(timed([args.keras_python, "-c", KERAS, str(bundled_mnist_dir())],
                                    r"ACCURACY ([0-9.]+)"))
            out = os.path.join(tmp, f"run{i}")
            w, a = timed([digitlab_bin, "train", "--model", "mlp100", "--out", out, "--quiet"],
                         r"test accuracy ([0-9.]+)%")
            dl_runs.append((w, a / 100))
            print(f"  repeat {i}: keras {keras_runs[-1][0]:.1f}s {100 * keras_runs[-1][1]:.2f}% | "
                  f"digitlab {w:.1f}s {a:.2f}%", file=sys.stderr, flush=True)

    def row(name, runs):
        walls, accs = [r[0] for r in runs], [r[1] for r in runs]
        return name, statistics.median(walls), statistics.median(accs), min(accs)

    k, d = row("keras 784-100-10, batch 32, adam, 10 epochs", keras_runs), row(
        "digitlab train --model mlp100 (own defaults)", dl_runs)
    print(f"| workflow | whole-process wall s (median of {args.repeats}) | test acc (median) | min acc |")
    print("| --- | --- | --- | --- |")
    for name, w, a, mn in (k, d):
        print(f"| {name} | {w:.1f} | {100 * a:.2f}% | {100 * mn:.2f}% |")
    print(f"\nwall-time ratio digitlab/keras: {d[1] / k[1]:.3f} (target <= 0.2); "
          f"accuracy difference: {100 * (d[2] - k[2]):+.2f} points")


if __name__ == "__main__":
    main()
