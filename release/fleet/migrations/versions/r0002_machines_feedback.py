"""What the collectors added before the schema was versioned: a report's cohort, its id (a
report counted once per key), the release a crash on stop left, the Greenlight that sent it;
the machine keys; users' feedback. Each piece only if it is missing: an unversioned
collector may have added any of them already."""

from typing import Any

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_REPORT_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("cohort", sa.String(80)), ("report_id", sa.String(32)), ("upgrading_to", sa.String(80)),
    ("greenlight", sa.String(64)), ("greenlight_kind", sa.String(8)))


def upgrade() -> None:
    seen = sa.inspect(op.get_bind())
    have = {c["name"] for c in seen.get_columns("reports")}
    for name, kind in _REPORT_COLUMNS:
        if name not in have:
            op.add_column("reports", sa.Column(name, kind))
    indexes = {i["name"] for i in seen.get_indexes("reports")}
    if "reports_received" not in indexes:
        op.create_index("reports_received", "reports", ["received"])
    if "reports_once" not in indexes:
        op.create_index("reports_once", "reports", ["installation", "report_id"], unique=True)
    if not seen.has_table("machines"):
        op.create_table(
            "machines",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("public_key", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("source", sa.String(16), nullable=False),
            sa.Column("enrolled", sa.DateTime(timezone=True), nullable=False),
            sa.Column("first_release_key", sa.String(80)),
        )
        op.create_index("machines_enrolled", "machines", ["enrolled"])
    if not seen.has_table("feedback"):
        op.create_table(
            "feedback",
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("feedback_id", sa.String(32), nullable=False),
            sa.Column("installation", sa.String(32), nullable=False),
            sa.Column("received", sa.DateTime(timezone=True), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("channel", sa.String(64)),
            sa.Column("release", sa.String(64)),
            sa.Column("release_key", sa.String(80)),
            sa.Column("cohort", sa.String(80)),
            sa.Column("failing_check", sa.String(80)),
            sa.Column("incident_release", sa.String(80)),
            sa.Column("about", sa.String(64)),
            sa.Column("about_channel", sa.String(64)),
            sa.Column("source", sa.String(8), nullable=False),
            sa.Column("text", sa.Text, nullable=False),
            sa.Column("document", sa.Text, nullable=False),
        )
        op.create_index("feedback_once", "feedback", ["installation", "feedback_id"],
                        unique=True)
        op.create_index("feedback_received", "feedback", ["received"])
        op.create_index("feedback_release", "feedback", ["channel", "release"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("machines")
    op.drop_index("reports_once", "reports")
    op.drop_index("reports_received", "reports")
    for name, _ in reversed(_REPORT_COLUMNS):
        op.drop_column("reports", name)
