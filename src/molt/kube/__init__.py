"""Kubernetes adapter: watch caches, writes, eviction and leader election."""
