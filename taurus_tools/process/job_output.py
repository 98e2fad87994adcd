"""The output files of a batch job, read back while it runs and removed when it has ended.

A non-blocking Slurm job writes its stdout and stderr to files (``sbatch --output/--error``
in a folder the compute nodes share); :class:`JobOutput` reads what is new in them on each
call, so the handle's captured output grows while the job runs, and removes them at the end.
Reading files costs no Slurm call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Tuple

from .._log import get_logger

log = get_logger(__name__)

__all__ = ["JobOutput"]


class JobOutput:
    """New data in a job's ``(stdout, stderr)`` files since the last call."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(paths)
        self._positions = [0] * len(self.paths)

    def read_new(self, *, stderr_only: bool = False) -> List[Tuple[int, bytes]]:
        """``(index, data)`` for each file with new data (0: stdout, 1: stderr); a file the
        job has not created yet is skipped."""
        found = []
        for index, path in enumerate(self.paths):
            if stderr_only and index == 0:
                continue
            try:
                with open(path, "rb") as fh:
                    fh.seek(self._positions[index])
                    data = fh.read()
            except FileNotFoundError:
                continue
            if data:
                self._positions[index] += len(data)
                found.append((index, data))
        return found

    def remove(self) -> None:
        """Delete the files (what is gone already is fine)."""
        for path in self.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.debug("could not remove %s: %s", path, exc)
