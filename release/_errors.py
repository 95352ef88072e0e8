"""Errors of the release pipeline: one line a release engineer can act on."""

__all__ = ["ReleaseError"]


class ReleaseError(Exception):
    """An expected failure of a `release` command; the message is the whole story (exit 1)."""
