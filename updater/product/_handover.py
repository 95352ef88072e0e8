"""Handover: the new release takes the held sockets while the old one still serves them, and
the old one then drains; no moment without a process accepting (Envoy's hot-restart order).

A release whose manifest says `handover = true` (it declares its sockets and runs side by
side, so preflight has proven it first) is switched in service by service, in start order:

1. the new service is started beside the running one, under the launcher, with the very
   sockets Greenlight holds (both processes accept on them for a moment), and a
   NOTIFY_SOCKET: it says READY=1 (systemd's readiness protocol) once it serves. Its ready
   check cannot tell the two apart on a shared socket; its READY=1 can. A service without
   sockets uses its ready check, as in any start;
2. the running service is sent its stop signal (bounded by its `[stop] timeout`): it stops
   accepting, finishes what it accepted, and exits; new connections go to its successor.
   Its `drain_url` is not called: through the shared socket it could reach the successor;
3. the successor's record becomes the service's (one rename).

Services of the old release that the new one no longer has are then stopped, in reverse
order. What a product does for it: take its sockets from LISTEN_FDS, send READY=1 to
NOTIFY_SOCKET when it serves, and on its stop signal close its listening sockets first, then
finish in-flight work. The process backend only: a systemd unit runs one instance at a time.
"""

from greenlight.channels import Config, version_of
from greenlight.updater.product._control import HealthFailure, ServiceControl, service_result
from greenlight.updater.product._services import ProcessBackend, stop_slot
from greenlight.updater.product._sockets import SocketHolder, close

__all__ = ["hand_over", "hands_over", "stop_successors"]


def hands_over(control: ServiceControl, config: Config, old: str | None) -> bool:
    """Whether the switch to a release of `config` is a handover from `old`: it declares it,
    the backend is the launcher's, the old release is running, and the root's holder still
    holds the sockets it runs on (a holder that was killed cannot bind them again while the
    old release has them: the switch is then a stop and a start, and the start rebinds)."""
    return (old is not None and config.handover and bool(config.socket)
            and isinstance(control.backend, ProcessBackend) and control.any_running()
            and SocketHolder(control.root).running())


def hand_over(control: ServiceControl, old: str, new: str) -> None:
    """Switch from `old` to `new` service by service, with no moment without a listener.

    Raises:
        HealthFailure: a successor did not start or say READY=1 (the new release's fault),
            or a predecessor crashed when stopped (the old release's).
    """
    assert isinstance(control.backend, ProcessBackend)
    config, values = control.config_for(new), control.values(new)
    before = control.config_for(old)
    successors = ProcessBackend(control.root, slot="next")
    successors.log_limits = (control.config.logs.max_size, control.config.logs.keep)
    twin = ServiceControl(control.root, control.config, successors, _layers=control._layers)
    checks = {c.name: c for c in config.check}
    checker = twin.checker(new)
    listening = control.listening(new)
    control.seen_path().unlink(missing_ok=True)
    try:
        for s in config.service:
            held = listening.get(s.name)
            successors.start(s, values, held, notify=bool(held))
            if held:
                why = successors.wait_notified(s.name, s.start_timeout)
                if why is not None:
                    tail = twin.log_tail(s.name)
                    raise HealthFailure(
                        f"service {s.name} of {version_of(new)} did not take over: {why}"
                        + (f": {tail[-1]}" if tail else ""),
                        [service_result(f"{s.name}-start", f"no READY=1: {why}",
                                    {"last_exit": successors.last_exit(s.name), "log": tail})])
            else:
                twin._wait_ready(s, checker, checks, new)
            predecessor = next((o for o in before.service if o.name == s.name), None)
            if predecessor is not None and control.backend.is_running(s.name):
                # No drain URL: through the shared socket it could reach the successor. The
                # stop signal is the predecessor's drain (see the module's protocol).
                crash = control.stop_crash(old, [control.backend.stop(predecessor,
                                                                      before.stop.timeout)])
                if crash is not None:
                    raise crash
            control.backend.adopt(s.name, successors)
        names = {s.name for s in config.service}
        gone = [o for o in reversed(before.service) if o.name not in names]
        crash = control.stop_crash(old, [control.backend.stop(o, before.stop.timeout)
                                         for o in gone])
        if crash is not None:
            raise crash
    finally:
        close(listening)


def stop_successors(control: ServiceControl, names: list[str]) -> list[str]:
    """Stop what a handover started and did not adopt (it failed, or was killed)."""
    return stop_slot(control.root, "next", names)
