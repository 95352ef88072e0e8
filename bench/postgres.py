"""A throwaway PostgreSQL from Debian's packages, in a temporary folder, on 127.0.0.1: for the
fleet tests and the collector's load benchmark.

    with temporary_postgres(port) as url:  # postgresql+psycopg://fleet@127.0.0.1:PORT/postgres
        ...

Raises `Unavailable` (with the reason) when PostgreSQL is not installed or cannot be set up
here; `tests/ensure_packages.sh` installs it as root.
"""

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Unavailable", "temporary_postgres"]


class Unavailable(RuntimeError):
    pass


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextmanager
def temporary_postgres(port: int) -> Iterator[str]:
    bindir = _bindir()
    if bindir is None:
        raise Unavailable("PostgreSQL is not installed (tests/ensure_packages.sh installs it "
                          "as root)")
    base = Path(tempfile.mkdtemp(prefix="greenlight-pg-"))  # reachable by another user
    try:
        base.chmod(0o755)
        data = base / "pg"
        data.mkdir()
        as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run it as the packages' postgres user
            if shutil.which("runuser") is None:
                raise Unavailable("running as root without runuser: cannot start PostgreSQL")
            shutil.chown(data, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        done = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U",
                               "fleet", "--auth=trust", "-E", "UTF8"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise Unavailable(f"initdb failed: {done.stderr.strip().splitlines()[-1:]}")
        start = subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w",
             "-o", f"-h 127.0.0.1 -p {port} -k {data}", "start"],
            capture_output=True, text=True)
        if start.returncode != 0:
            log = (data / "log").read_text()[-500:] if (data / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {log}")
        try:
            yield f"postgresql+psycopg://fleet@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                            "stop"], capture_output=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
