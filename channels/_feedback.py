"""User feedback's wire format (`greenlight.feedback/1`): what the person in front of a machine
wrote, with the evidence Greenlight attaches, as the machine sends it and the collector
stores it. Shared, so that neither side imports the other's modules.

The evidence is what the machine knows already: its release, channel and cohort, the
Greenlight that made it, the last health results with their (redacted) evidence, the last
incident and the recent history; the product's log tails only with the user's consent
(`logs_consent`: a feedback without it carries none, and the collector refuses one that does).

Feedback text is foreign text. Every field has a limit and every text is sanitised when the
model is built, on either side: control characters escaped (a line break kept in the
person's text and in a log tail, nowhere else), lengths cut, lists bounded, so that the whole
document stays under `FEEDBACK_MAX_BYTES` and nothing in it can forge a log line or a
terminal sequence. A document outside the patterns (a name, a key, a version) is refused
(422), never stored.
"""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from greenlight.channels._cohort import COHORT_PATTERN
from greenlight.channels._fleet_report import GREENLIGHT_PATTERN, GreenlightKind
from greenlight.channels._paths import check_channel_name
from greenlight.channels._records import Record
from greenlight.channels._text import terminal_lines

__all__ = ["FEEDBACK_MAX_BYTES", "FEEDBACK_SCHEMA", "FEEDBACK_TEXT_MAX", "LOG_TAIL_MAX",
           "FeedbackCheck", "FeedbackEvent", "FeedbackIncident", "FeedbackLog",
           "FeedbackReport", "FeedbackSource", "lines_printable"]

FEEDBACK_SCHEMA = "greenlight.feedback/1"
FEEDBACK_TEXT_MAX = 4000
"""characters of the person's own text"""
LOG_TAIL_MAX = 8192
"""characters of one log's tail"""
FEEDBACK_MAX_BYTES = 128 * 1024
"""the most a feedback document may weigh, as sent (the collector refuses more: 413)"""


def _inert(text: str, limit: int) -> str:
    r"""`text` on one line, every control character escaped (`\x1b`, `\n`) and backslashes
    left single (as `terminal_lines` does), cut to `limit` characters with an ellipsis.
    Idempotent, unlike `printable`: a document sanitised on the machine comes through the
    collector's validation unchanged, never escaped a second time."""
    said = terminal_lines(text, one_line=True)
    return said if len(said) <= limit else said[:limit - 1] + "…"


def lines_printable(text: str, limit: int) -> str:
    r"""`text` with its line breaks kept and every other control character escaped
    (`\x1b`, `\r`; a backslash is left as it is, so that sanitising twice changes
    nothing), cut to `limit` characters with an ellipsis."""
    said = "\n".join(_inert(line, 10 * limit) for line in text.split("\n"))
    return said if len(said) <= limit else said[:limit - 1] + "…"


def _one_line(limit: int) -> object:
    return AfterValidator(lambda t: _inert(t, limit))


_Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")]
_Version = Annotated[str, Field(pattern=r"^[0-9A-Za-z.+!_-]{1,64}$")]
_Key = Annotated[str, Field(pattern=r"^[0-9A-Za-z.+!_-]{1,64}@[0-9a-f]{12}$")]
_Summary = Annotated[str, Field(max_length=4096), _one_line(300)]
_Evidence = Annotated[str, Field(max_length=16384), _one_line(2000)]
FeedbackSource = Literal["cli", "inbox", "socket"]
"""how it reached Greenlight: `updater feedback`, the product's inbox folder, the agent's
socket"""


class FeedbackCheck(Record):
    """One health check's last result on the machine."""

    name: _Name
    ok: bool
    summary: _Summary
    evidence: _Evidence = Field("", description="its evidence as one JSON line, redacted and "
                                                "cut to 2000 characters")
    at: datetime | None = None


class FeedbackIncident(Record):
    """The machine's last incident: a rollback, a dead end, a crash loop."""

    at: datetime
    event: Annotated[str, Field(pattern=r"^[a-z][a-z-]{0,39}$")]
    channel: Annotated[str, AfterValidator(check_channel_name)] | None = Field(
        default=None, description="the channel it happened on")
    release: _Key | None = Field(default=None, description="the release that failed")
    back_to: _Key | None = Field(default=None, description="the release it went back to")
    check: _Name | None = Field(default=None, description="the first check that failed")
    summary: _Summary


class FeedbackEvent(Record):
    """One line of the machine's recent history."""

    at: datetime
    event: Annotated[str, Field(pattern=r"^[a-z][a-z-]{0,39}$")]
    from_release: _Key | None = None
    to_release: _Key | None = None
    summary: _Summary = ""


class FeedbackLog(Record):
    """The tail of one of the product's logs, sent only with the user's consent."""

    name: _Name
    tail: Annotated[str, Field(max_length=4 * LOG_TAIL_MAX),
                    AfterValidator(lambda t: lines_printable(t, LOG_TAIL_MAX))]


class FeedbackReport(Record):
    schema_: Literal["greenlight.feedback/1"] = Field("greenlight.feedback/1", alias="schema")
    id: str = Field(pattern=r"^[0-9a-f]{32}$",
                    description="random, made on the machine: the same on every send")
    installation: str = Field(pattern=r"^[0-9a-f]{32}$",
                              description="the machine key's id (random, per root)")
    at: datetime = Field(description="when the person wrote it")
    sent: datetime | None = Field(default=None, description="when the machine sent it")
    source: FeedbackSource
    text: Annotated[str, Field(min_length=1, max_length=4 * FEEDBACK_TEXT_MAX),
                    AfterValidator(lambda t: lines_printable(t, FEEDBACK_TEXT_MAX))]
    channel: Annotated[str, AfterValidator(check_channel_name)] | None = None
    release: _Version | None = Field(default=None, description="the version installed")
    release_key: _Key | None = Field(default=None, description="its key, version@digest")
    cohort: str | None = Field(default=None, pattern=COHORT_PATTERN)
    greenlight: Annotated[str, Field(max_length=64, pattern=GREENLIGHT_PATTERN)] | None = None
    greenlight_kind: GreenlightKind | None = None
    checks: list[FeedbackCheck] = Field(default_factory=list, max_length=50,
                                        description="the last health results")
    incident: FeedbackIncident | None = None
    history: list[FeedbackEvent] = Field(default_factory=list, max_length=20,
                                         description="the most recent events, newest last")
    logs_consent: bool = Field(False, description="the person agreed to send log tails")
    logs: list[FeedbackLog] = Field(default_factory=list, max_length=8)

    def failing_check(self) -> str | None:
        """The check this feedback is filed under: the first failing one of the last health
        results, else the last incident's."""
        failing = next((c.name for c in self.checks if not c.ok), None)
        return failing or (self.incident.check if self.incident else None)
