"""A real, local implementation of the hpc-workspace tools, for machines that have none.

Run as ``python -m taurus_tools.workspace.local_tools TOOL [ARGS...]`` with TOOL one of ``ws_allocate``,
``ws_list``, ``ws_release``, ``ws_extend``, ``ws_find``, ``ws_restore``, ``ws_register``.
It keeps the rules of hpc-workspace 1.6 and prints what that version prints, with its exit
codes (and its quirks: ``ws_list`` shows a user ``jean-luc`` the id ``luc-data``, ``ws_find``
prints one line per filesystem holding the name):

* workspaces live in ``ROOT/<filesystem>/<user>-<name>``, with one JSON database entry
  each in ``ROOT/.ws-db/<filesystem>/`` (creation, expiration, extensions left, comment,
  group, reminder, mail address);
* allocating an existing name reuses it (same path, duration not reset); asking for more
  days than allowed caps the duration and still succeeds;
* extending *sets* a new duration from now and uses up one extension;
* releasing moves data and entry aside to ``.removed/<user>-<name>-<epoch>`` (restorable);
  ``--delete-data`` (a version 2 option) deletes the data instead;
* expired workspaces are listed as ``expired``.

``ROOT`` is ``$TAURUS_TOOLS_WS_ROOT`` (default: a per-user folder in the temporary
directory).  ``ROOT/ws.json`` configures the filesystems::

    {"default": "scratch",
     "filesystems": {"scratch": {"duration": 30, "maxextensions": 10},
                     "ssd": {"duration": 7, "maxextensions": 2}}}

``$TAURUS_TOOLS_WS_NOW`` (seconds since the epoch) sets the clock, for tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import getpass
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, NoReturn, Optional, Sequence

from .format import NAME_RE, WorkspaceInfo, current_user, format_ctime, format_ws_list_entry

ROOT_ENV = "TAURUS_TOOLS_WS_ROOT"
NOW_ENV = "TAURUS_TOOLS_WS_NOW"
DB_DIR = ".ws-db"
DELETED = ".removed"
DAY = 86400
DEFAULT_CONFIG: Dict[str, Any] = {
    "default": "scratch",
    "filesystems": {"scratch": {"duration": 30, "maxextensions": 10, "durationdefault": 1}},
}
#: hpc-workspace's exit code for "-1" (config, missing workspace, no extensions left).
EXIT_FATAL = 255

ILLEGAL_NAME = "Error: Illegal workspace name, use characters and numbers, -,. and _ only!"
BAD_FILESYSTEM = "Error: please specify an existing filesystem with -F!"


def default_root() -> Path:
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"taurus-tools-workspaces-{getpass.getuser()}"


class Exit(Exception):
    """Leave the tool with a message on stderr and an exit code."""

    def __init__(self, code: int, *lines: str) -> None:
        super().__init__(code)
        self.code = code
        self.lines = lines


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # hpc-workspace exits 1 on bad usage
        raise Exit(1, f"Error: {message}", self.format_usage().rstrip())


@dataclass
class Space:
    name: str
    duration: int
    maxextensions: int
    durationdefault: int


class Store:
    """The workspaces of one user under one root."""

    def __init__(self, root: Path, user: Optional[str] = None) -> None:
        self.root = root
        self.user = user or current_user()
        config_file = root / "ws.json"
        config = DEFAULT_CONFIG
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text())
            except (OSError, ValueError) as exc:
                raise Exit(EXIT_FATAL, f"Error: Could not read config file! ({exc})") from exc
        spaces = config.get("filesystems") or {}
        if not spaces:
            raise Exit(EXIT_FATAL, "Error: Could not read config file! (no filesystems)")
        self.spaces = {
            name: Space(
                name,
                int(opts.get("duration", 30)),
                int(opts.get("maxextensions", 10)),
                int(opts.get("durationdefault", 1)),
            )
            for name, opts in spaces.items()
        }
        self.default = config.get("default") or next(iter(self.spaces))
        self.now = float(os.environ.get(NOW_ENV) or time.time())

    # -- paths
    def space(self, name: Optional[str]) -> Space:
        chosen = name or self.default
        if chosen not in self.spaces:
            raise Exit(1, BAD_FILESYSTEM)
        return self.spaces[chosen]

    def ws_dir(self, space: Space, name: str) -> Path:
        return self.root / space.name / f"{self.user}-{name}"

    def db_file(self, space: Space, name: str) -> Path:
        return self.root / DB_DIR / space.name / f"{self.user}-{name}.json"

    def deleted_dirs(self, space: Space) -> "tuple[Path, Path]":
        return self.root / space.name / DELETED, self.root / DB_DIR / space.name / DELETED

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- entries
    def read(self, space: Space, name: str) -> Optional[Dict[str, Any]]:
        try:
            return json.loads(self.db_file(space, name).read_text())
        except FileNotFoundError:
            return None

    def write(self, space: Space, name: str, entry: Dict[str, Any]) -> None:
        path = self.db_file(space, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(entry, indent=1))
        os.replace(tmp, path)

    def entries(self, space: Space) -> List[Dict[str, Any]]:
        folder = self.root / DB_DIR / space.name
        prefix = f"{self.user}-"
        found = []
        for path in sorted(folder.glob(f"{prefix}*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                print(f"ws-db file is empty: {path}", file=sys.stderr)
        return found

    def info(self, space: Space, entry: Dict[str, Any]) -> WorkspaceInfo:
        expiration = float(entry["expiration"])
        remaining = _dt.timedelta(seconds=max(0.0, expiration - self.now))
        extra = {"acctcode": str(entry.get("acctcode", ""))}
        if entry.get("reminder"):
            extra["reminder"] = format_ctime(_local(expiration - int(entry["reminder"]) * DAY))
        if entry.get("mailaddress"):
            extra["mailaddress"] = str(entry["mailaddress"])
        return WorkspaceInfo(
            id=entry["id"],
            listed_id=self.listed_id(entry["id"]),
            path=Path(entry["workspace"]),
            filesystem=space.name,
            created=_local(float(entry["creation"])),
            expires=_local(expiration),
            remaining=remaining,
            extensions_left=int(entry["extensions"]),
            comment=entry.get("comment") or None,
            group=entry.get("group") or None,
            expired=self.now > expiration,
            extra=extra,
        )

    def listed_id(self, name: str) -> str:
        """What version 1.6 prints as ``id:`` for a non-admin: the database entry's name,
        ``<user>-<name>``, after its *first* ``-`` (so a user ``jean-luc`` sees ``luc-data``)."""
        db_name = f"{self.user}-{name}"
        return db_name[db_name.find("-") + 1 :]

    def remaining_days(self, entry: Dict[str, Any]) -> int:
        return int((float(entry["expiration"]) - self.now) // DAY)


def _local(epoch: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(epoch).replace(microsecond=0)


def _err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise Exit(1, ILLEGAL_NAME)


def _days(text: Optional[str], default: int) -> int:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise Exit(1, f"Error: the argument ('{text}') for option '--duration' is invalid") from exc


def _cap(store: Store, space: Space, days: int) -> int:
    if days > space.duration or days < 0:
        _err(
            "Error: Duration longer than allowed for this workspace",
            f"       setting to allowed maximum of {space.duration}",
        )
        return space.duration
    return days


# ---------------------------------------------------------------------------- tools
def ws_allocate(argv: Sequence[str], store: Store) -> int:
    p = _Parser(prog="ws_allocate", add_help=False)
    p.add_argument("-F", "--filesystem")
    p.add_argument("-r", "--reminder", type=int)
    p.add_argument("-m", "--mailaddress")
    p.add_argument("-x", "--extension", action="store_true")
    p.add_argument("-c", "--comment")
    p.add_argument("-g", "--group", action="store_true")
    p.add_argument("-G", "--groupname")
    p.add_argument("-u", "--username")
    p.add_argument("-d", "--duration")
    p.add_argument("-n", "--name")
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("positional", nargs="*")
    a = p.parse_args(argv)
    pos = list(a.positional)
    name = a.name or (pos.pop(0) if pos else None)
    duration = a.duration or (pos.pop(0) if pos else None)
    if a.help or not name or pos:
        print("ws_allocate: [options] workspace_name duration")
        print(p.format_help())
        return 1
    _check_name(name)
    space = store.space(a.filesystem)
    if a.mailaddress and a.reminder is None and not a.extension:
        raise Exit(1, "Error: You can't use the mailaddress (-m) without the reminder (-r) option.")
    if a.username and not a.extension:
        _err("Info: Ignoring username option.")
    if not a.filesystem:
        # Version 1 looks for the name on the default filesystem first, then on the others in
        # configuration order, and reuses (or extends) the first it finds.
        others = [s for s in store.spaces.values() if s is not space]
        space = next((s for s in [space, *others] if store.read(s, name) is not None), space)
    days = _cap(store, space, _days(duration, space.durationdefault))
    with store.locked():
        entry = store.read(space, name)
        if a.extension:
            return _extend(store, space, name, entry, days, a)
        if entry is not None:
            _err("Info: reusing workspace.")
        else:
            _err("Info: creating workspace.")
            path = store.ws_dir(space, name)
            try:
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o770 if a.groupname else 0o750 if a.group else 0o700)
            except OSError as exc:
                raise Exit(EXIT_FATAL, "Error: could not create workspace directory!") from exc
            entry = {
                "id": name,
                "workspace": str(path),
                "creation": store.now,
                "expiration": store.now + days * DAY,
                "extensions": space.maxextensions,
                "acctcode": _group_name(),
                "reminder": a.reminder or 0,
                "mailaddress": a.mailaddress or "",
                "comment": a.comment or "",
                "group": a.groupname or "",
            }
            store.write(space, name, entry)
    print(entry["workspace"])
    _err(f"remaining extensions  : {entry['extensions']}", f"remaining time in days: {store.remaining_days(entry)}")
    return 0


def _extend(store: Store, space: Space, name: str, entry: Optional[Dict[str, Any]], days: int, a: Any) -> int:
    if entry is None:
        raise Exit(EXIT_FATAL, "Error: workspace does not exist, can not be extended!")
    _err("Info: extending workspace.")
    if a.mailaddress:
        entry["mailaddress"] = a.mailaddress
        _err(f"Info: changed mail address to {a.mailaddress}")
    if a.reminder is not None:
        entry["reminder"] = a.reminder
        _err("Info: changed reminder setting.")
    if a.comment is not None:
        entry["comment"] = a.comment
        _err("Info: changed comment.")
    if days > 0:
        new_expiration = store.now + days * DAY
        if new_expiration > float(entry["expiration"]):
            if int(entry["extensions"]) <= 0:
                raise Exit(EXIT_FATAL, "Error: no more extensions.")
            entry["extensions"] = int(entry["extensions"]) - 1
        entry["expiration"] = new_expiration
    store.write(space, name, entry)
    print(entry["workspace"])
    _err(f"remaining extensions  : {entry['extensions']}", f"remaining time in days: {store.remaining_days(entry)}")
    return 0


def ws_extend(argv: Sequence[str], store: Store) -> int:
    args = list(argv)
    fs: List[str] = []
    if len(args) >= 2 and args[0] in ("-F", "--filesystem"):
        fs, args = args[:2], args[2:]
    if len(args) != 2:
        print("Usage: ws_extend [-F filesystem] workspace days")
        return 0
    return ws_allocate([*fs, "-x", *args], store)


def ws_release(argv: Sequence[str], store: Store) -> int:
    p = _Parser(prog="ws_release", add_help=False)
    p.add_argument("-F", "--filesystem")
    p.add_argument("-n", "--name")
    p.add_argument("--delete-data", action="store_true")
    p.add_argument("positional", nargs="?")
    a = p.parse_args(argv)
    name = a.name or a.positional
    if not name:
        raise Exit(1, "Usage: ws_release [options] workspace_name")
    _check_name(name)
    space = store.space(a.filesystem)
    with store.locked():
        entry = store.read(space, name)
        if entry is None:
            raise Exit(EXIT_FATAL, "Error: workspace does not exist!")
        stamp = int(store.now)
        data_dir, db_dir = store.deleted_dirs(space)
        data_dir.mkdir(parents=True, exist_ok=True)
        db_dir.mkdir(parents=True, exist_ok=True)
        released = f"{store.user}-{name}-{stamp}"
        while (db_dir / f"{released}.json").exists() or (data_dir / released).exists():
            stamp += 1
            released = f"{store.user}-{name}-{stamp}"
        entry["expiration"] = store.now
        entry["released"] = store.now
        store.write(space, name, entry)
        source = Path(entry["workspace"])
        try:
            if source.exists():
                os.replace(source, data_dir / released)
            os.replace(store.db_file(space, name), db_dir / f"{released}.json")
        except OSError as exc:
            raise Exit(EXIT_FATAL, f"Error: could not remove workspace! ({exc})") from exc
    if a.delete_data:
        shutil.rmtree(data_dir / released, ignore_errors=True)
        (db_dir / f"{released}.json").unlink()
    return 0


def ws_find(argv: Sequence[str], store: Store) -> int:
    p = _Parser(prog="ws_find", add_help=False)
    p.add_argument("-F", "--filesystem")
    p.add_argument("-l", "--list", action="store_true")
    p.add_argument("name", nargs="?")
    a = p.parse_args(argv)
    if a.list:
        print("available filesystems:")
        for name in store.spaces:
            print(name)
        return 0
    if not a.name:
        raise Exit(EXIT_FATAL, "Usage: ws_find [options] [workspacename]")
    if a.filesystem and a.filesystem not in store.spaces:
        raise Exit(EXIT_FATAL, "Error: no such filesystem.")
    spaces = [store.spaces[a.filesystem]] if a.filesystem else list(store.spaces.values())
    found = False
    for space in spaces:
        entry = store.read(space, a.name) if NAME_RE.match(a.name) else None
        if entry is not None:
            print(entry["workspace"])
            found = True
    if not found:
        raise Exit(EXIT_FATAL, "Error: no such workspace")
    return 0


def ws_list(argv: Sequence[str], store: Store) -> int:
    p = _Parser(prog="ws_list", add_help=False)
    p.add_argument("-F", "--filesystem")
    p.add_argument("-l", "--listfilesystems", action="store_true")
    p.add_argument("-s", "--short", action="store_true")
    p.add_argument("-t", "--terse", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-g", "--group", action="store_true")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-N", "--name", action="store_true")
    p.add_argument("-C", "--creation", action="store_true")
    p.add_argument("-R", "--remaining", action="store_true")
    p.add_argument("-r", "--reverted", action="store_true")
    p.add_argument("pattern", nargs="?", default="*")
    a = p.parse_args(argv)
    if a.listfilesystems:
        print("available filesystems:")
        for name in store.spaces:
            print(f"{name} (default)" if name == store.default else name)
        return 0
    if a.filesystem and a.filesystem not in store.spaces:
        raise Exit(EXIT_FATAL, "Error: no such filesystem.")
    import fnmatch

    spaces = [store.spaces[a.filesystem]] if a.filesystem else list(store.spaces.values())
    infos = [
        store.info(space, entry)
        for space in spaces
        for entry in store.entries(space)
        if fnmatch.fnmatchcase(entry["id"], a.pattern)
    ]
    if a.name:
        infos.sort(key=lambda i: i.id)
    elif a.creation:
        infos.sort(key=lambda i: i.created or _dt.datetime.min)
    elif a.remaining:
        infos.sort(key=lambda i: i.remaining or _dt.timedelta(0))
    if a.reverted:
        infos.reverse()
    for info in infos:
        if a.short:
            print(info.listed_id)
        else:
            sys.stdout.write(format_ws_list_entry(info, terse=a.terse and not a.verbose, verbose=a.verbose))
    return 0


_SYLLABLES = ("a", "ka", "shi", "tsu", "n", "ko", "mi", "su", "ta", "ne", "ho", "ri", "yu", "to", "ma")


def ws_restore(argv: Sequence[str], store: Store) -> int:
    p = _Parser(prog="ws_restore", add_help=False)
    p.add_argument("-F", "--filesystem")
    p.add_argument("-l", "--list", action="store_true")
    p.add_argument("-b", "--brief", action="store_true")
    p.add_argument("-n", "--name")
    p.add_argument("-t", "--target")
    p.add_argument("positional", nargs="*")
    a = p.parse_args(argv)
    pos = list(a.positional)
    if a.list:
        spaces = [store.space(a.filesystem)] if a.filesystem else list(store.spaces.values())
        for space in spaces:
            print(f"{space.name}:")
            _, db_dir = store.deleted_dirs(space)
            for path in sorted(db_dir.glob(f"{store.user}-*.json")):
                released = path.name[: -len(".json")]
                print(released)
                if not a.brief:
                    stamp = int(released.rsplit("-", 1)[1])
                    print(f"\tunavailable since {format_ctime(_local(stamp))}")
        return 0
    name = a.name or (pos.pop(0) if pos else None)
    target = a.target or (pos.pop(0) if pos else None)
    if not name:
        print("Error: neither workspace nor -l specified.")
        return 1
    if not target:
        print("Error: no target given.")
        return 1
    space = store.space(a.filesystem)
    if name.split("-", 1)[0] != store.user:
        print(f"Error: only root can do this 1{store.user}{name.split('-', 1)[0]}")
        return 0
    target_entry = store.read(space, target)
    if target_entry is None:
        raise Exit(1, "Error: target workspace does not exist!")
    data_dir, db_dir = store.deleted_dirs(space)
    if not (db_dir / f"{name}.json").exists():
        _err("Error: workspace does not exist.")
        return 0
    word = "".join(random.choice(_SYLLABLES) for _ in range(random.randint(3, 7)))
    sys.stdout.write(f"to verify that you are human, please type '{word}': ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip()
    if answer != word:
        print("not sure if you are human")
        return 0
    print("you are human")
    with store.locked():
        try:
            os.replace(data_dir / name, Path(target_entry["workspace"]) / name)
        except OSError:
            _err("Error: moving data failed, database entry kept!")
            return 1
        (db_dir / f"{name}.json").unlink()
    _err("Info: restore successful, database entry removed.")
    return 0


def ws_register(argv: Sequence[str], store: Store) -> int:
    p = _Parser(prog="ws_register", add_help=False)
    p.add_argument("-F", "--filesystem")
    p.add_argument("directory", nargs="?")
    a = p.parse_args(argv)
    if not a.directory:
        raise Exit(EXIT_FATAL, "Usage: ws_restore [options] directory")
    if a.filesystem and a.filesystem not in store.spaces:
        raise Exit(EXIT_FATAL, "Error: no such filesystem.")
    top = Path(a.directory)
    top.mkdir(exist_ok=True)
    spaces = [store.spaces[a.filesystem]] if a.filesystem else list(store.spaces.values())
    for space in spaces:
        folder = top / space.name
        folder.mkdir(exist_ok=True)
        wanted = {Path(e["workspace"]).name: e["workspace"] for e in store.entries(space)}
        for link in folder.iterdir():
            if link.is_symlink() and link.name not in wanted:
                link.unlink()
        for name, target in sorted(wanted.items()):
            link = folder / name
            if not link.is_symlink() and not link.exists():
                link.symlink_to(target)
            print(f"keep {link}")
    return 0


def _group_name() -> str:
    try:
        import grp

        return grp.getgrgid(os.getegid()).gr_name
    except (KeyError, ImportError):
        return str(os.getegid())


TOOLS = {
    "ws_allocate": ws_allocate,
    "ws_extend": ws_extend,
    "ws_release": ws_release,
    "ws_find": ws_find,
    "ws_list": ws_list,
    "ws_restore": ws_restore,
    "ws_register": ws_register,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in TOOLS:
        print(f"usage: python -m taurus_tools.workspace.local_tools {{{','.join(TOOLS)}}} [args...]", file=sys.stderr)
        return 2
    tool, rest = args[0], args[1:]
    try:
        return TOOLS[tool](rest, Store(default_root()))
    except Exit as exc:
        _err(*exc.lines)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
