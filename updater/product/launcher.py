"""The launcher a service runs under; the standard library only, imports nothing of Greenlight.

    python -I -S launcher.py --exit-file FILE [--ready-file FILE]
        [--restart no|on-failure|always --restart-delay S --burst N --interval S
         --clean RC,RC... --restarts-file FILE] [--listen-fds FD,... --listen-names NAME,...]
        -- COMMAND...

It starts COMMAND as its child, forwards stop signals to it, and when the child ends writes
the child's exit status (and the signals it forwarded) to the exit file. The updater that
stops a service is usually not the process that started it, so this file is how it learns
whether the service exited cleanly or crashed. The launcher leads its own process group: a
kill after the stop timeout ends both. The ready file is written once the handlers are
installed and the child is started, so nobody signals it before it can forward.

It is also the service's supervisor, with systemd's semantics: a child that ends without
being asked to stop is started again after `--restart-delay` seconds, when `--restart` says
so (on-failure: an end that is not in `--clean`, the returncodes that are a clean end;
always: any end). Each restart is appended to the restarts file as one JSON line. More than
`--burst` starts within `--interval` seconds is a crash loop: the launcher gives up, leaves
the service down and says so in the exit file (`"gave_up": true`), as systemd's start limit.

With `--log-file`, it bounds the service's log as logrotate's `copytruncate` does: once the
file holds more than `--log-max` bytes, it is copied to FILE.1 (FILE.1 to FILE.2, ... up to
`--log-keep` files) and emptied in place, so the service keeps writing to the same open file
(opened with O_APPEND, its next line goes to the start). Lines written between the copy and
the truncation are lost, as with logrotate's.

With `--listen-fds`, the listening sockets it inherited (held by Greenlight, see holder.py)
are passed to the service, and to each restart of it, with systemd's socket-activation
protocol: as descriptors 3, 4, ... with LISTEN_FDS, LISTEN_PID (the service's own pid) and
LISTEN_FDNAMES set, so a service written for systemd's sockets runs unchanged. A service left
down for good (it gave up, or crashed and is not restarted; not a clean end, which may be a
drained service's before its stop) has its TCP listening sockets shut down: clients are
refused at once rather than left waiting (see `_refuse`).

With `--notify-file`, it owns the service's NOTIFY_SOCKET (systemd's notify protocol) for as
long as it runs: one datagram socket in the abstract namespace, the same across every restart
of the service, so a service that treats a failed notify as fatal never finds it gone. It reads
READY=1, STOPPING=1, RELOADING=1, STATUS=..., WATCHDOG=1, WATCHDOG=trigger and WATCHDOG_USEC=
as systemd reads them, from the service's processes only (its process group, the same user),
and writes the service's state to the notify file (JSON) at each change, each start's afresh:
what the updater waits on for READY=1 (a `notify` service's start, a handover's successor).

With `--watchdog S` as well (WatchdogSec=), the service is given WATCHDOG_USEC and WATCHDOG_PID
and must send WATCHDOG=1 at least every S seconds, counted from READY=1 (`--type notify`,
Type=notify) or from its start; one that does not is sent SIGABRT (killed 5 s later if still
there), and the end is a failure whatever its status, restarted unless `--restart no`, and
recorded with `"watchdog": true`. Unlike systemd, a service given no watchdog cannot turn one
on with WATCHDOG_USEC=, and the watchdog ends at STOPPING=1.

The updater runs this file by path with `-I -S` (no site-packages, no package import), so the
process it adds per service is a bare interpreter: see bench/overhead.py.
"""

import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
_OPTIONS = ("--exit-file", "--ready-file", "--restart", "--restart-delay", "--burst",
            "--interval", "--clean", "--restarts-file", "--listen-fds", "--listen-names",
            "--log-file", "--log-max", "--log-keep", "--notify-file", "--type", "--watchdog",
            "--record")
USAGE = ("usage: launcher.py --exit-file FILE [--ready-file FILE] [--restart POLICY "
         "--restart-delay S --burst N --interval S --clean RC,... --restarts-file FILE] "
         "[--listen-fds FD,... --listen-names NAME,...] "
         "[--log-file FILE --log-max BYTES --log-keep N] "
         "[--notify-file FILE [--type notify|simple] [--watchdog S]] [--record FILE] "
         "-- COMMAND...")


def _write(path: str, record: dict[str, object]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _append(path: str, record: dict[str, object]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def rotate(path: str, limit: int, keep: int) -> bool:
    """Bound the log at `path` (see the module): when it holds more than `limit` bytes, shift
    PATH.1 ... PATH.(keep-1) up by one, copy PATH to PATH.1 and empty PATH in place. Returns
    whether it rotated. Never follows a symlink planted at a kept file's name.

    Raises:
        OSError: the log could not be read, copied or truncated.
    """
    if os.stat(path).st_size <= limit:
        return False
    for n in range(keep - 1, 0, -1):
        if os.path.lexists(f"{path}.{n}"):
            os.replace(f"{path}.{n}", f"{path}.{n + 1}")
    if keep > 0:
        if os.path.lexists(f"{path}.1"):  # keep = 1: the one kept copy makes way
            os.unlink(f"{path}.1")
        src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            dst = os.open(f"{path}.1", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                          0o640)
            try:
                while chunk := os.read(src, 1 << 20):
                    os.write(dst, chunk)
            finally:
                os.close(dst)
        finally:
            os.close(src)
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    return True


def _bound_log(path: str, limit: int, keep: int) -> None:
    """Every second, for the launcher's life: `rotate` the log (a thread of the launcher)."""
    while True:
        with contextlib.suppress(OSError):  # tried again in a second; the service goes on
            rotate(path, limit, keep)
        time.sleep(1.0)


class Notified:
    """The service's NOTIFY_SOCKET and what it said there, for the launcher's life (see the
    module). `serve` reads it (a thread); `overdue` is the watchdog's question."""

    def __init__(self, path: str, ready_by_notify: bool, watchdog: float) -> None:
        self.path, self.ready_by_notify = path, ready_by_notify
        self.configured = self.usec = int(watchdog * 1_000_000)
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.address = f"greenlight-notify-{os.getpid()}-{os.urandom(8).hex()}"
        self.sock.bind("\0" + self.address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.state: dict[str, object] = {}
        self.last = time.monotonic()
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        """set by the launcher's signal handler: a stop asked for is never the watchdog's"""

    @property
    def name(self) -> str:
        return "@" + self.address

    def starting(self, start: int) -> None:
        """A new start of the service, before it runs: its state begins again (the socket
        stays; a WATCHDOG_USEC= the last start sent does not), so that nothing the new
        process says first is lost."""
        with self.lock:
            self.child, self.last, self.usec = None, time.monotonic(), self.configured
            self.state = {"socket": self.name, "launcher": os.getpid(), "pid": None,
                          "start": start, "ready": False, "stopping": False, "status": None,
                          "watchdog_usec": self.usec, "watchdog_fired": False}

    def running(self, child: "subprocess.Popen[bytes]") -> None:
        with self.lock:
            self.child, self.state["pid"] = child, child.pid
            self._save()

    def _save(self) -> None:
        with contextlib.suppress(OSError):
            _write(self.path, self.state)

    def _ours(self, credentials: bytes) -> bool:
        pid, uid, _ = struct.unpack("3i", credentials[:12])
        try:  # pid 0: a sender in a pid namespace this one cannot see
            return pid > 0 and uid in (os.getuid(), 0) and os.getpgid(pid) == os.getpgrp()
        except OSError:
            return False

    def serve(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except OSError:
                return  # closed: the launcher is ending
            sender = next((d for level, kind, d in ancillary if level == socket.SOL_SOCKET
                           and kind == socket.SCM_CREDENTIALS), None)
            if sender is not None and self._ours(sender):
                with contextlib.suppress(Exception):  # one odd message never ends the reader
                    self.said(data)

    def said(self, data: bytes) -> None:
        """One message: newline-separated KEY=VALUE assignments, as sd_notify sends them."""
        with self.lock:
            changed = False
            for line in data.decode("utf-8", "replace").split("\n"):
                key, _, value = line.partition("=")
                if key == "WATCHDOG" and value == "1":
                    self.last = time.monotonic()
                elif key == "WATCHDOG" and value == "trigger":
                    self.last, changed = 0.0, True
                elif key == "WATCHDOG_USEC" and value.isascii() and value.isdigit():
                    self.usec, self.last = int(value), time.monotonic()
                    self.state["watchdog_usec"], changed = self.usec, True
                elif key in ("READY", "STOPPING", "RELOADING") and value == "1":
                    if key == "READY":
                        self.last = time.monotonic()  # the watchdog counts from here
                    self.state[key.lower()] = True
                    self.state["reloading"] = key == "RELOADING"
                    changed = True
                elif key == "STATUS":
                    self.state["status"], changed = value[:200], True
            if changed:
                self._save()

    def overdue(self) -> "subprocess.Popen[bytes] | None":
        """The child, when it has let its watchdog run out (marked fired: asked once)."""
        with self.lock:
            child = self.child
            if (self.usec <= 0 or child is None or child.returncode is not None or self.stopping
                    or self.state.get("watchdog_fired") or self.state.get("stopping")
                    or self.ready_by_notify and not self.state.get("ready")
                    or time.monotonic() - self.last <= self.usec / 1_000_000):
                return None
            self.state["watchdog_fired"] = True
            self._save()
            return child

    def fired(self) -> bool:
        with self.lock:
            return bool(self.state.get("watchdog_fired"))


def _watch(notified: Notified) -> None:
    """The watchdog (a thread of the launcher): SIGABRT to a child that stopped pinging, as
    systemd's WatchdogSignal; SIGKILL if it is still there 5 s later."""
    while True:
        time.sleep(min(0.05, max(0.005, notified.usec / 4_000_000)))
        child = notified.overdue()
        if child is None:
            continue
        with contextlib.suppress(OSError):
            child.send_signal(signal.SIGABRT)
        deadline = time.monotonic() + 5.0
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            if child.poll() is None:
                child.kill()


def _listen_fds(inherited: list[int]) -> list[int]:
    """The inherited sockets moved to descriptors 3, 4, ..., where the protocol wants them
    (out of the way first, so that none is overwritten before it is moved)."""
    first = 3 + len(inherited)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(first, 64)) for fd in inherited]
    for fd in inherited:
        os.close(fd)
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i, inheritable=False)
        os.close(fd)
    return list(range(3, first))


def _refuse(listen: list[int], record: str | None) -> None:
    """The service is down for good: its TCP listening sockets stop listening (shut down,
    the queued connections reset), so that clients are refused at once instead of waiting on
    a socket nobody will accept on. The sockets stay bound: the holder listens on them again
    for the next start (holder.py). A Unix socket is left as it is (closed with the holder).
    Only the service of `record` does it: a launcher it names (not a handover's successor
    that failed before it took over, whose sockets its predecessor still serves on)."""
    if not listen or not record:
        return
    deadline = time.monotonic() + 2.0  # the starter writes the record once we are up
    while not os.path.exists(record) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        with open(record, "rb") as f:
            if json.load(f).get("pid") != os.getpid():
                return
    except (OSError, ValueError, AttributeError):
        return
    for fd in listen:
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(fd))
            with sock:
                if (sock.type == socket.SOCK_STREAM
                        and sock.family in (socket.AF_INET, socket.AF_INET6)):
                    sock.shutdown(socket.SHUT_RDWR)


def _announce(names: list[str], watchdog: bool) -> None:
    """In the service's process, before its exec: the protocols' variables, its own pid."""
    if names:
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = str(len(names))
        os.environ["LISTEN_FDNAMES"] = ":".join(names)
    if watchdog:
        os.environ["WATCHDOG_PID"] = str(os.getpid())


def _restarts(policy: str, returncode: int, clean: set[int]) -> bool:
    return policy == "always" or (policy == "on-failure" and returncode not in clean)


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    options: dict[str, str] = {}
    while args and args[0] in _OPTIONS and len(args) > 1:
        options[args[0]] = args[1]
        args = args[2:]
    if "--exit-file" not in options or not args or args[0] != "--" or len(args) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    command = args[1:]
    policy = options.get("--restart", "no")
    try:
        delay = float(options.get("--restart-delay", "1"))
        burst = int(options.get("--burst", "5"))
        interval = float(options.get("--interval", "60"))
        clean = {0, *(int(c) for c in options.get("--clean", "").split(",") if c)}
    except ValueError:
        print(USAGE, file=sys.stderr)
        return 2
    received: list[str] = []
    child: subprocess.Popen[bytes] | None = None
    try:
        inherited = [int(fd) for fd in options.get("--listen-fds", "").split(",") if fd]
    except ValueError:
        print(USAGE, file=sys.stderr)
        return 2
    names = [n for n in options.get("--listen-names", "").split(",") if n]
    if len(names) != len(inherited):
        print(USAGE, file=sys.stderr)
        return 2
    listen = _listen_fds(inherited) if inherited else []
    if "--log-file" in options:
        try:
            limit, keep = int(options.get("--log-max", "0")), int(options.get("--log-keep", "3"))
        except ValueError:
            print(USAGE, file=sys.stderr)
            return 2
        if limit > 0:
            threading.Thread(target=_bound_log, args=(options["--log-file"], limit, keep),
                             daemon=True).start()
    notified = None
    if "--notify-file" in options:
        try:
            watchdog = float(options.get("--watchdog", "0"))
        except ValueError:
            print(USAGE, file=sys.stderr)
            return 2
        notified = Notified(options["--notify-file"], options.get("--type") == "notify",
                            watchdog)
        os.environ["NOTIFY_SOCKET"] = notified.name
        if notified.usec > 0:
            os.environ["WATCHDOG_USEC"] = str(notified.usec)
            threading.Thread(target=_watch, args=(notified,), daemon=True).start()
        threading.Thread(target=notified.serve, daemon=True).start()
    watched = notified is not None and notified.usec > 0
    spawn: dict[str, object] = {"pass_fds": listen,
                                "preexec_fn": lambda: _announce(names, watched)
                                } if listen or watched else {}

    def forward(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        if notified is not None:
            notified.stopping = True
        if child is not None and child.returncode is None:
            child.send_signal(signum)

    def watchdog_end() -> dict[str, object]:
        return {"watchdog": True} if notified is not None and notified.fired() else {}

    # Handlers first: a stop signal that arrives while the child starts is still forwarded.
    for sig in _FORWARDED:
        signal.signal(sig, forward)
    starts: list[float] = []
    restarts = 0
    while True:
        starts.append(time.monotonic())
        if notified is not None:
            notified.starting(len(starts))
        try:
            child = subprocess.Popen(command, **spawn)  # type: ignore[call-overload]
        except OSError as e:
            print(f"launcher: cannot start {command[0]}: {e.strerror}", file=sys.stderr)
            _write(options["--exit-file"], {"returncode": 127, "pid": None,
                                            "signals": received, "restarts": restarts,
                                            "error": f"{e.strerror}: {command[0]}"})
            return 127
        if notified is not None:
            notified.running(child)
        if received:  # a signal came before the child existed: pass it on now
            child.send_signal(getattr(signal, received[-1]))
        if "--ready-file" in options and len(starts) == 1:
            _write(options["--ready-file"], {"pid": os.getpid(), "child": child.pid})
        returncode = child.wait()
        # A watchdog's kill is a failure, however the service ended on its signal.
        failed = _restarts(policy, returncode, clean) or (
            policy != "no" and notified is not None and notified.fired())
        if received or not failed:
            if not received and returncode not in clean:  # it crashed, and stays down (a
                _refuse(listen, options.get("--record"))  # clean end may be a drain's)
            break
        recent = [t for t in starts if time.monotonic() - t < interval]
        if len(recent) >= burst:  # the start limit: a crash loop is left down, and said
            _refuse(listen, options.get("--record"))
            _write(options["--exit-file"], {"returncode": returncode, "pid": child.pid,
                                            "signals": received, "restarts": restarts,
                                            "gave_up": True, **watchdog_end()})
            return 1
        restarts += 1
        if "--restarts-file" in options:
            _append(options["--restarts-file"], {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "returncode": returncode, "restart": restarts,
                **watchdog_end()})
        until = time.monotonic() + delay
        while not received and time.monotonic() < until:
            time.sleep(min(0.05, max(0.0, until - time.monotonic())))
        if received:  # asked to stop while waiting to restart: a stop, not a crash
            _write(options["--exit-file"], {"returncode": None, "pid": child.pid,
                                            "signals": received, "restarts": restarts,
                                            "last_crash": returncode})
            return 0
    _write(options["--exit-file"], {"returncode": returncode, "pid": child.pid,
                                    "signals": received, "restarts": restarts,
                                    **watchdog_end()})
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main())
