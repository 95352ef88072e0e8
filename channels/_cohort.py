"""A machine's cohort: the coarse kind of machine it is, which it computes itself and names
in its fleet reports, so that a fault confined to one kind of machine holds that kind only.

    <system>-<major version>/<architecture>/<label>     e.g. linux-6/x86_64/default

The label is the vendor's (`[report] cohort_label`, such as a hardware model); without one it
is `default`. Shared by the machine (its reports, and its obedience to a held cohort) and
the collector (grouping reports), so that neither imports the other's modules.
"""

import re

__all__ = ["COHORT_PATTERN", "LABEL_PATTERN", "cohort_of"]

COHORT_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,23}/[a-z0-9][a-z0-9._-]{0,15}/[a-z0-9][a-z0-9._-]{0,31}$"
LABEL_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,31}$"
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def _part(text: str, size: int) -> str:
    cleaned = _UNSAFE.sub("-", text.lower()).strip("-._")[:size]
    return cleaned or "unknown"


def cohort_of(system: str, release: str, machine: str, label: str | None) -> str:
    """The cohort from what `platform` says (system, its release, the machine's
    architecture) and the vendor's label."""
    major = release.split(".", 1)[0]
    return (f"{_part(system, 14)}-{_part(major, 8)}/{_part(machine, 16)}/"
            f"{_part(label or 'default', 32)}")
