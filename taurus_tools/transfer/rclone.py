"""rclone remotes as copy locations: ``remote:path`` parsed, listed into records, and copied.

:class:`RemoteLocation` parses and checks ``remote:path`` (a remote of rclone's config or of
``RCLONE_CONFIG_<NAME>_...`` variables) and ``:backend:path`` (a backend with its options from
the environment); :func:`list_remote` lists a location with one ``rclone lsjson -R
--files-only`` and streams its output into the copy engine's records.  Paths are kept in
rclone's own encoding (rclone shows a local file name with a newline as ``new␊line``, and
takes it back in that form), so a shard list made from this listing names what rclone will
find.  :class:`RcloneEndpoint` makes such locations a parallel copy's source or destination,
paired with a local folder or another remote; its shards copy with
:mod:`taurus_tools.transfer.rclone_worker` (one ``rclone copy`` per shard).

Credentials stay in rclone's config file or the environment: nothing here puts them in argv,
and error messages quote rclone's stderr, which does not print them.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from ..errors import CommandError, CommandNotFoundError, ConfigurationError, SourceNotFoundError
from .endpoints import DestinationState, Endpoint, ShardAttempt
from .plan import ListingStats, excluded, path_problem

if TYPE_CHECKING:
    from ..datamover.backends import Backend
    from ..process.launch import Launch
    from .config import CopyConfig
    from .state import ShardCounts

__all__ = ["RcloneEndpoint", "RemoteLocation", "list_remote", "parse_mod_time", "rclone_executable", "rclone_version"]

#: rclone's rule for remote names (letters, digits, ``_ - . + @`` and inner spaces).
_REMOTE = re.compile(r"^[\w.+@-](?:[\w.+@ -]*[\w.+@-])?$")
#: ``:backend:`` (options belong in the environment: ``RCLONE_<BACKEND>_...``).
_BACKEND = re.compile(r"^:[a-z0-9]+$")
#: rclone's exit code for "directory not found" (the same before and after its 2024 change).
EXIT_DIR_NOT_FOUND = 3


def rclone_executable() -> Optional[str]:
    """The rclone next to this Python (the ``rclone`` extra's wheel), else the one on PATH."""
    here = Path(sys.executable).with_name("rclone")
    return str(here) if here.exists() else shutil.which("rclone")


@dataclass(frozen=True)
class RemoteLocation:
    """``remote:path`` (or ``:backend:path``) as rclone writes it; ``path`` may be empty."""

    remote: str
    path: str = ""

    FORMS = "REMOTE:PATH (a remote of rclone's config or RCLONE_CONFIG_REMOTE_* variables) or :BACKEND:PATH"

    @classmethod
    def parse(cls, location: str) -> "RemoteLocation":
        if not isinstance(location, str) or ":" not in location.lstrip(":"):
            raise ConfigurationError(f"{location!r} is not an rclone location; write {cls.FORMS}")
        if location.startswith(":"):
            backend, _, path = location[1:].partition(":")
            remote = ":" + backend
            if "," in backend:  # (the location is not quoted: its options may hold a secret)
                raise ConfigurationError(
                    f"a :{backend.partition(',')[0]}: location with options: give a backend's options in the "
                    "environment (RCLONE_<BACKEND>_<OPTION>), not in the location, so that no secret ends up "
                    "in a command line"
                )
            if not _BACKEND.match(remote):
                raise ConfigurationError(f"{location!r}: {backend!r} is not a backend name; write {cls.FORMS}")
        else:
            remote, _, path = location.partition(":")
            if not _REMOTE.match(remote):
                raise ConfigurationError(f"{location!r}: {remote!r} is not a remote name; write {cls.FORMS}")
        return cls(remote, path)

    def __str__(self) -> str:
        return f"{self.remote}:{self.path}"

    def parent(self) -> Tuple["RemoteLocation", str]:
        """The folder this location is in, and its name (for a location naming one file)."""
        path = self.path.rstrip("/")
        folder, _, name = path.rpartition("/")
        return RemoteLocation(self.remote, folder + "/" if path.startswith("/") and not folder else folder), name


@functools.lru_cache(maxsize=None)
def rclone_version(exe: str) -> str:
    """The version of the rclone ``exe`` (``"1.75.2"``), asked once per executable; "" if unknown."""
    try:
        out = subprocess.run(
            [exe, "version"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    m = re.search(r"rclone v(\d+\.\d+[\w.+-]*)", out)
    return m.group(1) if m else ""


def parse_mod_time(text: str) -> int:
    """rclone's ``ModTime`` (RFC 3339, up to nanoseconds, any offset) as ns since the epoch."""
    import datetime as dt

    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base, frac, zone = m.groups()
    offset = dt.timezone.utc if zone == "Z" else dt.datetime.strptime(zone.replace(":", ""), "%z").tzinfo
    when = dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=offset)
    return int(when.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def list_remote(
    location: RemoteLocation,
    out: BinaryIO,
    *,
    rclone: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: float = 3600.0,
    exclude: Sequence[str] = (),
) -> ListingStats:
    """List ``location`` recursively (files only) with one rclone call; write one record per file.

    Records have the engine's format (``f\\tSIZE\\tMTIME_NS\\tPATH\\0``, PATH relative to the
    location in rclone's encoding, MTIME_NS the server's time: for S3 the upload's).  rclone's
    JSON is read line by line as it arrives: nothing but the counters stays in memory.  A
    path that cannot be a relative file name is left out with a message.  ``exclude`` globs
    are matched as a local listing matches them (see
    :func:`~taurus_tools.transfer.plan.excluded`), against the file and each folder above
    it, in rclone's encoding of the names; a folder left out counts once, with what it holds.
    Raises :class:`SourceNotFoundError` when the location does not exist,
    :class:`ConfigurationError` for a remote rclone does not know, :class:`CommandError` for
    any other failure of rclone.
    """
    exe = rclone or rclone_executable()
    if exe is None:
        raise CommandNotFoundError("rclone", (), "not installed; pip install 'taurus-tools[rclone]'")
    # The server's times: for S3 the time of the upload, where the mtime metadata would cost
    # a HEAD request per object (10 times slower); the copy compares rclone's own times.
    argv = [exe, "lsjson", "-R", "--files-only", "--no-mimetype", "--use-server-modtime",
            "--", str(location)]
    stats = ListingStats()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env else None,
        )
    except FileNotFoundError:
        raise CommandNotFoundError(exe, (), "not installed; pip install 'taurus-tools[rclone]'") from None
    assert proc.stdout is not None and proc.stderr is not None
    err_chunks: List[bytes] = []
    left_out: Set[str] = set()  # excluded folders (counted once each)

    def drain() -> None:  # stderr in the background: rclone may log much while it lists
        assert proc.stderr is not None
        for chunk in iter(lambda: proc.stderr.read(65536), b""):  # type: ignore[union-attr]
            if sum(map(len, err_chunks)) < 1 << 20:
                err_chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        batch: List[bytes] = []
        for line in proc.stdout:
            line = line.strip().rstrip(b",")
            if not line.startswith(b"{"):
                continue  # the array's brackets
            item: Dict[str, object] = json.loads(line)
            rel = str(item["Path"])
            problem = path_problem(rel)
            if problem is not None:
                stats.refuse(f"{location.remote}:{location.path.rstrip('/')}/{rel}", f"the path {problem}")
                continue
            if exclude and _excluded(rel, exclude, left_out, stats):
                continue
            size = int(item["Size"])  # type: ignore[call-overload]
            if size < 0:  # unknown size (some backends): copied and counted as it comes
                size = 0
            mtime_ns = parse_mod_time(str(item["ModTime"]))
            batch.append(b"f\t%d\t%d\t%s\0" % (size, mtime_ns, rel.encode("utf-8", "surrogateescape")))
            stats.add("f", size)
            if len(batch) >= 1000:
                out.write(b"".join(batch))
                batch.clear()
        out.write(b"".join(batch))
        rc = proc.wait(timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.join(10)
    if rc != 0:
        stderr = b"".join(err_chunks).decode("utf-8", "replace")
        if rc == EXIT_DIR_NOT_FOUND or "directory not found" in stderr:
            raise SourceNotFoundError(f"{location} does not exist (rclone: directory not found)")
        raise _error(location, rc, argv, stderr)
    return stats


def _excluded(rel: str, patterns: Sequence[str], left_out: Set[str], stats: ListingStats) -> bool:
    """Whether a listed file is left out by ``patterns``, itself or through a folder above it."""
    parts = rel.split("/")
    for depth in range(1, len(parts)):
        folder = "/".join(parts[:depth])
        if folder in left_out:
            return True
        if excluded(folder, parts[depth - 1], patterns):
            left_out.add(folder)
            stats.excluded += 1
            return True
    if excluded(rel, parts[-1], patterns):
        stats.excluded += 1
        return True
    return False


def _error(location: RemoteLocation, rc: int, argv: Sequence[str], stderr: str) -> Exception:
    """The typed error for a failed rclone call about ``location``."""
    if "didn't find section in config file" in stderr or "not found in config" in stderr.lower():
        return ConfigurationError(
            f"rclone remote {location.remote!r} is not configured (rclone config, or RCLONE_CONFIG_"
            f"{location.remote.upper().replace(' ', '_')}_TYPE=... in the environment); location {str(location)!r}: "
            f"write {RemoteLocation.FORMS}, or ./{location} for a local folder of that name"
        )
    if "didn't find backend called" in stderr:
        return ConfigurationError(
            f"location {str(location)!r}: rclone has no backend {location.remote[1:]!r} (see rclone help backends); "
            f"write {RemoteLocation.FORMS}"
        )
    return CommandError(rc, argv, None, stderr)


# ---------------------------------------------------------------------------- the endpoint
#: The per-shard worker (``python -S``: it needs only the standard library).
WORKER_SCRIPT = Path(__file__).with_name("rclone_worker.py")


class RcloneEndpoint(Endpoint):
    """An rclone remote (``remote:path``, ``:backend:path``) as a copy's source or destination.

    It pairs with a local folder on the other side or with another rclone remote, and it
    moves whenever one side is a remote: each shard is one ``rclone copy
    --files-from-raw LIST --no-traverse`` with ``threads`` transfers, run by
    :mod:`taurus_tools.transfer.rclone_worker` through the Datamover's backend (a local
    process, or a job on the data-mover partition).  A location naming one file copies that
    file alone.  The remote's configuration, credentials included, comes from rclone's
    config file or ``RCLONE_CONFIG_<REMOTE>_...`` variables (a ``:backend:`` from
    ``RCLONE_<BACKEND>_...``), never from an argument: the environment reaches the shards
    (Slurm passes it to the jobs).

    An ``s3://`` location on the other side is refused: write it as an rclone remote too.

    Parameters
    ----------
    location : str or RemoteLocation
    threads : int
        Transfers (and checkers) of each shard's rclone.
    rclone : str, optional
        The rclone executable; default the ``rclone`` extra's, else rclone on PATH.
    """

    forms = (RemoteLocation.FORMS,)

    def __init__(self, location: "str | RemoteLocation", *, threads: int = 8, rclone: Optional[str] = None) -> None:
        self.remote = location if isinstance(location, RemoteLocation) else RemoteLocation.parse(location)
        self.threads = threads
        self._rclone = rclone
        #: The folder records are relative to: the location, or the folder of the one file it names.
        self.root = self.remote
        #: ``(name, size, mtime_ns)`` of the one file the location names (see :meth:`check_source`).
        self.single: Optional[Tuple[str, int, int]] = None
        self._existed: Optional[bool] = None  # as a destination: whether it was there (check_destination)

    @classmethod
    def from_location(cls, location: str, config: Optional["CopyConfig"] = None) -> "RcloneEndpoint":
        return cls(location, threads=config.threads if config is not None else 8)

    @property
    def location(self) -> str:
        return str(self.remote)

    @property
    def rclone(self) -> str:
        exe = self._rclone or rclone_executable()
        if exe is None:
            raise CommandNotFoundError(
                "rclone",
                (),
                f"not installed: pip install 'taurus-tools[rclone]' (for a local folder {self.location!r} "
                f"write ./{self.location})",
            )
        return exe

    def _stat(self, what: str) -> Optional[Dict[str, Any]]:
        """rclone's entry for the location itself (``IsDir``, ``Size``, ``ModTime``); None if there is none."""
        argv = [self.rclone, "lsjson", "--stat", "--no-mimetype", "--", self.location]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        except OSError as exc:
            raise CommandNotFoundError(argv[0], (), f"cannot run: {exc.strerror or exc}") from None
        if proc.returncode == 0:
            return json.loads(proc.stdout)  # type: ignore[no-any-return]
        if proc.returncode in (EXIT_DIR_NOT_FOUND, 4) or any(
            why in proc.stderr for why in ("directory not found", "object not found", "is a file not a directory")
        ):
            return None
        error = _error(self.remote, proc.returncode, argv, proc.stderr)
        if isinstance(error, ConfigurationError):
            raise ConfigurationError(f"{what} {error}") from None
        raise error

    def _overlaps(self, other: "RcloneEndpoint") -> bool:
        if other.remote.remote != self.remote.remote:
            return False
        a, b = self.remote.path.strip("/"), other.remote.path.strip("/")
        return a == b or not a or not b or a.startswith(b + "/") or b.startswith(a + "/")

    # ------------------------------------------------------------------ as a source
    def check_source(self) -> None:
        """The remote must be configured and the location exist (a folder, or one file)."""
        item = self._stat("source")
        if item is None:
            raise SourceNotFoundError(
                f"source {self.location} does not exist (rclone: not found); list it with: "
                f"rclone lsf {self.remote.remote}:{self.remote.parent()[0].path}"
            )
        if not item.get("IsDir"):
            self.root, name = self.remote.parent()
            self.single = (name, max(0, int(item.get("Size", 0))), parse_mod_time(str(item["ModTime"])))

    def list(self, into: BinaryIO, *, exclude: Sequence[str] = (), files_from: Optional[Path] = None) -> ListingStats:
        if files_from is not None:
            raise ConfigurationError(
                f"files_from names local paths; it cannot select files of {self.location} (use exclude patterns)"
            )
        if self.single is not None:
            name, size, mtime_ns = self.single
            stats = ListingStats()
            if exclude and excluded(name, name, exclude):
                stats.excluded += 1
            else:
                into.write(b"f\t%d\t%d\t%s\0" % (size, mtime_ns, name.encode("utf-8", "surrogateescape")))
                stats.add("f", size)
            return stats
        return list_remote(self.remote, into, rclone=self.rclone, exclude=exclude)

    # ------------------------------------------------------------------ as a destination
    def check_destination(self, source: Endpoint) -> None:
        if not (source.is_local or isinstance(source, RcloneEndpoint)):
            raise ConfigurationError(
                f"cannot copy {source.describe()} to {self.location}: an rclone remote pairs with a local folder or "
                "another rclone remote. Write the s3:// side as an rclone remote too (RCLONE_CONFIG_MYS3_TYPE=s3, "
                "..._PROVIDER, ..._ENDPOINT and the credentials in the environment or rclone's config), e.g. "
                "mys3:BUCKET/PREFIX"
            )
        if isinstance(source, RcloneEndpoint) and self._overlaps(source):
            raise ConfigurationError(
                f"source {source.location} and destination {self.location} overlap (the same remote, one path "
                "inside the other); copy into a folder outside the source"
            )
        local = source.local_path
        if local is not None and self.remote.remote == ":local":
            here = os.path.realpath(self.remote.path or ".")
            there = os.path.realpath(local)
            if os.path.commonpath([here, there]) in (here, there):
                raise ConfigurationError(
                    f"source {local} and destination {self.location} overlap (one folder inside the other)"
                )
        item = self._stat("destination")
        if item is not None and not item.get("IsDir"):
            raise ConfigurationError(f"destination {self.location} exists and is a file, not a folder")
        self._existed = item is not None

    def prepare(self, *, create: bool) -> DestinationState:
        """Whether it exists and holds anything (one entry is enough); ``create``: ``rclone mkdir``."""
        existed = self._existed if self._existed is not None else self._stat("destination") is not None
        empty = not existed or not self._holds_anything()
        if create:
            argv = [self.rclone, "mkdir", "--", self.location]
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise _error(self.remote, proc.returncode, argv, proc.stderr)
        return DestinationState(existed, empty)

    def _holds_anything(self) -> bool:
        """The first entry of a one-level ``rclone lsf`` (then rclone is stopped: no full listing)."""
        proc = subprocess.Popen(
            [self.rclone, "lsf", "--", self.location],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        try:
            return bool(proc.stdout.readline())
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()

    # ------------------------------------------------------------------ as the mover
    def moves(self, source: Endpoint, destination: Endpoint) -> bool:
        other = source if destination is self else destination
        return other.is_local or isinstance(other, RcloneEndpoint)

    def _worker_argv(self, attempt: ShardAttempt, source: Endpoint, destination: Endpoint) -> List[str]:
        def side(endpoint: Endpoint) -> str:
            local = endpoint.local_path
            if local is not None:
                return str(local)
            if isinstance(endpoint, RcloneEndpoint):
                return str(endpoint.root)
            raise ConfigurationError(f"an rclone copy takes a local folder or an rclone remote, not {endpoint}")

        exe = self.rclone
        # Values as --opt=VALUE: a folder whose name starts with "-" stays a value.
        argv = [
            sys.executable,
            "-S",  # the worker needs only the standard library: start fast
            str(WORKER_SCRIPT),
            f"--src={side(source)}",
            f"--dst={side(destination)}",
            f"--shard={attempt.records}",
            f"--status={attempt.files.status}",
            f"--failed={attempt.files.failed}",
            f"--list={attempt.files.paths}",
            f"--names={'local' if source.is_local else 'rclone'}",
            f"--verify={attempt.verify}",
            f"--threads={self.threads}",
            f"--rclone={exe}",
            f"--rclone-version={rclone_version(exe)}",
        ]
        if attempt.new:
            argv.append("--new")
        return argv

    def copy_shard(
        self, attempt: ShardAttempt, *, source: Endpoint, destination: Endpoint, backend: "Backend"
    ) -> "Launch":
        argv = self._worker_argv(attempt, source, destination)
        return backend.launch_program(attempt.name, argv, blocking=True, exclude_nodes=attempt.exclude_nodes)

    def verify_shard(self, attempt: ShardAttempt, *, source: Endpoint, destination: Endpoint) -> "ShardCounts":
        """Check a shard some program copied without reporting: the worker's own check, run here."""
        from .rclone_worker import RcloneShard, parse_args
        from .state import ShardCounts
        from .worker import _Lazy

        opts = parse_args(self._worker_argv(attempt, source, destination)[3:])
        assert isinstance(opts, dict), opts
        files = attempt.files
        with open(files.failed, "wb") as failed, open(files.messages, "w") as messages, _Lazy(
            str(files.permanent)
        ) as permanent:
            shard = RcloneShard(opts, failed, messages, permanent)
            shard.write_list()
            if shard.names:
                shard.check(0, counted=False)
        return ShardCounts.from_json(shard.counts)
