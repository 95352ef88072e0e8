"""The collector's table of open connections: at most `limit` in all and `per_address` from
one peer address (the transport's own peer: never what a proxy's headers say), and a
reserved slice for the admin and the machines it counts.

A connection over a bound does not wait for one to close: an idle connection (not being
answered) is cut to make room, oldest idle first, first among the same address's, then
among all: first those that have not proven themselves, then those a counted machine's
report vouched for, and the admin's last. Idle connections, held open or reopened as they
are cut, so never lock out a new one, and the newest (the admin's, a machine's report) gets
its request in; only when every place is being answered is a new one refused.

A vouch is for one request and the keep-alive after it: the admin token vouches, and so
does a report accepted and counted from an established machine key (never a newcomer's,
never a duplicate), at most `per_key` connections a key and `reserved - admin_slots` for
all the machines together; the admin has `admin_slots` of its own that no key can take.
The next request on the connection must prove itself again. Once fewer than `reserved`
places are left, a request that carries neither the admin token nor a signature of a key
the collector counts is answered 503 and its connection closed.

Every operation is O(1): the idle connections are kept in ordered dicts by tier (and, with
a per-address bound, by address), so a cut never scans the table."""

from collections import OrderedDict
from typing import Any, Protocol

__all__ = ["ADMIN", "MAX_CONNECTIONS", "PER_ADDRESS", "PER_KEY", "Connections", "Member"]

MAX_CONNECTIONS = 4096
"""open connections at most, by default (`--max-connections`)"""
PER_ADDRESS = 0
"""open connections from one peer address at most, by default: none
(`--max-connections-per-address`). The collector listens on loopback, so every connection
comes from the TLS proxy in front of it, or from this host: the proxy bounds connections per
client (nginx's `limit_conn`); a bound here would bound the whole collector."""
PER_KEY = 2
"""connections one machine key's reports keep vouched at a time, at most"""
ADMIN = "admin"
"""who vouched for a connection with the admin token (a machine key id otherwise)"""


class Member(Protocol):
    """A connection as the table sees it."""

    def cut(self) -> None:
        """Close it now."""
        ...


def _host(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


class Connections:
    """The open connections of one collector process (one event loop: no locks)."""

    def __init__(self, limit: int = MAX_CONNECTIONS, per_address: int = PER_ADDRESS,
                 per_key: int = PER_KEY) -> None:
        self.limit, self.per_address, self.per_key = limit, per_address, per_key
        self.reserved = max(1, limit // 16)
        self.admin_slots = max(2, self.reserved // 4)
        self.machine_slots = max(1, self.reserved - self.admin_slots)
        self.open: dict[Member, str] = {}  # each connection's peer address
        self.by_host: dict[str, int] = {}
        self.busy: set[Member] = set()  # a whole request in, its answer not all out
        # idle connections, oldest first: unproven, vouched by machines, by the admin
        self.tiers: tuple[OrderedDict[Member, None], ...] = (
            OrderedDict(), OrderedDict(), OrderedDict())
        self.spare_by_host: dict[str, OrderedDict[Member, None]] = {}  # unproven, by address
        self.voucher: dict[Member, str] = {}
        self.vouches: dict[str, int] = {}  # vouched connections by who vouched
        self.machines_vouched = 0
        self.cuts = 0  # connections cut to make room

    def crowded(self) -> bool:
        """Only the reserved slice is left: requests must prove themselves."""
        return len(self.open) >= self.limit - self.reserved

    def admit(self, peer: Any, member: Member) -> bool:
        """Take a new connection from `peer` ((host, port), the transport's own), making
        room if it must; False when there is none to make (every place is being answered,
        or every one of the address's is being answered or proven)."""
        host = _host(peer)
        if (self.per_address and self.by_host.get(host, 0) >= self.per_address
                and not self._cut_from(self.spare_by_host.get(host))):
            return False
        if len(self.open) >= self.limit and not any(self._cut_from(t) for t in self.tiers):
            return False
        self.open[member] = host
        self.by_host[host] = self.by_host.get(host, 0) + 1
        self._idle(member)
        return True

    def forget(self, member: Member) -> None:
        """A connection closed (by either side)."""
        host = self.open.pop(member, None)
        if host is None:
            return
        self._unplace(member)
        self._unvouch(member)
        self.busy.discard(member)
        left = self.by_host[host] - 1
        if left:
            self.by_host[host] = left
        else:
            del self.by_host[host]

    def begin(self, member: Member) -> None:
        """A request starts arriving: it proves itself anew (the vouch was the last
        request's)."""
        if member not in self.open:
            return
        self._unvouch(member)
        if member not in self.busy:  # (a pipelined request waits behind one answered)
            self._unplace(member)
            self._idle(member)

    def working(self, member: Member) -> None:
        """The whole request is in: it is being answered, never cut."""
        if member in self.open:
            self._unplace(member)
            self.busy.add(member)

    def done(self, member: Member) -> None:
        """Its answer is out and it stays open (keep-alive): idle, in its tier."""
        if member in self.open and member in self.busy:
            self.busy.discard(member)
            self._idle(member)

    def vouch(self, member: Any, who: str) -> bool:
        """The connection carried the admin token (`who` is `ADMIN`) or a report accepted
        from the established machine key `who`: it is cut after the unproven ones, within
        the bounds of the table's slices. Whether it was vouched."""
        if member not in self.open or member in self.voucher:
            return member in self.voucher
        taken = self.vouches.get(who, 0)
        if who == ADMIN:
            if taken >= self.admin_slots:
                return False
        elif taken >= self.per_key or self.machines_vouched >= self.machine_slots:
            return False
        else:
            self.machines_vouched += 1
        self.voucher[member] = who
        self.vouches[who] = taken + 1
        if member not in self.busy:
            self._unplace(member)
            self._idle(member)
        return True

    # --- inside ----------------------------------------------------------------------
    def _tier(self, member: Member) -> int:
        who = self.voucher.get(member)
        return 0 if who is None else 2 if who == ADMIN else 1

    def _idle(self, member: Member) -> None:
        tier = self._tier(member)
        self.tiers[tier][member] = None
        if tier == 0 and self.per_address:
            self.spare_by_host.setdefault(self.open[member], OrderedDict())[member] = None

    def _unplace(self, member: Member) -> None:
        for tier in self.tiers:
            tier.pop(member, None)
        if self.per_address:
            host = self.open.get(member)
            spare = self.spare_by_host.get(host) if host is not None else None
            if spare is not None:
                spare.pop(member, None)
                if not spare:
                    del self.spare_by_host[str(host)]

    def _unvouch(self, member: Member) -> None:
        who = self.voucher.pop(member, None)
        if who is None:
            return
        if who != ADMIN:
            self.machines_vouched -= 1
        left = self.vouches[who] - 1
        if left:
            self.vouches[who] = left
        else:
            del self.vouches[who]

    def _cut_from(self, idle: "OrderedDict[Member, None] | None") -> bool:
        """Cut the oldest connection of `idle`, if any: O(1)."""
        if not idle:
            return False
        member, _ = idle.popitem(last=False)
        self.forget(member)
        member.cut()
        self.cuts += 1
        return True
