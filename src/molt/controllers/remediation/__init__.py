"""Remediation: unhealthy nodes are rebooted where their provider can, then replaced."""
