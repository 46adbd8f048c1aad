"""`python -m squall.simulator`: serve the simulator; prints its base URL as the first line."""

from __future__ import annotations

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
