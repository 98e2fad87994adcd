"""``ParallelCopy.status()``: what a copy is doing, as a value, without waiting for it.

:class:`LiveCopy` is what the driver shares while it runs: its :class:`CopyState` and its
running attempts, which it changes in its own thread and :meth:`LiveCopy.snapshot` only
reads (copies of lists, the workers' status files).  :class:`CopyStatus` is the snapshot,
the same data a running copy's Jupyter display shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from ..display import human_bytes
from .state import CopyState, ShardCounts, ShardStatus, WorkerStatus

if TYPE_CHECKING:
    from .parallel_copy import CopyResult

__all__ = ["CopyStatus", "LiveCopy", "STATES"]

#: The words of :attr:`CopyStatus.state`, in the order a copy goes through them.
STATES = ("not started", "waiting", "listing", "copying", "finishing", "done", "failed", "cancelled")


@dataclass(frozen=True)
class CopyStatus:
    """A snapshot of a parallel copy (:meth:`ParallelCopy.status`).

    Attributes
    ----------
    state : str
        One of :data:`STATES`: ``not started``; ``waiting`` (started, for what it runs
        ``after``); ``listing`` the source; ``copying`` shards; ``finishing`` (every shard
        has ended: folders, report); ``done`` (succeeded), ``failed`` or ``cancelled``.
    src, dst : str
        The copy's locations.
    work_dir : str
    files_planned, bytes_planned : int or None
        What the listing found (None before it is listed).
    files_done, bytes_done : int
        Copied or already there, in this run and earlier runs of the same copy, counting
        what the running shards have reported so far.
    bytes_this_run : int
        Bytes copied by this run (a resumed copy's earlier runs left out).
    shards, shards_done, shards_running, shards_pending, shards_failed : int
        The plan's shards (0 before it is made) and where they stand.
    retries : int
    elapsed_s : float or None
        Since the copy began (until it ended); None before.
    rate_mb_s : float or None
        Megabytes (10^6 bytes) per second this run has copied, while it copies.
    eta_s : float or None
        Seconds left at that rate, while it copies.
    attempts : tuple of dict
        Every attempt so far as the report's ``benchmark_results`` rows; a running one has
        ``end_time_ms`` None.
    now_ms : int
        When the snapshot was taken (epoch milliseconds).
    result : CopyResult or None
        Once the copy has a result (``done``, or ``failed`` with failed files).
    error : str or None
        Why it failed or stopped, when it raised rather than returned a result.
    """

    state: str
    src: str
    dst: str
    work_dir: str
    files_planned: Optional[int] = None
    bytes_planned: Optional[int] = None
    files_done: int = 0
    bytes_done: int = 0
    bytes_this_run: int = 0
    shards: int = 0
    shards_done: int = 0
    shards_running: int = 0
    shards_pending: int = 0
    shards_failed: int = 0
    retries: int = 0
    elapsed_s: Optional[float] = None
    rate_mb_s: Optional[float] = None
    eta_s: Optional[float] = None
    attempts: Tuple[Dict[str, Any], ...] = ()
    now_ms: int = 0
    result: Optional["CopyResult"] = None
    error: Optional[str] = None

    @property
    def ended(self) -> bool:
        """The copy has ended (``done``, ``failed`` or ``cancelled``)."""
        return self.state in ("done", "failed", "cancelled")

    @property
    def fraction(self) -> Optional[float]:
        """Bytes done of bytes planned (0 to 1; 1 for an empty plan); None before the listing."""
        if self.bytes_planned is None:
            return None
        return min(1.0, self.bytes_done / self.bytes_planned) if self.bytes_planned else 1.0

    def __repr__(self) -> str:
        parts = [self.state]
        if self.bytes_planned is not None:
            parts.append(
                f"{human_bytes(self.bytes_done)} of {human_bytes(self.bytes_planned)}, "
                f"{self.files_done}/{self.files_planned} files"
            )
        if self.shards:
            parts.append(
                f"shards {self.shards_done} done/{self.shards_running} running/{self.shards_pending} pending"
                + (f"/{self.shards_failed} failed" if self.shards_failed else "")
            )
        if self.elapsed_s is not None:
            parts.append(f"{self.elapsed_s:.1f} s")
        if self.eta_s is not None:
            parts.append(f"ETA {self.eta_s:.0f} s")
        if self.error:
            parts.append(self.error)
        return f"<CopyStatus {', '.join(parts)}>"

    def _repr_html_(self) -> str:
        from ..display import copy_status_html

        return copy_status_html(self)


class LiveCopy:
    """What a running copy shares with :meth:`ParallelCopy.status` (set by the driver).

    Parameters
    ----------
    state : CopyState
        The driver's own, changed as it goes.
    started : float
        Epoch seconds when the run began.
    """

    def __init__(self, state: CopyState, started: float) -> None:
        self.state = state
        self.started = started
        #: The driver's running attempts (handle -> its ``_Running``), once it fans out.
        self.running: Mapping[Any, Any] = {}
        #: What earlier runs of this copy had counted when this run began (a resumed
        #: copy's): done, but not this run's work; this run's rates count from here.
        self.before: ShardCounts = state.shard_counts()
        #: When the fan-out began.
        self.copying_since: Optional[float] = None
        self.ended: Optional[float] = None
        self.result: Optional["CopyResult"] = None
        self.error: Optional[BaseException] = None

    def follow(self, running: Mapping[Any, Any]) -> None:
        """The fan-out begins, with this (live) map of running attempts."""
        self.copying_since = time.time()
        self.running = running

    def snapshot(
        self, state: str, *, src: str, dst: str, work_dir: str, result: Optional["CopyResult"], error: Optional[str]
    ) -> CopyStatus:
        """The copy now, as ``state`` (which the caller, who knows the future's, decides)."""
        now = time.time()
        copy = self.state
        running = list(self.running.values())  # one C-level copy: the driver may change the map meanwhile
        shards = list(copy.shards)
        rows = [r.report_row() for r in list(copy.results)]
        counts = copy.shard_counts()
        for attempt in running:
            status = WorkerStatus.read(attempt.shard.files.status)
            worker = status.counts if status is not None else ShardCounts()
            counts.add(worker)
            rows.append(
                {
                    "start_time_ms": int(attempt.launched * 1000),
                    "end_time_ms": None,
                    "chunk_number": attempt.queued.index + 1,
                    "attempt": attempt.queued.attempt,
                    "exit_code": None,
                    "host": status.host if status is not None else None,
                    "job_id": status.job_id if status is not None else None,
                    "total_bytes_transferred": worker.bytes,
                    "total_number_of_files": worker.files,
                }
            )
        by_status = {s: sum(1 for shard in shards if shard.status is s) for s in ShardStatus}
        listing = copy.listing
        planned_bytes = listing.bytes if listing is not None else None
        planned_files = listing.files + listing.links if listing is not None else None
        done_bytes = counts.done_bytes
        this_run = counts.since(self.before).bytes
        rate = eta = None
        if state == "copying" and self.copying_since is not None and now > self.copying_since:
            rate = this_run / 1e6 / (now - self.copying_since)
            if rate > 0 and planned_bytes is not None:
                eta = max(0.0, planned_bytes - done_bytes) / (rate * 1e6)
        return CopyStatus(
            state=state,
            src=src,
            dst=dst,
            work_dir=work_dir,
            files_planned=planned_files,
            bytes_planned=planned_bytes,
            files_done=counts.done_files,
            bytes_done=done_bytes,
            bytes_this_run=this_run,
            shards=len(shards),
            shards_done=by_status[ShardStatus.DONE],
            shards_running=by_status[ShardStatus.RUNNING],
            shards_pending=by_status[ShardStatus.PENDING],
            shards_failed=by_status[ShardStatus.FAILED],
            retries=copy.retries,
            elapsed_s=(self.ended or now) - self.started,
            rate_mb_s=rate,
            eta_s=eta,
            attempts=tuple(rows),
            now_ms=int(now * 1000),
            result=result,
            error=error,
        )
