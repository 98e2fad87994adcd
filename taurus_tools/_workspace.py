"""Workspaces: ``Workspace`` over the ``ws_*`` tools, and ``CacheWorkspace``.

Two backends give the same tools: ``site`` runs hpc-workspace's real executables;
``local`` runs taurus-tools' own implementation (:mod:`taurus_tools._ws_local`) as
``python -m taurus_tools._ws_local TOOL ...``, which prints what hpc-workspace version 1
prints.  So every raw method returns a real process handle on both backends, and one
parser reads both.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import socket
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._backends import StrPath
from ._errors import (
    BackendUnavailableError,
    CommandNotFoundError,
    ConfigurationError,
    TaurusToolsError,
    WorkspaceError,
)
from ._process import Handle, Launch
from ._ws_format import NAME_RE, WorkspaceInfo, parse_filesystems, parse_ws_list

log = logging.getLogger(__name__)

__all__ = ["Workspace", "CacheWorkspace", "WS_TOOLS", "ROOT_ENV"]

#: The hpc-workspace tools, in the order users meet them.
WS_TOOLS = (
    "ws_allocate",
    "ws_list",
    "ws_release",
    "ws_extend",
    "ws_find",
    "ws_restore",
    "ws_register",
)
#: Where the local implementation keeps its workspaces.
ROOT_ENV = "TAURUS_TOOLS_WS_ROOT"
#: How long a typed helper waits for a ws_* tool, in seconds.
TOOL_TIMEOUT_S = 300.0


def _days(days: Union[int, str], what: str = "days") -> int:
    try:
        value = int(str(days).strip())
    except ValueError:
        value = 0
        ok = False
    else:
        ok = not isinstance(days, bool) and value > 0
    if not ok:
        raise ConfigurationError(f"{what} must be a whole number of days > 0, got {days!r}")
    return value


def _first_error(err: str) -> str:
    """The line of a tool's stderr that says what went wrong.

    ``ws_allocate -x`` prints ``Info: extending workspace.`` before ``Error: no more
    extensions.``; the ``Error``/``error`` line is the one worth quoting.
    """
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("error"):
            return line
    return lines[0] if lines else "no message"


def check_name(name: str) -> str:
    """Return ``name`` if hpc-workspace accepts it, else raise :class:`ConfigurationError`."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigurationError(
            f"workspace name {name!r} is not valid: it must start with a letter or digit and "
            "contain only letters, digits, '_', '.' and '-'"
        )
    return name


class Workspace:
    """The hpc-workspace tools: raw methods and typed helpers.

    Parameters
    ----------
    backend : {"auto", "site", "local"}
        ``"auto"`` uses the real ``ws_*`` tools when ``ws_allocate`` is found in
        ``tools_dir``, on ``PATH`` or in ``/usr/bin``; else the local implementation.
    tools_dir : path-like, optional
        Folder with the site's ``ws_*`` tools.
    root : path-like, optional
        Local backend only: where workspaces live; default ``$TAURUS_TOOLS_WS_ROOT``, else
        a per-user folder in the system's temporary directory.  Filesystems (spaces) are
        configured in ``ROOT/ws.json``.
    filesystem : str, optional
        Default filesystem (``-F``) for the typed helpers.

    Attributes
    ----------
    backend : str
        ``"site"`` or ``"local"``; ``reason`` says why.
    """

    def __init__(
        self,
        backend: str = "auto",
        *,
        tools_dir: Optional[StrPath] = None,
        root: Optional[StrPath] = None,
        filesystem: Optional[str] = None,
    ) -> None:
        if backend not in ("auto", "site", "local"):
            raise ConfigurationError(f"backend={backend!r} is not one of: auto, site, local")
        self.filesystem = filesystem
        self._tools: Dict[str, str] = {}
        self._env: Optional[Dict[str, str]] = None
        if backend in ("auto", "site"):
            self._tools, searched = _find_ws_tools(tools_dir)
            if self._tools:
                self.backend = "site"
                self.reason = f"found {', '.join(sorted(self._tools))}"
            elif backend == "site":
                raise BackendUnavailableError(f"no ws_allocate found; searched {searched}")
        if not self._tools:
            from . import _ws_local

            self.backend = "local"
            self.root = Path(root) if root is not None else _ws_local.default_root()
            self._env = {**os.environ, ROOT_ENV: str(self.root)}
            why = "asked for" if backend == "local" else "no ws_* tools found;"
            self.reason = f"{why} local workspaces under {self.root}"
        elif root is not None:
            raise ConfigurationError("root= applies to the local backend only")
        log.info("workspace backend: %s (%s)", self.backend, self.reason)

    def __repr__(self) -> str:
        return f"<Workspace backend={self.backend!r}>"

    # ------------------------------------------------------------------ raw tools
    def argv(self, tool: str, *args: StrPath) -> List[str]:
        """The argv that runs ``tool args...`` on this backend."""
        if tool not in WS_TOOLS:
            raise CommandNotFoundError(tool, WS_TOOLS, "not a workspace tool")
        strs = [os.fspath(a) for a in args]
        if self.backend == "local":
            return [sys.executable, "-m", "taurus_tools._ws_local", tool, *strs]
        exe = self._tools.get(tool)
        if exe is None:
            raise CommandNotFoundError(tool, tuple(sorted(self._tools)), "not installed here")
        return [exe, *strs]

    def run(self, tool: str, *args: StrPath, input: Union[str, bytes, None] = None) -> Handle:
        """Start ``tool`` with its own arguments; return the running handle."""
        return Handle(Launch(tuple(self.argv(tool, *args)), name=tool), env=self._env, input=input)

    def ws_allocate(self, *args: StrPath) -> Handle:
        """``ws_allocate [options] NAME DAYS``: prints the path on stdout."""
        return self.run("ws_allocate", *args)

    def ws_list(self, *args: StrPath) -> Handle:
        """``ws_list [-t|-v|-s|-l] [-F FS]``."""
        return self.run("ws_list", *args)

    def ws_release(self, *args: StrPath) -> Handle:
        """``ws_release [-F FS] [--delete-data] NAME``."""
        return self.run("ws_release", *args)

    def ws_extend(self, *args: StrPath) -> Handle:
        """``ws_extend [-F FS] NAME DAYS``: sets a new duration, uses one extension."""
        return self.run("ws_extend", *args)

    def ws_find(self, *args: StrPath) -> Handle:
        """``ws_find [-F FS] NAME``: prints the path."""
        return self.run("ws_find", *args)

    def ws_restore(self, *args: StrPath, input: Union[str, bytes, None] = None) -> Handle:
        """``ws_restore -l`` or ``ws_restore NAME TARGET`` (asks a question: use :meth:`restore`)."""
        return self.run("ws_restore", *args, input=input)

    def ws_register(self, *args: StrPath) -> Handle:
        """``ws_register DIR``: keep symlinks to all workspaces in DIR."""
        return self.run("ws_register", *args)

    # ------------------------------------------------------------------ typed helpers
    def _call(self, tool: str, *args: StrPath) -> Tuple[Handle, str, str]:
        handle = self.run(tool, *args)
        out, err = handle.communicate(timeout=TOOL_TIMEOUT_S)
        return handle, out, err

    def _fs_args(self, filesystem: Optional[str]) -> List[str]:
        fs = filesystem if filesystem is not None else self.filesystem
        return ["-F", fs] if fs else []

    def _path_result(self, handle: Handle, out: str, err: str, what: str) -> Path:
        """Success = exit 0 + an absolute, existing path on stdout; else WorkspaceError."""
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        problem = None
        if handle.returncode != 0:
            problem = f"{what} failed: {_first_error(err)}"
        elif not lines:
            problem = f"{what}: the tool exited 0 but printed no path"
        else:
            path = Path(lines[-1])
            if not path.is_absolute():
                problem = f"{what}: the tool printed {lines[-1]!r}, not an absolute path"
            elif not path.is_dir():
                problem = f"{what}: the tool printed {path}, which does not exist"
            else:
                return path
        raise WorkspaceError(problem, handle.returncode or 0, handle.args, out, err)

    def _raise_for_filesystem(self, filesystem: Optional[str]) -> None:
        fs = filesystem if filesystem is not None else self.filesystem
        if fs:
            names = self.filesystems()
            if names and fs not in names:
                raise ConfigurationError(
                    f"unknown workspace filesystem {fs!r}; available: {', '.join(names)}"
                )

    def allocate_ex(
        self,
        name: str,
        days: Union[int, str],
        *,
        filesystem: Optional[str] = None,
        comment: Optional[str] = None,
        reminder: Optional[int] = None,
        mail: Optional[str] = None,
        group: Optional[str] = None,
    ) -> Tuple[WorkspaceInfo, bool]:
        """Like :meth:`allocate`, also saying whether it was created (False: reused)."""
        check_name(name)
        n_days = _days(days)
        args = self._fs_args(filesystem)
        if comment is not None:
            args += ["-c", comment]
        if reminder is not None:
            args += ["-r", str(_days(reminder, "reminder"))]
        if mail is not None:
            args += ["-m", mail]
        if group is not None:
            args += ["-G", group]
        args += [name, str(n_days)]
        handle, out, err = self._call("ws_allocate", *args)
        try:
            path = self._path_result(handle, out, err, f"allocating workspace {name!r}")
        except WorkspaceError:
            self._raise_for_filesystem(filesystem)
            raise
        created = "reusing" not in err.lower()
        info = self._lookup(name, filesystem)
        if info is None or info.path != path:
            info = WorkspaceInfo(id=name, path=path, filesystem=filesystem or self.filesystem)
        return info, created

    def allocate(
        self,
        name: str,
        days: Union[int, str],
        *,
        filesystem: Optional[str] = None,
        comment: Optional[str] = None,
        reminder: Optional[int] = None,
        mail: Optional[str] = None,
        group: Optional[str] = None,
    ) -> WorkspaceInfo:
        """Allocate workspace ``name`` for ``days`` days (an existing one is reused as is).

        Raises
        ------
        ConfigurationError
            A name hpc-workspace rejects, days that are not a positive number, or an
            unknown filesystem (the message lists the valid ones).
        WorkspaceError
            The tool failed or printed no usable path.
        """
        info, _ = self.allocate_ex(
            name, days, filesystem=filesystem, comment=comment, reminder=reminder, mail=mail, group=group
        )
        return info

    def _lookup(self, name: str, filesystem: Optional[str]) -> Optional[WorkspaceInfo]:
        for info in self.list(filesystem=filesystem):
            if info.id == name:
                return info
        return None

    def list(self, pattern: Optional[str] = None, *, filesystem: Optional[str] = None) -> List[WorkspaceInfo]:
        """Your workspaces (``ws_list``), optionally those whose id matches a glob ``pattern``."""
        handle, out, err = self._call("ws_list", *self._fs_args(filesystem))
        if handle.returncode != 0:
            raise WorkspaceError("listing workspaces failed", handle.returncode or 1, handle.args, out, err)
        found = parse_ws_list(out)
        if pattern is not None:
            found = [w for w in found if fnmatch.fnmatchcase(w.id, pattern)]
        return found

    def find(self, name: str, *, filesystem: Optional[str] = None) -> Optional[Path]:
        """The path of workspace ``name``, or None if there is no such workspace."""
        check_name(name)
        handle, out, err = self._call("ws_find", *self._fs_args(filesystem), name)
        if handle.returncode != 0:
            return None
        return self._path_result(handle, out, err, f"finding workspace {name!r}")

    def extend(self, name: str, days: Union[int, str], *, filesystem: Optional[str] = None) -> WorkspaceInfo:
        """Set workspace ``name`` to expire ``days`` from now, using up one extension."""
        check_name(name)
        n_days = _days(days)
        handle, out, err = self._call("ws_extend", *self._fs_args(filesystem), name, str(n_days))
        path = self._path_result(handle, out, err, f"extending workspace {name!r}")
        return self._lookup(name, filesystem) or WorkspaceInfo(id=name, path=path)

    def release(self, name: str, *, filesystem: Optional[str] = None, delete_data: bool = False) -> None:
        """Release workspace ``name`` (its data is moved aside; deleted with ``delete_data``)."""
        check_name(name)
        args = self._fs_args(filesystem) + (["--delete-data"] if delete_data else []) + [name]
        handle, out, err = self._call("ws_release", *args)
        if handle.returncode != 0:
            raise WorkspaceError(
                f"releasing workspace {name!r} failed: {_first_error(err)}",
                handle.returncode or 1,
                handle.args,
                out,
                err,
            )

    def _filesystems(self) -> Tuple[List[str], Optional[str]]:
        handle, out, err = self._call("ws_list", "-l")
        if handle.returncode != 0:
            raise WorkspaceError("listing filesystems failed", handle.returncode or 1, handle.args, out, err)
        return parse_filesystems(out)

    def filesystems(self) -> List[str]:
        """Names of the filesystems (spaces) workspaces can live on."""
        return self._filesystems()[0]

    def default_filesystem(self) -> Optional[str]:
        """The filesystem used when none is named."""
        return self._filesystems()[1]

    def released(self, *, filesystem: Optional[str] = None) -> List[str]:
        """Names of released workspaces that :meth:`restore` can bring back."""
        handle, out, err = self._call("ws_restore", *self._fs_args(filesystem), "-l")
        if handle.returncode != 0:
            raise WorkspaceError("listing released workspaces failed", handle.returncode or 1, handle.args, out, err)
        names = []
        for line in out.splitlines():
            token = line.strip()
            if token and ":" not in token and not token.lower().startswith("available"):
                names.append(token.split()[0])
        return names

    def restore(
        self, released_name: str, target: str, *, filesystem: Optional[str] = None, timeout: float = 60.0
    ) -> None:
        """Restore a released workspace into existing workspace ``target``.

        ``ws_restore`` asks an "are you human" question on a terminal; this answers it
        (with pexpect) and checks the result.
        """
        import pexpect

        check_name(target)
        argv = self.argv("ws_restore", *self._fs_args(filesystem), released_name, target)
        # The real tool draws the word with terminfo cursor moves (setupterm fails without
        # TERM): give it a terminal whose moves _typed_word() understands.
        env = {**(self._env or os.environ), "TERM": "xterm"}
        child = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", timeout=timeout)
        transcript: List[str] = []
        try:
            idx = child.expect([r"please type '([^']*)': ", pexpect.EOF])
            transcript.append(child.before or "")
            if idx == 0:
                code = _typed_word(child.match.group(1))
                transcript.append(child.after)
                child.sendline(code)
                child.expect(pexpect.EOF)
                transcript.append(child.before or "")
        except pexpect.TIMEOUT:
            transcript.append(child.before or "")
            text = "".join(transcript)
            raise WorkspaceError(
                f"restoring {released_name!r} failed: ws_restore did not finish in {timeout:g} s",
                -1,
                argv,
                text,
                text,
            ) from None
        finally:
            child.close(force=True)
        rc = child.exitstatus if child.exitstatus is not None else -(child.signalstatus or 1)
        text = "".join(transcript)
        # Version 1 exits 0 after refusing ("not sure if you are human", "Error: ..."):
        # success is exit 0 with neither.
        refusal = [
            line.strip()
            for line in text.splitlines()
            if line.strip().startswith(("Error", "error")) or "not sure if you are human" in line
        ]
        if rc != 0 or refusal:
            first = refusal[0] if refusal else (text.strip().splitlines() or ["no message"])[-1]
            raise WorkspaceError(f"restoring {released_name!r} failed: {first}", rc, argv, text, text)


class CacheWorkspace:
    """A short-lived workspace of its own, released when you are done.

    Parameters
    ----------
    name : str, optional
        Workspace id; default a unique ``cache-<host>-<pid>-<random>`` so two jobs never
        share (and release) one cache.
    days : int
        Lifetime.
    filesystem : str, optional
        Where to allocate it.
    workspace : Workspace, optional
        The tools to use; default ``Workspace()``.
    delete_data : bool
        Delete the data on release instead of moving it aside.

    Attributes
    ----------
    name : str
        The workspace's path as a str (as in the original ``CacheWorkspace``).
    path : Path
        The same as a Path.
    id : str
        The workspace id.

    Notes
    -----
    It allocates on construction (and again on ``__enter__`` after a cleanup) and releases
    in :meth:`cleanup`, which is idempotent.  As a context manager it releases on exit even
    when the body raised, never masking that exception.  It never releases a workspace
    that already existed before it was allocated here.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        days: int = 1,
        *,
        filesystem: Optional[str] = None,
        workspace: Optional[Workspace] = None,
        delete_data: bool = False,
    ) -> None:
        self.id = check_name(name) if name is not None else self._unique_id()
        self.days = _days(days)
        self.filesystem = filesystem
        self.workspace = workspace if workspace is not None else Workspace()
        self.delete_data = delete_data
        self._lock = threading.Lock()
        self._owned = False
        self._info: Optional[WorkspaceInfo] = None
        self.allocate()

    @staticmethod
    def _unique_id() -> str:
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0]) or "host"
        return f"cache-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def allocate(self) -> WorkspaceInfo:
        """Allocate the workspace if this object does not hold it yet."""
        with self._lock:
            if self._info is None:
                info, created = self.workspace.allocate_ex(self.id, self.days, filesystem=self.filesystem)
                self._info = info
                self._owned = created
                if not created:
                    log.warning(
                        "workspace %r already existed; CacheWorkspace uses it but will not release it",
                        self.id,
                    )
            return self._info

    @property
    def info(self) -> WorkspaceInfo:
        if self._info is None:
            raise TaurusToolsError(
                f"cache workspace {self.id!r} was released; use it in a with block or call allocate()"
            )
        return self._info

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def allocated(self) -> bool:
        return self._info is not None

    def cleanup(self) -> None:
        """Release the workspace (if this object allocated it); safe to call twice."""
        with self._lock:
            if self._info is None:
                return
            info, owned = self._info, self._owned
            self._info, self._owned = None, False
        if owned:
            try:
                self.workspace.release(self.id, filesystem=self.filesystem, delete_data=self.delete_data)
            except BaseException:
                # Still allocated: say so, and let a later cleanup() try again.
                with self._lock:
                    if self._info is None:
                        self._info, self._owned = info, True
                raise

    def __enter__(self) -> "CacheWorkspace":
        self.allocate()
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        if exc is None:
            self.cleanup()
            return
        try:
            self.cleanup()
        except Exception as cleanup_exc:  # never mask the body's exception
            note = f"taurus-tools: also failed to release cache workspace {self.id!r}: {cleanup_exc}"
            if hasattr(exc, "add_note"):
                exc.add_note(note)
            log.error("%s", note)

    def __repr__(self) -> str:
        where = str(self._info.path) if self._info else "released"
        return f"<CacheWorkspace {self.id!r} {where}>"


_CURSOR = re.compile(r"\x1b\[(\d*)([CD])|\$<[\d.*/]+>|\x08|\x1b.")


def _typed_word(shown: str) -> str:
    """The word ``ws_restore`` asks for, from what it printed between the quotes.

    It prints the syllables out of order and moves the cursor (``cub1``/``cuf1``:
    backspace and ``ESC [ C`` on xterm) so that the word only *looks* right on a
    terminal; replay those moves on one line to read it.
    """
    cells: List[str] = []
    pos = 0
    i = 0
    while i < len(shown):
        m = _CURSOR.match(shown, i)
        if m:
            if m.group(0) == "\x08":
                pos = max(0, pos - 1)
            elif m.group(2) == "C":
                pos += int(m.group(1) or 1)
            elif m.group(2) == "D":
                pos = max(0, pos - int(m.group(1) or 1))
            i = m.end()
            continue
        if shown[i] >= " ":
            while len(cells) <= pos:
                cells.append(" ")
            cells[pos] = shown[i]
            pos += 1
        i += 1
    return "".join(cells).strip()


def _find_ws_tools(tools_dir: Optional[StrPath]) -> Tuple[Dict[str, str], str]:
    if tools_dir is not None:
        if not os.path.isdir(tools_dir):
            raise ConfigurationError(f"tools_dir={os.fspath(tools_dir)!r} is not an existing folder")
        folders: Sequence[Optional[str]] = [os.fspath(tools_dir)]
        searched = os.fspath(tools_dir)
    else:
        folders = [None, "/usr/bin"]
        searched = "PATH, /usr/bin"
    for folder in folders:
        found = {}
        for tool in WS_TOOLS:
            exe = shutil.which(tool, path=folder)
            if exe:
                found[tool] = exe
        if "ws_allocate" in found:
            return found, searched
    if tools_dir is not None:
        raise ConfigurationError(f"tools_dir={os.fspath(tools_dir)!r} holds no ws_allocate")
    return {}, searched
