"""Test support: builders for Kubernetes objects and waiting helpers."""
