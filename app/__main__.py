"""`python -m app` starts T-MAC Chat; `python -m app --self-test` checks it end to end and prints JSON.

Kept tiny on purpose: the engine process is started with the "spawn" method,
which re-imports this module in the child, so nothing heavy (Qt) may be
imported at module level here.
"""

import multiprocessing
import sys


def main() -> None:
    multiprocessing.freeze_support()  # a frozen (PyInstaller) app re-enters here for its engine process
    from app.main import run

    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
