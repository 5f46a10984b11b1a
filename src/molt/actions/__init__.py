"""Lifecycle actions: one module per kind (``http``, ``vault``, ``job``), started and
polled by ``runner``."""
