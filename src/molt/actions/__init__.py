"""Lifecycle actions run before a node terminates and after one launches."""
