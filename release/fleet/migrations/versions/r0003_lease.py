"""Replicas: the lease that names the one collector judging and signing rollouts
(`leases`), the record of every signed rollout state (`signed`: one row per role and
version, so none is ever signed twice), and the oldest schema revision whose collectors may
still serve this database (`schema_readers`)."""

import sqlalchemy as sa
from alembic import op

__all__ = ["READERS", "branch_labels", "depends_on", "down_revision", "downgrade", "revision",
           "upgrade"]

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None
READERS = "0003"
"""the oldest revision whose collectors serve the schema this revision leaves"""


def upgrade() -> None:
    leases = op.create_table(
        "leases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(80)),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),  # seconds since 1970, the database's
    )
    op.bulk_insert(leases, [{"name": "judge", "holder": None, "epoch": 0, "expires": 0.0}])
    op.create_table(
        "signed",
        sa.Column("role", sa.String(80), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.Integer),  # the lease's epoch it was signed under (None: a person)
        sa.Column("holder", sa.String(80), nullable=False),
        sa.Column("what", sa.String(200), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    readers = op.create_table("schema_readers", sa.Column("oldest", sa.String(32),
                                                          nullable=False))
    op.bulk_insert(readers, [{"oldest": READERS}])


def downgrade() -> None:
    op.drop_table("schema_readers")
    op.drop_table("signed")
    op.drop_table("leases")
