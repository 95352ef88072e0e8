"""Service control with health in the loop: start in order (each ready before the next), stop
in reverse (UI before core, drained, bounded), and the post-check (grace, then soak).

A `ServiceControl` needs an installation root, its configuration and a backend; the
transaction uses it for its steps, and `updater start|stop|health` use it by hand. Every
action names the release it is about, and runs with that release's configuration
(`layer`): greenlight.toml alone, or under the release's own product manifest. So the
pre-check and the stop follow the running release, the start and post-check the new one,
and a rollback the old one again.
"""

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from greenlight.channels import (
    CheckConfig,
    Config,
    Layered,
    ProcessCheck,
    ServiceConfig,
    atomic_write,
    expand,
    layered,
    load_manifest,
    now,
    printable,
    version_of,
)
from greenlight.updater._errors import ConfigError, StoreError
from greenlight.updater.product._health import (
    CheckResult,
    HealthChecker,
    all_checks,
    failed_required,
)
from greenlight.updater.product._listeners import describe_process, listen_address, listeners
from greenlight.updater.product._placeholders import values_for
from greenlight.updater.product._services import (
    ProcessBackend,
    Restarts,
    ServiceBackend,
    StopOutcome,
    drain,
)
from greenlight.updater.product._sockets import Listening, SocketHolder, close
from greenlight.updater.product._systemd import SystemdBackend, render_units

if TYPE_CHECKING:
    from greenlight.updater.store import InstallRoot

__all__ = ["HealthFailure", "ServiceControl", "Shadow", "backend_for", "service_result"]


def backend_for(root: "InstallRoot", config: Config) -> ServiceBackend:
    """The configured backend: systemd units (system or user scope), else the launcher."""
    if config.backend == "systemd":
        return SystemdBackend(root, services=config.service,
                              user=config.systemd_scope == "user")
    backend = ProcessBackend(root)
    backend.log_limits = (config.logs.max_size, config.logs.keep)
    return backend


class HealthFailure(Exception):
    """The product is unhealthy: checks failed, a service died or crashed on stop."""

    def __init__(self, summary: str, results: list[CheckResult] | None = None,
                 stops: list[StopOutcome] | None = None, new_release_at_fault: bool = True,
                 preflight: bool = False):
        super().__init__(summary)
        self.summary = summary
        self.preflight = preflight
        """caught in preflight: the running release was never stopped"""
        self.results = results or []
        self.stops = stops or []
        self.new_release_at_fault = new_release_at_fault
        self.at = time.monotonic()


def service_result(name: str, summary: str, evidence: dict[str, object]) -> CheckResult:
    """A failed result that is not a configured check's: a service that did not start, or
    crashed when stopped."""
    return CheckResult(name=name, type="service", required=True, ok=False, summary=summary,
                       attempts=1, latency_ms=0.0, evidence=evidence, at=now())


def _describe(failed: list[CheckResult], release: str, how: str, layer: Layered) -> str:
    first = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    # A check this machine adds to a release that brings its own: the blame may be local.
    whose = (" (a check of this machine's greenlight.toml, not of the release)"
             if layer.from_release and first.source == "machine" else "")
    return f"{version_of(release)} {how}: check {first.name}{whose}: {first.summary}{more}"


def _tagged(results: list[CheckResult], checks: list[CheckConfig],
            layer: Layered) -> list[CheckResult]:
    """The results, each with where its check came from (release or machine); a service's
    implicit "is running" check comes from where the service came from. A failed check of
    the release that runs with values this machine set otherwise than the release has them
    in its evidence (`machine_values`): a local setting may be the cause."""
    by_name = {c.name: c for c in checks}
    tagged = []
    for r in results:
        c = by_name.get(r.name)
        source = layer.sources.get(r.name) or (
            layer.sources.get(c.service) if isinstance(c, ProcessCheck) else None)
        update: dict[str, object] = {"source": source} if source else {}
        ours = layer.machine_values_in(c) if not r.ok and source == "release" else []
        if ours:
            update["evidence"] = {**r.evidence,
                                  "machine_values": {n: layer.values[n] for n in ours}}
        tagged.append(r.model_copy(update=update) if update else r)
    return tagged


def _round(checker: HealthChecker, checks: list[CheckConfig]) -> list[CheckResult]:
    """Every check once. When one fails, the process checks are asked again: a service that
    died during the round is the cause, and the checks after it that failed are symptoms.
    Without this, which check is blamed depends on when in the round the service died."""
    results = [checker.run(c, retries=0) for c in checks]
    if not failed_required(results):
        return results
    again = {c.name: checker.run(c, retries=0) for c in checks if c.type == "process"}
    died = [r for r in again.values() if not r.ok]
    return died + [r for r in results if r.name not in {d.name for d in died}]


@dataclass
class Shadow:
    """Preflight's copy of a release: the values that point it at sockets and per-instance
    state of its own, and those sockets (bound by this process)."""

    values: dict[str, str]
    listening: Listening


@dataclass
class ServiceControl:
    root: "InstallRoot"
    config: Config
    backend: ServiceBackend
    start_seconds: float = 0.0
    """time spent starting services (excluded from the rollback time)"""
    _layers: dict[str | None, Layered] = field(default_factory=dict, repr=False)
    shadow: "Shadow | None" = None
    """preflight: the services run beside the installed ones, on sockets and values of
    their own (see `preflight`)"""

    @classmethod
    def of(cls, root: "InstallRoot", config: Config) -> "ServiceControl":
        return cls(root, config, backend_for(root, config))

    def layer(self, release: str | None) -> Layered:
        """The configuration the release of key `release` (the installed one, if None) runs
        with: greenlight.toml, under the release's product manifest when it carries one.

        Raises:
            ConfigError: the kept manifest cannot be read or loaded, or does not fit
                greenlight.toml.
        """
        key = release if release is not None else self.root.installed_release()
        found = self._layers.get(key)
        if found is not None:
            return found
        manifest = None
        if key is not None:
            from greenlight.updater.store import PRODUCT_MANIFEST

            path = self.root.release_dir(key) / PRODUCT_MANIFEST
            try:
                manifest = load_manifest(path.read_text(), str(path))
            except FileNotFoundError:
                pass
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"{path}: cannot read the release's manifest: {e}") from None
        found = self._layers[key] = layered(self.config, manifest,
                                            version_of(key) if key else "")
        if isinstance(self.backend, SystemdBackend):  # the release's own unit names
            self.backend.know(found.config.service)
        return found

    def config_for(self, release: str | None) -> Config:
        """The configuration of `release` (the installed one, if None); see `layer`."""
        return self.layer(release).config

    def values(self, release: str | None) -> dict[str, str]:
        """The placeholder values of `release`: the built-in ones and its declared ones (a
        shadow's own, in preflight)."""
        declared = self.layer(release).values
        if self.shadow is not None:
            declared = {**declared, **self.shadow.values}
        return values_for(self.root, release, declared)

    def listening(self, release: str) -> Listening:
        """The sockets `release`'s services are started with: a shadow's own; else those the
        root's holder keeps (process backend; under systemd its socket units hold them).

        Raises:
            StoreError: a socket could not be bound or held.
        """
        if self.shadow is not None:
            return self.shadow.listening
        if not isinstance(self.backend, ProcessBackend):
            return {}
        return SocketHolder(self.root).hold(self.config_for(release).socket,
                                            self.values(release))

    def release_sockets(self) -> None:
        """The product is stopped for good: its held sockets are closed."""
        if self.shadow is None and isinstance(self.backend, ProcessBackend):
            SocketHolder(self.root).quit()

    def checker(self, release: str | None, crash_free: bool = False) -> HealthChecker:
        return HealthChecker(self.root.path, self.backend, self.values(release), crash_free)

    def seen_path(self) -> Path:
        """What `supervise` has already said of the supervisors' restarts and crash loops."""
        return self.root.state / "run" / ("preflight" if self.shadow else "") / "supervised.json"

    def supervise(self) -> list[tuple[str, Restarts, int, bool]]:
        """What the services' supervisors did since the last look: for each service that was
        restarted or gave up since, its name, its restarts, how many are new, and whether it
        has newly gone into a crash loop. Remembers what it said, so each is said once.

        Raises:
            OSError: state/run/ could not be written.
        """
        try:
            seen = json.loads(self.seen_path().read_text())
            seen = seen if isinstance(seen, dict) else {}
        except (OSError, ValueError):
            seen = {}
        news, now_seen = [], {}
        for s in self.config_for(None).service:
            restarts = self.backend.restarts(s.name)
            entry = seen.get(s.name)
            before = entry if isinstance(entry, dict) else {}
            counted = before.get("restarts", 0)
            count = counted if isinstance(counted, int) else 0
            gave_up = bool(before.get("gave_up"))
            if restarts.count < count:  # the counts began again (a start not by Greenlight)
                count, gave_up = 0, False
            now_seen[s.name] = {"restarts": restarts.count, "gave_up": restarts.gave_up}
            newly_looped = restarts.gave_up and not gave_up
            if restarts.count > count or newly_looped:
                news.append((s.name, restarts, restarts.count - count, newly_looped))
        if news or now_seen != seen:
            self.seen_path().parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.seen_path(), json.dumps(now_seen).encode())
        return news

    def any_running(self) -> bool:
        return any(self.backend.is_running(s.name) for s in self.config_for(None).service)

    def crashed(self) -> list[str]:
        """The services that died on their own (not stopped by Greenlight), in start order."""
        return [s.name for s in self.config_for(None).service if self.backend.crashed(s.name)]

    def stop_all(self, release: str | None) -> list[StopOutcome]:
        """Stop every service. Draining: UI before core, each drained, bounded, then killed.
        Without draining: every service signalled at once (how the panel restart crashed)."""
        config, values = self.config_for(release), self.values(release)
        ordered = list(reversed(config.service))
        if not config.stop.drain:
            for s in ordered:
                self.backend.stop(s, config.stop.timeout, wait=False)
            return [self.backend.wait_stopped(s, config.stop.timeout) for s in ordered]
        outcomes = []
        for s in ordered:
            if self.backend.is_running(s.name):
                drain(s, values, config.stop.timeout)
            outcomes.append(self.backend.stop(s, config.stop.timeout))
        return outcomes

    def start_all(self, release: str | None) -> None:
        """Start services in order, each ready (its `ready` check passing) before the next.

        Raises:
            HealthFailure: a service exited during start-up or was not ready in time, or its
                sockets could not be bound.
            StoreError: under systemd, its units could not be written.
        """
        if release is None:
            return
        checker, config = self.checker(release), self.config_for(release)
        checks = {c.name: c for c in config.check}
        started = time.monotonic()
        # A start by Greenlight begins the supervisors' counts again, and what was seen of them.
        self.seen_path().unlink(missing_ok=True)
        if self.shadow is None and isinstance(self.backend, SystemdBackend):
            # systemd runs what the unit files say: make them this release's first (a machine
            # that cannot write them has a StoreError of its own, not the release's fault)
            self.backend.follow(render_units(config, self.values(release)))
        try:
            listening = self.listening(release)
        except StoreError as e:  # its sockets cannot be had: it cannot start
            raise HealthFailure(
                f"{version_of(release)} cannot start: {e}",
                [service_result("sockets", "its sockets could not be bound", {"error": str(e)})]
            ) from None
        try:
            for s in config.service:
                # One already running is not started again: what its supervisor did before
                # (restarts, the lines it logged) is not this start's.
                fresh, since = not self.backend.is_running(s.name), self._log_size(s.name)
                self.backend.start(s, self.values(release), listening.get(s.name))
                self._wait_ready(s, checker, checks, release, fresh=fresh, since=since)
        finally:
            if self.shadow is None:
                close(listening)
        self.start_seconds += time.monotonic() - started

    def _wait_ready(self, s: ServiceConfig, checker: HealthChecker,
                    checks: dict[str, CheckConfig], release: str, fresh: bool = True,
                    since: int | None = None) -> None:
        """Until `s` is ready (its `ready` check passes, answered by it), or fails to be.
        `fresh`: it was started now (not found running); `since`: the size its log had
        before, so that only the lines of this start are quoted.

        Raises:
            HealthFailure: it exited during start-up, or was not ready in time.
        """
        deadline = time.monotonic() + s.start_timeout
        while True:
            # Down, or restarted by its supervisor: either way it exited during start-up.
            restarts = self.backend.restarts(s.name)
            if (fresh and restarts.count) or not self.backend.is_running(s.name):
                tail = self._log_tail(s.name, since=since)
                ended = self.backend.last_exit(s.name) or {
                    "returncode": restarts.last_returncode, "restarted": restarts.count}
                raise HealthFailure(
                    f"service {s.name} of {version_of(release)} exited during start-up"
                    + (f": {tail[-1]}" if tail else ""),
                    [service_result(f"{s.name}-start", "exited during start-up",
                                {"last_exit": ended, "log": tail})])
            if s.notify and isinstance(self.backend, ProcessBackend) and not (
                    self.backend.notified(s.name) or {}).get("ready"):
                # Type=notify: started once it says READY=1 (systemd's start waits for it)
                if time.monotonic() > deadline:
                    raise HealthFailure(
                        f"service {s.name} of {version_of(release)} did not say READY=1 in "
                        f"{s.start_timeout}s", [service_result(
                            f"{s.name}-start", "no READY=1 on its NOTIFY_SOCKET",
                            {"log": self._log_tail(s.name, since=since)})])
                time.sleep(0.01)
                continue
            if s.ready is None:
                return
            result = checker.run(checks[s.ready], retries=0)
            if result.ok:
                self._answered_by(s.name, checks[s.ready], release, fresh, since)
                return
            if time.monotonic() > deadline:
                raise HealthFailure(f"service {s.name} of {version_of(release)} not ready in "
                                    f"{s.start_timeout}s: {result.summary}", [result])
            time.sleep(0.05)

    def _answered_by(self, name: str, ready: CheckConfig, release: str, fresh: bool = True,
                     since: int | None = None) -> None:
        """The ready check passed: make sure the service itself answered. A service that
        crashed on start (and was restarted), or a port held by a process that is not the
        service's (a stray copy, another program), must not pass for a started service.

        Raises:
            HealthFailure: the service crashed during start-up, or another process answers.
        """
        restarts = self.backend.restarts(name)
        if fresh and (restarts.count or restarts.gave_up):
            tail = self._log_tail(name, since=since)
            raise HealthFailure(
                f"{restarts.describe(name)} during start-up of {version_of(release)}"
                + (f": {tail[-1]}" if tail else ""),
                [service_result(f"{name}-start", restarts.describe(name),
                            {"last_exit": self.backend.last_exit(name), "log": tail})])
        address = listen_address(ready, self.values(release))
        if address is None:
            return
        # the updater itself holds a shadow's sockets (preflight): never a stranger
        pids = [pid for pid in listeners(address[1]) if pid != os.getpid()]
        if self._anothers_port(name, address[1], pids, release):
            return
        owned = {pid: self.backend.owns(name, pid) for pid in pids}
        strangers = [pid for pid, ours in owned.items() if ours is False]
        if strangers and True not in owned.values():
            who = describe_process(strangers[0])
            raise HealthFailure(
                f"service {name} of {version_of(release)}: port {address[1]} answers from "
                f"{who}, not from the service (is another copy running?)",
                [service_result(f"{name}-start", f"port {address[1]} is held by {who}",
                            {"port": address[1], "pids": strangers,
                             "log": self._log_tail(name, since=since)})])

    def _anothers_port(self, name: str, port: int, pids: list[int], release: str) -> bool:
        """`port` is what another service of the release binds (a socket held for it, or a
        port one of its processes, among the `pids` listening there, holds): a ready check
        through it says that `name` works through that service, not who `name` is, so no
        process is a stray there."""
        config, values = self.config_for(release), self.values(release)
        if any(k.service != name and expand(k.listen, values).rsplit(":", 1)[-1] == str(port)
               for k in config.socket):
            return True
        others = [s.name for s in config.service if s.name != name]
        return any(self.backend.owns(other, pid) for pid in pids for other in others)

    def log_tail(self, name: str, lines: int = 5) -> list[str]:
        """The last lines of the service's log (escaped for a terminal)."""
        return [printable(line) for line in self._log_tail(name, lines)]

    def _log(self, name: str) -> Path:
        return Path(getattr(self.backend, "logs", self.root.path / "logs")) / f"{name}.log"

    def _log_size(self, name: str) -> int:
        try:
            return self._log(name).stat().st_size
        except OSError:
            return 0

    def _log_tail(self, name: str, lines: int = 5, since: int | None = None) -> list[str]:
        """The last lines of the service's log; with `since` (a size it had), only those
        written after it (all of it, when it was rotated since)."""
        try:
            with self._log(name).open("rb") as f:
                if since is not None and f.seek(0, os.SEEK_END) >= since:
                    f.seek(since)
                else:
                    f.seek(0)
                text = f.read().decode(errors="replace")
            return text.splitlines()[-lines:]
        except OSError:
            return []

    def check_now(self, release: str | None) -> list[CheckResult]:
        """Every check once (with its own retries) against `release`'s services."""
        checker = self.checker(release)
        layer = self.layer(release)
        checks = all_checks(layer.config)
        return _tagged([checker.run(c) for c in checks], checks, layer)

    def post_check(self, release: str, grace: float, soak: float) -> list[CheckResult]:
        """Checks must pass within `grace` (start-up), then keep passing for `soak`.

        Raises:
            HealthFailure: a required check failed past the grace, or during the soak.
        """
        layer = self.layer(release)
        checker, checks = self.checker(release, crash_free=True), all_checks(layer.config)
        if not checks:
            return []
        interval = layer.config.health.interval
        deadline = time.monotonic() + grace
        while True:
            results = _tagged(_round(checker, checks), checks, layer)
            failed = failed_required(results)
            if not failed:
                break
            if time.monotonic() >= deadline:
                raise HealthFailure(
                    _describe(failed, release, "did not become healthy", layer), results)
            time.sleep(interval)
        soak_end = time.monotonic() + soak
        while time.monotonic() < soak_end:
            time.sleep(min(interval, max(0.0, soak_end - time.monotonic())))
            results = _tagged(_round(checker, checks), checks, layer)
            failed = failed_required(results)
            if failed:
                raise HealthFailure(
                    _describe(failed, release, "failed during the soak window", layer), results)
        return results

    def stop_crash(self, release: str | None, outcomes: list[StopOutcome]) -> HealthFailure | None:
        """A crash on stop as a failed check of the running release (not the new one)."""
        crashed = [o for o in outcomes if o.crashed]
        if not crashed:
            return None
        return HealthFailure(
            f"service {crashed[0].service} of {version_of(release or '-')} crashed when stopped "
            f"(exit status {crashed[0].returncode}): in-flight work was cut off",
            [service_result(f"{o.service}-stop", o.describe(), {"returncode": o.returncode})
             for o in crashed],
            outcomes, new_release_at_fault=False)
