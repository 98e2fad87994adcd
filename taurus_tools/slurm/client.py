"""Talking to Slurm's client commands: is Slurm there, partitions, job ids, job states, scancel.

Everything runs with argv lists and a timeout; nothing here keeps state except
:class:`SlurmClient`'s small cache of executables, its count of calls by program, and
the one job watcher (:mod:`.watcher`) it makes on first use.
"""

from __future__ import annotations

import collections
import getpass
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Tuple

from .._log import get_logger
from ..errors import SlurmError

if TYPE_CHECKING:
    from .watcher import JobWatcher

log = get_logger(__name__)

__all__ = ["JobState", "SlurmClient", "SrunVerboseFilter", "parse_job_id", "parse_exit_code"]

#: srun's lines on stderr that name the job: "srun: job 27549105 queued and waiting for resources",
#: "srun: job 27549105 has been allocated resources" (only when the job waited), verbose srun's
#: "srun: jobid 27549105: nodes(1):`n1', cpu counts: 1(x1)" (always, once the job has its
#: nodes); sbatch's "Submitted batch job 27549105"; and sbatch --parsable's "27549105" or
#: "27549105;cluster".
_JOB_ID_PATTERNS = (
    re.compile(r"^srun: job (\d+) (?:queued|has been allocated)", re.M),
    re.compile(r"^srun: jobid (\d+): nodes\(", re.M),
    re.compile(r"^Submitted batch job (\d+)\s*$", re.M),
)
_PARSABLE = re.compile(r"^\s*(\d+)(?:;\S+)?\s*$")

#: Job states of a job that ended because its node failed (or never came up).
NODE_FAILURE_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL"})

#: Job states after which a job will not run again (squeue/scontrol long names).
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
        "SPECIAL_EXIT",
    }
)

#: sinfo's short node states (``%t``) of a node that takes jobs.  A suffix (``*``: not
#: responding, ``~``: powered off, ``#``/``%``/``!``: powering up or down) means it does not now.
USABLE_NODE_STATES = frozenset({"idle", "mix", "alloc", "comp", "plnd"})

#: How long :meth:`SlurmClient.ended_job_state` waits for a job whose processes ended to
#: get its final state (it is COMPLETING until Slurm has cleaned up after it), in seconds.
ENDED_STATE_WAIT_S = 10.0

#: Default time limit for Slurm client calls, in seconds.
CLIENT_TIMEOUT_S = 30.0

#: What :meth:`SlurmClient.job_states` asks squeue for: id, state, exit status, "|"-separated
#: (a field ``name:`` + suffix, no width, prints the value unpadded).
_SQUEUE_STATE_FORMAT = "JobID:|,State:|,exit_code:"
#: squeue's complaint when the only id it was asked about is no longer known (with more
#: ids it lists the ones it knows and exits 0).
_INVALID_JOB_ID = "Invalid job id specified"


def parse_job_id(text: str, *, parsable: bool = False) -> Optional[str]:
    """Return the Slurm job id named in srun/sbatch output, or None.

    Parameters
    ----------
    text : str
        stdout of sbatch, or stderr of srun.
    parsable : bool
        Also accept ``sbatch --parsable`` output (a bare id, optionally ``;cluster``).
    """
    for pattern in _JOB_ID_PATTERNS:
        m = pattern.search(text)
        if m:
            return m.group(1)
    if parsable:
        for line in text.splitlines():
            m = _PARSABLE.match(line)
            if m:
                return m.group(1)
    return None


#: The environment variable that makes srun verbose, like ``--verbose`` (srun(1), INPUT
#: ENVIRONMENT VARIABLES).  An environment variable also reaches the srun that a site's
#: ``dt*`` tool runs, whose command line we cannot change; but srun hands every
#: ``SLURM_*`` variable on to the job (``--export`` cannot hold it back), so an srun in
#: the job is verbose too, and one there with ``-Q`` refuses to run.  Where the handle
#: runs srun itself it puts :data:`SRUN_VERBOSE_OPTION` on the command line instead,
#: which the job does not inherit.
SRUN_VERBOSE_ENV = "SLURM_DEBUG"
#: srun's own option for the same verbosity (job environment untouched).
SRUN_VERBOSE_OPTION = "--verbose"
#: srun's refusal of SLURM_DEBUG=1 (or -v) together with -Q/--quiet; it exits 1 at once,
#: before asking Slurm for anything, and prints nothing before it.  The same line from
#: an srun inside the job (which inherited SLURM_DEBUG) is the job's own error.
SRUN_QUIET_CONFLICT = b"srun: error: don't specify both --verbose (-v) and --quiet (-Q)"
_CONFLICT_LINE = SRUN_QUIET_CONFLICT + b"\n"

# What verbose srun prints that it does not print without -v (the verbose() calls of srun,
# its launch plugin and the step API; the same texts in Slurm 20.11 to 25.05), after
# "srun: " and, in builds with SLURM_PLUGIN_DEBUG (Debian's), a "plugin/type: function: "
# prefix.  Each pattern is one whole message; info and error lines ("srun: job N queued
# ...", "srun: error: ...") never match.
_PLUGIN_PREFIX = rb"(?:[\w-]+/[\w-]+: \w+: )?"
_STEP = rb"(?:StepId=)?[\w.+]+"
_VERBOSE_MESSAGES = (
    rb"jobid (?P<job>\d+): nodes\(\d+\):`[^'\n]*', cpu counts: [^\n]*",  # srun_job.c
    rb"launching " + _STEP + rb" on host [^\n,]+, \d+ tasks: [^\n]*",  # step_launch.c
    rb"CpuBindType=[^\n]*",  # launch/slurm
    rb"Node [^\n,]+, \d+ tasks started",
    rb"Received task exit notification for \d+ tasks? of " + _STEP + rb" \(status=0x[0-9a-f]+\)\.",
    rb"[^\s:]+: tasks? [\d\[\],-]+: (?:Completed|[A-Z][^\n:]*)",  # an error: line never
    rb"First task exited\. Terminating job in \d+s",
    rb"Complete (?:" + _STEP + rb"|job \d+) received",  # step_launch.c
    rb"Nodes \S+ are ready for job",  # allocate.c
    rb"job time limit to be reached at [^\n]*",
    rb"Waiting for nodes to boot \(delay looping [^\n]*",
    rb"Resources allocated for job \d+ and being configured, please wait",  # launch.c
    rb"Implicitly setting --exact, because -c/--cpus-per-task given\.",
    rb"Slurm is busy, step creation delayed",  # api/allocate.c
    rb"Dropped pending I/O for terminated task",  # step_io.c
    rb"ioserver stream of node \d+ not yet initialized",
    rb"no active tasks in " + _STEP + rb" to send signal \d+",
)
#: One verbose message with its newline.  It may sit in the middle of a line of the job's
#: own stderr: srun writes its messages and the task's output from different threads, and
#: "ls: " + "srun: ...\n" + "cannot access ...\n" arrives as observed on 22.05.
_VERBOSE_RE = re.compile(
    rb"srun: (?:[\w-]+/[\w-]+: init: [^\n]* loaded|"  # a plugin's init()
    + _PLUGIN_PREFIX
    + rb"(?:"
    + rb"|".join(_VERBOSE_MESSAGES)
    + rb"))\n"
)
#: srun -v first lists the options it was given, one "srun: %-20s: %s" line each, between
#: these two lines; nothing else runs while it does.
_OPTIONS_START = b"srun: defined options\n"
_OPTIONS_END = b"srun: end of defined options\n"
_OPTIONS_MAX_LINES = 400
_PREFIX = b"srun: "
#: The conflict line at the start of a line.
_CONFLICT_RE = re.compile(rb"^" + re.escape(_CONFLICT_LINE), re.M)
#: srun's own info lines with the id, for a job that had to wait (they stay shown).
_SRUN_JOB_RE = re.compile(rb"^srun: job (\d+) (?:queued and waiting|has been allocated)", re.M)


class SrunVerboseFilter:
    """Take the job id out of a verbose srun's stderr and drop what the verbosity added.

    srun prints the job id on an idle cluster only when verbose (``srun: jobid 12:
    nodes(1):...``).  Feed this the stderr of a process that runs srun with
    :data:`SRUN_VERBOSE_OPTION` or :data:`SRUN_VERBOSE_ENV`; it returns the same
    bytes without srun's verbose messages (the list of options, the job and task
    messages of ``-v``), so the user sees what a plain srun prints: the job's own
    stderr, srun's info and error lines.

    Only whole, known messages are dropped, from wherever they start: a verbose line
    that srun wrote into the middle of an unfinished line of the job's stderr is taken
    out and the two halves meet again.  A line is held back only while it might still
    become one of them (an unfinished tail from ``srun: `` on).

    Attributes
    ----------
    job_id : str or None
        The first job id seen (verbose ``jobid N:`` line, or ``job N queued ...``).
    dropped : int
        How many lines were dropped.
    refused : bool
        The srun we made verbose refused, because it was also told ``-Q``: the line
        saying so (:data:`SRUN_QUIET_CONFLICT`) came at the start of a line before any
        job was named.  After a job id the same line is an srun inside the job, and it
        is never taken for ours.  The line is not dropped for this alone.
    refused_at_start : bool
        ``refused``, and the line was the very first thing on the stream: the srun
        refused before anything else printed a byte.  Only then is it safe to run the
        command again without the verbosity (nothing of it can have run yet, as far
        as its output tells).  From that line on the filter shows nothing; the stream
        from the line on is in :attr:`held`, for the caller to discard (it runs the
        command again) or to show (it does not).
    held : bytes
        See ``refused_at_start``.
    """

    def __init__(self) -> None:
        self.job_id: Optional[str] = None
        self.dropped = 0
        self.refused = False
        self.refused_at_start = False
        self.held = b""
        self._pending = b""
        self._options: Optional[List[bytes]] = None
        self._at_line_start = True
        self._at_stream_start = True  # not a byte shown, dropped or held so far

    def feed(self, data: bytes) -> bytes:
        """Filter the next bytes of the stream; returns what may be shown now."""
        if self.refused_at_start:
            self.held += data
            return b""
        data = self._pending + data
        if self._at_stream_start:
            if data.startswith(_CONFLICT_LINE):
                self.refused = self.refused_at_start = True
                self.held, self._pending = data, b""
                return b""
            if _CONFLICT_LINE.startswith(data):
                self._pending = data  # maybe the refusal, still arriving
                return b""
            self._at_stream_start = False
        cut = data.rfind(b"\n") + 1
        done, tail = data[:cut], data[cut:]
        out = self._lines(done) if done else b""
        # Hold back an unfinished line from a "srun: " (or a start of one at its very end) on.
        hold = tail.find(_PREFIX)
        if hold < 0:
            hold = len(tail)
            for n in range(min(len(_PREFIX) - 1, len(tail)), 0, -1):
                if tail.endswith(_PREFIX[:n]):
                    hold = len(tail) - n
                    break
        if self._options is not None:
            hold = 0  # inside the list of options everything waits for its end
        self._pending = tail[hold:]
        shown = tail[:hold]
        if shown:
            self._at_line_start = False
        return out + shown

    def flush(self) -> bytes:
        """The end of the stream: return whatever was held back (never :attr:`held`)."""
        held = b"".join(self._options or ())
        self._options = None
        rest, self._pending = self._pending, b""
        return held + rest

    def _lines(self, done: bytes) -> bytes:
        if self.job_id is None and not self.refused:
            self._note_refusal(done)
        done = _VERBOSE_RE.sub(self._drop, done)
        if self.job_id is None:
            m = _SRUN_JOB_RE.search(done)
            if m:
                self.job_id = m.group(1).decode()
        if not done:
            return b""
        if self._options is None and _OPTIONS_START not in done:
            self._at_line_start = done.endswith(b"\n")
            return done
        out: List[bytes] = []
        # Lines end at "\n" only (a "\r" of a progress display is part of its line).
        for line in re.findall(rb"[^\n]*\n|[^\n]+$", done):
            if self._options is not None:
                self._options.append(line)
                if line == _OPTIONS_END:
                    self.dropped += len(self._options)
                    self._options = None
                elif len(self._options) > _OPTIONS_MAX_LINES:
                    out += self._options  # not srun's list after all
                    self._options = None
                continue
            if line == _OPTIONS_START and self._at_line_start:
                self._options = [line]
                continue
            out.append(line)
            self._at_line_start = line.endswith(b"\n")
        return b"".join(out)

    def _note_refusal(self, done: bytes) -> None:
        """Set ``refused`` if ``done`` (whole lines) has the conflict line before any job id."""
        for m in _CONFLICT_RE.finditer(done):
            if m.start() == 0 and not self._at_line_start:
                continue  # the end of a line that began earlier
            at = m.start()
            named_before = _SRUN_JOB_RE.search(done, 0, at) is not None or any(
                v.group("job") for v in _VERBOSE_RE.finditer(done, 0, at)
            )
            self.refused = not named_before
            return

    def _drop(self, m: "re.Match[bytes]") -> bytes:
        if self.job_id is None and m.group("job"):
            self.job_id = m.group("job").decode()
        self.dropped += 1
        return b""


def parse_exit_code(state: str, exit_code: str) -> int:
    """Turn a job's ``JobState`` and ``ExitCode=X:S`` into a Popen-style return code.

    A signal gives ``-S``; a job that did not complete never gives 0, even when Slurm
    recorded ``0:0`` (a job cancelled while pending, a node failure, a timeout).
    """
    code, _, sig = exit_code.partition(":")
    try:
        rc = int(code)
        signum = int(sig or 0)
    except ValueError:
        rc, signum = 1, 0
    if signum:
        rc = -signum
    if state == "COMPLETED":
        return rc
    if rc == 0:
        rc = -int(signal.SIGTERM) if state == "CANCELLED" else 1
    elif state == "CANCELLED" and 128 < rc < 128 + 65:
        rc = 128 - rc  # a shell that exited 128+N as scancel's signal N reached it: still -N
    return rc


def _scontrol_exit_code(status: str) -> str:
    """squeue's ``exit_code`` as scontrol's ``ExitCode=X:S``.

    squeue (22.05) prints the job's raw wait status: 768 for ``exit 3``, 9 for SIGKILL.
    A value that already reads ``X:S`` is kept, and one that is no number is passed on
    as it is (:func:`parse_exit_code` makes an unreadable code 1).
    """
    status = status.strip()
    if not status.isdigit():
        return status or "0:0"
    raw = int(status)
    return f"{(raw >> 8) & 0xFF}:{raw & 0x7F}"


@dataclass(frozen=True)
class JobState:
    """State of one Slurm job as scontrol (or sacct) reports it.

    ``nodes`` is the job's node list as Slurm writes it (``n2``, ``n[1-3]``), empty when
    it never got a node or the answer did not say (squeue's states leave it out).
    """

    job_id: str
    state: str
    exit_code: str = "0:0"
    nodes: str = ""

    @property
    def node_failed(self) -> bool:
        """The job ended because a node of it failed: nothing the job did; worth retrying elsewhere."""
        return self.state in NODE_FAILURE_STATES

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def returncode(self) -> int:
        return parse_exit_code(self.state, self.exit_code)


class SlurmClient:
    """Thin, stateless-in-spirit wrapper around sinfo, scontrol, sacct, squeue and scancel.

    Handles that follow jobs of one client share its :attr:`watcher`, which asks Slurm
    about all of them with one squeue call per interval.

    Parameters
    ----------
    env : mapping, optional
        Environment for the client commands (for example one with ``SLURM_CONF``);
        default: this process's environment at call time.
    """

    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        self.env = dict(env) if env is not None else None
        self._which: Dict[str, Optional[str]] = {}
        # What available()'s sinfo said, for the partitions() call that usually follows.
        self._sinfo_partitions: Optional[str] = None
        self._calls: "collections.Counter[str]" = collections.Counter()
        self._count_lock = threading.Lock()
        self._watcher: Optional["JobWatcher"] = None
        self._watcher_lock = threading.Lock()

    @property
    def calls(self) -> Dict[str, int]:
        """How often each client program has run through this client, by name.

        For example ``{"sinfo": 1, "squeue": 14, "scontrol": 2}``: a copy, counted
        from the client's creation (a call that timed out counts too).
        """
        with self._count_lock:
            return dict(self._calls)

    @property
    def watcher(self) -> "JobWatcher":
        """The :class:`~taurus_tools.slurm.watcher.JobWatcher` that follows this client's jobs.

        Made on first use; its thread runs only while it has jobs to follow.  After
        :meth:`close` the next use makes a new one.
        """
        with self._watcher_lock:
            if self._watcher is None:
                from .watcher import JobWatcher

                self._watcher = JobWatcher(self)
            return self._watcher

    def close(self, timeout: float = 5.0) -> None:
        """Close the watcher, if there is one (see :meth:`JobWatcher.close`)."""
        with self._watcher_lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close(timeout)

    def which(self, name: str) -> Optional[str]:
        if name not in self._which:
            path = (self.env or os.environ).get("PATH")
            self._which[name] = shutil.which(name, path=path)
        return self._which[name]

    def _run(self, argv: List[str], timeout: float = CLIENT_TIMEOUT_S) -> subprocess.CompletedProcess:
        exe = self.which(argv[0])
        if exe is None:
            raise SlurmError(f"{argv[0]} not found on PATH; is Slurm installed?")
        log.debug("slurm: %s", argv)
        with self._count_lock:
            self._calls[argv[0]] += 1
        try:
            return subprocess.run(
                [exe, *argv[1:]],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                # scontrol echoes the job's command line: file names need not be UTF-8.
                errors="surrogateescape",
                timeout=timeout,
                env=self.env,
            )
        except subprocess.TimeoutExpired as exc:
            raise SlurmError(f"{argv[0]} did not answer within {timeout:g} s") from exc

    def available(self, timeout: float = 10.0) -> Tuple[bool, str]:
        """Whether Slurm answers here, and why (or why not)."""
        if self.which("srun") is None or self.which("sinfo") is None:
            return False, "srun/sinfo not found on PATH"
        try:
            res = self._run(["sinfo", "-h", "-o", "%P"], timeout=timeout)
        except SlurmError as exc:
            return False, str(exc)
        if res.returncode != 0:
            first = (res.stderr.strip().splitlines() or ["no message"])[0]
            return False, f"sinfo failed (exit {res.returncode}: {first})"
        self._sinfo_partitions = res.stdout
        return True, "sinfo answers"

    def partitions(self) -> Tuple[List[str], Optional[str]]:
        """All partition names, and the default one (marked ``*`` by sinfo) or None.

        Right after :meth:`available` this reuses its answer (once): choosing the slurm
        backend then costs one ``sinfo``, not two.
        """
        out, self._sinfo_partitions = self._sinfo_partitions, None
        if out is None:
            res = self._run(["sinfo", "-h", "-o", "%P"])
            if res.returncode != 0:
                raise SlurmError(f"sinfo failed: {res.stderr.strip()}")
            out = res.stdout
        names: List[str] = []
        default = None
        for line in out.split():
            name = line.rstrip("*")
            if line.endswith("*"):
                default = name
            if name not in names:
                names.append(name)
        return names, default

    def usable_nodes(self, partition: Optional[str] = None) -> List[str]:
        """The nodes of ``partition`` (default: Slurm's default one) that take jobs now, as
        ``sinfo`` reports them: idle, mixed, allocated, completing or planned, and
        responding; down, drained, draining, failed or reserved ones are left out.

        Raises
        ------
        SlurmError
            sinfo failed, or did not answer in time.
        """
        argv = ["sinfo", "--noheader", "--Node", "--format=%N|%t|%P"]
        if partition is not None:
            argv.append(f"--partition={partition}")
        res = self._run(argv)
        if res.returncode != 0:
            first = (res.stderr.strip().splitlines() or ["no message"])[0]
            raise SlurmError(f"sinfo failed (exit {res.returncode}: {first})")
        nodes: List[str] = []
        for line in res.stdout.splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) != 3:
                continue
            node, state, part = fields
            if partition is None and not part.endswith("*"):
                continue  # a node of another partition than the default one
            if state in USABLE_NODE_STATES and node not in nodes:
                nodes.append(node)
        return nodes

    def job_fields(self, job_id: str) -> Optional[Dict[str, str]]:
        """The fields ``scontrol show job -o`` gives for a job (``JobState``, ``Requeue``,
        ``ExcNodeList``, ``Restarts``, ...); None when scontrol does not know it."""
        res = self._run(["scontrol", "show", "job", "-o", str(job_id)])
        if res.returncode != 0:
            return None
        # Command=/WorkDir= echo user text (spaces, newlines, even "JobState=..."),
        # and come after the fields we read: the first occurrence is Slurm's own.
        fields: Dict[str, str] = {}
        for tok in res.stdout.split():
            key, sep, value = tok.partition("=")
            if sep:
                fields.setdefault(key, value)
        return fields

    def hostnames(self, nodes: str) -> List[str]:
        """The node names of a Slurm node list (``n[1-3],n7``), from ``scontrol show hostnames``."""
        if not nodes or nodes == "(null)":
            return []
        res = self._run(["scontrol", "show", "hostnames", nodes])
        if res.returncode != 0:
            raise SlurmError(f"scontrol show hostnames {nodes!r} failed: {res.stderr.strip()}")
        return res.stdout.split()

    def requeue(self, job_id: str, *, exclude: Iterable[str] = ()) -> None:
        """Requeue a batch job (a running one is stopped and queued again) with its excluded
        nodes set to ``exclude`` (it replaces the list).

        Slurm changes ``ExcNodeList`` only while a job is pending, so the job is requeued
        held (``scontrol requeuehold``: a job requeued plainly could be started again, on
        the same node, before the update), updated (``scontrol update JobId=..
        ExcNodeList=..``) and released (``scontrol release``, also when the update failed).
        A job requeuing itself has Slurm's ``KillWait`` (SIGTERM to SIGKILL) for the last two
        steps.  :class:`SlurmError` if Slurm refuses one of them.
        """

        def run(*argv: str) -> None:
            res = self._run(list(argv))
            if res.returncode != 0:
                raise SlurmError(f"{' '.join(argv)} failed (exit {res.returncode}): {res.stderr.strip()}")

        run("scontrol", "requeuehold", str(job_id))
        try:
            names = ",".join(exclude)
            if names:
                run("scontrol", "update", f"JobId={job_id}", f"ExcNodeList={names}")
        finally:
            run("scontrol", "release", str(job_id))

    def job_state(self, job_id: str) -> Optional[JobState]:
        """The job's state from ``scontrol show job``, else ``sacct``; None if Slurm forgot it."""
        fields = self.job_fields(job_id)
        if fields is not None:
            state = fields.get("JobState", "UNKNOWN")
            nodes = fields.get("NodeList", "")
            return JobState(str(job_id), state, fields.get("ExitCode", "0:0"), "" if nodes == "(null)" else nodes)
        if self.which("sacct") is not None:
            res = self._run(
                ["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State,ExitCode"]
            )
            if res.returncode == 0 and res.stdout.strip():
                state, _, code = res.stdout.strip().splitlines()[0].partition("|")
                # sacct says "CANCELLED by 1234".
                return JobState(str(job_id), state.split()[0], code or "0:0")
        return None

    def ended_job_state(self, job_id: str, timeout: float = ENDED_STATE_WAIT_S) -> Optional[JobState]:
        """The final state of a job whose command has ended (:meth:`job_state`, asked again
        while the job is still COMPLETING or RUNNING, for at most ``timeout`` seconds).

        ``srun`` exits when the job's tasks have, before Slurm has finished with the job: a
        state read at once may say COMPLETING where it will say FAILED, TIMEOUT or
        OUT_OF_MEMORY.  After ``timeout`` the last state read is returned as it is.
        """
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            state = self.job_state(job_id)
            if state is None or state.finished or time.monotonic() >= deadline:
                return state
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def job_states(self, job_ids: Iterable[str]) -> Optional[Dict[str, JobState]]:
        """The states of many jobs from one ``squeue`` call: ``{job_id: JobState}``.

        ``squeue --states=all`` lists pending, running and completing jobs, and finished
        ones (with their exit status) until the controller forgets them, ``MinJobAge``
        seconds (300 by default) after their end.  A job missing from the answer is not
        known to squeue any more: ask :meth:`job_state` (scontrol, then sacct).

        Returns None when squeue cannot run here (not installed, or not executable):
        then only :meth:`job_state` can tell.

        Raises
        ------
        SlurmError
            squeue ran but failed (the controller did not answer, or not in time):
            nothing can be concluded about the jobs.
        """
        ids = [str(j) for j in job_ids]
        if not ids:
            return {}
        if self.which("squeue") is None:
            return None
        argv = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}", f"--Format={_SQUEUE_STATE_FORMAT}"]
        try:
            res = self._run(argv)
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            log.debug("squeue cannot run here: %s", exc)
            return None
        if res.returncode != 0:
            if _INVALID_JOB_ID in res.stderr:
                return {}  # it was asked about one job only, and does not know it
            first = (res.stderr.strip().splitlines() or ["no message"])[0]
            raise SlurmError(f"squeue failed (exit {res.returncode}: {first})")
        wanted = set(ids)
        states: Dict[str, JobState] = {}
        for line in res.stdout.splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) >= 3 and fields[0] in wanted:
                states[fields[0]] = JobState(fields[0], fields[1], _scontrol_exit_code(fields[2]))
        return states

    def cancel(self, job_ids: Iterable[str] = (), *, name: Optional[str] = None) -> None:
        """scancel jobs by id, or by job name for the current user. Errors are logged."""
        ids = [str(j) for j in job_ids]
        argv = ["scancel", *ids]
        if name is not None:
            argv = ["scancel", "--user", getpass.getuser(), "--name", name]
        elif not ids:
            return
        try:
            res = self._run(argv)
        except SlurmError as exc:
            log.warning("could not cancel %s: %s", ids or name, exc)
            return
        if res.returncode != 0:
            log.warning("scancel %s failed: %s", ids or name, res.stderr.strip())

    def queued(self, job_ids: Iterable[str]) -> List[str]:
        """The ids among ``job_ids`` that squeue still shows (pending, running or completing)."""
        ids = [str(j) for j in job_ids]
        if not ids:
            return []
        res = self._run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)])
        if res.returncode != 0:
            # squeue exits non-zero for ids it no longer knows: they are gone.
            return []
        return [tok for tok in res.stdout.split() if tok in ids]

    def wait_gone(self, job_ids: Iterable[str], timeout: float = 30.0) -> bool:
        """Wait until squeue no longer shows the jobs; True if they left in time."""
        ids = list(job_ids)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if not self.queued(ids):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
