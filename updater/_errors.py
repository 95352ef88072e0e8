"""What can go wrong, as one hierarchy: catch `GreenlightError` for all of it, or a subclass.

Every error carries the exit code the CLI returns for it and a one-line message that names
the file, field or URL involved and what to do.

```
GreenlightError (1)
├── UsageError (2)         an argument that cannot be right
├── ConfigError (3)        greenlight.toml or the root missing or invalid
├── TrustError (4)         TUF refused metadata or an artifact
├── NetworkError (5)       the repository unreachable, too slow, or an HTTP error
├── BusyError (6)          another updater holds the root
├── StoreError (7)         local state not writable (disk full, permissions)
├── ArchiveError (8)       a broken or hostile archive or bundle
├── NotFound (9)           a channel or release the repository does not carry
├── PrecheckFailed (11)    the running release fails a required check; nothing changed
├── ServiceError (12)      a service would not start or become ready
└── ChannelMismatch (13)   a bundle carries another channel
```
python-tuf's and httpx's exceptions are mapped once, in `greenlight.updater.trust`.

`GreenlightError` and three of its branches, `ConfigError`, `TrustError` and `ArchiveError`,
are the shared layer's (`greenlight.channels`): they are what its archive reader and its
product models raise, and what both sides catch. They are the client's own all the same:
importing them from here or from there gives the same classes.

`Interrupted` (SIGINT, SIGTERM) is not a `GreenlightError` and not an `Exception`: nothing
catches it by accident, and where a C extension catches it anyway (and raises its own error, or
none), the process still knows a signal came: the funnels ask `signalled` first. The
transaction under way undoes itself (or finishes its commit) in a `shielded` block that a
second signal cannot cut, records it, and the command exits 130 or 143.
"""

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from greenlight.channels import ArchiveError, ConfigError, GreenlightError, TrustError

__all__ = [
    "EXIT_CODES",
    "EXIT_DAMAGED",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_HELD",
    "EXIT_OK",
    "EXIT_ROLLBACK_FAILED",
    "EXIT_ROLLED_BACK",
    "EXIT_UPDATE_AVAILABLE",
    "EXIT_YANKED",
    "ArchiveError",
    "BusyError",
    "ChannelMismatch",
    "ConfigError",
    "GreenlightError",
    "Interrupted",
    "NetworkError",
    "NeedsNewer",
    "NotFound",
    "PrecheckFailed",
    "ServiceError",
    "StoreError",
    "TrustError",
    "UsageError",
    "block_interrupts",
    "handle_interrupts",
    "raise_if_signalled",
    "shielded",
    "signalled",
]


class UsageError(GreenlightError):
    """An argument that cannot be right (an invalid channel name, say)."""

    exit_code = 2


class NetworkError(GreenlightError):
    """The repository could not be reached or answered with an HTTP error."""

    exit_code = 5


class BusyError(GreenlightError):
    """Another transaction holds this installation root."""

    exit_code = 6


class StoreError(GreenlightError):
    """Local state could not be written or read (full disk, permissions, a broken store)."""

    exit_code = 7


class NotFound(GreenlightError):
    """A channel or release that the repository does not carry."""

    exit_code = 9


class ChannelMismatch(GreenlightError):
    """A bundle carries another channel than the one this root follows."""

    exit_code = 13


class ServiceError(GreenlightError):
    """A service would not start or become ready."""

    exit_code = 12


class PrecheckFailed(GreenlightError):
    """The running release failed a required check before anything changed (use --force)."""

    exit_code = 11


class NeedsNewer(GreenlightError):
    """The channel's entry needs a newer Greenlight than this one (its signed `requires`)."""

    exit_code = 17
    what: str = ""
    """`<release> needs Greenlight >= X; this machine runs Y`, for a line of the agent's"""


EXIT_OK = 0
EXIT_UPDATE_AVAILABLE = 10
EXIT_YANKED = 14
EXIT_HELD = 15
EXIT_DAMAGED = 16
EXIT_ROLLED_BACK = 20
EXIT_ROLLBACK_FAILED = 21
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success; for `check`: up to date",
    1: "unexpected internal error (a bug: please report it)",
    2: "usage error (unknown option, missing argument)",
    ConfigError.exit_code: "configuration or installation root missing or invalid",
    TrustError.exit_code: "verification refused metadata or an artifact",
    NetworkError.exit_code: "repository unreachable or HTTP error",
    BusyError.exit_code: "another updater holds the installation root",
    StoreError.exit_code: "local state could not be written (disk full, permissions)",
    ArchiveError.exit_code: "release archive broken or hostile",
    NotFound.exit_code: "channel or release not found in the repository",
    EXIT_UPDATE_AVAILABLE: "`check`: an update is available",
    PrecheckFailed.exit_code: "the running release failed a required check; nothing changed",
    ChannelMismatch.exit_code: "the bundle carries another channel (use --switch-channel)",
    ServiceError.exit_code: "a service would not start or become ready",
    NeedsNewer.exit_code: "the channel's release needs a newer Greenlight than this one "
                          "(docs/compatibility.md); nothing changed",
    EXIT_YANKED: "`check`: the installed release was yanked; `updater upgrade` leaves it",
    EXIT_HELD: "`check`, `upgrade`: the channel has another release, held back here "
               "(quarantined, outside its rollout, pinned away, or older); nothing changed",
    EXIT_DAMAGED: "`verify`: the installed release differs from its signed file lists "
                  "(`verify --repair` re-stages it)",
    EXIT_ROLLED_BACK: "the new release failed its checks and was rolled back",
    EXIT_ROLLBACK_FAILED: "rollback failed too: dead end, see `updater history`",
    EXIT_INTERRUPTED: "interrupted by SIGINT (Ctrl-C): what was under way was undone or "
                      "finished, and recorded",
    EXIT_TERMINATED: "stopped by SIGTERM: what was under way was undone or finished, and "
                     "recorded",
}


# --- interruptions ---------------------------------------------------------------------------
class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; the command exits 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_shield = {"depth": 0}
_pending: list[int] = []
_received: list[int] = []  # every stop signal this process took, for as long as it runs
_STOPS = {signal.SIGINT, signal.SIGTERM}


def _on_signal(signum: int, frame: object) -> None:
    _received.append(signum)
    if _shield["depth"]:
        _pending.append(signum)  # raised when the shielded work is done
        return
    raise Interrupted(signum)


def _unraisable(hook: Callable[[Any], object]) -> Callable[[Any], object]:
    def quiet(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, Interrupted):
            hook(unraisable)
        # else: a library swallowed the Interrupted; `signalled` still knows of it

    return quiet


def handle_interrupts() -> None:
    """From now on, SIGINT and SIGTERM raise `Interrupted` in the main thread. Both are then
    unblocked: the agent's loop starts each cycle with them blocked, so a stop sent during the
    start-up waits for these handlers instead of being lost."""
    for signum in _STOPS:
        signal.signal(signum, _on_signal)
    sys.unraisablehook = _unraisable(sys.unraisablehook)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)


def block_interrupts() -> None:
    """Hold SIGINT and SIGTERM pending (across an exec too); `Interrupted` if one came
    before."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    raise_if_signalled()


def signalled(error: BaseException) -> BaseException:
    """What ended the work: `Interrupted` when a stop signal arrived meanwhile, whatever a
    library made of it (pydantic-core reports an exception raised inside its validation as a
    failed validation; a check may report it as a failure), else `error` itself."""
    if _received and not isinstance(error, Interrupted):
        return Interrupted(_received[0])
    return error


def raise_if_signalled() -> None:
    """Raise `Interrupted` if a stop signal arrived, even one a library caught and turned into
    another error or swallowed (pydantic-core reports an exception raised inside its validation
    as a failed validation): the signal, not that error, is what ended the work.

    Raises:
        Interrupted: a stop signal arrived.
    """
    if _received:
        raise Interrupted(_received[0])


@contextmanager
def shielded() -> Iterator[None]:
    """Work a signal must not cut (an undo, a rollback, a commit): a signal that arrives
    meanwhile is raised as `Interrupted` once the block ends.

    Raises:
        Interrupted: a stop signal arrived during the block (raised as it ends).
    """
    _shield["depth"] += 1
    try:
        yield
    finally:
        _shield["depth"] -= 1
        if not _shield["depth"] and _pending:
            signum = _pending[0]
            _pending.clear()
            raise Interrupted(signum)
