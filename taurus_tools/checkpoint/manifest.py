"""What a checkpoint pass saved: :class:`Manifest`, its JSON, and where things lie at the destination.

Layout of a destination (an ``s3://`` prefix or a folder)::

    data/000001/<path>      the content of <path> as pass 1 sent it
    data/000004/<path>      ... and as pass 4 sent it, after it changed
    manifests/000004.json   pass 4: every path saved so far, and in which data/ folder it lies

A pass sends only new or changed files, each into its own ``data/NNNNNN/`` folder, so
nothing a finished pass refers to is ever overwritten; its manifest is written last.  A
manifest present is therefore a complete pass, and restoring the newest one never mixes
passes.  A pass that failed half way (its manifest missing) left objects that no manifest
names; the next attempt under the same number overwrites them.

The manifest (UTF-8 JSON, one file per line for ``grep``)::

    {"format": 1, "pass": 4, "time": "2026-12-03T14:05:07Z", "time_ns": ...,
     "files": [
      {"path": "run/a.bin", "size": 123, "mtime_ns": ..., "md5": "9e10...", "pass": 1},
      ...],
     "not_saved": {"run/x.bin": "why"}}

``path`` is relative to the checkpointed folder with ``/`` separators; a name that is no
valid UTF-8 is kept as Python's ``surrogateescape`` string (JSON ``\\udcXX``), so it
round-trips to the same bytes.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional

from ..errors import ConfigurationError

__all__ = ["Entry", "Manifest", "FORMAT", "data_name", "manifest_name", "manifest_number"]

FORMAT = 1
DATA = "data/"
MANIFESTS = "manifests/"
_MANIFEST = re.compile(r"^(\d{6,})\.json$")


def data_name(number: int, path: str) -> str:
    """Where the content of ``path`` sent by pass ``number`` lies, relative to the destination."""
    return f"{DATA}{number:06d}/{path}"


def manifest_name(number: int) -> str:
    """The manifest of pass ``number``, relative to the destination."""
    return f"{MANIFESTS}{number:06d}.json"


def manifest_number(name: str) -> Optional[int]:
    """The pass number of a name in ``manifests/`` (``000004.json``), None for anything else."""
    match = _MANIFEST.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Entry:
    """One saved file: its size and modification time when sent, its MD5, the pass that sent it."""

    size: int
    mtime_ns: int
    md5: str
    stored: int

    def same_file(self, size: int, mtime_ns: int) -> bool:
        return self.size == size and self.mtime_ns == mtime_ns


@dataclass
class Manifest:
    """One complete pass: every path saved up to it (see the module's docstring)."""

    number: int
    time_ns: int
    files: Dict[str, Entry] = field(default_factory=dict)
    not_saved: Dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        when = datetime.datetime.fromtimestamp(self.time_ns / 1e9, datetime.timezone.utc)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        head = json.dumps({"format": FORMAT, "pass": self.number, "time": stamp, "time_ns": self.time_ns})
        lines = [
            json.dumps({"path": path, "size": e.size, "mtime_ns": e.mtime_ns, "md5": e.md5, "pass": e.stored})
            for path, e in sorted(self.files.items())
        ]
        body = head[:-1] + ', "files": [\n' + ",\n".join(lines) + "\n], "
        body += '"not_saved": ' + json.dumps(self.not_saved, sort_keys=True) + "}\n"
        return body.encode("utf-8")  # json.dumps escapes every non-ASCII character and surrogate

    @classmethod
    def from_json(cls, data: bytes, where: str = "the manifest") -> "Manifest":
        try:
            raw: Dict[str, Any] = json.loads(data.decode("utf-8"))
            if raw.get("format") != FORMAT:
                raise ConfigurationError(
                    f"{where}: manifest format {raw.get('format')!r}; this taurus-tools reads format {FORMAT}"
                )
            files = {
                str(item["path"]): Entry(int(item["size"]), int(item["mtime_ns"]), str(item["md5"]), int(item["pass"]))
                for item in raw["files"]
            }
            return cls(int(raw["pass"]), int(raw["time_ns"]), files, dict(raw.get("not_saved") or {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{where} is no checkpoint manifest: {exc}") from None

    def stored_numbers(self) -> Iterable[int]:
        """The passes whose ``data/`` folders this manifest refers to."""
        return sorted({e.stored for e in self.files.values()})
