"""``Datamover``: every datamover command as a method that returns a running handle at once."""

from __future__ import annotations

import concurrent.futures
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence, Tuple, Union

from .._log import get_logger
from .backends import (
    Backend,
    StrPath,
    select_backend,
    srun_argv,
)
from ..errors import CommandNotFoundError, ConfigurationError, UnknownCommandError
from .._names import COMMANDS
from ..process.launch import Launch, unique_job_name
from ..process.handle import Handle
from ..slurm.client import SlurmClient
from ..slurm.options import DEFAULT_PARTITION, SlurmOptions, TimeLimit, WithSlurmOptions, node_names, slurm_options

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import TypedDict, Unpack
    else:
        from typing_extensions import TypedDict, Unpack

    class CallOptions(TypedDict, total=False):
        """Library options every command method takes (keyword-only)."""

        blocking: Optional[bool]
        cwd: Optional[StrPath]
        env: Optional[Mapping[str, str]]
        input: Union[str, bytes, None]
        text: bool
        on_output: Optional[Callable[[str, bytes], None]]
        after: Iterable["concurrent.futures.Future[Any]"]
        on: str


log = get_logger(__name__)

__all__ = ["Datamover", "COMMANDS"]


Arg = Union[str, bytes, "os.PathLike[str]"]


def _argv(args: Iterable[Arg]) -> Tuple[str, ...]:
    out = []
    for i, arg in enumerate(args):
        if isinstance(arg, (str, bytes, os.PathLike)):
            out.append(os.fsdecode(arg))
        else:
            raise TypeError(
                f"argument {i + 1} is {type(arg).__name__} ({arg!r}); pass str, bytes or a "
                "path-like, as on a command line (e.g. str(n))"
            )
    return tuple(out)


class Datamover(WithSlurmOptions):
    """Run datamover commands (``dtcp``, ``dtls``, ...) in the background.

    Parameters
    ----------
    backend : {"auto", "site", "slurm", "local"} or Backend
        ``"auto"`` uses the site's ``dt*`` tools when found, else Slurm when it answers,
        else this machine.  ``$TAURUS_TOOLS_BACKEND`` overrides ``"auto"``.
    tools_dir : path-like, optional
        Folder with the site's ``dt*`` tools (searched before ``$TAURUS_TOOLS_DT_DIR``,
        ``PATH`` and ``/sw/taurus/tools/slurmtools/default/bin``).
    partition : str, optional
        Slurm partition of the data-transfer nodes for the slurm backend; a partition
        that does not exist falls back to the default one, with a warning.
    account : str, optional
        Slurm account to charge (``--account``).
    time : str, int or timedelta, optional
        Job time limit (``--time``): minutes, ``HH:MM:SS``, ``D-HH:MM:SS``, ...
    slurm : SlurmOptions, optional
        Partition, account, time limit and nodes to avoid in one validated object,
        instead of the three keywords above (giving both is an error).
        Default for the commands' ``blocking`` option.  Blocking commands keep a local
        process (``srun``) for the whole transfer; non-blocking ones submit a batch job
        that survives this Python process, and the handle follows the job.  Either way
        the method returns at once.
    job_log_dir : path-like, optional
        Where non-blocking Slurm jobs write the output the handle reads back (must be
        visible from the compute nodes); default ``~/.cache/taurus-tools/jobs``.

    Attributes
    ----------
    backend : Backend
        The backend in use; ``backend.name`` and ``backend.reason`` say which and why.
    slurm : SlurmOptions
        The Slurm options asked for (``partition``, ``account`` and ``time`` read them;
        the slurm backend's ``partition`` is the one its jobs use).

    Examples
    --------
    >>> dm = Datamover()
    >>> proc = dm.dtls("-lh", "/tmp")
    >>> waitfor(proc)
    0
    >>> out, err = proc.communicate()
    """

    def __init__(
        self,
        backend: Union[str, Backend] = "auto",
        *,
        tools_dir: Optional[StrPath] = None,
        partition: Optional[str] = DEFAULT_PARTITION,
        account: Optional[str] = None,
        time: TimeLimit = None,
        blocking: bool = True,
        job_log_dir: Optional[StrPath] = None,
        slurm: Optional[SlurmOptions] = None,
    ) -> None:
        self.slurm = slurm_options(slurm, "Datamover", partition=partition, account=account, time=time)
        if not isinstance(blocking, bool):
            raise ConfigurationError(f"blocking must be True or False, got {blocking!r}")
        self.blocking = blocking
        if isinstance(backend, Backend):
            self.backend = backend
        elif isinstance(backend, str):
            self.backend = select_backend(backend, tools_dir=tools_dir, slurm=self.slurm, job_log_dir=job_log_dir)
        else:
            raise ConfigurationError(
                f"backend must be 'auto', 'site', 'slurm', 'local' or a Backend, got {backend!r}"
            )
        self._slurm = SlurmClient()

    def __repr__(self) -> str:
        return f"<Datamover backend={self.backend.name!r}>"

    if not TYPE_CHECKING:  # type checkers keep reporting misspelt attributes

        def __getattr__(self, name: str) -> Any:
            """Only for attributes that do not exist: ``dm.dtfoo`` lists the commands there are."""
            if name.startswith("dt"):
                backend = self.__dict__.get("backend")
                available = backend.commands() if backend is not None else COMMANDS
                raise UnknownCommandError(name, available, "not a datamover command")
            error = AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            error.name, error.obj = name, self  # what Python >= 3.10 sets (for "Did you mean")
            raise error

    def commands(self) -> Tuple[str, ...]:
        """The ``dt*`` commands this backend can run."""
        return self.backend.commands()

    # ------------------------------------------------------------------ generic
    def launch(self, command: str, *args: Arg, blocking: Optional[bool] = None) -> Launch:
        """Describe (without running) how ``command`` would run: argv and job handling."""
        if command not in COMMANDS:
            raise CommandNotFoundError(command, self.commands(), "not a datamover command")
        use_blocking = self.blocking if blocking is None else blocking
        return self.backend.launch(command, _argv(args), blocking=use_blocking)

    def call(
        self,
        command: str,
        *args: Arg,
        blocking: Optional[bool] = None,
        cwd: Optional[StrPath] = None,
        env: Optional[Mapping[str, str]] = None,
        input: Union[str, bytes, None] = None,
        text: bool = True,
        on_output: Optional[Callable[[str, bytes], None]] = None,
        after: Iterable["concurrent.futures.Future[Any]"] = (),
        on: str = "success",
    ) -> Handle:
        """Start ``command`` (``"dtcp"``, ...) with Linux arguments; return its handle at once.

        Parameters
        ----------
        command : str
            One of :data:`COMMANDS` that the backend has.
        *args : str, bytes or path-like
            The wrapped tool's arguments, exactly as on a command line (no shell).
        blocking : bool, optional
            Override the Datamover's default (see the class).
        cwd : path-like, optional
            Working directory for the command (and its job).
        env : mapping, optional
            Complete environment for the command, as for :class:`subprocess.Popen`.
        input : str or bytes, optional
            Sent to the command's stdin.
        text : bool
            str output (default) or bytes.
        on_output : callable, optional
            Called as ``on_output("stdout" or "stderr", data)`` as output arrives (it is
            captured all the same), e.g. to show it live.
        after : iterable of futures
            Start only once these have ended: handles, started copies, ``then()``
            futures.  The handle is returned at once, pending until then.
        on : {"success", "always"}
            ``"success"``: if one of ``after`` failed, this never runs and fails with
            :class:`DependencyError` (``__cause__``: the root error).  ``"always"``: run
            regardless, e.g. to clean up.

        Examples
        --------
        >>> copied = dm.dtcp("-r", src, scratch)
        >>> listed = dm.dtls("-l", scratch, after=[copied])
        >>> cleaned = dm.dtrm("-r", scratch, after=[listed], on="always")
        """
        launch = self.launch(command, *args, blocking=blocking)
        return self.start(
            launch, cwd=cwd, env=env, input=input, text=text, on_output=on_output, after=after, on=on
        )

    def start(
        self,
        launch: Launch,
        *,
        cwd: Optional[StrPath] = None,
        env: Optional[Mapping[str, str]] = None,
        input: Union[str, bytes, None] = None,
        text: bool = True,
        on_output: Optional[Callable[[str, bytes], None]] = None,
        after: Iterable["concurrent.futures.Future[Any]"] = (),
        on: str = "success",
    ) -> Handle:
        """Run a :class:`Launch` (from :meth:`launch`, or a backend's own) as a handle; options as :meth:`call`."""
        if cwd is not None and not os.path.isdir(cwd):
            raise ConfigurationError(f"cwd={os.fspath(cwd)!r} is not an existing folder")
        slurm = self._slurm if env is None else SlurmClient(env)
        return Handle(
            launch,
            cwd=cwd,
            env=env,
            input=input,
            text=text,
            slurm=slurm,
            on_output=on_output,
            after=after,
            on=on,
            backend=self.backend.name,
        )

    # ------------------------------------------------------------------ transfers
    def dtcp(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Copy like ``cp``: ``dm.dtcp("-r", src, dst)``."""
        return self.call("dtcp", *args, **options)

    def dtmv(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Move like ``mv``: ``dm.dtmv(src, dst)``."""
        return self.call("dtmv", *args, **options)

    def dtrm(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Remove like ``rm``: ``dm.dtrm("-r", path)``."""
        return self.call("dtrm", *args, **options)

    def dtls(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """List like ``ls``: ``dm.dtls("-lh", path)`` (always blocking on site tools)."""
        return self.call("dtls", *args, **options)

    def dtrsync(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Synchronise like ``rsync``: ``dm.dtrsync("-a", src + "/", dst)``."""
        return self.call("dtrsync", *args, **options)

    def dttar(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Archive like ``tar``: ``dm.dttar("-czf", archive, folder)``."""
        return self.call("dttar", *args, **options)

    def dtwget(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Download like ``wget``: ``dm.dtwget("-P", folder, "-i", urls_file)``."""
        return self.call("dtwget", *args, **options)

    # ------------------------------------------------------------------ management
    def dtinfo(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Transfer nodes and their state, like ``sinfo`` (site and slurm backends)."""
        return self.call("dtinfo", *args, **options)

    def dtqueue(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Your transfer jobs, like ``squeue -u $USER`` (site and slurm backends)."""
        return self.call("dtqueue", *args, **options)

    def dtcancel(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Cancel transfer jobs by id, like ``scancel`` (site and slurm backends)."""
        return self.call("dtcancel", *args, **options)

    # ------------------------------------------------------------------ other programs
    def run(self, program: Arg, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Run any program where the backend moves data: a Slurm job (``srun``, or ``sbatch``
        with ``blocking=False``) on the slurm backend, a process on this machine on the local
        one; options as :meth:`call` (``after=``/``on=`` included).

        ``program`` is a path, or a name looked up on ``PATH`` where it will run.

        Examples
        --------
        >>> step = dm.run(sys.executable, "analyse.py", scratch, after=[staged_in])
        """
        blocking = options.pop("blocking", None)
        name = os.fsdecode(program) if isinstance(program, (str, bytes, os.PathLike)) else program
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"program must be a non-empty path or name, got {program!r}")
        exe = name if os.sep in name else self.backend.which(name)
        if exe is None:
            raise CommandNotFoundError(name, (), "not on PATH")
        launch = self.backend.launch_program(
            os.path.basename(name),
            (exe, *_argv(args)),
            blocking=self.blocking if blocking is None else blocking,
        )
        return self.start(launch, **options)  # type: ignore[misc]  # blocking was popped above

    def rclone(self, *args: Arg, **options: Unpack[CallOptions]) -> Handle:
        """Run ``rclone`` where the backend moves data (a Slurm job on the slurm backend).

        The executable is the one on ``PATH`` (``pip install taurus-tools[rclone]`` puts a
        current one there).  Credentials belong in the environment
        (``RCLONE_CONFIG_<REMOTE>_...``) or rclone's config file, never in ``args``.
        """
        if self.backend.which("rclone") is None:
            raise CommandNotFoundError("rclone", self.commands(), "not on PATH; pip install 'taurus-tools[rclone]'")
        return self.run("rclone", *args, **options)

    def srun(
        self,
        *args: Arg,
        nodes: Optional[int] = None,
        ntasks: Optional[int] = None,
        partition: Optional[str] = None,
        exclude: Union[str, Sequence[str], None] = None,
        account: Optional[str] = None,
        time: TimeLimit = None,
        job_name: Optional[str] = None,
        extra: Sequence[str] = (),
        cwd: Optional[StrPath] = None,
        env: Optional[Mapping[str, str]] = None,
        input: Union[str, bytes, None] = None,
        text: bool = True,
        on_output: Optional[Callable[[str, bytes], None]] = None,
        after: Iterable["concurrent.futures.Future[Any]"] = (),
        on: str = "success",
    ) -> Handle:
        """Run a program with ``srun`` (needs Slurm, whatever the backend).

        Parameters
        ----------
        *args : str or path-like
            The program and its arguments.
        nodes, ntasks : int, optional
            ``--nodes`` / ``--ntasks``.
        partition : str, optional
            ``--partition``; default: Slurm's default partition.
        exclude : str or list of str, optional
            Nodes to keep out (``--exclude``).
        account, time : optional
            Default to the Datamover's.
        job_name : str, optional
            ``--job-name``; default a unique ``tt-srun-...`` name.
        extra : sequence of str
            More srun options, inserted before the program.
        cwd, env, input, text, on_output, after, on
            As for :meth:`call`.
        """
        program = _argv(args)
        if not program:
            raise ConfigurationError("srun needs a program to run, e.g. dm.srun('hostname')")
        for label, value in (("nodes", nodes), ("ntasks", ntasks)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigurationError(f"{label} must be a positive int, got {value!r}")
        exe = self._slurm.which("srun")
        if exe is None:
            raise CommandNotFoundError("srun", (), "Slurm is not installed on this machine")
        name = job_name or unique_job_name("srun")
        options = SlurmOptions(
            partition=partition,
            account=account if account is not None else self.account,
            time=time if time is not None else self.time,
            exclude=node_names("exclude", exclude),
        )
        argv = srun_argv(
            program,
            srun=exe,
            partition=options.partition,
            account=options.account,
            time=options.time,
            job_name=name,
            nodes=nodes,
            ntasks=ntasks,
            exclude=options.exclude,
            extra=_argv(extra),
        )
        launch = Launch(tuple(argv), name="srun", job_name=name)
        return self.start(
            launch, cwd=cwd, env=env, input=input, text=text, on_output=on_output, after=after, on=on
        )
