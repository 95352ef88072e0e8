"""Recovery, which every command runs first: a transaction an interrupted updater left
behind is finished or undone (`transaction.recover`). Cheap when there is nothing to recover:
the transaction is loaded only when a journal exists."""

from greenlight.updater._errors import BusyError, shielded
from greenlight.updater.product import config_of
from greenlight.updater.store import (
    HistoryEntry,
    InstallRoot,
    Journal,
    locked,
    settle,
    unsettled,
)

__all__ = ["recover_if_interrupted", "recover_root"]


def recover_root(root: InstallRoot) -> HistoryEntry | None:
    """`updater recover`: finish or undo an interrupted transaction, under the lock.

    Raises:
        BusyError: another updater holds the root.
    """
    from greenlight.updater.transaction import recover

    with locked(root), shielded():  # an undo or a commit is never cut half-way
        return recover(root, config_of(root))


def recover_if_interrupted(root: InstallRoot) -> HistoryEntry | None:
    """What every command runs first: recover a transaction nobody is running any more.

    Raises:
        ConfigError: the configuration does not load.
        StoreError: the journal or the history could not be read or written. A failed undo
            is not raised: it is recorded in the history and the journal stays for the next
            recovery. Another updater holding the root is not an error: it finishes its own.
    """
    if unsettled(root):  # Greenlight's own activation, cut short: finished or undone first
        try:
            with locked(root), shielded():
                settle(root)
        except BusyError:
            pass  # the updater that holds the root is the one activating: it finishes
    if not Journal.path(root).exists():
        return None
    try:
        return recover_root(root)
    except BusyError:
        return None  # its updater is alive and will finish it
