"""Telling a person which of Molt's objects it cannot use, and why, on the object itself."""
