"""The one lazy-loading idiom of Greenlight's packages: a package names where each of its
exported names lives (`_HOME`, name -> module) and imports none of them until one is used,
so that `import greenlight.release` or a CLI's `--help` loads only what it shows
(tests/test_house.py bounds both). A package's module `__getattr__` (PEP 562) is

    def __getattr__(name: str) -> Any:
        return lazy_export(__name__, _HOME, name)

and its `TYPE_CHECKING` block imports the same names, for readers and type checkers."""

import importlib
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["lazy_export"]


def lazy_export(package: str, homes: Mapping[str, str], name: str) -> Any:
    """`name` of `package`, imported from its home module on first use and kept in the
    package (the next use is a plain attribute).

    Raises:
        AttributeError: the package exports no such name.
    """
    home = homes.get(name)
    if home is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    setattr(sys.modules[package], name, value)
    return value
