"""`python -m tmac_core ...`: see tmac_core/cli.py."""

import sys

from tmac_core.cli import main

sys.exit(main())
