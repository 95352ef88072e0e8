"""Demo core service: the local API that the demo UI talks to.

One port on 127.0.0.1 serves HTTP and a WebSocket:
  GET /api/ping            {"ok": true}                  (no credentials)
  GET /api/version         {"version": "<build version>"}
  GET /api/v1/session      the UI's call; needs "Authorization: Bearer <token>"
  GET /api/v1/work?ms=N    a slow authenticated request (for in-flight work)
  GET /api/v1/events       the UI's event channel: a long poll, held open (in flight) until
                           there is news (a drain) or 30 s pass; the UI always has one open
  GET /api/drain           stop taking work and wait (bounded) for in-flight work to end
  WS  /ws                  echo, after an {"auth": "<token>"} first message
and, with --dns-port, a DNS responder for the product's name (A record, 127.0.0.1).

Started with systemd's socket-activation protocol (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES,
as Greenlight's launcher and systemd pass them), it serves on the sockets it is given, "api"
(stream) and "dns" (datagram), instead of binding its own: the sockets stay open across its
restarts and upgrades, so a client's connection waits instead of being refused. Given a
NOTIFY_SOCKET, it says READY=1 there once it serves (systemd's readiness protocol), STOPPING=1
when it is stopped, and WATCHDOG=1 twice per WATCHDOG_USEC when it is given one; on its drain
call it also stops accepting: a successor on the same sockets (Greenlight's handover) takes
every new connection while it finishes what it accepted.

Faults are baked into a build's build.json, never read from the environment:
  refuse-ui-token          the session call answers 403 "denying api access"; ping still works
  refuse-ui-token-on-legacy  the same, only on machines whose data folder (the token file's)
                           holds a `legacy-hardware` file: a fault confined to one kind of machine
  crash-on-stop-in-flight  SIGTERM while a request is in flight kills the process (exit 70),
                           like closing IPC pipes under a blocked reader
  notify-errors-fatal      a notify that cannot be sent ends the process (exit 71), as some
                           sd_notify callers choose: a product's choice more than a fault
  crash-on-first-stop      the first SIGTERM this version gets on a machine kills it (exit
                           70), whatever is in flight; it leaves `core-<version>-crashed-on-stop`
                           in the data folder, and later stops are clean: an old release that
                           dies when an upgrade stops it, and stops cleanly when it is retried
  state-v2                 not a fault: the core keeps its state file (`core-state` in the
                           data folder) in format 2; other builds write format 1
  migration-assumes-state-v2  the core migrates `core-state` assuming format 2, which only
                           the previous release wrote: on a machine whose state is format 1
                           (an older release still in the field) it exits 4 at start; a new
                           machine (no state yet) and one coming from format 2 are fine
  ui-default-core-port     (the UI's) it calls the core on 8080, the manifest's default,
                           whatever port the machine gave the core: fine on a machine that
                           keeps the default, refused on one that switches it
  crash-after-serving      once its data folder holds `crash-now` (a time bomb a test sets off
                           when it wants: "ten seconds after the commit"), the core exits
                           (status 3) and leaves `core-<version>-crashed` there; once that is
                           there, it exits at each start: a crash loop after a good upgrade
"""

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dns.message
import dns.rrset
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

BUILD = json.loads((Path(__file__).with_name("build.json")).read_text())
VERSION: str = BUILD["version"]
FAULTS: set[str] = set(BUILD.get("faults", []))


class Core:
    def __init__(self, token: str, drain_seconds: float) -> None:
        self.token = token
        self.drain_seconds = drain_seconds
        self.in_flight = 0
        self.accepting = True
        self.lock = threading.Condition()
        self.on_drain: Callable[[], None] | None = None

    def authorized(self, headers: Headers) -> bool:
        return headers.get("Authorization", "") == f"Bearer {self.token}"

    def reply(self, conn: ServerConnection, status: int, body: dict) -> Response:
        response = conn.respond(status, json.dumps(body) + "\n")
        response.headers["Content-Type"] = "application/json"
        response.headers["X-Core-Version"] = VERSION
        return response

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/ws":
            return None  # go on with the WebSocket handshake
        if url.path == "/api/ping":
            return self.reply(conn, 200, {"ok": True})
        if url.path == "/api/version":
            return self.reply(conn, 200, {"version": VERSION})
        if url.path == "/api/drain":
            return self.reply(conn, 200, {"drained": self.drain()})
        if url.path.startswith("/api/v1/"):
            if not self.authorized(request.headers):
                return self.reply(conn, 401, {"error": "missing or wrong token"})
            if "refuse-ui-token" in FAULTS:
                return self.reply(conn, 403, {"error": "denying api access"})
            if url.path == "/api/v1/session":
                return self.reply(conn, 200, {"user": "ui", "version": VERSION})
            if url.path == "/api/v1/work":
                ms = int(parse_qs(url.query).get("ms", ["50"])[0])
                return self.work(conn, ms)
            if url.path == "/api/v1/events":
                return self.events(conn)
        return self.reply(conn, 404, {"error": f"no route {url.path}"})

    def work(self, conn: ServerConnection, ms: int) -> Response:
        with self.lock:
            if not self.accepting:
                return self.reply(conn, 503, {"error": "draining"})
            self.in_flight += 1
        try:
            time.sleep(ms / 1000)
            return self.reply(conn, 200, {"done": ms})
        finally:
            with self.lock:
                self.in_flight -= 1
                self.lock.notify_all()

    def events(self, conn: ServerConnection) -> Response:
        """A reader blocked on the core, as the UI's IPC reader was: in flight until a drain
        tells it the core is going (or the poll ends), so only a drained stop is clean."""
        with self.lock:
            if not self.accepting:
                return self.reply(conn, 503, {"error": "draining"})
            self.in_flight += 1
            try:
                going = self.lock.wait_for(lambda: not self.accepting, timeout=30)
            finally:
                self.in_flight -= 1
                self.lock.notify_all()
        return self.reply(conn, 200, {"events": ["draining"] if going else []})

    def drain(self) -> bool:
        """Stop taking work; wait up to drain_seconds for what is in flight."""
        if self.on_drain is not None:
            self.on_drain, stop_accepting = None, self.on_drain
            stop_accepting()
        with self.lock:
            self.accepting = False
            self.lock.notify_all()  # the event channel's readers are told
            return self.lock.wait_for(lambda: self.in_flight == 0, timeout=self.drain_seconds)

    def websocket(self, conn: ServerConnection) -> None:
        try:
            first = json.loads(conn.recv(timeout=10))
            if first.get("auth") != self.token or "refuse-ui-token" in FAULTS:
                conn.close(4003, "denying api access")
                return
            conn.send(json.dumps({"ok": True, "version": VERSION}))
            for message in conn:
                conn.send(message)
        except (ConnectionClosed, TimeoutError, ValueError):
            pass


def inherited() -> dict[str, socket.socket]:
    """The sockets passed by systemd's protocol, by name (none when not for this process)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return {}
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for this process's own children
    return {names[i] if i < len(names) and names[i] else f"fd{3 + i}":
            socket.socket(fileno=3 + i) for i in range(count)}


NOTIFY_TARGET = os.environ.pop("NOTIFY_SOCKET", "")  # not for this process's own children


def notify(message: str) -> None:
    """One message to NOTIFY_SOCKET, as sd_notify sends it (a leading @ is the abstract
    namespace); nothing without one."""
    if not NOTIFY_TARGET:
        return
    target = NOTIFY_TARGET
    address = "\0" + target[1:] if target.startswith("@") else target
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:
        if "notify-errors-fatal" in FAULTS:
            print(f"core {VERSION}: cannot notify {target}: {e.strerror}", file=sys.stderr,
                  flush=True)
            os._exit(71)


def watchdog() -> None:
    """WATCHDOG=1 twice per WATCHDOG_USEC, when the service was given a watchdog (a thread)."""
    usec = int(os.environ.pop("WATCHDOG_USEC", "0") or 0)
    if usec <= 0 or os.environ.pop("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return
    while True:
        notify("WATCHDOG=1")
        time.sleep(usec / 2_000_000)


def serve_dns(port: int, name: str, sock: socket.socket | None = None) -> None:
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(data)
        except Exception:
            continue
        reply = dns.message.make_response(query)
        for question in query.question:
            if question.name.to_text().rstrip(".") == name and question.rdtype == 1:
                reply.answer.append(dns.rrset.from_text(question.name, 30, "IN", "A", "127.0.0.1"))
        sock.sendto(reply.to_wire(), peer)


def main() -> int:
    parser = argparse.ArgumentParser(description="Demo core service.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--dns-port", type=int)
    parser.add_argument("--dns-name", default="core.greenlight.test")
    parser.add_argument("--drain-seconds", type=float, default=5.0)
    args = parser.parse_args()

    if not args.token_file.exists():
        # First start: create the UI's credentials (the UI and the checks read this file).
        import secrets

        args.token_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(args.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16) + "\n")
    if ("refuse-ui-token-on-legacy" in FAULTS
            and (args.token_file.parent / "legacy-hardware").exists()):
        FAULTS.add("refuse-ui-token")
    crashed = args.token_file.parent / f"core-{VERSION}-crashed"
    if "crash-after-serving" in FAULTS and crashed.exists():
        print(f"core {VERSION}: cannot open its state (it crashed before)", file=sys.stderr,
              flush=True)
        return 3
    state = args.token_file.parent / "core-state"
    if "migration-assumes-state-v2" in FAULTS and state.exists() and \
            state.read_text().strip() != "2":
        print(f"core {VERSION}: migration failed: {state} is format "
              f"{state.read_text().strip()!r}, this release migrates from format 2 only",
              file=sys.stderr, flush=True)
        return 4
    state.write_text("2\n" if FAULTS & {"state-v2", "migration-assumes-state-v2"} else "1\n")
    core = Core(args.token_file.read_text().strip(), args.drain_seconds)
    given = inherited()
    if "api" in given:
        server = serve(core.websocket, sock=given["api"], process_request=core.process_request)
    else:
        server = serve(core.websocket, "127.0.0.1", args.port,
                       process_request=core.process_request)
    if args.dns_port or "dns" in given:
        threading.Thread(target=serve_dns, args=(args.dns_port, args.dns_name, given.get("dns")),
                         daemon=True).start()

    crashed_once = args.token_file.parent / f"core-{VERSION}-crashed-on-stop"

    def on_term(signum: int, frame: object) -> None:
        notify("STOPPING=1")
        if "crash-on-first-stop" in FAULTS and not crashed_once.exists():
            crashed_once.touch()
            print(f"core {VERSION}: crashed when stopped", file=sys.stderr, flush=True)
            os._exit(70)
        if core.in_flight and "crash-on-stop-in-flight" in FAULTS:
            print(f"core {VERSION}: stopped with {core.in_flight} request(s) in flight: "
                  "pipe closed under a blocked reader", file=sys.stderr, flush=True)
            os._exit(70)
        threading.Thread(target=lambda: (core.drain(), server.shutdown()), daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    if "api" in given:  # handed over: stop accepting when drained, the successor accepts
        core.on_drain = lambda: threading.Thread(target=server.shutdown, daemon=True).start()
    where = (f"held sockets {', '.join(sorted(given))}" if given
             else f"127.0.0.1:{args.port}")
    notify(f"READY=1\nSTATUS=core {VERSION} serving on {where}")
    if "crash-after-serving" in FAULTS:
        def crash() -> None:
            while not (args.token_file.parent / "crash-now").exists():
                time.sleep(0.1)
            crashed.touch()
            print(f"core {VERSION}: crashed while serving", file=sys.stderr, flush=True)
            os._exit(3)

        threading.Thread(target=crash, daemon=True).start()
    threading.Thread(target=watchdog, daemon=True).start()
    print(f"core {VERSION} listening on {where} faults={sorted(FAULTS)}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
