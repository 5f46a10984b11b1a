"""The pure policy core: snapshot + policies + budgets + now -> decisions.

Nothing here performs I/O; import-linter keeps kube, cloud, sim and network libraries out.
"""
