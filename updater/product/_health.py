"""Health checks: does the product work, as its UI would use it, not just 'is a port open'.

Each check is declared in greenlight.toml with a timeout, retries and an interval, and is
`required` (failure blocks or rolls back) or advisory. Every result carries evidence a person
can act on: status code, body excerpt, latency, the error, what was expected.
"""

import re
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from greenlight.channels import (
    CheckConfig,
    CommandCheck,
    Config,
    DnsCheck,
    HttpCheck,
    ProcessCheck,
    Record,
    TcpCheck,
    VersionCheck,
    WebSocketCheck,
    expand,
    now,
)
from greenlight.updater._errors import ConfigError
from greenlight.updater.product._environment import base_environment
from greenlight.updater.product._placeholders import expand_command
from greenlight.updater.product._redaction import REDACTED, SENSITIVE, redact
from greenlight.updater.store import RecordedCheck

if TYPE_CHECKING:
    from greenlight.updater.product._services import ServiceBackend

__all__ = ["REDACTED", "CheckResult", "HealthChecker", "all_checks", "expanded",
           "failed_required"]

_EXCERPT = 200


class CheckResult(Record):
    name: str
    type: str
    required: bool
    ok: bool
    summary: str
    attempts: int
    latency_ms: float
    evidence: dict[str, Any]
    at: datetime
    source: Literal["release", "machine"] | None = None

    def recorded(self) -> RecordedCheck:
        """This result as the history keeps it."""
        return RecordedCheck.model_validate(self.model_dump(mode="json"))


class _Failed(Exception):
    """Raised inside a probe to fail it with a summary and evidence."""

    def __init__(self, summary: str, **evidence: Any) -> None:
        super().__init__(summary)
        self.summary = summary
        self.evidence = evidence


def _token(root: Path, file: str | None) -> str | None:
    """The UI's token from `file`: one line of printable ASCII (a trailing newline is fine).

    Raises:
        ConfigError: unreadable, empty, several lines, or other characters; the message never
        holds the token.
    """
    if file is None:
        return None
    path = root / file
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"bearer_token_file {path}: cannot read: {e.strerror}") from None
    token = raw.removesuffix(b"\n").removesuffix(b"\r")
    if not token or any(b < 0x21 or b > 0x7E for b in token):
        raise ConfigError(
            f"bearer_token_file {path}: must hold one line of printable ASCII without spaces "
            f"({len(raw)} bytes found); rewrite it with the UI's token alone")
    return token.decode("ascii")


def _dig(document: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(document, dict) and part in document:
            document = document[part]
        else:
            raise KeyError(dotted)
    return document


class HealthChecker:
    """Runs checks against the product. With `crash_free` (the post-check of a new release),
    a service its supervisor had to restart fails its process check even though it runs
    again: a release that crashes while it is being checked is not healthy."""

    def __init__(self, root: Path, services: "ServiceBackend", values: dict[str, str],
                 crash_free: bool = False) -> None:
        self.root = root
        self.services = services
        self.values = values
        self.crash_free = crash_free
        self._secrets: list[str] = []  # tokens and header values sent: never in a result

    def _secret(self, value: str) -> str:
        if len(value) >= 4 and value not in self._secrets:
            self._secrets.append(value)
            self._secrets.sort(key=len, reverse=True)
        return value

    # --- probes: return evidence on success, raise _Failed on failure ---------------------
    def _process(self, c: ProcessCheck) -> dict[str, Any]:
        pid = self.services.pid(c.service)
        restarts = self.services.restarts(c.service)
        supervisor = {"restarts": restarts.count, "gave_up": restarts.gave_up,
                      "last_crash": restarts.last_returncode}
        if pid is None:
            summary = (restarts.describe(c.service) if restarts.gave_up
                       else f"service {c.service} is not running")
            raise _Failed(summary, last_exit=self.services.last_exit(c.service), **supervisor)
        if restarts.count and self.crash_free:
            raise _Failed(restarts.describe(c.service), pid=pid, **supervisor)
        return {"pid": pid, **supervisor} if restarts.count else {"pid": pid}

    def _tcp(self, c: TcpCheck) -> dict[str, Any]:
        if not str(c.port).isdigit():
            raise _Failed(f"port {c.port!r} is not a port number", port=str(c.port))
        try:
            socket.create_connection((c.host, int(c.port)), timeout=c.timeout).close()
        except OSError as e:
            raise _Failed(f"{c.host}:{c.port} refused: {e.strerror or e}", error=str(e)) from None
        return {"address": f"{c.host}:{c.port}"}

    def _http(self, c: HttpCheck | VersionCheck, expect: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = c.url
        headers = {k: self._secret(v) if SENSITIVE.search(k) else v
                   for k, v in getattr(c, "headers", {}).items()}
        token = _token(self.root, getattr(c, "bearer_token_file", None))
        if token is not None:
            headers["Authorization"] = f"Bearer {self._secret(token)}"
        try:
            r = httpx.get(url, headers=headers, timeout=c.timeout)
        except httpx.HTTPError as e:
            raise _Failed(f"GET {url}: {type(e).__name__}: {e}", url=url, error=str(e)) from None
        text = redact(r.text, self._secrets)  # before any excerpt is cut from it
        evidence: dict[str, Any] = {"url": url, "status": r.status_code,
                                    "body": text[:_EXCERPT]}
        wanted = getattr(c, "status", 200)
        if r.status_code != wanted:
            raise _Failed(f"GET {url} answered HTTP {r.status_code} (expected {wanted}): "
                          f"{text.strip()[:80]}", **evidence)
        contains = getattr(c, "body_contains", None)
        if contains is not None and contains not in r.text:
            raise _Failed(f"GET {url}: body lacks {contains!r}: {text.strip()[:80]}",
                          **evidence)
        if isinstance(c, VersionCheck) and c.format == "text":
            version = self.values["version"]
            if not re.search(rf"(?<![\w.+-])v?{re.escape(version)}(?![\w+-]|\.\w)", r.text):
                raise _Failed(f"GET {url}: the version {version} is not in the answer: "
                              f"{text.strip()[:80]}", **evidence, expected=version)
            return evidence
        if expect:
            try:
                document = r.json()
            except ValueError:
                raise _Failed(f"GET {url}: body is not JSON", **evidence) from None
            for field, value in expect.items():
                try:
                    got = _dig(document, field)
                except KeyError:
                    raise _Failed(f"GET {url}: no field {field!r} in the answer",
                                  **evidence) from None
                if got != value:
                    raise _Failed(f"GET {url}: {field} is {got!r}, expected {value!r}",
                                  **evidence, field=field, got=got, expected=value)
        return evidence

    def _websocket(self, c: WebSocketCheck) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        url = c.url
        values = dict(self.values)
        token = _token(self.root, c.bearer_token_file)
        if token is not None:
            values["token"] = self._secret(token)
        replies: list[str] = []
        try:
            with connect(url, open_timeout=c.timeout, close_timeout=1) as ws:
                for i, message in enumerate(c.send):
                    ws.send(expand(message, values))
                    reply = ws.recv(timeout=c.timeout)
                    reply = reply if isinstance(reply, str) else reply.decode(errors="replace")
                    reply = redact(reply, self._secrets)  # before it is cut short
                    replies.append(reply[:_EXCERPT])
                    if i < len(c.expect) and c.expect[i] not in reply:
                        raise _Failed(f"{url}: reply {i + 1} lacks {c.expect[i]!r}",
                                      url=url, replies=replies)
        except ConnectionClosed as e:
            rcvd = e.rcvd
            reason = f"closed by the core: {rcvd.code} {rcvd.reason}" if rcvd else "closed"
            raise _Failed(f"{url}: {reason}", url=url, replies=replies,
                          close_code=rcvd.code if rcvd else None) from None
        except InvalidStatus as e:
            raise _Failed(f"{url}: handshake answered HTTP {e.response.status_code}",
                          url=url, status=e.response.status_code) from None
        except (OSError, TimeoutError, WebSocketException) as e:
            raise _Failed(f"{url}: {type(e).__name__}: {e}", url=url, error=str(e)) from None
        return {"url": url, "replies": replies}

    def _dns(self, c: DnsCheck) -> dict[str, Any]:
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode
        import dns.rdatatype

        host, _, port = c.resolver.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"check {c.name}: resolver {c.resolver!r}: expected HOST:PORT")
        query = dns.message.make_query(c.query, dns.rdatatype.from_text(c.rdtype))
        try:
            answer = dns.query.udp(query, host, port=int(port), timeout=c.timeout)
        except (dns.exception.DNSException, OSError) as e:
            raise _Failed(f"resolver {c.resolver}: {type(e).__name__}: {e}",
                          resolver=c.resolver, error=str(e)) from None
        found = [rr.to_text() for rrset in answer.answer for rr in rrset]
        evidence = {"resolver": c.resolver, "query": c.query, "answers": found,
                    "rcode": dns.rcode.to_text(answer.rcode())}
        if not found or (c.expect is not None and c.expect not in found):
            raise _Failed(f"resolver {c.resolver}: {c.query} {c.rdtype} answered "
                          f"{found or 'nothing'}"
                          + (f", expected {c.expect}" if c.expect else ""), **evidence)
        return evidence

    def _command(self, c: CommandCheck) -> dict[str, Any]:
        argv = expand_command(c.command, self.values)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=c.timeout,
                                  cwd=self.root, env=base_environment())
        except subprocess.TimeoutExpired:
            raise _Failed(f"{argv[0]} did not finish in {c.timeout}s", argv=argv) from None
        except OSError as e:
            raise _Failed(f"{argv[0]}: {e.strerror}", argv=argv) from None
        stdout, stderr = redact(done.stdout, self._secrets), redact(done.stderr, self._secrets)
        evidence = {"argv": argv, "returncode": done.returncode,
                    "stdout": stdout[-_EXCERPT:], "stderr": stderr[-_EXCERPT:]}
        if done.returncode != 0:
            last = (stderr.strip() or stdout.strip()).splitlines()
            program = c.command[1] if c.command[0] == "{python}" and len(c.command) > 1 else argv[0]
            raise _Failed(f"{Path(program).name} exited {done.returncode}: "
                          f"{last[-1] if last else 'no output'}", **evidence)
        return evidence

    def _probe(self, c: CheckConfig) -> dict[str, Any]:
        match c:
            case ProcessCheck():
                return self._process(c)
            case TcpCheck():
                return self._tcp(c)
            case HttpCheck():
                return self._http(c, dict(c.json_fields))
            case VersionCheck():
                return self._http(c, {c.field: self.values["version"]})
            case WebSocketCheck():
                return self._websocket(c)
            case DnsCheck():
                return self._dns(c)
            case CommandCheck():
                return self._command(c)
        raise AssertionError(c)

    # --- running --------------------------------------------------------------------------
    def run(self, c: CheckConfig, retries: int | None = None) -> CheckResult:
        c = expanded(c, self.values)
        attempts = 0
        budget = c.retries if retries is None else retries
        while True:
            attempts += 1
            started = time.perf_counter()
            try:
                evidence = self._probe(c)
                ok, summary = True, "ok"
            except _Failed as failure:
                ok, summary, evidence = False, failure.summary, failure.evidence
            latency = (time.perf_counter() - started) * 1000
            if ok or attempts > budget:
                break
            time.sleep(c.interval)
        return CheckResult(name=c.name, type=c.type, required=c.required, ok=ok,
                           summary=redact(summary, self._secrets), attempts=attempts,
                           latency_ms=round(latency, 2),
                           evidence=redact(evidence, self._secrets), at=now())

    def run_all(self, checks: list[CheckConfig]) -> list[CheckResult]:
        return [self.run(c) for c in checks]


_AS_IS = frozenset({"name", "type", "service"})


def expanded(c: CheckConfig, values: dict[str, str]) -> CheckConfig:
    """The check with the placeholders of every text field filled in, so that no field is
    forgotten; `{token}` in a WebSocket message is left for the probe, and a command's lone
    `{python}` for `expand_command`."""
    update: dict[str, Any] = {}
    for name, value in c:
        if name in _AS_IS:
            continue
        if isinstance(value, str):
            update[name] = expand(value, values)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            # A lone "{python}" is the interpreter's whole argv (see expand_command).
            update[name] = [v if v == "{python}" else expand(v, values) for v in value]
        elif isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            update[name] = {k: expand(v, values) for k, v in value.items()}
    return c.model_copy(update=update) if update else c


def failed_required(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.required and not r.ok]



def all_checks(config: Config) -> list[CheckConfig]:
    """The configured checks, plus 'service X is running' for every service."""
    implicit: list[CheckConfig] = [
        ProcessCheck(name=f"{s.name}-running", type="process", service=s.name)
        for s in config.service
        if not any(isinstance(c, ProcessCheck) and c.service == s.name for c in config.check)
    ]
    return [*implicit, *config.check]
