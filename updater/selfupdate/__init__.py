"""Greenlight's own versions: fetch, qualify, activate, fall back.

Greenlight's updater is a release of its own, on channel `greenlight-<channel>`, signed under
the repository's keys with rollout plans, reports and halts like any release. On a machine
whose `bin/updater` is the one-file executable (`store.greenlight_kind` "exe"), versions live
side by side under `<root>/updater/<version>/` and `bin/updater` enters the active one:

1. **fetch** the newest updater release this machine may take (`find`: newer than the one
   running, not revoked or quarantined here, inside its rollout, built for this platform),
   verified with the root's own trust, unpacked beside the others;
2. **qualify**: the new version runs `updater qualify` against this root, read-only, and must
   load everything the updater loads (`_qualify`); a version that does not is quarantined and
   the machine stays where it is;
3. **activate** in one journaled step (`state/updater.json` `pending`, then `bin/updater`
   turned in one rename, then the record completed); a crash anywhere is settled by the next
   command (`store.settle`), to exactly one working updater;
4. **probation**: the cycle that activated it goes on in the new version (re-executed); its
   first cycles must end without a crash, a hang or an internal error (and not STRIKES in a
   row in an error), or the agent's loop runs the previous version's `self-update
   --fall-back`, which quarantines it and goes back. The loop itself re-executes into the new
   version once its probation is over.

The version left behind stays as the fallback; older ones are removed.
"""

from greenlight.updater.selfupdate._find import Candidate, Found, find
from greenlight.updater.selfupdate._qualify import qualify
from greenlight.updater.selfupdate._take import (
    QUALIFY_LIMIT,
    STRIKES,
    cycle_ended,
    fall_back,
    from_bundle,
    lift,
    place,
    self_update,
)
from greenlight.updater.trust import TrustedRepository as Repository

__all__ = ["QUALIFY_LIMIT", "STRIKES", "Candidate", "Found", "Repository", "cycle_ended",
           "fall_back", "find", "from_bundle", "lift", "place", "qualify", "self_update"]
