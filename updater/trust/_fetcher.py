"""python-tuf's FetcherInterface over one httpx.Client: one connection pool, reused.

Bodies are read with `iter_raw()` and no re-chunking (nothing is decoded: the client asks
for identity encoding), so each socket read reaches the caller without an extra copy.
"""

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import tuf
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

from greenlight.channels import VERSION

__all__ = ["HttpxFetcher", "user_agent"]

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(?:\d+|\*)$")


def user_agent() -> str:
    return f"greenlight/{VERSION} python-tuf/{tuf.__version__}"


# TCP_NODELAY, as urllib3 does: small requests and answers are not held back by Nagle.
_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


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
    def __init__(self, timeout: float = 30.0, client: httpx.Client | None = None) -> None:
        self.timeout = timeout
        self._client = client or httpx.Client(
            # Plain http needs no CA bundle; https requests are routed to the lazy transport,
            # which verifies certificates as usual.
            transport=httpx.HTTPTransport(socket_options=_NODELAY, verify=False),
            mounts={"https://": _LazyTLSTransport()},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": user_agent(), "Accept-Encoding": "identity"},
            follow_redirects=True,
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

    def open_range(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        """Stream `url` from byte `offset`: (where the body starts, its chunks). A server that
        ignores Range answers 200 from byte 0, and the caller starts over."""
        headers = {"Range": f"bytes={offset}-"} if offset else None
        with _mapped(url):
            response = self._client.send(
                self._client.build_request("GET", url, headers=headers), stream=True)
        if response.status_code >= 400:
            # Read the (small) error body so the connection goes back to the pool: a missing
            # next root is the usual answer to every check.
            try:
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
        return start, self._chunks(response)

    @staticmethod
    def _chunks(response: httpx.Response) -> Iterator[bytes]:
        try:
            with _mapped(response.url):
                yield from response.iter_raw()
        finally:
            response.close()
