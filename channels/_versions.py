"""Release ordering: PEP 440 versions compared with `packaging`."""

from collections.abc import Iterable

from packaging.version import InvalidVersion, Version

from greenlight.channels._invalid import InvalidValue

__all__ = ["canonical_version", "is_newer", "parse_version", "sort_versions"]


def parse_version(text: str) -> Version:
    """`text` as a PEP 440 version.

    Raises:
        InvalidValue: not a version.
    """
    try:
        return Version(text)
    except InvalidVersion:
        raise InvalidValue(f"invalid version {text!r}: expected a version such as 1.6.11") from None


def canonical_version(text: str) -> str:
    """`text` if it is a version written the one way `packaging` writes it, else ValueError
    (so that "1.2", " 1.2\\n" and "v1.2" never name three releases, or three folders).

    Raises:
        InvalidValue: not a version, or not written the one way.
    """
    canonical = str(parse_version(text))
    if canonical != text:
        raise InvalidValue(f"version {text!r} is not canonical: write it as {canonical!r}")
    return text


def is_newer(candidate: str, than: str | None) -> bool:
    """True when `candidate` sorts after `than` (anything is newer than nothing)."""
    return than is None or parse_version(candidate) > parse_version(than)


def sort_versions(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=parse_version)
