"""The library's loggers: ``taurus_tools.*``, silent unless the application configures logging.

Every module takes its logger from :func:`get_logger`, so the ``NullHandler`` is in place
before anything logs, without ``import taurus_tools`` paying for ``logging``.
"""

import logging

logging.getLogger("taurus_tools").addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` for a module of this package."""
    return logging.getLogger(name)
