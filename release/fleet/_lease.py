"""One judge and signer among the collectors sharing a database: a lease, and the fence every
signed rollout state passes.

The lease is a row (`leases`, name "judge"): its holder, an epoch raised at every change of
holder, and when it expires, by the database's clock (PostgreSQL's; SQLite is one machine's
file, read by this one's). A collector takes it when it has expired, and renews it every
`RENEW` seconds for `TTL` more: a leader killed or cut off is replaced within `TTL + RENEW`
seconds, and one that was paused finds, when it wakes, that it no longer leads.

The fence: a rollout state is signed inside one database transaction that first locks the
lease row (an UPDATE, on both databases), checks that this collector still holds the lease
under the epoch it took (for a person's halt or resume, signed by whichever collector took
the request, only the order is checked), and records the role's new version in `signed`,
whose key is (role, version): a version is signed once, each above the last, or not at all.
The files are written before that transaction commits, under the repository's lock, and put
back if it fails: a leader that lost the lease while it judged writes nothing."""

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from greenlight.release._errors import Conflict

__all__ = ["RENEW", "TTL", "Lease", "fault"]

TTL = 3.0
"""seconds a lease lasts past its last renewal"""
RENEW = 1.0
"""seconds between a leader's renewals, and between a follower's attempts"""
_NAME = "judge"


def fault(point: str) -> None:
    """Crash tests kill a collector at an exact point, for real (`GREENLIGHT_KILL_AT`, as
    the updater's transaction does): "sign:halt" just before a halt would be signed."""
    if os.environ.get("GREENLIGHT_KILL_AT", "") == point:
        os.kill(os.getpid(), signal.SIGKILL)


class Lease:
    """This collector's claim on the judge's lease, in the store's database."""

    def __init__(self, engine: Any, ttl: float = TTL) -> None:
        import sqlalchemy as sa

        self.sa, self.engine, self.ttl = sa, engine, ttl
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{os.urandom(3).hex()}"
        self.epoch: int | None = None
        self._until = 0.0  # time.monotonic() past which this process no longer counts on it
        self._lock = threading.Lock()
        meta = sa.MetaData()
        self.leases = sa.Table("leases", meta, sa.Column("name", sa.String(32)),
                               sa.Column("holder", sa.String(80)),
                               sa.Column("epoch", sa.Integer), sa.Column("expires", sa.Float))
        self.signed = sa.Table(
            "signed", meta, sa.Column("role", sa.String(80)), sa.Column("version", sa.Integer),
            sa.Column("epoch", sa.Integer), sa.Column("holder", sa.String(80)),
            sa.Column("what", sa.String(200)), sa.Column("at", sa.Float))

    @property
    def held(self) -> bool:
        """Whether this collector leads, as far as it knows (the fence checks again)."""
        return self.epoch is not None and time.monotonic() < self._until

    def _now(self, c: Any) -> float:
        """The database's clock, in seconds since 1970."""
        if self.engine.dialect.name == "postgresql":
            return float(c.execute(self.sa.text(
                "SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
        return time.time()

    def hold(self) -> bool:
        """Renew the lease if this collector holds it, else take it if it has expired.
        Whether this collector leads now."""
        sa, t = self.sa, self.leases
        with self._lock:
            began = time.monotonic()
            with self.engine.begin() as c:
                now = self._now(c)
                if self.epoch is not None:
                    done = c.execute(t.update().where(
                        t.c.name == _NAME, t.c.holder == self.holder, t.c.epoch == self.epoch,
                        t.c.expires > now).values(expires=now + self.ttl))
                    if done.rowcount != 1:
                        self.epoch = None
                if self.epoch is None:
                    done = c.execute(t.update().where(
                        t.c.name == _NAME, t.c.expires <= now).values(
                        holder=self.holder, epoch=t.c.epoch + 1, expires=now + self.ttl))
                    if done.rowcount == 1:
                        self.epoch = int(c.execute(sa.select(t.c.epoch).where(
                            t.c.name == _NAME)).scalar_one())
            if self.epoch is not None:
                self._until = began + self.ttl - RENEW / 2
            return self.epoch is not None

    def leader(self) -> dict[str, Any]:
        """Who leads (as the database says), under which epoch, and whether it is this one."""
        sa, t = self.sa, self.leases
        with self.engine.connect() as c:
            now = self._now(c)
            row = c.execute(sa.select(t.c.holder, t.c.epoch, t.c.expires).where(
                t.c.name == _NAME)).first()
        if row is None or row.holder is None or row.expires <= now:
            return {"holder": None, "epoch": None if row is None else row.epoch,
                    "this": False}
        return {"holder": row.holder, "epoch": row.epoch, "this": row.holder == self.holder}

    def give_up(self) -> None:
        """Let the lease go at once (a clean stop): another collector takes it at its next
        attempt, not after `TTL`."""
        sa, t = self.sa, self.leases
        with self._lock:
            if self.epoch is None:
                return
            with contextlib.suppress(sa.exc.SQLAlchemyError), self.engine.begin() as c:
                c.execute(t.update().where(t.c.name == _NAME, t.c.holder == self.holder,
                                           t.c.epoch == self.epoch).values(expires=0.0))
            self.epoch = None

    @contextlib.contextmanager
    def signing(self, role: str, version: int, what: str, by_lease: bool = True
                ) -> Iterator[None]:
        """Fence the signing of `role` at `version`: the body writes the files; it runs in
        the transaction that checks this collector's lease (with `by_lease`) and records the
        version, and its files stay only if that transaction commits.

        Raises:
            Conflict: this collector no longer holds the lease, or `version` of `role` was
                signed already or is not above the last one signed.
        """
        sa, t, s = self.sa, self.leases, self.signed
        epoch = self.epoch
        with self.engine.begin() as c:
            # the lease row locked for the transaction: one signing at a time, and no change
            # of leader while one is under way
            c.execute(t.update().where(t.c.name == _NAME).values(epoch=t.c.epoch))
            now = self._now(c)
            if by_lease:
                row = c.execute(sa.select(t.c.holder, t.c.epoch, t.c.expires).where(
                    t.c.name == _NAME)).first()
                if (epoch is None or row is None or row.holder != self.holder
                        or row.epoch != epoch or row.expires <= now):
                    self.epoch = None
                    raise Conflict(f"not signing {role} version {version}: this collector "
                                   "no longer holds the judge's lease")
            last = c.execute(sa.select(sa.func.max(s.c.version)).where(
                s.c.role == role)).scalar()
            if last is not None and version <= last:
                raise Conflict(f"not signing {role} version {version}: version {last} was "
                               "signed already")
            c.execute(s.insert().values(role=role, version=version,
                                        epoch=epoch if by_lease else None,
                                        holder=self.holder, what=what[:200], at=now))
            yield
