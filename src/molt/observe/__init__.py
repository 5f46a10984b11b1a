"""Metrics, Kubernetes Events and the history of decisions."""
