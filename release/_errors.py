"""Errors of the release pipeline: one line a release engineer can act on, each class with
the exit code `release` returns for it (`release exit-codes` lists them).

```
ReleaseError                 1  refused: the request cannot be done as asked
├── UsageError               2  a bad value on the command line
├── NotFound                 3  no repository, channel, release, key or file where named
├── KeysError                4  keys missing, of the wrong role, or too open
├── Conflict                 5  not newer, already there, or another `release` holds the lock
├── MetadataError            6  metadata on disk that cannot be read or accepted
├── StorageError             7  the disk: full, unwritable (nothing was changed)
├── RemoteError              8  a collector or an object store unreachable, or refusing
├── BuildError               9  the offline installer's build failed
└── RehearsalFailed         10  a rehearsal failed: its matrix names each failed path and why
```
Anything else that reaches the CLI is a bug: it says so in one line, with exit 70.
"""

__all__ = ["EXIT_BUG", "EXIT_CODES", "BuildError", "Conflict", "KeysError",
           "LooseKeyPermissions", "MetadataError", "NotFound", "RehearsalFailed",
           "ReleaseError", "RemoteError", "StorageError", "UsageError"]

EXIT_BUG = 70


class LooseKeyPermissions(UserWarning):
    """A private key file others may read: said once, as one line, and used."""


class ReleaseError(Exception):
    """An expected failure of a `release` command; the message is the whole story."""

    exit_code = 1
    kind = "refused"


class UsageError(ReleaseError):
    exit_code = 2
    kind = "usage"


class NotFound(ReleaseError):
    exit_code = 3
    kind = "not-found"


class KeysError(ReleaseError):
    exit_code = 4
    kind = "keys"


class Conflict(ReleaseError):
    exit_code = 5
    kind = "conflict"


class MetadataError(ReleaseError):
    exit_code = 6
    kind = "metadata"


class StorageError(ReleaseError):
    exit_code = 7
    kind = "storage"


class RemoteError(ReleaseError):
    exit_code = 8
    kind = "remote"


class BuildError(ReleaseError):
    exit_code = 9
    kind = "build"


class RehearsalFailed(ReleaseError):
    exit_code = 10
    kind = "rehearsal"


EXIT_CODES: dict[int, str] = {
    0: "done",
    1: "refused: the request cannot be done as asked",
    2: "a bad value on the command line",
    3: "no repository, channel, release, key or file where named",
    4: "keys missing, of the wrong role, or too open",
    5: "not newer, already there, or another release command holds the lock",
    6: "metadata on disk that cannot be read or accepted",
    7: "the disk: full or unwritable (nothing was changed)",
    8: "a collector or an object store unreachable, or refusing",
    9: "the offline installer's build failed",
    10: "a rehearsal failed: its matrix names each failed path and why",
    130: "a rehearsal interrupted (Ctrl-C, SIGTERM): every path it started was stopped",
    EXIT_BUG: "a bug in release (please report it)",
}
