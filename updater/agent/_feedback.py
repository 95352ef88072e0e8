"""The agent's part in user feedback: each cycle takes the product's inbox first
(`operations.collect_inbox`) and sends the queued feedback last (`send_feedback`), even after
a cycle that failed. Each refused inbox file is one line of the agent's log; why feedback is
not getting through is said once for each reason, not every cycle. Nothing here raises: the
agent outlives a hostile inbox, a collector that is down and its own bugs."""

from collections.abc import Callable

from greenlight.channels import printable
from greenlight.updater._errors import GreenlightError, raise_if_signalled
from greenlight.updater.store import InstallRoot, feedback_refusal, queued_feedback

__all__ = ["collect_feedback", "send_queued_feedback"]

Log = Callable[[str], None]
SaidOnce = Callable[[str, str], bool]
"""`said_once(line, key)`: whether `line` was said already under `key` (remembered if not)"""


def collect_feedback(root: InstallRoot, log: Log, said_once: SaidOnce) -> None:
    """What the product's UI left in its feedback inbox, queued; each refusal one line."""
    from greenlight.updater.operations import collect_inbox

    try:
        found = collect_inbox(root)
    except Exception as e:
        raise_if_signalled()
        said = f"feedback inbox: {e}" if isinstance(e, GreenlightError | OSError) else (
            f"feedback inbox: internal error: {type(e).__name__}: {e} (please report it)")
        if not said_once(said, "inbox"):
            log(said)
        return
    said_once("", "inbox")
    for line in found.refused:
        log(f"feedback inbox: {line}")
    for report in found.accepted:
        log(f"feedback inbox: queued feedback {report.id}: {printable(report.text, 120)}")
    if found.dropped:
        log(f"feedback: the queue is full: the {found.dropped} oldest dropped")


def send_queued_feedback(root: InstallRoot, log: Log, said_once: SaidOnce) -> None:
    """The queued feedback sent (`send_feedback`); why it waits, said once a reason."""
    from greenlight.updater.agent._sender import send_feedback

    if not queued_feedback(root):
        return
    try:
        sent = send_feedback(root)
    except Exception as e:  # a damaged machine key, say: logged, the cycle goes on
        raise_if_signalled()
        log(f"feedback: not sent: {type(e).__name__}: {e}")
        return
    if sent:
        log(f"feedback: {sent} sent to the collector")
    why = feedback_refusal(root)
    if why is None:
        said_once("", "feedback")
    elif not said_once(why, "feedback"):
        log(f"feedback: {why}")
