"""The text the ``ws_*`` tools print, read and written in one place.

:func:`parse_ws_list` reads ``ws_list`` output of hpc-workspace versions 1 and 2 (normal,
``-t``, ``-v``, ``-s``); :func:`parse_filesystems` reads ``ws_list -l``.  The local
workspace implementation writes version 1 with :func:`format_ws_list_entry`, so one parser
serves both backends.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = [
    "WorkspaceInfo",
    "WorkspaceList",
    "NAME_RE",
    "current_user",
    "parse_ws_list",
    "parse_filesystems",
    "parse_allocatable",
    "parse_remaining",
    "parse_ctime",
    "format_ctime",
    "format_remaining",
    "format_ws_list_entry",
]

#: hpc-workspace's rule for workspace names: ``^[[:alnum:]][[:alnum:]_.-]*$`` (a whole-string
#: match there; ``\Z``, not ``$``, which would also accept a trailing newline).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")

#: ``id: NAME`` (version 1) or ``Id: NAME`` (version 2), at the start of the line.  The name
#: may be empty: version 2 from 2025-08 to 2026-03 printed ``Id: `` for another owner's
#: workspace in ``ws_list -g``.
_ID_LINE = re.compile(r"^\s*id:\s*(?P<id>.*?)\s*$", re.I)
_FIELD_LINE = re.compile(r"^\s+(?P<key>[A-Za-z][A-Za-z ]*?)\s*:\s?(?P<value>.*?)\s*$")
#: A field exactly as the tools print it: 4 (version 2) or 5 (version 1) spaces, the key
#: padded to 21 characters, then ``:``.  Used to find where a multi-line comment ends.
_TOOL_FIELD = re.compile(r"^ {4,5}(?P<key>[a-z][a-z ]{20}):")
_REMAINING = re.compile(r"(?:(?P<d>-?\d+)\s*days?)?[,\s]*(?:(?P<h>-?\d+)\s*hours?)?", re.I)
#: Keys that can follow ``comment`` in an entry (versions 1 and 2, ``-v``/``-p`` included).
_AFTER_COMMENT = frozenset(
    {
        "creation time",
        "expiration date",
        "expiration time",
        "expired time",
        "release time",
        "group",
        "filesystem name",
        "available extensions",
        "acctcode",
        "reminder",
        "mailaddress",
        "permissions",
    }
)
# ctime() names, in English whatever the caller's locale (the tools print C-locale dates).
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_CTIME = re.compile(
    r"(?P<wd>[A-Za-z]{3})\s+(?P<mon>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+"
    r"(?P<H>\d{1,2}):(?P<M>\d{2}):(?P<S>\d{2})\s+(?P<Y>\d{4})"
)


def current_user() -> str:
    """The name the ``ws_*`` tools use for the caller: the real uid's passwd entry."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        try:
            return getpass.getuser()
        except Exception:  # no passwd entry and no $USER: what the tools would fail on too
            return str(os.getuid())


@dataclass(frozen=True)
class WorkspaceInfo:
    """One workspace as ``ws_list`` describes it.

    Attributes
    ----------
    id : str
        The workspace name: what ``ws_allocate`` was given and ``ws_release`` takes.  It is
        read from the directory's last component, ``<user>-<name>``, not from the ``id:``
        line, whose text differs between versions (see :attr:`listed_id`).  For another
        user's workspace (``ws_list -g``, or an admin's listing) :attr:`owner` is None and
        ``id`` is the whole directory name ``<owner>-<name>``: owner and name cannot be told
        apart when either contains ``-``.
    path : Path
        Its directory.
    filesystem : str or None
        The space (``ws_list -l`` names) it lives on; None when not listed or ambiguous
        (version 1 prints one line per matching space prefix; ``extra["filesystem
        candidates"]`` then holds them all).
    created, expires : datetime or None
        Local times, as the tools print them.
    remaining : timedelta or None
        Time left when listed (zero once expired or released).
    extensions_left : int or None
        How many more times ``ws_extend`` may be used.
    comment, group : str or None
        Set with ``ws_allocate -c`` / ``-G``.  A comment may span several lines.
    expired : bool
        The expiration date has passed.
    released : bool
        Listed by ``ws_list -e`` as released (``remaining time : released``).
    owner : str or None
        The user whose workspace this is, when it is the caller's (else None).
    listed_id : str
        The ``id:`` text as printed: the name (version 1), the text after the *first* ``-``
        of ``<user>-<name>`` (version 1), the text after the *last* ``-`` (version 2 since
        2026-07), or ``<user>-<name>`` (admins and root).
    extra : dict
        Other fields (``acctcode``, ``reminder``, ``mailaddress`` with ``-v``; ``until
        deletion``, ``expired time``, ``release time`` with ``-e``).
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
    released: bool = False
    owner: Optional[str] = field(default=None, compare=False)
    listed_id: Optional[str] = field(default=None, compare=False)
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
            "released": self.released,
            "owner": self.owner,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    def __repr__(self) -> str:
        if self.released or self.expired:
            left = "released" if self.released else "expired"
        elif self.remaining is not None:
            left = f"{format_remaining(self.remaining)} left"
        else:
            left = "remaining time unknown"
        expires = f", expires {self.expires:%Y-%m-%d %H:%M}" if self.expires else ""
        extensions = f", {self.extensions_left} extensions left" if self.extensions_left is not None else ""
        return f"<WorkspaceInfo {self.id!r} at {str(self.path)!r}: {left}{expires}{extensions}>"

    def _repr_html_(self) -> str:
        """Jupyter's display: every field the workspace has."""
        from ..display import workspace_html

        return workspace_html(self)


class WorkspaceList(List[WorkspaceInfo]):
    """A list of workspaces (what :meth:`Workspace.list` returns) that Jupyter shows as
    one table: id, path, filesystem, expires, remaining time, extensions, comment.

    A plain ``list`` in every other way (it compares equal to one with the same items).
    """

    def _repr_html_(self) -> str:
        from ..display import workspaces_html

        return workspaces_html(self)


def parse_ctime(text: str) -> Optional[_dt.datetime]:
    """Parse C's ``ctime`` format (``Wed Aug 10 13:16:25 2022``, day may be space-padded).

    The names are matched in English whatever the calling process's locale: the tools print
    C-locale dates, and ``strptime("%a %b")`` would follow ``LC_TIME``.
    """
    m = _CTIME.fullmatch(text.strip())
    if not m or m.group("wd").title() not in _WEEKDAYS or m.group("mon").title() not in _MONTHS:
        return None
    try:
        return _dt.datetime(
            int(m.group("Y")),
            _MONTHS.index(m.group("mon").title()) + 1,
            int(m.group("day")),
            int(m.group("H")),
            int(m.group("M")),
            int(m.group("S")),
        )
    except ValueError:
        return None


def format_ctime(when: _dt.datetime) -> str:
    """Write a time as C's ``ctime`` does (without the newline), in any locale."""
    return f"{_WEEKDAYS[when.weekday()]} {_MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S} {when.year}"


def parse_remaining(text: str) -> Tuple[Optional[_dt.timedelta], bool]:
    """``29 days 23 hours`` / ``29 days, 23 hours`` / ``expired`` -> (timedelta, expired).

    Current version 2 prints an expired workspace's time as negative numbers
    (``-2 days, -5 hours``): that is expired too, with zero remaining.  Less than an hour
    either side of the expiration reads ``0 days, 0 hours``: only the expiration date can
    tell those apart (:func:`parse_ws_list` uses it).
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


def parse_ws_list(
    text: str, *, user: Optional[str] = None, now: Optional[_dt.datetime] = None
) -> List[WorkspaceInfo]:
    """All workspaces in ``ws_list`` output (versions 1 and 2, any of ``-t``/``-v``/``-s``/``-e``/``-g``).

    Parameters
    ----------
    text : str
        What ``ws_list`` printed.
    user : str, optional
        Whose workspaces to recognise (default: the caller, as the tools see it).  A
        workspace is identified by its directory, ``<user>-<name>``; see
        :attr:`WorkspaceInfo.id`.
    now : datetime, optional
        When the listing was made (default: now); decides ``expired`` when the remaining
        time reads ``0 days, 0 hours``.

    With ``-s`` (names only) each entry has just ``id`` and an empty ``path``; version 2
    prints only the text after the last ``-`` there, so ``-s`` cannot identify workspaces
    whose names contain ``-``.  Unknown lines are ignored, so informational headers do no
    harm.  A comment may span lines: everything up to the next field the tools print after
    a comment belongs to it, even lines that look like ``id: ...``.
    """
    who = current_user() if user is None else user
    blocks: List[Tuple[str, Dict[str, List[str]]]] = []
    names_only: List[str] = []
    in_comment = False
    for line in text.splitlines():
        if in_comment:
            m = _TOOL_FIELD.match(line)
            if m and m.group("key").strip() in _AFTER_COMMENT:
                in_comment = False
            else:
                blocks[-1][1]["comment"][-1] += "\n" + line
                continue
        if not line.strip():
            continue
        m = _ID_LINE.match(line)
        if m:
            blocks.append((m.group("id") or "", {}))
            continue
        f = _FIELD_LINE.match(line)
        if f and blocks:
            key = f.group("key").strip().lower()
            blocks[-1][1].setdefault(key, []).append(f.group("value"))
            in_comment = key == "comment"
            continue
        if not blocks and NAME_RE.match(line.strip()) and ":" not in line:
            names_only.append(line.strip())
    if not blocks:
        return [WorkspaceInfo(id=name, path=Path(), listed_id=name) for name in names_only]
    when = now if now is not None else _dt.datetime.now()
    if when.tzinfo is not None:  # the tools print naive local times
        when = when.astimezone().replace(tzinfo=None)
    entries = (_entry(ws_id, fields, who, when) for ws_id, fields in blocks)
    return [e for e in entries if e.id]


def _entry(ws_id: str, fields: Dict[str, List[str]], user: str, now: _dt.datetime) -> WorkspaceInfo:
    known: Dict[str, str] = {}
    extra: Dict[str, str] = {}
    for key, values in fields.items():
        target = _KEYS.get(key)
        distinct = list(dict.fromkeys(v.strip() if target != "comment" else v.rstrip() for v in values))
        if target == "filesystem" and len(distinct) > 1:
            # Version 1 prints one line per space whose prefix the path starts with: which one
            # holds it cannot be told from the text, so name none rather than a wrong one.
            extra["filesystem candidates"] = ", ".join(distinct)
            continue
        if target is None:
            extra[key] = distinct[-1]
        else:
            known[target] = distinct[-1]
    raw_remaining = known.get("remaining", "").strip()
    released = raw_remaining.lower() == "released"
    remaining, expired = parse_remaining(raw_remaining)
    expires = parse_ctime(known["expires"]) if "expires" in known else None
    if released:
        remaining = _dt.timedelta(0)
    elif expires is not None and not expired and (remaining is None or remaining == _dt.timedelta(0)):
        # "0 days, 0 hours" is also what version 2 prints just after the expiration.
        expired = expires <= now
        if expired:
            remaining = _dt.timedelta(0)
    path = Path(known.get("path", "").strip())
    dirname = path.name
    if user and dirname.startswith(user + "-") and len(dirname) > len(user) + 1:
        name, owner = dirname[len(user) + 1 :], user
    else:
        name, owner = dirname or ws_id, None
    ext = known.get("extensions_left", "").strip()
    return WorkspaceInfo(
        id=name,
        path=path,
        filesystem=known.get("filesystem") or None,
        created=parse_ctime(known["created"]) if "created" in known else None,
        expires=expires,
        remaining=remaining,
        extensions_left=int(ext) if ext.lstrip("-").isdigit() else None,
        comment=known.get("comment", "").strip("\n") or None,
        group=known.get("group") or None,
        expired=expired,
        released=released,
        owner=owner,
        listed_id=ws_id,
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


def parse_allocatable(text: str) -> Optional[List[str]]:
    """Version 2 ``ws_list -L`` -> the filesystems you may allocate on, by priority.

    None when the text has no table with an ``allocatable`` column (version 1, or a
    format this does not know).
    """
    column = None
    found: List[str] = []
    for line in text.splitlines():
        cells = line.split()
        if column is None:
            if "name" in cells and "allocatable" in cells:
                column = cells.index("allocatable") - cells.index("name")
            continue
        if len(cells) > column and cells[column].lower() in ("true", "false", "1", "0", "yes", "no"):
            if cells[column].lower() in ("true", "1", "yes"):
                found.append(cells[0])
    return found if column is not None else None


def format_ws_list_entry(info: WorkspaceInfo, *, terse: bool = False, verbose: bool = False) -> str:
    """One workspace in version 1 ``ws_list`` format (``terse`` = ``-t``, ``verbose`` = ``-v``).

    The ``id:`` line shows :attr:`WorkspaceInfo.listed_id` when set, else the name.
    """
    shown = info.listed_id if info.listed_id is not None else info.id
    lines = [f"id: {shown}", f"     workspace directory  : {info.path}"]
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
