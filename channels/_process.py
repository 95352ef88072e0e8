"""Settings of a Greenlight command-line process, applied once by each CLI before it works.

Both keep work out of every `updater` run that Greenlight never uses (bench/startup.py):
- pydantic looks for plugins in every installed distribution's entry points the first time a
  model is built (~30 ms): the search is marked done, with none found, for this process only
  (an environment variable would leak into the services the updater starts);
- httpx imports its own command line (`httpx._main`, which loads click, rich and pygments)
  whenever they are installed (~50 ms): a stand-in module answers in its place.
"""

import sys
import types

__all__ = ["lean_process"]


def _no_httpx_cli() -> None:
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stand_in = types.ModuleType("httpx._main")

    def main() -> None:
        raise SystemExit("httpx's command line is not loaded in a Greenlight process")

    stand_in.__dict__["main"] = main
    sys.modules["httpx._main"] = stand_in


def _no_pydantic_plugins() -> None:
    try:
        from pydantic.plugin import _loader
    except ImportError:
        return
    if getattr(_loader, "_plugins", None) is None:
        _loader._plugins = {}


def lean_process() -> None:
    """Apply both; call it before anything imports httpx or builds a model."""
    _no_httpx_cli()
    _no_pydantic_plugins()
