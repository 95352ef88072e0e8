"""Preflight: the new release proven beside the running one before the running one is touched.

A release whose manifest declares its sockets (`[[socket]]`) and does not say
`side_by_side = false` is started first as a shadow: its services run under the launcher with
records and logs of their own (`state/run/preflight/`, `logs/preflight/`), on sockets bound
here on addresses of their own (a port the kernel picks on the same host, or the same Unix
socket name in a folder of its own), with every [values] placeholder of those addresses, and
every value the manifest lists as `per_instance` (a copy of that state), pointed at the
shadow's. Its UI is thereby pointed at its own core, and its whole check suite runs against
it as the UI would, within its `[health]` grace and soak. The shadow is then stopped (a crash
on that stop is a failure too), and only a release that passed goes on to stop the running
one. A release that fails was never switched in: the user saw nothing.
"""

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from greenlight.channels import BUILT_IN, Config, instance_values, remove_path, version_of
from greenlight.updater.product._control import HealthFailure, ServiceControl, Shadow
from greenlight.updater.product._health import CheckResult
from greenlight.updater.product._services import ProcessBackend, stop_slot
from greenlight.updater.product._sockets import Listening, bind_shadow, close

if TYPE_CHECKING:
    from greenlight.updater.store import InstallRoot

__all__ = ["preflight", "runs_preflight", "stop_shadows"]


def runs_preflight(config: Config) -> bool:
    """Whether a release of this configuration is proven beside the running one: it declares
    its sockets (so it can be given its own) and can run twice."""
    return bool(config.socket) and config.side_by_side


def _base(root: "InstallRoot") -> Path:
    return root.state / "run" / "preflight"


def _copy_state(source: Path | None, target: Path) -> None:
    """A per-instance folder's regular files and folders (sockets and links are not copied)."""
    remove_path(target)
    target.mkdir(parents=True)
    if source is None or not source.is_dir() or source.is_symlink():
        return
    shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True,
                    ignore=lambda d, names: [n for n in names
                                             if not (Path(d) / n).is_file()
                                             and not (Path(d) / n).is_dir()
                                             or (Path(d) / n).is_symlink()])


def _shadow(control: ServiceControl, release: str) -> Shadow:
    """The shadow's values and sockets.

    Raises:
        StoreError: a socket could not be bound.
    """
    config, real = control.config_for(release), control.values(release)
    base = _base(control.root)
    values: dict[str, str] = {}
    for name in config.per_instance:  # a value no one set starts the shadow with nothing
        source = Path(real.get(name, "")) if real.get(name) else None
        _copy_state(source if source is None or source.is_absolute()
                    else control.root.path / source, base / "values" / name)
        values[name] = str(base / "values" / name)
    listening: Listening = {}
    try:
        for sock in config.socket:
            own = [n for n in instance_values(sock) if n not in BUILT_IN]
            if sock.listen.startswith(("/", "{")):
                for name in own:
                    if name not in values:
                        (base / "values" / name).mkdir(parents=True, exist_ok=True)
                        values[name] = str(base / "values" / name)
                bound, _ = bind_shadow(sock, {**real, **values})
            else:
                port = own[-1]
                bound, where = bind_shadow(sock, {**real, **values}, values.get(port))
                values[port] = where
            listening.setdefault(sock.service, []).append((sock.name, bound))
    except BaseException:
        close(listening)
        raise
    return Shadow(values, listening)


def preflight(control: ServiceControl, release: str, beside: str | None) -> list[CheckResult]:
    """Run `release` as a shadow beside `beside` (the running release) and check it whole.

    Raises:
        HealthFailure: it did not start, failed a required check within its grace or soak,
            or crashed when stopped (`preflight` set: nothing else was touched).
        StoreError: its shadow sockets could not be bound.
    """
    base = _base(control.root)
    stop_shadows(control.root)
    shadow = _shadow(control, release)
    twin = ServiceControl(control.root, control.config,
                          ProcessBackend(control.root, slot="preflight"),
                          _layers=control._layers, shadow=shadow)
    where = f"beside {version_of(beside)}, which kept running" if beside else "before it ran"
    try:
        try:
            twin.start_all(release)
            health = twin.config_for(release).health
            results = twin.post_check(release, health.grace, health.soak)
        finally:
            stops = twin.stop_all(release)
        crashed = [o for o in stops if o.crashed]
        if crashed:
            raise HealthFailure(
                f"service {crashed[0].service} of {version_of(release)} crashed when stopped "
                f"(exit status {crashed[0].returncode})", stops=stops)
    except HealthFailure as failure:
        failure.summary = f"preflight ({where}): {failure.summary}"
        failure.args = (failure.summary,)
        failure.preflight = True
        raise
    finally:
        close(shadow.listening)
        remove_path(base / "values")
    control.start_seconds += twin.start_seconds
    return results


def stop_shadows(root: "InstallRoot", names: list[str] | None = None) -> list[str]:
    """End whatever preflight left running (an updater killed during it), as a stop would,
    and its records and state. Returns the services it stopped."""
    stopped = stop_slot(root, "preflight", names)
    remove_path(_base(root) / "values")
    return stopped
