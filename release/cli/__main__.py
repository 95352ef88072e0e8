"""`python -m greenlight.release.cli`."""

from greenlight.release.cli import main

__all__: list[str] = []

main()
