"""Level-triggered reconcilers (termination, instance groups, remediation, watchdogs).

Each reconciler does one step and returns "requeue after X"; it never sleeps, so the
simulator can drive the same code on a virtual clock.
"""
