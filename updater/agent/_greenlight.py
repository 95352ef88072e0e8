"""The agent's step for Greenlight itself: each cycle, before the product, the machine's
Greenlight moves to the newest updater release it may take (`selfupdate.self_update`), and
when it moved, the cycle goes on in the new version (the process re-executes `bin/updater`
with the same arguments), so a release that needs it is installed in the same cycle.

Only a Greenlight that moves itself does this (`store.greenlight_kind` "exe"), and only under
`apply = "auto"`: a machine that only downloads or notifies waits for `updater self-update`,
and says so when a release needs it.
"""

import os
import signal
import sys
from collections.abc import Callable

from greenlight.updater._errors import BusyError, GreenlightError, raise_if_signalled
from greenlight.updater.product import AgentConfig
from greenlight.updater.selfupdate import Repository
from greenlight.updater.store import InstallRoot, entry_point, greenlight_kind

__all__ = ["take_greenlight"]


def take_greenlight(root: InstallRoot, repo: Repository, config: AgentConfig,
                    log: Callable[[str], None], said: Callable[[str], bool]) -> str | None:
    """Move Greenlight if it may, and re-execute into the new version when it moved (this
    never returns then). Returns why it did not move, when a newer version exists; `said`
    tells whether a line was logged already (each is logged once while it holds)."""
    from greenlight.updater.selfupdate import self_update

    kind = greenlight_kind(root)
    if kind != "exe":
        return ("Greenlight runs from a Python environment here: its package manager moves it"
                if kind == "python" else "a newer offline installer run on this root moves "
                "Greenlight")
    if config.apply != "auto":
        return f"[agent] apply = \"{config.apply}\": run 'updater self-update' to move it"
    try:
        done = self_update(root, repo)
    except BusyError:
        return "another updater holds the root; the next cycle tries again"
    except GreenlightError as e:
        raise_if_signalled()
        if not said(f"greenlight: {e}"):
            log(f"Greenlight's own update: {e}")
        return str(e)
    if done.outcome == "updated":
        log(done.note)
        point = entry_point(root)
        sys.stdout.flush()
        sys.stderr.flush()
        # The stops stay blocked across the exec: the new version unblocks them once its own
        # handlers are in place (as each cycle does), so none is lost in between.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        os.execv(point, [str(point), *sys.argv[1:]])
    if done.outcome in ("quarantined", "held", "unmanaged") and not said(
            f"greenlight: {done.note}"):
        log(done.note)
    return None if done.outcome == "up-to-date" else done.note
