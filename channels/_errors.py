"""The errors of what both sides read the same way: an archive, a product's manifest and its
configuration. They are the root and three branches of the client's error tree
(`greenlight.updater._errors`, which adds the rest): each carries the exit code `updater`
returns for it, and the client catches them as its own. The pipeline turns them into its
own errors (`greenlight.release._errors`).

```
GreenlightError (1)
├── ConfigError (3)        greenlight.toml, a product's manifest or configuration invalid
├── TrustError (4)         bytes that do not match what was signed
└── ArchiveError (8)       a broken or hostile archive or bundle
```
"""

__all__ = ["ArchiveError", "ConfigError", "GreenlightError", "TrustError"]


class GreenlightError(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def kind(self) -> str:
        return type(self).__name__


class ConfigError(GreenlightError):
    """greenlight.toml or the installation root is missing, unreadable or invalid."""

    exit_code = 3


class TrustError(GreenlightError):
    """TUF verification refused metadata or a target: tampered, expired, replayed, wrong root."""

    exit_code = 4


class ArchiveError(GreenlightError):
    """A release archive is broken or hostile (paths out of the tree, links, bombs)."""

    exit_code = 8
