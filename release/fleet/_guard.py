"""The collector's guard of planned rollouts: it gathers the evidence from the store, asks
the pure `judge`, and signs what it says (a halt or a step) with the online
`rollout-<channel>` key, under the repository's lock, so several collectors may share it.

A plan's feedback rule only pauses: when the judge says so, nothing is signed (the step
stays), the pause is said once in one line (per collector process, step and resume) and
shown in `/v1/rollouts` (`plans`' `feedback`); an admin's resume lifts it."""

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greenlight.channels import printable
from greenlight.release._errors import Conflict
from greenlight.release.fleet._judge import REASON_MAX, RolloutPosition, confined_to, judge
from greenlight.release.fleet._store import Store

if TYPE_CHECKING:
    from greenlight.channels import HaltEvidence
    from greenlight.release.fleet._lease import Lease

__all__ = ["Guard"]


def _evidence(failed: int, total: int, top: tuple[str, str] | None,
              cohort: str | None = None) -> "HaltEvidence":
    """The signed state's evidence: counts, the check's name, an escaped excerpt."""
    from greenlight.channels import HaltEvidence

    return HaltEvidence(failed=failed, total=total, check=top[0] if top else None,
                        excerpt=printable(top[1], 160) if top else None, cohort=cohort)


class Guard:
    """Halts and advances planned rollouts, signing with the online `rollout-<channel>` key
    (and the snapshot and timestamp keys) found in `keys`."""

    def __init__(self, repo: Path, keys: Path | None, store: Store,
                 log: Callable[[str], None] = lambda line: None,
                 lease: "Lease | None" = None) -> None:
        from greenlight.release.repository._keys import KeyStore
        from greenlight.release.repository._repository import recorded_keys_folder

        self.path, self.store, self.log, self.lease = repo, store, log, lease
        self.keys = KeyStore(keys if keys is not None else recorded_keys_folder(repo))
        self._releases: dict[str, set[str]] = {}  # what the repository carries, by channel
        self._read_stamp: tuple[int, int, int] | None = None
        self._settled = False
        self._reading = threading.Lock()
        self._paused: set[tuple[str, str, int, Any]] = set()  # pauses said already

    def carried(self, release: str) -> bool:
        """Whether any channel ever carried `release`, as last read (`knows` reads)."""
        return any(release in releases for releases in self._releases.values())

    def knows(self, channel: str, release: str | None, refresh: bool = True) -> bool:
        """Whether the repository has `channel`, and `release` among the releases it ever
        carried (None: any). Answered from what was read last; with `refresh`, a miss reads
        the repository again when its metadata folder changed since (a release published
        since: a report about it the moment it is out is stored, never dropped), and only
        then: a stream of reports about releases nobody published costs a `stat` each."""
        def hit() -> bool:
            releases = self._releases.get(channel)
            return releases is not None and (release is None or release in releases)

        if hit() or not refresh:
            return hit()
        with self._reading:
            stamp = self._stamp()
            if stamp is None or stamp != self._read_stamp or not self._settled:
                from greenlight.release.repository._channels import channel_history

                began = time.time_ns()
                repo = self._repo()
                self._releases = {c: {f.release for f in channel_history(repo, c)}
                                  for c in self.channels()}
                # A folder changed within a second of the read may change again under the
                # same timestamp (its granularity): read again on the next miss until then.
                self._read_stamp = stamp
                self._settled = stamp is not None and began - stamp[2] > 1_000_000_000
        return hit()

    def _stamp(self) -> tuple[int, int, int] | None:
        """The metadata folder's identity and last change: any publish adds a file to it."""
        try:
            st = os.stat(self.path / "metadata")
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns)

    def _repo(self) -> Any:
        """The repository as it is on disk now (another collector may have changed it), and
        the keys folder read again: a channel's first planned rollout brings its rollout key
        after this collector started."""
        from greenlight.release.repository._repository import FileRepository

        self.keys.forget()
        return FileRepository(self.path, self.keys)

    def channels(self) -> list[str]:
        from greenlight.release.repository._channels import channels

        return channels(self._repo())

    def judge(self, channel: str) -> str | None:
        """Halt the channel's planned rollout if its rule is met, else move it one step
        along if the step has soaked. Returns what it did, in one line, or None."""
        from greenlight.channels import now
        from greenlight.release.repository._rollouts import locked, planned

        repo = self._repo()
        with locked(repo):
            plan = planned(repo, channel)
            if plan is None or plan.halted:
                return None
            version = plan.channel_file.release
            position = RolloutPosition(
                version=version, steps=tuple(plan.plan.steps), step=plan.step,
                soak=plan.plan.soak, rule=plan.plan.halt, halted=plan.halted,
                step_began=plan.step_began)
            # Only machines with a history before the rollout began count (open enrolment:
            # anyone holding the fleet token can invent ids, not a past).
            # started_at is signed to the second: anything before its end came before.
            established = plan.plan.started_at + timedelta(seconds=1)
            held = plan.held_cohorts
            # counted_since is signed to the second too, rounded down: a report received in
            # that second may be one the person resuming saw, so counting starts at its end
            # (never a report judged before the resume counted again).
            since = None if plan.counted_since is None else (
                plan.counted_since + timedelta(seconds=1))
            evidence = self.store.judged(channel, plan.key, since,
                                         established_before=established, without=held)
            previous = plan.channel_file.rollout.previous if plan.channel_file.rollout else None
            if plan.plan.halt.sequential is not None and previous is not None:
                # the baseline: the previous release's whole record on this channel
                from greenlight.channels import ReleaseId

                # counted as the rollout's own reports are: keys minted for the occasion
                # cannot lower the bar by reporting failures of the release before
                base = self.store.judged(channel, ReleaseId.of(
                    previous.release, previous.components, previous.manifest).key, None,
                    established_before=established, baseline=True)
                evidence = replace(evidence, baseline=(base.failed, base.total))
            if plan.plan.halt.feedback is not None:  # a signal: it pauses the advance
                evidence = replace(evidence, feedback=self._wrote(channel, plan))
            verdict = judge(position, evidence, now())
            by_cohort = {} if verdict.action != "halt" else self.store.by_cohort(
                channel, plan.key, since, established, without=held)
            confined = None if verdict.action != "halt" else confined_to(
                position, by_cohort, evidence.baseline,
                self.store.cohorts(channel, established, plan.key))
            if confined is not None and len(held) < 64:
                cohort, why = confined
                top = evidence.top_check
                reason = printable(why + (f"; most failed check {top[0]}: {top[1]}"
                                          if top else ""), REASON_MAX)
                mine = by_cohort[cohort]
                line = (f"held cohort {cohort} of {channel} {version} at "
                        f"{plan.plan.steps[plan.step]}%, the rest goes on: {reason}")
                self._sign(repo, plan.next_state(
                    "collector", held_cohorts=[*held, cohort], reason=reason,
                    evidence=_evidence(mine.failed, mine.total, top, cohort)), "hold", line)
            elif verdict.action == "halt":
                line = (f"halted {channel} {version} at {plan.plan.steps[plan.step]}%: "
                        f"{verdict.reason}")
                self._sign(repo, plan.next_state(
                    "collector", halted=True, reason=verdict.reason,
                    evidence=_evidence(evidence.failed, evidence.total, evidence.top_check)),
                    "halt", line)
            elif verdict.action == "pause":
                said = (channel, plan.key, plan.step, plan.counted_since)
                if said in self._paused:  # said once; the next resume or step is news
                    return None
                self._paused.add(said)
                line = (f"paused {channel} {version} at {plan.plan.steps[plan.step]}%: "
                        f"{verdict.reason}; halts stay automatic, advancing waits for a "
                        "person")
            elif verdict.action == "advance":
                assert verdict.step is not None
                line = (f"advanced {channel} {version} to step {verdict.step + 1} of "
                        f"{len(plan.plan.steps)} ({plan.plan.steps[verdict.step]}%)")
                self._sign(repo, plan.next_state("collector", step=verdict.step), "advance",
                           line)
            else:
                return None
        self.log(line)
        return line

    def admin(self, channel: str, release: str, action: str, by: str) -> str:
        """An admin's halt or resume of `channel`'s planned rollout of `release` (the version
        the admin saw), signed with the rollout key. A halt by the channel's signers is
        theirs to lift (`release rollout --resume`).

        Raises:
            ValueError: no such planned rollout, another release now, nothing to do, or
                another collector signed the rollout's state at the same moment.
        """
        from greenlight.release.repository._rollouts import locked, planned

        repo = self._repo()
        with locked(repo):
            plan = planned(repo, channel)
            if plan is None or plan.channel_file.release != release:
                raise ValueError(f"{channel} has no planned rollout of {release} now")
            signed = plan.channel_file.rollout is not None and plan.channel_file.rollout.halted
            if action == "halt":
                if plan.halted:
                    raise ValueError(f"the rollout of {release} on {channel} is halted already")
                state = plan.next_state(by, halted=True, reason=f"halted by hand ({by})")
            elif signed:
                raise ValueError(f"the rollout of {release} on {channel} was halted by the "
                                 "channel's signers: release rollout --resume lifts it")
            elif not (plan.halted or plan.held_cohorts or self._feedback(channel, plan)[2]):
                raise ValueError(f"the rollout of {release} on {channel} is neither halted "
                                 "nor paused")
            else:
                state = plan.resumed(by)
            line = f"{'halted' if action == 'halt' else 'resumed'} {channel} {release}: by {by}"
            try:
                self._sign(repo, state, action, line, by_lease=False)
            except Conflict as e:  # another collector signed this role at the same moment
                raise ValueError(f"{e}; look again") from None
        self.log(line)
        return line

    def _sign(self, repo: Any, state: Any, action: str, line: str,
              by_lease: bool = True) -> None:
        """Sign and publish `state` (all or nothing), through the lease's fence when this
        collector shares its database with others: the judge's action only while it holds
        the lease, a person's (`by_lease` False) in order."""
        from greenlight.channels import rollout_role
        from greenlight.release.fleet._lease import fault
        from greenlight.release.repository._rollouts import write_state

        fault(f"sign:{action}")
        with repo.all_or_nothing():
            if self.lease is None:
                write_state(repo, state)
                return
            role = rollout_role(state.channel)
            version = repo.open(role).signed.version + 1
            with self.lease.signing(role, version, line, by_lease):
                write_state(repo, state)
                written = repo.open(role).signed.version
                if written != version:  # the fence recorded another version than signed
                    raise RuntimeError(f"{role}: signed version {written}, fenced {version}")

    def _wrote(self, channel: str, plan: Any) -> int:
        """Distinct machines (those the rollout's rule counts) whose users wrote in about the
        planned release within its current step, and since its last resume."""
        began = plan.step_began
        if plan.counted_since is not None:  # signed to the second: from that second's end
            began = max(began, plan.counted_since + timedelta(seconds=1))
        return self.store.feedback.machines_wrote(
            channel, plan.key, began, plan.plan.started_at + timedelta(seconds=1))

    def _feedback(self, channel: str, plan: Any) -> tuple[int | None, int, bool]:
        """The plan's feedback rule (its machines, None without one), the machines that
        wrote in within the step, and whether the advance is paused for a person: the rule
        met, the rollout neither halted nor at its last step."""
        rule = plan.plan.halt.feedback
        if rule is None:
            return None, 0, False
        n = self._wrote(channel, plan)
        return rule.machines, n, (n >= rule.machines and not plan.halted
                                  and plan.step < len(plan.plan.steps) - 1)

    def tick(self) -> list[str]:
        done = []
        for channel in self.channels():
            try:
                line = self.judge(channel)
            except Exception as e:  # one channel's trouble never stops the others
                line = f"cannot judge {channel}: {type(e).__name__}: {e}"
                self.log(line)
            if line:
                done.append(line)
        return done

    def plans(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Each planned rollout's position, by channel and version, for `/v1/rollouts`."""
        from greenlight.release.repository._rollouts import planned

        repo = self._repo()
        out = {}
        for channel in self.channels():
            plan = planned(repo, channel)
            if plan is None:
                continue
            signed = plan.channel_file.rollout
            state = plan.state
            halted_by_signers = signed is not None and signed.halted
            rule, wrote, paused = self._feedback(channel, plan)
            out[(channel, plan.channel_file.release)] = {
                "key": plan.key, "steps": plan.plan.steps, "step": plan.step,
                "percent": plan.plan.steps[plan.step], "soak": plan.plan.soak,
                "halted": plan.halted, "held_cohorts": plan.held_cohorts,
                "started_at": plan.plan.started_at.isoformat(),
                "step_began": plan.step_began.isoformat(),
                "halted_by_signers": halted_by_signers,
                "by": "the channel's signers" if halted_by_signers else
                      (state.by if state else None),
                "reason": "release rollout --halt" if halted_by_signers else
                          (state.reason if state else None),
                "at": state.at.isoformat() if state else None,
                "feedback": None if rule is None else {"rule": rule, "machines": wrote,
                                                       "paused": paused},
            }
        return out
