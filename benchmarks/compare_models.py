"""Compare model directories on re-rendered *validation* digits, to choose between them without
touching the test set.

The digits are the 5,000 validation images that `digitlab train --seed 0` holds out (so only
models trained with seed 0, or on other data, are fairly compared), re-rendered as in
`realworld.py`: fine-pen and marker strokes (1,000 each), number strips (500) and junk (500).
"clean" is the validation digits as 28x28 arrays through the same preprocessing.

    python benchmarks/compare_models.py shipped runs/a runs/b [--n 1000]

This compared `best --augment robust` with the shipped model (README, "Records"); it takes
about two minutes per model on one thread. Validation digits come from the training writers, so
confirm a choice on the test-digit benchmark (`realworld.py --model-dir DIR`) once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realworld as rw  # noqa: E402  (renderers shared with the accuracy benchmark)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="model directories ('shipped' for the default)")
    ap.add_argument("--n", type=int, default=1000, help="fine-pen and marker digits per set")
    ap.add_argument("--seed", type=int, default=123, help="rendering seed")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    from digitlab.data import load_dataset, split_train_val
    from digitlab.predict import Predictor

    ds = load_dataset("mnist")
    _, _, xva, yva = split_train_val(ds.train_images, ds.train_labels, 5000, 0)
    xva, yva = xva.numpy(), yva.numpy()
    rng = np.random.default_rng(args.seed)
    sets = {}
    for style in ("thin", "thick"):
        idx = rng.choice(len(xva), args.n, replace=False)
        sets[style] = ([rw.user_digit(rng, xva[i], style) for i in idx],
                       [int(v) for v in yva[idx]], "digit")
    strips, texts = [], []
    for _ in range(500):
        idx = rng.choice(len(xva), int(rng.integers(2, 7)), replace=False)
        strips.append(rw.digit_strip(rng, [xva[i] for i in idx]))
        texts.append("".join(str(int(yva[i])) for i in idx))
    sets["strips"] = (strips, texts, "number")
    kinds = [rw.JUNK_KINDS[i % len(rw.JUNK_KINDS)] for i in range(500)]
    sets["junk"] = ([rw.junk(rng, k) for k in kinds], kinds, "junk")

    print("| model | clean | fine pen (thin) | marker (thick) | strips exact | junk rejected |")
    print("|---|---:|---:|---:|---:|---:|")
    for md in args.models:
        p = Predictor(None if md == "shipped" else md)
        clean = np.mean([bool(r.top_k) and r.top_k[0][0] == t
                         for r, t in zip(p.predict(list(xva)), yva)])
        cells = [f"{clean:.2%}"]
        for name, (items, labels, kind) in sets.items():
            r = rw.score(p, items, labels, kind)
            cells.append(f"{r['rejected'] if kind == 'junk' else r['metric']:.2%}")
        print(f"| {md} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
