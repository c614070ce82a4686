"""``python -m fakescope``."""

import sys

from fakescope.cli import main

sys.exit(main())
