"""A throw-away Slurm cluster for tests: one node, or several on this one machine.

:class:`SlurmCluster` writes a ``slurm.conf`` below a base directory, starts
``slurmctld`` and ``slurmd`` as child processes (no systemd, no munge: the
cluster uses ``auth/none``) and tears everything down again, including job
step daemons (``slurmstepd``) and job processes that outlive their daemons.

Each instance picks free TCP ports at start-up, so several clusters (for
example parallel test runs, or a cluster started by hand) can run on one
machine side by side.  Every client command must be pointed at the right
cluster with ``SLURM_CONF``; see :attr:`SlurmCluster.env`.

By default the cluster has one node, ``localhost``, and two partitions, ``debug``
(the default) and ``datamover``, both ``OverSubscribe=FORCE:8`` (by default) so that many
small jobs run at the same time on two cores.

With ``nodes=["n1", "n2", ...]`` it has one ``slurmd`` per node, all on 127.0.0.1, each
on its own port (Slurm's "multiple slurmd" mode: Debian's slurm-wlm 22.05 accepts a
``Port`` per node and ``slurmd -N NAME``), each with its own spool directory, pid file
and log (``%n`` in the paths).  Run as root with ``unshare`` (util-linux) at hand, each
``slurmd`` starts in its own UTS namespace whose host name is the node's name, so
``hostname`` inside a job says the node (``$SLURMD_NODENAME`` says it in any case), and
a node may be given paths to hide (a read-only empty tmpfs over them, in the node's own
mount namespace): a data-mover node that lacks the driver's Python or package.  The
namespaces live exactly as long as their processes; nothing is mounted on the host.

This module needs only the standard library and :mod:`psutil`.

Examples
--------
>>> with SlurmCluster("/tmp/my-cluster") as cluster:          # doctest: +SKIP
...     env = {**os.environ, **cluster.env}
...     subprocess.run(["srun", "-p", "datamover", "true"], env=env, check=True)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

__all__ = [
    "ELSEWHERE_NODE",
    "ELSEWHERE_PARTITION",
    "MULTINODE_NAMES",
    "NODE_UP_STATES",
    "SLURM_ENV_PREFIXES",
    "SlurmCluster",
    "SlurmClusterError",
    "find_slurm_binary",
    "missing_slurm_binaries",
    "slurm_available",
]

#: Where Debian installs the daemons; often not on a normal user's ``PATH``.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

#: Prefixes of environment variables that Slurm clients and daemons read.
#: They are removed from the environment of everything this module starts, so
#: that e.g. running the tests inside a Slurm job does not leak into the
#: throw-away cluster.
SLURM_ENV_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCANCEL_")

#: Unix socket paths (``sun_path``) are limited to 108 bytes; slurmd creates
#: sockets named ``<node>_<jobid>.<stepid>`` in its spool directory.
_MAX_SPOOL_DIR_LEN = 60

_NODE_NAME = "localhost"
_PARTITIONS = ("debug", "datamover")

#: The compute nodes of the multi-node test cluster.
MULTINODE_NAMES = ("n1", "n2", "n3", "n4")
#: Its fifth node, alone in its partition: the one that may be given paths to hide.
ELSEWHERE_NODE, ELSEWHERE_PARTITION = "n5", "elsewhere"

#: Node states (``sinfo``'s ``%t`` abbreviations) of a node that is up and takes jobs:
#: idle, partly or fully allocated, finishing jobs (``comp``: a job stays COMPLETING
#: until its processes are gone, for a moment after every job), or holding a spot for
#: a pending job (``plnd``).  A suffix such as ``*`` (not responding) or a state such
#: as ``down``, ``drain`` or ``unk`` means the node is not usable.
NODE_UP_STATES = frozenset({"idle", "mix", "alloc", "comp", "plnd"})


class SlurmClusterError(RuntimeError):
    """The cluster could not be started (the message includes the daemon logs)."""


def find_slurm_binary(name: str) -> str | None:
    """Find a Slurm program on ``PATH`` or in the usual ``sbin`` directories.

    Parameters
    ----------
    name : str
        Program name, e.g. ``"slurmctld"`` or ``"srun"``.

    Returns
    -------
    str or None
        Absolute path of the program, or ``None`` if it is not installed.
    """
    found = shutil.which(name)
    if found is None:
        found = shutil.which(name, path=os.pathsep.join(_SBIN_DIRS))
    return found


#: Programs this module and the tests need.
_REQUIRED = ("slurmctld", "slurmd", "sinfo", "squeue", "scancel", "scontrol", "srun", "sbatch")


def missing_slurm_binaries() -> list[str]:
    """List the Slurm programs needed here that are not installed.

    Returns
    -------
    list of str
        Names among ``slurmctld``, ``slurmd``, ``sinfo``, ``squeue``,
        ``scancel``, ``scontrol``, ``srun`` and ``sbatch`` that were not found.
    """
    return [name for name in _REQUIRED if find_slurm_binary(name) is None]


def slurm_available() -> bool:
    """Tell whether every Slurm program needed here is installed.

    Returns
    -------
    bool
        ``True`` if :func:`missing_slurm_binaries` is empty.
    """
    return not missing_slurm_binaries()


def _free_tcp_ports(count: int) -> list[int]:
    """Ask the kernel for ``count`` distinct currently unused TCP ports on 127.0.0.1.

    All sockets are held open until every port is chosen, so the ports are
    distinct.  Another process may still grab a port before the daemon binds
    it; :meth:`SlurmCluster.start` retries with new ports in that case.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _clean_environ() -> dict[str, str]:
    """Return a copy of ``os.environ`` without Slurm's own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SLURM_ENV_PREFIXES)}


def _tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of a text file, or a note if it is unreadable."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty>"


class SlurmCluster:
    """A Slurm cluster (one node, or several) running as child processes of this process.

    Parameters
    ----------
    base_dir : str or os.PathLike
        Directory for ``slurm.conf``, state, spool, logs and pid files.  It is
        created if missing and is not removed by :meth:`stop` (the logs stay
        for inspection).
    nodes : sequence of str, optional
        Names of the compute nodes, one ``slurmd`` each (see the module's notes).
        Default: the single node ``localhost``, with the logs ``slurmd.log`` and
        ``slurmd.out``; with names, ``slurmd-NAME.log`` and ``slurmd-NAME.out``.
    partitions : mapping of str to sequence of str, optional
        Partition name to its nodes; the first is the default partition.  Default:
        ``debug`` and ``datamover``, each with every node.  A node in no partition
        runs no job.
    hidden : mapping of str to sequence of str, optional
        Node name to absolute paths that node must not see (an empty read-only
        tmpfs over each, in the node's own mount namespace).  Needs root and
        ``unshare``.
    cpus : int, optional
        CPUs of the node.  Defaults to 2, or fewer if this process may use
        fewer (a node configured with more CPUs than it has is drained).
    real_memory : int, optional
        ``RealMemory`` of the node in MB; must not exceed what ``slurmd -C``
        reports.
    kill_wait : int, optional
        Slurm's ``KillWait``: seconds between SIGTERM and SIGKILL when a job
        is cancelled or times out.  Slurm's default is 30; 5 keeps tests fast.
    min_job_age : int, optional
        Slurm's ``MinJobAge``: seconds a finished job stays visible to
        ``scontrol show job`` (there is no accounting database).
    oversubscribe : int, optional
        Jobs that may share one CPU (both partitions are
        ``OverSubscribe=FORCE:<oversubscribe>``); 8 by default, so 16 small jobs
        run at once on two CPUs.  A fan-out benchmark raises it.

    Attributes
    ----------
    base_dir : pathlib.Path
        The base directory.
    conf_path : pathlib.Path
        Path of the generated ``slurm.conf``.
    log_dir : pathlib.Path
        Directory of the daemons' log files (``slurmctld.log``, ``slurmd.log``,
        and the daemons' own stdout/stderr in ``*.out``).
    ctld_port, slurmd_port : int or None
        TCP ports of the running daemons (``None`` before :meth:`start`).

    Examples
    --------
    >>> cluster = SlurmCluster(tmp_path).start()                 # doctest: +SKIP
    >>> subprocess.run(["sinfo"], env={**os.environ, **cluster.env})  # doctest: +SKIP
    >>> cluster.stop()                                           # doctest: +SKIP
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        cpus: int | None = None,
        real_memory: int = 2000,
        kill_wait: int = 5,
        min_job_age: int = 300,
        oversubscribe: int = 8,
        nodes: Sequence[str] | None = None,
        partitions: Mapping[str, Sequence[str]] | None = None,
        hidden: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        #: Several named nodes (one slurmd each), not the single ``localhost``.
        self.multinode = nodes is not None
        self.nodes: tuple[str, ...] = tuple(nodes) if nodes is not None else (_NODE_NAME,)
        if not self.nodes or len(set(self.nodes)) != len(self.nodes):
            raise ValueError(f"nodes must be distinct names, got {nodes!r}")
        if partitions is None:
            partitions = {part: self.nodes for part in _PARTITIONS}
        self.partitions: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in partitions.items()}
        self.hidden: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in (hidden or {}).items()}
        unknown = {n for ns in (*self.partitions.values(), self.hidden) for n in ns} - set(self.nodes)
        if unknown:
            raise ValueError(f"partitions or hidden name nodes the cluster does not have: {sorted(unknown)}")
        if any(not os.path.isabs(path) for paths in self.hidden.values() for path in paths):
            raise ValueError(f"hidden paths must be absolute, got {self.hidden!r}")
        self.conf_path = self.base_dir / "slurm.conf"
        self.log_dir = self.base_dir / "log"
        self.state_dir = self.base_dir / "state"
        self.spool_dir = self.base_dir / "spool"
        self._own_spool_tmp: Path | None = None
        if cpus is None:
            cpus = max(1, min(2, len(os.sched_getaffinity(0))))
        self.cpus = cpus
        self.real_memory = real_memory
        self.kill_wait = kill_wait
        self.min_job_age = min_job_age
        if not 1 <= oversubscribe <= 1000:
            raise ValueError(f"oversubscribe must be 1 to 1000 jobs per CPU, got {oversubscribe!r}")
        self.oversubscribe = oversubscribe
        self.ctld_port: int | None = None
        #: The port of every node's slurmd (the single node's: :attr:`slurmd_port`).
        self.node_ports: dict[str, int] = {}
        self._ctld: subprocess.Popen[bytes] | None = None
        self._slurmds: dict[str, subprocess.Popen[bytes]] = {}
        self._out_files: list[IO[bytes]] = []

    # ------------------------------------------------------------------ API

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point Slurm clients at this cluster.

        Returns
        -------
        dict of str to str
            ``{"SLURM_CONF": <path of slurm.conf>}``; merge it into a copy
            of ``os.environ``.
        """
        return {"SLURM_CONF": str(self.conf_path)}

    @property
    def slurmd_port(self) -> int | None:
        """The first node's slurmd port (``None`` before :meth:`start`)."""
        return self.node_ports.get(self.nodes[0])

    @property
    def _slurmd(self) -> subprocess.Popen[bytes] | None:
        """The first node's slurmd process (the only one of a single-node cluster)."""
        return self._slurmds.get(self.nodes[0])

    @property
    def running(self) -> bool:
        """``True`` while the controller and every node's slurmd started by :meth:`start` are alive."""
        procs = (self._ctld, *(self._slurmds.get(n) for n in self.nodes))
        return all(p is not None and p.poll() is None for p in procs)

    @property
    def namespaced(self) -> bool:
        """Whether each node's slurmd runs in its own UTS namespace named after the node.

        True for a multi-node cluster run by root where ``unshare`` is installed.
        """
        return self.multinode and os.geteuid() == 0 and shutil.which("unshare") is not None

    def slurmd_log(self, node: str) -> Path:
        """Path of ``node``'s slurmd log file."""
        return self.log_dir / ("slurmd.log" if not self.multinode else f"slurmd-{node}.log")

    def client_env(self) -> dict[str, str]:
        """Return a full environment for running Slurm clients on this cluster.

        Returns
        -------
        dict of str to str
            ``os.environ`` without inherited Slurm variables, plus :attr:`env`.
        """
        return {**_clean_environ(), **self.env}

    def job_fields(self, job_id: str, *, check: bool = True) -> dict[str, str]:
        """The fields of ``scontrol show job -o JOB`` (``JobState``, ``Restarts``, ...), read
        here, apart from the code under test.  Command= and WorkDir= echo user text and come
        after the fields tests read: the first occurrence of a name is Slurm's own.  With
        ``check=False`` a job scontrol does not know gives ``{}``."""
        out = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=check).stdout
        fields: dict[str, str] = {}
        for tok in out.split():
            key, sep, value = tok.partition("=")
            if sep:
                fields.setdefault(key, value)
        return fields

    def run(
        self, args: Sequence[str], *, timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a client command (e.g. ``["squeue"]``) against this cluster.

        Parameters
        ----------
        args : sequence of str
            Command and arguments.
        timeout : float, optional
            Seconds before the command is killed.
        check : bool, optional
            Raise :class:`subprocess.CalledProcessError` on a non-zero exit.

        Returns
        -------
        subprocess.CompletedProcess
            With ``stdout`` and ``stderr`` as text.
        """
        return subprocess.run(
            list(args),
            env=self.client_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def squeue_ids(self, *, timeout: float = 30) -> list[int]:
        """List the ids of all jobs ``squeue`` shows, of every user and partition.

        ``squeue`` shows jobs that are not finished yet (pending, running,
        suspended, completing, ...), so an empty list means "no job left".
        Finished jobs stay visible to ``scontrol show job`` for ``MinJobAge``
        seconds but not to ``squeue``.

        Parameters
        ----------
        timeout : float, optional
            Seconds before ``squeue`` is given up
            (:class:`subprocess.TimeoutExpired`).

        Returns
        -------
        list of int
            Job ids (one per array task), in ``squeue``'s order.
        """
        out = self.run(["squeue", "--all", "--noheader", "--format=%A"], timeout=timeout).stdout
        return [int(word) for word in out.split()]

    def partition_states(self, *, timeout: float = 30) -> dict[str, str]:
        """Map every partition to the state of its node, as ``sinfo`` abbreviates it.

        The state changes behind the caller's back (``comp`` for a moment after
        every job), so tests wait for the state they need instead of sampling it
        once.

        Parameters
        ----------
        timeout : float, optional
            Seconds before ``sinfo`` is given up
            (:class:`subprocess.TimeoutExpired`).

        Returns
        -------
        dict of str to str
            E.g. ``{"debug": "idle", "datamover": "idle"}``; see
            :data:`NODE_UP_STATES`.

        Raises
        ------
        subprocess.CalledProcessError
            If ``sinfo`` fails (e.g. the controller does not answer).
        """
        out = self.run(["sinfo", "--noheader", "--format=%R %t"], timeout=timeout).stdout
        return _parse_states(out)

    def node_states(self, *, timeout: float = 30) -> dict[str, str]:
        """Map every node to its state, as ``sinfo`` abbreviates it (see :data:`NODE_UP_STATES`).

        Parameters
        ----------
        timeout : float, optional
            Seconds before ``sinfo`` is given up (:class:`subprocess.TimeoutExpired`).

        Returns
        -------
        dict of str to str
            E.g. ``{"n1": "idle", "n2": "down*"}``.
        """
        out = self.run(["sinfo", "--noheader", "--Node", "--format=%N %t"], timeout=timeout).stdout
        return _parse_states(out)

    def node_processes(self, node: str) -> list[psutil.Process]:
        """The live processes of one node: its slurmd, step daemons and job processes.

        Recognised by the node's slurmd process, ``$SLURMD_NODENAME`` (every job
        process has it) and, for step daemons, their sockets and files in the node's
        own spool directory.

        Parameters
        ----------
        node : str
            A node of this cluster.

        Returns
        -------
        list of psutil.Process
            Zombies left out.
        """
        if node not in self.nodes:
            raise ValueError(f"no node {node!r} in this cluster (have {', '.join(self.nodes)})")
        daemon = self._slurmds.get(node)
        root = str(self._node_spool(node)) + os.sep
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE or not self._belongs_here(proc):
                    continue
                if daemon is not None and proc.pid == daemon.pid:
                    found.append(proc)
                elif proc.environ().get("SLURMD_NODENAME") == node and proc.pid not in self._spared():
                    found.append(proc)
                elif proc.name().startswith("slurmstepd") and _uses_path(proc, root):
                    found.append(proc)
            except psutil.Error:
                pass
        return found

    def kill_node(self, node: str) -> list[int]:
        """Power a node off: SIGKILL its slurmd, step daemons and job processes at once.

        The controller learns of it only when it next fails to reach the node
        (``SlurmdTimeout``) or when told (``scontrol update nodename=NODE state=down``).

        Parameters
        ----------
        node : str
            The node to power off (see :meth:`restart_node` to bring it back).

        Returns
        -------
        list of int
            The pids killed.
        """
        victims = self.node_processes(node)
        _kill_processes(victims)
        daemon = self._slurmds.get(node)
        if daemon is not None:
            try:
                daemon.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover - D state
                pass
        return [p.pid for p in victims]

    def restart_node(self, node: str, *, timeout: float = 30) -> None:
        """Start a killed node's slurmd again and return it to service, idle.

        Parameters
        ----------
        node : str
            A node whose slurmd is not running (see :meth:`kill_node`).
        timeout : float, optional
            Seconds to wait for the node to be idle.

        Raises
        ------
        SlurmClusterError
            The node is not idle in time (the message has its log).
        """
        daemon = self._slurmds.get(node)
        if daemon is not None and daemon.poll() is None:
            raise SlurmClusterError(f"node {node}'s slurmd is still running")
        self._spawn_slurmd(node)
        deadline = time.monotonic() + timeout
        resumed = False
        while True:
            state = self.node_states(timeout=10).get(node, "")
            if state == "idle":
                return
            if state.rstrip("*~#!%$@^-") in ("down", "drain", "drng", "fail") and not state.endswith("*"):
                if not resumed:  # registered again; an admin's "down" needs an admin's "resume"
                    self.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)
                    resumed = True
            if time.monotonic() > deadline:
                raise SlurmClusterError(
                    f"node {node} not idle {timeout:g} s after its restart (state {state!r})\n"
                    + self.log_tails()
                )
            time.sleep(0.1)

    def start(self, timeout: float = 30) -> SlurmCluster:
        """Write the configuration, start both daemons and wait for an idle node.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for ``sinfo`` to report the node idle in every
            partition.

        Returns
        -------
        SlurmCluster
            ``self``, so that ``cluster = SlurmCluster(d).start()`` works.

        Raises
        ------
        SlurmClusterError
            If the daemons are not installed, die, or the node is not idle in
            time; the message contains the tails of the daemons' logs.  The
            daemons are stopped before the exception is raised.
        """
        if self._ctld is not None:
            raise SlurmClusterError("cluster already started")
        missing = missing_slurm_binaries()
        if missing:
            raise SlurmClusterError(f"Slurm is not installed: {', '.join(missing)} not found")
        if self.hidden and not self.namespaced:
            raise SlurmClusterError("nodes with hidden paths need root and unshare (util-linux)")
        deadline = time.monotonic() + timeout
        attempts = 3
        for attempt in range(1, attempts + 1):
            self._prepare_dirs()
            self.ctld_port, *ports = _free_tcp_ports(1 + len(self.nodes))
            self.node_ports = dict(zip(self.nodes, ports))
            self._write_conf()
            self._spawn_daemons()
            try:
                self._wait_idle(deadline)
                return self
            except SlurmClusterError as exc:
                port_clash = "Address already in use" in str(exc)
                self.stop()
                if port_clash and attempt < attempts:
                    # Another process took one of our ports; try fresh ones.
                    self._reset()
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 5) -> None:
        """Cancel all jobs and stop the daemons and every leftover process.

        Safe to call more than once, and on a cluster that was never started
        or whose daemons already died.  Does not hang: daemons get SIGTERM,
        then SIGKILL after ``timeout`` seconds (a ``slurmd`` that lost its
        controller may ignore SIGTERM).  Finally ``slurmstepd`` processes,
        job processes and clients of this cluster are killed (recognised by
        this cluster's ``SLURM_CONF`` in their environment, or for Slurm's
        own processes by this cluster's paths among their arguments, open
        files or Unix sockets); processes of other clusters, this process
        and its ancestors are left alone.  The base directory is kept.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for each stage (job cancellation, SIGTERM).
        """
        if self._ctld is None and not self._slurmds:
            self._kill_leftovers()
            return
        if self._ctld is not None and self._ctld.poll() is None:
            self._cancel_all_jobs(timeout)
        daemons = [*self._slurmds.values(), *([self._ctld] if self._ctld is not None else [])]
        # The daemons' own children (e.g. slurmctld's slurmscriptd).
        children: list[psutil.Process] = []
        for proc in daemons:
            try:
                children.extend(psutil.Process(proc.pid).children(recursive=True))
            except psutil.Error:
                pass
        for proc in daemons:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        for proc in daemons:
            try:
                proc.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:  # pragma: no cover - D state
                    pass
        _kill_processes(children)
        self._kill_leftovers()
        for fh in self._out_files:
            fh.close()
        self._out_files = []
        self._ctld = None
        self._slurmds = {}
        if self._own_spool_tmp is not None:
            shutil.rmtree(self._own_spool_tmp, ignore_errors=True)
            self._own_spool_tmp = None

    def log_tails(self, lines: int = 30) -> str:
        """Return the last lines of every daemon log, for error messages.

        Parameters
        ----------
        lines : int, optional
            Lines per file.

        Returns
        -------
        str
            One section per log file.
        """
        names = ["slurmctld.log", "slurmctld.out"]
        for node in self.nodes:
            log = self.slurmd_log(node).name
            names += [log, log[: -len(".log")] + ".out"]
        return "\n".join(
            f"----- {name} -----\n{_tail(self.log_dir / name, lines)}" for name in names
        )

    def __enter__(self) -> SlurmCluster:
        if self._ctld is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        ports = ",".join(str(p) for p in (self.ctld_port, *self.node_ports.values()))
        return f"<SlurmCluster {self.base_dir} nodes={','.join(self.nodes)} ports={ports} {state}>"

    # ------------------------------------------------------------ internals

    def _reset(self) -> None:
        """Forget a failed start so that :meth:`start` can run again."""
        self._ctld = None
        self._slurmds = {}
        self.ctld_port = None
        self.node_ports = {}

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        # A fresh state directory each time: ``slurmctld -i`` ignores saved
        # state anyway, and job ids then start at 1 again.
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir()
        # A node's spool directory is SPOOL/NODE when there are several.
        longest = max(len(n) + 1 for n in self.nodes) if self.multinode else 0
        if len(str(self.base_dir / "spool")) + longest > _MAX_SPOOL_DIR_LEN:
            # Step daemons' socket paths would be too long; use a short one.
            self._own_spool_tmp = Path(tempfile.mkdtemp(prefix="slurm-spool-"))
            self.spool_dir = self._own_spool_tmp
        else:
            self.spool_dir = self.base_dir / "spool"
            shutil.rmtree(self.spool_dir, ignore_errors=True)
            self.spool_dir.mkdir()
        if self.multinode:
            for node in self.nodes:
                self._node_spool(node).mkdir()

    def _node_spool(self, node: str) -> Path:
        return self.spool_dir / node if self.multinode else self.spool_dir

    def _write_conf(self) -> None:
        b, log = self.base_dir, self.log_dir
        # Several nodes: one slurmd each, told apart by %n (the node's name) in its paths.
        per_node = "-%n" if self.multinode else ""
        spool = self.spool_dir / "%n" if self.multinode else self.spool_dir
        lines = [
            "# Generated by tests/slurm_cluster.py; throw-away cluster.",
            "ClusterName=taurustest",
            f"SlurmctldHost={_NODE_NAME}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "AuthType=auth/none",
            "CredType=cred/none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MailProg=/bin/true",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={self.state_dir}",
            f"SlurmdSpoolDir={spool}",
            f"SlurmctldPidFile={b / 'slurmctld.pid'}",
            f"SlurmdPidFile={b / f'slurmd{per_node}.pid'}",
            f"SlurmctldLogFile={log / 'slurmctld.log'}",
            f"SlurmdLogFile={log / f'slurmd{per_node}.log'}",
            "ReturnToService=2",
            f"MinJobAge={self.min_job_age}",
            f"KillWait={self.kill_wait}",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=batch_sched_delay=0",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
        ]
        if not self.multinode:
            lines.append(
                f"NodeName={_NODE_NAME} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                f"RealMemory={self.real_memory} State=UNKNOWN"
            )
        else:
            # A job on a node that is gone ends as NODE_FAIL; it is not requeued by Slurm
            # (the copy engine retries it), and the node comes back only when told to.
            lines += ["JobRequeue=0", "SlurmdTimeout=30"]
            for node in self.nodes:
                lines.append(
                    f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 Port={self.node_ports[node]} "
                    f"CPUs={self.cpus} RealMemory={self.real_memory} State=UNKNOWN"
                )
        for i, (part, members) in enumerate(self.partitions.items()):
            default = " Default=YES" if i == 0 else ""
            lines.append(
                f"PartitionName={part} Nodes={','.join(members)}{default} MaxTime=INFINITE "
                f"State=UP OverSubscribe=FORCE:{self.oversubscribe}"
            )
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _spawn_daemons(self) -> None:
        ctld_bin = find_slurm_binary("slurmctld")
        assert ctld_bin is not None
        ctld_out = open(self.log_dir / "slurmctld.out", "wb")
        self._out_files = [ctld_out]
        self._ctld = self._popen([ctld_bin, "-D", "-i"], ctld_out)
        for node in self.nodes:
            self._spawn_slurmd(node)

    def _popen(self, argv: list[str], out: IO[bytes]) -> subprocess.Popen[bytes]:
        # Own session: Ctrl-C in the terminal does not reach the daemons
        # before stop() has cancelled the jobs.
        return subprocess.Popen(
            argv,
            env=self.client_env(),
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _spawn_slurmd(self, node: str) -> None:
        slurmd_bin = find_slurm_binary("slurmd")
        assert slurmd_bin is not None
        out_name = self.slurmd_log(node).name[: -len(".log")] + ".out"
        out = open(self.log_dir / out_name, "ab")
        self._out_files.append(out)
        argv = [slurmd_bin, "-D", "-N", node]
        if self.namespaced:
            # unshare execs the shell in the new namespaces (no fork): the Popen is slurmd.
            # The mount namespace's propagation is private: its tmpfs never reach the host.
            hidden = self.hidden.get(node, ())
            spaces = ["--uts", *(["--mount", "--propagation=private"] if hidden else [])]
            argv = ["unshare", *spaces, "--", "/bin/sh", "-c", _NODE_SCRIPT, "sh", node, *hidden, "--", *argv]
        self._slurmds[node] = self._popen(argv, out)

    def _wait_idle(self, deadline: float) -> None:
        last = ""
        while True:
            daemons = [("slurmctld", self._ctld), *((f"slurmd of {n}", self._slurmds.get(n)) for n in self.nodes)]
            for name, proc in daemons:
                assert proc is not None
                if proc.poll() is not None:
                    raise SlurmClusterError(
                        f"{name} exited with code {proc.returncode} during start-up\n"
                        + self.log_tails()
                    )
            res = self.run(["sinfo", "--noheader", "--format=%R %t"], timeout=10, check=False)
            states = _parse_states(res.stdout)
            nodes = self.run(["sinfo", "--noheader", "--Node", "--format=%N %t"], timeout=10, check=False)
            last = (res.stdout + res.stderr + nodes.stdout).strip()
            idle = res.returncode == 0 and all(states.get(p) == "idle" for p in self.partitions)
            node_states = _parse_states(nodes.stdout)
            if idle and nodes.returncode == 0 and all(node_states.get(n) == "idle" for n in self.nodes):
                return
            if time.monotonic() > deadline:
                raise SlurmClusterError(
                    f"node not idle in time; last `sinfo -h -o '%R %t'` and `sinfo -h -N -o '%N %t'`: {last!r}\n"
                    + self.log_tails()
                )
            time.sleep(0.1)

    def _cancel_all_jobs(self, timeout: float) -> None:
        try:
            ids = self.squeue_ids(timeout=timeout)
            if not ids:
                return
            self.run(["scancel", *map(str, ids)], timeout=timeout, check=False)
            end = time.monotonic() + timeout
            while self.squeue_ids(timeout=timeout) and time.monotonic() < end:
                time.sleep(0.1)
        except (subprocess.SubprocessError, OSError, ValueError):
            pass  # The daemons are going down anyway.

    def _belongs_here(self, proc: psutil.Process) -> bool:
        """Tell whether ``proc`` is a process of this cluster.

        Job processes and clients carry this cluster's ``SLURM_CONF`` in their
        environment.  ``slurmstepd`` has an empty environment and a command
        line like ``slurmstepd: [3.batch]`` that does not tell the cluster
        apart, so Slurm processes are also recognised by this cluster's paths
        on their command line, among their open files (the slurmd log) or as
        their Unix sockets (in the spool directory).
        """
        conf = str(self.conf_path)
        roots = tuple(str(d) + os.sep for d in {self.base_dir, self.spool_dir})
        try:
            if proc.environ().get("SLURM_CONF") == conf:
                return True
            if not proc.name().startswith("slurm"):
                return False
            if any(arg == conf or arg.startswith(roots) for arg in proc.cmdline()):
                return True
            return _uses_path(proc, *roots)
        except psutil.Error:
            return False

    @staticmethod
    def _spared() -> set[int]:
        """This process and its ancestors (they may carry this cluster's ``SLURM_CONF``)."""
        spared = {os.getpid()}
        try:
            spared.update(p.pid for p in psutil.Process().parents())
        except psutil.Error:
            pass
        return spared

    def live_processes(self) -> "list[psutil.Process]":
        """Live processes of this cluster: daemons, step daemons, jobs (zombies, and processes
        that end while they are looked at, ignored)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and self._belongs_here(proc):
                    found.append(proc)
            except psutil.Error:
                pass
        return found

    def _kill_leftovers(self) -> None:
        """SIGKILL ``slurmstepd`` and job processes of this cluster.

        This process and its ancestors are spared (they may have been started
        with this cluster's ``SLURM_CONF``).
        """
        spared = self._spared()
        victims = [
            p for p in psutil.process_iter() if p.pid not in spared and self._belongs_here(p)
        ]
        _kill_processes(victims)


#: Run by ``unshare`` in a node's new namespaces: ``sh -c SCRIPT sh NODE [HIDDEN...] -- SLURMD ARGS...``.
#: Hides the paths (an empty read-only tmpfs over each), names the host, becomes slurmd.
_NODE_SCRIPT = """set -e
node=$1; shift
while [ "$1" != "--" ]; do mount -t tmpfs -o ro,size=4k,mode=0555 tt-hidden "$1"; shift; done
shift
hostname "$node"
exec "$@"
"""


def _uses_path(proc: psutil.Process, *roots: str) -> bool:
    """Whether ``proc`` has a file open, or a Unix socket bound, below one of ``roots``."""
    if any(f.path.startswith(roots) for f in proc.open_files()):
        return True
    get_conns = getattr(proc, "net_connections", None) or proc.connections
    return any(isinstance(c.laddr, str) and c.laddr.startswith(roots) for c in get_conns("unix"))


def multinode_cluster(base_dir: str | os.PathLike[str], *, hide: Sequence[str] = (), **options: int) -> SlurmCluster:
    """The multi-node test cluster (not started): :data:`MULTINODE_NAMES` in ``debug`` and
    ``datamover``, and :data:`ELSEWHERE_NODE` alone in :data:`ELSEWHERE_PARTITION`, hiding ``hide``.

    Parameters
    ----------
    base_dir : str or os.PathLike
        As for :class:`SlurmCluster`.
    hide : sequence of str
        Absolute paths the fifth node must not see (e.g. the package's folder).
    **options : int
        Further :class:`SlurmCluster` options (``cpus``, ``oversubscribe``, ...).
    """
    return SlurmCluster(
        base_dir,
        nodes=(*MULTINODE_NAMES, ELSEWHERE_NODE),
        partitions={"debug": MULTINODE_NAMES, "datamover": MULTINODE_NAMES, ELSEWHERE_PARTITION: [ELSEWHERE_NODE]},
        hidden={ELSEWHERE_NODE: list(hide)} if hide else None,
        **options,
    )


def _parse_states(sinfo_out: str) -> dict[str, str]:
    """Parse ``sinfo --noheader --format='%R %t'``: one line per partition.

    ``%R`` is the partition name without the ``*`` that marks the default one.
    """
    return dict(line.split(None, 1) for line in sinfo_out.splitlines() if " " in line.strip())


def _kill_processes(procs: Sequence[psutil.Process], timeout: float = 3) -> None:
    """SIGKILL ``procs`` and wait until each is gone or a zombie.

    Zombies count as gone: processes reparented to an init that reaps
    lazily (as in some containers) can stay zombies for a while, and a
    zombie holds no ports, files or CPU.
    """
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        # wait(0) reaps our own children; for others it just checks.
        pending = [p for p in pending if not _gone(p)]
        if pending:
            time.sleep(0.05)


def _gone(proc: psutil.Process) -> bool:
    try:
        proc.wait(0)
        return True
    except psutil.TimeoutExpired:
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True
    except psutil.Error:
        return True
