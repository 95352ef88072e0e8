"""Operations on the machine around the transactions: health checks, starting and stopping
the services, which services died on their own, the systemd units, and lifting a quarantine
(with who did it)."""

import contextlib
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from greenlight.channels import atomic_write, version_of
from greenlight.updater._errors import ConfigError, NotFound, ServiceError
from greenlight.updater.operations._read import quarantine_info, quarantined
from greenlight.updater.output import HealthReport, QuarantineReport
from greenlight.updater.product import (
    HealthFailure,
    ServiceControl,
    config_of,
    failed_required,
)
from greenlight.updater.store import (
    HistoryEntry,
    InstallRoot,
    RecordedCheck,
    active_channel,
    lift_quarantine,
    locked,
    queue_event,
    record,
    save_health,
)

__all__ = ["Supervised", "acting_person", "crashed_services", "health", "lift",
           "start_services", "stop_services", "supervise", "write_systemd_units"]


def health(root: InstallRoot) -> HealthReport:
    """Every check, now, against the installed release.

    Raises:
        ConfigError: no configuration, or one that does not load.
    """
    control = ServiceControl.of(root, config_of(root))
    results = control.check_now(root.installed_release())
    with contextlib.suppress(OSError):  # kept for a user's feedback; never fails the run
        save_health(root, [r.recorded() for r in results])
    layer = control.layer(None)
    healthy = bool(results) and not failed_required(results)  # nothing checked is not healthy
    return HealthReport(root=str(root.path), installed=root.installed_version(), results=results,
                        checked=len(results), healthy=healthy, from_release=layer.from_release,
                        services={s.name: layer.sources.get(s.name, "machine")
                                  for s in layer.config.service},
                        disabled=layer.disabled, warnings=layer.warnings)


def start_services(root: InstallRoot) -> list[str]:
    """Start the installed release's services in order, each ready before the next, and each
    the process that answers its ready check (not a stray one on the same port).

    Raises:
        ServiceError: a service would not start, crashed, was not ready, or another process
            answers in its place; the services are left stopped.
        BusyError: another updater holds the root.
    """
    with locked(root):
        control = ServiceControl.of(root, config_of(root))
        try:
            control.start_all(root.installed_release())
        except HealthFailure as failure:
            # Not half-started: what did start is stopped again, and the supervisor of the
            # service that failed stops restarting it.
            control.stop_all(root.installed_release())
            raise ServiceError(failure.summary) from None
        return [s.name for s in control.config_for(None).service]


def stop_services(root: InstallRoot) -> list[str]:
    """Stop the services in reverse order, drained as the config says.

    Raises:
        ConfigError: no configuration, or one that does not load.
        BusyError: another updater holds the root.
    """
    with locked(root):
        control = ServiceControl.of(root, config_of(root))
        stopped = [o.describe() for o in control.stop_all(root.installed_release())]
        control.release_sockets()
        return stopped


def crashed_services(root: InstallRoot) -> list[str]:
    """The installed release's services that died on their own (not stopped by Greenlight):
    a release that is down, which an upgrade repairs and a downgrade may leave.

    Raises:
        ConfigError: the configuration does not load.
    """
    if root.installed_release() is None:
        return []
    return ServiceControl.of(root, config_of(root)).crashed()


@dataclass(frozen=True)
class Supervised:
    """A service its supervisor restarted, or gave up on, since the last look; for a crash
    loop within the release's probation, the reason to roll it back (`roll_back`)."""

    service: str
    summary: str
    crash_loop: bool
    roll_back: str | None = None


def _on_probation(root: InstallRoot, release: str, probation: float) -> float | None:
    """Seconds since `release` was committed here, if that is within `probation`."""
    from greenlight.channels import now
    from greenlight.updater.store import history

    committed = [e.at for e in history(root)
                 if e.event in ("upgraded", "downgraded") and e.to_release == release]
    if not committed or probation <= 0:
        return None
    age = (now() - committed[-1]).total_seconds()
    return age if age <= probation else None


def supervise(root: InstallRoot) -> list[Supervised]:
    """What the services' supervisors did since the agent last looked, each said once. A
    crash loop of the installed release is an incident: recorded in the history as
    `crash-loop` (status.json's last incident) and reported to the fleet, where it counts
    against the release. The release stays down; the next release repairs it.

    Raises:
        ConfigError: the configuration does not load.
        BusyError: another updater holds the root.
    """
    release = root.installed_release()
    if release is None:
        return []
    config = config_of(root)
    with locked(root):
        control = ServiceControl.of(root, config)
        if not control.config_for(None).service:  # the release's, under greenlight.toml
            return []
        try:
            news = control.supervise()
        except OSError:
            return []
        said = []
        for name, restarts, new, crash_loop in news:
            summary = f"{restarts.describe(name)} ({version_of(release)})"
            if not crash_loop:
                summary += f": {new} new since the last look"
            said.append(Supervised(name, summary, crash_loop))
            if crash_loop:
                tail = control.log_tail(name)
                entry = HistoryEntry(
                    event="crash-loop", channel=active_channel(root).channel,
                    from_version=version_of(release), from_release=release,
                    summary=summary + (f"; its last words: {tail[-1]}" if tail else ""),
                    failed_checks=[RecordedCheck(
                        name=f"{name}-running", type="process", summary=restarts.describe(name),
                        evidence={"restarts": restarts.count,
                                  "last_crash": restarts.last_returncode, "log": tail})])
                record(root, entry)
                queue_event(root, entry, config.outbox_size)
                said[-1] = _reaction(root, control, release, said[-1])
        return said


def _reaction(root: InstallRoot, control: ServiceControl, release: str,
              loop: Supervised) -> Supervised:
    """What follows a crash loop of the installed release (docs/agent.md): within its
    probation, with a previous release to go back to, a rollback (the caller's, outside the
    lock); else it stays down, and its held sockets are closed so that clients are refused
    at once rather than left waiting, until a start binds them again."""
    from greenlight.updater.operations._change import previous_release

    probation = control.config_for(None).health.probation
    age = _on_probation(root, release, probation)
    if age is not None and previous_release(root) is not None:
        return replace(loop, roll_back=f"{loop.summary}, {age:.0f} s after its commit "
                                       f"(within its probation of {probation:g} s)")
    control.release_sockets()
    return loop


def acting_person() -> str:
    """The person acting: the login behind sudo when there is one.

    Raises:
        Nothing: an unprintable login is shown as its repr.
    """
    import getpass

    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return user if user.isprintable() else repr(user)


def lift(root: InstallRoot, release: str) -> QuarantineReport:
    """`updater quarantine clear RELEASE`: lift the quarantine of a version (all its
    releases) or of one release key; the history records who lifted it and when. A lifted
    release may be installed again by the next upgrade.

    Raises:
        NotFound: nothing quarantined here is named `release`.
    """
    with locked(root):
        lifted = lift_quarantine(root, release)
        if not lifted:
            raise NotFound(f"{release!r} is not quarantined here (see 'updater quarantine')")
        by = acting_person()
        for entry in lifted:
            record(root, HistoryEntry(
                event="quarantine-lifted", channel=entry.channel, from_version=entry.version,
                from_release=entry.identity.key, by=by,
                summary=f"quarantine of {entry.identity.key} lifted by {by} "
                        f"(was: {entry.reason})"))
        report = quarantined(root)
        return report.model_copy(update={"lifted": quarantine_info(lifted)})


def write_systemd_units(root: InstallRoot, out_dir: Path) -> list[Path]:
    """A unit file for each service of the installed release (its manifest's under
    greenlight.toml), in start order, and one for each socket it declares, into `out_dir`.
    The folder is recorded (`UNITS_RECORD`): from then on every start of a release makes the
    units there its own (`SystemdBackend.follow`), so a release that changes its services
    needs no one to run this again.

    Raises:
        ConfigError: no configuration, or one that does not load.
        OSError: `out_dir` could not be written.
    """
    from greenlight.updater.product import (
        AGENT_UNIT,
        SystemdBackend,
        record_units,
        recorded_units,
        render_units,
        values_for,
    )

    machine = config_of(root)
    control = ServiceControl.of(root, machine)
    # the installed release's services and sockets: its manifest's, under greenlight.toml
    config = control.config_for(None) if root.installed_release() else machine
    values = control.values(None) if root.installed_release() else values_for(root, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    root.logs.mkdir(parents=True, exist_ok=True)  # the units append their output there
    units = render_units(config, values)
    recorded = recorded_units(root)
    ours = recorded[1] if recorded and recorded[0] == out_dir.resolve() else set()
    scope = config.systemd_scope == "user"
    foreign = SystemdBackend(root, user=scope).foreign(
        out_dir.resolve(), [n for n in units if n not in ours])
    if foreign:
        raise ConfigError(f"{out_dir / foreign[0]}: a unit Greenlight did not write (or one "
                          "systemd loads from elsewhere); nothing written: give the service "
                          "a unit of its own")
    written = []
    for name, text in units.items():
        atomic_write(out_dir / name, text.encode())
        written.append(out_dir / name)
    agent = out_dir / AGENT_UNIT
    atomic_write(agent, _agent_unit(root, [SystemdBackend.unit(s) for s in config.service],
                                    config.backend == "process",
                                    config.systemd_scope == "user").encode())
    record_units(root, out_dir.resolve(), list(units))
    return [*written, agent]



def _agent_unit(root: InstallRoot, product_units: list[str], owns_services: bool,
                user: bool = False) -> str:
    """The agent's own unit: restarted on failure, started after the product's units (it
    may stop and start them, so it must not race their start at boot), and stopped by
    SIGTERM like any service (a transaction it is in is finished or undone at its next start).
    With the process backend the services it starts live in its cgroup: KillMode=process
    keeps them running when the agent is stopped or restarted."""
    import shlex

    from greenlight.updater.policy import STOP_LIMIT
    from greenlight.updater.product import frozen
    from greenlight.updater.store import entry_point, managed_version

    stop_bound = round(STOP_LIMIT) + 30  # past the loop's own bound on a stopping cycle
    # A root whose Greenlight moves itself is entered by bin/updater, which follows it.
    program = ([str(entry_point(root))] if managed_version(root) is not None else
               [sys.executable] if frozen() else
               [sys.executable, "-m", "greenlight.updater.cli"])
    command = " ".join(shlex.quote(p) for p in [*program, "agent", "--root", str(root.path)])
    after = " ".join(["network-online.target", *product_units])
    return (f"[Unit]\nDescription=Greenlight agent for {root.path}\n"
            f"Wants=network-online.target\nAfter={after}\n\n"
            f"[Service]\nType=simple\nExecStart={command}\nRestart=on-failure\n"
            f"RestartSec=30\nKillSignal=SIGTERM\nTimeoutStopSec={stop_bound}\n"
            + ("KillMode=process\n" if owns_services else "")
            + f"\n[Install]\nWantedBy={'default.target' if user else 'multi-user.target'}\n")
