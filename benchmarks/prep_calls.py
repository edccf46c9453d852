"""Where preprocessing's time goes: its calls into compiled code (OpenCV, numpy, Python's
builtins) per image, stage by stage, and what compiling the pipeline's own Python saves.

Preprocessing is many small calls into OpenCV and numpy on a 100x100 image, each a few
microseconds whatever the image's size. This prints, for the benchmark's 100x100 PNGs (MNIST
test digits, as ``predict_speed.py`` makes them):

1. the time an image (best of ``--passes`` passes, in a child process), and its calls into
   compiled code (counted with ``sys.setprofile`` in another pass, untimed), by the stage's
   module;
2. the time over the OpenCV and numpy calls: what each costs, all in (its own work, its argument
   handling, and the Python between calls), and how many calls the 300 us target of
   ``predict_speed.py`` allows at that cost;
3. with ``--compiled``: the same package with ``digitlab/preprocess/*.py`` compiled by Cython
   (the same code as C: the interpreter's share of the time goes, the calls stay), measured
   in turns with this checkout's plain Python, each side's best.

    python benchmarks/prep_calls.py
    python benchmarks/prep_calls.py --compiled       # needs `pip install cython` and a C compiler

The Cython build is made in a temporary folder (about two minutes on two cores) and removed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
TARGET_US = 300.0  # predict_speed.py's target for one 100x100 PNG


def write_pngs(folder: Path, n: int) -> None:
    sys.path.insert(0, str(HERE.parent))
    import predict_speed  # noqa: E402  (the speed benchmark's PNGs)
    from digitlab.data import load_dataset

    x = load_dataset("mnist").test_images.numpy()
    for i in range(n):
        (folder / f"{i:04d}.png").write_bytes(predict_speed.small_png(x[i]))


def time_child(folder: Path, passes: int) -> dict:
    """In this process: the best pass's time an image (us), and where digitlab came from."""
    from digitlab import preprocess as package
    from digitlab.preprocess import preprocess

    pngs = [p.read_bytes() for p in sorted(folder.glob("*.png"))]
    for b in pngs:  # warm-up
        preprocess(b)
    best = float("inf")
    for _ in range(passes):
        t = time.perf_counter()
        for b in pngs:
            preprocess(b)
        best = min(best, time.perf_counter() - t)
    return {"us": best / len(pngs) * 1e6, "from": str(Path(package.__file__).parent)}


LIBRARIES = ("OpenCV", "numpy", "builtins")


def library(frame, fn, opencv: set[int]) -> str:
    """Which library a call into compiled code goes to: OpenCV (``opencv``: the ids of its
    functions), numpy (its functions and methods, and whatever numpy's own Python calls), or
    Python's builtins (``len``, ``max``, a list's methods)."""
    if id(fn) in opencv:
        return "OpenCV"
    if "numpy" in frame.f_code.co_filename:
        return "numpy"
    owner = getattr(fn, "__self__", None)
    module = (owner.__name__ if isinstance(owner, types.ModuleType)
              else getattr(fn, "__module__", None) or type(owner).__module__ or "")
    return "numpy" if module.startswith("numpy") else "builtins"


def count_calls(folder: Path) -> tuple[dict[str, collections.Counter], int]:
    """Calls into compiled code an image, by the module of the pipeline's innermost frame and
    the library called. (numpy's operators and ufuncs, ``a > t`` or ``np.maximum(a, b)``, are
    not calls the profiler sees: the numpy column is a floor.)"""
    import cv2

    from digitlab.preprocess import preprocess

    opencv = {id(v) for v in vars(cv2).values() if callable(v)}
    pngs = [p.read_bytes() for p in sorted(folder.glob("*.png"))]
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def hook(frame, event, arg):
        if event != "c_call":
            return
        f = frame
        while f is not None and "digitlab" not in f.f_code.co_filename:
            f = f.f_back
        stage = Path(f.f_code.co_filename).stem if f is not None else "(outside)"
        counts[stage][library(frame, arg, opencv)] += 1

    sys.setprofile(hook)
    try:
        for b in pngs:
            preprocess(b)
    finally:
        sys.setprofile(None)
    return counts, len(pngs)


def run_child(folder: Path, passes: int, pythonpath: Path | None) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, str(HERE), "--child", str(folder), "--passes",
                          str(passes)], check=True, capture_output=True, text=True, env=env,
                         cwd=str(pythonpath or ROOT))
    return json.loads(res.stdout.strip().splitlines()[-1])


def cython_build(dest: Path) -> Path:
    """This checkout's package with the preprocessing modules compiled by Cython, in ``dest``."""
    try:
        import Cython  # noqa: F401
    except ImportError:
        sys.exit("--compiled needs Cython: pip install cython (and a C compiler)")
    pkg = dest / "digitlab"
    shutil.copytree(ROOT / "digitlab", pkg, ignore=shutil.ignore_patterns(
        "__pycache__", "*.so", "datasets", "pretrained"))
    setup = ("from setuptools import setup; from Cython.Build import cythonize; import glob; "
             "setup(ext_modules=cythonize(sorted(glob.glob('digitlab/preprocess/*.py')), "
             f"language_level=3, nthreads={os.cpu_count() or 1}, quiet=True), "
             "script_args=['build_ext', '--inplace'])")
    print("building the preprocessing package with Cython ...", file=sys.stderr, flush=True)
    res = subprocess.run([sys.executable, "-c", setup], cwd=dest, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"the Cython build failed:\n{res.stderr[-3000:]}")
    built = sorted(p.name for p in (pkg / "preprocess").glob("*.so"))
    if not built:
        sys.exit("the Cython build made no extension modules")
    print(f"built {len(built)} modules", file=sys.stderr, flush=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="MNIST test digits as 100x100 PNGs")
    ap.add_argument("--passes", type=int, default=5, help="timed passes; the best is kept")
    ap.add_argument("--turns", type=int, default=3,
                    help="with --compiled: measurements of each side, in turns")
    ap.add_argument("--compiled", action="store_true",
                    help="also measure the preprocessing modules compiled by Cython")
    ap.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(time_child(Path(args.child), args.passes)))
        return 0
    if args.n < 1 or args.passes < 1 or args.turns < 1:
        ap.error("--n, --passes and --turns must be at least 1")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pngs"
        folder.mkdir()
        write_pngs(folder, args.n)
        compiled = cython_build(Path(tmp) / "cython") if args.compiled else None
        plain_us, compiled_us = [], []
        for _ in range(args.turns if compiled else 1):
            plain_us.append(run_child(folder, args.passes, None)["us"])
            if compiled is not None:
                got = run_child(folder, args.passes, compiled)
                if not got["from"].startswith(str(compiled)):
                    sys.exit(f"the compiled child imported digitlab from {got['from']}")
                compiled_us.append(got["us"])
        calls, n = count_calls(folder)

    us = min(plain_us)
    per = {stage: {lib: c[lib] / n for lib in LIBRARIES} for stage, c in calls.items()}
    total = {lib: sum(v[lib] for v in per.values()) for lib in LIBRARIES}
    print(f"{os.cpu_count()} CPUs; {n} MNIST test digits as 100x100 PNGs; best of "
          f"{args.passes} passes{f', {args.turns} turns' if compiled else ''}\n")
    print("Calls into compiled code an image, by stage (numpy's operators and ufuncs are not "
          "counted):\n")
    print("| stage (module) | " + " | ".join(LIBRARIES) + " |")
    print("|---|" + "---:|" * len(LIBRARIES))
    for stage, v in sorted(per.items(), key=lambda kv: -kv[1]["OpenCV"] - kv[1]["numpy"]):
        print(f"| {stage} | " + " | ".join(f"{v[lib]:.1f}" for lib in LIBRARIES) + " |")
    print("| all | " + " | ".join(f"{total[lib]:.1f}" for lib in LIBRARIES) + " |\n")
    library_calls = total["OpenCV"] + total["numpy"]
    per_call = us / library_calls
    print("| measurement | value |")
    print("|---|---:|")
    print(f"| preprocess one 100x100 PNG (decode included) | {us:,.0f} us |")
    print(f"| time over OpenCV and numpy calls: each, all in | {per_call:.2f} us |")
    print(f"| such calls the {TARGET_US:.0f} us target allows at that cost "
          f"| {TARGET_US / per_call:.0f} |")
    if compiled_us:
        c = min(compiled_us)
        print(f"| the same, preprocessing compiled by Cython | {c:,.0f} us |")
        print(f"| plain over compiled | {us / c:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
