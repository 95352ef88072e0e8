"""One judge and signer among collectors sharing a database: the lease passes to another
collector only once it expired (or was given up), and every signed rollout state passes the
fence: a leader that lost the lease signs nothing, and a version is signed once, each above
the last. On SQLite and a real PostgreSQL, with the real repository and guard."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from greenlight.channels import HaltRule, RolloutPlan, rollout_role
from greenlight.release import publish
from greenlight.release._errors import Conflict
from greenlight.release.fleet import Guard, Store
from greenlight.release.fleet._lease import Lease

from conftest import until

TTL = 0.6


def _signed(store: Store) -> list[tuple]:
    with store.engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(
            "SELECT role, version, epoch FROM signed ORDER BY role, version"))]


def _metadata(repo) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((repo.path / "metadata").iterdir())}


def test_the_lease_passes_only_once_it_expired_or_was_given_up(database):
    store = Store(database)
    a, b = Lease(store.engine, ttl=TTL), Lease(store.engine, ttl=TTL)
    assert a.hold() and a.held
    assert not b.hold() and not b.held
    assert a.hold()  # renewed
    assert a.leader() == {"holder": a.holder, "epoch": a.epoch, "this": True}
    assert b.leader() == {"holder": a.holder, "epoch": a.epoch, "this": False}
    first = a.epoch
    # a stops renewing (paused, or cut off): b takes the lease once it has expired
    until(b.hold, 20, "the lease to pass")
    assert b.epoch == first + 1
    assert not a.held  # by its own clock, before it asks
    assert not a.hold() and a.epoch is None  # it asked: it no longer leads
    b.give_up()  # a clean stop: the next attempt takes it, with no wait for the expiry
    assert a.hold() and a.epoch == first + 2


def test_a_leader_that_lost_the_lease_cannot_sign_over_its_successor(
        database, published, builds):
    """The old leader, paused while its lease ran out, wakes and judges: the fence refuses
    it and its files are put back; its successor signs the next version."""
    publish(published, "stable", "1.2", builds("1.2"), rollout_plan=RolloutPlan(
        steps=[10, 50, 100], soak=0, started_at=datetime(2026, 1, 1, tzinfo=UTC),
        halt=HaltRule()))
    role = rollout_role("stable")
    store = Store(database)
    a, b = Lease(store.engine, ttl=TTL), Lease(store.engine, ttl=TTL)
    old, new = (Guard(published.path, None, store, lease=lease) for lease in (a, b))
    assert a.hold()
    epoch = a.epoch
    assert old.judge("stable") == "advanced stable 1.2 to step 2 of 3 (50%)"
    first = published.open(role).signed.version

    until(b.hold, 20, "the lease to pass")  # a was paused past its lease
    before = _metadata(published)
    with pytest.raises(Conflict, match="no longer holds the judge's lease"):
        old.judge("stable")
    assert _metadata(published) == before  # nothing of the refused signing is left
    assert new.judge("stable") == "advanced stable 1.2 to step 3 of 3 (100%)"
    assert _signed(store) == [(role, first, epoch), (role, first + 1, b.epoch)]
    assert published.open(role).signed.version == first + 1

    # A person's halt, taken by a collector that does not lead, is signed in order (no
    # lease needed); a version signed already never is again.
    assert old.admin("stable", "1.2", "halt", "an admin") == \
        "halted stable 1.2: by an admin"
    assert _signed(store)[-1] == (role, first + 2, None)
    with pytest.raises(Conflict, match="signed already"), \
            b.signing(role, first + 2, "a fork", by_lease=False):
        pass
    with pytest.raises(Conflict, match="signed already"), b.signing(role, first, "older"):
        pass
    versions = [v for _, v, _ in _signed(store)]
    assert versions == sorted(set(versions))  # strictly increasing, never forked
