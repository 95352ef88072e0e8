"""What happens to a release on a channel after it is published: promotion, yanking, staged
rollout. Each writes a new channel file (signed by the channel's role) and publishes."""

import json
from collections.abc import Callable

from greenlight.channels import ChannelFile, RevokedRelease, Rollout, is_newer, now
from greenlight.release._errors import Conflict, NotFound, ReleaseError, UsageError
from greenlight.release.repository._channels import (
    channel_history,
    check_known,
    checked_fallback,
    current_channel_file,
    ensure_channel_role,
    raised_requires,
    write_channel_file,
)
from greenlight.release.repository._repository import FileRepository, all_or_nothing


def _require_channel(repo: FileRepository, channel: str) -> ChannelFile:
    current = current_channel_file(repo, channel)
    if current is None:
        raise NotFound(f"channel {channel!r} has no release in {repo.path}")
    return current


@all_or_nothing
def promote(repo: FileRepository, source: str, target: str, version: str | None = None,
            allow_older: bool = False,
            gate: Callable[[ChannelFile], None] | None = None) -> ChannelFile:
    """Point `target` at the very artifacts `source` carries (or carried, for --version).
    `gate` is shown the entry before it is signed, and refuses by raising.

    Raises:
        NotFound: `source` has no release, or never carried `version`.
        ReleaseError: the release is yanked on `source`, or what `gate` raises.
        Conflict: not newer than `target`'s release (without `allow_older`), or an entry with
            a field this version does not know.
        UsageError: the fallback `target` keeps would make a cycle of fallbacks.
    """
    current = _require_channel(repo, source)
    chosen = current
    if version is not None and version != current.release:
        found = [cf for cf in channel_history(repo, source) if cf.release == version]
        if not found:
            raise NotFound(f"channel {source!r} never carried {version}")
        chosen = found[0]
    if chosen.is_revoked(chosen.release) or current.is_revoked(chosen.release):
        raise ReleaseError(f"{chosen.release} is yanked on {source!r}; it cannot be promoted")
    existing = current_channel_file(repo, target)
    if existing and not allow_older and not is_newer(chosen.release, existing.release):
        raise Conflict(f"channel {target!r} carries {existing.release}; {chosen.release} is "
                           "not newer (pass --allow-older to promote it anyway)")
    check_known(json.loads(chosen.to_json()), source)  # what it would drop, unread
    promoted = ChannelFile(
        channel=target, release=chosen.release, components=chosen.components,
        manifest=chosen.manifest, fallback=checked_fallback(repo, target, None, existing),
        revoked=list(existing.revoked) if existing else [],
        promoted_from=source, published_at=now(),
    )
    if gate is not None:
        gate(promoted)
    ensure_channel_role(repo, target)
    return write_channel_file(repo, promoted, raised_requires(chosen))


@all_or_nothing
def yank(repo: FileRepository, channel: str, version: str, reason: str) -> ChannelFile:
    """Revoke `version` on `channel`; if it is the current release, go back to the newest
    earlier release that is not revoked.

    Raises:
        NotFound: the channel has no release, or never carried `version`.
        Conflict: `version` is already yanked there.
        ReleaseError: it is the only good release the channel ever carried.
    """
    current = _require_channel(repo, channel)
    if current.is_revoked(version):
        raise Conflict(f"{version} is already yanked on {channel!r}")
    revoked = [*current.revoked, RevokedRelease(version=version, reason=reason,
                                                revoked_at=now())]
    base = current
    if current.release == version:
        earlier = [cf for cf in channel_history(repo, channel)
                   if cf.release != version and not any(r.version == cf.release for r in revoked)
                   and is_newer(version, cf.release)]
        if not earlier:
            raise ReleaseError(f"{version} is the only good release {channel!r} ever carried; "
                               "publish a fixed release instead of yanking it")
        base = earlier[0]
    elif not any(cf.release == version for cf in channel_history(repo, channel)):
        raise NotFound(f"channel {channel!r} never carried {version}")
    yanked = current.model_copy(update={
        "release": base.release, "components": base.components, "manifest": base.manifest,
        "revoked": revoked,
        "rollout": None, "published_at": now()})
    return write_channel_file(repo, ChannelFile.model_validate(yanked.model_dump()),
                              raised_requires(base))


@all_or_nothing
def rollout(repo: FileRepository, channel: str, percent: int | None = None,
            halt: bool = False, resume: bool = False) -> ChannelFile:
    """A person's word on a rollout: a fixed `percent` (which replaces a plan), `halt` (signed
    by the channel's role), or `resume` (lifts a halt, whoever set it, or a pause by the plan's
    feedback rule; a planned rollout goes on from its step, judging only the reports and
    feedback that come after).

    Raises:
        Conflict: another command holds the repository's lock.
        NotFound: the channel has no release.
        UsageError: not exactly one of `percent`, `halt` and `resume`, or a percent out of
            0-100.
        ReleaseError: no staged rollout to halt or resume, or one that is not halted.
    """
    from greenlight.release.repository._rollouts import locked, person, planned, write_state

    with locked(repo):
        current = _require_channel(repo, channel)
        if sum((percent is not None, halt, resume)) != 1:
            raise UsageError("give one of --percent N (0-100), --halt or --resume")
        if percent is not None and not 0 <= percent <= 100:
            raise UsageError(f"--percent {percent}: expected 0 to 100")
        if current.rollout is None and (halt or resume):
            raise ReleaseError(f"channel {channel!r} has no staged rollout of "
                               f"{current.release} to {'halt' if halt else 'resume'}")
        if percent is not None:
            previous = current.rollout.previous if current.rollout is not None else None
            staged: Rollout | None = (None if percent == 100 else
                                      Rollout(percent=percent, previous=previous))
        else:
            assert current.rollout is not None
            staged = current.rollout.model_copy(update={"halted": halt})
        if resume:
            plan = planned(repo, channel)  # halted by the signers, the collector, or both
            assert current.rollout is not None
            # A plan with a feedback rule may be paused by the collector's count of
            # feedback, which only the collector knows: a resume lifts it all the same (the
            # count starts again from now).
            paused = plan is not None and plan.plan.halt.feedback is not None
            if not (current.rollout.halted or paused or (plan is not None and (
                    plan.halted or plan.held_cohorts))):
                raise ReleaseError(f"the rollout of {current.release} on {channel!r} is not "
                                   "halted")
            if plan is not None and (paused or plan.state is not None and (
                    plan.state.halted or plan.held_cohorts)):
                write_state(repo, plan.resumed(f"{person()} (release rollout --resume)"))
        if staged == current.rollout:
            return current
        updated = current.model_copy(update={"rollout": staged, "published_at": now()})
        return write_channel_file(repo, ChannelFile.model_validate(updated.model_dump()),
                                  raised_requires(current))


__all__ = ["channel_history", "promote", "rollout", "yank"]
