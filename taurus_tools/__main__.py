"""The ``taurus-tools`` command (and ``python -m taurus_tools``).

``--version`` is answered here, before the command line module and what it needs are
imported, so that it starts about as fast as Python itself.
"""

import sys


def main() -> int:
    """Entry point of the ``taurus-tools`` console script; returns the exit code."""
    if sys.argv[1:] == ["--version"]:
        from ._version import VERSION_LINE

        print(VERSION_LINE)
        return 0
    from .cli.main import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
