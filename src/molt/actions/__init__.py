"""Lifecycle actions: one module per kind (``http``), started and polled by ``runner``."""
