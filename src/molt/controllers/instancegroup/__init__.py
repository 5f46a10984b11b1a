"""Instance groups: revisions, status and (to come) cells, rollouts and rollback."""
