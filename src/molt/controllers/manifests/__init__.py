"""Post-launch manifests: objects applied for each node of a group while it lives."""
