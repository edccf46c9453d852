"""Prediction speed, side by side with an earlier commit in one run (ratios, not absolutes:
this machine's timings drift by 20% between runs).

Measured for this checkout and, with ``--baseline REV``, for that commit's code (checked out
into a temporary folder and imported from there by a child process running this script):

1. preprocessing one 100x100 PNG (a digit, dark ink on paper; decoding included): median us;
   and one 280x280 RGBA PNG as the drawing page sends it (dark strokes on an opaque white
   canvas);
2. a 12 MP phone photo (4000x3000 JPEG file) -> digit, in process: median ms;
3. a 1000x1000 photo (decoded image) -> digit, in process: median ms;
4. ``digitlab predict one.png`` in a new process (imports and model load included): median s;
5. ``digitlab predict DIR --output out.csv`` on 3,000 100x100 PNGs (new process): images/s.

Each row is measured in its own child process, this checkout's and the baseline's in turns
(``--turns`` times each, row by row), and each side keeps its best: this machine's speed
drifts over the minutes of a run, and measuring every row of one tree before the other's
let that drift decide ratios (the same preprocessing code once measured 0.62x against
itself).

    python benchmarks/predict_speed.py --baseline 6219ef4
    python benchmarks/predict_speed.py --n-folder 500 --repeats 5 --turns 1     # a quick look
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
import realworld  # noqa: E402  (renderers shared with the accuracy benchmark)

ROWS = [
    ("prep", "preprocess one 100x100 PNG (decode included)", "us", "<= 300 us"),
    ("canvas", "preprocess the drawing page's 280x280 RGBA canvas PNG (decode included)", "us", ""),
    ("photo12", "12 MP phone photo, JPEG file -> digit (in process)", "ms", "<= 25 ms"),
    ("photo1", "1000x1000 photo, decoded image -> digit (in process)", "ms", ""),
    ("cli1", "`digitlab predict one.png`, new process", "s", ""),
    ("folder", "`digitlab predict DIR --output out.csv`, 100x100 PNGs", "img/s", ">= 3x"),
]


def photo(digit: np.ndarray, size: tuple[int, int] = (1000, 1000), seed: int = 0) -> np.ndarray:
    """A 'phone photo' of a handwritten digit: tinted paper, uneven light, noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    c = realworld.paper(rng, h, w, (245, 240, 225))
    m = realworld.pen_mask(digit, int(0.38 * min(w, h)), 0.45)
    realworld.paste(c, m, int(0.33 * w), int(0.28 * h), (20, 30, 120))
    c = realworld.lighting(rng, c, 0.4) + rng.normal(0, 4, c.shape).astype(np.float32)
    return np.clip(c, 0, 255).astype(np.uint8)


def small_png(digit: np.ndarray) -> bytes:
    img = Image.fromarray(255 - digit).resize((100, 100), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def canvas_png(digit: np.ndarray) -> bytes:
    """A digit as the drawing page sends it: #111 strokes on an opaque white 280x280 canvas,
    exported as an RGBA PNG."""
    m = np.asarray(Image.fromarray(digit).resize((200, 200), Image.Resampling.BICUBIC),
                   np.float32)[:, :, None] / 255.0
    c = np.full((280, 280, 4), 255.0, np.float32)
    c[40:240, 40:240, :3] = 255.0 - m * (255.0 - 17.0)
    buf = io.BytesIO()
    Image.fromarray(c.astype(np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()


def median_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(work: Path, repeats: int, n_folder: int, rows: list[str]) -> dict[str, float]:
    """``rows`` (ROWS' keys) for the digitlab importable in this process. Input files are
    written into ``work`` once and shared by every child that measures there (the same bytes
    for both trees)."""
    from digitlab.data import load_dataset
    from digitlab.predict import Predictor
    from digitlab.preprocess import preprocess

    x = load_dataset("mnist").test_images.numpy()
    out: dict[str, float] = {}

    def prep_all(items):
        for b in items:
            preprocess(b)
    if "prep" in rows:
        pngs = [small_png(a) for a in x[:50]]
        out["prep"] = median_of(lambda: prep_all(pngs), repeats) / len(pngs) * 1e6
    if "canvas" in rows:
        canvases = [canvas_png(a) for a in x[:20]]
        out["canvas"] = median_of(lambda: prep_all(canvases), repeats) / len(canvases) * 1e6

    if {"photo12", "photo1"} & set(rows):
        predictor = Predictor()
        big = work / "big.jpg"
        if not big.exists():
            Image.fromarray(photo(x[0], (4000, 3000))).save(big, quality=90)
        if "photo12" in rows:
            out["photo12"] = median_of(lambda: predictor.predict_one(big),
                                       max(3, repeats // 3)) * 1e3
        if "photo1" in rows:
            img = Image.fromarray(photo(x[0]))
            out["photo1"] = median_of(lambda: predictor.predict_one(img), repeats) * 1e3

    if "cli1" in rows:
        one = work / "one.png"
        if not one.exists():
            Image.fromarray(photo(x[0])).save(one)
        cmd = [sys.executable, "-m", "digitlab.cli", "predict", str(one)]
        out["cli1"] = median_of(lambda: subprocess.run(cmd, check=True, capture_output=True), 3)

    if "folder" in rows:
        folder = work / f"pngs{n_folder}"
        if not folder.exists():
            tmp = work / "pngs.partial"
            tmp.mkdir()
            for i in range(n_folder):
                (tmp / f"{i:05d}.png").write_bytes(small_png(x[i % len(x)]))
            tmp.rename(folder)
        cmd = [sys.executable, "-m", "digitlab.cli", "predict", str(folder), "--output",
               str(work / "out.csv")]
        out["folder"] = n_folder / median_of(lambda: subprocess.run(cmd, check=True,
                                                                    capture_output=True), 1)
    return out


def baseline_tree(rev: str, tmp: Path) -> Path:
    """``rev``'s files in a folder (git archive: no worktree bookkeeping to clean up)."""
    root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=HERE.parent,
                               check=True, capture_output=True, text=True).stdout.strip())
    dest = tmp / "baseline"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=root, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def run_child(code: Path | None, work: Path, args, row: str) -> dict[str, float]:
    env = dict(os.environ)
    if code is not None:  # import digitlab from the baseline's tree, not this checkout
        env["PYTHONPATH"] = str(code) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(HERE), "--child", str(work), "--repeats", str(args.repeats),
           "--n-folder", str(args.n_folder), "--row", row]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env,
                         cwd=str(code) if code is not None else None)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", metavar="REV", help="also measure this commit's code")
    ap.add_argument("--n-folder", type=int, default=3000, help="PNGs in the folder test")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--turns", type=int, default=3, metavar="N",
                    help="with --baseline: measure each row N times per tree, the trees in "
                         "turns row by row, and keep each side's best (default 3)")
    ap.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--row", choices=[key for key, *_ in ROWS], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.turns < 1:
        ap.error("--turns must be at least 1")
    if args.child:
        import digitlab
        print(f"digitlab from {Path(digitlab.__file__).parent}", file=sys.stderr)
        rows = [args.row] if args.row else [key for key, *_ in ROWS]
        print(json.dumps(measure(Path(args.child), args.repeats, args.n_folder, rows)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        code = baseline_tree(args.baseline, tmp) if args.baseline else None
        trees = [("this", None)] + ([("base", code)] if code else [])
        work = tmp / "work"
        work.mkdir()
        results: dict[str, dict[str, float]] = {name: {} for name, _ in trees}
        # row by row, the trees in turns (this, baseline, this, baseline, ...), so that the
        # machine's drift over the minutes of a run falls on both sides of each ratio alike;
        # each side's best run of each row
        for key, label, *_ in ROWS:
            for _ in range(args.turns if code else 1):
                for name, tree in trees:
                    v = run_child(tree, work, args, key)[key]
                    prev = results[name].get(key)
                    results[name][key] = v if prev is None else (
                        max(v, prev) if key == "folder" else min(v, prev))
            print(f"measured: {label}", file=sys.stderr, flush=True)

    print(f"{os.cpu_count()} CPUs; this checkout vs {args.baseline or '(no baseline)'}; "
          f"{args.n_folder} PNGs in the folder test\n")
    if "base" in results:
        print("| measurement | this checkout | baseline | ratio | target |")
        print("|---|---:|---:|---:|---:|")
    else:
        print("| measurement | this checkout | target |")
        print("|---|---:|---:|")
    for key, label, unit, target in ROWS:
        v = results["this"][key]
        cell = f"{v:,.0f} {unit}" if unit in ("us", "img/s") else f"{v:,.2f} {unit}"
        if "base" in results:
            b = results["base"][key]
            bcell = f"{b:,.0f} {unit}" if unit in ("us", "img/s") else f"{b:,.2f} {unit}"
            ratio = v / b if key == "folder" else b / v
            print(f"| {label} | {cell} | {bcell} | {ratio:.2f}x faster | {target} |")
        else:
            print(f"| {label} | {cell} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
