"""The history table, as SQLAlchemy Core sees it at the newest migration.

The migrations in ``molt.observe.migrations`` build exactly this; the store writes and
``molt history`` reads through it.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

events = Table(
    "molt_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("cluster", String(253), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("name", String(253), nullable=False),
    Column("group_name", String(253), nullable=True),
    Column("revision", String(63), nullable=True),
    Column("zone", String(253), nullable=True),
    Column("policy", String(253), nullable=True),
    Column("reason", String(128), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("warning", Boolean, nullable=False, default=False),
    Column("details", JSON, nullable=True),
    # Added by the second migration.
    Column("change", String(128), nullable=True),
    Index("ix_molt_history_cluster_time", "cluster", "time"),
    Index("ix_molt_history_cluster_name", "cluster", "name"),
    Index("ix_molt_history_cluster_group", "cluster", "group_name"),
)
