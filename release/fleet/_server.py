"""Starting the collector (`release collector`), and asking one for its rollouts (`release
rollout status`): the token files, the database, uvicorn on 127.0.0.1."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from greenlight.release._errors import NotFound, RemoteError, UsageError
from greenlight.release.fleet._api import make_app
from greenlight.release.fleet._guard import Guard
from greenlight.release.fleet._store import Store

__all__ = ["fetch_rollouts", "serve_collector"]


def fetch_rollouts(url: str, admin_token_file: Path) -> dict[str, Any]:
    """`GET /v1/rollouts` of a collector, for `release rollout status`."""
    import httpx

    token = _read_token(admin_token_file, "--admin-token-file")
    target = url.rstrip("/") + "/v1/rollouts"
    try:
        answer = httpx.get(target, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    except httpx.HTTPError as e:
        raise RemoteError(f"cannot reach the collector at {target}: {e}") from None
    if answer.status_code != 200:
        raise RemoteError(f"the collector at {target} answered {answer.status_code}: "
                           f"{answer.text[:200]}")
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


def serve_collector(db: str, port: int, fleet_token_file: Path, admin_token_file: Path,
                    ready: Callable[[str], None] | None = None, repo: Path | None = None,
                    keys: Path | None = None, tick: float = 10.0,
                    log: Callable[[str], None] = lambda line: None) -> None:
    """Run the collector on 127.0.0.1:`port` until interrupted; with `repo`, guarding its
    planned rollouts."""
    try:
        import prometheus_client  # noqa: F401  (the extra, whole, before anything starts)
        import starlette  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as e:
        raise UsageError(f"the collector needs its extra ({e.name} is missing): "
                         "pip install 'greenlight-updater[collector]'") from None

    if repo is not None and not (repo / "metadata" / "root.json").is_file():
        raise NotFound(f"--repo {repo}: no repository here")
    if tick <= 0:
        raise UsageError(f"--tick {tick:g}: expected a number of seconds above 0")

    fleet = _read_token(fleet_token_file, "--fleet-token-file")
    admin_token = _read_token(admin_token_file, "--admin-token-file")
    try:
        store = Store(db)
    except Exception as e:  # a bad URL or an unreachable database: one line
        raise RemoteError(f"--db: cannot open the database: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
    guard = None if repo is None else Guard(repo, keys, store, log)
    config = uvicorn.Config(make_app(store, fleet, admin_token, guard=guard, tick=tick, log=log),
                            host="127.0.0.1", port=port, log_level="warning", access_log=False,
                            # headers bounded, idle connections closed (see the threat model)
                            h11_max_incomplete_event_size=16 * 1024, timeout_keep_alive=5)
    server = uvicorn.Server(config)
    if ready is not None:
        ready(f"http://127.0.0.1:{port}/")
    server.run()
