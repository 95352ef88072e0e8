"""A client that keeps calling the demo core's UI endpoint, to see what an upgrade costs the UI.

One request after another, each on a new connection, with the UI's token: `/api/v1/session`,
the call the UI makes. Each outcome is kept with its time: ok (HTTP 200), refused (nothing
listened: the connection was refused), or failed (any other error, or another status).
Bounded in count and in time, so a stuck product ends the run instead of hanging it.
"""

import errno
import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Outcome:
    at: float
    seconds: float
    result: str  # "ok", "refused" or "failed"
    detail: str = ""


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    def between(self, start: float, end: float) -> "Tally":
        return Tally([o for o in self.outcomes if start <= o.at <= end])

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def errors(self) -> list[str]:
        return [f"{o.result}: {o.detail}" for o in self.outcomes if o.result != "ok"]

    def percentile(self, p: float) -> float:
        """The p-th percentile of the requests' latencies, in seconds (0 without requests)."""
        times = sorted(o.seconds for o in self.outcomes)
        if not times:
            return 0.0
        return times[min(len(times) - 1, int(round(p / 100 * (len(times) - 1))))]


def _refused(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, ConnectionRefusedError) or getattr(
                error, "errno", None) == errno.ECONNREFUSED:
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


class Hammer:
    """Calls the endpoint until stopped, at most `limit` times and for `seconds`."""

    def __init__(self, port: int, token: str, path: str = "/api/v1/session",
                 timeout: float = 15.0, limit: int = 200_000, seconds: float = 600.0) -> None:
        self.url = f"http://127.0.0.1:{port}{path}"
        self.headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
        self.timeout, self.limit, self.seconds = timeout, limit, seconds
        self.tally = Tally()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        end = time.monotonic() + self.seconds
        with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
            while not self._stop.is_set() and time.monotonic() < end:
                if self.tally.requests >= self.limit:
                    break
                start = time.monotonic()
                try:
                    r = client.get(self.url)
                    result, detail = ("ok", "") if r.status_code == 200 else (
                        "failed", f"HTTP {r.status_code}")
                except httpx.HTTPError as e:
                    result = "refused" if _refused(e) else "failed"
                    detail = f"{type(e).__name__}: {e}"
                self.tally.outcomes.append(Outcome(start, time.monotonic() - start, result,
                                                   detail))

    def __enter__(self) -> "Hammer":
        self._thread.start()
        while not self.tally.outcomes and self._thread.is_alive():
            time.sleep(0.01)  # until the first answer: the product is being called
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
