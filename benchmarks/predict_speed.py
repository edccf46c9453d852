"""Prediction speed: the three figures the real-image issue asks for, as a table.

1. one 1000x1000 photo, in process: preprocess + predict (median ms), from a decoded image and
   from the JPEG / PNG file (decoding included);
2. ``digitlab predict one.png`` in a new process (median seconds, imports and model load
   included);
3. a folder of 10,000 small PNGs (MNIST test digits, 28x28): images per second, through
   ``Predictor.predict`` and through the CLI.

    python benchmarks/predict_speed.py [--model-dir DIR] [--n-folder 10000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realworld  # noqa: E402  (renderers shared with the accuracy benchmark)


def photo(digit: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 1000x1000 'phone photo' of a handwritten digit: tinted paper, uneven light, noise."""
    rng = np.random.default_rng(seed)
    c = realworld.paper(rng, 1000, 1000, (245, 240, 225))
    m = realworld.pen_mask(digit, 380, 0.45)
    realworld.paste(c, m, 330, 280, (20, 30, 120))
    c = realworld.lighting(rng, c, 0.4) + rng.normal(0, 4, c.shape)
    return np.clip(c, 0, 255).astype(np.uint8)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=None, help="model directory (default: shipped model)")
    ap.add_argument("--n-folder", type=int, default=10_000, help="PNGs in the folder test")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from digitlab.data import load_dataset
    from digitlab.predict import Predictor

    predictor = Predictor(args.model_dir)
    ds = load_dataset("mnist")
    x, y = ds.test_images.numpy(), ds.test_labels.numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        arr = photo(x[0])
        img = Image.fromarray(arr)
        img.save(tmp / "one.jpg", quality=90)
        img.save(tmp / "one.png")
        got = predictor.predict_one(img)
        assert got.digit == int(y[0]), f"photo misread as {got.digit} (label {y[0]})"
        rows.append(("1000x1000 photo, decoded PIL image -> digit (in process)",
                     f"{median_ms(lambda: predictor.predict_one(img), args.repeats):.1f} ms",
                     "<= 20 ms"))
        rows.append(("1000x1000 photo, JPEG file -> digit (in process)",
                     f"{median_ms(lambda: predictor.predict_one(tmp / 'one.jpg'), args.repeats):.1f} ms",
                     ""))
        rows.append(("1000x1000 photo, PNG file -> digit (in process)",
                     f"{median_ms(lambda: predictor.predict_one(tmp / 'one.png'), args.repeats):.1f} ms",
                     ""))

        cmd = [sys.executable, "-m", "digitlab.cli", "predict", str(tmp / "one.png")]
        if args.model_dir:
            cmd += ["--model-dir", args.model_dir]
        times = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        rows.append(("`digitlab predict one.png`, new process", f"{statistics.median(times):.2f} s",
                     "<= 2.5 s"))

        folder = tmp / "pngs"
        folder.mkdir()
        n = min(args.n_folder, len(x))
        for i in range(n):
            Image.fromarray(x[i]).save(folder / f"{i:05d}_{y[i]}.png")
        paths = sorted(str(p) for p in folder.iterdir())
        predictor.predict(paths[:256])  # warm-up (thread pool, allocator)
        t = time.perf_counter()
        preds = predictor.predict(paths)
        dt = time.perf_counter() - t
        acc = np.mean([p.top_k[0][0] == int(Path(p.path).stem.split("_")[1]) for p in preds
                       if p.top_k])
        rows.append((f"folder of {n:,} 28x28 PNGs, Predictor.predict (acc {acc:.2%})",
                     f"{n / dt:,.0f} img/s", ">= 2,000 img/s"))
        cmd = [sys.executable, "-m", "digitlab.cli", "predict", str(folder), "--output",
               str(tmp / "out.csv")]
        if args.model_dir:
            cmd += ["--model-dir", args.model_dir]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        dt = time.perf_counter() - t
        rows.append((f"folder of {n:,} 28x28 PNGs, `digitlab predict DIR --output out.csv`",
                     f"{n / dt:,.0f} img/s", "(incl. start-up)"))

    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"model {predictor.model_dir}\n")
    print("| measurement | result | target |")
    print("|---|---:|---:|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
