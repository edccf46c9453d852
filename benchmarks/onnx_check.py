"""Export acceptance: a model's ONNX export, run by ONNX Runtime in a process that cannot import
torch, against PyTorch on the 10,000 MNIST test images.

    python benchmarks/onnx_check.py                  # the shipped model
    python benchmarks/onnx_check.py --model-dir runs/cnn --threads 2
    python benchmarks/onnx_check.py --no-int8        # the float32 export only

1. ``digitlab.export.export_onnx`` writes the model's ONNX file to a temporary folder (that
   export is itself checked on 1,000 test images, or refused), and its 8-bit export
   (``quantize="int8"``, what ``model.int8.onnx`` holds) beside it.
2. PyTorch, as digitlab runs it (``Predictor.probabilities``, float32), classifies the test set
   one image per call (10,000 calls) and 1,000 images per call.
3. A child process in which ``import torch`` raises ImportError (a ``sys.meta_path`` finder)
   loads the file with ``digitlab.onnxrt.OnnxModel``, reads the test set with the small numpy
   IDX reader below, and does the same.

Both sides use the same number of threads. The table gives accuracy, time and throughput for
each, and how many of the 10,000 predictions differ from PyTorch's (0 expected for the float32
export; the 8-bit one computes another function, and may read a few near-ties otherwise). Exit
code 1 if the float32 export's predictions differ, the 8-bit one's accuracy is more than
``export.INT8_MAX_ACCURACY_DROP`` below PyTorch's, or torch was imported in the child.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

BATCHES = (1, 1000)


def read_idx_u8(path: Path) -> np.ndarray:
    """A gzip-compressed uint8 IDX file (the bundled MNIST) as an array, with numpy alone."""
    data = gzip.decompress(path.read_bytes())
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise SystemExit(f"{path}: not a uint8 IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, count=int(np.prod(dims)), offset=4 + 4 * ndim
                         ).reshape(dims).copy()  # writable, as torch.from_numpy wants


def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    folder = Path(str(resources.files("digitlab") / "datasets" / "mnist"))
    return (read_idx_u8(folder / "t10k-images-idx3-ubyte.gz"),
            read_idx_u8(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64))


def score(classify, images: np.ndarray, labels: np.ndarray, batch: int) -> dict:
    """Run ``classify(uint8 (n, 28, 28)) -> (n, classes)`` over the images ``batch`` at a time."""
    classify(images[:batch])  # warm-up: first-call allocations and kernel selection
    start = time.perf_counter()
    preds = np.concatenate([classify(images[i:i + batch]).argmax(1)
                            for i in range(0, len(images), batch)])
    seconds = time.perf_counter() - start
    return {"batch": batch, "accuracy": float((preds == labels).mean()), "seconds": seconds,
            "preds": preds.tolist()}


# -- the child: ONNX Runtime without torch ----------------------------------------------------

class _NoTorch:
    """A meta-path finder that makes ``import torch`` (and its submodules) fail."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is blocked in the ONNX Runtime check")
        return None


def child(onnx_paths: list[str], threads: int) -> None:
    sys.meta_path.insert(0, _NoTorch())
    from digitlab.onnxrt import OnnxModel

    images, labels = mnist_test()
    runs = []
    for path in onnx_paths:
        model = OnnxModel(path, threads=threads)

        def classify(u8: np.ndarray) -> np.ndarray:
            return model.logits(u8[:, None].astype(np.float32) / np.float32(255.0))

        runs.append([score(classify, images, labels, b) for b in BATCHES])
    json.dump({"runs": runs, "torch_imported": "torch" in sys.modules}, sys.stdout)


# -- the parent ----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", help="model directory (default: the shipped model)")
    ap.add_argument("--threads", type=int, default=1, help="threads for both backends (default 1)")
    ap.add_argument("--no-int8", action="store_true", help="leave out the 8-bit export")
    ap.add_argument("--child", metavar="FILE.onnx", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.threads)
        return 0

    import torch

    from digitlab.export import INT8_MAX_ACCURACY_DROP, export_onnx
    from digitlab.predict import Predictor

    torch.set_num_threads(args.threads)
    images, labels = mnist_test()
    with tempfile.TemporaryDirectory(prefix="digitlab-onnx-check-") as tmp:
        report = export_onnx(args.model_dir, Path(tmp) / "model.onnx")
        reports = [report]
        if not args.no_int8:
            reports.append(export_onnx(args.model_dir, Path(tmp) / "model.int8.onnx",
                                       quantize="int8"))
        predictor = Predictor(args.model_dir, backend="torch", precision="fp32")
        torch_runs = [score(predictor.probabilities, images, labels, b) for b in BATCHES]
        done = subprocess.run([sys.executable, __file__, "--child", *(str(r.path) for r in reports),
                               "--threads", str(args.threads)],
                              capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        raise SystemExit("the ONNX Runtime child process failed")
    result = json.loads(done.stdout)

    print(f"model: {args.model_dir or 'the shipped model'} (id {report.model_id[:12]}); ONNX "
          f"opset {report.opset}, {report.bytes / 1024:,.0f} KB; export check on "
          f"{report.images:,} images: max abs difference {report.max_abs_diff_logits:.2g} "
          f"(logits), {report.max_abs_diff_probs:.2g} (probabilities)")
    for r in reports[1:]:
        print(f"int8 export: {r.bytes / 1024:,.0f} KB; its check: {r.argmax_disagreements} of "
              f"{r.images:,} predictions differ, max abs difference "
              f"{r.max_abs_diff_logits:.2g} (logits), {r.max_abs_diff_probs:.2g} (probabilities)")
    print(f"MNIST test set, {len(labels):,} images, {args.threads} thread(s); ONNX Runtime in a "
          f"process with torch blocked (torch imported there: {result['torch_imported']})\n")
    print("| backend | batch | accuracy | errors | seconds | images/s | predictions differing "
          "from PyTorch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    failed = bool(result["torch_imported"])
    names = ["ONNX Runtime", "ONNX Runtime int8"]
    for i, t in enumerate(torch_runs):
        rows = [("PyTorch", t, "-")]
        for k, runs in enumerate(result["runs"]):
            o = runs[i]
            differ = int((np.array(t["preds"]) != np.array(o["preds"])).sum())
            rows.append((names[k], o, differ))
            if k == 0:
                failed |= differ > 0
            else:
                failed |= o["accuracy"] < t["accuracy"] - INT8_MAX_ACCURACY_DROP
        for name, r, d in rows:
            errors = round((1 - r["accuracy"]) * len(labels))
            print(f"| {name} | {r['batch']:,} | {100 * r['accuracy']:.2f}% | {errors} | "
                  f"{r['seconds']:.2f} | {len(labels) / r['seconds']:,.0f} | {d} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
