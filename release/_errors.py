"""Errors of the release pipeline: one line a release engineer can act on."""


class ReleaseError(Exception):
    """An expected failure of a `release` command; the message is the whole story."""

    exit_code = 1
