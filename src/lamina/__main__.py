"""``python -m lamina`` is the same as the ``lamina`` command."""

import sys

from lamina.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
