"""Sending the fleet-report outbox (`state/reports/`) to the collector named by `[report] url`.

Called after a command or an agent cycle, never inside a transaction. One flush takes at most
`[report] timeout` seconds in all; a collector that is down or slow leaves the reports queued
for the next flush, which waits out a back-off that doubles up to an hour
(`state/reports/.backoff`). Each report is signed with the machine's key
(`state/machine-key.pem`, see `channels.sign_body`) and names the key's id, the report's
own id and when it is sent (a resend is answered "already have it", and so is a replay). A
refusal of the fleet token or of the machine's key (401, 403) keeps the report queued and
backs off: fixing the token file, or the collector admitting the key, sends it. A report
refused for any other reason (another 4xx but 429) is dropped, since it never gets better by
retrying. Either way the refusal is kept (`store.refusal`: status.json's `last_error`,
`updater status`, the agent's log) until a report is accepted. Nothing here raises.

User feedback (`state/feedback/`, `send_feedback`) goes the same way to `<url>v1/feedback`,
with a back-off of its own (`state/feedback/.backoff`) and its own refusal
(`store.feedback_refusal`): accepted (2xx) or already there (409), it leaves the queue;
429, 5xx and a network error keep it and back off; 401 and 403 keep it and say why; a
collector without the route (404, 405) keeps it and says so (an older collector, updated
later, takes it; `updater feedback --export` meanwhile); so does a 422 about the time it was
sent (this machine's clock is off: fixed, it is taken); any other refusal (413, 422, ...)
drops it and says why. Without `[report]` it stays queued, said once, for an export.
"""

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from greenlight.channels import atomic_write, printable, sign_body
from greenlight.updater._errors import GreenlightError
from greenlight.updater.product import config_of, machine_cohort
from greenlight.updater.store import (
    InstallRoot,
    feedback_as_sent,
    queued,
    queued_feedback,
    set_feedback_refusal,
    set_refusal,
)

__all__ = ["NO_COLLECTOR", "send_feedback", "send_reports"]

MAX_BACKOFF = 3600.0


def _token(root: InstallRoot, file: str) -> str | None:
    try:
        raw = (root.path / file).read_bytes().removesuffix(b"\n").removesuffix(b"\r")
    except OSError:
        return None
    if not raw or any(b < 0x21 or b > 0x7E for b in raw):
        return None
    return raw.decode()


def _backoff_path(root: InstallRoot, folder: str = "reports") -> Path:
    return root.state / folder / ".backoff"


def _waiting(root: InstallRoot, now: float, folder: str = "reports") -> bool:
    try:
        state = json.loads(_backoff_path(root, folder).read_text())
        return now < float(state["next"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _back_off(root: InstallRoot, now: float, folder: str = "reports") -> None:
    try:
        previous = float(json.loads(_backoff_path(root, folder).read_text())["delay"])
    except (OSError, ValueError, KeyError, TypeError):
        previous = 0.0
    delay = min(MAX_BACKOFF, max(5.0, previous * 2))
    atomic_write(_backoff_path(root, folder),
                 json.dumps({"delay": delay, "next": now + delay}).encode())


def _said(text: str) -> str:
    """What a collector answered, safe for a terminal or a log line."""
    with contextlib.suppress(ValueError, AttributeError):
        text = str(json.loads(text).get("error", text))
    return printable(" ".join(text.split()), 160)


def _refused(root: InstallRoot, why: str | None) -> None:
    with contextlib.suppress(OSError):
        set_refusal(root, why)


def _as_this_machine(body: bytes, ident: str, cohort: str) -> bytes:
    """A queued report as this machine sends it: under its key's id (a report queued before
    the machine had a key names the old random id), with its cohort, its own id (from the
    queued bytes: the same on every send, so the collector counts it once) and the time it
    is sent (so a copy captured on the way is stale within a day)."""
    report = json.loads(body)
    report["installation"], report["cohort"] = ident, cohort
    if not report.get("id"):
        report["id"] = hashlib.sha256(body).hexdigest()[:32]
    report["sent"] = datetime.now(UTC).isoformat()
    return json.dumps(report).encode()


Act = Callable[[Path, int, str], Literal["stop", "taken", "dropped"]]
"""What a flush does with the collector's answer to one queued file (its path, the HTTP
status, what it said): stop and back off (the file stays), taken (it left the queue, and
counts as sent), dropped (it left the queue, refused for good)."""


def _flush(root: InstallRoot, url: str, token: str, timeout: float, waiting: list[Path],
           prepare: Callable[[bytes], bytes], act: Act) -> tuple[int, bool]:
    """Post each queued file, oldest first, signed by the machine's key, within `timeout`
    seconds in all: `prepare` makes the body sent from the queued bytes (one that does not
    prepare is dropped: it never gets better), `act` decides on each answer. How many were
    taken, and whether the flush stopped to back off (an answer said so, or the network or
    the disk failed).

    Raises:
        ValueError: the machine's key does not load, so nothing can be signed.
    """
    import httpx

    sent, deadline = 0, time.monotonic() + timeout
    try:
        with httpx.Client(timeout=timeout) as client:
            for path in waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    body = prepare(path.read_bytes())
                except (OSError, ValueError):
                    path.unlink(missing_ok=True)
                    continue
                answer = client.post(url, content=body,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json",
                                              **sign_body(root.machine_key, body)},
                                     timeout=left)
                done = act(path, answer.status_code, _said(answer.text))
                if done == "stop":
                    return sent, True
                sent += done == "taken"
    except (httpx.HTTPError, OSError):
        return sent, True
    return sent, False


def _send(root: InstallRoot, config: Any, folder: str, stays: str, waiting: list[Path],
          endpoint: str, prepare: Callable[[bytes], bytes], act: Act,
          refuse: Callable[[str], None]) -> int:
    """One flush of the queue in `state/<folder>/` to `<url><endpoint>`, waiting out its
    back-off first and setting the next one (or clearing it) after; a token file or a machine
    key that cannot be used is said through `refuse` ("... ; <stays> queued"). The number
    the collector took."""
    now = time.time()
    if _waiting(root, now, folder):
        return 0
    token = _token(root, config.token_file)
    if token is None:
        refuse(f"[report] token_file {config.token_file}: missing, empty or not printable "
               f"ASCII; {stays} queued")
        return 0
    try:
        sent, stopped = _flush(root, f"{config.url}{endpoint}", token, config.timeout,
                               waiting, prepare, act)
    except ValueError as e:  # the machine's key does not load: nothing can be signed
        refuse(f"state/machine-key.pem: {e}; {stays} queued")
        return 0
    with contextlib.suppress(OSError):
        if stopped:
            _back_off(root, now, folder)
        else:
            _backoff_path(root, folder).unlink(missing_ok=True)
    return sent


def _report_answer(root: InstallRoot) -> Act:
    def act(path: Path, code: int, said: str) -> Literal["stop", "taken", "dropped"]:
        if code == 429 or code >= 500:
            return "stop"
        if code in (401, 403):
            _refused(root, f"the collector refused the fleet token (HTTP {code}: {said}); "
                           "reports stay queued until [report] token_file is right"
                     if "token" in said else
                     f"the collector refused this machine (HTTP {code}: {said}); reports "
                     f"stay queued until it admits key {root.machine_id} (updater identity)")
            return "stop"
        path.unlink(missing_ok=True)  # accepted, or refused for good
        if 200 <= code < 300:
            _refused(root, None)
            return "taken"
        _refused(root, f"the collector refused a report for good (HTTP {code}: {said}); it "
                       "was dropped")
        return "dropped"
    return act


def send_reports(root: InstallRoot) -> int:
    """Send what is queued, oldest first, within the time budget; the number sent."""
    try:
        config = config_of(root).report
    except GreenlightError:
        return 0
    if config is None:
        return 0
    waiting = queued(root)
    if not waiting:
        return 0
    cohort = machine_cohort(root)
    return _send(root, config, "reports", "reports stay", waiting, "v1/reports",
                 lambda queued: _as_this_machine(queued, root.machine_id, cohort),
                 _report_answer(root), lambda why: _refused(root, why))


NO_COLLECTOR = ("no collector is configured ([report] url): export it with "
                "`updater feedback --export FILE`")
_FEEDBACK = "feedback"


def _feedback_refused(root: InstallRoot, why: str | None) -> None:
    with contextlib.suppress(OSError):
        set_feedback_refusal(root, why)


def _feedback_answer(root: InstallRoot, url: str) -> Act:
    def act(path: Path, code: int, said: str) -> Literal["stop", "taken", "dropped"]:
        if code == 429 or code >= 500:
            return "stop"
        if code in (401, 403):
            _feedback_refused(root, (
                f"the collector refused the fleet token (HTTP {code}: {said}); feedback "
                "stays queued until [report] token_file is right" if "token" in said else
                f"the collector refused this machine (HTTP {code}: {said}); feedback stays "
                f"queued until it admits key {root.machine_id} (updater identity)"))
            return "stop"
        if code in (404, 405):
            _feedback_refused(root, f"the collector at {url} takes no feedback (HTTP {code}): "
                                    "it stays queued until it does; `updater feedback "
                                    "--export FILE` meanwhile")
            return "stop"
        if code == 422 and "clock" in said:  # this machine's clock is off: it gets better
            _feedback_refused(root, f"the collector refused the time of a feedback (HTTP "
                                    f"{code}: {said}); feedback stays queued until this "
                                    "machine's clock is right")
            return "stop"
        path.unlink(missing_ok=True)  # accepted, already there, or refused for good
        if 200 <= code < 300 or code == 409:
            _feedback_refused(root, None)
            return "taken"
        _feedback_refused(root, f"the collector refused a feedback for good (HTTP {code}: "
                                f"{said}); it was dropped")
        return "dropped"
    return act


def send_feedback(root: InstallRoot) -> int:
    """Send the queued feedback, oldest first, within `[report] timeout`, each with `sent`
    set now and signed by the machine's key; the number the collector took (or had)."""
    waiting = queued_feedback(root)
    if not waiting:
        return 0
    try:
        config = config_of(root).report
    except GreenlightError:
        return 0
    if config is None:
        _feedback_refused(root, NO_COLLECTOR)
        return 0
    return _send(root, config, _FEEDBACK, "feedback stays", waiting, "v1/feedback",
                 lambda queued: feedback_as_sent(queued, datetime.now(UTC)),
                 _feedback_answer(root, config.url), lambda why: _feedback_refused(root, why))
