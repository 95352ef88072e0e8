"""`updater agent`: the upgrade cycle without a person.

Every `[agent] interval` (plus up to `jitter` random seconds, so a fleet does not arrive at
once) it recovers an interrupted transaction, refreshes the channel, and acts on the policy:

- `apply = "auto"` installs inside the `window`s, unless a hold is in force; outside them (or
  under a hold) it downloads and verifies, so the install later is quick;
- `apply = "download"` downloads and verifies, then waits for `updater upgrade`;
- `apply = "notify"` only reports.

Leaving a revoked (yanked) installed release does not wait for a window or a hold
(`leave_revoked_at_once`, on by default). Repository errors back off from `retry` seconds,
doubling up to the interval; the agent outlives outages and bugs alike (a cycle that fails is
logged and retried), and takes the root's lock like every command, so it never runs a second
transaction. Every wait is bounded: checks, stops and hooks have their own timeouts.

Before each check it says what the services' supervisors did since the last cycle: a
restart is a `service-restarted` event; a crash loop (the supervisor gave up) is a
`crash-loop` event and an incident, in the history and reported to the fleet. Within the
release's probation (`[health] probation` after its commit) a crash loop is as bad as a
failed post-check: the release is rolled back to the previous one and quarantined. Later (or
with no previous release) it stays down, its held sockets closed so that clients are refused
at once, until the next release repairs it (`decide` lets a repair through).

Each event (check-found, downloaded, upgraded, rolled-back, dead-end, held, left-revoked,
service-restarted, crash-loop) is logged to `logs/agent.log`, written to `state/status.json`,
and given as one JSON object on stdin to the `on_event` command, which runs bounded by
`hook_timeout`; a failing hook is logged and changes nothing. Each cycle also takes the
product's feedback inbox first and sends the queued feedback last, even after a failure.

Time comes in through `clock` (wall time, for windows and holds) and `sleep`, so the tests
drive cycles without waiting for them.
"""

import contextlib
import errno
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from greenlight.channels import atomic_write, now, terminal_lines
from greenlight.updater._errors import (
    BusyError,
    GreenlightError,
    NeedsNewer,
    NetworkError,
    raise_if_signalled,
)
from greenlight.updater.agent._greenlight import take_greenlight
from greenlight.updater.policy import CYCLE_LIMIT, STOP_LIMIT, AgentInput, agent_step
from greenlight.updater.product import AgentConfig, config_of
from greenlight.updater.store import (
    InstallRoot,
    active_channel,
    hold_of,
    locked,
    queue_held,
    queued,
    read_status,
    refresh_status,
    refusal,
)

__all__ = ["Agent", "Event", "EventKind", "loop_argv", "run_once"]

EventKind = Literal["check-found", "downloaded", "upgraded", "downgraded", "rolled-back",
                    "dead-end", "held", "left-revoked", "service-restarted", "crash-loop",
                    "damaged", "repaired"]


@dataclass
class Event:
    kind: EventKind
    summary: str
    installed: str | None
    available: str | None
    channel: str
    at: datetime = field(default_factory=now)

    def to_json(self, root: InstallRoot) -> str:
        return json.dumps({"schema": "greenlight.event/1", "event": self.kind,
                           "at": self.at.isoformat(), "root": str(root.path),
                           "channel": self.channel, "installed": self.installed,
                           "available": self.available, "summary": self.summary})


def _local(utc: datetime) -> datetime:
    return utc.astimezone()  # the machine's local time zone


class Agent:
    def __init__(self, root: InstallRoot, clock: Callable[[], datetime] = now,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random,
                 local: Callable[[datetime], datetime] = _local) -> None:
        self.root, self.clock, self.sleep, self.rng, self.local = root, clock, sleep, rng, local
        self.failures = 0
        self.internal = self.failed = self.busy = False
        self.events: list[Event] = []
        self.refused: str | None = None

    def _said_path(self) -> Path:
        """What the last cycle logged of what it found: each cycle of the long-running agent
        is a process of its own, so what was said lives in the root's state."""
        return self.root.state / "run" / "agent-said.json"

    def _said(self) -> list[str]:
        try:
            said = json.loads(self._said_path().read_text())
        except (OSError, ValueError):
            return []
        return [str(x) for x in said] if isinstance(said, list) else []

    def _said_once(self, line: str, key: str = "greenlight") -> bool:
        """Whether `line` (about Greenlight itself, one line per `key`) was said already;
        remembered if not."""
        path = self.root.state / "run" / "greenlight-said.json"
        try:
            said = json.loads(path.read_text())
            said = said if isinstance(said, dict) else {}
        except (OSError, ValueError):
            said = {}
        if said.get(key) == line:
            return True
        with contextlib.suppress(OSError):
            atomic_write(path, json.dumps({**said, key: line}).encode())
        return False

    def _remember(self, said: list[str]) -> None:
        try:
            self._said_path().parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self._said_path(), json.dumps(said).encode())
        except OSError as e:
            self.log(f"{self._said_path()} not written: {e.strerror or e}")

    # --- reporting -----------------------------------------------------------------------
    def log(self, line: str) -> None:
        stamp = self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"{stamp} {terminal_lines(line, one_line=True)}"  # one line, whatever it says
        print(text, flush=True)
        try:
            self.root.logs.mkdir(parents=True, exist_ok=True)
            with (self.root.logs / "agent.log").open("a") as f:
                f.write(text + "\n")
        except OSError:
            pass

    def emit(self, event: Event, config: AgentConfig) -> None:
        self.events.append(event)
        self.log(f"{event.kind}: {event.summary}")
        if not config.on_event:
            return
        try:
            done = subprocess.run(config.on_event, input=event.to_json(self.root), text=True,
                                  capture_output=True, timeout=config.hook_timeout)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                self.log(f"on_event exited {done.returncode} for {event.kind}: {tail}")
        except subprocess.TimeoutExpired:
            self.log(f"on_event did not finish within {config.hook_timeout}s for {event.kind}; "
                     "it was killed")
        except OSError as e:
            self.log(f"on_event could not run: {e.strerror or e}")

    # --- one cycle -----------------------------------------------------------------------
    def cycle(self) -> float:
        """One check and what the policy says to do; returns the seconds to wait."""
        try:
            config = config_of(self.root).agent
        except GreenlightError as e:
            raise_if_signalled()
            self.log(f"configuration: {e}")
            return 300.0
        self._collect_feedback()
        try:
            self._cycle(config)
        except Exception as e:
            raise_if_signalled()  # a stop, whatever error a library made of it
            wait = self._failed(e, config)
            self._send_feedback()  # a person who writes in when the repository is down, too
            return wait
        self.failures = 0
        self._report()
        self._send_feedback()
        return config.interval + self.rng() * config.jitter

    def _collect_feedback(self) -> None:
        from greenlight.updater.agent._feedback import collect_feedback

        collect_feedback(self.root, self.log, self._said_once)

    def _send_feedback(self) -> None:
        from greenlight.updater.agent._feedback import send_queued_feedback

        send_queued_feedback(self.root, self.log, self._said_once)

    def _failed(self, e: Exception, config: AgentConfig) -> float:
        """Log a cycle's error; the back-off before the next."""
        self.busy, self.failed = isinstance(e, BusyError), not isinstance(e, BusyError)
        if isinstance(e, BusyError):
            self.log(f"skipped: {e}")
        elif isinstance(e, NetworkError):
            self.log(f"repository: {e}")
            self._status(error=str(e))
        elif isinstance(e, GreenlightError):
            self.log(f"error ({e.kind}): {e}")
            self._status(error=str(e))
        elif isinstance(e, OSError):  # local state (a full disk, say): said as the CLI says it
            full = " (disk full)" if e.errno == errno.ENOSPC else ""
            said = f"{e.filename or 'local state'}: {e.strerror or e}{full}"
            self.log(f"error (store): {said}")
            self._status(error=said)
        else:  # the agent outlives its own bugs: report and go on
            self.internal = True  # a new Greenlight's probation counts it (loop.py)
            self.log(f"internal error: {type(e).__name__}: {e} (please report it)")
        return self._backoff(config)

    def _report(self) -> None:
        from greenlight.updater.agent._sender import send_reports

        if queued(self.root):
            send_reports(self.root)
        why = refusal(self.root)
        if why != self.refused:
            self.refused = why
            self.log(f"fleet reports: {why}" if why else "fleet reports: accepted again")
            self._status()

    def _backoff(self, config: AgentConfig) -> float:
        self.failures += 1
        return min(config.interval, config.retry * 2.0 ** (self.failures - 1))

    def _status(self, **learned: object) -> None:
        try:
            refresh_status(self.root, at=self.clock(), **learned)  # type: ignore[arg-type]
        except (GreenlightError, OSError) as e:
            self.log(f"status.json not written: {e}")

    def _cycle(self, config: AgentConfig) -> None:
        from greenlight.updater.operations import (
            checked,
            crashed_services,
            download,
            open_repository,
            recover_if_interrupted,
            upgrade,
        )

        root = self.root
        recover_if_interrupted(root)
        self._supervise(config)
        repo = open_repository(root)
        self._verify(config)
        try:
            # decided once, with one look at the clock: the upgrade below acts on it
            report, decided = checked(root, repo, bool(crashed_services(root)))
        except NeedsNewer as need:  # Greenlight first, then (re-executed) the product
            if not self._said_once(need.what, "need"):
                self.log(f"{need.what}: updating Greenlight first")
            why = take_greenlight(root, repo, config, self.log, self._said_once)
            raise NeedsNewer(f"{need.what}: {why or 'no newer Greenlight is available here'}"
                             ) from None
        take_greenlight(root, repo, config, self.log, self._said_once)  # re-executes if moved
        channel, installed, available = report.channel, report.installed, report.available
        hold = hold_of(root, self.clock())
        step = agent_step(AgentInput(
            revoked=bool(report.yanked) and not report.held, held=report.held,
            update_available=report.update_available, apply=config.apply,
            windows=tuple(config.window), local=self.local(self.clock()),
            hold=None if hold is None else hold.reason,
            leave_revoked_at_once=config.leave_revoked_at_once))

        def event(kind: EventKind, summary: str) -> Event:
            return Event(kind, summary, root.installed_version(), available, channel,
                         self.clock())

        previous = read_status(root)
        said = [str(x) for x in (report.channel_note, step.action, step.why,
                                 report.available_release)]
        if said != self._said():  # what a cycle found is logged when it changes, not every time
            self._remember(said)
            if report.channel_note:
                self.log(f"{channel}: {report.channel_note}")
            if step.action == "up-to-date":
                self.log(f"{channel}: up to date at {installed}")
            elif step.why:
                self.log(f"{channel}: {step.action} {available}: {step.why}")
        if step.action == "wait-revoked":
            self._status(available=available, update="revoked", checked=True)
        elif step.action == "leave-revoked":
            done = upgrade(root, repo, decided=decided)
            self.emit(event("left-revoked", f"{installed} was revoked ({report.yanked}): "
                                            f"now on {done.installed}"), config)
            self._status(available=done.to_version, checked=True,
                         update="none" if done.installed == done.to_version else "held",
                         held_because=None if done.installed == done.to_version else (
                             done.incident.summary if done.incident else done.note))
        elif step.action == "held":
            if previous is None or previous.held_because != step.why:
                self.emit(event("held", step.why or "held"), config)
            if report.held and report.available_release:  # the fleet's count of held machines
                lost = queue_held(root, channel, report.available_release,
                                  root.installed_release(), report.held,
                                  config_of(root).outbox_size)
                if lost and not self._said_once(lost, "report-queue"):
                    self.log(lost)
            self._status(available=available, update="held", held_because=step.why,
                         checked=True)
        elif step.action == "up-to-date":
            self._status(available=available, update="none", checked=True)
        else:
            if previous is None or previous.available != available or previous.update not in (
                    "available", "downloaded"):
                self.emit(event("check-found", f"{available} available (installed: "
                                               f"{installed or 'nothing'})"), config)
            if step.action == "notify":
                self._status(available=available, update="available", checked=True)
            elif step.action == "download":
                fetched = download(root, repo, decided=decided)
                if previous is None or previous.update != "downloaded" or (
                        previous.available != available):
                    self.emit(event("downloaded", f"{available} downloaded and verified "
                                                  f"({fetched.bytes_fetched} bytes)"), config)
                self._status(available=available, update="downloaded", held_because=step.why,
                             checked=True)
            else:
                self._after(upgrade(root, repo, decided=decided), config, event)

    def _supervise(self, config: AgentConfig) -> None:
        """Say what the services' supervisors did since the last cycle: each restart is an
        event, a crash loop an incident (recorded and reported by `supervise`). Never masked,
        never repeated: each is said once."""
        from greenlight.updater.operations import supervise

        try:
            news = supervise(self.root)
        except BusyError:
            return
        installed = self.root.installed_version()
        channel = active_channel(self.root).channel
        for item in news:
            kind: EventKind = "crash-loop" if item.crash_loop else "service-restarted"
            self.emit(Event(kind, item.summary, installed, None, channel, self.clock()),
                      config)
        why = next((item.roll_back for item in news if item.roll_back), None)
        if why is not None:  # the reaction to a crash loop within the release's probation
            from greenlight.updater.operations import rollback

            done = rollback(self.root, reason=why)
            summary = (f"{installed} rolled back to {done.installed}: {why}"
                       if done.outcome == "rolled-back" else
                       done.incident.summary if done.incident else done.outcome)
            self.emit(Event("rolled-back", summary, done.installed, None, done.channel_now,
                            self.clock()), config)

    def _verify(self, config: AgentConfig) -> None:
        """When `verify_every` has passed since the last verification: the installed tree
        against its signed file lists; a difference is an event (recorded and reported),
        and with `repair`, the release is re-staged."""
        from greenlight.updater.operations import open_repository, repair, verify_and_record

        stamp = self.root.state / "verified-at"
        now_ = self.clock()
        try:
            last = datetime.fromisoformat(stamp.read_text().strip())
        except (OSError, ValueError):
            last = None
        if (config.verify_every == 0 or self.root.installed_release() is None
                or last is not None and (now_ - last).total_seconds() < config.verify_every):
            return
        installed, channel = self.root.installed_version(), active_channel(self.root).channel
        try:  # a verification that cannot run never keeps the check from running
            with locked(self.root):  # never while another updater changes the tree
                found = verify_and_record(self.root)
            atomic_write(stamp, now_.isoformat().encode())
            if not found.differences:
                return
            self.emit(Event("damaged", found.summary, installed, None, channel, now_), config)
            if config.repair:
                done = repair(self.root, open_repository(self.root))
                self.emit(Event("repaired", done.summary, installed, None, channel,
                                self.clock()), config)
        except BusyError:
            return  # the next cycle verifies
        except GreenlightError as e:
            self.log(f"verify: {e}")

    def _after(self, done: object, config: AgentConfig,
               event: Callable[[EventKind, str], Event]) -> None:
        from greenlight.updater.output import UpgradeReport

        assert isinstance(done, UpgradeReport)
        if done.outcome in ("upgraded", "downgraded"):
            repair = f" (the repair of {done.repair})" if done.repair else ""
            self.emit(event(done.outcome, f"{done.from_version or 'nothing'} -> "
                                          f"{done.to_version}{repair}"), config)
            self._status(available=done.to_version, update="none", checked=True)
        elif done.outcome in ("rolled-back", "rollback-failed"):
            summary = done.incident.summary if done.incident else done.outcome
            kind: EventKind = "rolled-back" if done.outcome == "rolled-back" else "dead-end"
            self.emit(event(kind, f"{done.to_version}: {summary}; now on {done.installed}"),
                      config)
            self._status(available=done.to_version, update="held", held_because=summary,
                         checked=True)
        elif done.outcome == "held":
            self.emit(event("held", done.note or "held"), config)
            self._status(available=done.to_version, update="held", held_because=done.note,
                         checked=True)
        else:
            self._status(available=done.to_version, update="none", checked=True)

    # --- the loop ------------------------------------------------------------------------
    def run(self, once: bool = False) -> float:
        """Cycles until stopped (or one, with `once`); returns the last wait."""
        while True:
            wait = self.cycle()
            self._status(next_check=self.clock() + timedelta(seconds=wait))
            if once:
                return wait
            self.sleep(wait)


LOOP = Path(__file__).with_name("loop.py")


def loop_argv(root: InstallRoot) -> list[str]:
    """The long-running agent: a bare interpreter running agent_loop.py (or the frozen
    executable's `--greenlight-agent-loop`), which runs `updater agent --once` per cycle."""
    from greenlight.updater.product import frozen
    from greenlight.updater.store import entry_point, managed_version

    limits = ["--cycle-limit", str(CYCLE_LIMIT), "--stop-limit", str(STOP_LIMIT)]
    if managed_version(root) is not None:  # each cycle enters the active version
        loop = [sys.executable, "--greenlight-agent-loop"] if frozen() else [
            sys.executable, "-I", "-S", str(LOOP)]
        return [*loop, "--root", str(root.path), *limits, "--", str(entry_point(root))]
    if frozen():
        return [sys.executable, "--greenlight-agent-loop", "--root", str(root.path), *limits,
                "--", sys.executable]
    return [sys.executable, "-I", "-S", str(LOOP), "--root", str(root.path), *limits, "--",
            sys.executable, "-m", "greenlight.updater.cli"]


def run_once(root: InstallRoot, failures: int = 0, report: Path | None = None) -> int:
    """One cycle, as `updater agent --once` (and as each cycle of the long-running agent,
    which passes the failures in a row so far and where to report the next wait)."""
    agent = Agent(root)
    agent.failures = failures
    if report is None:  # a person's (or a timer's) one cycle; the loop's are not announced
        agent.log(f"agent cycle for {root.path}")
    try:
        wait = agent.run(once=True)
    except KeyboardInterrupt:
        return 130
    from greenlight.channels import VERSION
    from greenlight.updater.selfupdate import cycle_ended

    strike = None if agent.busy else cycle_ended(root, not (agent.internal or agent.failed))
    if report is not None:  # for the loop, which watches a new Greenlight's first cycles
        atomic_write(report, json.dumps({
            "wait": wait, "failures": agent.failures, "internal": agent.internal,
            "greenlight": VERSION, "put_aside": strike}).encode())
    return 0
