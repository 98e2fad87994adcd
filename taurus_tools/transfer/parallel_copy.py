"""``ParallelCopy``: list once, shard by bytes, copy shards in parallel, retry, resume, verify.

The steps, each leaving its result in the work directory (:class:`~taurus_tools.transfer.work_dir.WorkDir`)
so that a crashed or interrupted copy resumes where it stopped:

1. list the source once (``Endpoint.list``) into the listing;
2. shard it (:func:`taurus_tools.transfer.plan.shard`) into one records file per shard;
3. run one copy process per shard (``Endpoint.copy_shard``) through the Datamover's
   backend (a local process, an ``srun`` job on the data-mover partition, or the site's
   ``dtrsync``), at most ``workers`` at a time; each shard's state is recorded in the
   state file (:class:`~taurus_tools.transfer.state.CopyState`); each shard's process
   verifies its files at the destination when it has copied them (the site's
   ``dtrsync`` cannot: those shards are verified by ``Endpoint.verify_shard``);
4. retry only what failed or did not verify (those entries of a shard, not the shard),
   with backoff, as the exit policy (:class:`~taurus_tools.policy.ExitPolicy`) says for the
   shard's exit code, signal or Slurm job state; ``retry_elsewhere`` also keeps later
   attempts off the node (capped, and never the partition's last usable node);
5. write ``result_all.json`` (the schema of the distributed-transfer report, plus ours).

The source and the destination are :class:`~taurus_tools.transfer.endpoints.Endpoint` objects,
chosen from the location strings: the driver reaches them only through that interface.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union


from .._log import get_logger
from ..display import human_bytes
from ..datamover.backends import Backend, StrPath
from ..callbacks import NoProgress, ProgressCallback, as_progress
from .config import CopyConfig
from .state import EXCLUDED, AttemptRecord, CopyState, ShardCounts, ShardState, ShardStatus, WorkerStatus
from .endpoints import WORKER_SCRIPT, Endpoint, ShardAttempt, check_options, endpoint_for, make_folder, mover_for
from ..futures import BackgroundFuture, check_after, run_after
from ..datamover.datamover import Datamover
from ..policy import Action, Decision
from ..errors import (
    ConfigurationError,
    CopyCancelledError,
    CopyError,
    InsufficientSpaceError,
    PathNotWritableError,
)
from .plan import ListingStats, read_entries, shard
from ..process.launch import Launch
from ..process.handle import Handle
from ..process.tree import signals_deferred, terminate_trees
from ..slurm.client import SlurmClient
from ..datamover.wait import cancel_all
from .status import CopyStatus, LiveCopy
from .work_dir import AttemptFiles, WorkDir, temporary_for

log = get_logger(__name__)

__all__ = ["CopyConfig", "CopyResult", "ParallelCopy"]


@dataclass
class CopyResult:
    """What a parallel copy did.  ``ok`` is True only when nothing failed."""

    ok: bool
    src: str
    dst: str
    files_planned: int = 0
    bytes_planned: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    files_skipped: int = 0
    bytes_skipped: int = 0
    #: Of ``files_copied``/``bytes_copied``: what earlier runs of this copy copied (a
    #: resumed copy), not this run (``throughput_mb_s`` leaves it out).
    files_copied_before: int = 0
    bytes_copied_before: int = 0
    files_failed: int = 0
    failed_messages: List[str] = field(default_factory=list)
    retries: int = 0
    files_verified: int = 0
    mismatches: int = 0
    #: Entries ``exclude`` left out (a folder counts once).
    files_excluded: int = 0
    #: Sockets, FIFOs and devices not copied (they are not data), and some of their paths.
    special_skipped: int = 0
    special_examples: List[str] = field(default_factory=list)
    #: Slurm nodes on which a shard's job ended with a node failure (its shards were
    #: retried on other nodes); the report's ``node_failures`` says which shards.
    failed_nodes: List[str] = field(default_factory=list)
    #: Slurm nodes the exit policy kept later attempts off (``retry_elsewhere``); the
    #: report's ``excluded_nodes`` says by which rule and exit state.
    excluded_nodes: List[str] = field(default_factory=list)
    duration_s: float = 0.0
    report: Optional[Path] = None
    dry_run: bool = False
    #: Every shard attempt, as the report's ``benchmark_results`` (start and end times,
    #: host, exit code, ...): the rows of the display's shard table and timeline.
    attempts: List[Dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def bytes_copied_this_run(self) -> int:
        """Bytes this run copied: ``bytes_copied`` less what earlier runs had copied."""
        return max(0, self.bytes_copied - self.bytes_copied_before)

    @property
    def throughput_mb_s(self) -> float:
        """Megabytes (10^6 bytes) this run copied per second of this run (``duration_s``);
        a resumed copy's earlier runs count in neither."""
        return self.bytes_copied_this_run / 1e6 / self.duration_s if self.duration_s > 0 else 0.0

    def _copied_text(self) -> str:
        """``N files (SIZE) copied``, with what earlier runs copied of it."""
        text = f"{self.files_copied} files ({_human(self.bytes_copied)}) copied"
        if self.files_copied_before or self.bytes_copied_before:
            text += (
                f" ({self.files_copied_before} files, {_human(self.bytes_copied_before)} of them by an earlier run)"
            )
        return text

    def summary(self) -> str:
        state = "dry run" if self.dry_run else "ok" if self.ok else "FAILED"
        left_out = []
        if self.files_excluded:
            left_out.append(f"{self.files_excluded} entries excluded")
        if self.special_skipped:
            left_out.append(f"{self.special_skipped} special files (FIFOs, sockets, devices: not data) not copied")
        if self.failed_nodes:
            left_out.append(f"node(s) failed: {', '.join(self.failed_nodes)} (their shards retried elsewhere)")
        if self.excluded_nodes and self.excluded_nodes != self.failed_nodes:
            left_out.append(f"node(s) excluded: {', '.join(self.excluded_nodes)}")
        nothing = ""
        if not self.files_planned and self.files_excluded:
            nothing = f"nothing to copy: every entry of {self.src} was excluded; "
        return (
            f"{state}: {nothing}{self._copied_text()}, "
            f"{self.files_skipped} already there, {self.files_failed} failed, "
            f"of {self.files_planned} planned ({_human(self.bytes_planned)}); "
            + "".join(f"{part}; " for part in left_out)
            + f"{self.retries} retries; {self.duration_s:.1f} s, {self.throughput_mb_s:.0f} MB/s"
            + (f"; report: {self.report}" if self.report else "")
        )

    def __repr__(self) -> str:
        state = "dry run" if self.dry_run else "ok" if self.ok else "FAILED"
        return (
            f"<CopyResult {state}: {self._copied_text()}, "
            f"{self.files_skipped} already there, {self.files_failed} failed; {self.duration_s:.1f} s, "
            f"{self.throughput_mb_s:.0f} MB/s; report={str(self.report) if self.report else None!r}>"
        )

    def _repr_html_(self) -> str:
        """Jupyter's display: the counts, the failures, the shards' timeline and table."""
        from ..display import copy_result_html

        return copy_result_html(self)

    @classmethod
    def from_report(cls, report: Dict[str, Any], path: Optional[Path] = None) -> "CopyResult":
        """The result a report (``result_all.json``, read as JSON) describes.

        Raises
        ------
        ConfigurationError
            ``report`` is not a copy's report (the message says what is missing).
        """
        if not isinstance(report, dict):
            kind = _JSON_NAMES.get(type(report), "value")
            raise ConfigurationError(f"not a copy report: it holds a JSON {kind}, not an object")
        missing = [key for key in ("ok", "src", "dst", "benchmark_results") if key not in report]
        if missing:
            raise ConfigurationError(f"not a copy report: it has no {', '.join(missing)}")
        attempts = report["benchmark_results"]
        if not isinstance(attempts, list) or not all(
            isinstance(a, dict)
            and all(isinstance(a.get(k), int) and not isinstance(a.get(k), bool) for k in _ROW_TIMES)
            for a in attempts
        ):
            raise ConfigurationError(
                "not a copy report: benchmark_results must be a list of objects with whole-number "
                + " and ".join(_ROW_TIMES)
            )
        numbers: Dict[str, Any] = {
            f: int(report.get(f, 0)) for f in _REPORT_COUNTS if isinstance(report.get(f, 0), (int, float))
        }
        excluded = report.get("excluded_nodes") or []
        messages = report.get("failed_messages") or []
        return cls(
            ok=report["ok"] is True,
            src=str(report["src"]),
            dst=str(report["dst"]),
            **numbers,
            failed_messages=[str(m) for m in messages] if isinstance(messages, list) else [],
            retries=int(report.get("total_retries") or 0),
            special_examples=[str(m) for m in report.get("special_examples") or []],
            failed_nodes=[str(n) for n in report.get("failed_nodes") or []],
            excluded_nodes=[str(e["node"]) for e in excluded if isinstance(e, dict) and e.get("node")]
            if isinstance(excluded, list)
            else [],
            duration_s=float(report.get("duration_s") or 0.0),
            report=path,
            dry_run=report.get("dry_run") is True,
            attempts=attempts,
        )


#: JSON's names of the types json.loads returns, for "not a copy report" messages.
_JSON_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
#: The times every report row has (epoch milliseconds).
_ROW_TIMES = ("start_time_ms", "end_time_ms")
#: The report's counters that are CopyResult fields of the same name.
_REPORT_COUNTS = (
    "files_planned",
    "bytes_planned",
    "files_copied",
    "bytes_copied",
    "files_skipped",
    "bytes_skipped",
    "files_copied_before",
    "bytes_copied_before",
    "files_failed",
    "files_verified",
    "mismatches",
    "files_excluded",
    "special_skipped",
)


_human = human_bytes


@dataclass
class _QueuedShard:
    """A shard waiting for its next attempt."""

    index: int
    records: Path  # what this attempt copies: the shard, or what failed before
    attempt: int = 0
    not_before: float = 0.0
    new_dst: bool = False  # nothing of it can be at the destination yet: no skip checks


@dataclass
class _Running:
    """An attempt that runs: its place in the queue, what the mover was asked, when it was launched."""

    queued: _QueuedShard
    shard: ShardAttempt
    launched: float


class ParallelCopy(BackgroundFuture):
    """Copy a tree with many processes or Slurm jobs, reliably.

    :meth:`run` copies and returns the :class:`CopyResult`.  :meth:`start` runs it in the
    background; the copy is then also a :class:`concurrent.futures.Future`: ``result()``
    returns the ``CopyResult`` of a copy that succeeded and raises :class:`CopyError`
    (carrying the result) for one that did not, ``cancel()`` stops it (resumable).

    Parameters
    ----------
    src, dst : path-like, str or Endpoint
        Copy the contents of folder ``src`` into folder ``dst`` (created if needed).  A
        ``src`` naming one file (or one object) copies it into ``dst``.  Either side may
        be ``s3://bucket/prefix`` (the other then a local folder; server, profile and
        threads from ``endpoint_url``, ``profile`` and ``threads``), or an rclone
        ``remote:path``; see :mod:`taurus_tools.transfer.endpoints`.
    config : CopyConfig, optional
        All options at once; keyword arguments below override its fields.
    datamover : Datamover, optional
        Where shards run; default ``Datamover()`` (site tools, Slurm, or local).
    **options
        Any :class:`CopyConfig` field (``workers=16``, ``verify="checksum"``, ...).

    Examples
    --------
    >>> result = ParallelCopy("/scratch/ws/run1", "/projects/p_x/run1", workers=8).run()
    >>> result.ok, result.report
    """

    def __init__(
        self,
        src: Union[StrPath, Endpoint],
        dst: Union[StrPath, Endpoint],
        config: Optional[CopyConfig] = None,
        *,
        datamover: Optional[Datamover] = None,
        **options: Any,
    ) -> None:
        BackgroundFuture.__init__(self)
        self.config = (config or CopyConfig()).replace(**options) if options else (config or CopyConfig())
        self.source = endpoint_for(src, self.config)
        self.destination = endpoint_for(dst, self.config)
        check_options(self.config, self.source, self.destination)
        self.source.check_source()
        self.destination.check_destination(self.source)
        self._mover = mover_for(self.source, self.destination)
        #: The source and destination: a Path for a local folder, else the location.
        self.src: Union[Path, str] = self.source.local_path or self.source.location
        self.dst: Union[Path, str] = self.destination.local_path or self.destination.location
        self.datamover = datamover
        if self.config.work_dir is not None:
            self.work = WorkDir(self.config.work_dir)
        else:
            self.work = WorkDir.default_for(self.source.location, self.destination.location)
        self.work_dir = self.work.root
        self._thread: Optional[threading.Thread] = None
        self._started = False  # start() was called (the thread may wait for after=)
        self._finished = threading.Event()  # the background run has ended and is settled
        self._copy_result: Optional[CopyResult] = None
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._part_tag = ""
        self._notices: List[str] = []  # lines for the user, written through the progress callback
        self._progress: Optional[ProgressCallback] = None  # made by start() for run()
        self._shown: ProgressCallback = NoProgress()  # start()'s, kept for wait() to refresh
        self._excluded_nodes: List[str] = []  # nodes later attempts keep off (retry_elsewhere)
        self._policy = self.config.policy()
        self._run_retries = 0  # retries in this run, for the policy's run_retries
        self._live: Optional[LiveCopy] = None  # what status() reads, from the copy's start
        self._in_process = False  # shards on the driver's threads (config.in_process, the plan)
        self._ran_in_process = False  # and some did (the mover and the backend could)

    # ------------------------------------------------------------------ public API
    def run(self) -> CopyResult:
        """Copy, blocking until done; return the result (``ok`` False when anything failed)."""
        progress, self._progress = self._progress or self._open_progress(), None
        try:
            result = self._copy(progress)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) and not self._stop.is_set():
                # Ctrl-C (cancel() says it in CopyCancelledError)
                _add_note(
                    exc,
                    "taurus-tools: the copy was interrupted and its shards cancelled; run it again "
                    f"(the same source, destination and work_dir={str(self.work_dir)!r}) to resume it",
                )
            self._ended(None, exc)
            raise
        finally:
            progress.close()
        self._ended(result, None)
        return result

    def _open_progress(self) -> ProgressCallback:
        """The callback ``config.progress`` asks for, made here: in Jupyter the bar is shown
        in the cell running this, so :meth:`start` calls it before its thread starts."""
        if self.config.progress is True and self.config.dry_run:
            return NoProgress()  # nothing is copied: no bar
        return as_progress(self.config.progress, desc="Listing")

    def _copy(self, progress: ProgressCallback) -> CopyResult:
        started = time.time()
        dm = self.datamover if self.datamover is not None else Datamover()
        self.config = self.config.for_backend(dm.backend)
        # Every place the copy writes, checked before any work: no traceback after the data.
        self.work.create()
        report_path = self._report_path()
        before = self.destination.prepare(create=not self.config.dry_run)
        with self.work.locked():
            state = self._load_state()
            # Also the baseline of this run's rates: what earlier runs did (live.before).
            live = self._live = LiveCopy(state, started)
            self._part_tag = part_tag_of(self.source.location, self.destination.location, self.work_dir)
            fresh = state.listing is None
            for notice in self._notices:
                progress.write(notice)
            self._notices.clear()
            progress.set_description("Listing")
            listing, stats = self._listing(state)
            self._plan(state, listing)
            result = CopyResult(
                ok=False,
                src=self.source.location,
                dst=self.destination.location,
                files_planned=stats.files + stats.links,
                bytes_planned=stats.bytes,
                dry_run=self.config.dry_run,
            )
            progress.set_description("Copying")
            progress.set_total(result.bytes_planned, files=result.files_planned, unit="B")
            # A resumed copy: what earlier runs did is shown, but is no update of this run
            # (its rate); the updates below count from there.
            if live.before.done_bytes or live.before.done_files:
                progress.already_done(live.before.done_bytes, live.before.done_files)
            result.failed_messages.extend(stats.messages)
            result.files_excluded = stats.excluded
            result.special_skipped = stats.special
            result.special_examples = list(stats.special_examples)
            if result.special_skipped:
                log.warning(
                    "%d special files (FIFOs, sockets, devices) are not copied: %s%s",
                    result.special_skipped,
                    ", ".join(result.special_examples),
                    ", ..." if result.special_skipped > len(result.special_examples) else "",
                )
            if not result.files_planned and result.files_excluded:
                log.warning(
                    "nothing to copy: exclude left out all %d entries of %s",
                    result.files_excluded,
                    self.source.describe(),
                )
            if self.config.dry_run:
                result.ok = not result.failed_messages
                result.duration_s = time.time() - started
                result.report = self._write_report(result, state, dm, started, report_path)
                if fresh:  # nothing to resume: a later copy must list the tree as it is then
                    self.work.state.unlink()
                return result
            if self.config.check_space:
                self._check_space(plan_bytes=stats.bytes)
            if fresh:
                # Nothing there yet: the first attempts need not look for files to skip.
                state.new_dst = before.empty
                # A destination this copy makes gets the source's mode and times, too.
                state.made_dst = not before.existed
            self._fan_out(dm, state, result, progress)
            if self._stop.is_set():  # cancel() came as the last shard ended: stop, resumable
                raise KeyboardInterrupt
            if all(s.status is ShardStatus.DONE for s in state.shards):
                self._set_folders(state, result)
            result.duration_s = time.time() - started
            result.ok = not result.failed_messages and result.files_failed == 0
            result.report = self._write_report(result, state, dm, started, report_path)
            if result.ok:
                state.finished = True
                self._save_state(state)
            if result.ok and not self.config.keep_work_dir:
                self.work.clean()
            return result

    def _run_or_cancelled(self) -> CopyResult:
        try:
            return self.run()
        except KeyboardInterrupt:
            if self._stop.is_set():
                raise CopyCancelledError(
                    f"the copy was cancelled; run it again to resume from {self.work_dir}"
                ) from None
            raise

    def start(self, *, after: Iterable["concurrent.futures.Future[Any]"] = (), on: str = "success") -> "ParallelCopy":
        """Run in a background thread (e.g. from Jupyter); see :meth:`wait`.

        Parameters
        ----------
        after : iterable of futures
            Start only once these have ended (handles, other copies, ``then()`` futures);
            it returns at once all the same.
        on : {"success", "always"}
            ``"success"``: if one of ``after`` failed, the copy never runs and fails with
            :class:`DependencyError` (``__cause__``: the root error); ``"always"``: run
            regardless.
        """
        if self._started:
            raise RuntimeError("this copy was already started")
        futures = check_after(after, on)
        self._started = True
        # Made here, in the caller's thread, not in the copy's: Jupyter shows a bar in the
        # cell that made it (see _open_progress).
        self._progress = self._shown = self._open_progress()
        if futures:
            run_after(futures, on, self._start_thread, self._fail_before_start)
        else:
            self._start_thread()
        return self

    def _drop_progress(self) -> None:
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.close()

    def _fail_before_start(self, error: BaseException) -> None:
        self._error = error
        self._drop_progress()
        if not self.set_running_or_notify_cancel():  # cancelled meanwhile
            self._finished.set()
            return
        self._settle(error=error)
        self._finished.set()

    def _start_thread(self) -> None:
        if not self.set_running_or_notify_cancel():  # cancelled while it waited
            self._drop_progress()
            self._finished.set()
            return

        def target() -> None:
            try:
                self._copy_result = self._run_or_cancelled()
            except BaseException as exc:  # handed to wait() and result()
                self._error = exc
            try:
                if self._error is not None:
                    self._settle(error=self._error)
                elif self._copy_result is not None and not self._copy_result.ok:
                    self._settle(error=CopyError(self._copy_result))
                else:
                    self._settle(self._copy_result)
            finally:
                self._finished.set()

        self._thread = threading.Thread(target=target, name="taurus-tools:copy", daemon=True)
        _cancel_at_exit(self)
        self._thread.start()

    def wait(self, timeout: Optional[float] = None) -> CopyResult:
        """Wait for a :meth:`start`-ed copy; return its result (``ok`` says whether it
        succeeded) or raise its error (:class:`CopyCancelledError`, ...).

        Interrupting the wait (Ctrl-C) leaves the copy running: wait again, or
        :meth:`cancel` it.  (:meth:`result` raises :class:`CopyError` for a failed copy.)
        """
        if not self._started:
            raise RuntimeError("call start() first")
        # The future's state, not the thread's liveness: a KeyboardInterrupt inside
        # Thread.join (Python <= 3.12) can leave is_alive() False while the copy runs.
        try:
            self.exception(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the copy is still running after {timeout} s") from None
        except concurrent.futures.CancelledError:  # cancelled before it started
            raise CopyCancelledError("the copy was cancelled before it started") from None
        # The progress shown by start() in its final state, sent from this thread: a notebook
        # run in batch keeps a display's updates only while a cell runs (this one does).
        self._shown.refresh()
        if self._error is not None:
            raise self._error
        if self._copy_result is None:  # never: target() sets one of the two
            raise RuntimeError("the copy ended without a result or an error")
        return self._copy_result

    def cancel(self, *, timeout: float = 120.0) -> bool:  # type: ignore[override]
        """Stop the copy and return True once it has stopped: running shards are cancelled
        (processes and jobs), the work dir stays resumable, and :meth:`wait` raises
        :class:`CopyCancelledError`.

        A started copy is waited for (at most ``timeout`` seconds), so that nothing of it
        still writes when this returns.  Returns False if it had ended already, or ended
        anyway: a copy past its last shard (setting folders, writing the report) finishes.
        """
        if self.done():
            return False
        if concurrent.futures.Future.cancel(self):  # still waiting for what it runs after
            self._drop_progress()
            return True
        self._stop.set()
        self._wake.set()
        if self._thread is None or self._thread is threading.current_thread():
            # run() in another thread, or called from the copy itself (a progress callback):
            # it stops at its next round; waiting here would wait for ourselves.
            return True
        if not self._finished.wait(timeout):
            log.warning("the copy did not stop within %g s of cancel()", timeout)
            return False
        return self.cancelled()

    # ------------------------------------------------------------------ status
    def status(self) -> CopyStatus:
        """What the copy is doing now, as a value; returns at once (never waits for the copy).

        The same data as the copy's Jupyter display: state (``not started``, ``waiting``,
        ``listing``, ``copying``, ``finishing``, ``done``, ``failed``, ``cancelled``),
        bytes and files done of planned, shards done/running/pending/failed, elapsed time,
        this run's rate and the ETA, every attempt so far, and once it has ended its
        result or error.  See :class:`~taurus_tools.transfer.status.CopyStatus`.
        """
        live = self._live
        src, dst, work = self.source.location, self.destination.location, str(self.work_dir)
        result: Optional[CopyResult] = None
        error: Optional[str] = None
        if concurrent.futures.Future.done(self) or (live is not None and live.ended is not None):
            state, result, error = self._outcome()
        elif live is None:
            state = "listing" if self.running() else "waiting" if self._started else "not started"
        else:
            shards = list(live.state.shards)
            unfinished = any(s.status in (ShardStatus.PENDING, ShardStatus.RUNNING) for s in shards)
            state = "listing" if not shards else "copying" if unfinished else "finishing"
        if live is None:  # not begun (or cancelled, or failed, before it began)
            return CopyStatus(state, src, dst, work, now_ms=int(time.time() * 1000), result=result, error=error)
        return live.snapshot(state, src=src, dst=dst, work_dir=work, result=result, error=error)

    def _ended(self, result: Optional[CopyResult], error: Optional[BaseException]) -> None:
        """run() has returned ``result`` or raised ``error``: for status()."""
        if self._live is not None:
            self._live.result, self._live.error = result, error
            self._live.ended = time.time()

    def _outcome(self) -> Tuple[str, Optional[CopyResult], Optional[str]]:
        """An ended copy's state word, result and error (as one line)."""
        if concurrent.futures.Future.cancelled(self):
            return "cancelled", None, "cancelled before it started"
        live = self._live
        error = self._error or (live.error if live is not None else None)
        result = self._copy_result or (live.result if live is not None else None)
        if error is not None:
            stopped = isinstance(error, (CopyCancelledError, KeyboardInterrupt))
            why = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            return "cancelled" if stopped else "failed", result, why
        if result is not None:
            return "done" if result.ok else "failed", result, None
        return "failed", None, None

    def __repr__(self) -> str:
        status = self.status()
        shards = f", {status.shards_done}/{status.shards} shards done" if status.shards else ""
        share = f", {status.fraction * 100:.0f} %" if status.fraction is not None and not status.ended else ""
        return f"<ParallelCopy {status.src!r} -> {status.dst!r}: {status.state}{shards}{share}>"

    def _repr_html_(self) -> str:
        """Jupyter's display: :meth:`status` (taken anew each time it is shown)."""
        return self.status()._repr_html_()

    # ------------------------------------------------------------------ state
    def _load_state(self) -> CopyState:
        fresh = CopyState(src=self.source.location, dst=self.destination.location, plan=self._plan_key())
        path = self.work.state
        if not path.exists():
            return fresh
        # An unfinished earlier run may have left temporary files (a killed worker's) that
        # this run, with another plan, would not overwrite: remove them at the end.
        fresh.sweep_parts = True
        if not self.config.resume:
            log.info("resume=False: starting over in %s", self.work_dir)
            self.work.start_over()
            return fresh
        try:
            state = CopyState.load(path)
        except ConfigurationError as exc:  # a version this release cannot read
            raise ConfigurationError(
                f"cannot resume the copy in the work dir {self.work_dir}: {exc}. Resume it with the "
                "taurus-tools release that started it, or start over: resume=False (taurus-tools copy "
                "--no-resume) replaces its state, or give another work_dir (--work-dir)"
            ) from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("unreadable state in %s: starting over", self.work_dir)
            return fresh
        if state.plan != self._plan_key():
            log.warning("%s holds a different copy plan: starting over", self.work_dir)
            self.work.start_over()
            return fresh
        if state.finished:
            # A finished copy kept with keep_work_dir: the tree may have changed; list anew.
            self.work.start_over()
            fresh.sweep_parts = False
            return fresh
        if state.version != fresh.version:
            log.info("resuming a work dir of state version %d (saved as version %d)", state.version, fresh.version)
            state.version = fresh.version
        state.new_dst = False  # what the earlier run copied is there now: skip it
        for s in state.shards:
            if s.status is ShardStatus.FAILED:  # a new run is a new chance, for what failed only
                s.status, s.attempts, s.todo = ShardStatus.PENDING, 0, s.failed_list or s.todo
                # Permission denied may have been fixed since: those entries are tried again too.
                if s.permanent is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(self.work.kept_permanent(s.index))
                s.permanent = None
                s.permanent_messages = {}
        done = sum(1 for s in state.shards if s.status is ShardStatus.DONE)
        log.info("resuming %s: %d of %d shards done", self.work_dir, done, len(state.shards))
        self._stop_leftovers(state)
        return state

    def _stop_leftovers(self, state: CopyState) -> None:
        """Stop shard processes and jobs a killed driver left running (they would race us)."""
        names, pids = [], []
        for s in state.shards:
            if s.status is not ShardStatus.RUNNING:
                continue
            if s.pid:
                import psutil  # (here: 30 ms to import, and a run seldom finds one)

                try:
                    proc = psutil.Process(s.pid)
                    if any(str(self.work_dir) in part for part in proc.cmdline()):
                        log.warning("stopping shard %d's process %d left by an earlier run", s.index, s.pid)
                        pids.append(s.pid)
                except (psutil.Error, OSError):
                    pass
            if s.job_name:
                names.append(s.job_name)
            s.status = ShardStatus.PENDING
        if pids:
            terminate_trees(pids)  # all at once, one grace period (stopped ones continued)
        if names:
            client = SlurmClient()
            if client.which("scancel"):
                for name in names:
                    client.cancel(name=name)
        if pids or names:  # for the user, not only the log (see _copy)
            self._notices.append(
                f"taurus-tools: stopped what an earlier, interrupted run of this copy left running "
                f"({len(pids)} shard processes, {len(names)} Slurm jobs) before resuming it"
            )

    def _plan_key(self) -> str:
        c = self.config
        return json.dumps(
            [
                self.source.location,
                self.destination.location,
                c.shard_count,
                c.shard_by,
                list(c.exclude),
                str(c.files_from or ""),
            ]
        )

    def _save_state(self, state: CopyState) -> None:
        state.save(self.work.state, self.work.state_tmp)

    # ------------------------------------------------------------------ steps
    def _listing(self, state: CopyState) -> Tuple[Path, ListingStats]:
        path = self.work.listing
        if state.listing is not None and path.exists():
            return path, state.listing
        tmp = self.work.listing_tmp
        with open(tmp, "wb") as out:
            stats = self.source.list(out, exclude=self.config.exclude, files_from=self.config.files_from)
        os.replace(tmp, path)
        state.listing = stats
        self._save_state(state)
        log.info(
            "listed %s: %d files, %d links, %d folders, %s",
            self.source.describe(),
            stats.files,
            stats.links,
            stats.dirs,
            _human(stats.bytes),
        )
        return path, stats

    def _plan(self, state: CopyState, listing: Path) -> List[ShardState]:
        if state.shards:
            return state.shards
        plan = shard(listing, self.work.shards, self.config.shard_count, self.config.shard_by)
        state.shards = [
            ShardState(
                index=i,
                path=p,
                bytes=b,
                files=n,
                todo=p,
                status=ShardStatus.PENDING if n or i == 0 else ShardStatus.DONE,
            )
            for i, (p, b, n) in enumerate(zip(plan.paths, plan.bytes, plan.files))
        ]
        self._save_state(state)
        return state.shards

    def _check_space(self, plan_bytes: int) -> None:
        free = self.destination.free_bytes()
        if free is not None and free < plan_bytes:
            raise InsufficientSpaceError(
                f"{self.destination.describe()} has {_human(free)} free but the copy needs {_human(plan_bytes)}; "
                "free some space, or pass check_space=False (--no-space-check) if files already there "
                "will be skipped"
            )

    # ------------------------------------------------------------------ fan-out
    def _launch(self, dm: Datamover, queued: _QueuedShard) -> Tuple[Launch, Path, Path]:
        """How the next attempt at a shard runs (the mover's launch) and its status and failed files."""
        self.work.make_runs()
        attempt = self._attempt(queued, blocking=dm.blocking)
        # An earlier run's files of this attempt number must not pass for this attempt's.
        for stale in attempt.files.written_by_the_attempt():
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        launch = self._mover.copy_shard(attempt, source=self.source, destination=self.destination, backend=dm.backend)
        return launch, attempt.files.status, attempt.files.failed

    def _attempt(self, queued: _QueuedShard, *, blocking: bool = True) -> ShardAttempt:
        """The next attempt at a shard, as the mover is asked for it."""
        return ShardAttempt(
            index=queued.index,
            attempt=queued.attempt,
            records=queued.records,
            files=self.work.attempt(queued.index, queued.attempt),
            verify=self.config.verify or "none",
            new=queued.new_dst,
            atomic=self.config.atomic,
            copy_tag=self._part_tag,
            exclude_nodes=tuple(dict.fromkeys((*self.config.exclude_nodes, *self._excluded_nodes))),
            blocking=blocking,
            in_process=self._in_process,
        )

    def _report_this_run(self, progress: ProgressCallback, state: CopyState, running: Iterable[_Running]) -> None:
        """Report this run's totals (bytes and files done, earlier runs' work left out: see
        ``already_done``), counting what the running shards' workers last wrote."""
        assert self._live is not None, "_copy sets it before the fan-out"
        done = state.shard_counts()
        done.add(_running_counts(running))
        this_run = done.since(self._live.before)
        progress.update_to(this_run.done_bytes, this_run.done_files)

    def _fan_out(self, dm: Datamover, state: CopyState, result: CopyResult, progress: ProgressCallback) -> None:
        shards = state.shards
        queue: List[_QueuedShard] = [
            _QueuedShard(s.index, s.todo, s.attempts, new_dst=state.new_dst and s.attempts == 0)
            for s in shards
            if s.status in (ShardStatus.PENDING, ShardStatus.RUNNING)
        ]
        running: Dict[Handle, _Running] = {}
        if self._live is not None:
            self._live.follow(running)
        workers = self.config.workers
        assert workers is not None, "run() sets it (CopyConfig.for_backend)"
        wake = self._wake
        # Reading the running shards' counters costs a file read per shard and round.
        report = not isinstance(progress, NoProgress)
        # Nodes excluded under this copy (an earlier run's too): no attempt goes there again.
        self._excluded_nodes = state.excluded_nodes()
        self._run_retries = 0
        self._in_process = self.config.runs_in_process(
            sum(s.files for s in shards), sum(s.bytes for s in shards)
        )
        try:
            while queue or running:
                if self._stop.is_set():
                    raise KeyboardInterrupt
                now = time.monotonic()
                while queue and len(running) < workers:
                    ready = [q for q in queue if q.not_before <= now]
                    if not ready:
                        break
                    queued = ready[0]
                    queue.remove(queued)
                    launch, _status, _failed = self._launch(dm, queued)
                    launched = time.time()
                    with signals_deferred():  # no Ctrl-C/SIGTERM between the start and `running`
                        handle = dm.start(launch)  # the Datamover's Slurm client: one watcher for all
                        running[handle] = _Running(queued, self._attempt(queued, blocking=dm.blocking), launched)
                    handle.add_waker(wake)
                    self._ran_in_process |= handle.launch.inline is not None
                    s = shards[queued.index]
                    s.status, s.pid, s.job_name = ShardStatus.RUNNING, handle.pid, launch.job_name
                    log.debug("shard %d attempt %d: %s", queued.index, queued.attempt, handle.args)
                self._save_state(state)
                wake.wait(0.5)
                wake.clear()
                for handle in [h for h in running if h.done()]:
                    attempt = running.pop(handle)
                    handle.remove_waker(wake)
                    self._finish_shard(handle, attempt, state, queue, dm.backend)
                if report:
                    self._report_this_run(progress, state, running.values())
        except BaseException as exc:  # Ctrl-C, cancel(), or an error (ENOSPC in the work dir, ...)
            how = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed ({type(exc).__name__})"
            log.warning("%s: cancelling %d running shard(s); run again to resume", how, len(running))
            cancel_all(list(running))
            for attempt in running.values():
                shards[attempt.queued.index].status = ShardStatus.PENDING
            self._save_state(state)
            raise
        if report:
            self._report_this_run(progress, state, ())
        # The last shards finished after the loop's last save: record them, so that a
        # resume (after a crash while verifying) does not see them "running" and redo them.
        self._save_state(state)
        for s in shards:
            result.files_copied += s.counts.files
            result.bytes_copied += s.counts.bytes
            result.files_skipped += s.counts.skipped
            result.bytes_skipped += s.counts.skipped_bytes
            result.files_verified += s.counts.verified
            result.mismatches += s.counts.mismatches
            if s.status is ShardStatus.FAILED:
                lines, paths = _failed_entries(s)
                result.files_failed += len(paths)
                result.failed_messages.extend(lines)
        assert self._live is not None, "_copy sets it before the fan-out"
        result.files_copied_before = self._live.before.files
        result.bytes_copied_before = self._live.before.bytes
        result.retries = state.retries
        result.failed_nodes = state.failed_nodes()
        result.excluded_nodes = state.excluded_nodes()

    def _set_folders(self, state: CopyState, result: CopyResult) -> None:
        """Once every file is in place: folders get the source's permission bits and times.

        In the driver, like the listing: a few metadata calls per folder.  Every folder
        record is in shard 0.  Failures fail the copy; a rerun tries again.
        """
        if state.sweep_parts:
            self._sweep_parts(state)
        if state.folders_done:
            return
        failures = self._mover.set_folders(
            state.shards[0].path,
            root=state.made_dst,
            status=self.work.folders_status,
            source=self.source,
            destination=self.destination,
        )
        result.failed_messages.extend(f"{_one_line(path)}: {error}" for path, error in failures)
        if not failures:
            state.folders_done = True
            self._save_state(state)

    def _sweep_parts(self, state: CopyState) -> None:
        """Remove the temporary files an unfinished earlier run of this copy left (a killed
        worker's), which this run's plan did not overwrite."""
        removed = self._mover.remove_leftovers(
            state.shards[0].path, copy_tag=self._part_tag, destination=self.destination
        )
        if removed:
            log.info(
                "removed %d temporary files an interrupted earlier run left in %s",
                removed,
                self.destination.describe(),
            )
        state.sweep_parts = False
        self._save_state(state)

    def _finish_shard(
        self, handle: Handle, attempt: _Running, state: CopyState, queue: List[_QueuedShard], backend: Backend
    ) -> None:
        queued, files = attempt.queued, attempt.shard.files
        s = state.shards[queued.index]
        rc = handle.returncode
        assert rc is not None
        status = WorkerStatus.read(files.status)
        # A job whose worker did not report its end: how Slurm saw the job end.  A node
        # failure is none of the shard's doing, and srun (22.05) exits 0 after
        # "srun: error: Node failure on n2": the exit code alone does not tell.
        ended = None
        if handle.job_id and (rc != 0 or status is None or not status.done):
            ended = backend.ended_job(handle.job_id)
        node_failed = ended is not None and ended.node_failed
        if node_failed and rc == 0:
            assert ended is not None
            rc = ended.returncode
        tool_checked = False
        if status is not None and not status.done and rc == 0:
            # A worker that reports but did not report its end did not finish (killed, and
            # reaped by someone else): not a success, whatever the exit code says.
            log.warning("shard %d: its worker exited 0 without reporting its end; counted as failed", queued.index)
            rc = 1
        if status is None and rc == 0:
            # A tool that reports no counters and does not verify (the site's dtrsync).
            # The mover verifies it (as planned, then checked at the destination).
            status = WorkerStatus(
                self._mover.verify_shard(attempt.shard, source=self.source, destination=self.destination)
            )
            rc = 1 if status.counts.failed else 0
            tool_checked = True
        counts = status.counts if status is not None else ShardCounts()

        record = AttemptRecord(
            shard=queued.index,
            attempt=queued.attempt,
            start_time_ms=int(attempt.launched * 1000),
            end_time_ms=int(time.time() * 1000),
            bytes=counts.bytes,
            files=counts.files,
            exit_code=rc,
            worker_start_ms=status.started_ms if status else None,
            host=status.host if status else None,
            job_id=(status.job_id if status else None) or handle.job_id,
            slurm_state=ended.state if ended else None,
            nodes=(ended.nodes or None) if ended else None,
        )
        state.results.append(record)
        s.attempts = queued.attempt + 1
        per_file, permanent_paths, generic = _failure_info(files, handle, rc)
        if node_failed:
            assert ended is not None
            generic = f"its Slurm job {ended.job_id} ended {ended.state}: node {ended.nodes or '?'} failed"
            log.warning("shard %d: node %s failed (job %s, %s)", queued.index, ended.nodes, ended.job_id, ended.state)
        elif status is None and rc != 0:
            missing = _missing_path(handle.stderr_text)
            if missing is not None:
                where = f"node {ended.nodes}" if ended is not None and ended.nodes else "the node it ran on"
                generic = (
                    f"the shard worker could not start on {where}: {missing} does not exist there; a node "
                    f"that runs shards needs the driver's Python ({sys.executable}) and taurus_tools "
                    f"({WORKER_SCRIPT.parent.parent}) at the same paths ({generic})"
                )
        # The worker's lists of failed entries are complete only when it got to its end
        # (status "done"); exit 1 may also be a crash, or srun refusing the job.
        listed = rc == 1 and (bool(status and status.done) or tool_checked)
        # Failures no retry can heal (permission denied, ...): kept aside, not retried.
        if listed and files.permanent.exists():
            kept = self.work.kept_permanent(queued.index)
            with open(kept, "ab") as out, open(files.permanent, "rb") as new:
                shutil.copyfileobj(new, out)
            s.permanent = kept
            s.permanent_messages.update({p: per_file[p] for p in permanent_paths})
        has_failed_list = files.failed.exists() and files.failed.stat().st_size > 0
        if rc == 0 or (listed and not has_failed_list and s.permanent is not None):
            s.counts.add(counts)
            if s.permanent is not None:  # the rest is done; what cannot heal failed for good
                s.status = ShardStatus.FAILED
                s.failed_list = self._final_list(queued, [s.permanent])
                s.messages = dict(s.permanent_messages)
                s.generic = generic
            else:
                s.status = ShardStatus.DONE
            return
        decision = self._policy.decide(rc, ended.state if ended else None)
        record.action, record.rule = decision.action.value, decision.rule
        if decision.action is Action.RETRY_ELSEWHERE:
            record.exclusion = self._exclude(record.nodes, decision, backend)
        if decision.action.retries and self._policy.retry_allowed(queued.attempt, self._run_retries):
            self._run_retries += 1
            state.retries += 1
            delay = self._policy.backoff(queued.attempt)
            # Retry only what failed when the worker said what that was.
            todo = files.failed if has_failed_list and listed else queued.records
            if todo != queued.records:
                s.counts.add(counts)  # else the retry sees this attempt's files again (as skipped)
            s.todo = todo
            s.status = ShardStatus.PENDING
            log.info(
                "shard %d failed (%s, rule %s); retry %d in %.1f s",
                queued.index,
                decision.outcome,
                decision.rule,
                queued.attempt + 1,
                delay,
            )
            queue.append(_QueuedShard(queued.index, todo, queued.attempt + 1, time.monotonic() + delay))
            return
        s.counts.add(counts)
        s.status = ShardStatus.FAILED
        # What failed: the worker's list of failed entries, or (when the shard command
        # itself failed, e.g. srun refused it) every entry it was given; and what failed
        # for good in earlier attempts.
        failed_list = files.failed if has_failed_list and listed else queued.records
        if s.permanent is not None:
            failed_list = self._final_list(queued, [failed_list, s.permanent])
            per_file = {**s.permanent_messages, **per_file}
        s.failed_list = failed_list
        s.messages = per_file
        s.generic = generic
        if decision.action is Action.COMPLETE:
            log.warning(
                "shard %d: the exit policy calls %s complete (%s), but entries were not copied: they count as failed",
                queued.index,
                decision.outcome,
                decision.rule,
            )
        log.error("shard %d failed for good (%s, rule %s): %s", queued.index, decision.outcome, decision.rule, generic)

    def _exclude(self, node: Optional[str], decision: Decision, backend: Backend) -> str:
        """Keep later attempts off ``node`` (a ``retry_elsewhere`` decision); return
        :data:`~taurus_tools.transfer.state.EXCLUDED`, or why the node stays usable."""
        usable = backend.usable_nodes() if node and node not in self._excluded_nodes else None
        refused = self._policy.exclusion_refused(
            node, excluded=self._excluded_nodes, usable=usable, avoided=self.config.exclude_nodes
        )
        if refused is not None:
            log.warning("node %s (%s, rule %s): %s", node, decision.outcome, decision.rule, refused)
            return refused
        assert node is not None
        self._excluded_nodes.append(node)
        log.warning("node %s excluded from later attempts (%s, rule %s)", node, decision.outcome, decision.rule)
        return EXCLUDED

    def _final_list(self, queued: _QueuedShard, parts: List[Path]) -> Path:
        """One file with the records of ``parts``: what a shard failed for good."""
        merged = self.work.final_list(queued.index, queued.attempt)
        tmp = temporary_for(merged)  # a part may be an earlier run's file of that name
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out)
        os.replace(tmp, merged)
        return merged

    # ------------------------------------------------------------------ report
    def _report_path(self) -> Path:
        """Where the report goes (into ``report`` when that is a folder); checked writable now."""
        path = self.config.report or self.work.report
        if path.is_dir():
            path = path / self.work.report.name
        make_folder(path.parent, "report's folder")
        if path.is_dir():
            raise ConfigurationError(f"report {path} is a folder")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise PathNotWritableError(f"cannot write the report into {path.parent}: permission denied")
        return path

    def _write_report(
        self, result: CopyResult, state: CopyState, dm: Datamover, started: float, path: Path
    ) -> Path:
        # The result carries the report's attempts too: its display draws them.
        result.attempts = [r.report_row() for r in state.results]
        last_attempt: Dict[int, int] = {}
        for r in state.results:
            last_attempt[r.shard] = max(r.attempt, last_attempt.get(r.shard, -1))
        node_failures = [
            {
                "node": r.nodes,
                "chunk_number": r.shard + 1,
                "attempt": r.attempt,
                "job_id": r.job_id,
                "slurm_state": r.slurm_state,
                "retried": last_attempt[r.shard] > r.attempt,
            }
            for r in state.results
            if r.node_failed
        ]
        excluded: Dict[str, Dict[str, Any]] = {}
        kept = []
        for r in state.results:
            row = {
                "node": r.nodes,
                "rule": r.rule,
                "action": r.action,
                "exit_code": r.exit_code,
                "slurm_state": r.slurm_state,
                "chunk_number": r.shard + 1,
                "attempt": r.attempt,
                "job_id": r.job_id,
            }
            node = r.excluded_node
            if node is not None:
                excluded.setdefault(node, row)  # the attempt that excluded it
            elif r.action == Action.RETRY_ELSEWHERE.value:
                kept.append({**row, "reason": r.exclusion})
        report = {
            "total_retries": result.retries,
            "total_size_gib": round(result.bytes_planned / 2**30, 6),
            "failed_messages": result.failed_messages,
            "benchmark_results": result.attempts,
            "ok": result.ok,
            "src": result.src,
            "dst": result.dst,
            "backend": dm.backend.name,
            "workers": self.config.workers,
            "shards": len(state.shards),
            "shards_in_process": self._ran_in_process,
            "shard_by": self.config.shard_by,
            "verify": self.config.verify,
            "atomic": self.config.atomic,
            "files_planned": result.files_planned,
            "bytes_planned": result.bytes_planned,
            "files_copied": result.files_copied,
            "bytes_copied": result.bytes_copied,
            "files_skipped": result.files_skipped,
            "bytes_skipped": result.bytes_skipped,
            "files_copied_before": result.files_copied_before,
            "bytes_copied_before": result.bytes_copied_before,
            "files_failed": result.files_failed,
            "files_verified": result.files_verified,
            "mismatches": result.mismatches,
            "files_excluded": result.files_excluded,
            "special_skipped": result.special_skipped,
            "special_examples": result.special_examples,
            # Nodes that failed under the copy, and each attempt a node failure ended.
            "failed_nodes": state.failed_nodes(),
            "node_failures": node_failures,
            # The exit policy, every node it excluded (with the rule and the exit state of
            # the attempt that excluded it), and nodes a retry_elsewhere left usable (why).
            "exit_policy": str(self._policy),
            "excluded_nodes": list(excluded.values()),
            "nodes_not_excluded": kept,
            "duration_s": round(result.duration_s, 3),
            "dry_run": result.dry_run,
            "start_time_ms": int(started * 1000),
        }
        tmp = temporary_for(path)
        # Names that are not UTF-8 (surrogate escapes) become \udcXX escapes: valid JSON.
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8", errors="backslashreplace")
        os.replace(tmp, path)
        return path


def part_tag_of(src: Union[str, Path], dst: Union[str, Path], work_dir: Union[str, Path]) -> str:
    """A copy's tag, which its workers' temporary names (``.tt-part-TAG-SHARD``) hold.

    The same for every run of one copy (source, destination, work dir), so a rerun, even
    with another plan, knows the names an earlier run may have left; 48 bits of a hash,
    so no other copy, and no file of the user's, has them.
    """
    key = f"{src}\0{dst}\0{work_dir}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(key).hexdigest()[:12]


def _failure_info(files: AttemptFiles, handle: Handle, rc: int) -> Tuple[Dict[str, str], List[str], str]:
    """Per-entry errors the worker wrote, the entries among them that failed for good,
    and one line about the shard command itself."""
    per_file: Dict[str, str] = {}
    permanent: List[str] = []
    try:
        with open(files.messages, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                item = json.loads(line)
                per_file[item["path"]] = item["error"]
                if item.get("permanent"):
                    permanent.append(item["path"])
    except (OSError, ValueError):
        pass
    tail = " | ".join(handle.stderr_text.strip().splitlines()[-3:]) or "no message"
    return per_file, permanent, f"shard command exited with code {rc}: {tail}"


#: How a program that is not there shows in a shard's stderr: Slurm's step daemon cannot
#: exec the interpreter, or the interpreter cannot open the worker script.
_MISSING_PATH = (
    re.compile(r"execve\(\): (.+?): No such file or directory"),
    re.compile(r"can't open file '(.+?)': \[Errno 2\]"),
)


def _missing_path(stderr: str) -> Optional[str]:
    """The path a shard's command could not find, when its stderr names one."""
    for pattern in _MISSING_PATH:
        found = pattern.search(stderr)
        if found:
            return found.group(1)
    return None


def _one_line(rel: str) -> str:
    """A path on one line: names holding line breaks are quoted."""
    return repr(rel) if any(c in rel for c in "\n\r") else rel


def _failed_entries(s: ShardState) -> Tuple[List[str], List[str]]:
    """One readable line per entry of a shard that failed for good, and their paths."""
    per_file = s.messages
    lines, paths = [], []
    try:
        records = [entry for entry, _ in read_entries(s.failed_list)] if s.failed_list is not None else []
    except (OSError, ValueError):
        records = []
    for entry in records:
        rel = os.fsdecode(entry.path)
        if entry.kind == "d":  # a folder counts as no file, but what went wrong is said
            if rel in per_file:
                lines.append(f"{_one_line(rel)}/: {per_file[rel]}")
            continue
        paths.append(rel)
        lines.append(f"{_one_line(rel)}: {per_file.get(rel) or s.generic or 'failed'}")
    if not lines:
        lines.append(s.generic or "a shard failed")
    return lines, paths


def _running_counts(running: Iterable[_Running]) -> ShardCounts:
    """What the attempts that run have counted so far (their status files)."""
    total = ShardCounts()
    for attempt in running:
        status = WorkerStatus.read(attempt.shard.files.status)
        if status is not None:
            total.add(status.counts)
    return total


#: Copies running in a background thread (start()), cancelled when Python exits.
_STARTED: "weakref.WeakSet[ParallelCopy]" = weakref.WeakSet()
_EXIT_LOCK = threading.Lock()
#: Seconds the exit hook waits for each copy to stop.
EXIT_CANCEL_TIMEOUT_S = 60.0


def _cancel_at_exit(pc: ParallelCopy) -> None:
    """Have ``pc`` cancelled if Python exits while it runs (see :func:`_stop_started_copies`)."""
    with _EXIT_LOCK:
        _STARTED.add(pc)


def _stop_started_copies() -> None:
    """At exit (the end of a script, a Jupyter kernel shut down or restarted): cancel every
    started copy still running, so that no shard process or job goes on writing unowned.

    The copy's thread is a daemon (it must not keep Python alive), and Python would freeze
    it with its workers still running; cancelled, the work dir stays resumable and the next
    run of the copy goes on from there.  (A process killed with SIGKILL runs no hook: its
    workers then finish their shards, and the next run stops what still runs first.)
    """
    with _EXIT_LOCK:
        running = [pc for pc in _STARTED if not pc.done()]
    for pc in running:
        print(
            f"taurus-tools: Python is exiting while a copy runs ({pc.src} -> {pc.dst}): cancelling it; "
            f"run it again to resume (work_dir={str(pc.work_dir)!r})",
            file=sys.stderr,
            flush=True,
        )
        pc.cancel(timeout=EXIT_CANCEL_TIMEOUT_S)


atexit.register(_stop_started_copies)


def _add_note(exc: BaseException, note: str) -> None:
    """Add ``note`` to ``exc``'s traceback (PEP 678; on Python < 3.11 kept in ``__notes__``)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:
        exc.__notes__ = [*getattr(exc, "__notes__", ()), note]  # type: ignore[attr-defined]
