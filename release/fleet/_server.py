"""Starting the collector (`release collector`), and asking one for its rollouts (`release
rollout status`): the token files, the database, uvicorn on 127.0.0.1."""

import gc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from greenlight.release._errors import Conflict, NotFound, RemoteError, UsageError
from greenlight.release.fleet._api import CONNECTION, ENROL_RATE, make_app
from greenlight.release.fleet._conns import MAX_CONNECTIONS, PER_ADDRESS, Connections
from greenlight.release.fleet._feedback_store import FeedbackLimits
from greenlight.release.fleet._guard import Guard
from greenlight.release.fleet._lease import Lease
from greenlight.release.fleet._store import ENROLMENT_MODES, Store

__all__ = ["HEAD_MAX", "MAX_CONNECTIONS", "REQUEST_TIMEOUT", "admin_call", "fetch_census",
           "fetch_rollouts", "migrate_database", "serve_collector"]


PAGES_MAX = 1000
"""pages of `GET /v1/rollouts` followed at most (200,000 releases)"""


def fetch_rollouts(url: str, admin_token_file: Path) -> dict[str, Any]:
    """`GET /v1/rollouts` of a collector, for `release rollout status`: every page, one
    bounded answer at a time.

    Raises:
        RemoteError: unreachable, or an answer other than 200.
    """
    from urllib.parse import quote

    answer = admin_call(url, admin_token_file, "GET", "v1/rollouts")
    rows, cursor = answer["rollouts"], answer.get("next")
    seen: set[str] = set()
    while cursor:
        # a collector that names a page twice, or never stops, is answered with one line
        if not isinstance(cursor, str) or cursor in seen or len(seen) >= PAGES_MAX:
            raise RemoteError(f"the collector at {url} gave a page cursor twice or over "
                              f"{PAGES_MAX} pages: not following it further")
        seen.add(cursor)
        page = admin_call(url, admin_token_file, "GET", f"v1/rollouts?cursor={quote(cursor)}")
        if not isinstance(page.get("rollouts"), list):
            raise RemoteError(f"the collector at {url} answered a page without rollouts")
        rows += page["rollouts"]
        cursor = page.get("next")
    return {**answer, "rollouts": rows, "next": None}


def fetch_census(url: str, admin_token_file: Path,
                 channel: str | None = None) -> dict[str, dict[str, Any]]:
    """`GET /v1/census` of a collector (one channel's, or every channel's), checked:
    {channel: {"machines": N, "greenlight": {version: {kind: machines}}, "releases":
    {release: machines}, "cohorts": {cohort: machines}}} (releases and cohorts: one
    channel's only, {} from a collector that does not say them).

    Raises:
        RemoteError: unreachable, an answer other than 200, or not a census.
    """
    from urllib.parse import quote

    from greenlight.release.fleet._census import CENSUS_SCHEMA, checked_census

    path = "v1/census" + ("" if channel is None else f"?channel={quote(channel)}")
    answer = admin_call(url, admin_token_file, "GET", path)
    try:
        return checked_census(answer, channel)
    except ValueError as e:
        from greenlight.channels import printable

        raise RemoteError(f"the collector at {url} answered with no {CENSUS_SCHEMA} "
                          f"(a collector before Greenlight 0.3.0 has none): "
                          f"{printable(str(e), 120)}") from None


def admin_call(url: str, admin_token_file: Path, method: str, path: str,
               body: dict[str, Any] | None = None, content: bytes | None = None,
               timeout: float = 30) -> dict[str, Any]:
    """One call of a collector's admin API (with a JSON `body`, or raw `content` sent as
    JSON lines); its JSON answer.

    Raises:
        RemoteError: unreachable, or an answer other than 200 (its error, escaped).
    """
    import httpx

    from greenlight.channels import printable

    token = _read_token(admin_token_file, "--admin-token-file")
    target = url.rstrip("/") + "/" + path
    headers = {"Authorization": f"Bearer {token}"}
    if content is not None:
        headers["Content-Type"] = "application/x-ndjson"
    try:
        answer = httpx.request(method, target, json=body, content=content, timeout=timeout,
                               headers=headers)
    except httpx.HTTPError as e:
        raise RemoteError(f"cannot reach the collector at {target}: {e}") from None
    if answer.status_code != 200:
        try:
            said = str(answer.json().get("error", answer.text))
        except (ValueError, AttributeError):
            said = answer.text
        raise RemoteError(f"the collector at {target} answered {answer.status_code}: "
                          f"{printable(said, 200)}")
    data: dict[str, Any] = answer.json()
    return data


def _read_token(path: Path, what: str) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise NotFound(f"{what} {path}: cannot read: {e.strerror}") from None
    if len(token) < 16 or any(ch.isspace() for ch in token):
        raise UsageError(f"{what} {path}: must hold one token of at least 16 characters, "
                         "without spaces (e.g. python -c 'import secrets; "
                         "print(secrets.token_urlsafe(32))')")
    return token


REQUEST_TIMEOUT = 10.0
"""seconds a connection has to send a whole request (headers and body), from when it opens
or its previous answer was sent: half-sent requests (slowloris) are cut off"""


HEAD_MAX = 16 * 1024
"""bytes of a request's target and headers at most; beyond, the request is refused (400)"""


def _protocol(connections: Connections) -> type:
    """uvicorn's httptools protocol (llhttp: a C parser, twice the requests of h11 for the
    same CPU, measured in bench/collector_load.py), with REQUEST_TIMEOUT and HEAD_MAX:
    uvicorn bounds idle keep-alive connections, not a request that arrives a byte at a
    time, nor the size of its headers; and each connection in the table of `connections`
    (bounded in all and per address, see `_conns`)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class TooLarge(Exception):
        pass

    class Protocol(HttpToolsProtocol):
        _deadline: Any = None
        _received = False  # the whole request is in
        _in_body = False  # its headers are all in
        _head = 0  # bytes of its target and headers the parser handed over so far
        _fed = 0  # bytes fed to the parser while its head was not complete
        _member = False  # in the table of `connections`

        def cut(self) -> None:
            self.transport.close()

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._received, self._in_body, self._head, self._fed = False, False, 0, 0
            self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._late)

        def _late(self) -> None:
            if not self._received:  # still not all sent
                self.transport.close()

        def _count(self, n: int) -> None:
            self._head += n
            if self._head > HEAD_MAX:  # the parser's caller answers 400 and closes
                raise TooLarge

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            # the transport's own peer: a proxy's headers may rewrite the request's client
            if not connections.admit(transport.get_extra_info("peername"), self):
                transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
                transport.close()
                return
            self._member = True
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            # the app vouches for this connection itself, whatever the request's client
            self.scope[CONNECTION] = self  # type: ignore[literal-required]
            if self._member:
                connections.begin(self)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # The parser keeps a header's pieces until the header ends: what it holds of a
            # head not yet complete is counted here, whatever its headers' sizes.
            if not self._in_body and not self.transport.is_closing():
                self._fed += len(data)
                if self._fed > HEAD_MAX:
                    self.send_400_response("Request header fields too large.")

        def on_headers_complete(self) -> None:
            self._in_body = True
            super().on_headers_complete()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_message_complete(self) -> None:
            self._received = True
            if self._member and self.cycle is not None and not self.cycle.response_complete:
                connections.working(self)
            super().on_message_complete()

        def on_response_complete(self) -> None:
            queued = bool(self.pipeline)  # a pipelined request is answered next
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()
                if self._member and not queued:
                    connections.done(self)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            if self._member:
                connections.forget(self)
            super().connection_lost(exc)

    return Protocol


def migrate_database(db: str) -> tuple[str | None, str]:
    """Migrate the collector's database at `db` to this collector's schema: the revision it
    was at ("unversioned", or None when empty) and the one it is at now.

    Raises:
        UsageError: the collector's extra is missing.
        Conflict: the database's schema is newer than this collector knows.
        RemoteError: the database cannot be opened or migrated.
    """
    try:
        import alembic  # noqa: F401
        import sqlalchemy as sa
    except ModuleNotFoundError as e:
        raise UsageError(f"the collector needs its extra ({e.name} is missing): "
                         "pip install 'greenlight-updater[collector]'") from None
    from greenlight.release.fleet._schema import migrate

    try:
        engine = sa.create_engine(db, future=True)
        try:
            return migrate(engine)
        finally:
            engine.dispose()
    except sa.exc.SQLAlchemyError as e:  # a bad URL, an unreachable database: one line
        raise RemoteError(f"--db: cannot migrate the database: {type(e).__name__}: "
                          f"{_first_line(e)}") from None


def _first_line(error: BaseException) -> str:
    from greenlight.channels import printable

    said = str(error)
    return printable(said.splitlines()[0], 300) if said else ""


def _raise_open_files(need: int) -> None:
    """Let this process hold `need` files, within the hard limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def serve_collector(db: str, port: int, fleet_token_file: Path, admin_token_file: Path,
                    ready: Callable[[str], None] | None = None, repo: Path | None = None,
                    keys: Path | None = None, tick: float = 10.0,
                    log: Callable[[str], None] = lambda line: None, enrolment: str = "open",
                    enrol_rate: int = ENROL_RATE, retention: timedelta | None = None,
                    allowed_hosts: tuple[str, ...] = (),
                    max_connections: int = MAX_CONNECTIONS,
                    per_address: int = PER_ADDRESS,
                    feedback: FeedbackLimits | None = None) -> None:
    """Run the collector on 127.0.0.1:`port` until interrupted; with `repo`, guarding its
    planned rollouts; admitting machine keys by `enrolment`; pruning reports older than
    `retention`; holding at most `max_connections`, `per_address` from one address; taking
    user feedback within `feedback`'s caps and retention.

    Raises:
        UsageError: the collector's extra is missing, or an option out of its range.
        NotFound: no repository at `repo`, or a token file that cannot be read.
        RemoteError: the database cannot be opened.
        Conflict: the database's schema is one this collector does not serve (migrate it).
    """
    try:
        import httptools  # noqa: F401  (the extra, whole, before anything starts)
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as e:
        raise UsageError(f"the collector needs its extra ({e.name} is missing): "
                         "pip install 'greenlight-updater[collector]'") from None

    if repo is not None and not (repo / "metadata" / "root.json").is_file():
        raise NotFound(f"--repo {repo}: no repository here")
    if tick <= 0:
        raise UsageError(f"--tick {tick:g}: expected a number of seconds above 0")
    if enrolment not in ENROLMENT_MODES:
        raise UsageError(f"--enrolment {enrolment}: one of {', '.join(ENROLMENT_MODES)}")
    if enrol_rate < 1:
        raise UsageError(f"--enrol-rate {enrol_rate}: expected new keys a minute, at least 1")
    if retention is not None and retention < timedelta(days=1):
        raise UsageError("--retention: at least 1d (a rollout's rule counts its reports)")

    if max_connections < 64:
        raise UsageError(f"--max-connections {max_connections}: at least 64")
    if per_address < 0:
        raise UsageError(f"--max-connections-per-address {per_address}: a number of "
                         "connections, or 0 for no bound")
    limits = feedback if feedback is not None else FeedbackLimits()
    if limits.retention < timedelta(days=1):
        raise UsageError("--feedback-retention: at least 1d")
    if limits.daily < 1 or limits.rows < 100 or limits.newcomers < 0:
        raise UsageError("--feedback-rate: at least 1 a day; --feedback-max: at least 100; "
                         "--feedback-newcomers: 0 or more")

    fleet = _read_token(fleet_token_file, "--fleet-token-file")
    admin_token = _read_token(admin_token_file, "--admin-token-file")
    try:
        store = Store(db)
    except Conflict:  # a schema this collector does not serve: said as it is
        raise
    except Exception as e:  # a bad URL or an unreachable database: one line
        raise RemoteError(f"--db: cannot open the database: {type(e).__name__}: "
                          f"{_first_line(e)}") from None
    if store.schema_note:
        log(store.schema_note)
    # One of any number of collectors on this database: it judges, signs and prunes while
    # it holds the lease (`_lease`).
    lease = Lease(store.engine)
    guard = None if repo is None else Guard(repo, keys, store, log, lease)
    # The page and the admin's endpoints answer under these names only (DNS rebinding): the
    # loopback address itself, and what the operator's proxy serves it as.
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}", *allowed_hosts}
    connections = Connections(max_connections, per_address)
    app = make_app(store, fleet, admin_token, guard=guard, tick=tick, log=log,
                   enrolment=enrolment, enrol_rate=enrol_rate, retention=retention,
                   allowed_hosts=hosts, connections=connections, feedback=limits,
                   lease=lease)
    _raise_open_files(max_connections + 256)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, http=_protocol(connections),
                            # headers bounded, idle connections closed, requests timed and
                            # connections bounded, in all and per address, by the table
                            # (see the threat model)
                            timeout_keep_alive=5)
    server = uvicorn.Server(config)
    # What was loaded to start is never garbage: kept out of the collections that run while
    # reports arrive (their pauses were the collector's p99 under an open load).
    gc.collect()
    gc.freeze()
    if ready is not None:
        ready(f"http://127.0.0.1:{port}/")
    server.run()
