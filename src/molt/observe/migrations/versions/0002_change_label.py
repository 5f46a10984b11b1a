"""A revision's "what changed" label, and indexes for the per-node and per-group queries.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("molt_history") as batch:
        batch.add_column(sa.Column("change", sa.String(128), nullable=True))
    op.create_index("ix_molt_history_cluster_name", "molt_history", ["cluster", "name"])
    op.create_index("ix_molt_history_cluster_group", "molt_history", ["cluster", "group_name"])


def downgrade() -> None:
    op.drop_index("ix_molt_history_cluster_group", "molt_history")
    op.drop_index("ix_molt_history_cluster_name", "molt_history")
    with op.batch_alter_table("molt_history") as batch:
        batch.drop_column("change")
