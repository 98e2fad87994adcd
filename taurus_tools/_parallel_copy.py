"""``ParallelCopy``: list once, shard by bytes, copy shards in parallel, retry, resume, verify.

The steps, each leaving its result in the work directory so that a crashed or
interrupted copy resumes where it stopped:

1. list the source once (:func:`taurus_tools._plan.list_tree`) into ``listing``;
2. shard it (:func:`taurus_tools._plan.shard`) into ``shards/shard-NNNN``;
3. run one copy process per shard through the Datamover's backend (a local process, an
   ``srun`` job on the data-mover partition, or the site's ``dtrsync``), at most
   ``workers`` at a time; each shard's state is recorded in ``state.json``;
   each shard's process verifies its files at the destination when it has copied them
   (the site's ``dtrsync`` cannot: the driver verifies those shards itself);
4. retry only what failed or did not verify (those entries of a shard, not the shard),
   with backoff;
5. write ``result_all.json`` (the schema of the distributed-transfer report, plus ours).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import psutil

from ._log import get_logger
from ._backends import CopyShard, StrPath
from ._futures import BackgroundFuture
from ._datamover import Datamover
from ._callbacks import NoProgress, ProgressCallback, as_progress
from ._copy_config import CopyConfig
from ._copy_worker import COUNTERS as _COUNTERS
from ._copy_worker import Worker
from ._errors import (
    ConfigurationError,
    CopyCancelledError,
    CopyError,
    InsufficientSpaceError,
    PathNotWritableError,
    SourceNotFoundError,
)
from ._plan import ListingStats, list_from_file, list_tree, read_entries, shard
from ._process import Handle, Launch, signals_deferred, terminate_trees
from ._slurm import SlurmClient
from ._wait import cancel_all

log = get_logger(__name__)

__all__ = ["CopyConfig", "CopyResult", "ParallelCopy"]

#: What a copy keeps in its work dir besides the report and the lock; all that is cleaned.
_WORK_FILES = ("state.json", "state.tmp", "listing", "listing.tmp", "shards", "runs")
STATE_VERSION = 1


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
    duration_s: float = 0.0
    report: Optional[Path] = None
    dry_run: bool = False

    @property
    def throughput_mb_s(self) -> float:
        """Copied megabytes (10^6 bytes) per second."""
        return self.bytes_copied / 1e6 / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> str:
        state = "dry run" if self.dry_run else "ok" if self.ok else "FAILED"
        left_out = []
        if self.files_excluded:
            left_out.append(f"{self.files_excluded} entries excluded")
        if self.special_skipped:
            left_out.append(f"{self.special_skipped} special files (FIFOs, sockets, devices: not data) not copied")
        nothing = ""
        if not self.files_planned and self.files_excluded:
            nothing = f"nothing to copy: every entry of {self.src} was excluded; "
        return (
            f"{state}: {nothing}{self.files_copied} files ({_human(self.bytes_copied)}) copied, "
            f"{self.files_skipped} already there, {self.files_failed} failed, "
            f"of {self.files_planned} planned ({_human(self.bytes_planned)}); "
            + "".join(f"{part}; " for part in left_out)
            + f"{self.retries} retries; {self.duration_s:.1f} s, {self.throughput_mb_s:.0f} MB/s"
            + (f"; report: {self.report}" if self.report else "")
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@dataclass
class _Task:
    index: int  # shard number
    shard: Path  # records to copy in this attempt
    attempt: int = 0
    not_before: float = 0.0
    new_dst: bool = False  # nothing of it can be at the destination yet: no skip checks


class ParallelCopy(BackgroundFuture):
    """Copy a tree with many processes or Slurm jobs, reliably.

    :meth:`run` copies and returns the :class:`CopyResult`.  :meth:`start` runs it in the
    background; the copy is then also a :class:`concurrent.futures.Future`: ``result()``
    returns the ``CopyResult`` of a copy that succeeded and raises :class:`CopyError`
    (carrying the result) for one that did not, ``cancel()`` stops it (resumable).

    Parameters
    ----------
    src, dst : path-like
        Copy the contents of folder ``src`` into folder ``dst`` (created if needed).
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
        src: StrPath,
        dst: StrPath,
        config: Optional[CopyConfig] = None,
        *,
        datamover: Optional[Datamover] = None,
        **options: Any,
    ) -> None:
        BackgroundFuture.__init__(self)
        self.config = (config or CopyConfig()).replace(**options) if options else (config or CopyConfig())
        self.src = Path(os.path.abspath(os.fspath(src)))
        self.dst = Path(os.path.abspath(os.fspath(dst)))
        self._check_paths()
        self.datamover = datamover
        key = hashlib.sha1(f"{self.src}\0{self.dst}".encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.work_dir = self.config.work_dir or Path.home() / ".cache" / "taurus-tools" / "copies" / key
        self._thread: Optional[threading.Thread] = None
        self._finished = threading.Event()  # the background run has ended and is settled
        self._copy_result: Optional[CopyResult] = None
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._part_tag = ""
        self._progress: Optional[ProgressCallback] = None  # made by start() for run()

    # ------------------------------------------------------------------ checks
    def _check_paths(self) -> None:
        src, dst = self.src, self.dst
        if not src.exists():
            if src.is_symlink():
                try:
                    os.stat(src)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        raise SourceNotFoundError(f"source {src} is a symbolic link loop") from None
                raise SourceNotFoundError(
                    f"source {src} is a symbolic link to {os.readlink(src)!r}, which does not exist"
                ) from None
            raise SourceNotFoundError(f"source {src} does not exist")
        if not src.is_dir():
            raise ConfigurationError(f"source {src} is not a folder (ParallelCopy copies a folder's contents)")
        if not os.access(src, os.R_OK | os.X_OK):
            raise SourceNotFoundError(f"source {src} cannot be read")
        real_src = Path(os.path.realpath(src))
        real_dst = Path(os.path.realpath(dst))
        if real_src == real_dst:
            raise ConfigurationError(f"source and destination are the same folder: {src}")
        if real_src in real_dst.parents:
            raise ConfigurationError(f"destination {dst} is inside the source {src}; it would copy itself")
        if dst.exists() and not dst.is_dir():
            raise ConfigurationError(f"destination {dst} exists and is not a folder")

    # ------------------------------------------------------------------ public API
    def run(self) -> CopyResult:
        """Copy, blocking until done; return the result (``ok`` False when anything failed)."""
        progress, self._progress = self._progress or self._open_progress(), None
        try:
            return self._copy(progress)
        finally:
            progress.close()

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
        _make_folder(self.work_dir, "work dir")
        report_path = self._report_path()
        dst_existed, dst_empty = self.dst.exists(), not self.dst.exists() or not any(os.scandir(self.dst))
        if self.config.dry_run:
            _check_can_create(self.dst, "destination")
        else:
            # Once, before the shards: rsync (the site's dtrsync) creates only the last
            # level of DST/, and several shards racing to create it fail with EEXIST.
            _make_folder(self.dst, "destination", writable_here=False)
        with _lock_dir(self.work_dir):
            state = self._load_state()
            self._part_tag = part_tag_of(self.src, self.dst, self.work_dir)
            fresh = state["listing"] is None
            progress.set_description("Listing")
            listing, stats = self._listing(state)
            self._plan(state, listing)
            result = CopyResult(
                ok=False,
                src=str(self.src),
                dst=str(self.dst),
                files_planned=stats["files"] + stats["links"],
                bytes_planned=stats["bytes"],
                dry_run=self.config.dry_run,
            )
            progress.set_description("Copying")
            progress.set_total(result.bytes_planned, files=result.files_planned, unit="B")
            result.failed_messages.extend(stats.get("messages", []))
            result.files_excluded = stats.get("excluded", 0)
            result.special_skipped = stats.get("special", 0)
            result.special_examples = list(stats.get("special_examples", []))
            if result.special_skipped:
                log.warning(
                    "%d special files (FIFOs, sockets, devices) are not copied: %s%s",
                    result.special_skipped,
                    ", ".join(result.special_examples),
                    ", ..." if result.special_skipped > len(result.special_examples) else "",
                )
            if not result.files_planned and result.files_excluded:
                log.warning("nothing to copy: exclude left out all %d entries of %s", result.files_excluded, self.src)
            if self.config.dry_run:
                result.ok = not result.failed_messages
                result.duration_s = time.time() - started
                result.report = self._write_report(result, state, dm, started, report_path)
                if fresh:  # nothing to resume: a later copy must list the tree as it is then
                    self._state_path().unlink()
                return result
            if self.config.check_space:
                self._check_space(plan_bytes=stats["bytes"])
            if fresh:
                # Nothing there yet: the first attempts need not look for files to skip.
                state["new_dst"] = dst_empty
                # A destination this copy makes gets the source's mode and times, too.
                state["made_dst"] = not dst_existed
            self._fan_out(dm, state, result, progress)
            if all(s["state"] == "done" for s in state["shards"]):
                self._set_folders(state, result)
            result.duration_s = time.time() - started
            result.ok = not result.failed_messages and result.files_failed == 0
            result.report = self._write_report(result, state, dm, started, report_path)
            if result.ok:
                state["finished"] = True
                self._save_state(state)
            if result.ok and not self.config.keep_work_dir:
                self._clean_work_dir()
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

    def start(self) -> "ParallelCopy":
        """Run in a background thread (e.g. from Jupyter); see :meth:`wait`."""
        if self._thread is not None:
            raise RuntimeError("this copy was already started")

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

        self._progress = self._open_progress()  # here, not in the thread: see _open_progress
        self.set_running_or_notify_cancel()
        self._thread = threading.Thread(target=target, name="taurus-tools:copy", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: Optional[float] = None) -> CopyResult:
        """Wait for a :meth:`start`-ed copy; return its result (``ok`` says whether it
        succeeded) or raise its error (:class:`CopyCancelledError`, ...).

        Interrupting the wait (Ctrl-C) leaves the copy running: wait again, or
        :meth:`cancel` it.  (:meth:`result` raises :class:`CopyError` for a failed copy.)
        """
        if self._thread is None:
            raise RuntimeError("call start() first")
        # The future's state, not the thread's liveness: a KeyboardInterrupt inside
        # Thread.join (Python <= 3.12) can leave is_alive() False while the copy runs.
        try:
            self.exception(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the copy is still running after {timeout} s") from None
        if self._error is not None:
            raise self._error
        if self._copy_result is None:  # never: target() sets one of the two
            raise RuntimeError("the copy ended without a result or an error")
        return self._copy_result

    def cancel(self) -> bool:  # type: ignore[override]
        """Stop the copy: running shards are cancelled (processes and jobs), the work dir
        stays resumable, and :meth:`wait` raises :class:`CopyCancelledError`.  Returns False
        if it had already ended."""
        if self.done():
            return False
        self._stop.set()
        self._wake.set()
        return True

    # ------------------------------------------------------------------ state
    def _state_path(self) -> Path:
        return self.work_dir / "state.json"

    def _load_state(self) -> Dict[str, Any]:
        fresh = {
            "version": STATE_VERSION,
            "src": str(self.src),
            "dst": str(self.dst),
            "plan": self._plan_key(),
            "listing": None,
            "shards": [],
            "retries": 0,
            "results": [],
        }
        path = self._state_path()
        if not path.exists():
            return fresh
        # An unfinished earlier run may have left temporary files (a killed worker's) that
        # this run, with another plan, would not overwrite: remove them at the end.
        fresh["sweep_parts"] = True
        if not self.config.resume:
            log.info("resume=False: starting over in %s", self.work_dir)
            self._clean_work_dir(everything=True)
            self.work_dir.mkdir(parents=True, exist_ok=True)
            return fresh
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("unreadable state in %s: starting over", self.work_dir)
            return fresh
        if state.get("version") != STATE_VERSION or state.get("plan") != self._plan_key():
            log.warning("%s holds a different copy plan: starting over", self.work_dir)
            self._clean_work_dir(everything=True)
            self.work_dir.mkdir(parents=True, exist_ok=True)
            return fresh
        fresh["sweep_parts"] = False
        if state.get("finished"):
            # A finished copy kept with keep_work_dir: the tree may have changed; list anew.
            self._clean_work_dir(everything=True)
            self.work_dir.mkdir(parents=True, exist_ok=True)
            return fresh
        state["new_dst"] = False  # what the earlier run copied is there now: skip it
        for s in state["shards"]:
            if s["state"] == "failed":  # a new run is a new chance, for what failed only
                s.update(state="pending", attempts=0, todo=s.get("failed_list", s["todo"]))
                # Permission denied may have been fixed since: those entries are tried again too.
                if s.pop("permanent", None):
                    with contextlib.suppress(OSError):
                        os.unlink(self.work_dir / "runs" / f"shard-{s['index']:04d}.permanent")
                s.pop("permanent_messages", None)
        done = sum(1 for s in state["shards"] if s["state"] == "done")
        log.info("resuming %s: %d of %d shards done", self.work_dir, done, len(state["shards"]))
        self._stop_leftovers(state)
        return state

    def _stop_leftovers(self, state: Dict[str, Any]) -> None:
        """Stop shard processes and jobs a killed driver left running (they would race us)."""
        names, pids = [], []
        for s in state["shards"]:
            if s["state"] != "running":
                continue
            pid = s.get("pid")
            if pid:
                try:
                    proc = psutil.Process(pid)
                    if any(str(self.work_dir) in part for part in proc.cmdline()):
                        log.warning("stopping shard %d's process %d left by an earlier run", s["index"], pid)
                        pids.append(pid)
                except (psutil.Error, OSError):
                    pass
            if s.get("job_name"):
                names.append(s["job_name"])
            s["state"] = "pending"
        if pids:
            terminate_trees(pids)  # all at once, one grace period (stopped ones continued)
        if names:
            client = SlurmClient()
            if client.which("scancel"):
                for name in names:
                    client.cancel(name=name)

    def _plan_key(self) -> str:
        c = self.config
        return json.dumps(
            [str(self.src), str(self.dst), c.shard_count, c.shard_by, list(c.exclude), str(c.files_from or "")]
        )

    def _save_state(self, state: Dict[str, Any]) -> None:
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self._state_path())

    def _clean_work_dir(self, everything: bool = False) -> None:
        # Only what a copy writes there: a work dir given by the user may hold other files.
        ours = set(_WORK_FILES) | ({"result_all.json", "result_all.json.tmp"} if everything else set())
        for child in self.work_dir.iterdir():
            if child.name not in ours:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()

    # ------------------------------------------------------------------ steps
    def _listing(self, state: Dict[str, Any]) -> Tuple[Path, Dict[str, Any]]:
        path = self.work_dir / "listing"
        if state["listing"] is not None and path.exists():
            return path, state["listing"]
        tmp = self.work_dir / "listing.tmp"
        with open(tmp, "wb") as out:
            if self.config.files_from is not None:
                try:
                    names = open(self.config.files_from, encoding="utf-8", errors="surrogateescape")
                except OSError as exc:
                    raise SourceNotFoundError(f"files_from {self.config.files_from}: {exc.strerror}") from exc
                with names:
                    stats: ListingStats = list_from_file(self.src, names, out)
            else:
                stats = list_tree(self.src, out, self.config.exclude)
        os.replace(tmp, path)
        state["listing"] = dataclasses.asdict(stats)
        self._save_state(state)
        log.info(
            "listed %s: %d files, %d links, %d folders, %s",
            self.src,
            stats.files,
            stats.links,
            stats.dirs,
            _human(stats.bytes),
        )
        return path, state["listing"]

    def _plan(self, state: Dict[str, Any], listing: Path) -> List[Dict[str, Any]]:
        if state["shards"]:
            return state["shards"]
        plan = shard(listing, self.work_dir / "shards", self.config.shard_count, self.config.shard_by)
        state["shards"] = [
            {"index": i, "path": str(p), "bytes": b, "files": n, "state": "pending" if n or i == 0 else "done",
             "attempts": 0, "todo": str(p)}
            for i, (p, b, n) in enumerate(zip(plan.paths, plan.bytes, plan.files))
        ]
        self._save_state(state)
        return state["shards"]

    def _check_space(self, plan_bytes: int) -> None:
        probe = self.dst
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = psutil.disk_usage(str(probe)).free
        except OSError:
            return
        if free < plan_bytes:
            raise InsufficientSpaceError(
                f"{probe} has {_human(free)} free but the copy needs {_human(plan_bytes)}; "
                "free some space, or pass check_space=False (--no-space-check) if files already there "
                "will be skipped"
            )

    # ------------------------------------------------------------------ fan-out
    def _launch(self, dm: Datamover, task: _Task) -> Tuple[Launch, Path, Path]:
        run_dir = self.work_dir / "runs"
        run_dir.mkdir(exist_ok=True)
        tag = f"shard-{task.index:04d}.{task.attempt}"
        status = run_dir / f"{tag}.status"
        failed = run_dir / f"{tag}.failed"
        # An earlier run's files of this attempt number must not pass for this attempt's.
        for stale in (status, failed, Path(f"{failed}.messages"), Path(f"{failed}.permanent")):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        argv = [
            sys.executable,
            "-S",  # the worker needs only the standard library: start fast
            str(Path(__file__).with_name("_copy_worker.py")),
            "--src",
            str(self.src),
            "--dst",
            str(self.dst),
            "--shard",
            str(task.shard),
            "--status",
            str(status),
            "--failed",
            str(failed),
            "--verify",
            self.config.verify or "none",
        ]
        argv += ["--part-tag", f"{self._part_tag}-{task.index}"]
        if task.new_dst:
            argv.append("--new")
        if self.config.atomic:
            argv.append("--atomic")
        shard = CopyShard(
            name=f"copy-shard-{task.index}",
            src=self.src,
            dst=self.dst,
            worker_argv=tuple(argv),
            path_list=run_dir / f"{tag}.paths",
            paths=lambda: (entry.path for entry, _ in read_entries(task.shard)),
            exclude_nodes=tuple(self.config.exclude_nodes),
            blocking=dm.blocking,
        )
        return dm.backend.launch_copy_shard(shard), status, failed

    def _fan_out(self, dm: Datamover, state: Dict[str, Any], result: CopyResult, progress: ProgressCallback) -> None:
        shards = state["shards"]
        new_dst = bool(state.get("new_dst"))
        queue: List[_Task] = [
            _Task(s["index"], Path(s["todo"]), s["attempts"], new_dst=new_dst and s["attempts"] == 0)
            for s in shards
            if s["state"] in ("pending", "running")
        ]
        for s in shards:  # what finished shards did still counts
            for key in _COUNTERS:
                s.setdefault("counts", {}).setdefault(key, 0)
        running: Dict[Handle, Tuple[_Task, Path, Path, float]] = {}
        workers = self.config.workers
        assert workers is not None, "run() sets it (CopyConfig.for_backend)"
        wake = self._wake
        # Reading the running shards' counters costs a file read per shard and round.
        report = not isinstance(progress, NoProgress)
        try:
            while queue or running:
                if self._stop.is_set():
                    raise KeyboardInterrupt
                now = time.monotonic()
                while queue and len(running) < workers:
                    ready = [t for t in queue if t.not_before <= now]
                    if not ready:
                        break
                    task = ready[0]
                    queue.remove(task)
                    launch, status, failed = self._launch(dm, task)
                    launched = time.time()
                    with signals_deferred():  # no Ctrl-C/SIGTERM between the start and `running`
                        handle = Handle(launch)
                        running[handle] = (task, status, failed, launched)
                    handle.add_waker(wake)
                    shards[task.index].update(state="running", pid=handle.pid, job_name=launch.job_name)
                    log.debug("shard %d attempt %d: %s", task.index, task.attempt, handle.args)
                self._save_state(state)
                wake.wait(0.5)
                wake.clear()
                for handle in [h for h in running if h.done()]:
                    task, status, failed, t0 = running.pop(handle)
                    handle.remove_waker(wake)
                    self._finish_shard(handle, task, status, failed, t0, state, queue)
                if report:
                    progress.update_to(*_done(state, running.values()))
        except KeyboardInterrupt:
            log.warning("interrupted: cancelling %d running shard(s); run again to resume", len(running))
            cancel_all(list(running))
            for task, *_ in running.values():
                shards[task.index]["state"] = "pending"
            self._save_state(state)
            raise
        if report:
            progress.update_to(*_done(state, ()))
        # The last shards finished after the loop's last save: record them, so that a
        # resume (after a crash while verifying) does not see them "running" and redo them.
        self._save_state(state)
        for s in shards:
            counts = s.get("counts", {})
            result.files_copied += counts.get("files", 0)
            result.bytes_copied += counts.get("bytes", 0)
            result.files_skipped += counts.get("skipped", 0)
            result.bytes_skipped += counts.get("skipped_bytes", 0)
            result.files_verified += counts.get("verified", 0)
            result.mismatches += counts.get("mismatches", 0)
            if s["state"] == "failed":
                lines, paths = _failed_entries(s)
                result.files_failed += len(paths)
                result.failed_messages.extend(lines)
        result.retries = state["retries"]

    def _set_folders(self, state: Dict[str, Any], result: CopyResult) -> None:
        """Once every file is in place: folders get the source's permission bits and times.

        In the driver, like the listing: a few metadata calls per folder.  Every folder
        record is in shard 0.  Failures fail the copy; a rerun tries again.
        """
        if state.get("sweep_parts"):
            self._sweep_parts(state)
        if state.get("folders_done"):
            return
        failed, messages = io.BytesIO(), io.StringIO()
        src, dst = os.fsencode(self.src), os.fsencode(self.dst)
        setter = Worker(src, dst, "none", str(self.work_dir / "runs" / "folders.status"), failed, messages)
        done = setter.set_folders(state["shards"][0]["path"], root=bool(state.get("made_dst")))
        for line in messages.getvalue().splitlines():
            entry = json.loads(line)
            result.failed_messages.append(f"{_one_line(entry['path'])}: {entry['error']}")
        if not setter.counts["failed"]:
            state["folders_done"] = True
            self._save_state(state)
        log.debug("set the mode and times of %d folders", done)

    def _sweep_parts(self, state: Dict[str, Any]) -> None:
        """Remove the temporary files an unfinished earlier run of this copy left (a killed
        worker's), which this run's plan did not overwrite: one ``scandir`` per folder."""
        prefix = os.fsencode(f".tt-part-{self._part_tag}-")
        dst = os.fsencode(self.dst)
        records = read_entries(Path(state["shards"][0]["path"]))
        folders = [dst] + [dst + b"/" + entry.path for entry, _ in records if entry.kind == "d"]
        removed = 0
        for folder in folders:
            with contextlib.suppress(OSError), os.scandir(folder) as it:
                for item in it:
                    if item.name.startswith(prefix) and item.is_file(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            os.unlink(item.path)
                            removed += 1
        if removed:
            log.info("removed %d temporary files an interrupted earlier run left in %s", removed, self.dst)
        state["sweep_parts"] = False
        self._save_state(state)

    def _finish_shard(
        self,
        handle: Handle,
        task: _Task,
        status: Path,
        failed: Path,
        started: float,
        state: Dict[str, Any],
        queue: List[_Task],
    ) -> None:
        s = state["shards"][task.index]
        rc = handle.returncode
        assert rc is not None
        counts = _read_json(status)
        tool_checked = False
        if not counts and rc == 0:
            # A tool that reports no counters and does not verify (the site's dtrsync).
            counts = self._check_tool_shard(task.shard, status, failed)
            rc = 1 if counts["failed"] else 0
            tool_checked = True
        totals = s.setdefault("counts", {})

        def count() -> None:
            for key in _COUNTERS:
                totals[key] = totals.get(key, 0) + int(counts.get(key, 0))

        state["results"].append(
            {
                "chunk_number": task.index + 1,
                "attempt": task.attempt,
                "start_time_ms": int(started * 1000),
                "end_time_ms": int(time.time() * 1000),
                "bytes": int(counts.get("bytes", 0)),
                "files": int(counts.get("files", 0)),
                "exit_code": rc,
                "worker_start_ms": counts.get("started_ms"),
                "host": counts.get("host"),
                "job_id": counts.get("job_id"),
            }
        )
        s["attempts"] = task.attempt + 1
        per_file, permanent_paths, generic = _failure_info(failed, handle, rc)
        # The worker's lists of failed entries are complete only when it got to its end
        # (status "done"); exit 1 may also be a crash, or srun refusing the job.
        listed = rc == 1 and (counts.get("done") is True or tool_checked)
        # Failures no retry can heal (permission denied, ...): kept aside, not retried.
        permanent = Path(f"{failed}.permanent")
        if listed and permanent.exists():
            kept = self.work_dir / "runs" / f"shard-{task.index:04d}.permanent"
            with open(kept, "ab") as out, open(permanent, "rb") as new:
                shutil.copyfileobj(new, out)
            s["permanent"] = str(kept)
            s.setdefault("permanent_messages", {}).update({p: per_file[p] for p in permanent_paths})
        has_failed_list = failed.exists() and failed.stat().st_size > 0
        if rc == 0 or (listed and not has_failed_list and s.get("permanent")):
            count()
            if s.get("permanent"):  # the rest is done; what cannot heal failed for good
                s["state"] = "failed"
                s["failed_list"] = str(self._final_list(task, [Path(s["permanent"])]))
                s["messages"] = dict(s["permanent_messages"])
                s["generic"] = generic
            else:
                s["state"] = "done"
            return
        retry_ok = self.config.retry_on is None or rc in self.config.retry_on
        if retry_ok and task.attempt < self.config.retries:
            state["retries"] += 1
            delay = self.config.retry_delay_s * (2**task.attempt)
            # Retry only what failed when the worker said what that was.
            todo = failed if has_failed_list and listed else task.shard
            if todo != task.shard:
                count()  # else the retry sees this attempt's files again (as skipped)
            s["todo"] = str(todo)
            s["state"] = "pending"
            log.info("shard %d failed (exit %s); retry %d in %.1f s", task.index, rc, task.attempt + 1, delay)
            queue.append(_Task(task.index, todo, task.attempt + 1, time.monotonic() + delay))
            return
        count()
        s["state"] = "failed"
        # What failed: the worker's list of failed entries, or (when the shard command
        # itself failed, e.g. srun refused it) every entry it was given; and what failed
        # for good in earlier attempts.
        failed_list = failed if has_failed_list and listed else task.shard
        if s.get("permanent"):
            failed_list = self._final_list(task, [failed_list, Path(s["permanent"])])
            per_file = {**s["permanent_messages"], **per_file}
        s["failed_list"] = str(failed_list)
        s["messages"] = per_file
        s["generic"] = generic
        log.error("shard %d failed for good (exit %s): %s", task.index, rc, generic)

    def _final_list(self, task: _Task, parts: List[Path]) -> Path:
        """One file with the records of ``parts``: what a shard failed for good."""
        merged = self.work_dir / "runs" / f"shard-{task.index:04d}.{task.attempt}.final"
        tmp = merged.with_name(merged.name + ".tmp")  # a part may be an earlier run's file of that name
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out)
        os.replace(tmp, merged)
        return merged

    def _check_tool_shard(self, shard: Path, status: Path, failed: Path) -> Dict[str, int]:
        """Counters for a shard a site tool copied: as planned, then verified here.

        The driver verifies these itself, with the worker's own check (a site tool runs
        only its own program); what does not match is written as failed entries, so the
        usual retry copies just those.
        """
        planned = ListingStats()
        for entry, _ in read_entries(shard):
            planned.add(entry.kind, entry.size)
        with open(failed, "wb") as failed_out, open(f"{failed}.messages", "w") as messages:
            src, dst = os.fsencode(self.src), os.fsencode(self.dst)
            checker = Worker(src, dst, self.config.verify or "none", str(status), failed_out, messages)
            checker.counts.update(files=planned.files + planned.links, bytes=planned.bytes)
            if self.config.verify != "none":
                checker.verify_shard(str(shard))
        return checker.counts

    # ------------------------------------------------------------------ report
    def _report_path(self) -> Path:
        """Where the report goes (into ``report`` when that is a folder); checked writable now."""
        path = self.config.report or self.work_dir / "result_all.json"
        if path.is_dir():
            path = path / "result_all.json"
        _make_folder(path.parent, "report's folder")
        if path.is_dir():
            raise ConfigurationError(f"report {path} is a folder")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise PathNotWritableError(f"cannot write the report into {path.parent}: permission denied")
        return path

    def _write_report(
        self, result: CopyResult, state: Dict[str, Any], dm: Datamover, started: float, path: Path
    ) -> Path:
        chunks = []
        for r in state["results"]:
            duration = max(1, r["end_time_ms"] - r["start_time_ms"])
            chunks.append(
                {
                    "start_time_ms": r["start_time_ms"],
                    "end_time_ms": r["end_time_ms"],
                    "duration_ms": duration,
                    "average_mbps": round(r["bytes"] * 8 / 1e6 / (duration / 1000), 3),
                    "total_bytes_transferred": r["bytes"],
                    "total_number_of_files": r["files"],
                    "chunk_number": r["chunk_number"],
                    "attempt": r["attempt"],
                    "exit_code": r["exit_code"],
                    # Launch to the shard's first instruction: a job's wait for the queue,
                    # the node and the interpreter (None for a site tool: it says nothing).
                    "start_delay_ms": (
                        max(0, r["worker_start_ms"] - r["start_time_ms"]) if r.get("worker_start_ms") else None
                    ),
                    "host": r.get("host"),
                    "job_id": r.get("job_id"),
                }
            )
        report = {
            "total_retries": result.retries,
            "total_size_gib": round(result.bytes_planned / 2**30, 6),
            "failed_messages": result.failed_messages,
            "benchmark_results": chunks,
            "ok": result.ok,
            "src": result.src,
            "dst": result.dst,
            "backend": dm.backend.name,
            "workers": self.config.workers,
            "shards": len(state["shards"]),
            "shard_by": self.config.shard_by,
            "verify": self.config.verify,
            "atomic": self.config.atomic,
            "files_planned": result.files_planned,
            "bytes_planned": result.bytes_planned,
            "files_copied": result.files_copied,
            "bytes_copied": result.bytes_copied,
            "files_skipped": result.files_skipped,
            "bytes_skipped": result.bytes_skipped,
            "files_failed": result.files_failed,
            "files_verified": result.files_verified,
            "mismatches": result.mismatches,
            "files_excluded": result.files_excluded,
            "special_skipped": result.special_skipped,
            "special_examples": result.special_examples,
            "duration_s": round(result.duration_s, 3),
            "dry_run": result.dry_run,
            "start_time_ms": int(started * 1000),
        }
        tmp = path.with_name(path.name + ".tmp")
        # Names that are not UTF-8 (surrogate escapes) become \udcXX escapes: valid JSON.
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8", errors="backslashreplace")
        os.replace(tmp, path)
        return path


def _make_folder(path: Path, what: str, writable_here: bool = True) -> None:
    """Create ``path`` (and its parents) or say in one line why it cannot be.

    ``writable_here=False`` for the destination: an existing one may be writable only
    where the shards run (``/projects`` from the data-transfer nodes), not here.
    """
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"{what} {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PathNotWritableError(f"cannot create the {what} {path}: {exc.strerror or exc}") from None
    if writable_here and not os.access(path, os.W_OK | os.X_OK):
        raise PathNotWritableError(f"cannot write into the {what} {path}: permission denied")


def _check_can_create(path: Path, what: str) -> None:
    """For a dry run: would :func:`_make_folder` succeed?  (Nothing is created.)"""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe == path and path.is_dir():
        return  # there already (maybe writable only where the shards run)
    if not probe.is_dir():
        raise ConfigurationError(f"{what} {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PathNotWritableError(f"cannot create or write the {what} {path}: {probe} is not writable")


def part_tag_of(src: Path, dst: Path, work_dir: Path) -> str:
    """A copy's tag, which its workers' temporary names (``.tt-part-TAG-SHARD``) hold.

    The same for every run of one copy (source, destination, work dir), so a rerun, even
    with another plan, knows the names an earlier run may have left; 48 bits of a hash,
    so no other copy, and no file of the user's, has them.
    """
    key = f"{src}\0{dst}\0{work_dir}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(key).hexdigest()[:12]


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _failure_info(failed: Path, handle: Handle, rc: int) -> Tuple[Dict[str, str], List[str], str]:
    """Per-entry errors the worker wrote, the entries among them that failed for good,
    and one line about the shard command itself."""
    per_file: Dict[str, str] = {}
    permanent: List[str] = []
    try:
        with open(str(failed) + ".messages", encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                item = json.loads(line)
                per_file[item["path"]] = item["error"]
                if item.get("permanent"):
                    permanent.append(item["path"])
    except (OSError, ValueError):
        pass
    tail = " | ".join(handle.stderr_text.strip().splitlines()[-3:]) or "no message"
    return per_file, permanent, f"shard command exited with code {rc}: {tail}"


def _one_line(rel: str) -> str:
    """A path on one line: names holding line breaks are quoted."""
    return repr(rel) if any(c in rel for c in "\n\r") else rel


def _failed_entries(s: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """One readable line per entry of a shard that failed for good, and their paths."""
    per_file: Dict[str, str] = s.get("messages") or {}
    lines, paths = [], []
    try:
        records = [entry for entry, _ in read_entries(Path(s["failed_list"]))]
    except (OSError, KeyError, ValueError):
        records = []
    for entry in records:
        rel = os.fsdecode(entry.path)
        if entry.kind == "d":  # a folder counts as no file, but what went wrong is said
            if rel in per_file:
                lines.append(f"{_one_line(rel)}/: {per_file[rel]}")
            continue
        paths.append(rel)
        lines.append(f"{_one_line(rel)}: {per_file.get(rel) or s.get('generic', 'failed')}")
    if not lines:
        lines.append(s.get("generic", "a shard failed"))
    return lines, paths


def _done(state: Dict[str, Any], running: Any) -> Tuple[int, int]:
    """Bytes and files done (copied or found there already): finished attempts, and the
    counters the running shards' workers last wrote."""
    counts = [s.get("counts", {}) for s in state["shards"]]
    counts += [_read_json(status) for _task, status, _failed, _t0 in running]
    done_bytes = sum(int(c.get("bytes", 0)) + int(c.get("skipped_bytes", 0)) for c in counts)
    done_files = sum(int(c.get("files", 0)) + int(c.get("skipped", 0)) for c in counts)
    return done_bytes, done_files


@contextlib.contextmanager
def _lock_dir(folder: Path) -> Iterator[None]:
    """One driver per work directory at a time."""
    import fcntl

    with open(folder / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConfigurationError(f"another copy is running in {folder}") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
