"""A user's feedback with the evidence this machine holds (`updater feedback`, the product's
inbox): composed as a `channels.FeedbackReport`, queued in `state/feedback/`, sent by the
agent and after commands (`agent.send_feedback`), or exported to a file for an air-gapped
machine (`export_feedback`).

The evidence is what the root keeps, read, never run: the installed release and its key,
the channel, the cohort, this Greenlight's version and kind, the last health results with
their evidence (the last `updater health`, and the failed checks of the last entry of the
history that has any), the last incident (rollback, dead end, crash loop, blocked pre-check)
with its first failed check, and the last ten entries of the history. The product's log
tails (each service's `logs/<name>.log` and the agent's log: the last 8 KiB of each, at most
eight) only with the user's consent. Everything passes the same redaction as the health
results (`product.secrets_of`: the UI's token file, secret header and environment values,
the fleet token), and log tails also `product.scrub`. The document stays under
`FEEDBACK_MAX_BYTES`: log tails, then the history, then the checks' evidence are cut first.
"""

import contextlib
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from greenlight.channels import (
    FEEDBACK_MAX_BYTES,
    FEEDBACK_TEXT_MAX,
    KEY_HEADER,
    LOG_TAIL_MAX,
    SIGNATURE_HEADER,
    VERSION,
    FeedbackCheck,
    FeedbackEvent,
    FeedbackIncident,
    FeedbackLog,
    FeedbackReport,
    FeedbackSource,
    atomic_write,
    lines_printable,
    sign_body,
    version_of,
)
from greenlight.updater._errors import GreenlightError, StoreError, UsageError
from greenlight.updater.product import (
    Config,
    ServiceControl,
    config_of,
    machine_cohort,
    redact,
    scrub,
    secrets_of,
    values_for,
)
from greenlight.updater.store import (
    HistoryEntry,
    InstallRoot,
    RecordedCheck,
    active_channel,
    feedback_as_sent,
    feedback_lock,
    greenlight_kind,
    history,
    last_health,
    queue_feedback,
    queued_feedback,
)

__all__ = ["EXPORT_SCHEMA", "compose_feedback", "dry_run_body", "export_feedback",
           "submit_feedback"]

EXPORT_SCHEMA = "greenlight.feedback-export/1"
HISTORY_KEPT = 10
LOGS_KEPT = 8
LOG_BYTES = 8192
INCIDENTS = ("rolled-back", "rollback-failed", "crash-loop", "precheck-blocked")
_M = TypeVar("_M", bound=BaseModel)
_ROOM = 256  # bytes kept free under FEEDBACK_MAX_BYTES for `sent`, set when it goes out


def _layer(root: InstallRoot) -> tuple[Config | None, dict[str, str]]:
    """The installed release's configuration (greenlight.toml under its manifest) and its
    placeholder values; None when greenlight.toml does not load (the feedback is still
    taken: a person writes in when things are broken)."""
    try:
        config = config_of(root)
    except GreenlightError:
        return None, values_for(root, None)
    try:
        control = ServiceControl.of(root, config)
        return control.config_for(None), control.values(None)
    except (GreenlightError, OSError):
        return config, values_for(root, None)


def _model(kind: type[_M], **fields: Any) -> _M | None:
    """One piece of evidence, or None when it does not fit the wire format (a piece that
    does not is left out: it never costs the person their feedback)."""
    try:
        return kind(**fields)
    except ValidationError:
        return None


def _check(c: RecordedCheck, at: datetime, secrets: list[str]) -> FeedbackCheck | None:
    evidence = json.dumps(redact(c.evidence, secrets), sort_keys=True, ensure_ascii=False,
                          default=str)
    return _model(FeedbackCheck, name=c.name, ok=c.ok,
                  summary=redact(c.summary, secrets)[:4096], evidence=evidence[:16384],
                  at=c.at or at)


def _checks(root: InstallRoot, entries: list[HistoryEntry],
            secrets: list[str]) -> list[FeedbackCheck]:
    """The last health run's results and the last failed checks of the history, the more
    recent first (the first failing one is what the feedback is filed under)."""
    ran = [c for c in (_check(r, r.at or datetime.now(UTC), secrets) for r in last_health(root))
           if c is not None]
    failed = next((e for e in reversed(entries) if e.failed_checks), None)
    recorded = [] if failed is None else [
        c for c in (_check(r, failed.at, secrets) for r in failed.failed_checks)
        if c is not None]
    ran_at = max((c.at for c in ran if c.at), default=None)
    newest_first = [*ran, *recorded] if failed is None or (
        ran_at is not None and ran_at > failed.at) else [*recorded, *ran]
    return newest_first[:50]


def _incident(entries: list[HistoryEntry], secrets: list[str]) -> FeedbackIncident | None:
    entry = next((e for e in reversed(entries) if e.event in INCIDENTS), None)
    if entry is None:
        return None
    tried = entry.from_release if entry.event != "precheck-blocked" else entry.to_release
    back = entry.to_release if entry.event in ("rolled-back", "rollback-failed") else None
    fields = {"at": entry.at, "event": entry.event, "channel": entry.channel,
              "check": entry.failed_checks[0].name if entry.failed_checks else None,
              "summary": redact(entry.summary, secrets)[:4096]}
    return (_model(FeedbackIncident, **fields, release=tried, back_to=back)
            or _model(FeedbackIncident, **fields))


def _events(entries: list[HistoryEntry], secrets: list[str]) -> list[FeedbackEvent]:
    said = []
    for e in entries[-HISTORY_KEPT:]:
        fields = {"at": e.at, "event": e.event, "summary": redact(e.summary, secrets)[:4096]}
        event = (_model(FeedbackEvent, **fields, from_release=e.from_release,
                        to_release=e.to_release) or _model(FeedbackEvent, **fields))
        if event is not None:
            said.append(event)
    return said


def _fit_tail(text: str, limit: int = LOG_TAIL_MAX - 1) -> str:
    """The end of `text` whose escaped form (as `FeedbackLog` escapes it) holds within
    `limit` characters: the newest lines kept whole, the oldest left out."""
    kept: list[str] = []
    size = 0
    for line in reversed(text.split("\n")):
        grown = len(lines_printable(line, 10 * LOG_TAIL_MAX)) + 1
        if size + grown > limit:
            break
        kept.append(line)
        size += grown
    return "\n".join(reversed(kept))


def _tail(path: Path, secrets: list[str]) -> str | None:
    """The redacted end of the log `path`: a regular file only, opened without following a
    link (a log planted as a link to a file elsewhere is never read) and without blocking (a
    FIFO planted there is refused, never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, max(0, size - LOG_BYTES), os.SEEK_SET)
        raw = b""
        while len(raw) < LOG_BYTES and (chunk := os.read(fd, LOG_BYTES - len(raw))):
            raw += chunk
    except OSError:
        return None
    finally:
        os.close(fd)
    text = raw.decode("utf-8", errors="replace")
    if size > LOG_BYTES and "\n" in text:
        text = text.split("\n", 1)[1]  # a line cut in its middle says nothing
    return _fit_tail(scrub(text, secrets))


def _logs(root: InstallRoot, config: Config | None, secrets: list[str]) -> list[tuple[str, str]]:
    names = [s.name for s in config.service] if config is not None else []
    found = []
    for name in [*names, "agent"][:LOGS_KEPT]:
        tail = _tail(root.logs / f"{name}.log", secrets)
        if tail:
            found.append((f"{name}.log", tail))
    return found


def compose_feedback(root: InstallRoot, text: str, source: FeedbackSource, logs: bool,
                     at: datetime | None = None, ident: str | None = None) -> FeedbackReport:
    """The person's `text` with this machine's evidence (log tails only with `logs`, their
    consent), under `FEEDBACK_MAX_BYTES`; its id `ident` (32 hex digits), else a random one.

    Raises:
        UsageError: the text is empty or only whitespace.
        ConfigError: not an installation root.
        StoreError: `current` is not a release link, or the machine's key does not load.
    """
    # Text that is not Unicode (a lone surrogate: bytes that were not UTF-8 on the command
    # line, or "\ud800" in an inbox file's JSON) is kept, escaped, never refused.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if not text.strip():
        raise UsageError('the feedback is empty: say what is wrong, e.g. updater feedback '
                         '"the panel says: denying api access"')
    root.require()
    try:
        machine = root.machine_id
    except ValueError as e:  # MachineKeyError: the key file does not load
        raise StoreError(f"state/machine-key.pem: {e}") from None
    config, values = _layer(root)
    secrets = secrets_of(root.path, config, values) if config is not None else []
    installed = root.installed_release()
    entries = history(root)
    try:
        kind = greenlight_kind(root)
    except (GreenlightError, OSError):
        kind = None
    base: dict[str, Any] = {
        "id": ident or os.urandom(16).hex(), "installation": machine,
        "at": at or datetime.now(UTC), "source": source,
        "text": redact(text.strip(), secrets)[:4 * FEEDBACK_TEXT_MAX],
        "channel": active_channel(root).channel,
        "release": version_of(installed) if installed else None, "release_key": installed,
        "cohort": machine_cohort(root), "greenlight": VERSION, "greenlight_kind": kind,
        "incident": _incident(entries, secrets), "logs_consent": logs}
    if _model(FeedbackReport, **base) is None:  # a field outside the wire format's patterns
        base.update(channel=None, release=None, release_key=None, cohort=None)
    checks = _checks(root, entries, secrets)
    events = _events(entries, secrets)
    tails = _logs(root, config, secrets) if logs and config is not None else []
    while True:
        report = FeedbackReport(**base, checks=checks, history=events,
                                logs=[FeedbackLog(name=n, tail=t) for n, t in tails])
        if len(report.model_dump_json(by_alias=True).encode()) <= FEEDBACK_MAX_BYTES - _ROOM:
            return report
        if tails:  # the longest tail halved (its newest half kept), a short one left out
            i = max(range(len(tails)), key=lambda k: len(tails[k][1]))
            name, tail = tails[i]
            tails[i:i + 1] = [(name, _fit_tail(tail, len(tail) // 2))] if len(tail) > 512 else []
        elif len(events) > 1:
            events = events[1:]
        elif any(c.evidence for c in checks):
            i = max(range(len(checks)), key=lambda k: len(checks[k].evidence))
            checks[i] = checks[i].model_copy(update={"evidence": ""})
        elif checks:
            checks = checks[:-1]
        else:
            return report


def submit_feedback(root: InstallRoot, text: str, logs: bool, source: FeedbackSource = "cli",
                    at: datetime | None = None, ident: str | None = None
                    ) -> tuple[FeedbackReport, int]:
    """Compose and queue a feedback (under `ident` when given: 32 hex digits); it and the
    number of the oldest queued feedback dropped to make room (the queue's bound).

    Raises:
        UsageError: the text is empty.
        ConfigError: not an installation root.
        StoreError: the outbox could not be written, or `current` is not a release link.
    """
    report = compose_feedback(root, text, source, logs, at, ident)
    try:
        dropped = queue_feedback(root, report.id, source,
                                 report.model_dump_json(by_alias=True).encode())
    except OSError as e:
        raise StoreError(f"{e.filename or 'state/feedback'}: {e.strerror or e}; the feedback "
                         "was not queued") from None
    return report, dropped


def dry_run_body(report: FeedbackReport) -> bytes:
    """Exactly what would be sent for `report`, were it sent now.

    Raises:
        ValueError: never for a composed report (the document is a JSON object).
    """
    return feedback_as_sent(report.model_dump_json(by_alias=True).encode(), datetime.now(UTC))


def export_feedback(root: InstallRoot, file: Path) -> int:
    """Write every queued feedback to `file` (0600, atomically) as JSON lines of
    `greenlight.feedback-export/1`: each the document exactly as it would be POSTed, `sent`
    set, with its `Greenlight-Key` and `Greenlight-Signature`; then, the file durably
    written, take them off the queue. The number exported (0: nothing queued, no file).

    Raises:
        UsageError: `file` exists already (it may hold feedback not yet imported), or its
            folder does not.
        BusyError: another updater is collecting or exporting feedback.
        StoreError: the file could not be written, or the machine's key does not load;
            nothing left the queue.
    """
    root.require()
    if file.exists() or file.is_symlink():
        raise UsageError(f"--export {file}: exists already (it may hold feedback not yet "
                         "imported); choose another file")
    if not file.parent.is_dir():
        raise UsageError(f"--export {file}: no folder {file.parent}")
    with feedback_lock(root, wait=10.0):
        lines, done = [], []
        key = root.machine_key
        for path in queued_feedback(root):
            try:
                body = feedback_as_sent(path.read_bytes(), datetime.now(UTC))
            except (OSError, ValueError):
                continue  # unreadable: the sender drops it; an export never stops on it
            try:
                signed = sign_body(key, body)
            except ValueError as e:  # MachineKeyError: the key file does not load
                raise StoreError(f"state/machine-key.pem: {e}; nothing was exported") from None
            lines.append(json.dumps({"schema": EXPORT_SCHEMA, "body": body.decode(),
                                     "key": signed[KEY_HEADER],
                                     "signature": signed[SIGNATURE_HEADER]}))
            done.append(path)
        if not lines:
            return 0
        try:
            atomic_write(file, ("\n".join(lines) + "\n").encode(), mode=0o600)
        except OSError as e:
            raise StoreError(f"--export {file}: {e.strerror or e}; nothing left the queue"
                             ) from None
        for path in done:
            with contextlib.suppress(OSError):
                path.unlink()
        return len(done)
