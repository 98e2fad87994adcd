"""The ``taurus-tools`` command line."""
