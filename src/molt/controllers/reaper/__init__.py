"""Reapers: force-delete pods stuck on dead nodes, delete finished pods and ghost nodes."""
