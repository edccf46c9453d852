"""How long the light commands take, as a new process each time (what a user waits for).

`digitlab --help`, `digitlab train --help` and `digitlab models` import neither torch nor
OpenCV (``tests/test_layers.py`` checks that); ``python -c pass`` is the interpreter's own floor
and ``import torch`` what they would cost otherwise. Median of ``--repeats`` runs each.

    .venv/bin/python benchmarks/cli_startup.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_S = 0.5

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "digitlab --help": [sys.executable, "-m", "digitlab", "--help"],
    "digitlab train --help": [sys.executable, "-m", "digitlab", "train", "--help"],
    "digitlab models": [sys.executable, "-m", "digitlab", "models"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.repeats):  # in turns, so that a busy moment hits every command alike
        for name, cmd in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
    print(f"| command | median of {args.repeats} (s) | target |")
    print("| --- | ---: | --- |")
    for name, ts in times.items():
        target = f"<= {TARGET_S} s" if name.startswith("digitlab") else ""
        print(f"| `{name}` | {statistics.median(ts):.3f} | {target} |")


if __name__ == "__main__":
    main()
