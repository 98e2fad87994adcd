"""``CopyConfig``: every option of a parallel copy, validated once.

Each field carries its command-line form in its metadata (``"cli"``: the flag, ``"help"``:
one line for ``--help``, and ``"min"``, ``"choices"``, ``"metavar"``, ``"default_text"``
where they apply), so
that ``taurus-tools copy`` is generated from the fields: defaults, ranges and choices are
written down once, here.  Only the standard library: the command line builds its parser
from this module before it imports any machinery.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Dict, Iterator, Optional, Tuple, Union

from ..callbacks import Progress, check_progress
from ..errors import ConfigurationError
from ..policy import ExitPolicy
from ..slurm.options import node_names, string_tuple

if TYPE_CHECKING:
    from ..datamover.backends import Backend
    from .s3 import S3Config

__all__ = ["CopyConfig", "DEFAULT_WORKERS", "IN_PROCESS", "SHARD_BY", "VERIFY_MODES", "cli_fields"]

VERIFY_MODES = ("size", "checksum", "none")
SHARD_BY = ("bytes", "count")
#: Shards copied at once by default (fewer on the local backend of a small machine).
DEFAULT_WORKERS = 8
#: Where the shards of an s3:// copy run on this machine (``in_process``).
IN_PROCESS = ("auto", "yes", "no")
#: ``in_process="auto"`` runs the shards in the driver for at most this many objects ...
IN_PROCESS_MAX_FILES = 256
#: ... or for objects of at least this size on average (those of the multipart threshold and
#: above move in ranged requests whose bytes never pass through Python).
IN_PROCESS_MIN_MEAN = 8 << 20


def _option(default: Any, help: str, cli: Optional[str] = None, **more: Any) -> Any:
    """A field with its help text, and its command-line flag when it has one."""
    metadata: Dict[str, Any] = {"help": help, **more}
    if cli is not None:
        metadata["cli"] = cli
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class CopyConfig:
    """Everything that shapes a parallel copy, validated once.

    Parameters
    ----------
    workers : int, optional
        Shards copied at the same time (processes or Slurm jobs).  Default: 8 through
        Slurm or the site's tools; on the local backend 8 or the CPUs this process may
        use (:func:`os.sched_getaffinity`), whichever is fewer, since there each shard
        is a process on this machine and more of them than cores only compete.  Raise
        it for file systems where one stream waits on the network (NFS, Lustre).
    shards : int, optional
        How many parts to cut the tree into; default ``workers``: one byte-balanced
        shard per worker.  Every shard is one more process (or job) to start, and
        retries redo only the failed entries, so small shards buy little; pass more
        (e.g. ``4 * workers``) when shards start at very different times, as Slurm
        jobs in a busy queue do.
    shard_by : {"bytes", "count"}
        Balance shards by bytes (largest file first onto the lightest shard, as fpart
        does) or by number of entries (as ``split -n l/N``).
    retries : int
        How many times failed entries are tried again.
    retry_on : collection of int, optional
        Exit codes of a shard that are worth retrying (negative: killed by that signal);
        default: every non-zero code.  Others count as final failures at once.  The
        same as ``exit_policy=ExitPolicy.from_retry_on(retry_on)``; not both.
    retry_delay_s : float
        Wait before the first retry; doubles for each further one.
    exit_policy : ExitPolicy or str, optional
        What a shard attempt that did not succeed leads to, from its exit code, signal
        or Slurm job state (:class:`~taurus_tools.policy.ExitPolicy`, or its compact
        form ``"1-10=retry,NODE_FAIL=retry_elsewhere,*=fail"``): ``retry``,
        ``retry_elsewhere`` (with the node it ran on excluded from later attempts, at
        most ``max_excluded`` nodes, and never the partition's last usable one),
        ``fail``, or ``complete`` (in a copy: no retry; entries it did not copy still
        count as failed, a copy never calls missing files copied).  Its ``retries`` and
        ``backoff``, when it sets them, replace ``retries`` and ``retry_delay_s``.
        Default: node failures retry elsewhere, every other failure retries.
    resume : bool
        Reuse the work directory of an interrupted run of the same copy and skip the
        shards it finished.  ``False`` starts over.
    verify : {"size", "checksum", "none"}
        After copying, check every listed file's presence and size; ``checksum`` also
        compares content hashes (BLAKE2) as each file is copied.
    atomic : bool
        Write every file under a temporary name (``.tt-part-TAG-N``) and rename it into
        place, so that even a copy that is interrupted and never resumed leaves no
        partial file under a real name.  By default only files already at the
        destination are replaced that way (their old version survives a crash).  New
        files are written under their own name, which saves a rename per file (15–20 %
        of the time with small files on ext4), and get the source's modification time last:
        until a file is complete it never matches the source, so the resume, or any
        re-run, copies it again.
    exclude : sequence of str
        Glob patterns; an entry is left out when its name or relative path matches.
    exclude_nodes : sequence of str
        Slurm nodes the shard jobs must avoid (``--exclude``), besides those the
        Datamover's :class:`SlurmOptions` exclude.
    work_dir : path-like, optional
        Where the listing, shards and state go; default
        ``~/.cache/taurus-tools/copies/<hash of src and dst>``.
    report : path-like, optional
        Where ``result_all.json`` is written (into it, when it is a folder); default
        inside the work directory.  Checked before anything is copied.
    progress : bool or ProgressCallback
        ``True``: a progress bar (bytes, with files and ETA) where one can be seen: on a
        terminal, or in Jupyter (shown in the cell that called :meth:`ParallelCopy.start`
        or :meth:`~ParallelCopy.run`); ``False`` or None: none.  A
        :class:`ProgressCallback` receives the totals and the bytes and files done.
    dry_run : bool
        List and shard, report the plan, copy nothing.
    check_space : bool
        Refuse to start when a local destination lacks the space the plan needs.
    keep_work_dir : bool
        Keep the listing and shards after a successful copy.
    files_from : path-like, optional
        A text file with one path (relative to ``src``) per line to copy instead of
        walking ``src``.  Paths that would reach outside ``src`` (absolute paths
        elsewhere, ``..``, a path below a symbolic link) are refused, each with a
        message; the rest is copied.
    threads : int
        Transfers each worker runs at once, for ``s3://`` and rclone locations (a local
        copy's worker copies one file at a time): workers x threads requests in flight.
    endpoint_url : str, optional
        The S3 server of ``s3://`` locations (``https://s3.example.org``); default:
        boto3's resolution (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the profile's
        ``endpoint_url``, else AWS).
    profile : str, optional
        The profile of ``~/.aws/config`` and ``~/.aws/credentials`` for ``s3://``
        locations; default: boto3's (``AWS_PROFILE``, else ``default``).  Credentials come
        only from there and the environment, never from an option.
    in_process : {"auto", "yes", "no"} or bool
        Where the shards of an ``s3://`` copy run when the backend runs them on this
        machine (local, site): ``"yes"`` on threads of this process, ``"no"`` each in a
        worker process of its own; ``"auto"`` (default) in this process when the plan has
        at most 256 objects or objects of 8 MiB or more on average (there an interpreter's
        start costs more than its own GIL gains), else in processes.  Either way the
        shards, files, retries, report and resume are the same; ``True``/``False`` mean
        ``"yes"``/``"no"``.  Other copies (local folders, rclone) always use processes.
    """

    workers: Optional[int] = _option(
        None,
        "shards copied at once",
        "--workers",
        min=1,
        default_text=f"{DEFAULT_WORKERS}; locally at most one per CPU",
    )
    shards: Optional[int] = _option(None, "number of shards", "--shards", min=1, default_text="one per worker")
    shard_by: str = _option(
        "bytes", "balance shards by bytes or by number of entries", "--shard-by", choices=SHARD_BY
    )
    retries: int = _option(2, "retries of failed entries", "--retries", min=0)
    retry_on: Optional[Collection[int]] = _option(None, "exit codes of a shard worth retrying (default: any)")
    retry_delay_s: float = _option(1.0, "seconds before the first retry, doubling for each further one")
    exit_policy: Optional[ExitPolicy] = _option(
        None,
        "what a failed shard leads to, by exit code, signal or Slurm state, "
        "e.g. 3,SIGKILL=retry,NODE_FAIL=retry_elsewhere,*=fail (actions: complete, retry, "
        "retry_elsewhere, fail; bounds: retries=N, run_retries=N, backoff=S, max_excluded=N)",
        "--exit-policy",
        metavar="RULES",
        default_text="NODE_FAIL,BOOT_FAIL=retry_elsewhere,*=retry",
    )
    resume: bool = _option(True, "start over instead of resuming an interrupted run", "--no-resume")
    verify: Optional[str] = _option(
        "size", "check sizes, or also content (BLAKE2), or nothing", "--verify", choices=VERIFY_MODES
    )
    atomic: bool = _option(
        False,
        "write every file under a temporary name and rename it (default: only files that exist already)",
        "--atomic",
    )
    exclude: Tuple[str, ...] = _option(
        (), "leave out entries whose name or relative path matches (repeatable)", "--exclude", metavar="GLOB"
    )
    exclude_nodes: Tuple[str, ...] = _option(
        (), "keep the shard jobs off this Slurm node (repeatable)", "--exclude-node", metavar="NODE"
    )
    work_dir: Optional[Path] = _option(
        None,
        "listing, shards and state",
        "--work-dir",
        metavar="DIR",
        default_text="~/.cache/taurus-tools/copies/<hash of SRC and DST>",
    )
    report: Optional[Path] = _option(
        None,
        "where to write result_all.json: a file, or a folder to put it in",
        "--report",
        metavar="PATH",
        default_text="in the work dir",
    )
    progress: Progress = _option(True, "a progress bar, or a ProgressCallback")
    dry_run: bool = _option(False, "list and shard, copy nothing", "--dry-run")
    check_space: bool = _option(
        True, "do not refuse a destination that lacks the space the plan needs", "--no-space-check"
    )
    keep_work_dir: bool = _option(False, "keep the listing and shards after a successful copy", "--keep-work-dir")
    files_from: Optional[Path] = _option(
        None, "copy only these paths (one per line, relative to SRC)", "--files-from", metavar="FILE"
    )
    threads: int = _option(8, "transfers at once inside each worker (s3:// and rclone locations)", "--threads", min=1)
    endpoint_url: Optional[str] = _option(
        None,
        "S3 server for s3:// locations",
        "--endpoint-url",
        metavar="URL",
        default_text="AWS_ENDPOINT_URL, the profile's, else AWS",
    )
    profile: Optional[str] = _option(
        None, "AWS profile for s3:// locations", "--profile", metavar="NAME", default_text="AWS_PROFILE, else default"
    )
    in_process: Union[str, bool] = _option(
        "auto",
        "run an s3:// copy's shards on threads of this process, or as worker processes; auto: in this "
        "process for at most 256 objects or 8 MiB or more on average",
        "--in-process",
        choices=IN_PROCESS,
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            minimum = f.metadata.get("min")
            value = getattr(self, f.name)
            if minimum is None or (value is None and f.default is None):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigurationError(f"{f.name} must be an int >= {minimum}, got {value!r}")
        if self.shard_by not in SHARD_BY:
            raise ConfigurationError(f"shard_by must be 'bytes' or 'count', got {self.shard_by!r}")
        verify = "none" if self.verify is None else self.verify
        if verify not in VERIFY_MODES:
            raise ConfigurationError(f"verify must be one of {', '.join(VERIFY_MODES)} or None, got {self.verify!r}")
        object.__setattr__(self, "verify", verify)
        if isinstance(self.in_process, bool):
            object.__setattr__(self, "in_process", "yes" if self.in_process else "no")
        if self.in_process not in IN_PROCESS:
            raise ConfigurationError(
                f"in_process must be one of {', '.join(IN_PROCESS)} (or True/False), got {self.in_process!r}"
            )
        if not isinstance(self.retry_delay_s, (int, float)) or self.retry_delay_s < 0:
            raise ConfigurationError(f"retry_delay_s must be >= 0 seconds, got {self.retry_delay_s!r}")
        object.__setattr__(self, "exclude", string_tuple("exclude", self.exclude, "glob patterns"))
        object.__setattr__(self, "exclude_nodes", node_names("exclude_nodes", self.exclude_nodes))
        if self.retry_on is not None:
            object.__setattr__(self, "retry_on", frozenset(int(c) for c in self.retry_on))
        if isinstance(self.exit_policy, str):
            object.__setattr__(self, "exit_policy", ExitPolicy(self.exit_policy))
        elif self.exit_policy is not None and not isinstance(self.exit_policy, ExitPolicy):
            raise ConfigurationError(
                f"exit_policy must be an ExitPolicy or its compact form (a str), got {type(self.exit_policy).__name__}"
            )
        if self.exit_policy is not None and self.retry_on is not None:
            raise ConfigurationError(
                "give retry_on or exit_policy, not both: retry_on=[...] is exit_policy=ExitPolicy.from_retry_on([...])"
            )
        for name in ("work_dir", "report", "files_from"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        check_progress(self.progress)
        self.s3()  # endpoint_url, profile and threads are checked where they are used

    def s3(self) -> "S3Config":
        """The :class:`~taurus_tools.transfer.s3.S3Config` of this copy's ``s3://`` locations."""
        from .s3 import S3Config

        return S3Config(endpoint_url=self.endpoint_url, profile=self.profile, threads=self.threads)

    def policy(self) -> ExitPolicy:
        """The exit policy shards follow: ``exit_policy``, else the one ``retry_on`` means,
        with ``retries`` and ``retry_delay_s`` where the policy sets no bounds of its own."""
        policy = self.exit_policy if self.exit_policy is not None else ExitPolicy.from_retry_on(self.retry_on)
        return policy.with_defaults(retries=self.retries, backoff_s=self.retry_delay_s)

    @property
    def shard_count(self) -> int:
        if self.shards is not None:
            return self.shards
        if self.workers is None:
            raise ConfigurationError("workers is not set yet: see CopyConfig.for_backend")
        return self.workers

    def runs_in_process(self, files: int, size: int) -> bool:
        """Whether shards of a plan of ``files`` objects and ``size`` bytes run in the driver
        (``in_process``; where the backend and the mover can)."""
        if self.in_process != "auto":
            return self.in_process == "yes"
        return files <= IN_PROCESS_MAX_FILES or size >= files * IN_PROCESS_MIN_MEAN

    def for_backend(self, backend: Backend) -> "CopyConfig":
        """This config with ``workers`` set when it was left to the default (see above)."""
        if self.workers is not None:
            return self
        return dataclasses.replace(self, workers=backend.default_workers(DEFAULT_WORKERS))

    def replace(self, **changes: Any) -> "CopyConfig":
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - valid)
        if unknown:
            raise ConfigurationError(
                f"unknown copy option(s) {', '.join(unknown)}; valid: "
                + ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(self))
            )
        return dataclasses.replace(self, **changes)


def cli_fields() -> Iterator["dataclasses.Field[Any]"]:
    """The fields that ``taurus-tools copy`` has options for, in order."""
    return (f for f in dataclasses.fields(CopyConfig) if "cli" in f.metadata)
