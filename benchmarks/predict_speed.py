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

    python benchmarks/predict_speed.py --baseline 6219ef4
    python benchmarks/predict_speed.py --n-folder 500 --repeats 5     # a quick look
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
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


def measure(work: Path, repeats: int, n_folder: int) -> dict[str, float]:
    """Every row for the digitlab importable in this process; files are written into ``work``."""
    from digitlab.data import load_dataset
    from digitlab.predict import Predictor
    from digitlab.preprocess import preprocess

    x = load_dataset("mnist").test_images.numpy()
    pngs = [small_png(a) for a in x[:50]]
    out: dict[str, float] = {}

    def prep_all():
        for b in pngs:
            preprocess(b)
    out["prep"] = median_of(prep_all, repeats) / len(pngs) * 1e6
    canvases = [canvas_png(a) for a in x[:20]]

    def canvas_all():
        for b in canvases:
            preprocess(b)
    out["canvas"] = median_of(canvas_all, repeats) / len(canvases) * 1e6

    predictor = Predictor()
    Image.fromarray(photo(x[0], (4000, 3000))).save(work / "big.jpg", quality=90)
    out["photo12"] = median_of(lambda: predictor.predict_one(work / "big.jpg"),
                               max(3, repeats // 3)) * 1e3
    img = Image.fromarray(photo(x[0]))
    out["photo1"] = median_of(lambda: predictor.predict_one(img), repeats) * 1e3

    img.save(work / "one.png")
    cmd = [sys.executable, "-m", "digitlab.cli", "predict", str(work / "one.png")]
    out["cli1"] = median_of(lambda: subprocess.run(cmd, check=True, capture_output=True), 3)

    folder = work / "pngs"
    folder.mkdir(exist_ok=True)
    for i in range(n_folder):
        (folder / f"{i:05d}.png").write_bytes(small_png(x[i % len(x)]))
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


def run_child(code: Path | None, work: Path, args) -> dict[str, float]:
    env = dict(os.environ)
    if code is not None:  # import digitlab from the baseline's tree, not this checkout
        env["PYTHONPATH"] = str(code) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(HERE), "--child", str(work), "--repeats", str(args.repeats),
           "--n-folder", str(args.n_folder)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env,
                         cwd=str(code) if code is not None else None)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", metavar="REV", help="also measure this commit's code")
    ap.add_argument("--n-folder", type=int, default=3000, help="PNGs in the folder test")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        import digitlab
        print(f"digitlab from {Path(digitlab.__file__).parent}", file=sys.stderr)
        print(json.dumps(measure(Path(args.child), args.repeats, args.n_folder)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        code = baseline_tree(args.baseline, tmp) if args.baseline else None
        results: dict[str, dict[str, float]] = {}
        # new, baseline, new, baseline: each row's best of two, taken in turns
        for turn in range(2 if code else 1):
            for name, tree in (("this", None), ("base", code)):
                if name == "base" and tree is None:
                    continue
                work = tmp / f"{name}{turn}"
                work.mkdir()
                got = run_child(tree, work, args)
                prev = results.get(name)
                results[name] = got if prev is None else {
                    k: (max(v, prev[k]) if k == "folder" else min(v, prev[k]))
                    for k, v in got.items()}
                shutil.rmtree(work, ignore_errors=True)

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
