"""Entry point of the offline installer executable (see updater/installer.py)."""

import sys

from greenlight.updater.installer import main

if __name__ == "__main__":
    sys.exit(main())
