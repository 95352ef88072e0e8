"""Rehearsals: every upgrade path of a candidate release run for real before a machine sees
it (`release rehearse`), the matrix kept beside the release, and the gate that reads it."""

from greenlight.release.rehearsal._record import (
    OVERRIDES,
    FailedCheck,
    PathResult,
    RehearsalGate,
    RehearsalRecord,
    last_rehearsal,
    overrides,
    path_name,
    rehearsals,
)
from greenlight.release.rehearsal._scenarios import DEFAULT_LAYER, Layer, Scenarios, load_scenarios

__all__ = ["DEFAULT_LAYER", "OVERRIDES", "FailedCheck", "Layer", "PathResult", "RehearsalGate",
           "RehearsalRecord", "Scenarios", "last_rehearsal", "load_scenarios", "overrides",
           "path_name", "rehearsals"]
