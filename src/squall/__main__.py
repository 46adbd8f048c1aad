"""`python -m squall`: the same as the `squall` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
