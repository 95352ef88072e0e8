"""The upgrade as a transaction: the generic engine (`_engine`: steps with do and undo, the
journal, the step-state diagram), the steps themselves (`_steps`), and the rollback policy and
recovery (`_rollback`)."""

from greenlight.updater.transaction._engine import Step, StepContext, run_steps, undo_steps
from greenlight.updater.transaction._rollback import (
    Rollback,
    quarantine_revoked,
    record_interrupted,
    record_left_revoked,
    record_manual_rollback,
    recover,
    roll_back,
)
from greenlight.updater.transaction._steps import (
    DELTA_PAYS,
    REPAIR_STEPS,
    ROLLBACK_STEPS,
    STEPS,
    Transaction,
    do_fetch,
    kept_file_lists,
)

__all__ = [
    "DELTA_PAYS",
    "REPAIR_STEPS",
    "ROLLBACK_STEPS",
    "STEPS",
    "Rollback",
    "Step",
    "StepContext",
    "Transaction",
    "do_fetch",
    "kept_file_lists",
    "quarantine_revoked",
    "record_left_revoked",
    "record_interrupted",
    "record_manual_rollback",
    "recover",
    "roll_back",
    "run_steps",
    "undo_steps",
]
