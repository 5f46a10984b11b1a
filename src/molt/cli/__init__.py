"""The ``molt`` command line."""
