"""``python -m cachelib``: the ``cache-manager`` command line."""

import sys

from cachelib.cli import main

if __name__ == "__main__":
    sys.exit(main())
