"""Molt: a node-lifecycle controller for Kubernetes on ephemeral infrastructure."""

__version__ = "0.1.0"
