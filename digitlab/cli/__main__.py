"""``python -m digitlab.cli``: the same as ``digitlab``."""

import sys

from . import main

sys.exit(main())
