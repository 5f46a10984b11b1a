"""The history table: one row per decision or step.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "molt_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cluster", sa.String(253), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("group_name", sa.String(253), nullable=True),
        sa.Column("revision", sa.String(63), nullable=True),
        sa.Column("zone", sa.String(253), nullable=True),
        sa.Column("policy", sa.String(253), nullable=True),
        sa.Column("reason", sa.String(128), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("warning", sa.Boolean, nullable=False),
        sa.Column("details", sa.JSON, nullable=True),
    )
    op.create_index("ix_molt_history_cluster_time", "molt_history", ["cluster", "time"])


def downgrade() -> None:
    op.drop_index("ix_molt_history_cluster_time", "molt_history")
    op.drop_table("molt_history")
