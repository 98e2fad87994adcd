"""Endpoints: where a parallel copy reads and writes, behind one interface.

The copy engine (:class:`taurus_tools.ParallelCopy`) never opens, walks or writes a
source or a destination itself.  It lists the source, launches the copy of each shard,
verifies and finishes through :class:`Endpoint` objects, which :func:`endpoint_for`
picks from the location string through the registry :data:`ENDPOINTS`:

==========================================  ===============  ================
location                                    registry key     endpoint
==========================================  ===============  ================
``/data/run1``, ``run1``, a ``Path``        ``""``           LocalEndpoint
``file:///data/run1``                       ``"file"``       LocalEndpoint
``s3://bucket/prefix``                      ``"s3"``         S3Endpoint
``remote:path``, ``:backend:path``          ``":"``          RcloneEndpoint
a Windows path (``C:\\data``)                --               refused
==========================================  ===============  ================

A location in a form without an entry is refused with a :class:`ConfigurationError` that
lists the valid forms.  (A local folder whose name holds ``:`` before any ``/`` reads as
``remote:path``: write it ``./name:x``.  A :class:`~pathlib.Path` is always a local path.)

Adding a kind of location (S3 with boto3, rclone remotes) is a new subclass of
:class:`Endpoint` and one entry in :data:`ENDPOINTS`, nothing else.  The subclass implements:

* ``from_location(location)`` (a classmethod: the endpoint for a string of its form),
  ``location`` (the canonical string: reports, the default work dir's key), ``forms``
  (how its locations are written, for error messages) and ``local_path`` (None unless it
  is a folder on this machine);
* as a source: ``check_source()`` (raise at once when it cannot be read) and
  ``list(into, exclude=..., files_from=...)``, which writes one record per entry
  (``KIND\\tSIZE\\tMTIME_NS\\tPATH\\0``, see :mod:`taurus_tools.transfer.plan`) to the binary
  file ``into`` and returns the :class:`~taurus_tools.transfer.plan.ListingStats`;
* as a destination: ``check_destination(source)`` and ``prepare(create=...)``; and
  ``free_bytes()`` when it can tell (default: it cannot, so nothing is checked);
* as the *mover* of a pair (``moves(source, destination)`` is True; the destination is
  asked first, then the source; for S3 the S3 side moves, as one side is local; an rclone
  remote moves whenever it is on either side):
  ``copy_shard(attempt, ...)`` returns the :class:`~taurus_tools.process.launch.Launch` of one
  attempt at one shard, through the Datamover's backend where it runs a program
  (``backend.launch_program``).  The program copies the records of ``attempt.records``
  and keeps the protocol of taurus-tools' own worker (:mod:`taurus_tools.transfer.worker`):
  it rewrites ``attempt.files.status`` with its counters as JSON (``files``, ``bytes``,
  ``skipped``, ``skipped_bytes``, ``failed``, ``verified``, ``mismatches``, and
  ``"done": true`` at its end), appends the records it could not copy to
  ``attempt.files.failed``, one JSON line per failure to ``attempt.files.messages``
  (``{"path", "error", "permanent"}``; the records of permanent ones to
  ``attempt.files.permanent``), and exits 0 (all copied and verified) or 1 (some
  failed).  A program that writes no status and exits 0 (the site's ``dtrsync``) has its
  shard checked by ``verify_shard(attempt, ...)``, which counts and writes the failure
  files the same way;
* optionally, as the mover: ``set_folders`` (give folders the source's modes and times)
  and ``remove_leftovers`` (temporary files a killed attempt left); the defaults do
  nothing, as an object store has neither.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import sys
import urllib.parse
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, ClassVar, Dict, List, NamedTuple, Optional, Sequence, Tuple, Type, Union

from ..errors import ConfigurationError, PathNotWritableError, SourceNotFoundError
from .._log import get_logger
from .plan import ListingStats, list_from_file, list_tree, read_entries
from .work_dir import AttemptFiles

if TYPE_CHECKING:
    from ..datamover.backends import Backend
    from .config import CopyConfig
    from .state import ShardCounts
    from ..process.launch import Launch

log = get_logger(__name__)

__all__ = [
    "ENDPOINTS",
    "DestinationState",
    "Endpoint",
    "LocalEndpoint",
    "ShardAttempt",
    "check_options",
    "endpoint_for",
    "mover_for",
]

StrPath = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ShardAttempt:
    """One attempt at copying one shard, as the driver asks the mover for it.

    Attributes
    ----------
    index : int
        The shard (0 first).
    attempt : int
        0 for the first attempt, then one more per retry.
    records : Path
        The records to copy: the shard, or what failed in the attempt before.
    files : AttemptFiles
        Where the attempt's program writes its status and failures.
    verify : {"size", "checksum", "none"}
    new : bool
        Nothing of this shard can be at the destination yet (no skip checks needed).
    atomic : bool
        Write every file under a temporary name and rename it into place.
    copy_tag : str
        The copy's tag (the same for every run of one copy), for temporary names.
    exclude_nodes : tuple of str
        Slurm nodes to keep the attempt off.
    blocking : bool
        For a site tool: wait for its transfer job, or submit it.
    in_process : bool
        Run it on a thread of the driver where the backend runs programs on this machine
        (movers whose worker can: ``s3://``), rather than as a process of its own.
    """

    index: int
    attempt: int
    records: Path
    files: AttemptFiles
    verify: str = "size"
    new: bool = False
    atomic: bool = False
    copy_tag: str = ""
    exclude_nodes: Tuple[str, ...] = ()
    blocking: bool = True
    in_process: bool = False

    @property
    def name(self) -> str:
        """For messages and job names: ``copy-shard-3``."""
        return f"copy-shard-{self.index}"


class DestinationState(NamedTuple):
    """What a destination held before the copy: whether it ``existed`` and was ``empty``."""

    existed: bool
    empty: bool


class Endpoint(ABC):
    """A place a parallel copy lists, reads or writes (see the module's docstring)."""

    #: How locations of this kind are written, for messages listing the valid forms.
    forms: ClassVar[Tuple[str, ...]] = ()
    #: The options of :class:`CopyConfig` that only some endpoints read (see
    #: :func:`check_options`); those of them this class reads.
    config_fields: ClassVar[Tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def from_location(cls, location: str, config: Optional["CopyConfig"] = None) -> "Endpoint":
        """The endpoint for ``location``, a string of one of this class's forms; ``config``:
        the copy's options (an S3 endpoint takes its server, profile and threads from it)."""

    @property
    @abstractmethod
    def location(self) -> str:
        """The canonical location (an absolute path, a URL)."""

    @property
    def local_path(self) -> Optional[Path]:
        """The folder as a path on this machine; None for a remote location."""
        return None

    @property
    def is_local(self) -> bool:
        """A folder on this machine (and, for Slurm, on the nodes that share its file systems)."""
        return self.local_path is not None

    def describe(self) -> str:
        """The location for messages."""
        return self.location

    def __str__(self) -> str:
        return self.location

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    # ------------------------------------------------------------------ as a source
    @abstractmethod
    def check_source(self) -> None:
        """Raise (:class:`SourceNotFoundError`, :class:`ConfigurationError`) unless it can be copied from."""

    @abstractmethod
    def list(self, into: BinaryIO, *, exclude: Sequence[str] = (), files_from: Optional[Path] = None) -> ListingStats:
        """Write one record per entry to ``into``; return the counts and the messages of what was left out.

        ``exclude``: glob patterns on names and relative paths.  ``files_from``: a local
        text file naming the entries (one relative path per line) instead of a walk.
        """

    # ------------------------------------------------------------------ as a destination
    @abstractmethod
    def check_destination(self, source: "Endpoint") -> None:
        """Raise :class:`ConfigurationError` when copying ``source`` here cannot work."""

    @abstractmethod
    def prepare(self, *, create: bool) -> DestinationState:
        """Before any shard: make the destination (``create``) or only check it could be made.

        Returns what it held before.  Raises :class:`PathNotWritableError` or
        :class:`ConfigurationError` with the reason.
        """

    def free_bytes(self) -> Optional[int]:
        """Bytes free for the copy; None when that cannot be known (nothing is checked then)."""
        return None

    # ------------------------------------------------------------------ as the mover
    @abstractmethod
    def moves(self, source: "Endpoint", destination: "Endpoint") -> bool:
        """Whether this endpoint copies from ``source`` to ``destination`` (one of them is this one)."""

    @abstractmethod
    def copy_shard(
        self, attempt: ShardAttempt, *, source: "Endpoint", destination: "Endpoint", backend: "Backend"
    ) -> "Launch":
        """How one attempt at one shard runs (see the module's docstring for the program's duties)."""

    @abstractmethod
    def verify_shard(self, attempt: ShardAttempt, *, source: "Endpoint", destination: "Endpoint") -> "ShardCounts":
        """Check a shard that a program copied without reporting anything; count and list what fails."""

    def set_folders(
        self, records: Path, *, root: bool, status: Path, source: "Endpoint", destination: "Endpoint"
    ) -> List[Tuple[str, str]]:
        """Once every file is in place, give the folders of ``records`` (with ``root``, the
        destination itself) the source's modes and times; return ``(path, error)`` for
        each that failed.  Default: there are no folders to set."""
        return []

    def remove_leftovers(self, records: Path, *, copy_tag: str, destination: "Endpoint") -> int:
        """Remove temporary files an interrupted earlier run of the copy ``copy_tag`` left in
        the folders of ``records``; return how many.  Default: there are none."""
        return 0


# ---------------------------------------------------------------------------- local
#: The per-shard worker: run as a script (``python -S``), it imports no package module.
WORKER_SCRIPT = Path(__file__).with_name("worker.py")


class LocalEndpoint(Endpoint):
    """A folder on this machine (POSIX); its shards copy with taurus-tools' own worker.

    Parameters
    ----------
    path : path-like
        The folder; made absolute (symbolic links are kept as given).
    """

    forms = ("a folder path: /data/run1, run1, ./name:with-colon", "file:///data/run1")

    def __init__(self, path: StrPath) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))
        #: As a source naming one file (see :meth:`check_source`): its name; the copy then
        #: runs from its folder with that one entry.
        self.single: Optional[bytes] = None

    @classmethod
    def from_location(cls, location: str, config: Optional["CopyConfig"] = None) -> "LocalEndpoint":
        if location[:5].lower() != "file:":
            return cls(location)
        parts = urllib.parse.urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(
                f"{location!r} names the host {parts.netloc!r}; a file:// location is on this machine: "
                "file:///path (or file://localhost/path)"
            )
        if parts.query or parts.fragment or location.endswith(("?", "#")):
            raise ConfigurationError(
                f"{location!r}: '?' and '#' in a file:// location must be written %3F and %23 "
                "(or give the plain path)"
            )
        if not parts.path.startswith("/"):
            raise ConfigurationError(f"{location!r}: a file:// location needs an absolute path: file:///path")
        return cls(urllib.parse.unquote(parts.path, errors="surrogateescape"))

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def local_path(self) -> Path:
        return self.path.parent if self.single is not None else self.path

    # ------------------------------------------------------------------ as a source
    def check_source(self) -> None:
        src = self.path
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
        if src.is_file():
            # One file: copied into the destination folder, as `cp FILE DIR/` does.
            self.single = os.fsencode(src.name)
            return
        if not src.is_dir():
            raise ConfigurationError(
                f"source {src} is neither a folder (whose contents are copied) nor a regular file"
            )
        if not os.access(src, os.R_OK | os.X_OK):
            raise SourceNotFoundError(f"source {src} cannot be read")

    def list(self, into: BinaryIO, *, exclude: Sequence[str] = (), files_from: Optional[Path] = None) -> ListingStats:
        if self.single is not None:
            if files_from is not None:
                raise ConfigurationError(f"files_from selects entries of a folder; the source {self.path} is a file")
            st = os.lstat(self.path)
            stats = ListingStats()
            kind = "l" if stat.S_ISLNK(st.st_mode) else "f"
            size = 0 if kind == "l" else st.st_size
            into.write(b"%s\t%d\t%d\t%s\0" % (kind.encode(), size, st.st_mtime_ns, self.single))
            stats.add(kind, size)
            return stats
        if files_from is None:
            return list_tree(self.path, into, exclude)
        try:
            names = open(files_from, encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise SourceNotFoundError(f"files_from {files_from}: {exc.strerror}") from exc
        with names:
            return list_from_file(self.path, names, into)

    # ------------------------------------------------------------------ as a destination
    def check_destination(self, source: Endpoint) -> None:
        dst = self.path
        real_dst = Path(os.path.realpath(dst))
        src = source.local_path
        if src is not None and getattr(source, "single", None) is not None:
            if Path(os.path.realpath(src)) == real_dst:
                raise ConfigurationError(f"{source} would be copied onto itself: its folder is the destination")
        elif src is not None:
            real_src = Path(os.path.realpath(src))
            if real_src == real_dst:
                raise ConfigurationError(f"source and destination are the same folder: {src}")
            if real_src in real_dst.parents:
                raise ConfigurationError(f"destination {dst} is inside the source {src}; it would copy itself")
        if dst.exists() and not dst.is_dir():
            raise ConfigurationError(f"destination {dst} exists and is not a folder")

    def prepare(self, *, create: bool) -> DestinationState:
        existed = self.path.exists()
        before = DestinationState(existed, not existed or not any(os.scandir(self.path)))
        if create:
            # Once, before the shards: rsync (the site's dtrsync) creates only the last
            # level of DST/, and several shards racing to create it fail with EEXIST.
            make_folder(self.path, "destination", writable_here=False)
        else:
            check_can_create(self.path, "destination")
        return before

    def free_bytes(self) -> Optional[int]:
        import psutil

        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            return int(psutil.disk_usage(str(probe)).free)
        except OSError:
            return None

    # ------------------------------------------------------------------ as the mover
    def moves(self, source: Endpoint, destination: Endpoint) -> bool:
        return source.is_local and destination.is_local

    def copy_shard(
        self, attempt: ShardAttempt, *, source: Endpoint, destination: Endpoint, backend: "Backend"
    ) -> "Launch":
        from ..datamover.backends import CopyShard

        src, dst = _local_pair(source, destination)
        argv = [
            sys.executable,
            "-S",  # the worker needs only the standard library: start fast
            str(WORKER_SCRIPT),
            "--src",
            str(src),
            "--dst",
            str(dst),
            "--shard",
            str(attempt.records),
            "--status",
            str(attempt.files.status),
            "--failed",
            str(attempt.files.failed),
            "--verify",
            attempt.verify,
            "--part-tag",
            _part_tag(attempt.copy_tag, attempt.index),
        ]
        if attempt.new:
            argv.append("--new")
        if attempt.atomic:
            argv.append("--atomic")
        records = attempt.records
        shard = CopyShard(
            name=attempt.name,
            src=src,
            dst=dst,
            worker_argv=tuple(argv),
            path_list=attempt.files.paths,
            paths=lambda: (entry.path for entry, _ in read_entries(records)),
            exclude_nodes=attempt.exclude_nodes,
            blocking=attempt.blocking,
        )
        return backend.launch_copy_shard(shard)

    def verify_shard(self, attempt: ShardAttempt, *, source: Endpoint, destination: Endpoint) -> "ShardCounts":
        """Counters for a shard a tool copied: as planned, then checked here with the worker's
        own check (a site tool runs only its own program); what does not match is written
        as failed entries, so the usual retry copies just those."""
        from .state import ShardCounts
        from .worker import Worker

        src, dst = _local_pair(source, destination)
        planned = ListingStats()
        for entry, _ in read_entries(attempt.records):
            planned.add(entry.kind, entry.size)
        files = attempt.files
        with open(files.failed, "wb") as failed_out, open(files.messages, "w") as messages:
            checker = Worker(
                os.fsencode(src), os.fsencode(dst), attempt.verify, str(files.status), failed_out, messages
            )
            checker.counts.update(files=planned.files + planned.links, bytes=planned.bytes)
            if attempt.verify != "none":
                checker.verify_shard(str(attempt.records))
        return ShardCounts.from_json(checker.counts)

    def set_folders(
        self, records: Path, *, root: bool, status: Path, source: Endpoint, destination: Endpoint
    ) -> List[Tuple[str, str]]:
        import io
        import json

        from .worker import Worker

        src, dst = _local_pair(source, destination)
        failed, messages = io.BytesIO(), io.StringIO()
        setter = Worker(os.fsencode(src), os.fsencode(dst), "none", str(status), failed, messages)
        done = setter.set_folders(str(records), root=root)
        log.debug("set the mode and times of %d folders", done)
        return [(entry["path"], entry["error"]) for entry in map(json.loads, messages.getvalue().splitlines())]

    def remove_leftovers(self, records: Path, *, copy_tag: str, destination: Endpoint) -> int:
        """One ``scandir`` per folder of ``records`` (and the destination itself)."""
        from .worker import PART_PREFIX

        if destination.local_path is None:
            return 0
        prefix = PART_PREFIX + os.fsencode(_part_tag(copy_tag, None))
        dst = os.fsencode(destination.local_path)
        folders = [dst] + [dst + b"/" + entry.path for entry, _ in read_entries(records) if entry.kind == "d"]
        removed = 0
        for folder in folders:
            with contextlib.suppress(OSError), os.scandir(folder) as it:
                for item in it:
                    if item.name.startswith(prefix) and item.is_file(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            os.unlink(item.path)
                            removed += 1
        return removed


def _part_tag(copy_tag: str, index: Optional[int]) -> str:
    """The worker's ``--part-tag``: the copy's tag and the shard (``.tt-part-TAG-SHARD``);
    with ``index`` None, the prefix every shard's tag starts with."""
    return f"{copy_tag}-" if index is None else f"{copy_tag}-{index}"


def _local_pair(source: Endpoint, destination: Endpoint) -> Tuple[Path, Path]:
    src, dst = source.local_path, destination.local_path
    if src is None or dst is None:
        raise ConfigurationError(f"a local copy needs two local folders, not {source} and {destination}")
    return src, dst


# ---------------------------------------------------------------------------- folders
def make_folder(path: Path, what: str, writable_here: bool = True) -> None:
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


def check_can_create(path: Path, what: str) -> None:
    """For a dry run: would :func:`make_folder` succeed?  (Nothing is created.)"""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe == path and path.is_dir():
        return  # there already (maybe writable only where the shards run)
    if not probe.is_dir():
        raise ConfigurationError(f"{what} {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PathNotWritableError(f"cannot create or write the {what} {path}: {probe} is not writable")


# ---------------------------------------------------------------------------- registry
#: Registry key of a plain path (no scheme).
PLAIN_PATH = ""
#: Registry key of rclone's ``remote:path`` form.
REMOTE = ":"
#: Endpoint classes by the form of location they take: a URL scheme in lower case
#: (``"file"`` for ``file://...``), :data:`PLAIN_PATH`, or :data:`REMOTE`.
ENDPOINTS: Dict[str, Type[Endpoint]] = {PLAIN_PATH: LocalEndpoint, "file": LocalEndpoint}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_WINDOWS = re.compile(r"[A-Za-z]:(?:$|[\\/])|\\\\")
#: rclone's remote names: letters, digits, ``_ . + @ -`` and spaces, not first; or
#: ``:backend:`` (a backend configured by the environment).
_REMOTE_NAME = re.compile(r"[A-Za-z0-9_.+@][A-Za-z0-9_.+@ -]*:|:[A-Za-z0-9]+[:,]")


def location_form(location: str) -> str:
    """The registry key for a location string (raises for a Windows path)."""
    scheme = _SCHEME.match(location)
    if scheme:
        return scheme.group(1).lower()
    if _WINDOWS.match(location):
        raise ConfigurationError(_invalid(location, "it looks like a Windows path; locations are POSIX paths"))
    if _REMOTE_NAME.match(location):
        return REMOTE
    return PLAIN_PATH


def endpoint_for(location: Union[StrPath, Endpoint], config: Optional["CopyConfig"] = None) -> Endpoint:
    """The endpoint for a location: an :class:`Endpoint` as it is, a path-like object as a
    local path, a string by its form (see the module's docstring); ``config``, the copy's
    options, is passed to the endpoint class.

    Raises
    ------
    ConfigurationError
        No endpoint takes locations of that form; the message lists the valid ones.
    """
    _register_builtin()
    if isinstance(location, Endpoint):
        return location
    if not isinstance(location, str):
        return ENDPOINTS[PLAIN_PATH].from_location(os.fspath(location), config)
    form = location_form(location)
    cls = ENDPOINTS.get(form)
    if cls is None:
        if form == REMOTE:
            name = location.split(":", 1)[0]
            why = (
                f"it reads as an rclone remote {name!r} (remote:path), and no endpoint copies those yet; "
                f"for a local folder write ./{location}"
            )
        else:
            why = f"no endpoint copies {form}:// locations yet"
        raise ConfigurationError(_invalid(location, why))
    return cls.from_location(location, config)


#: Options that mean something only to the endpoints naming them in ``config_fields``
#: (threads has a default, so giving it for a local copy cannot be told apart).
ENDPOINT_OPTIONS = ("endpoint_url", "profile")


def check_options(config: "CopyConfig", *endpoints: Endpoint) -> None:
    """Refuse an endpoint option that none of ``endpoints`` reads (it would do nothing).

    Raises
    ------
    ConfigurationError
        Naming the option, the locations, and which forms of location take it.
    """
    _register_builtin()
    for name in ENDPOINT_OPTIONS:
        if getattr(config, name, None) is None or any(name in e.config_fields for e in endpoints):
            continue
        takers = sorted({form for cls in ENDPOINTS.values() if name in cls.config_fields for form in cls.forms})
        where = " nor ".join(e.describe() for e in endpoints)
        raise ConfigurationError(
            f"{name} is given, but neither {where} uses it; it applies only to locations of the form "
            f"{'; '.join(takers)}"
        )


def _register_builtin() -> None:
    """Add the endpoints of the other modules (imported on first use: they import this one)."""
    if "s3" not in ENDPOINTS:
        from .s3 import S3Endpoint

        ENDPOINTS.setdefault("s3", S3Endpoint)
    if REMOTE not in ENDPOINTS:
        from .rclone import RcloneEndpoint

        ENDPOINTS.setdefault(REMOTE, RcloneEndpoint)


def _invalid(location: str, why: str) -> str:
    forms: List[str] = []
    for cls in ENDPOINTS.values():
        forms += [f for f in cls.forms if f not in forms]
    return f"location {location!r}: {why}. Valid forms: " + "; ".join(forms)


def mover_for(source: Endpoint, destination: Endpoint) -> Endpoint:
    """The endpoint that copies from ``source`` to ``destination``: the destination if it
    can, else the source."""
    for candidate in (destination, source):
        if candidate.moves(source, destination):
            return candidate
    raise ConfigurationError(f"no endpoint copies from {source.describe()} to {destination.describe()}")
