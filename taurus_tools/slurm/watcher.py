"""One watcher follows all Slurm jobs of a client: one squeue call per interval for all of them.

A handle whose command only submitted a job (``sbatch``, a site tool without
``--blocking``) follows the job until it ends.  Each handle asking Slurm on its own made
a fan-out of hundreds of jobs cost hundreds of ``scontrol`` calls per interval against the
site's slurmctld.  Instead every handle of a :class:`~taurus_tools.slurm.client.SlurmClient`
registers its job with the client's :class:`JobWatcher` (``client.watcher``) and waits
for an event; the watcher's thread asks ``squeue`` about all registered jobs at once
(:meth:`SlurmClient.job_states`), and only a job that squeue no longer lists is looked
up on its own, in ``scontrol``/``sacct`` (:meth:`SlurmClient.job_state`), as a single
handle did before.

The interval is the handles' old one: a job is first looked at when it registers, then
after 0.1 s, and each gap is 1.5 times the one before, up to 5 s; a new job starts the
sequence again.  With ``n`` jobs to follow two calls are at least ``min(5 s, n x 0.1 s)``
apart, so a fan-out that keeps registering jobs does not keep the watcher at its fastest
pace: a lone job is followed exactly as before, and many jobs share one call every few
seconds, whatever their number.

The thread runs only while there are jobs to follow, and ends when the last one has
ended or was :meth:`~JobWatcher.forget`-ten.  Nothing here is shared between clients:
each client owns its watcher, and :meth:`SlurmClient.close` closes it.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

from ..errors import SlurmError
from .._log import get_logger
from .client import JobState

log = get_logger(__name__)

__all__ = ["JOB_POLL", "LOST_AFTER", "JobWatch", "JobWatcher"]

#: Following a job: first gap, growth factor, longest gap (seconds).
JOB_POLL = (0.1, 1.5, 5.0)
#: How many lookups may find a job unknown to Slurm before it counts as lost.
LOST_AFTER = 5


class StateSource(Protocol):
    """What the watcher needs from a Slurm client (:class:`~taurus_tools.slurm.client.SlurmClient` has it)."""

    def job_states(self, job_ids: Sequence[str]) -> Optional[Dict[str, JobState]]:
        ...  # pragma: no cover

    def job_state(self, job_id: str) -> Optional[JobState]:
        ...  # pragma: no cover


class JobWatch:
    """One registration with a :class:`JobWatcher`: a job followed until it ends.

    Attributes
    ----------
    job_id : str
        The Slurm job.
    state : JobState or None
        Its final state once it has ended (``state.returncode`` is the exit code).
    lost : bool
        Slurm forgot the job before anyone saw it end (:data:`LOST_AFTER` lookups
        found nothing): its exit code is lost.
    closed : bool
        The watcher was closed while the job was still followed.
    """

    def __init__(self, job_id: str, wake: Optional[threading.Event] = None) -> None:
        self.job_id = job_id
        self.state: Optional[JobState] = None
        self.lost = False
        self.closed = False
        self._wake = wake
        self._ended = threading.Event()

    def done(self) -> bool:
        """Whether following has ended (the job ended, was lost, or the watcher closed)."""
        return self._ended.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until :meth:`done`; False if ``timeout`` seconds passed first."""
        return self._ended.wait(timeout)

    def _end(self, state: Optional[JobState], *, lost: bool = False, closed: bool = False) -> None:
        self.state, self.lost, self.closed = state, lost, closed
        self._ended.set()
        if self._wake is not None:
            self._wake.set()

    def __repr__(self) -> str:
        if not self.done():
            how = "following"
        elif self.state is not None:
            how = f"{self.state.state} returncode={self.state.returncode}"
        else:
            how = "lost" if self.lost else "closed"
        return f"<JobWatch {self.job_id} {how}>"


class JobWatcher:
    """Follows Slurm jobs for many handles with one ``squeue`` call per interval.

    Parameters
    ----------
    client : SlurmClient
        Asked with :meth:`~SlurmClient.job_states` (squeue, all jobs at once) and, for
        a job squeue does not list, :meth:`~SlurmClient.job_state`.
    poll : (float, float, float)
        First gap, growth factor and longest gap in seconds (:data:`JOB_POLL`).
    lost_after : int
        Lookups that find a job unknown before it counts as lost.

    Attributes
    ----------
    rounds : int
        How many times it has asked Slurm (one squeue call each, plus lookups).
    failures : int
        Rounds whose squeue failed (they are retried; no job is judged by them).
    """

    def __init__(
        self,
        client: StateSource,
        *,
        poll: Tuple[float, float, float] = JOB_POLL,
        lost_after: int = LOST_AFTER,
    ) -> None:
        first, factor, longest = poll
        if not (0 < first <= longest and factor >= 1):
            raise ValueError(f"poll must be (first > 0, factor >= 1, longest >= first) seconds, got {poll!r}")
        if lost_after < 1:
            raise ValueError(f"lost_after must be at least 1, got {lost_after!r}")
        self._client = client
        self._first, self._factor, self._longest = first, factor, longest
        self._lost_after = lost_after
        self._lock = threading.Lock()
        self._wake = threading.Event()  # a job registered or was forgotten, or close()
        self._jobs: Dict[str, List[JobWatch]] = {}
        self._unknown: Dict[str, int] = {}  # lookups that found nothing, by job
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._delay = first
        self._last_round = float("-inf")
        self._next_round = 0.0
        self.rounds = 0
        self.failures = 0

    # ------------------------------------------------------------------ API
    def watch(self, job_id: str, *, wake: Optional[threading.Event] = None) -> JobWatch:
        """Follow ``job_id`` until it ends; ``wake`` is set when it has (and by nothing else here).

        Raises
        ------
        SlurmError
            The watcher was closed.
        """
        watch = JobWatch(str(job_id), wake)
        with self._lock:
            if self._closed:
                raise SlurmError("this Slurm job watcher is closed")
            now = time.monotonic()
            if watch.job_id not in self._jobs:
                self._delay = self._first  # a new job: look at it now, then soon
                soonest = max(now, self._last_round + self._floor(len(self._jobs) + 1))
                self._next_round = min(self._next_round, soonest) if self._jobs else soonest
            self._jobs.setdefault(watch.job_id, []).append(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="taurus-tools:slurm-watcher", daemon=True)
                self._thread.start()
        self._wake.set()
        return watch

    def forget(self, watch: JobWatch) -> None:
        """Stop following for ``watch`` (a cancelled handle); its job may still be followed for others."""
        with self._lock:
            others = self._jobs.get(watch.job_id)
            if others is None or watch not in others:
                return
            others.remove(watch)
            if not others:
                del self._jobs[watch.job_id]
                self._unknown.pop(watch.job_id, None)
        self._wake.set()

    def following(self) -> List[str]:
        """The ids of the jobs followed now."""
        with self._lock:
            return list(self._jobs)

    @property
    def running(self) -> bool:
        """Whether its thread runs (only while there are jobs to follow)."""
        with self._lock:
            return self._thread is not None

    def close(self, timeout: float = 5.0) -> None:
        """Stop following for good: every watch still open ends with ``closed``.

        Waits up to ``timeout`` seconds for the thread (it may be inside a Slurm call).
        """
        with self._lock:
            self._closed = True
            thread = self._thread
            pending = [w for watches in self._jobs.values() for w in watches]
            self._jobs.clear()
            self._unknown.clear()
        self._wake.set()
        for watch in pending:
            watch._end(None, closed=True)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __repr__(self) -> str:
        with self._lock:
            jobs, running = len(self._jobs), self._thread is not None
        return f"<JobWatcher jobs={jobs} rounds={self.rounds} {'running' if running else 'idle'}>"

    # ------------------------------------------------------------------ the thread
    def _floor(self, jobs: int) -> float:
        """The shortest gap between two rounds while following ``jobs`` jobs."""
        return min(self._longest, self._first * jobs)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed or not self._jobs:
                    self._thread = None
                    return
                wait = self._next_round - time.monotonic()
                ids = sorted(self._jobs, key=_job_order) if wait <= 0 else []
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                continue  # whatever woke it, the schedule is read again
            try:
                ended = self._round(ids)
            except Exception:  # the thread must go on, or every handle would hang
                log.exception("Slurm job watcher: a round failed")
                ended = {}
            self._settle(ended)

    def _round(self, ids: List[str]) -> Dict[str, Tuple[Optional[JobState], bool]]:
        """Ask Slurm about ``ids``; return the jobs that ended: ``{id: (state, lost)}``."""
        self.rounds += 1
        try:
            listed = self._client.job_states(ids)
        except Exception as exc:  # SlurmError: the controller did not answer; next round
            self.failures += 1
            log.warning("could not ask Slurm about %d job(s): %s; asking again later", len(ids), exc)
            return {}
        ended: Dict[str, Tuple[Optional[JobState], bool]] = {}
        for job in ids:
            state = listed.get(job) if listed is not None else None
            if state is None:
                # squeue no longer lists it (or cannot run here): ask scontrol/sacct.
                try:
                    state = self._client.job_state(job)
                except Exception as exc:  # a flaky controller must not lose the job
                    log.warning("could not query Slurm job %s: %s", job, exc)
                    continue
            if state is None:
                with self._lock:
                    unknown = self._unknown[job] = self._unknown.get(job, 0) + 1
                if unknown >= self._lost_after:
                    ended[job] = (None, True)
            elif state.finished:
                ended[job] = (state, False)
        return ended

    def _settle(self, ended: Dict[str, Tuple[Optional[JobState], bool]]) -> None:
        """Schedule the next round and end the watches of jobs that ended."""
        finished: List[Tuple[JobWatch, Optional[JobState], bool]] = []
        with self._lock:
            for job, (state, lost) in ended.items():
                finished += [(w, state, lost) for w in self._jobs.pop(job, ())]
                self._unknown.pop(job, None)
            now = time.monotonic()
            self._last_round = now
            self._next_round = now + max(self._delay, self._floor(len(self._jobs)))
            self._delay = min(self._delay * self._factor, self._longest)
        for watch, state, lost in finished:
            watch._end(state, lost=lost)


def _job_order(job_id: str) -> Tuple[int, str]:
    """Numeric ids in numeric order (squeue's argument reads as the queue does)."""
    return (int(job_id), "") if job_id.isdigit() else (1 << 62, job_id)
