"""One exception hierarchy for taurus-tools.

Every error raised on purpose by the library derives from :class:`TaurusToolsError`
and also from the builtin that matches its meaning, so ``except FileNotFoundError``
or ``except TimeoutError`` keep working.  All of them pickle with their attributes
(they cross process boundaries in parallel copies).
"""

from __future__ import annotations

import concurrent.futures
import subprocess
from typing import Any, Dict, Optional, Sequence, Tuple

__all__ = [
    "TaurusToolsError",
    "S3Error",
    "ConfigurationError",
    "BackendUnavailableError",
    "CommandNotFoundError",
    "UnknownCommandError",
    "CommandError",
    "CommandCancelledError",
    "CommandTimeoutError",
    "SlurmError",
    "WorkspaceError",
    "StageError",
    "SourceNotFoundError",
    "InsufficientSpaceError",
    "CopyCancelledError",
    "CopyError",
    "DependencyError",
    "PathNotWritableError",
    "CheckpointError",
    "DestinationUnreachableError",
]

#: How many lines of stderr an error message quotes.
STDERR_TAIL_LINES = 20


def _tail(text: Optional[str], lines: int = STDERR_TAIL_LINES) -> str:
    if not text:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _argv_str(argv: Any) -> str:
    if isinstance(argv, (list, tuple)):
        import shlex

        return shlex.join(str(a) for a in argv)
    return str(argv)


class TaurusToolsError(Exception):
    """Base class of every error taurus-tools raises on purpose."""


class ConfigurationError(TaurusToolsError, ValueError):
    """An option or argument has a value that cannot work; the message says what would."""


class BackendUnavailableError(TaurusToolsError, RuntimeError):
    """The requested backend cannot run on this machine (tools or Slurm missing)."""


class _CommandMissing:
    """What :class:`CommandNotFoundError` and :class:`UnknownCommandError` share: the
    command asked for, the ones there are, and a message that lists them."""

    def __init__(self, command: str, available: Sequence[str] = (), detail: str = "") -> None:
        self.command = command
        self.available = tuple(available)
        self.detail = detail
        have = ", ".join(self.available) if self.available else "none"
        msg = f"command {command!r} is not available" + (f" ({detail})" if detail else "")
        super().__init__(f"{msg}; available commands: {have}")  # type: ignore[call-arg]

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.command, self.available, self.detail))

    def __str__(self) -> str:
        return str(self.args[0])  # type: ignore[attr-defined]


class CommandNotFoundError(_CommandMissing, TaurusToolsError, FileNotFoundError):
    """A command is not available on the chosen backend.

    Attributes
    ----------
    command : str
        The command that was asked for.
    available : tuple of str
        The commands this backend does have.
    """


class UnknownCommandError(_CommandMissing, TaurusToolsError, AttributeError):
    """``Datamover.dtfoo``: a ``dt*`` attribute that names no command.

    An AttributeError (``hasattr`` and ``getattr(dm, name, default)`` keep working) with
    :class:`CommandNotFoundError`'s message and attributes.  (It cannot also derive from
    CommandNotFoundError: Python allows no class that is both an OSError and an
    AttributeError.)

    Attributes
    ----------
    command : str
        The attribute that was asked for.
    available : tuple of str
        The commands the backend does have.
    """

    def __init__(self, command: str, available: Sequence[str] = (), detail: str = "") -> None:
        super().__init__(command, available, detail)
        self.name = command  # AttributeError.name (Python >= 3.10 reads it for suggestions)


class CommandError(TaurusToolsError, subprocess.CalledProcessError):
    """A command finished with a non-zero exit code.

    Attributes
    ----------
    returncode : int
        Exit code; negative for a signal (``-15`` for SIGTERM).
    cmd : list of str
        The argv that was run.
    output, stderr : str or None
        What the command printed.
    job_id : str or None
        The Slurm job, when there was one.
    """

    def __init__(
        self,
        returncode: int,
        cmd: Sequence[str],
        output: Optional[str] = None,
        stderr: Optional[str] = None,
        job_id: Optional[str] = None,
    ) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, list(cmd), output, stderr)
        self.job_id = job_id

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.returncode, self.cmd, self.output, self.stderr, self.job_id))

    def __str__(self) -> str:
        if self.returncode < 0:
            what = f"was killed by signal {-self.returncode}"
        else:
            what = f"exited with code {self.returncode}"
        msg = f"command {_argv_str(self.cmd)} {what}"
        if self.job_id:
            msg += f" (Slurm job {self.job_id})"
        tail = _tail(self.stderr if isinstance(self.stderr, str) else None)
        if tail:
            msg += "\nstderr (last lines):\n" + tail
        return msg


class CommandCancelledError(CommandError, concurrent.futures.CancelledError):
    """A command was stopped by :meth:`~taurus_tools.Handle.cancel` (also on a timeout or
    Ctrl-C in ``waitfor``); ``returncode`` is how it ended (negative: the signal)."""

    def __str__(self) -> str:
        msg = f"command {_argv_str(self.cmd)} was cancelled"
        return msg + (f" (Slurm job {self.job_id})" if self.job_id else "")


class CommandTimeoutError(TaurusToolsError, TimeoutError):
    """Waiting for one or more commands took longer than the timeout; they were cancelled.

    Attributes
    ----------
    commands : list of list of str
        argv of each command that had not finished (and was cancelled).
    timeout : float
        The timeout in seconds.
    """

    def __init__(self, commands: Sequence[Sequence[str]], timeout: float) -> None:
        self.commands = [list(c) for c in commands]
        self.timeout = timeout
        names = "; ".join(_argv_str(c) for c in self.commands)
        super().__init__(
            f"timed out after {timeout:g} s, cancelled {len(self.commands)} unfinished "
            f"command(s): {names}"
        )

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.commands, self.timeout))

    def __str__(self) -> str:
        return str(self.args[0])


class SlurmError(TaurusToolsError, RuntimeError):
    """A Slurm client command (sinfo, scontrol, scancel, ...) failed."""


class WorkspaceError(CommandError):
    """A ``ws_*`` tool failed, or answered something that is not a usable workspace.

    Success means exit code 0 *and* an absolute, existing path on stdout; anything else
    is this error, carrying the tool's argv, exit code, stdout and stderr.

    Attributes
    ----------
    problem : str
        What was wrong, in words.
    """

    def __init__(
        self,
        problem: str,
        returncode: int,
        cmd: Sequence[str],
        output: Optional[str] = None,
        stderr: Optional[str] = None,
    ) -> None:
        super().__init__(returncode, cmd, output, stderr)
        self.problem = problem

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.problem, self.returncode, self.cmd, self.output, self.stderr))

    def __str__(self) -> str:
        msg = f"{self.problem} ({_argv_str(self.cmd)} exited with code {self.returncode})"
        tail = _tail(self.stderr if isinstance(self.stderr, str) else None)
        if tail:
            msg += "\nstderr (last lines):\n" + tail
        return msg


class StageError(TaurusToolsError, RuntimeError):
    """Staged data could not be copied to (or from) its destination; nothing was lost.

    Attributes
    ----------
    staged : str
        Where the data is (a workspace that was kept, not released), or was meant to be.
    target : str
        Where it should have gone.
    """

    def __init__(self, message: str, staged: str, target: str) -> None:
        self.staged = staged
        self.target = target
        super().__init__(message)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (str(self.args[0]), self.staged, self.target))


class S3Error(TaurusToolsError, OSError):
    """An S3 location cannot be used: no such bucket, credentials refused, access denied, the
    endpoint unreachable.  The message names the location and the endpoint, never a secret."""

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (str(self),))


class SourceNotFoundError(TaurusToolsError, FileNotFoundError):
    """The source of a copy does not exist or cannot be read."""

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), self.args)

    def __str__(self) -> str:
        return str(self.args[0])


class InsufficientSpaceError(TaurusToolsError, OSError):
    """The destination lacks the free space the copy needs (override: ``check_space=False``)."""

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), self.args)

    def __str__(self) -> str:
        return str(self.args[0])


class DependencyError(TaurusToolsError):
    """A step did not run because a step it depends on failed; ``__cause__`` is that error."""


class CopyCancelledError(TaurusToolsError, concurrent.futures.CancelledError):
    """A parallel copy was cancelled; running it again resumes it."""


class CopyError(TaurusToolsError):
    """A parallel copy ended with failures (``result()`` of a started copy raises it).

    Attributes
    ----------
    result : CopyResult
        Everything the copy reports: what failed, what was copied, the report's path.
    """

    def __init__(self, result: Any) -> None:
        failed = getattr(result, "files_failed", 0)
        messages = list(getattr(result, "failed_messages", []) or [])
        detail = f"; first: {messages[0]}" if messages else ""
        super().__init__(f"the copy to {getattr(result, 'dst', '?')} failed ({failed} entries){detail}")
        self.result = result

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.result,))

    def __str__(self) -> str:
        return str(self.args[0])


class PathNotWritableError(TaurusToolsError, PermissionError):
    """A folder a copy must write (destination, work dir, report) cannot be made or written.

    Raised before any data moves, with the folder and the reason.
    """

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), self.args)

    def __str__(self) -> str:
        return str(self.args[0])


class DestinationUnreachableError(TaurusToolsError, ConnectionError):
    """A destination cannot be reached or written now (server down, credentials refused,
    folder missing): what was tried and why, never a secret."""

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), self.args)

    def __str__(self) -> str:
        return str(self.args[0])


class CheckpointError(TaurusToolsError, RuntimeError):
    """A checkpoint's final pass did not save everything.

    Attributes
    ----------
    not_saved : dict
        Path (relative to the checkpointed folder) -> why it was not saved; empty when the
        whole pass failed (the message says why).
    """

    def __init__(self, message: str, not_saved: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.not_saved = dict(not_saved or {})

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (str(self.args[0]), self.not_saved))

    def __str__(self) -> str:
        return str(self.args[0])
