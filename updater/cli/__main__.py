"""`python -m greenlight.updater.cli`: the updater, as the agent's cycles run it."""

from greenlight.updater.cli import main

__all__: list[str] = []

main()
