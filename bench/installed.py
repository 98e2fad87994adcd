"""Run our code in benchmarks as an installed package runs: from compiled bytecode.

``pip install`` compiles every module; an editable checkout has no ``__pycache__`` until
an import writes it, and with ``PYTHONDONTWRITEBYTECODE=1`` (set on our dev machines) no
import ever does, so each run of ours would compile taurus_tools from source again: about
0.15-0.3 s of CPU per process, charged to us and to none of the peers.  Each benchmark that
starts our code calls :func:`compile_ours` first.
"""

from __future__ import annotations

import compileall
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "taurus_tools"


def compile_ours() -> None:
    """Write the bytecode of every module of taurus_tools (as pip does at install time)."""
    if not compileall.compile_dir(str(PACKAGE), quiet=1):
        raise RuntimeError(f"taurus_tools does not compile: {PACKAGE}")
