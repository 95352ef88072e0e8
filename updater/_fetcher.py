"""python-tuf's FetcherInterface over one httpx.Client: one connection pool, reused.

Bodies are read with `iter_raw()` and no re-chunking (nothing is decoded: the client asks
for identity encoding), so each socket read reaches the caller without an extra copy.
"""

from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

import httpx
import tuf
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface


def user_agent() -> str:
    try:
        own = version("greenlight")
    except PackageNotFoundError:
        own = "dev"
    return f"greenlight/{own} python-tuf/{tuf.__version__}"


class HttpxFetcher(FetcherInterface):
    def __init__(self, timeout: float = 30.0, client: httpx.Client | None = None) -> None:
        self.requests = 0
        self._client = client or httpx.Client(
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
        try:
            response = self._client.send(self._client.build_request("GET", url), stream=True)
        except httpx.TimeoutException as e:
            raise exceptions.SlowRetrievalError(f"{url}: timed out") from e
        except httpx.HTTPError as e:
            raise exceptions.DownloadError(f"{url}: {e}") from e
        self.requests += 1
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
        return self._chunks(response)

    @staticmethod
    def _chunks(response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_raw()
        except httpx.TimeoutException as e:
            raise exceptions.SlowRetrievalError(f"{response.url}: timed out") from e
        except httpx.HTTPError as e:
            raise exceptions.DownloadError(f"{response.url}: {e}") from e
        finally:
            response.close()
