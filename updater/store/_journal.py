"""`state/journal.json`: the transaction in progress, rewritten (atomically, fsync'd) before
and after every step, so that recovery knows what was done. The states a step goes through
are drawn once, in `greenlight.updater.transaction._engine`."""

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from greenlight.channels import Record, atomic_write
from greenlight.updater._errors import StoreError
from greenlight.updater.store._root import InstallRoot

__all__ = ["Journal", "StepRecord", "StepState"]

StepState = Literal["pending", "doing", "done", "undoing", "undone", "undo-failed"]


class StepRecord(Record):
    name: str
    state: StepState = "pending"


class Journal(Record):
    kind: Literal["upgrade", "rollback", "repair"]
    channel: str
    from_release: str | None = Field(description="the key of the release it leaves")
    to_release: str = Field(description="the key of the release it goes to")
    staged_new: bool = False
    handover: bool = Field(default=False, description="the start step hands over from the "
                                                      "old release, service by service")
    forced: bool = False
    started_at: datetime
    steps: list[StepRecord]
    undo_reason: str | None = None

    @staticmethod
    def path(root: InstallRoot) -> Path:
        return root.state / "journal.json"

    @classmethod
    def load(cls, root: InstallRoot) -> "Journal | None":
        """The journal an interrupted transaction left, if any.

        Raises:
            StoreError: the journal is damaged.
        """
        try:
            return cls.model_validate_json(cls.path(root).read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError:
            raise StoreError(
                f"{cls.path(root)}: damaged journal; inspect it, then remove it") from None

    def save(self, root: InstallRoot) -> None:
        atomic_write(self.path(root), self.model_dump_json(indent=2).encode(), mode=0o600)

    def mark(self, root: InstallRoot, name: str, state: StepState) -> None:
        for step in self.steps:
            if step.name == name:
                step.state = state
        self.save(root)

    def state_of(self, name: str) -> StepState:
        return next((s.state for s in self.steps if s.name == name), "pending")

    def finish(self, root: InstallRoot) -> None:
        self.path(root).unlink(missing_ok=True)
