"""`digitlab predict` and `digitlab export`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import DigitlabError
from .common import _err, _positive_int


def _describe(p, number: bool) -> str:
    """One human-readable line per prediction."""
    name = p.path if p.path is not None else "<image>"
    if p.error:
        return p.error if p.error.startswith(name) else f"{name}: error: {p.error}"
    if number and p.digits is not None:
        if p.number is None:
            return f"{name}: no number ({p.reason})"
        parts = " ".join(f"{d.top_k[0][0] if d.top_k else '?'}:{d.confidence:.0%}"
                         f"{' (unsure)' if d.rejected else ''}" for d in p.digits)
        tail = f"  [{p.reason}]" if p.reason else ""
        return f"{name}: {p.number}  (per digit {parts}){tail}"
    top = ", ".join(f"{k} {v:.1%}" for k, v in p.top_k)
    if p.rejected:
        return f"{name}: no digit ({p.reason})" + (f"  top-{len(p.top_k)}: {top}" if top else "")
    return f"{name}: {p.digit}  ({p.confidence:.1%})  top-{len(p.top_k)}: {top}"


def cmd_predict(args) -> int:
    from ..predict import Predictor, expand_inputs, printable, row, save_stages, write_results
    if args.output and Path(args.output).suffix.lower() not in (".csv", ".json"):
        raise DigitlabError(f"{args.output}: --output must end in .csv or .json")
    paths, expanded = expand_inputs(args.images)
    if not paths:
        raise DigitlabError(f"no images found in {' '.join(args.images)}")
    predictor = Predictor(args.model_dir, reject_threshold=args.reject_threshold,
                          precision=args.precision, backend=args.backend)
    _err(f"model: {predictor.model_dir.name} ({predictor.config['architecture']}) on "
         f"{predictor.runs}")
    bar = None
    if len(paths) > 3 and (expanded or sys.stderr.isatty()):
        from tqdm import tqdm
        bar = tqdm(total=len(paths), unit="img", desc="predicting", file=sys.stderr, leave=False)
    try:
        preds = predictor.predict(paths, top_k=args.top_k, number=args.number,
                                  keep_stages=bool(args.debug_dir),
                                  progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if args.debug_dir:
        used: set[str] = set()
        for i, p in enumerate(preds):
            if p.error:
                continue
            name = Path(paths[i]).stem or f"image{i}"
            name = f"{name}-{i}" if name in used else name
            used.add(name)
            save_stages(p, Path(args.debug_dir) / name)
    if args.output:
        write_results(args.output, preds, args.number)
    if args.json:
        print(json.dumps([row(p, args.number) for p in preds], indent=2))
    else:
        for p in preds:
            print(printable(_describe(p, args.number)))
    failed = sum(p.error is not None for p in preds)
    if failed:
        _err(f"digitlab predict: {failed} of {len(preds)} images could not be read")
    return 1 if failed else 0


def cmd_export(args) -> int:
    from ..export import export_onnx
    if args.quantize:
        print(f"quantizing to {args.quantize}, calibrated on MNIST training images...",
              file=sys.stderr, flush=True)
    r = export_onnx(args.model_dir, args.out, quantize=args.quantize)
    kind = " (int8)" if r.precision == "int8" else ""
    print(f"exported {args.model_dir or 'the shipped model'} -> {r.path}{kind} "
          f"({r.bytes / 1024:,.0f} KB, ONNX opset {r.opset}, model id {r.model_id[:12]})")
    n = r.argmax_disagreements
    same = ("same prediction for all" if not n
            else f"{n} prediction{' differs' if n == 1 else 's differ'}")
    print(f"checked against PyTorch on {r.images:,} MNIST test images: {same}, "
          f"accuracy {r.accuracy_onnx:.2%} (PyTorch {r.accuracy_torch:.2%}), "
          f"max abs difference {r.max_abs_diff_logits:.2g} (logits), "
          f"{r.max_abs_diff_probs:.2g} (probabilities)")
    return 0


def register(sub) -> None:
    from ..onnxrt import BACKEND_HELP, BACKENDS, PRECISION_HELP, PREDICT_PRECISIONS

    s = sub.add_parser("predict", help="read the digit (or number) in your images",
                       description="Read digits in photos, scans and drawings: any size, colour "
                                   "and position. Exit code 1 if some files could not be read.")
    s.add_argument("images", nargs="+", metavar="IMAGE|DIR|GLOB",
                   help="image files, folders (searched recursively) or glob patterns")
    s.add_argument("--model-dir", metavar="DIR", help="model directory (default: the shipped model)")
    s.add_argument("--top-k", type=_positive_int, default=3, metavar="K",
                   help="how many candidates to show (default 3)")
    s.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    s.add_argument("--number", action="store_true",
                   help="read a row of digits (a whole number) left to right")
    s.add_argument("--output", metavar="FILE", help="also write the results to FILE (.csv or .json)")
    s.add_argument("--debug-dir", metavar="DIR",
                   help="write the preprocessing stages of each image (what the model saw)")
    s.add_argument("--reject-threshold", type=float, metavar="P",
                   help="reject digits whose confidence is below P (default: the model's, "
                        "see docs/predict.md)")
    s.add_argument("--precision", choices=PREDICT_PRECISIONS, default="auto", help=PRECISION_HELP)
    s.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("export", help="export a model directory to ONNX (checked against PyTorch)",
                       description="Write the model as an ONNX graph (dynamic batch, float32 "
                                   "(N, 1, 28, 28) in [0, 1], ink bright on dark; class names and "
                                   "model id in its metadata), run it with ONNX Runtime next to "
                                   "PyTorch on 1,000 MNIST test images, and keep it only if "
                                   "both agree.")
    s.add_argument("--model-dir", metavar="DIR", help="model directory (default: the shipped model)")
    s.add_argument("--format", choices=["onnx"], default="onnx", help="output format (default: onnx)")
    s.add_argument("--out", metavar="FILE.onnx",
                   help="file to write (default: DIR/model.onnx, beside model.safetensors; "
                        "DIR/model.int8.onnx with --quantize int8)")
    s.add_argument("--quantize", choices=["int8"],
                   help="int8: 8-bit weights and activations (ONNX Runtime's static "
                        "quantization, calibrated on 1,000 MNIST training images), kept if it "
                        "reads the check images as PyTorch does within looser bounds; "
                        "`predict` and `serve` run it where it is there (--precision)")
    s.set_defaults(func=cmd_export)
