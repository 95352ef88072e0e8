"""python-tuf's FetcherInterface over one httpx.Client: one connection pool, reused.

Bodies are read with `iter_raw()` and no re-chunking (nothing is decoded: the client asks
for identity encoding), so each socket read reaches the caller without an extra copy.

Every request has an overall deadline, not only a per-read timeout, so that a mirror that
trickles one byte at a time cannot hold the root's lock: metadata gets `timeout` seconds in
all; an artifact gets `timeout` plus its remaining size divided by `min_rate` (bytes/s).
Past the deadline the download ends with python-tuf's SlowRetrievalError (exit 5).

Redirects are followed only within the origins the repository was configured with (its URL
and its metadata/targets URLs), at most 5 of them, and never from https to http.
"""

import re
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx
import tuf
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

from greenlight.channels import VERSION

__all__ = ["DEFAULT_MIN_RATE", "MAX_REDIRECTS", "HttpxFetcher", "LocalRegions", "RangedFetcher",
           "user_agent"]


@runtime_checkable
class RangedFetcher(Protocol):
    """A fetcher that can resume: it streams a URL from a byte offset."""

    def open_range(self, url: str, offset: int, length: int | None = None
                   ) -> tuple[int, Iterator[bytes]]:
        """(where the body starts, its chunks); a source that cannot seek answers from 0."""
        ...


@runtime_checkable
class LocalRegions(Protocol):
    """A fetcher whose targets already sit in a local file (an offline bundle's members), to
    be read in place rather than copied."""

    def region(self, url: str) -> tuple[Path, int, int]:
        """(file, offset, length) of the target a URL names."""
        ...

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(?:\d+|\*)$")
DEFAULT_MIN_RATE = 64 * 1024
MAX_REDIRECTS = 5


def user_agent() -> str:
    return f"greenlight/{VERSION} python-tuf/{tuf.__version__}"


# TCP_NODELAY, as urllib3 does: small requests and answers are not held back by Nagle.
_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

# httpcore reads a socket 64 KiB at a time and passes every read through h11: on loopback
# that per-read Python work, not the network, bounds an artifact's download. A read of up to
# 1 MiB takes what the kernel has in one call (measured with bench/download_verify.py:
# 452-527 -> 685-690 MB/s, 200 MiB). Memory stays bounded: one read in flight.
_READ_SIZE = 1024 * 1024


def _larger_reads() -> None:
    from httpcore._sync.http11 import HTTP11Connection

    HTTP11Connection.READ_NUM_BYTES = max(HTTP11Connection.READ_NUM_BYTES, _READ_SIZE)


@contextmanager
def _mapped(url: object) -> Iterator[None]:
    """httpx's errors as python-tuf's, which `trust.explain` turns into one line each: the
    one place where httpx exceptions are mapped."""
    try:
        yield
    except httpx.TimeoutException as e:
        raise exceptions.SlowRetrievalError(f"{url}: timed out") from e
    except httpx.HTTPError as e:
        raise exceptions.DownloadError(f"{url}: {e}") from e


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


class _LazyTLSTransport(httpx.BaseTransport):
    """Loads the CA bundle on the first https request: 16 ms a process that a repository
    on plain http (a LAN mirror, loopback) never needs."""

    def __init__(self) -> None:
        self._inner: httpx.HTTPTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            self._inner = httpx.HTTPTransport(socket_options=_NODELAY)
        return self._inner.handle_request(request)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


class HttpxFetcher(FetcherInterface):
    def __init__(self, timeout: float = 30.0, client: httpx.Client | None = None,
                 min_rate: int = DEFAULT_MIN_RATE, origins: Iterable[str] = ()) -> None:
        """`origins`: URLs whose scheme, host and port redirects may lead to."""
        self.timeout = timeout
        self.min_rate = min_rate
        self._origins = {_origin(httpx.URL(u)) for u in origins}
        _larger_reads()
        self._client = client or httpx.Client(
            # Plain http needs no CA bundle; https requests are routed to the lazy transport,
            # which verifies certificates as usual.
            transport=httpx.HTTPTransport(socket_options=_NODELAY, verify=False),
            mounts={"https://": _LazyTLSTransport()},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": user_agent(), "Accept-Encoding": "identity"},
            follow_redirects=False,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "HttpxFetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self.open_range(url, 0)[1]

    def open_range(self, url: str, offset: int, length: int | None = None
                   ) -> tuple[int, Iterator[bytes]]:
        """Stream `url` from byte `offset`: (where the body starts, its chunks). A server that
        ignores Range answers 200 from byte 0, and the caller starts over. With the target's
        `length` the deadline allows for its size at `min_rate`; without, it is `timeout`.

        Raises:
            DownloadHTTPError: the server answered 400 or more.
            DownloadError: the connection failed, or the deadline passed (ngclient's errors,
                mapped to one line).
        """
        budget = self.timeout
        if length is not None:
            budget += max(0, length - offset) / self.min_rate
        deadline = time.monotonic() + budget
        headers = {"Range": f"bytes={offset}-"} if offset else None
        response = self._follow(url, headers, deadline)
        if response.status_code >= 400:
            # Read the (small) error body so the connection goes back to the pool: a missing
            # next root is the usual answer to every check.
            try:
                with _mapped(url):
                    response.read()
            finally:
                response.close()
            raise exceptions.DownloadHTTPError(
                f"{url}: HTTP {response.status_code}", response.status_code
            )
        start = 0
        if response.status_code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            start = int(match.group(1)) if match else 0
        return start, self._chunks(response, deadline, budget)

    def _follow(self, url: str, headers: dict[str, str] | None, deadline: float
                ) -> httpx.Response:
        """Send the request; follow same-origin redirects, refuse the others."""
        current = httpx.URL(url)
        allowed = self._origins | {_origin(current)}
        for _ in range(MAX_REDIRECTS + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise exceptions.SlowRetrievalError(f"{url}: no answer within the deadline")
            request = self._client.build_request(
                "GET", current, headers=headers,
                timeout=httpx.Timeout(min(self.timeout, left), connect=min(self.timeout, left,
                                                                           10.0)))
            with _mapped(current):
                response = self._client.send(request, stream=True)
            if not response.is_redirect:
                return response
            location = current.join(response.headers.get("Location", ""))
            response.close()
            if location.scheme == "http" and current.scheme == "https":
                raise exceptions.DownloadError(f"{url}: redirect from https to http refused")
            if _origin(location) not in allowed:
                raise exceptions.DownloadError(
                    f"{url}: redirect to another origin refused ({location.scheme}://"
                    f"{location.host}); configure it as the repository's URL")
            current = location
        raise exceptions.DownloadError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _chunks(self, response: httpx.Response, deadline: float, budget: float
                ) -> Iterator[bytes]:
        try:
            with _mapped(response.url):
                for chunk in response.iter_raw():
                    if time.monotonic() > deadline:
                        raise exceptions.SlowRetrievalError(
                            f"{response.url}: too slow: not done within {budget:.0f}s")
                    yield chunk
        finally:
            response.close()
