"""Datamover backends: how a ``dt*`` command becomes an argv to run.

Three small classes fill one interface (:class:`Backend`):

* :class:`SiteBackend` calls the site's real ``dt*`` executables;
* :class:`SlurmBackend` runs the plain tool (``cp``, ``ls``, ...) as a Slurm job on the
  data-mover partition: ``srun`` when blocking, ``sbatch`` when not;
* :class:`LocalBackend` runs the plain tool on this machine.

:func:`select_backend` picks one in that order.  Backends only *describe* commands
(:class:`~taurus_tools.process.launch.Launch`); :class:`~taurus_tools.process.handle.Handle` runs them.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .._log import get_logger
from ..errors import BackendUnavailableError, CommandNotFoundError, ConfigurationError, SlurmError
from .._names import BACKENDS, MANAGEMENT_COMMANDS, TRANSFER_COMMANDS
from ..process.launch import InlineProgram, Launch, unique_job_name
from ..slurm.client import JobState, SlurmClient
from ..slurm.options import (
    DEFAULT_PARTITION,
    SlurmOptions,
    TimeLimit,
    WithSlurmOptions,
    slurm_options,
    slurm_time,
)

log = get_logger(__name__)

__all__ = [
    "Backend",
    "CopyShard",
    "LocalBackend",
    "SiteBackend",
    "SlurmBackend",
    "BACKENDS",
    "TRANSFER_COMMANDS",
    "MANAGEMENT_COMMANDS",
    "select_backend",
    "find_site_tools",
    "find_tools",
    "slurm_time",
    "srun_argv",
    "usable_cpus",
]

#: Commands the site tools run blocking whatever they are told.
ALWAYS_BLOCKING = frozenset({"dtls"})
#: A site's dtls runs ls under ``srun --pty``, so ls writes to a terminal even when we
#: capture it: columns, quotes around names with spaces, ``?`` for control characters.
#: These make it print what it prints into a pipe on every other backend; options the
#: caller gives come after them and win.
SITE_LS_AS_IN_A_PIPE = ("-1", "--quoting-style=literal", "--show-control-chars")

#: Where ZIH installed the datamover tools before they were on PATH.
HISTORICAL_DT_DIR = "/sw/taurus/tools/slurmtools/default/bin"

StrPath = Union[str, "os.PathLike[str]"]


def srun_argv(
    program: Sequence[str],
    *,
    srun: str = "srun",
    partition: Optional[str] = None,
    account: Optional[str] = None,
    time: TimeLimit = None,
    job_name: Optional[str] = None,
    nodes: Optional[int] = None,
    ntasks: Optional[int] = None,
    exclude: Union[str, Iterable[str], None] = None,
    extra: Sequence[str] = (),
) -> List[str]:
    """The argv of ``srun`` running ``program`` with the given options (all ``--opt=value``)."""
    argv = [srun]
    for opt, value in (
        ("--partition", partition),
        ("--account", account),
        ("--time", slurm_time(time)),
        ("--job-name", job_name),
        ("--nodes", nodes),
        ("--ntasks", ntasks),
    ):
        if value is not None:
            argv.append(f"{opt}={value}")
    if exclude:
        names = [exclude] if isinstance(exclude, str) else list(exclude)
        argv.append("--exclude=" + ",".join(names))
    argv.extend(extra)
    argv.extend(program)
    return argv


class Backend(ABC):
    """How commands reach the data-transfer nodes.

    Attributes
    ----------
    name : str
        ``"site"``, ``"slurm"`` or ``"local"``.
    reason : str
        Why this backend was chosen (shown by ``taurus-tools info``).
    """

    name: str = ""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason

    @abstractmethod
    def commands(self) -> Tuple[str, ...]:
        """The ``dt*`` commands this backend can run here."""

    @abstractmethod
    def launch(self, command: str, args: Sequence[str], *, blocking: bool) -> Launch:
        """Describe how to run ``command args...``."""

    @abstractmethod
    def launch_program(
        self,
        name: str,
        argv: Sequence[str],
        *,
        blocking: bool,
        exclude_nodes: Sequence[str] = (),
        inline: Optional[Callable[[Tuple[str, ...]], InlineProgram]] = None,
    ) -> Launch:
        """Describe how to run an arbitrary program (rclone, ...) where data moves.

        ``exclude_nodes`` keeps Slurm jobs off those nodes; backends without jobs ignore it.
        ``inline`` (see :attr:`Launch.inline`): the same program as a function of this
        process, which backends whose programs run on this machine (local, site) run
        instead of ``argv``; the others ignore it.
        """

    def default_workers(self, wanted: int) -> int:
        """How many copy workers to run when the user did not say: ``wanted`` by default."""
        return wanted

    def which(self, program: str) -> Optional[str]:
        """What to run for ``program`` (rclone, ...) where this backend runs programs; None if absent."""
        return shutil.which(program)

    def launch_copy_shard(self, shard: "CopyShard") -> Launch:
        """Describe how one shard of a parallel copy runs: taurus-tools' own worker, by default."""
        return self.launch_program(shard.name, shard.worker_argv, blocking=True, exclude_nodes=shard.exclude_nodes)

    def ended_job(self, job_id: str) -> Optional[JobState]:
        """How a Slurm job this backend ran ended (state, exit code, nodes); None when the
        backend runs no Slurm jobs or Slurm no longer knows the job."""
        return None

    def usable_nodes(self) -> Optional[List[str]]:
        """The Slurm nodes this backend's jobs may run on now (those ``sinfo`` reports as
        taking jobs, less the nodes its options exclude); None when the backend runs no
        Slurm jobs of its own choosing, or Slurm did not say."""
        return None

    def is_cluster(self) -> bool:
        """Whether commands reach a cluster's data-transfer nodes (True by default)."""
        return True

    def _unknown(self, command: str, detail: str = "") -> CommandNotFoundError:
        return CommandNotFoundError(command, self.commands(), detail or f"{self.name} backend")

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})" if self.reason else self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} reason={self.reason!r}>"


@dataclass(frozen=True)
class CopyShard:
    """One shard of a parallel copy, as a backend needs it to launch the copy.

    Attributes
    ----------
    name : str
        For messages and job names (``copy-shard-3``).
    src, dst : Path
        The copy's source and destination folders.
    worker_argv : tuple of str
        taurus-tools' own worker for this shard, for backends that run programs.
    path_list : Path
        Where a backend that copies with a tool of its own may write the shard's paths.
    paths : callable
        The shard's paths, relative to ``src``, as bytes.
    exclude_nodes : tuple of str
        Slurm nodes to keep the shard off.
    blocking : bool
        For a site tool: wait for the transfer job (``srun``) or submit it (``sbatch``).
    """

    name: str
    src: Path
    dst: Path
    worker_argv: Tuple[str, ...]
    path_list: Path
    paths: Callable[[], Iterable[bytes]]
    exclude_nodes: Tuple[str, ...] = ()
    blocking: bool = True


def usable_cpus() -> int:
    """CPUs this process may use (honours cpusets, e.g. a Slurm allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------- site
def find_tools(
    wanted: Sequence[str],
    places: Sequence[Tuple[Optional[StrPath], str, bool]],
    *,
    enough: Callable[[Dict[str, str]], bool],
    lacking: str,
    env: Optional[Mapping[str, str]] = None,
) -> Tuple[Dict[str, str], List[str]]:
    """Find a family of executables (the ``dt*`` tools, the ``ws_*`` tools) in order of places.

    ``places`` are ``(folder, label, explicit)``; a folder of None means ``PATH``.  The first
    place whose tools are ``enough`` wins.  A folder the user named (``explicit``) must exist
    and hold enough of them, else :class:`ConfigurationError` (``label=folder`` holds
    ``lacking``): never an empty result for a folder given on purpose.  Returns the tools
    found (name -> path) and the places searched.
    """
    environ = os.environ if env is None else env
    searched: List[str] = []
    for folder, label, explicit in places:
        if folder is None:
            found = {name: exe for name in wanted if (exe := shutil.which(name, path=environ.get("PATH")))}
            searched.append(label)
        else:
            given = os.fspath(folder)
            if explicit and not os.path.isdir(given):
                raise ConfigurationError(f"{label}={given!r} is not an existing folder")
            found = _tools_in(given, wanted)
            searched.append(str(Path(given)) if explicit else label)
            if explicit and not enough(found):
                raise ConfigurationError(f"{label}={given!r} holds {lacking}")
        if enough(found):
            return found, searched
    return {}, searched


def find_site_tools(
    tools_dir: Optional[StrPath] = None, env: Optional[Mapping[str, str]] = None
) -> Tuple[Dict[str, str], List[str]]:
    """Find the site's ``dt*`` executables.

    Looks in ``tools_dir``, else ``$TAURUS_TOOLS_DT_DIR`` (either, when given, must hold
    them), then ``PATH``, then the historical ZIH folder.  Returns the tools found
    (command -> path) and the places searched.
    """
    environ = os.environ if env is None else env
    wanted = [*TRANSFER_COMMANDS, *MANAGEMENT_COMMANDS]
    if tools_dir is not None:
        places: List[Tuple[Optional[StrPath], str, bool]] = [(tools_dir, "tools_dir", True)]
    elif environ.get("TAURUS_TOOLS_DT_DIR"):
        places = [(environ["TAURUS_TOOLS_DT_DIR"], "$TAURUS_TOOLS_DT_DIR", True)]
    else:
        places = [(None, "PATH", False), (HISTORICAL_DT_DIR, HISTORICAL_DT_DIR, False)]
    return find_tools(
        wanted, places, enough=bool, lacking=f"none of the datamover tools ({', '.join(wanted)})", env=environ
    )


def _tools_in(folder: str, wanted: Iterable[str]) -> Dict[str, str]:
    found = {}
    for cmd in wanted:
        exe = os.path.join(folder, cmd)
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            found[cmd] = exe
    return found


class SiteBackend(WithSlurmOptions, Backend):
    """The site's own ``dt*`` tools (TU Dresden ZIH style).

    They take ``--account`` and ``--time`` (from ``slurm``, or the ``account`` and ``time``
    keywords) and choose partition and nodes themselves: ``partition`` and
    ``slurm.exclude`` do not reach them.
    """

    name = "site"

    def __init__(
        self,
        tools: Mapping[str, str],
        *,
        account: Optional[str] = None,
        time: TimeLimit = None,
        slurm: Optional[SlurmOptions] = None,
        reason: str = "",
        blocking_last: bool = False,
    ) -> None:
        super().__init__(reason)
        self.tools = dict(tools)
        self.slurm = slurm_options(slurm, "SiteBackend", account=account, time=time)
        #: Put ``--blocking`` after the tool's arguments, where taurus_datamover put it (some
        #: site wrappers only look there); default: before them, where ``--`` cannot hide it.
        self.blocking_last = blocking_last

    def commands(self) -> Tuple[str, ...]:
        return tuple(c for c in (*TRANSFER_COMMANDS, *MANAGEMENT_COMMANDS) if c in self.tools)

    def launch(self, command: str, args: Sequence[str], *, blocking: bool) -> Launch:
        exe = self.tools.get(command)
        if exe is None:
            raise self._unknown(command, "not among the site tools found")
        if command not in TRANSFER_COMMANDS:
            return Launch((exe, *args), name=command)
        options: List[str] = []
        # dtls always blocks; the others only when asked (the original always asked).
        submits = not blocking and command not in ALWAYS_BLOCKING
        if blocking and command not in ALWAYS_BLOCKING:
            options.append("--blocking")
        if self.slurm.account:
            options.append(f"--account={self.slurm.account}")
        if self.slurm.time:
            options.append(f"--time={self.slurm.time}")
        if command == "dtls":
            options.extend(SITE_LS_AS_IN_A_PIPE)
        # Blocking, the tool runs srun, which names the job for us when verbose (the
        # handle sets SLURM_DEBUG; the tool's srun inherits it).
        if self.blocking_last:  # as taurus_datamover did: on every transfer command, dtls too
            rest = [o for o in options if o != "--blocking"]
            argv = (exe, *rest, *args, *(["--blocking"] if blocking else []))
        else:
            argv = (exe, *options, *args)
        return Launch(argv, name=command, submits=submits, runs_srun=not submits)

    def launch_program(
        self,
        name: str,
        argv: Sequence[str],
        *,
        blocking: bool,
        exclude_nodes: Sequence[str] = (),
        inline: Optional[Callable[[Tuple[str, ...]], InlineProgram]] = None,
    ) -> Launch:
        # The dt* tools run only their own tool; other programs run where we are.
        return Launch(tuple(argv), name=name, inline=inline)

    def launch_copy_shard(self, shard: CopyShard) -> Launch:
        """The site tools run only their own tool: ``dtrsync`` reads the shard's paths."""
        with open(shard.path_list, "wb") as out:
            for path in shard.paths():
                out.write(path + b"\0")
        args = ["-a", "--from0", f"--files-from={shard.path_list}", f"{shard.src}/", f"{shard.dst}/"]
        return self.launch("dtrsync", args, blocking=shard.blocking)


# ---------------------------------------------------------------------------- slurm
_WRAPPER = '#!/bin/sh\n# taurus-tools: run the arguments as a command, unquoted and untouched\nexec "$@"\n'


def default_job_log_dir() -> Path:
    """Where Slurm jobs write output the handles read back: shared home by default."""
    env = os.environ.get("TAURUS_TOOLS_JOB_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "taurus-tools" / "jobs"


class SlurmBackend(WithSlurmOptions, Backend):
    """Plain tools as Slurm jobs on the data-mover partition.

    Blocking calls run through ``srun`` (the handle is srun itself); non-blocking calls
    are submitted with ``sbatch`` (they survive the Python process) and the handle
    follows the job, streaming its output files back.  Every job gets the options of
    ``slurm`` (or of the ``partition``, ``account`` and ``time`` keywords); a partition
    that does not exist gives way to Slurm's default one, with a warning.
    """

    name = "slurm"

    def __init__(
        self,
        *,
        partition: Optional[str] = DEFAULT_PARTITION,
        account: Optional[str] = None,
        time: TimeLimit = None,
        slurm: Optional[SlurmOptions] = None,
        job_log_dir: Optional[StrPath] = None,
        client: Optional[SlurmClient] = None,
        reason: str = "",
    ) -> None:
        super().__init__(reason)
        self.client = client or SlurmClient()
        requested = slurm_options(slurm, "SlurmBackend", partition=partition, account=account, time=time)
        self.requested_partition = requested.partition
        #: The options every job gets; ``partition`` as found (None: Slurm's default one).
        self.slurm = requested.replace(partition=self._resolve_partition(requested.partition))
        self.job_log_dir = Path(job_log_dir) if job_log_dir is not None else default_job_log_dir()
        self._wrapper: Optional[str] = None

    def _resolve_partition(self, partition: Optional[str]) -> Optional[str]:
        if partition is None:
            return None
        names, default = self.client.partitions()
        if partition in names:
            return partition
        log.warning(
            "Slurm partition %r does not exist (have: %s); using the default partition %s",
            partition,
            ", ".join(names) or "none",
            default or "(none marked)",
        )
        return None

    def commands(self) -> Tuple[str, ...]:
        return (*TRANSFER_COMMANDS, *MANAGEMENT_COMMANDS)

    def _exe(self, name: str) -> str:
        exe = self.client.which(name)
        if exe is None:
            raise CommandNotFoundError(name, self.commands(), "Slurm client not on PATH")
        return exe

    def launch(self, command: str, args: Sequence[str], *, blocking: bool) -> Launch:
        if command in TRANSFER_COMMANDS:
            return self.launch_program(command, (TRANSFER_COMMANDS[command], *args), blocking=blocking)
        part = [f"--partition={self.partition}"] if self.partition else []
        if command == "dtinfo":
            return Launch((self._exe("sinfo"), *part, *args), name=command)
        if command == "dtqueue":
            user = f"--user={getpass.getuser()}"
            return Launch((self._exe("squeue"), user, *part, *args), name=command)
        if command == "dtcancel":
            return Launch((self._exe("scancel"), *args), name=command)
        raise self._unknown(command)

    def launch_program(
        self,
        name: str,
        argv: Sequence[str],
        *,
        blocking: bool,
        exclude_nodes: Sequence[str] = (),
        inline: Optional[Callable[[Tuple[str, ...]], InlineProgram]] = None,
    ) -> Launch:
        job_name = unique_job_name(name)
        options = self.slurm.excluding(tuple(exclude_nodes))
        if blocking:
            full = srun_argv(
                argv,
                srun=self._exe("srun"),
                partition=options.partition,
                account=options.account,
                time=options.time,
                job_name=job_name,
                nodes=1,
                ntasks=1,
                exclude=options.exclude or None,
            )
            place = _SlurmPlacement(self, name, tuple(argv), blocking, tuple(exclude_nodes))
            return Launch(tuple(full), name=name, job_name=job_name, runs_srun=True, placement=place)
        out = self.job_log_dir / f"{job_name}.out"
        err = self.job_log_dir / f"{job_name}.err"
        full = [
            self._exe("sbatch"),
            "--parsable",
            *options.args(),
            f"--job-name={job_name}",
            "--nodes=1",
            "--ntasks=1",
            f"--output={out}",
            f"--error={err}",
            self._wrapper_script(),
            *argv,
        ]
        place = _SlurmPlacement(self, name, tuple(argv), blocking, tuple(exclude_nodes))
        return Launch(
            tuple(full),
            name=name,
            submits=True,
            parsable=True,
            job_name=job_name,
            job_output=(out, err),
            placement=place,
        )

    def ended_job(self, job_id: str) -> Optional[JobState]:
        return self.client.ended_job_state(job_id)

    def usable_nodes(self) -> Optional[List[str]]:
        try:
            nodes = self.client.usable_nodes(self.partition)
        except SlurmError as exc:
            log.warning("cannot tell which Slurm nodes take jobs: %s", exc)
            return None
        return [n for n in nodes if n not in self.slurm.exclude]

    def which(self, program: str) -> Optional[str]:
        """The program as found here, else its bare name: the compute node's PATH may have it."""
        return shutil.which(program) or program

    def _wrapper_script(self) -> str:
        """A script that runs its arguments: lets sbatch take argv without any shell quoting."""
        if self._wrapper is None:
            self.job_log_dir.mkdir(parents=True, exist_ok=True)
            path = self.job_log_dir / "run-argv.sh"
            if not path.is_file() or path.read_text() != _WRAPPER:
                fd, tmp = tempfile.mkstemp(dir=self.job_log_dir, prefix=".run-argv.")
                with os.fdopen(fd, "w") as fh:
                    fh.write(_WRAPPER)
                os.chmod(tmp, 0o755)
                os.replace(tmp, path)
            self._wrapper = str(path)
        return self._wrapper


@dataclass(frozen=True)
class _SlurmPlacement:
    """A :class:`~taurus_tools.process.launch.Placement`: the program launched again by its
    backend, with more nodes excluded."""

    backend: SlurmBackend
    name: str
    argv: Tuple[str, ...]
    blocking: bool
    exclude_nodes: Tuple[str, ...]

    def excluding(self, nodes: Tuple[str, ...]) -> Launch:
        more = tuple(dict.fromkeys((*self.exclude_nodes, *nodes)))
        return self.backend.launch_program(self.name, self.argv, blocking=self.blocking, exclude_nodes=more)

    def usable_nodes(self) -> Optional[List[str]]:
        nodes = self.backend.usable_nodes()
        return None if nodes is None else [n for n in nodes if n not in self.exclude_nodes]


# ---------------------------------------------------------------------------- local
class LocalBackend(Backend):
    """Plain tools on this machine: the default on laptops and CI machines."""

    name = "local"

    def __init__(self, reason: str = "", env: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(reason)
        self._path = (env or os.environ).get("PATH")
        self._which: Dict[str, Optional[str]] = {}

    def _tool(self, tool: str) -> Optional[str]:
        if tool not in self._which:
            self._which[tool] = shutil.which(tool, path=self._path)
        return self._which[tool]

    def commands(self) -> Tuple[str, ...]:
        return tuple(c for c, tool in TRANSFER_COMMANDS.items() if self._tool(tool))

    def launch(self, command: str, args: Sequence[str], *, blocking: bool) -> Launch:
        tool = TRANSFER_COMMANDS.get(command)
        if tool is None:
            raise self._unknown(command, "the local backend runs no Slurm management commands")
        exe = self._tool(tool)
        if exe is None:
            raise self._unknown(command, f"{tool!r} is not installed on this machine")
        # The bare name keeps the tool's messages as users know them ("ls: cannot access");
        # the path found once spares a PATH search on every call.
        return Launch((tool, *args), name=command, executable=exe if os.path.isabs(exe) else None)

    def launch_program(
        self,
        name: str,
        argv: Sequence[str],
        *,
        blocking: bool,
        exclude_nodes: Sequence[str] = (),
        inline: Optional[Callable[[Tuple[str, ...]], InlineProgram]] = None,
    ) -> Launch:
        return Launch(tuple(argv), name=name, inline=inline)

    def default_workers(self, wanted: int) -> int:
        """At most one worker per usable CPU: they all run on this machine."""
        return min(wanted, usable_cpus())

    def is_cluster(self) -> bool:
        """False: commands run on this machine."""
        return False

    def which(self, program: str) -> Optional[str]:
        return shutil.which(program, path=self._path)


# ---------------------------------------------------------------------------- choice


def select_backend(
    backend: str = "auto",
    *,
    tools_dir: Optional[StrPath] = None,
    partition: Optional[str] = DEFAULT_PARTITION,
    account: Optional[str] = None,
    time: TimeLimit = None,
    slurm: Optional[SlurmOptions] = None,
    job_log_dir: Optional[StrPath] = None,
    env: Optional[Mapping[str, str]] = None,
    blocking_last: bool = False,
) -> Backend:
    """Build the backend asked for; ``"auto"`` tries site, then slurm, then local.

    ``$TAURUS_TOOLS_BACKEND`` overrides ``"auto"`` (handy in job scripts and CI).
    ``slurm`` (or ``partition``, ``account`` and ``time``) go to the site and slurm
    backends; ``blocking_last`` is passed to a :class:`SiteBackend`.
    """
    options = slurm_options(slurm, "select_backend", partition=partition, account=account, time=time)
    environ = os.environ if env is None else env
    if backend == "auto" and environ.get("TAURUS_TOOLS_BACKEND"):
        backend = environ["TAURUS_TOOLS_BACKEND"]
        via_env = " (from $TAURUS_TOOLS_BACKEND)"
    else:
        via_env = ""
    if backend not in BACKENDS:
        raise ConfigurationError(
            f"backend={backend!r}{via_env} is not one of: {', '.join(BACKENDS)}"
        )
    client = SlurmClient(env)

    def slurm_backend(reason: str) -> SlurmBackend:
        return SlurmBackend(
            slurm=options,
            job_log_dir=job_log_dir,
            client=client,
            reason=reason,
        )

    if backend in ("auto", "site"):
        tools, searched = find_site_tools(tools_dir, environ)
        where = ", ".join(searched)
        if tools:
            folders = sorted({os.path.dirname(p) for p in tools.values()})
            reason = f"found datamover tools in {', '.join(folders)}: {', '.join(sorted(tools))}{via_env}"
            chosen: Backend = SiteBackend(tools, slurm=options, reason=reason, blocking_last=blocking_last)
            log.info("datamover backend: %s", chosen)
            return chosen
        if backend == "site":
            raise BackendUnavailableError(f"no datamover (dt*) tools found; searched {where}{via_env}")
        no_tools = f"no dt* tools in {where}"
    else:
        no_tools = f"asked for {backend!r}{via_env}"
    ok, why = client.available() if backend in ("auto", "slurm") else (False, "")
    if backend == "slurm" and not ok:
        raise BackendUnavailableError(f"Slurm is not usable here: {why}")
    if ok:
        chosen = slurm_backend(f"{no_tools}; Slurm answers ({why})")
        chosen.reason += f"; jobs go to partition {chosen.partition or '(default)'}"
    elif backend == "auto":
        chosen = LocalBackend(f"{no_tools}; no Slurm ({why}); running tools on this machine", env)
    else:
        chosen = LocalBackend(f"{no_tools}; running tools on this machine", env)
    log.info("datamover backend: %s", chosen)
    return chosen
