"""``python -m digitlab ...``: the CLI, also as torchrun starts it
(``torchrun --standalone --nproc-per-node 2 -m digitlab train ...``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
