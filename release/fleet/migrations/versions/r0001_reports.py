"""The reports table as the first collectors made it: one row a report, by installation,
channel and release."""

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("reports"):
        return  # an unversioned collector's database, stamped here first
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("installation", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("release", sa.String(128)),
        sa.Column("release_key", sa.String(160)),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("reports_release", "reports", ["channel", "release"])
    op.create_index("reports_installation", "reports", ["installation", "received"])


def downgrade() -> None:
    op.drop_table("reports")
