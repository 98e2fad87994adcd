"""Workspaces: ``Workspace`` over the ``ws_*`` tools, and ``CacheWorkspace``.

The tools come from a workspace backend (:mod:`taurus_tools.workspace.backends`): ``site`` runs
hpc-workspace's real executables; ``local`` runs taurus-tools' own implementation
(:mod:`taurus_tools.workspace.local_tools`), which prints what hpc-workspace version 1 prints.  So
every raw method returns a real process handle on both backends, and one parser reads both.
"""

from __future__ import annotations

import fnmatch
import os
import re
import socket
import sys
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .._log import get_logger
from ..datamover.backends import StrPath
from ..errors import CommandNotFoundError, ConfigurationError, TaurusToolsError, WorkspaceError
from ..process.launch import Launch
from ..process.handle import Handle
from .backends import ROOT_ENV, WS_TOOLS, WorkspaceBackend, select_workspace_backend
from .format import (
    NAME_RE,
    WorkspaceInfo,
    WorkspaceList,
    current_user,
    parse_allocatable,
    parse_filesystems,
    parse_ws_list,
)

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import TypedDict, Unpack
    else:
        from typing_extensions import TypedDict, Unpack

    class RunOptions(TypedDict, total=False):
        """Options every raw ``ws_*`` method takes (keyword-only); see :meth:`Workspace.run`."""

        input: Union[str, bytes, None]
        text: bool
        on_output: Optional[Callable[[str, bytes], None]]


log = get_logger(__name__)

__all__ = ["Workspace", "CacheWorkspace", "WS_TOOLS", "ROOT_ENV"]

#: How long a typed helper waits for a ws_* tool, in seconds.
TOOL_TIMEOUT_S = 300.0
#: How long an interrupted ws_* tool may take to finish before it is killed, in seconds.
TOOL_GRACE_S = 10.0


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
    extensions.``; the ``Error``/``error`` line is the one worth quoting.  A version 1 tool
    (Python) that crashed printed a traceback: its last line says what happened.
    """
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("error"):
            return line
    if lines and lines[0].startswith("Traceback"):
        return f"the tool crashed: {lines[-1]}"
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
    backend : {"auto", "site", "local"} or WorkspaceBackend
        ``"auto"`` uses the real ``ws_*`` tools when ``ws_allocate`` is found in
        ``tools_dir``, on ``PATH`` or in ``/usr/bin``; else the local implementation (see
        :func:`~taurus_tools.workspace.backends.select_workspace_backend`).  A
        :class:`~taurus_tools.workspace.backends.WorkspaceBackend` is used as it is.
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
    workspace_backend : WorkspaceBackend
        The backend that runs the tools.
    backend : str
        Its name (``"site"`` or ``"local"`` for the built-in ones); ``reason`` says why it
        was chosen.
    """

    def __init__(
        self,
        backend: Union[str, WorkspaceBackend] = "auto",
        *,
        tools_dir: Optional[StrPath] = None,
        root: Optional[StrPath] = None,
        filesystem: Optional[str] = None,
    ) -> None:
        if isinstance(backend, WorkspaceBackend):
            if tools_dir is not None or root is not None:
                raise ConfigurationError(
                    "tools_dir= and root= choose a backend by name; a WorkspaceBackend has its own"
                )
            self.workspace_backend = backend
            log.info("workspace backend: %s", backend)
        elif isinstance(backend, str):
            self.workspace_backend = select_workspace_backend(backend, tools_dir=tools_dir, root=root)
        else:
            raise ConfigurationError(f"backend must be 'auto', 'site', 'local' or a WorkspaceBackend, got {backend!r}")
        self.filesystem = filesystem
        #: The user the tools act for; workspaces are ``<user>-<name>`` directories.
        self.user = current_user()

    @property
    def backend(self) -> str:
        """The backend's name: ``"site"`` or ``"local"`` (a backend of your own has its own)."""
        return self.workspace_backend.name

    @property
    def reason(self) -> str:
        """Why the backend was chosen."""
        return self.workspace_backend.reason

    @property
    def root(self) -> Optional[Path]:
        """Where the backend keeps workspaces itself (the local one); None where the site's tools decide."""
        return self.workspace_backend.root

    def __repr__(self) -> str:
        return f"<Workspace backend={self.backend!r}>"

    # ------------------------------------------------------------------ raw tools
    def tools(self) -> Tuple[str, ...]:
        """The ``ws_*`` tools this backend can run."""
        return self.workspace_backend.tools()

    def argv(self, tool: str, *args: StrPath) -> List[str]:
        """The argv that runs ``tool args...`` on this backend."""
        if tool not in WS_TOOLS:
            raise CommandNotFoundError(tool, WS_TOOLS, "not a workspace tool")
        return self.workspace_backend.argv(tool, [os.fspath(a) for a in args])

    def run(
        self,
        tool: str,
        *args: StrPath,
        input: Union[str, bytes, None] = None,
        text: bool = True,
        on_output: Optional[Callable[[str, bytes], None]] = None,
    ) -> Handle:
        """Start ``tool`` with its own arguments; return the running handle.

        ``input`` goes to its stdin; ``text=False`` gives bytes output; ``on_output`` is
        called as output arrives, as for the Datamover's commands.
        """
        launch = Launch(tuple(self.argv(tool, *args)), name=tool)
        return Handle(
            launch,
            env=self.workspace_backend.env(),
            input=input,
            text=text,
            on_output=on_output,
            backend=self.workspace_backend.name,
        )

    def ws_allocate(self, *args: StrPath, **options: Unpack[RunOptions]) -> Handle:
        """``ws_allocate [options] NAME DAYS``: prints the path on stdout."""
        return self.run("ws_allocate", *args, **options)

    def ws_list(self, *args: StrPath, **options: Unpack[RunOptions]) -> Handle:
        """``ws_list [-t|-v|-s|-l] [-F FS]``."""
        return self.run("ws_list", *args, **options)

    def ws_release(self, *args: StrPath, **options: Unpack[RunOptions]) -> Handle:
        """``ws_release [-F FS] [--delete-data] NAME``."""
        return self.run("ws_release", *args, **options)

    def ws_extend(self, *args: StrPath, **options: Unpack[RunOptions]) -> Handle:
        """``ws_extend [-F FS] NAME DAYS``: sets a new duration, uses one extension."""
        return self.run("ws_extend", *args, **options)

    def ws_find(self, *args: StrPath, **options: Unpack[RunOptions]) -> Handle:
        """``ws_find [-F FS] NAME``: prints the path."""
        return self.run("ws_find", *args, **options)

    def ws_restore(self, *args: StrPath, **options: Unpack[RunOptions]) -> Handle:
        """``ws_restore -l`` or ``ws_restore NAME TARGET`` (asks a question: use :meth:`restore`)."""
        return self.run("ws_restore", *args, **options)

    def ws_register(self, *args: StrPath, **options: Unpack[RunOptions]) -> Handle:
        """``ws_register DIR``: keep symlinks to all workspaces in DIR."""
        return self.run("ws_register", *args, **options)

    # ------------------------------------------------------------------ typed helpers
    def _call(self, tool: str, *args: StrPath) -> Tuple[Handle, str, str]:
        handle = self.run(tool, *args)
        try:
            out, err = handle.communicate(timeout=TOOL_TIMEOUT_S)
        except BaseException:
            # Interrupted or hung: let a tool that is half-way through (say, ws_allocate between
            # its folder and its database entry) finish, so what it made can be cleaned up.
            try:
                handle.wait(TOOL_GRACE_S)
            except BaseException:
                handle.kill()
            raise
        return handle, out, err

    def _fs_args(self, filesystem: Optional[str]) -> List[str]:
        fs = filesystem if filesystem is not None else self.filesystem
        return ["-F", fs] if fs else []

    def _path_result(self, handle: Handle, out: str, err: str, what: str, *, line: int = -1) -> Path:
        """Success = exit 0 + an absolute, existing path on stdout; else WorkspaceError.

        ``line`` picks the printed line when there are several (default: the last).
        """
        lines = [text.strip() for text in out.splitlines() if text.strip()]
        problem = None
        if handle.returncode != 0:
            problem = f"{what} failed: {_first_error(err)}"
        elif not lines:
            problem = f"{what}: the tool exited 0 but printed no path"
        else:
            path = Path(lines[line])
            if not path.is_absolute():
                problem = f"{what}: the tool printed {lines[line]!r}, not an absolute path"
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
        options: List[str] = []
        if comment is not None:
            # One word with "=": a comment that starts with "-" stays the comment's value
            # (boost::program_options in hpc-workspace 1.x and v2's parser both take it).
            options.append(f"--comment={comment}")
        if reminder is not None:
            options += ["-r", str(_days(reminder, "reminder"))]
        if mail is not None:
            options += ["-m", mail]
        if group is not None:
            options += ["-G", group]
        path, created = self._allocate_path(name, days, filesystem, options)
        return self.describe(name, path, filesystem=filesystem), created

    def _allocate_path(
        self, name: str, days: Union[int, str], filesystem: Optional[str], options: Sequence[str] = ()
    ) -> Tuple[Path, bool]:
        """Run ``ws_allocate``: (the path it printed, whether it created the workspace)."""
        check_name(name)
        n_days = _days(days)
        handle, out, err = self._call("ws_allocate", *self._fs_args(filesystem), *options, name, str(n_days))
        try:
            path = self._path_result(handle, out, err, f"allocating workspace {name!r}")
        except WorkspaceError:
            self._raise_for_filesystem(filesystem)
            raise
        return path, "reusing" not in err.lower()

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

        The path ``ws_allocate`` printed is the result; ``ws_list`` then adds the details
        (expiry, filesystem, ...) when it can.  A listing that fails (hpc-workspace 1.6
        crashes on some database entries) leaves a record with the path only and a warning
        in the log: the workspace exists either way.

        Raises
        ------
        ConfigurationError
            A name hpc-workspace rejects, days that are not a positive number, or an
            unknown filesystem (the message lists the valid ones).
        WorkspaceError
            ``ws_allocate`` failed or printed no usable path.
        """
        info, _ = self.allocate_ex(
            name, days, filesystem=filesystem, comment=comment, reminder=reminder, mail=mail, group=group
        )
        return info

    def describe(self, name: str, path: StrPath, *, filesystem: Optional[str] = None) -> WorkspaceInfo:
        """The ``ws_list`` record of your workspace ``name`` at ``path``, best effort.

        The entry is found by its directory, which is the same on every hpc-workspace
        version (the listed id is not).  When listing fails or does not show it, the record
        has the name and path only (and the filesystem, if one was given).
        """
        where = Path(path)
        fs = filesystem if filesystem is not None else self.filesystem
        try:
            # The name as pattern: the tools then read only this workspace's entry.
            for info in self._list(fs, name):
                if info.path == where:
                    return info
            log.info("ws_list does not show workspace %r at %s; its record has only the path", name, where)
        except Exception as exc:  # listing only adds details: never lose the workspace over it
            why = getattr(exc, "problem", exc)
            log.warning("workspace %r is at %s, but listing it failed (%s); only the path is known", name, where, why)
        return WorkspaceInfo(id=name, path=where, filesystem=fs or None, owner=self.user)

    def _list(self, filesystem: Optional[str], *pattern: str) -> List[WorkspaceInfo]:
        handle, out, err = self._call("ws_list", *self._fs_args(filesystem), *pattern)
        if handle.returncode != 0:
            raise WorkspaceError(
                f"listing workspaces failed: {_first_error(err)}", handle.returncode or 1, handle.args, out, err
            )
        return parse_ws_list(out, user=self.user)

    def list(self, pattern: Optional[str] = None, *, filesystem: Optional[str] = None) -> WorkspaceList:
        """Your workspaces (``ws_list``), optionally those whose name matches a glob ``pattern``.

        Names come from the workspace directories, ``<user>-<name>``: current version 2
        lists ``input-data`` as ``Id: data`` (the text after the last ``-``), version 1
        shows a user ``jean-luc`` ``luc-data``; both are found here as ``input-data`` and
        ``data``.  The list shows as a table in Jupyter (:class:`WorkspaceList`).
        """
        found = self._list(filesystem)
        if pattern is not None:
            found = [w for w in found if fnmatch.fnmatchcase(w.id, pattern)]
        return WorkspaceList(found)

    def find(self, name: str, *, filesystem: Optional[str] = None) -> Optional[Path]:
        """The path of workspace ``name``, or None if there is no such workspace.

        Without a filesystem, the one ``ws_allocate`` would reuse: version 1 ``ws_find``
        prints a line for every filesystem holding the name, and ``ws_allocate`` takes the
        default filesystem's first, then the others in the order ``ws_find`` prints them.
        """
        check_name(name)
        fs = filesystem if filesystem is not None else self.filesystem
        handle, out, err = self._call("ws_find", *self._fs_args(fs), name)
        if handle.returncode != 0:
            return None
        printed = [line.strip() for line in out.splitlines() if line.strip()]
        if len(printed) > 1 and not fs:
            default = self._default_or_none()
            if default:
                on_default = self._call("ws_find", "-F", default, name)
                if on_default[0].returncode == 0:
                    return self._path_result(*on_default, f"finding workspace {name!r}")
            log.info("workspace %r exists on several filesystems (%s); using %s", name, ", ".join(printed), printed[0])
        return self._path_result(handle, out, err, f"finding workspace {name!r}", line=0)

    def _default_or_none(self) -> Optional[str]:
        try:
            return self.default_filesystem()
        except WorkspaceError:
            return None

    def extend(self, name: str, days: Union[int, str], *, filesystem: Optional[str] = None) -> WorkspaceInfo:
        """Set workspace ``name`` to expire ``days`` from now, using up one extension."""
        check_name(name)
        n_days = _days(days)
        handle, out, err = self._call("ws_extend", *self._fs_args(filesystem), name, str(n_days))
        path = self._path_result(handle, out, err, f"extending workspace {name!r}")
        return self.describe(name, path, filesystem=filesystem)

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

    def _filesystems(self) -> Tuple[List[str], Optional[str], bool]:
        """``ws_list -l``: (names, default, whether the default was marked or only listed first)."""
        handle, out, err = self._call("ws_list", "-l")
        if handle.returncode != 0:
            raise WorkspaceError("listing filesystems failed", handle.returncode or 1, handle.args, out, err)
        names, default = parse_filesystems(out)
        return names, default, "(default)" in out

    def filesystems(self) -> List[str]:
        """Names of the filesystems (spaces) workspaces can live on."""
        return self._filesystems()[0]

    def default_filesystem(self) -> Optional[str]:
        """The filesystem ``ws_allocate`` uses when none is named.

        Version 1 marks it in ``ws_list -l``.  Version 2 lists by priority without a mark,
        and the first one listed may be one you may list but not allocate on (an ACL that
        grants listing only): ``ws_list -L`` then says which is the first you may allocate on.
        """
        _, default, marked = self._filesystems()
        if default is not None and not marked:
            handle, out, _ = self._call("ws_list", "-L")
            allocatable = parse_allocatable(out) if handle.returncode == 0 else None
            if allocatable:
                return allocatable[0]
        return default

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

        ``ws_restore`` asks an "are you human" question on a terminal: version 1 wants a
        word typed back, version 2 (since 2025-02) which of four categories a word is in.
        This answers either (with pexpect), then checks that ``released_name`` is no longer
        listed as released: the tools exit 0 after refusing, and version 2 prints nothing
        then.

        Raises
        ------
        WorkspaceError
            The tool refused or failed, asked something this cannot answer, or did not
            finish within ``timeout`` seconds.  Nothing was restored.
        """
        import pexpect

        check_name(target)
        argv = self.argv("ws_restore", *self._fs_args(filesystem), released_name, target)
        # The real tool draws the word with terminfo cursor moves (setupterm fails without
        # TERM): give it a terminal whose moves _typed_word() understands.
        env = {**(self.workspace_backend.env() or os.environ), "TERM": "xterm"}
        child = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", timeout=timeout)
        transcript: List[str] = []

        def failed(problem: str, rc: int) -> WorkspaceError:
            text = "".join(transcript)
            return WorkspaceError(f"restoring {released_name!r} failed: {problem}", rc, argv, text, text)

        try:
            idx = child.expect([_TYPE_WORD, _CATEGORY, pexpect.EOF])
            transcript.append(child.before or "")
            if idx < 2:
                transcript.append(child.after)
                answer: Optional[str]
                if idx == 0:
                    answer = _typed_word(child.match.group(1))
                else:
                    answer = _category_answer(child.match.group("word"), child.match.group("choices"))
                    if answer is None:
                        raise failed(
                            f"ws_restore asked which category {child.match.group('word')!r} belongs to, which "
                            "taurus-tools cannot tell; run ws_restore in a terminal",
                            -1,
                        )
                child.sendline(answer)
                child.expect(pexpect.EOF)
                transcript.append(child.before or "")
        except pexpect.TIMEOUT:
            transcript.append(child.before or "")
            raise failed(f"ws_restore did not finish in {timeout:g} s", -1) from None
        finally:
            child.close(force=True)
        rc = child.exitstatus if child.exitstatus is not None else -(child.signalstatus or 1)
        text = "".join(transcript)
        # Version 1 exits 0 after refusing ("not sure if you are human", "Error: ..."):
        # those lines, a non-zero exit, or the entry still being there mean failure.
        refusal = [
            line.strip()
            for line in text.splitlines()
            if line.strip().lower().startswith("error") or "not sure if you are human" in line
        ]
        if rc != 0 or refusal:
            raise failed(refusal[0] if refusal else (text.strip().splitlines() or ["no message"])[-1], rc)
        try:
            still_released = released_name in self.released(filesystem=filesystem)
        except WorkspaceError as exc:
            raise failed(f"ws_restore exited 0, but checking that it restored failed: {exc.problem}", rc) from exc
        if still_released:
            raise failed(
                "ws_restore exited 0 but the workspace is still listed as released "
                "(a wrong answer to its question is only logged)",
                rc,
            )


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
        self._generated = name is None
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
        """Allocate the workspace if this object does not hold it yet.

        If anything fails once ``ws_allocate`` has created it (even an interrupt while it is
        being listed), it is released again before the error propagates.
        """
        with self._lock:
            if self._info is not None:
                return self._info
            ws = self.workspace
            try:
                path, created = ws._allocate_path(self.id, self.days, self.filesystem)
            except BaseException as exc:
                # Did the tool create it before failing (an interrupt, or exit 0 with a path that
                # is not there)?  A name of our own making is nobody else's: release it blindly.
                if self._generated or _created_anyway(exc):
                    self._release_quietly()
                raise
            self._info = WorkspaceInfo(id=self.id, path=path, filesystem=self.filesystem, owner=ws.user)
            self._owned = created
            try:
                self._info = ws.describe(self.id, path, filesystem=self.filesystem)
            except BaseException:
                if created:
                    self._info, self._owned = None, False
                    self._release_quietly()
                raise
            if not created:
                log.warning("workspace %r already existed; CacheWorkspace uses it but will not release it", self.id)
            return self._info

    def _release_quietly(self) -> None:
        try:
            self.workspace.release(self.id, filesystem=self.filesystem, delete_data=self.delete_data)
        except Exception as exc:
            log.debug("releasing %r after a failed allocation: %s", self.id, exc)

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
                # The filesystem it was listed on, else the one asked for (else the default,
                # where ws_allocate creates a workspace when none is named).
                where = self.filesystem or info.filesystem
                self.workspace.release(self.id, filesystem=where, delete_data=self.delete_data)
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


#: Version 1's question: the word is drawn with cursor moves between the quotes.
_TYPE_WORD = r"please type '([^']*)': "
#: Version 2's question (since 2025-02): "Is 'Dog' an [0] Animal, [1] Fruit or Vegetable or
#: [2] Object or [3] Person? <type 0/1/2/3 + enter> :".
_CATEGORY = r"Is '(?P<word>[^'\r\n]*)' an? (?P<choices>[^?\r\n]*)\?[^:\r\n]*:"
_CHOICE = re.compile(r"\[(\d+)\]\s*(.*?)(?=\s*(?:,|\bor\b)?\s*\[\d+\]|\s*$)")
#: What version 2 asks about, by category (the words of its src/utils.cpp), lower case.
_VOCABULARY: Dict[str, frozenset] = {
    "animal": frozenset(
        "dog cat elephant lion tiger cow horse monkey snake eagle bear wolf fox deer rabbit squirrel pig "
        "chicken duck fish shark whale dolphin frog butterfly".split()
    ),
    "fruit": frozenset(
        "apple banana orange strawberry blueberry watermelon mango pineapple grapes avocado tomato potato "
        "carrot broccoli spinach onion garlic cucumber lettuce corn peas asparagus zucchini".split()
    )
    | {"bell pepper", "green beans"},
    "object": frozenset(
        "car house tree book computer phone chair table shirt pants shoes hat door window wall floor "
        "ceiling lightbulb pen paper clock television radio cloud rock".split()
    ),
    "person": frozenset(
        {
            "albert einstein", "isaac newton", "leonardo da vinci", "mahatma gandhi", "nelson mandela",
            "martin luther king jr.", "cleopatra", "julius caesar", "alexander the great",
            "napoleon bonaparte", "george washington", "abraham lincoln", "winston churchill",
            "marie curie", "rosalind franklin", "galileo galilei", "charles darwin", "sigmund freud",
            "siddhartha gautama", "confucius", "socrates", "plato", "aristotle", "homer",
        }
    ),
}


def _category_answer(word: str, choices: str) -> Optional[str]:
    """The number to type for version 2's question, or None if ``word`` is unknown.

    The numbers are read from the question (``[1] Fruit or Vegetable``), not assumed.
    """
    wanted = next((cat for cat, words in _VOCABULARY.items() if word.strip().lower() in words), None)
    if wanted is None:
        return None
    for number, label in _CHOICE.findall(choices):
        lowered = label.lower()
        if wanted in lowered or (wanted == "fruit" and "vegetable" in lowered):
            return number
    return None


def _created_anyway(exc: BaseException) -> bool:
    """``ws_allocate`` said it created the workspace and exited 0, yet its result was refused."""
    return (
        isinstance(exc, WorkspaceError)
        and exc.returncode == 0
        and "creating workspace" in (exc.stderr or "").lower()
    )


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
