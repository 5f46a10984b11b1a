"""The Watchdog controller: each Watchdog's check on its own interval, its state machine,
its alerts, and the status that pauses a TerminationPolicy's ``pauseWhen``."""
