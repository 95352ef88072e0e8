"""The upgrade as a transaction: steps with do and undo, journaled before and after each.

    fetch -> stage -> stop -> switch -> start -> post-check -> commit

Each step is a `Step(name, do, undo)`; `STEPS` is the one list that the runner, `recover` and
the crash tests all read. Before a step runs it is marked `doing` in `state/journal.json`,
after it `done` (atomic writes, fsync'd). When a step fails, or the updater is killed, the
steps that are `doing` or `done` are undone in reverse order, so undo handlers are idempotent:
stopping what is stopped or switching to where `current` already points changes nothing.
Only `commit` rolls forward: once the new release passed its post-check, a crash during
commit finishes the commit.

A failed post-check (or a service that dies, or does not come up) rolls back by itself: the
previous release back in place and started, the active channel switched to the channel's
fallback, the failed release quarantined, the checks run again, and an incident with each
failed check's evidence appended to the history. If the previous release then fails too, the
transaction stops in a reported dead end; it never loops.
"""

import hashlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from channels import ChannelFile, ComponentArtifact
from updater._config import CheckConfig, Config, ProcessCheck
from updater._delta import DeltaError, apply_delta
from updater._downloads import Downloads, Progress
from updater._errors import GreenlightError, TrustError
from updater._fs import atomic_write
from updater._health import CheckResult, HealthChecker, failed_required
from updater._journal import (
    HistoryEntry,
    Journal,
    QuarantineEntry,
    add_to_quarantine,
    record,
)
from updater._reports import DeltaUse
from updater._root import InstallRoot, now
from updater._services import ServiceBackend, StopOutcome, backend_for, drain
from updater._stage import stage_release
from updater._trust import TrustedRepository


class HealthFailure(Exception):
    """A step found the product unhealthy: checks failed, a service died or crashed on stop."""

    def __init__(self, summary: str, results: list[CheckResult] | None = None,
                 stops: list[StopOutcome] | None = None, new_release_at_fault: bool = True):
        super().__init__(summary)
        self.summary = summary
        self.results = results or []
        self.stops = stops or []
        self.new_release_at_fault = new_release_at_fault
        self.at = time.monotonic()


def values_for(root: InstallRoot, version: str | None) -> dict[str, str]:
    release_dir = root.release_dir(version) if version else root.current
    return {"root": str(root.path), "release_dir": str(release_dir), "version": version or "",
            "python": sys.executable}


def all_checks(config: Config) -> list[CheckConfig]:
    """The configured checks, plus 'service X is running' for every service."""
    implicit: list[CheckConfig] = [
        ProcessCheck(name=f"{s.name}-running", type="process", service=s.name)
        for s in config.service
        if not any(isinstance(c, ProcessCheck) and c.service == s.name for c in config.check)
    ]
    return [*implicit, *config.check]


@dataclass
class Transaction:
    root: InstallRoot
    config: Config
    services: ServiceBackend
    journal: Journal
    repo: TrustedRepository | None = None
    channel_file: ChannelFile | None = None
    progress: Progress | None = None
    bytes_fetched: int = 0
    pruned: list[str] = field(default_factory=list)
    start_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    deltas: list[DeltaUse] = field(default_factory=list)

    @property
    def new(self) -> str:
        return self.journal.to_version

    @property
    def old(self) -> str | None:
        return self.journal.from_version

    def checker(self, version: str | None) -> HealthChecker:
        return HealthChecker(self.root.path, self.services, values_for(self.root, version))


def outside_transaction(root: InstallRoot, config: Config) -> Transaction:
    """A Transaction with no steps: for health checks and service control by hand."""
    journal = Journal(kind="upgrade", channel="", from_version=root.installed_version(),
                      to_version="", started_at=now(), steps=[])
    return Transaction(root, config, backend_for(root, config), journal)


# --- services, shared by steps and undo handlers ------------------------------------------
def stop_all(txn: Transaction, version: str | None) -> list[StopOutcome]:
    """Stop every service. Draining: UI before core, each drained, bounded, then killed.
    Without draining: every service signalled at once (how the panel restart crashed)."""
    config, values = txn.config, values_for(txn.root, version)
    ordered = list(reversed(config.service))
    if not config.stop.drain:
        for s in ordered:
            txn.services.stop(s, config.stop.timeout, wait=False)
        return [txn.services.wait_stopped(s, config.stop.timeout) for s in ordered]
    outcomes = []
    for s in ordered:
        if txn.services.is_running(s.name):
            drain(s, values, config.stop.timeout)
        outcomes.append(txn.services.stop(s, config.stop.timeout))
    return outcomes


def start_all(txn: Transaction, version: str | None) -> None:
    """Start services in order, each ready (its `ready` check passing) before the next."""
    if version is None:
        return
    checker = txn.checker(version)
    checks = {c.name: c for c in txn.config.check}
    started = time.monotonic()
    for s in txn.config.service:
        txn.services.start(s, values_for(txn.root, version))
        deadline = time.monotonic() + s.start_timeout
        while True:
            if not txn.services.is_running(s.name):
                tail = _log_tail(txn.root, s.name)
                raise HealthFailure(
                    f"service {s.name} of {version} exited during start-up"
                    + (f": {tail[-1]}" if tail else ""),
                    [_synthetic(f"{s.name}-start", "exited during start-up",
                                {"last_exit": txn.services.last_exit(s.name), "log": tail})])
            if s.ready is None:
                break
            result = checker.run(checks[s.ready], retries=0)
            if result.ok:
                break
            if time.monotonic() > deadline:
                raise HealthFailure(f"service {s.name} of {version} not ready in "
                                    f"{s.start_timeout}s: {result.summary}", [result])
            time.sleep(0.05)
    txn.start_seconds += time.monotonic() - started


def _log_tail(root: InstallRoot, name: str, lines: int = 5) -> list[str]:
    try:
        return (root.path / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _synthetic(name: str, summary: str, evidence: dict[str, object]) -> CheckResult:
    return CheckResult(name=name, type="service", required=True, ok=False, summary=summary,
                       attempts=1, latency_ms=0.0, evidence=evidence, at=now())


def run_post_check(txn: Transaction, version: str, grace: float, soak: float) -> list[CheckResult]:
    """Checks must pass within `grace` (start-up), then keep passing for `soak`."""
    checker, checks = txn.checker(version), all_checks(txn.config)
    if not checks:
        return []
    interval = txn.config.health.interval
    deadline = time.monotonic() + grace
    while True:
        results = [checker.run(c, retries=0) for c in checks]
        failed = failed_required(results)
        if not failed:
            break
        if time.monotonic() >= deadline:
            raise HealthFailure(_describe(failed, version, "did not become healthy"), results)
        time.sleep(interval)
    soak_end = time.monotonic() + soak
    while time.monotonic() < soak_end:
        time.sleep(min(interval, max(0.0, soak_end - time.monotonic())))
        results = [checker.run(c, retries=0) for c in checks]
        failed = failed_required(results)
        if failed:
            raise HealthFailure(_describe(failed, version, "failed during the soak window"),
                                results)
    return results


def _describe(failed: list[CheckResult], version: str, how: str) -> str:
    first = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"{version} {how}: check {first.name}: {first.summary}{more}"


# --- the steps ----------------------------------------------------------------------------
DELTA_PAYS = 0.5  # take a delta only when it is clearly smaller than the full artifact


def _via_delta(txn: Transaction, name: str, artifact: ComponentArtifact,
               store: Downloads) -> DeltaUse:
    """Rebuild the artifact from a kept base and a verified delta; any failure says why and
    leaves the full download to the caller."""
    assert txn.repo is not None
    usable = [d for d in artifact.deltas
              if store.path(d.base_sha256).is_file() and d.length < DELTA_PAYS * artifact.length]
    if not usable:
        why = "no delta offered" if not artifact.deltas else "no base release kept in downloads/"
        return DeltaUse(component=name, used=False, reason=why)
    delta = min(usable, key=lambda d: d.length)
    use = DeltaUse(component=name, used=False, from_version=delta.from_version,
                   delta_bytes=delta.length, method=delta.method, reason="")
    try:
        info = txn.repo.target_info(delta.target)
        if info is None or info.hashes.get("sha256") != delta.sha256 or info.length != delta.length:
            raise TrustError(f"delta {delta.target}: not the signed target the channel file names")
        patch = txn.repo.download(info, store, txn.progress).read_bytes()
        txn.bytes_fetched += delta.length
        rebuilt = apply_delta(store.path(delta.base_sha256).read_bytes(), patch)
        if len(rebuilt) != artifact.length or hashlib.sha256(rebuilt).hexdigest() != artifact.sha256:
            raise DeltaError("the rebuilt artifact does not match the signed sha256 and length")
        atomic_write(store.path(artifact.sha256), rebuilt)
    except (DeltaError, GreenlightError, OSError) as e:
        return use.model_copy(update={"reason": f"{type(e).__name__}: {e}"})
    return use.model_copy(update={"used": True, "reason": "delta applied and verified"})


def do_fetch(txn: Transaction) -> None:
    assert txn.repo is not None and txn.channel_file is not None
    store = Downloads(txn.root.downloads)
    for name, artifact in sorted(txn.channel_file.components.items()):
        info = txn.repo.artifact_info(name, artifact)
        if store.find(artifact.sha256, artifact.length) is not None:
            continue
        use = _via_delta(txn, name, artifact, store)
        txn.deltas.append(use)
        if not use.used:
            txn.bytes_fetched += artifact.length
            txn.repo.download(info, store, txn.progress)


def do_stage(txn: Transaction) -> None:
    assert txn.channel_file is not None
    if txn.root.manifest(txn.new) is None:
        txn.journal.staged_new = True
        txn.journal.save(txn.root)
    store = Downloads(txn.root.downloads)
    archives = {name: store.path(a.sha256) for name, a in txn.channel_file.components.items()}
    stage_release(txn.root, txn.channel_file, archives)


def undo_stage(txn: Transaction) -> None:
    for staging in txn.root.releases.glob(f".staging-{txn.new}"):
        shutil.rmtree(staging, ignore_errors=True)
    if txn.journal.staged_new and txn.root.installed_version() != txn.new:
        shutil.rmtree(txn.root.release_dir(txn.new), ignore_errors=True)


def do_stop(txn: Transaction) -> None:
    outcomes = stop_all(txn, txn.old)
    crashed = [o for o in outcomes if o.crashed]
    if crashed:
        raise HealthFailure(
            f"service {crashed[0].service} of {txn.old} crashed when stopped "
            f"(exit status {crashed[0].returncode}): in-flight work was cut off",
            [_synthetic(f"{o.service}-stop", o.describe(), {"returncode": o.returncode})
             for o in crashed],
            outcomes, new_release_at_fault=False)


def undo_stop(txn: Transaction) -> None:
    start_all(txn, txn.root.installed_version())


def do_switch(txn: Transaction) -> None:
    txn.root.switch_current(txn.new)


def undo_switch(txn: Transaction) -> None:
    if txn.old is None:
        txn.root.current.unlink(missing_ok=True)
    elif txn.root.installed_version() != txn.old:
        txn.root.switch_current(txn.old)


def do_start(txn: Transaction) -> None:
    start_all(txn, txn.new)


def undo_start(txn: Transaction) -> None:
    stop_all(txn, txn.new)


def do_post_check(txn: Transaction) -> None:
    health = txn.config.health
    run_post_check(txn, txn.new, health.grace, health.soak)


def do_commit(txn: Transaction) -> None:
    txn.pruned = txn.root.prune(txn.config.keep_releases)


@dataclass(frozen=True)
class Step:
    name: str
    do: Callable[[Transaction], None]
    undo: Callable[[Transaction], None] | None = None


STEPS: list[Step] = [
    Step("fetch", do_fetch),
    Step("stage", do_stage, undo_stage),
    Step("stop", do_stop, undo_stop),
    Step("switch", do_switch, undo_switch),
    Step("start", do_start, undo_start),
    Step("post-check", do_post_check),
    Step("commit", do_commit),
]
_BY_NAME = {s.name: s for s in STEPS}


def _fault_injection(step: str, when: str) -> None:
    # Crash tests kill the updater at an exact point of the step list, for real (SIGKILL).
    if os.environ.get("GREENLIGHT_KILL_AT") == f"{step}:{when}":
        os.kill(os.getpid(), signal.SIGKILL)


ROLLBACK_STEPS = [s for s in STEPS if s.name not in ("fetch", "stage")]


def run_steps(txn: Transaction) -> None:
    """Run the journal's steps in order. A HealthFailure or error propagates after the journal
    says which steps were done; the caller decides between rollback and plain undo."""
    for step in [s for s in STEPS if any(r.name == s.name for r in txn.journal.steps)]:
        txn.journal.mark(txn.root, step.name, "doing")
        _fault_injection(step.name, "before")
        started = time.monotonic()
        step.do(txn)
        txn.timings[step.name] = round(time.monotonic() - started, 4)
        txn.journal.mark(txn.root, step.name, "done")
        _fault_injection(step.name, "after")


def undo_steps(txn: Transaction, reason: str) -> list[str]:
    """Undo, in reverse, every step that is doing or done; return the errors met."""
    txn.journal.undo_reason = reason
    txn.journal.save(txn.root)
    errors = []
    for step in reversed(STEPS):
        if txn.journal.state_of(step.name) not in ("doing", "done", "undoing"):
            continue
        txn.journal.mark(txn.root, step.name, "undoing")
        if step.undo is not None:
            try:
                step.undo(txn)
            except (HealthFailure, GreenlightError, OSError) as e:
                errors.append(f"undo {step.name}: {e}")
        txn.journal.mark(txn.root, step.name, "undone")
    return errors


@dataclass
class Rollback:
    ok: bool
    summary: str
    fallback_channel: str | None
    rollback_seconds: float


def roll_back(txn: Transaction, failure: HealthFailure) -> Rollback:
    """Put the previous release back, healthy, and say what happened."""
    assert txn.channel_file is not None
    txn.start_seconds = 0.0
    errors = undo_steps(txn, failure.summary)
    fallback = None
    if failure.new_release_at_fault:
        fallback = txn.channel_file.fallback
        if fallback is not None and fallback != txn.journal.channel:
            names = ", ".join(r.name for r in failed_required(failure.results)) or "start-up"
            txn.root.set_active_channel(
                fallback, f"automatic fallback: {txn.new} on {txn.journal.channel} failed {names}")
        else:
            fallback = None
        add_to_quarantine(txn.root, QuarantineEntry(
            version=txn.new, channel=txn.journal.channel, reason=failure.summary, at=now()))
    ok = not errors
    summary = failure.summary
    if txn.old is not None and ok:
        try:
            run_post_check(txn, txn.old, txn.config.health.grace, 0.0)
        except HealthFailure as second:
            ok = False
            errors.append(f"previous release {txn.old} is unhealthy too: {second.summary}")
    restored = time.monotonic()
    seconds = max(0.0, restored - failure.at - txn.start_seconds)
    if errors:
        summary = f"{failure.summary}; rollback failed: {'; '.join(errors)}"
    txn.journal.finish(txn.root)
    return Rollback(ok, summary, fallback, round(seconds, 4))


def recover(root: InstallRoot, config: Config) -> HistoryEntry | None:
    """Finish or undo a transaction an interrupted updater left behind (caller holds the lock)."""
    journal = Journal.load(root)
    if journal is None:
        return None
    txn = Transaction(root, config, backend_for(root, config), journal)
    if journal.state_of("post-check") == "done" and journal.state_of("commit") != "undone":
        do_commit(txn)
        journal.finish(root)
        entry = HistoryEntry(event="recovered", channel=journal.channel,
                             from_version=journal.from_version, to_version=journal.to_version,
                             summary=f"interrupted upgrade to {journal.to_version} committed")
    else:
        interrupted = next((s.name for s in journal.steps if s.state in ("doing", "undoing")),
                           "between steps")
        errors = undo_steps(txn, f"interrupted at {interrupted}")
        journal.finish(root)
        # Whatever was running when the updater died: the current release's services run.
        try:
            start_all(txn, root.installed_version())
        except HealthFailure as e:
            errors.append(str(e))
        entry = HistoryEntry(
            event="recovered", channel=journal.channel, from_version=journal.to_version,
            to_version=journal.from_version,
            summary=f"interrupted upgrade to {journal.to_version} (at {interrupted}) undone; "
                    f"back on {journal.from_version or 'nothing'}"
                    + (f"; problems: {'; '.join(errors)}" if errors else ""))
    record(root, entry)
    return entry
