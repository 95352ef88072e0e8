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
"""

import contextlib
import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from greenlight.channels import atomic_write, printable, sign_body
from greenlight.updater._errors import GreenlightError
from greenlight.updater.product import config_of, machine_cohort
from greenlight.updater.store import InstallRoot, queued, set_refusal

__all__ = ["send_reports"]

MAX_BACKOFF = 3600.0


def _token(root: InstallRoot, file: str) -> str | None:
    try:
        raw = (root.path / file).read_bytes().removesuffix(b"\n").removesuffix(b"\r")
    except OSError:
        return None
    if not raw or any(b < 0x21 or b > 0x7E for b in raw):
        return None
    return raw.decode()


def _backoff_path(root: InstallRoot) -> Path:
    return root.state / "reports" / ".backoff"


def _waiting(root: InstallRoot, now: float) -> bool:
    try:
        state = json.loads(_backoff_path(root).read_text())
        return now < float(state["next"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _back_off(root: InstallRoot, now: float) -> None:
    try:
        previous = float(json.loads(_backoff_path(root).read_text())["delay"])
    except (OSError, ValueError, KeyError, TypeError):
        previous = 0.0
    delay = min(MAX_BACKOFF, max(5.0, previous * 2))
    atomic_write(_backoff_path(root), json.dumps({"delay": delay, "next": now + delay}).encode())


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


def send_reports(root: InstallRoot) -> int:
    """Send what is queued, oldest first, within the time budget; the number sent."""
    try:
        config = config_of(root).report
    except GreenlightError:
        return 0
    if config is None:
        return 0
    now = time.time()
    waiting = queued(root)
    if not waiting or _waiting(root, now):
        return 0
    token = _token(root, config.token_file)
    if token is None:
        _refused(root, f"[report] token_file {config.token_file}: missing, empty or not "
                       "printable ASCII; reports stay queued")
        return 0
    import httpx

    cohort = machine_cohort(root)
    sent, deadline = 0, time.monotonic() + config.timeout
    try:
        with httpx.Client(timeout=config.timeout) as client:
            for path in waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    body = _as_this_machine(path.read_bytes(), root.machine_id, cohort)
                except (OSError, ValueError):
                    path.unlink(missing_ok=True)  # unreadable: it never gets better
                    continue
                answer = client.post(f"{config.url}v1/reports", content=body,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json",
                                              **sign_body(root.machine_key, body)},
                                     timeout=left)
                if answer.status_code == 429 or answer.status_code >= 500:
                    _back_off(root, now)
                    return sent
                if answer.status_code in (401, 403):
                    said = _said(answer.text)
                    _refused(root, f"the collector refused the fleet token (HTTP "
                                   f"{answer.status_code}: {said}); reports stay queued until "
                                   "[report] token_file is right" if "token" in said else
                                   f"the collector refused this machine (HTTP "
                                   f"{answer.status_code}: {said}); reports stay queued until "
                                   f"it admits key {root.machine_id} (updater identity)")
                    _back_off(root, now)
                    return sent
                path.unlink(missing_ok=True)  # accepted, or refused for good
                if answer.is_success:
                    sent += 1
                    _refused(root, None)
                else:
                    _refused(root, f"the collector refused a report for good (HTTP "
                                   f"{answer.status_code}: {_said(answer.text)}); it was "
                                   "dropped")
    except (httpx.HTTPError, OSError):
        with contextlib.suppress(OSError):
            _back_off(root, now)
        return sent
    _backoff_path(root).unlink(missing_ok=True)
    return sent
