"""Interruption notices from a cloud queue, recorded on their nodes."""
