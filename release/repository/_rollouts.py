"""Planned rollouts: the online `rollout-<channel>` role and the state it signs.

The channel file (signed by the channel's role) carries the plan: the percent steps, the least
soak per step and the halt rule. Which step the current release is at, or that it is halted,
lives in one small target, `rollouts/<channel>.json`, signed by a role delegated from targets
for that one path and nothing else. Its key can sit on the collector with the snapshot and
timestamp keys: stolen, it can halt a rollout, or move it along the steps the channel's
signers approved (never sooner than the soak), and nothing more. Machines combine the two in
`channels._rollout.effective_rollout`.

Every change here runs under `locked(repo)`, a file lock beside the metadata, so several
collector processes (and a person running `release rollout`) never interleave a publish.
"""

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from greenlight.channels import (
    ChannelFile,
    RolloutPlan,
    RolloutState,
    now,
    rollout_role,
    rollout_target,
)
from greenlight.release._errors import Conflict
from greenlight.release.repository._channels import current_channel_file, delegate
from greenlight.release.repository._repository import FileRepository

__all__ = ["Planned", "current_state", "ensure_rollout_role", "locked", "person", "planned",
           "write_state"]


@contextmanager
def locked(repo: FileRepository, timeout: float = 30) -> Iterator[None]:
    """Hold the repository's lock (`REPO/.lock`, never served) for one change.

    Raises:
        Conflict: another command held the lock for all of `timeout` seconds.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(repo.path / ".lock"), timeout=timeout)
    try:
        with lock:
            yield
    except Timeout:
        raise Conflict(f"{repo.path}: another command holds the repository's lock "
                           f"(waited {timeout:.0f} s)") from None


def person() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "a release engineer"


def ensure_rollout_role(repo: FileRepository, channel: str) -> None:
    """Delegate `rollout-<channel>` (a key of its own, for `rollouts/<channel>.json` only)
    from targets, the first time a channel's release has a plan."""
    role = rollout_role(channel)
    if delegate(repo, role, rollout_target(channel)):
        with repo.edit_targets(role):
            pass  # its first version, empty, so that the snapshot lists it from now on


def current_state(repo: FileRepository, channel: str) -> RolloutState | None:
    role = rollout_role(channel)
    if role not in repo.targets_roles():
        return None
    info = repo.targets(role).targets.get(rollout_target(channel))
    if info is None:
        return None
    return RolloutState.from_json(repo.read_target(info), f"rollout state of {channel!r}")


def write_state(repo: FileRepository, state: RolloutState) -> None:
    """Sign `state` with the online role and publish a new snapshot and timestamp."""
    info = repo.add_target_bytes(rollout_target(state.channel), state.to_json())
    with repo.edit_targets(rollout_role(state.channel)) as role_targets:
        role_targets.targets[info.path] = info
    repo.commit()


class Planned:
    """A channel's planned rollout as published: the channel file, its plan, and the online
    state about its current release (None before the first word)."""

    def __init__(self, channel_file: ChannelFile, plan: RolloutPlan,
                 state: RolloutState | None) -> None:
        self.channel_file, self.plan, self.state = channel_file, plan, state

    @property
    def key(self) -> str:
        return self.channel_file.identity.key

    @property
    def step(self) -> int:
        return 0 if self.state is None else min(self.state.step, len(self.plan.steps) - 1)

    @property
    def halted(self) -> bool:
        signed = self.channel_file.rollout is not None and self.channel_file.rollout.halted
        return signed or (self.state is not None and self.state.halted)

    @property
    def step_began(self) -> datetime:
        if self.state is None or self.state.step == 0:
            return self.plan.started_at
        return self.state.at

    @property
    def counted_since(self) -> datetime | None:
        return None if self.state is None else self.state.counted_since

    @property
    def held_cohorts(self) -> list[str]:
        return list(self.state.held_cohorts or []) if self.state is not None else []

    def next_state(self, by: str, **changes: object) -> RolloutState:
        """The next state: the step, the cohorts held (with why) and the count's start carried
        over, unless `changes` says otherwise."""
        held = self.held_cohorts
        base = {"channel": self.channel_file.channel, "release": self.key, "step": self.step,
                "halted": False, "reason": self.state.reason if held and self.state else None,
                "by": by, "at": now(), "counted_since": self.counted_since,
                "held_cohorts": held or None}
        return RolloutState.model_validate({**base, **changes})

    def resumed(self, by: str) -> RolloutState:
        """The state once a person lifts the collector's halt and cohort holds: the count
        starts again from now."""
        return self.next_state(by, counted_since=now(), held_cohorts=None, reason=None)


def planned(repo: FileRepository, channel: str) -> Planned | None:
    cf = current_channel_file(repo, channel)
    if cf is None or cf.rollout is None or cf.rollout.plan is None:
        return None
    state = current_state(repo, channel)
    if state is not None and state.release != cf.identity.key:
        state = None  # about an earlier release: counts for nothing
    return Planned(cf, cf.rollout.plan, state)
