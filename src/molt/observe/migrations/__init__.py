"""Alembic migrations of the history store, applied in code at startup."""
