"""``python -m fakescope.serve --detector CKPT``: the ``serve`` subcommand on its own."""

from __future__ import annotations

import sys

from fakescope.cli.serve import main

if __name__ == "__main__":
    sys.exit(main())
