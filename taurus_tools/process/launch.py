"""``Launch``: how to run one command, described apart from running it.

Backends build launches; :class:`~taurus_tools.process.handle.Handle` runs them.  Tests check argv
and job handling on the value, without starting anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object

__all__ = ["InlineProgram", "Launch", "Placement", "unique_job_name"]


class Placement(Protocol):
    """Where a launch's Slurm job may run, as the backend that made it can change it.

    A retry elsewhere (:class:`~taurus_tools.policy.ExitPolicy`'s ``retry_elsewhere``)
    asks it for the same launch keeping off more nodes, and for the nodes left to run on.
    """

    def excluding(self, nodes: Tuple[str, ...]) -> "Launch":
        """The same launch, its job kept off ``nodes`` too."""
        ...

    def usable_nodes(self) -> Optional[List[str]]:
        """The nodes its job may run on now (``sinfo``); None when not known."""
        ...


class InlineProgram(Protocol):
    """A program that runs on a thread of this process instead of as a process of its own
    (see :attr:`Launch.inline`): the handle calls :meth:`run` on its thread, and
    :meth:`stop` from any thread to cancel it."""

    def run(self) -> int:
        """Do the work; return the exit code (as the program's process would)."""
        ...

    def stop(self) -> None:
        """End :meth:`run` soon, leaving nothing half-done behind (as on SIGTERM)."""
        ...


@dataclass(frozen=True)
class Launch:
    """How to run one command: argv plus what the handle must do beyond the process.

    Backends build these; :class:`Handle` runs them.  Keeping the description apart from
    the running lets tests check argv without starting anything.

    Attributes
    ----------
    argv : tuple of str
        The program and its arguments, never a shell string.
    name : str
        Short name for messages (``"dtcp"``).
    submits : bool
        The process only submits a Slurm job and prints its id; the handle then follows
        the job until it ends.
    parsable : bool
        The submission prints ``sbatch --parsable`` output (a bare job id).
    job_name : str or None
        A unique Slurm job name, used to cancel a job whose id was never printed.
    job_output : tuple of Path or None
        Files the job writes its stdout and stderr to; the handle streams them in and
        removes them when the job has ended.
    runs_srun : bool or None
        The process runs ``srun`` in the foreground (itself, or a site tool that execs
        it): the handle makes srun verbose to learn the job id and filters the verbose
        lines from stderr (``--verbose`` when ``argv[0]`` is srun, else
        ``SLURM_DEBUG=1`` in the environment).  None: when ``argv[0]`` is named ``srun``.
    placement : Placement or None
        For a Slurm job whose nodes the backend chooses: how to launch it again kept off
        some nodes.  None: it cannot be (a process here, a site tool's own choice).
    inline : callable or None
        Run the program on a thread of this process instead of starting ``argv``:
        called with ``argv``, it returns the :class:`InlineProgram` to run.  Only backends
        whose programs run on this machine make such launches (a program that is taurus-tools'
        own code, where an interpreter's start would cost more than the work: see
        :attr:`~taurus_tools.transfer.config.CopyConfig.in_process`).  ``argv`` stays what a
        process would run, for messages.
    """

    argv: Tuple[str, ...]
    name: str = ""
    submits: bool = False
    parsable: bool = False
    job_name: Optional[str] = None
    job_output: Optional[Tuple[Path, Path]] = None
    #: Absolute program to exec (``argv[0]`` stays as given, so messages read as usual);
    #: spares Popen a PATH search on every call.  Ignored when a call passes ``env``.
    executable: Optional[str] = field(default=None, compare=False)
    runs_srun: Optional[bool] = field(default=None, compare=False)
    placement: Optional[Placement] = field(default=None, compare=False, repr=False)
    inline: Optional[Callable[[Tuple[str, ...]], InlineProgram]] = field(default=None, compare=False, repr=False)

    @property
    def uses_srun(self) -> bool:
        """Whether the process runs srun in the foreground (see ``runs_srun``)."""
        if self.runs_srun is not None:
            return self.runs_srun
        return not self.submits and self.is_srun

    @property
    def is_srun(self) -> bool:
        """Whether the process is srun itself (``argv[0]`` named ``srun``)."""
        return os.path.basename(self.argv[0]) == "srun"


def unique_job_name(command: str) -> str:
    """A Slurm job name that is readable in squeue and unique enough to cancel by."""
    return f"tt-{command}-{os.urandom(5).hex()}"
