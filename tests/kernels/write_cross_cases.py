"""Writes the cross-tier cases file (test_cross_tiers.write_cases, same seed as the `rng` fixture)
for drivers run outside pytest: `.ci/cross.sh` runs the Windows build of c/kernel_driver.c
under wine on it.

    python -m tests.kernels.write_cross_cases OUT.bin
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tests.kernels.test_cross_tiers import write_cases

SEED = 20261121  # tests/conftest.py's rng fixture


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    n = write_cases(Path(argv[0]), np.random.default_rng(SEED))
    print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
