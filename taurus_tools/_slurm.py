"""Talking to Slurm's client commands: is Slurm there, partitions, job ids, job states, scancel.

Everything runs with argv lists and a timeout; nothing here keeps state except
:class:`SlurmClient`'s small cache of executables.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from ._errors import SlurmError

log = logging.getLogger(__name__)

__all__ = ["JobState", "SlurmClient", "parse_job_id", "parse_exit_code"]

#: srun's lines on stderr that name the job: "srun: job 27549105 queued and waiting for resources",
#: "srun: job 27549105 has been allocated resources"; sbatch's "Submitted batch job 27549105";
#: and sbatch --parsable's "27549105" or "27549105;cluster".
_JOB_ID_PATTERNS = (
    re.compile(r"^srun: job (\d+) (?:queued|has been allocated)", re.M),
    re.compile(r"^Submitted batch job (\d+)\s*$", re.M),
)
_PARSABLE = re.compile(r"^\s*(\d+)(?:;\S+)?\s*$")

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

#: Default time limit for Slurm client calls, in seconds.
CLIENT_TIMEOUT_S = 30.0


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
    return rc


@dataclass(frozen=True)
class JobState:
    """State of one Slurm job as scontrol (or sacct) reports it."""

    job_id: str
    state: str
    exit_code: str = "0:0"

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def returncode(self) -> int:
        return parse_exit_code(self.state, self.exit_code)


class SlurmClient:
    """Thin, stateless-in-spirit wrapper around sinfo, scontrol, sacct, squeue and scancel.

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
        try:
            return subprocess.run(
                [exe, *argv[1:]],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
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

    def job_state(self, job_id: str) -> Optional[JobState]:
        """The job's state from ``scontrol show job``, else ``sacct``; None if Slurm forgot it."""
        res = self._run(["scontrol", "show", "job", "-o", str(job_id)])
        if res.returncode == 0:
            # Command=/WorkDir= echo user text (spaces, newlines, even "JobState=..."),
            # and come after the fields we read: the first occurrence is Slurm's own.
            fields: Dict[str, str] = {}
            for tok in res.stdout.split():
                key, sep, value = tok.partition("=")
                if sep:
                    fields.setdefault(key, value)
            state = fields.get("JobState", "UNKNOWN")
            return JobState(str(job_id), state, fields.get("ExitCode", "0:0"))
        if self.which("sacct") is not None:
            res = self._run(
                ["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State,ExitCode"]
            )
            if res.returncode == 0 and res.stdout.strip():
                state, _, code = res.stdout.strip().splitlines()[0].partition("|")
                # sacct says "CANCELLED by 1234".
                return JobState(str(job_id), state.split()[0], code or "0:0")
        return None

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
