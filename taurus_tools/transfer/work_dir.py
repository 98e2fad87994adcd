"""``WorkDir``: every path of a parallel copy's work directory, built here and nowhere else.

::

    WORK/
      .lock                          one driver at a time (flock)
      state.json                     the copy's state (:mod:`taurus_tools.transfer.state`); state.tmp while written
      listing                        the source's records; listing.tmp while written
      shards/shard-NNNN              the plan: the records of shard NNNN
      runs/shard-NNNN.A.status       attempt A of shard NNNN: its progress counters (JSON)
      runs/shard-NNNN.A.failed       ... the records that failed; .messages: why (JSON lines);
                                     .permanent: those no retry can heal
      runs/shard-NNNN.A.paths        ... its paths, for a tool that copies by itself (the site's dtrsync)
      runs/shard-NNNN.A.final        what the shard failed for good, merged
      runs/shard-NNNN.permanent      what failed for good in earlier attempts
      runs/folders.status            setting the folders' modes and times
      result_all.json                the report, unless it is written elsewhere

The names are those of the first release, so a work dir an earlier release left resumes.
Everything but the report and the lock is the copy's own and goes when it succeeds; a
work dir given by the user may hold other files, which are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Tuple

from ..errors import ConfigurationError

from .worker import MESSAGES_SUFFIX, PERMANENT_SUFFIX
from .records import shard_file_name

__all__ = ["AttemptFiles", "WorkDir", "default_work_root", "temporary_for"]

REPORT_NAME = "result_all.json"
_STATE = "state.json"
_STATE_TMP = "state.tmp"  # not state.json.tmp: the first release's name
_LISTING = "listing"
_SHARDS = "shards"
_RUNS = "runs"
_LOCK = ".lock"
#: What a copy writes into its work dir besides the report and the lock: all that is cleaned.
_OURS = (_STATE, _STATE_TMP, _LISTING, _LISTING + ".tmp", _SHARDS, _RUNS)


def temporary_for(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (``NAME.tmp`` beside it)."""
    return path.with_name(path.name + ".tmp")


def default_work_root(src: str, dst: str) -> Path:
    """``~/.cache/taurus-tools/copies/<hash of src and dst>``: the same for every run of one copy."""
    key = hashlib.sha1(f"{src}\0{dst}".encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Path.home() / ".cache" / "taurus-tools" / "copies" / key


@dataclass(frozen=True)
class AttemptFiles:
    """The files of one attempt at one shard, which its copy process writes.

    Attributes
    ----------
    status : Path
        Progress counters as JSON, rewritten while it runs.
    failed : Path
        The records that failed (the copy process names ``messages`` and ``permanent``
        after it: ``FAILED.messages``, ``FAILED.permanent``).
    messages : Path
        One JSON line per failed record: ``{"path", "error", "permanent"}``.
    permanent : Path
        The failed records no retry can heal.
    paths : Path
        The shard's paths, NUL-terminated, for a tool that reads them (``dtrsync``).
    """

    status: Path
    failed: Path
    messages: Path
    permanent: Path
    paths: Path

    def written_by_the_attempt(self) -> Tuple[Path, ...]:
        """What an earlier run's attempt of the same number may have left (removed before it runs)."""
        return (self.status, self.failed, self.messages, self.permanent)


class WorkDir:
    """The work directory of one parallel copy: its paths, its lock and its clean-up.

    Parameters
    ----------
    root : path-like
        The folder (made by :meth:`create`).
    """

    def __init__(self, root: "Path | str") -> None:
        self.root = Path(root)

    @classmethod
    def default_for(cls, src: str, dst: str) -> "WorkDir":
        """The work dir a copy of ``src`` to ``dst`` uses when none is given."""
        return cls(default_work_root(src, dst))

    def __repr__(self) -> str:
        return f"WorkDir({str(self.root)!r})"

    # ------------------------------------------------------------------ paths
    @property
    def state(self) -> Path:
        return self.root / _STATE

    @property
    def state_tmp(self) -> Path:
        """``state.tmp``: the next state, renamed over :attr:`state` once whole."""
        return self.root / _STATE_TMP

    @property
    def listing(self) -> Path:
        return self.root / _LISTING

    @property
    def listing_tmp(self) -> Path:
        return temporary_for(self.listing)

    @property
    def shards(self) -> Path:
        """The folder of the plan's shard files."""
        return self.root / _SHARDS

    @property
    def runs(self) -> Path:
        """The folder of the attempts' files."""
        return self.root / _RUNS

    @property
    def lock_file(self) -> Path:
        return self.root / _LOCK

    @property
    def report(self) -> Path:
        """Where the report goes when the copy is given no other place."""
        return self.root / REPORT_NAME

    @property
    def folders_status(self) -> Path:
        return self.runs / "folders.status"

    def shard(self, index: int) -> Path:
        """The records of shard ``index`` (the plan)."""
        return self.shards / shard_file_name(index)

    def attempt(self, index: int, attempt: int) -> AttemptFiles:
        """The files of attempt ``attempt`` (0 first) at shard ``index``."""
        stem = self.runs / f"{shard_file_name(index)}.{attempt}"
        failed = stem.with_name(stem.name + ".failed")
        return AttemptFiles(
            status=stem.with_name(stem.name + ".status"),
            failed=failed,
            messages=failed.with_name(failed.name + MESSAGES_SUFFIX),
            permanent=failed.with_name(failed.name + PERMANENT_SUFFIX),
            paths=stem.with_name(stem.name + ".paths"),
        )

    def kept_permanent(self, index: int) -> Path:
        """The records of shard ``index`` that failed for good in any attempt so far."""
        return self.runs / f"{shard_file_name(index)}{PERMANENT_SUFFIX}"

    def final_list(self, index: int, attempt: int) -> Path:
        """What shard ``index`` failed for good, as merged after attempt ``attempt``."""
        return self.runs / f"{shard_file_name(index)}.{attempt}.final"

    # ------------------------------------------------------------------ life cycle
    def create(self) -> None:
        """Make the folder (and its parents), or say in one line why it cannot be."""
        from .endpoints import make_folder

        make_folder(self.root, "work dir")

    def make_runs(self) -> None:
        self.runs.mkdir(exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the work dir's lock: one driver per work directory at a time."""
        import fcntl

        with open(self.lock_file, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise ConfigurationError(f"another copy is running in {self.root}") from exc
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def clean(self, *, everything: bool = False) -> None:
        """Remove what a copy wrote here (with ``everything``, the default report too).

        Only the copy's own files: a work dir given by the user may hold others.
        """
        ours = set(_OURS)
        if everything:
            ours |= {REPORT_NAME, temporary_for(self.report).name}
        for child in self.root.iterdir():
            if child.name not in ours:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()

    def start_over(self) -> None:
        """Clean everything a copy wrote and keep the (now empty of it) folder."""
        self.clean(everything=True)
        self.root.mkdir(parents=True, exist_ok=True)
