"""Compare model directories on re-rendered *validation* digits, to choose between them without
touching the test set.

The digits are the 5,000 validation images that `digitlab train --seed 0` holds out (so only
models trained with seed 0, or on other data, are fairly compared), re-rendered as in
`realworld.py`: fine-pen and marker strokes (1,000 each), number strips (500) and junk (500).
"clean" is the validation digits as 28x28 arrays through the same preprocessing.

    python benchmarks/compare_models.py shipped runs/a runs/b [--n 1000]

This compared `best --augment robust` with the shipped model (docs/records.md); it takes
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
    sets["strips"] = rw.strip_set(rng, xva, yva, 500)
    sets["junk"] = rw.junk_set(rng, 500)

    print("| model | clean | fine pen (thin) | marker (thick) | strips exact | junk rejected |")
    print("|---|---:|---:|---:|---:|---:|")
    for md in args.models:
        p = Predictor(None if md == "shipped" else md)
        # score's metric: top-1 for digits, the exact string for strips, rejected for junk
        cells = [f"{rw.score(p, list(xva), list(yva), 'digit')['metric']:.2%}"]
        cells += [f"{rw.score(p, *s)['metric']:.2%}" for s in sets.values()]
        print(f"| {md} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
