"""rclone remotes as copy locations: ``remote:path`` parsed, and listed into records by rclone.

The first part of rclone endpoints (issue 15): :class:`RemoteLocation` parses and checks
``remote:path`` (a remote of rclone's config or of ``RCLONE_CONFIG_<NAME>_...`` variables)
and ``:backend:path`` (a backend with its options from the environment);
:func:`list_remote` lists a location with one ``rclone lsjson -R --files-only`` and streams
its output into the copy engine's records.  Paths are kept in rclone's own encoding (rclone
shows a local file name with a newline as ``new␊line``, and takes it back in that form), so
a shard list made from this listing names what rclone will find.

Credentials stay in rclone's config file or the environment: nothing here puts them in argv,
and error messages quote rclone's stderr, which does not print them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, List, Mapping, Optional

from ..errors import CommandError, CommandNotFoundError, ConfigurationError, SourceNotFoundError
from .plan import ListingStats, path_problem

__all__ = ["RemoteLocation", "list_remote", "parse_mod_time", "rclone_executable"]

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
) -> ListingStats:
    """List ``location`` recursively (files only) with one rclone call; write one record per file.

    Records have the engine's format (``f\\tSIZE\\tMTIME_NS\\tPATH\\0``, PATH relative to the
    location in rclone's encoding).  rclone's JSON is read line by line as it arrives: nothing
    but the counters stays in memory.  A path that cannot be a relative file name is left out
    with a message.  Raises :class:`SourceNotFoundError` when the location does not exist,
    :class:`ConfigurationError` for a remote rclone does not know, :class:`CommandError` for
    any other failure of rclone.
    """
    exe = rclone or rclone_executable()
    if exe is None:
        raise CommandNotFoundError("rclone", (), "not installed; pip install 'taurus-tools[rclone]'")
    argv = [exe, "lsjson", "-R", "--files-only", "--no-mimetype", "--", str(location)]
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
        if "didn't find section in config file" in stderr or "not found in config" in stderr.lower():
            raise ConfigurationError(
                f"rclone remote {location.remote!r} is not configured (rclone config, or RCLONE_CONFIG_"
                f"{location.remote.upper()}_TYPE=... in the environment)"
            )
        if rc == EXIT_DIR_NOT_FOUND or "directory not found" in stderr:
            raise SourceNotFoundError(f"{location} does not exist (rclone: directory not found)")
        raise CommandError(rc, argv, None, stderr)
    return stats
