"""``python -m rartsprune``: the command line of the app (`rartsprune.app.cli`)."""

import sys

from rartsprune.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
