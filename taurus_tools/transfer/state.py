"""The state of a parallel copy, as typed values with an explicit JSON form (``state.json``).

:class:`CopyState` holds what a resumed copy needs: the plan's key, the listing's counts,
one :class:`ShardState` per shard and one :class:`AttemptRecord` per attempt (the report's
``benchmark_results``).  :meth:`CopyState.to_json` and :meth:`CopyState.from_json` are the
only (de)serialisation; every field is written, every field is read back by name.

Versions of the format:

* 1 (the first releases, up to commit a3c891b): attempts name their shard by
  ``chunk_number`` (1 for the first shard).
* 2: an attempt names its shard by ``shard`` (its index, 0 first); everything else as in 1.
  Later releases of version 2 add optional fields to an attempt (``slurm_state``,
  ``nodes``; then ``action``, ``rule`` and ``exclusion``); a missing one reads as None.

A work dir of either version resumes; another version (a newer release's, or no
version at all) is refused, see :class:`taurus_tools.errors.ConfigurationError`.
The worker's status file (:class:`WorkerStatus`) is read here too.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ..errors import ConfigurationError
from ..slurm.client import NODE_FAILURE_STATES
from .plan import ListingStats

__all__ = [
    "EXCLUDED",
    "STATE_VERSION",
    "READABLE_VERSIONS",
    "AttemptRecord",
    "CopyState",
    "ShardCounts",
    "ShardState",
    "ShardStatus",
    "WorkerStatus",
]

#: An attempt's ``exclusion`` when its node was excluded from later attempts.
EXCLUDED = "excluded"

#: The version this release writes.
STATE_VERSION = 2
#: The versions it reads (and resumes).
READABLE_VERSIONS = (1, 2)


class ShardStatus(enum.Enum):
    """Where a shard stands.  ``RUNNING`` in a saved state means its driver was stopped."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class ShardCounts:
    """What a shard's copy process counted (the names of its status file's counters)."""

    files: int = 0
    bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    failed: int = 0
    verified: int = 0
    mismatches: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ShardCounts":
        """Counters by name; a missing one is 0, other keys are ignored."""
        return cls(**{f.name: int(data.get(f.name) or 0) for f in dataclasses.fields(cls)})

    def to_json(self) -> Dict[str, int]:
        return dataclasses.asdict(self)

    def add(self, other: "ShardCounts") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def since(self, before: "ShardCounts") -> "ShardCounts":
        """What was counted after ``before`` (an earlier point of the same totals)."""
        return ShardCounts(
            **{f.name: max(0, getattr(self, f.name) - getattr(before, f.name)) for f in dataclasses.fields(self)}
        )

    @property
    def done_bytes(self) -> int:
        """Bytes done: copied, or found at the destination already."""
        return self.bytes + self.skipped_bytes

    @property
    def done_files(self) -> int:
        """Files done: copied, or found at the destination already."""
        return self.files + self.skipped


@dataclass
class WorkerStatus:
    """A shard copy process's status file: its counters, and when and where it started.

    Attributes
    ----------
    counts : ShardCounts
    started_ms : int or None
        Epoch milliseconds of the process's first instruction.
    host, job_id : str or None
        Where it ran (``$SLURM_JOB_ID`` inside a job).
    done : bool
        It got to its end: its lists of failed entries are complete.
    """

    counts: ShardCounts
    started_ms: Optional[int] = None
    host: Optional[str] = None
    job_id: Optional[str] = None
    done: bool = False

    @classmethod
    def read(cls, path: Path) -> Optional["WorkerStatus"]:
        """The status in ``path``; None when there is none (yet), or it cannot be read."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not data:
            return None
        started = data.get("started_ms")
        return cls(
            counts=ShardCounts.from_json(data),
            started_ms=int(started) if started is not None else None,
            host=data.get("host"),
            job_id=data.get("job_id"),
            done=data.get("done") is True,
        )


def _path(value: Any) -> Optional[Path]:
    return None if value is None else Path(value)


def _text(value: Optional[Path]) -> Optional[str]:
    return None if value is None else str(value)


@dataclass
class ShardState:
    """One shard of the plan and what happened to it.

    Attributes
    ----------
    index : int
        0 first.
    path : Path
        Its records (the plan's shard file).
    bytes, files : int
        What it holds (files and links).
    status : ShardStatus
    attempts : int
        Attempts made in this round (a resume starts a failed shard at 0 again).
    todo : Path
        The records the next attempt copies: the shard, or what failed in the last attempt.
    counts : ShardCounts
        What its attempts counted, added up.
    pid, job_name : optional
        The process (or Slurm job) of the attempt that runs, for stopping it after a crash.
    failed_list : Path, optional
        The records that failed for good, once it has.
    messages : dict
        Path -> why it failed, for those records.
    generic : str, optional
        One line about the shard's command, for failures that have no message of their own.
    permanent : Path, optional
        Records that failed for good in an attempt while the rest is still being tried.
    permanent_messages : dict
        Path -> why, for those.
    """

    index: int
    path: Path
    bytes: int
    files: int
    todo: Path
    status: ShardStatus = ShardStatus.PENDING
    attempts: int = 0
    counts: ShardCounts = field(default_factory=ShardCounts)
    pid: Optional[int] = None
    job_name: Optional[str] = None
    failed_list: Optional[Path] = None
    messages: Dict[str, str] = field(default_factory=dict)
    generic: Optional[str] = None
    permanent: Optional[Path] = None
    permanent_messages: Dict[str, str] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "path": str(self.path),
            "bytes": self.bytes,
            "files": self.files,
            "state": self.status.value,
            "attempts": self.attempts,
            "todo": str(self.todo),
            "counts": self.counts.to_json(),
            "pid": self.pid,
            "job_name": self.job_name,
            "failed_list": _text(self.failed_list),
            "messages": dict(self.messages),
            "generic": self.generic,
            "permanent": _text(self.permanent),
            "permanent_messages": dict(self.permanent_messages),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ShardState":
        """Versions 1 and 2 (the same here); optional fields may be missing."""
        return cls(
            index=int(data["index"]),
            path=Path(data["path"]),
            bytes=int(data["bytes"]),
            files=int(data["files"]),
            todo=Path(data["todo"]),
            status=ShardStatus(data["state"]),
            attempts=int(data.get("attempts", 0)),
            counts=ShardCounts.from_json(data.get("counts") or {}),
            pid=data.get("pid"),
            job_name=data.get("job_name"),
            failed_list=_path(data.get("failed_list")),
            messages=dict(data.get("messages") or {}),
            generic=data.get("generic"),
            permanent=_path(data.get("permanent")),
            permanent_messages=dict(data.get("permanent_messages") or {}),
        )


@dataclass
class AttemptRecord:
    """One attempt at one shard: a row of the report's ``benchmark_results``.

    ``worker_start_ms``, ``host`` and ``job_id`` come from the copy process's status (None
    for a tool that reports nothing, such as the site's ``dtrsync``).  For an attempt
    that failed as a Slurm job, ``slurm_state`` and ``nodes`` are how Slurm saw its end
    (``NODE_FAIL`` on ``n2``), and ``job_id`` is the job's even when the worker never ran.
    For an attempt that did not succeed, ``action`` and ``rule`` are what the exit policy
    decided and the rule that said so; ``exclusion`` is :data:`EXCLUDED` when the attempt
    had its node excluded from later attempts (``retry_elsewhere``), else why it was not
    (the cap was reached, it was the last usable node, ...).
    """

    shard: int
    attempt: int
    start_time_ms: int
    end_time_ms: int
    bytes: int
    files: int
    exit_code: int
    worker_start_ms: Optional[int] = None
    host: Optional[str] = None
    job_id: Optional[str] = None
    slurm_state: Optional[str] = None
    nodes: Optional[str] = None
    action: Optional[str] = None
    rule: Optional[str] = None
    exclusion: Optional[str] = None

    @property
    def node_failed(self) -> bool:
        """The attempt ended because its Slurm node failed."""
        return self.slurm_state in NODE_FAILURE_STATES

    @property
    def excluded_node(self) -> Optional[str]:
        """The node this attempt had excluded from later attempts, if any.

        Attempts recorded before exit policies (no ``action``) excluded the node of every
        node failure."""
        if self.action is None:
            return self.nodes if self.node_failed and self.nodes else None
        return self.nodes if self.exclusion == EXCLUDED and self.nodes else None

    def report_row(self) -> Dict[str, Any]:
        """The attempt as an entry of the report's ``benchmark_results`` (also what
        ``CopyResult.attempts`` holds and the copy's timeline draws)."""
        duration = max(1, self.end_time_ms - self.start_time_ms)
        return {
            "start_time_ms": self.start_time_ms,
            "end_time_ms": self.end_time_ms,
            "duration_ms": duration,
            "average_mbps": round(self.bytes * 8 / 1e6 / (duration / 1000), 3),
            "total_bytes_transferred": self.bytes,
            "total_number_of_files": self.files,
            # The distributed-transfer report's name for the shard, 1 first.
            "chunk_number": self.shard + 1,
            "attempt": self.attempt,
            "exit_code": self.exit_code,
            # Launch to the shard's first instruction: a job's wait for the queue,
            # the node and the interpreter (None for a site tool: it says nothing).
            "start_delay_ms": max(0, self.worker_start_ms - self.start_time_ms) if self.worker_start_ms else None,
            "host": self.host,
            "job_id": self.job_id,
            # How Slurm saw a failed job end (NODE_FAIL, ...) and on which node(s).
            "slurm_state": self.slurm_state,
            "nodes": self.nodes,
        }

    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        # Written only when known (a failed Slurm job): other attempts keep the format
        # earlier releases of version 2 wrote.
        for optional in ("slurm_state", "nodes", "action", "rule", "exclusion"):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], version: int) -> "AttemptRecord":
        # Version 1 named the shard by its number, 1 first (the report's chunk_number).
        shard = int(data["chunk_number"]) - 1 if version == 1 else int(data["shard"])
        return cls(
            shard=shard,
            attempt=int(data["attempt"]),
            start_time_ms=int(data["start_time_ms"]),
            end_time_ms=int(data["end_time_ms"]),
            bytes=int(data["bytes"]),
            files=int(data["files"]),
            exit_code=int(data["exit_code"]),
            worker_start_ms=data.get("worker_start_ms"),
            host=data.get("host"),
            job_id=data.get("job_id"),
            slurm_state=data.get("slurm_state"),
            nodes=data.get("nodes"),
            action=data.get("action"),
            rule=data.get("rule"),
            exclusion=data.get("exclusion"),
        )


@dataclass
class CopyState:
    """Everything a copy keeps to resume, saved as ``state.json`` after each step.

    Attributes
    ----------
    src, dst : str
        The copy's locations.
    plan : str
        A key of what shapes the plan (locations, shards, exclude, ...): a work dir holding
        another plan is started over, not resumed.
    listing : ListingStats, optional
        The listing's counts, once the source is listed.
    shards : list of ShardState
        Empty until the listing is sharded.
    retries : int
        Retries so far (the report's ``total_retries``).
    results : list of AttemptRecord
        Every attempt so far.
    new_dst : bool
        The destination was empty when the copy began: first attempts need not look for
        files to skip.
    made_dst : bool
        The copy made the destination (it gets the source's mode and times too).
    sweep_parts : bool
        An earlier run may have left temporary files this plan will not overwrite.
    folders_done : bool
        The folders have their modes and times.
    finished : bool
        The copy succeeded (a work dir kept with ``keep_work_dir``).
    version : int
        Of the format; :data:`STATE_VERSION` when written by this release.
    """

    src: str
    dst: str
    plan: str
    listing: Optional[ListingStats] = None
    shards: List[ShardState] = field(default_factory=list)
    retries: int = 0
    results: List[AttemptRecord] = field(default_factory=list)
    new_dst: bool = False
    made_dst: bool = False
    sweep_parts: bool = False
    folders_done: bool = False
    finished: bool = False
    version: int = STATE_VERSION

    def to_json(self) -> Dict[str, Any]:
        """The state as JSON-ready values, in this release's format (:data:`STATE_VERSION`)."""
        return {
            "version": STATE_VERSION,
            "src": self.src,
            "dst": self.dst,
            "plan": self.plan,
            "listing": None if self.listing is None else dataclasses.asdict(self.listing),
            "shards": [s.to_json() for s in self.shards],
            "retries": self.retries,
            "results": [r.to_json() for r in self.results],
            "new_dst": self.new_dst,
            "made_dst": self.made_dst,
            "sweep_parts": self.sweep_parts,
            "folders_done": self.folders_done,
            "finished": self.finished,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "CopyState":
        """Read a state of any version in :data:`READABLE_VERSIONS`.

        Raises
        ------
        ConfigurationError
            The version is missing or not one this release reads (the message says which).
        KeyError, TypeError, ValueError
            The data is not a state at all.
        """
        version = data.get("version") if isinstance(data, Mapping) else None
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            readable = " and ".join(str(v) for v in READABLE_VERSIONS)
            found = "has no state version" if version is None else f"has state version {version!r}"
            raise ConfigurationError(f"it {found}; this release reads versions {readable}")
        listing = data.get("listing")
        stats = None
        if listing is not None:
            known = {f.name for f in dataclasses.fields(ListingStats)}
            stats = ListingStats(**{k: v for k, v in listing.items() if k in known})
        return cls(
            src=str(data["src"]),
            dst=str(data["dst"]),
            plan=str(data["plan"]),
            listing=stats,
            shards=[ShardState.from_json(s) for s in data.get("shards") or []],
            retries=int(data.get("retries", 0)),
            results=[AttemptRecord.from_json(r, version) for r in data.get("results") or []],
            new_dst=bool(data.get("new_dst", False)),
            made_dst=bool(data.get("made_dst", False)),
            sweep_parts=bool(data.get("sweep_parts", False)),
            folders_done=bool(data.get("folders_done", False)),
            finished=bool(data.get("finished", False)),
            version=int(version),
        )

    @classmethod
    def load(cls, path: Path) -> "CopyState":
        """:meth:`from_json` of the file (``OSError``, ``ValueError`` when it cannot be read)."""
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds no JSON object")
        return cls.from_json(data)

    def save(self, path: Path, tmp: Path) -> None:
        """Write the state to ``tmp``, then rename it over ``path`` (never half a state)."""
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, path)

    def failed_nodes(self) -> List[str]:
        """The nodes on which an attempt ended with a node failure, first failure first."""
        return list(dict.fromkeys(r.nodes for r in self.results if r.node_failed and r.nodes))

    def excluded_nodes(self) -> List[str]:
        """The nodes later attempts keep off (excluded by the exit policy), first first."""
        return list(dict.fromkeys(node for node in (r.excluded_node for r in self.results) if node))

    def shard_counts(self) -> ShardCounts:
        """The shards' counts, added up."""
        total = ShardCounts()
        for s in self.shards:
            total.add(s.counts)
        return total
