"""The feedback loop, end to end: a writer with a distinctive hand, 50 corrections, fine-tuning.

A simulated writer (heavy, strongly slanted strokes; 7s with a cross bar; 1s with a flag and a
base) writes 200 digits, rendered from MNIST *training* digits onto paper as dark-blue ink. The
shipped model reads 150 of them (held out); 50 are sent as corrections to a running app's
``POST /api/feedback`` (stored in an SQLite feedback database), ``digitlab finetune
--feedback-db`` trains on them (timed, as a subprocess), and the new model reads the same 150.
MNIST test accuracy before and after comes from the fine-tuned directory's ``finetune.json``.

Five writers (``--writers``), each with its own MNIST digits (seed), slant and stroke weight.
The fine-tuning defaults (epochs, replay fraction, learning rate, held-out fraction,
augmentation) were chosen on the four "tune" writers; the "score" writer (seed 2) was not
looked at while choosing them. A correction the app refuses (a blot it cannot read) is
counted, as a user's would be, and not stored.

    .venv/bin/python benchmarks/feedback.py
    .venv/bin/python benchmarks/feedback.py --writers tune tune2 --model-dir DIR   # a candidate
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

WRITERS = {  # name: (seed, slant (x-shear), stroke dilation in px at 4x)
    "tune": (1, 0.38, 7),
    "tune2": (3, 0.15, 8),
    "tune3": (4, 0.45, 6),
    "tune4": (5, 0.28, 8),
    "score": (2, 0.30, 9),
}


def write_digit(d28: np.ndarray, label: int, rng: np.random.Generator, slant: float,
                weight: int) -> bytes:
    """One digit as this writer writes it, on a 160x160 paper photo (PNG bytes)."""
    big = cv2.resize(d28, (112, 112), interpolation=cv2.INTER_CUBIC)
    ink = (big > 100).astype(np.uint8) * 255
    canvas = np.zeros((160, 160), np.uint8)
    canvas[24:136, 24:136] = ink
    shear = np.float32([[1, -slant, slant * 80], [0, 1, 0]])  # lean right around the middle
    canvas = cv2.warpAffine(canvas, shear, (160, 160), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(canvas > 127)
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    pen = max(5, weight)
    if label == 7:  # a cross bar through the stem, halfway down
        y = (top + bottom) // 2
        row = np.nonzero(canvas[y] > 127)[0]
        cx = int(row.mean()) if len(row) else (left + right) // 2
        cv2.line(canvas, (cx - 20, y), (cx + 20, y), 255, pen)
    elif label == 1:  # a flag at the top, a base at the bottom
        top_x = int(xs[ys == top].mean())
        cv2.line(canvas, (top_x, top), (top_x - 22, top + 20), 255, pen)
        bottom_x = int(xs[ys == bottom].mean())
        cv2.line(canvas, (bottom_x - 22, bottom), (bottom_x + 22, bottom), 255, pen)
    canvas = cv2.dilate(canvas, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (weight, weight)))
    canvas = cv2.GaussianBlur(canvas, (3, 3), 0).astype(np.float32) / 255
    paper = np.array([246, 244, 236], np.float32) + rng.normal(0, 3, (160, 160, 3))
    ink_rgb = np.array([25, 35, 110], np.float32)
    img = paper * (1 - canvas[..., None]) + ink_rgb * canvas[..., None]
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def writer_digits(name: str, x: np.ndarray, y: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """200 digits of one writer: 20 of each class, from MNIST training digits of its seed."""
    seed, slant, weight = WRITERS[name]
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == k), 20, replace=False) for k in range(10)])
    rng.shuffle(idx)
    return [write_digit(x[i], int(y[i]), rng, slant, weight) for i in idx], y[idx]


def accuracy(model_dir: str | None, images: list[bytes], labels: np.ndarray) -> float:
    from digitlab.predict import Predictor
    preds = Predictor(model_dir).predict(images)
    return float(np.mean([p.digit == int(t) for p, t in zip(preds, labels)]))


def run_writer(name: str, x: np.ndarray, y: np.ndarray, work: Path, args) -> dict:
    from fastapi.testclient import TestClient

    from digitlab.artifacts import default_model_dir
    from digitlab.server import Settings, create_app

    images, labels = writer_digits(name, x, y)
    corrections, held = slice(0, 50), slice(50, 200)
    before = accuracy(args.model_dir, images[held], labels[held])
    db = work / f"{name}.db"
    stored = 0
    with TestClient(create_app(args.model_dir, Settings(feedback_db=str(db), feedback_rate=1e6,
                                              feedback_burst=1000))) as client:
        for png, label in zip(images[corrections], labels[corrections]):
            r = client.post("/api/feedback", files={"file": ("digit.png", png, "image/png")},
                            data={"label": str(int(label))})
            # an image the app cannot read (a blot) is refused, as it would be for a user
            assert r.status_code in (201, 422), r.text
            stored += r.status_code == 201
    out = work / f"{name}-finetuned"
    cmd = [sys.executable, "-m", "digitlab", "finetune", "--feedback-db", str(db), "--out",
           str(out), "--quiet", *(["--model-dir", args.model_dir] if args.model_dir else []),
           *args.finetune_args]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    result = json.loads((out / "finetune.json").read_text())
    after = accuracy(str(out), images[held], labels[held])
    return {"writer": name, "before": before, "after": after, "seconds": seconds,
            "train_seconds": result["train_seconds"],
            "mnist_before": result["before"]["mnist_test"],
            "mnist_after": result["after"]["mnist_test"],
            "base": args.model_dir or str(default_model_dir()), "stored": stored}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writers", nargs="*", default=list(WRITERS), choices=list(WRITERS))
    ap.add_argument("--finetune-args", nargs=argparse.REMAINDER, default=[],
                    help="extra `digitlab finetune` options (last on the line)")
    ap.add_argument("--model-dir", help="the model the writer starts with (default: shipped)")
    ap.add_argument("--save-samples", metavar="DIR", help="also write the first 20 digits as PNGs")
    args = ap.parse_args()

    from digitlab.data import load_dataset
    ds = load_dataset("mnist")
    x, y = ds.train_images.numpy(), ds.train_labels.numpy()
    if args.save_samples:
        for name in args.writers:
            images, labels = writer_digits(name, x, y)
            d = Path(args.save_samples) / name
            d.mkdir(parents=True, exist_ok=True)
            for i, (png, t) in enumerate(zip(images[:20], labels[:20])):
                (d / f"{i:02d}-{t}.png").write_bytes(png)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.writers:
            rows.append(run_writer(name, x, y, Path(tmp), args))
            print(f"  {name}: done", file=sys.stderr, flush=True)
    print("| writer | held-out digits read right, before | corrections stored (of 50) | after "
          "fine-tuning | `digitlab finetune` wall time (training loop) | MNIST test before | "
          "after | change |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['writer']} | {100 * r['before']:.1f}% | {r['stored']} | {100 * r['after']:.1f}% | "
              f"{r['seconds']:.1f} s ({r['train_seconds']:.1f} s) | {100 * r['mnist_before']:.2f}% | "
              f"{100 * r['mnist_after']:.2f}% | {100 * (r['mnist_after'] - r['mnist_before']):+.2f} |")


if __name__ == "__main__":
    main()
