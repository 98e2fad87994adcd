"""The text the ``ws_*`` tools print, read and written in one place.

:func:`parse_ws_list` reads ``ws_list`` output of hpc-workspace versions 1 and 2 (normal,
``-t``, ``-v``, ``-s``); :func:`parse_filesystems` reads ``ws_list -l``.  The local
workspace implementation writes version 1 with :func:`format_ws_list_entry`, so one parser
serves both backends.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = [
    "WorkspaceInfo",
    "NAME_RE",
    "parse_ws_list",
    "parse_filesystems",
    "parse_remaining",
    "parse_ctime",
    "format_ctime",
    "format_remaining",
    "format_ws_list_entry",
]

#: hpc-workspace's rule for workspace names: ``^[[:alnum:]][[:alnum:]_.-]*$`` (a whole-string
#: match there; ``\Z``, not ``$``, which would also accept a trailing newline).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")

_ID_LINE = re.compile(r"^\s*id:\s*(?P<id>\S.*?)\s*$", re.I)
_FIELD_LINE = re.compile(r"^\s+(?P<key>[A-Za-z][A-Za-z ]*?)\s*:\s?(?P<value>.*?)\s*$")
_REMAINING = re.compile(r"(?:(?P<d>-?\d+)\s*days?)?[,\s]*(?:(?P<h>-?\d+)\s*hours?)?", re.I)


@dataclass(frozen=True)
class WorkspaceInfo:
    """One workspace as ``ws_list`` describes it.

    Attributes
    ----------
    id : str
        The workspace name chosen at allocation.
    path : Path
        Its directory.
    filesystem : str or None
        The space (``ws_list -l`` names) it lives on.
    created, expires : datetime or None
        Local times, as the tools print them.
    remaining : timedelta or None
        Time left when listed (zero once expired).
    extensions_left : int or None
        How many more times ``ws_extend`` may be used.
    comment, group : str or None
        Set with ``ws_allocate -c`` / ``-G``.
    expired : bool
        The expiration date has passed.
    extra : dict
        Other fields (``acctcode``, ``reminder``, ``mailaddress`` with ``-v``).
    """

    id: str
    path: Path
    filesystem: Optional[str] = None
    created: Optional[_dt.datetime] = None
    expires: Optional[_dt.datetime] = None
    remaining: Optional[_dt.timedelta] = None
    extensions_left: Optional[int] = None
    comment: Optional[str] = None
    group: Optional[str] = None
    expired: bool = False
    extra: Dict[str, str] = field(default_factory=dict, compare=False)

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready form (ISO dates, seconds for ``remaining``)."""
        return {
            "id": self.id,
            "path": str(self.path),
            "filesystem": self.filesystem,
            "created": self.created.isoformat() if self.created else None,
            "expires": self.expires.isoformat() if self.expires else None,
            "remaining_seconds": int(self.remaining.total_seconds()) if self.remaining is not None else None,
            "extensions_left": self.extensions_left,
            "comment": self.comment,
            "group": self.group,
            "expired": self.expired,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }


def parse_ctime(text: str) -> Optional[_dt.datetime]:
    """Parse C's ``ctime`` format (``Wed Aug 10 13:16:25 2022``, day may be space-padded)."""
    try:
        return _dt.datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None


def format_ctime(when: _dt.datetime) -> str:
    """Write a time as C's ``ctime`` does (without the newline)."""
    return when.strftime("%a %b ") + f"{when.day:2d}" + when.strftime(" %H:%M:%S %Y")


def parse_remaining(text: str) -> Tuple[Optional[_dt.timedelta], bool]:
    """``29 days 23 hours`` / ``29 days, 23 hours`` / ``expired`` -> (timedelta, expired).

    Current version 2 prints an expired workspace's time as negative numbers
    (``-2 days, -5 hours``): that is expired too, with zero remaining.
    """
    value = text.strip()
    if not value:
        return None, False
    if value.lower().startswith("expired"):
        return _dt.timedelta(0), True
    m = _REMAINING.fullmatch(value)
    if not m or not (m.group("d") or m.group("h")):
        return None, False
    days = int(m.group("d") or 0)
    hours = int(m.group("h") or 0)
    if days < 0 or hours < 0:
        return _dt.timedelta(0), True
    return _dt.timedelta(days=days, hours=hours), False


def format_remaining(remaining: _dt.timedelta) -> str:
    """Version 1's ``remaining time`` value: ``29 days 23 hours`` or ``expired``."""
    seconds = int(remaining.total_seconds())
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86400)
    return f"{days} days {rest // 3600} hours"


_KEYS = {
    "workspace directory": "path",
    "remaining time": "remaining",
    "comment": "comment",
    "creation time": "created",
    "expiration date": "expires",
    "expiration time": "expires",
    "filesystem name": "filesystem",
    "filesystem": "filesystem",
    "available extensions": "extensions_left",
    "group": "group",
}


def parse_ws_list(text: str) -> List[WorkspaceInfo]:
    """All workspaces in ``ws_list`` output (versions 1 and 2, any of ``-t``/``-v``/``-s``).

    With ``-s`` (names only) each entry has just ``id`` and an empty ``path``.
    Unknown lines are ignored, so informational headers do no harm.
    """
    blocks: List[Tuple[str, Dict[str, str]]] = []
    names_only: List[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _ID_LINE.match(line)
        if m:
            blocks.append((m.group("id"), {}))
            continue
        f = _FIELD_LINE.match(line)
        if f and blocks:
            blocks[-1][1][f.group("key").strip().lower()] = f.group("value")
            continue
        if not blocks and NAME_RE.match(line.strip()) and ":" not in line:
            names_only.append(line.strip())
    if not blocks:
        return [WorkspaceInfo(id=name, path=Path()) for name in names_only]
    return [_entry(ws_id, fields) for ws_id, fields in blocks]


def _entry(ws_id: str, fields: Dict[str, str]) -> WorkspaceInfo:
    known: Dict[str, str] = {}
    extra: Dict[str, str] = {}
    for key, value in fields.items():
        target = _KEYS.get(key)
        if target is None:
            extra[key] = value
        else:
            known[target] = value
    remaining, expired = parse_remaining(known.get("remaining", ""))
    expires = parse_ctime(known["expires"]) if "expires" in known else None
    if expires is not None and not expired and remaining is None:
        expired = expires <= _dt.datetime.now()
    ext = known.get("extensions_left", "").strip()
    return WorkspaceInfo(
        id=ws_id,
        path=Path(known.get("path", "").strip()),
        filesystem=known.get("filesystem") or None,
        created=parse_ctime(known["created"]) if "created" in known else None,
        expires=expires,
        remaining=remaining,
        extensions_left=int(ext) if ext.lstrip("-").isdigit() else None,
        comment=known.get("comment") or None,
        group=known.get("group") or None,
        expired=expired,
        extra=extra,
    )


def parse_filesystems(text: str) -> Tuple[List[str], Optional[str]]:
    """``ws_list -l`` output -> (names, default name or None).

    Version 1 marks the default ``NAME (default)``; version 2 prints no marker but a
    header ``available filesystems (sorted according to priority):`` with the default first.
    """
    names: List[str] = []
    default = None
    by_priority = False
    for line in text.splitlines():
        value = line.strip()
        if not value:
            continue
        if value.lower().startswith("available filesystems"):
            by_priority = by_priority or "priority" in value.lower()
            continue
        name, marked = re.subn(r"\s*\(default\)\s*$", "", value)
        names.append(name)
        if marked:
            default = name
    if default is None and by_priority and names:
        default = names[0]
    return names, default


def format_ws_list_entry(info: WorkspaceInfo, *, terse: bool = False, verbose: bool = False) -> str:
    """One workspace in version 1 ``ws_list`` format (``terse`` = ``-t``, ``verbose`` = ``-v``)."""
    lines = [f"id: {info.id}", f"     workspace directory  : {info.path}"]
    remaining = info.remaining if info.remaining is not None else _dt.timedelta(0)
    lines.append(f"     remaining time       : {format_remaining(remaining)}")
    if not terse:
        if info.comment:
            lines.append(f"     comment              : {info.comment}")
        if info.created is not None:
            lines.append(f"     creation time        : {format_ctime(info.created)}")
        if info.expires is not None:
            lines.append(f"     expiration date      : {format_ctime(info.expires)}")
        if info.group:
            lines.append(f"     group                : {info.group}")
        if info.filesystem:
            lines.append(f"     filesystem name      : {info.filesystem}")
    lines.append(f"     available extensions : {info.extensions_left or 0}")
    if verbose:
        for key in ("acctcode", "reminder", "mailaddress"):
            if key in info.extra:
                lines.append(f"     {key:<21}: {info.extra[key]}")
    return "\n".join(lines) + "\n"
