"""``Checkpoint``: save a folder to ``s3://``, an rclone remote or another folder (directly, or
through a datamover) every N seconds while work runs.

::

    with Checkpoint("/scratch/run", "s3://bucket/run-42", every="10m", regex=r"\\.h5$"):
        simulate()              # a final pass runs when the block ends, also on an error

A checkpoint is a future (:class:`~taurus_tools.futures.BackgroundFuture`): ``start()``
begins the passes in a background thread, ``stop()`` asks for the final pass and returns
its :class:`PassReport` (or raises :class:`~taurus_tools.errors.CheckpointError` naming the
files not saved), ``result()`` waits for that, ``cancel()`` ends without a final pass.

Passes (see :mod:`taurus_tools.checkpoint.manifest` for what lies where):

* incremental: a file is sent when its size or modification time differs from what the
  newest complete pass saved (kept in memory, read back from the destination's newest
  manifest at start, so a restarted job goes on where it stopped); the destination is never
  listed for it, and unchanged files are never sent again;
* one at a time: the next interval starts when a pass ends (the thread sleeps on an event
  between passes: no polling);
* no torn files: a file modified within the last ``settle`` seconds, or that changes while
  it is sent, is left for the next pass; the final pass takes files however recent and
  tries those that change again until ``final_timeout`` has passed;
* deletions are not propagated unless asked: a file deleted here stays in later manifests
  (with ``propagate_deletions=True`` the next manifest leaves it out, so a restore does not
  bring it back; what earlier passes stored stays where they put it);
* each pass that sent something ends by writing its manifest, so a manifest present is a
  complete pass and :func:`~taurus_tools.checkpoint.restore.restore` gives the newest one;
* a periodic pass that fails (destination unreachable) is logged, and the next interval
  tries again, resending nothing that reached the destination already; only the final pass
  decides the outcome.

``regex`` selects files with :func:`re.search` on the path relative to ``path`` with ``/``
separators (``r"\\.bin$"``, ``r"^out/"``).  Symbolic links are not followed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple, Union

from .._log import get_logger
from ..errors import CheckpointError, ConfigurationError, DestinationUnreachableError, SourceNotFoundError
from ..futures import BackgroundFuture, in_background
from ..transfer.s3_upload import Changed
from .destinations import Destination, LocalDestination, destination_for
from .manifest import Entry, Manifest

__all__ = ["Checkpoint", "PassReport", "parse_every"]

log = get_logger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EVERY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$")
#: Seconds between tries of the final pass at files that keep changing, or a destination that fails.
FINAL_RETRY_S = 0.5


def parse_every(value: Union[str, int, float], what: str = "every", *, zero_ok: bool = False) -> float:
    """Seconds from ``"30s"``, ``"10m"``, ``"2h"``, ``"1d"`` or a plain number of seconds (> 0,
    or >= 0 with ``zero_ok``); anything else is a :class:`ConfigurationError` naming ``what``."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{what} must be a duration such as 30s, 10m, 2h, 1d or seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _EVERY.match(str(value))
        if not match:
            raise ConfigurationError(
                f"{what} must be a duration such as 30s, 10m, 2h, 1d or a number of seconds, got {value!r}"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        raise ConfigurationError(f"{what} must be more than 0 seconds, got {value!r}")
    return seconds


@dataclass
class PassReport:
    """What one pass did.

    Attributes
    ----------
    number : int or None
        The pass whose manifest was written; None when nothing new was found (no manifest)
        or the pass failed.
    final : bool
    sent, sent_bytes : int
        Files (and bytes) sent by this pass.
    newest : int or None
        The newest complete pass after this one (this one's number, or an earlier one).
    files : int
        Files the newest complete pass holds.
    removed : int
        Files deleted here since the newest complete pass and left out of this pass's
        manifest (``propagate_deletions`` only; else 0).
    deferred : list of str
        Files still being written: left for the next pass (for the final pass: not saved).
    not_saved : dict
        Path -> why, for files that failed (a name S3 cannot hold, permission denied, ...).
    error : str or None
        Why the pass failed as a whole (destination unreachable); None if it did not.
    seconds : float
    """

    number: Optional[int] = None
    final: bool = False
    sent: int = 0
    sent_bytes: int = 0
    newest: Optional[int] = None
    files: int = 0
    removed: int = 0
    deferred: List[str] = field(default_factory=list)
    not_saved: Dict[str, str] = field(default_factory=dict)
    error: Optional[str] = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Everything selected is saved in a complete pass."""
        return self.error is None and not self.deferred and not self.not_saved

    def missing(self) -> Dict[str, str]:
        """Path -> why, for every file this pass did not save."""
        out = dict(self.not_saved)
        out.update((path, "still changing when the final pass ended") for path in self.deferred)
        return out


class Checkpoint(BackgroundFuture):
    """Save ``path`` to ``dest`` every ``every``, and once more at the end (see the module's docstring).

    Parameters
    ----------
    path : str or os.PathLike
        The folder to save; it must exist.
    dest : str
        ``s3://bucket/prefix`` (the bucket must exist), an rclone remote (``remote:path``,
        ``:backend:path``) or a folder (made if missing; not inside ``path``).
    every : str or float
        Time from the end of one pass to the start of the next: ``"30s"``, ``"10m"``, ``"2h"``,
        ``"1d"`` or seconds.
    regex : str, optional
        Save only the files whose relative path (``/`` separators) ``re.search`` matches.
    settle : str or float
        A file modified more recently than this waits for a later pass (default 2 s).
    final_timeout : str or float
        How long the final pass keeps trying files that change and a failing destination.
    start_unreachable : bool
        Start even if ``dest`` cannot be reached now (logged; passes retry). Default: raise
        :class:`~taurus_tools.errors.DestinationUnreachableError` from :meth:`start`.
    s3 : S3Config, optional
        Endpoint, profile and timeouts for ``s3://`` (default: boto3's resolution).
    datamover : Datamover, optional
        Write the folder ``dest`` through this :class:`~taurus_tools.datamover.datamover.Datamover`
        (``dtrsync``, one call per pass, then one for the manifest): a folder the job cannot
        write itself, such as ``/projects`` on a cluster's compute nodes (see
        :class:`~taurus_tools.checkpoint.destinations.DatamoverDestination`).
    propagate_deletions : bool
        A file deleted here (or no longer matching ``regex``) is left out of the next
        manifest, so restoring that pass does not bring it back.  Default: deletions are
        never propagated (a restore gives every file ever saved, each as last saved).
    policy : ExitPolicy or str, optional
        For passes that run a process (an rclone remote's ``rclone copy``, a datamover's
        ``dtrsync``): from its exit code, signal and Slurm job state, retry it within the pass
        (``retry``, ``retry_elsewhere``: bounded by the policy's ``retries``, after its
        backoff) or leave what did not arrive to the next pass (``fail``, ``complete``).
        Default: the temporary errors of the tool once
        (:data:`~taurus_tools.checkpoint.destinations.RCLONE_PASS_POLICY`,
        :data:`~taurus_tools.checkpoint.destinations.DATAMOVER_PASS_POLICY`).  Not for
        ``s3://`` and plain folders, whose passes run no process
        (:class:`~taurus_tools.errors.ConfigurationError`).
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        dest: str,
        every: Union[str, float] = "10m",
        regex: Optional[str] = None,
        *,
        settle: Union[str, float] = "2s",
        final_timeout: Union[str, float] = "60s",
        start_unreachable: bool = False,
        propagate_deletions: bool = False,
        s3: Any = None,
        datamover: Any = None,
        policy: Any = None,
    ) -> None:
        super().__init__()
        self.path = os.path.abspath(os.fspath(path))
        self.every_s = parse_every(every)
        self.settle_s = parse_every(settle, "settle", zero_ok=True)
        self.final_timeout_s = parse_every(final_timeout, "final_timeout")
        try:
            self.regex = re.compile(regex) if regex is not None else None
        except (re.error, TypeError) as exc:
            raise ConfigurationError(f"regex {regex!r} is not a valid Python regular expression: {exc}") from None
        self.start_unreachable = start_unreachable
        self.propagate_deletions = bool(propagate_deletions)
        self.destination: Destination = destination_for(dest, s3=s3, datamover=datamover, policy=policy)
        if isinstance(self.destination, LocalDestination):
            inside = os.path.join(self.path, "")
            if os.path.join(self.destination.folder, "").startswith(inside):
                raise ConfigurationError(
                    f"the checkpoint destination {self.destination.folder!r} is inside the folder "
                    f"it saves ({self.path!r})"
                )
        self.name = f"checkpoint {self.path} -> {dest}"
        #: The newest complete pass (None before the first one).
        self.committed: Optional[Manifest] = None
        self._passes: Deque[PassReport] = collections.deque(maxlen=1000)
        self._pending: Dict[str, Entry] = {}  # sent under the next number by a pass that then failed
        self._next = 1
        self._loaded = False  # the destination's newest manifest read (see _load)
        self._stop = threading.Event()
        self._cancel = False
        self._started = False
        self._lock = threading.Lock()
        self._one_pass = threading.Lock()

    @property
    def passes(self) -> List[PassReport]:
        """Reports of the latest periodic passes (up to 1,000), oldest first."""
        with self._lock:
            return list(self._passes)

    # ------------------------------------------------------------------ control
    def check(self) -> None:
        """The checks :meth:`start` makes first: ``path`` is a folder, ``dest`` answers."""
        if not os.path.isdir(self.path):
            raise SourceNotFoundError(f"checkpoint: {self.path!r} is not a folder (it must exist before the start)")
        try:
            self.destination.check()
            self._load()
        except DestinationUnreachableError as exc:
            if not self.start_unreachable:
                raise
            log.warning("%s; starting anyway, the passes will try again", exc)

    def start(self) -> "Checkpoint":
        """Check (see :meth:`check`), then start the passes in the background; returns self."""
        with self._lock:
            if self._started:
                raise ConfigurationError(f"{self.name} was started already")
            self.check()
            self._started = True
        self.set_running_or_notify_cancel()
        in_background(self._run, "taurus-tools:checkpoint")
        return self

    def run_pass(self) -> PassReport:
        """Run one periodic pass now, in this thread (after the one under way, if any); its report."""
        if not self._started or concurrent.futures.Future.done(self):
            raise ConfigurationError(f"{self.name} is not running")
        return self._pass(final=False)

    def stop(self, timeout: Optional[float] = None) -> PassReport:
        """Ask for the final pass and wait for it (``timeout``: seconds); its report, or
        :class:`~taurus_tools.errors.CheckpointError` naming what it did not save."""
        self._stop.set()
        if not self._started:
            raise ConfigurationError(f"{self.name} was not started")
        return self.result(timeout)  # type: ignore[no-any-return]

    def cancel(self) -> bool:
        """End the passes without a final pass; False if it had ended already."""
        if concurrent.futures.Future.done(self):
            return False
        self._cancel = True
        self._stop.set()
        if not self._started:
            self._settle(error=concurrent.futures.CancelledError(f"{self.name}: cancelled before it started"))
        return True

    def __enter__(self) -> "Checkpoint":
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.stop()
        except CheckpointError as error:
            if exc is None:
                raise
            log.error("%s", error)  # the block's own error goes on

    # ------------------------------------------------------------------ the thread
    def _load(self) -> None:
        """Go on from the newest complete pass at the destination (before the first pass:
        a new pass must never reuse the number, and the data folder, of an earlier one)."""
        newest = self.destination.newest_manifest()
        self._loaded = True
        if newest is not None:
            self.committed = newest
            self._next = newest.number + 1
            log.info("%s: going on from pass %d (%d files)", self.name, newest.number, len(newest.files))

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every_s):
                report = self._pass(final=False)
                with self._lock:
                    self._passes.append(report)
                if report.error is not None:
                    log.warning("%s: pass failed, tried again in %gs: %s", self.name, self.every_s, report.error)
            if self._cancel:
                self._settle(error=concurrent.futures.CancelledError(f"{self.name}: cancelled (no final pass)"))
                return
            report = self._final()
        except BaseException as exc:  # a bug: the future says so rather than hanging
            log.exception("%s failed", self.name)
            self._settle(error=exc)
            return
        finally:
            self.destination.close()
        if report.ok:
            self._settle(report)
            return
        missing = report.missing()
        names = ", ".join(repr(p) for p in sorted(missing)[:10]) + (" ..." if len(missing) > 10 else "")
        why = f": {report.error}" if report.error else ""
        self._settle(
            error=CheckpointError(
                f"{self.name}: the final pass did not save {len(missing) or 'all'} file(s){why}"
                + (f" ({names})" if names else ""),
                missing,
            )
        )

    def _final(self) -> PassReport:
        deadline = time.monotonic() + self.final_timeout_s
        wait = threading.Event()
        while True:
            report = self._pass(final=True)
            if report.error is None and not report.deferred:
                return report
            left = deadline - time.monotonic()
            if left <= 0:
                return report
            log.info("%s: final pass: %s; trying again", self.name, report.error or f"{len(report.deferred)} changing")
            wait.wait(min(FINAL_RETRY_S if report.error is None else 2.0, left))

    # ------------------------------------------------------------------ one pass
    def _scan(self) -> Iterator[Tuple[str, os.stat_result]]:
        """Every regular file below ``path`` the regex takes: (relative path, lstat)."""
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                entries = list(os.scandir(os.path.join(self.path, rel_dir) if rel_dir else self.path))
            except FileNotFoundError:
                continue  # removed meanwhile
            for item in entries:
                rel = rel_dir + item.name
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(rel + "/")
                elif stat.S_ISREG(st.st_mode) and (self.regex is None or self.regex.search(rel)):
                    yield rel, st

    def _pass(self, *, final: bool) -> PassReport:
        with self._one_pass:  # one pass at a time, whoever asks
            return self._pass_alone(final=final)

    def _pass_alone(self, *, final: bool) -> PassReport:
        began = time.monotonic()
        if not self._loaded:  # started while the destination could not be reached
            try:
                self._load()
            except (DestinationUnreachableError, OSError) as exc:
                why = _why(exc)
                not_saved = {rel: why for rel, _ in self._scan()}
                return PassReport(final=final, error=why, not_saved=not_saved, seconds=time.monotonic() - began)
        number = self._next
        base = self.committed.files if self.committed is not None else {}
        report = PassReport(final=final)
        fresh: Dict[str, Entry] = {}
        candidates = []
        present = set()
        for rel, st in self._scan():
            present.add(rel)
            old = base.get(rel)
            if old is not None and old.same_file(st.st_size, st.st_mtime_ns):
                continue
            pending = self._pending.get(rel)
            if pending is not None and pending.same_file(st.st_size, st.st_mtime_ns):
                fresh[rel] = pending
                continue
            candidates.append((rel, st))
        now_ns = time.time_ns()
        ready = []
        for rel, st in candidates:
            if not final and now_ns - st.st_mtime_ns < self.settle_s * 1e9:
                report.deferred.append(rel)
            else:
                ready.append((rel, st))
        done = set()
        for rel, outcome in self.destination.send_files(self.path, ready, number):
            done.add(rel)
            if isinstance(outcome, Entry):
                self._pending[rel] = fresh[rel] = outcome
                report.sent += 1
                report.sent_bytes += outcome.size
            elif isinstance(outcome, FileNotFoundError):
                continue  # deleted since the scan: nothing to save
            elif isinstance(outcome, Changed):
                report.deferred.append(rel)
            elif isinstance(outcome, DestinationUnreachableError):
                report.error = str(outcome)
                report.not_saved[rel] = "the pass failed here"
                report.not_saved.update((r, "the pass failed before it") for r, _ in ready if r not in done)
                break
            else:
                report.not_saved[rel] = _why(outcome)
        if self.propagate_deletions:
            gone = [rel for rel in base if rel not in present]
            report.removed = len(gone)
            base = {rel: entry for rel, entry in base.items() if rel in present}
        changed = fresh or report.removed or self.committed is None or report.not_saved != self.committed.not_saved
        if report.error is None and changed:
            manifest = Manifest(number, time.time_ns(), {**base, **fresh}, dict(report.not_saved))
            try:
                self.destination.write_manifest(manifest)
            except (DestinationUnreachableError, OSError) as exc:
                report.error = f"the manifest could not be written: {_why(exc)}"
            else:
                self.committed, self._pending, self._next = manifest, {}, number + 1
                report.number = number
        if report.error is not None and not report.not_saved:
            report.not_saved.update((rel, "the pass failed") for rel, _ in candidates if rel not in report.deferred)
        if self.committed is not None:
            report.newest, report.files = self.committed.number, len(self.committed.files)
        report.seconds = time.monotonic() - began
        log.info(
            "%s: %spass %s: sent %d files (%d bytes), %d still changing, %d failed%s",
            self.name,
            "final " if final else "",
            report.number if report.number is not None else "(no manifest)",
            report.sent,
            report.sent_bytes,
            len(report.deferred),
            len(report.not_saved),
            f": {report.error}" if report.error else "",
        )
        return report


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
