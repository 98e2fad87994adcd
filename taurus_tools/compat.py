"""Code written for ``taurus_datamover`` 0.4.0, running on taurus-tools.

Change the import and nothing else::

    from taurus_tools.compat import Datamover, Workspace, CacheWorkspace, waitfor, save_to_project

The names, signatures and results are 0.4.0's: methods named after the executables found
in ``path_to_exe``, handles whose ``communicate()`` returns bytes, ``waitfor`` that warns
instead of raising and returns the exit code, ``--blocking`` appended last.  Underneath is
taurus-tools, so the old defects are gone: output is drained as it comes (no pipe
deadlock), a timeout cancels the process tree *and* the Slurm job, a ``CacheWorkspace``
left at its default id is unique to its job, and ``save_to_project`` raises when the copy
fails.  Where ``path_to_exe`` holds no tools, the commands run through taurus-tools'
automatic choice (the site's tools elsewhere, Slurm, or this machine), so old notebooks
also run on a laptop.

The first use logs (``logging``, not ``warnings``) which modern call replaces each one.
"""

from __future__ import annotations

import codecs
import functools
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from .datamover import datamover as _datamover
from .workspace import workspace as _workspace
from ._log import get_logger
from .datamover.backends import Backend, SiteBackend, select_backend
from .errors import ConfigurationError
from .process.launch import Launch
from .process.handle import Handle
from .process.tree import terminate_tree
from .transfer.staging import stage_out

__all__ = ["Datamover", "Workspace", "CacheWorkspace", "waitfor", "save_to_project"]

log = get_logger(__name__)

DEFAULT_DATAMOVER_PATH = "/sw/taurus/tools/slurmtools/default/bin/"
DEFAULT_WORKSPACE_PATH = "/usr/bin/"
#: How long waitfor reads a finished plain Popen's pipes before it gives up on them.
_PIPE_GRACE_S = 2.0

#: What replaces each legacy call; logged once, at the first use of this module.
MIGRATION = """\
taurus_tools.compat runs code written for taurus_datamover 0.4.0. The modern calls:
  Datamover(path_to_exe=P)            -> taurus_tools.Datamover(tools_dir=P)  (or no argument)
  dm.dtcp(...) then waitfor(p)        -> taurus_tools.waitfor(dm.dtcp(...), timeout=S, check=True)
                                         (str output; CommandError/CommandTimeoutError instead of warnings)
  Workspace().ws_allocate(n, d)       -> taurus_tools.Workspace().allocate(n, d)  (a WorkspaceInfo)
  ws_list() + parsing                 -> taurus_tools.Workspace().list()
  CacheWorkspace(expire_in_days=N)    -> taurus_tools.CacheWorkspace(days=N); .path is a Path
  save_to_project(fn, path, *a)       -> with taurus_tools.stage_out(path) as tmp: fn(tmp, *a)"""

_guided = threading.Event()


def _guide() -> None:
    if not _guided.is_set():
        _guided.set()
        log.info("%s", MIGRATION)


class _Echo:
    """0.4.0's verbosity as an ``on_output`` callback: 1 shows stderr live, 2 both streams."""

    def __init__(self, verbosity: int) -> None:
        self.streams = {"stderr"} if verbosity == 1 else {"stdout", "stderr"}
        self._decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")}
        self._lock = threading.Lock()

    def __call__(self, stream: str, data: bytes) -> None:
        if stream in self.streams:
            with self._lock:
                text = self._decoders[stream].decode(data)
                target = sys.stdout if stream == "stdout" else sys.stderr  # looked up now: Jupyter swaps them
                target.write(text)
                target.flush()


def _verbosity(verbosity: int) -> int:
    if verbosity not in (0, 1, 2) or isinstance(verbosity, bool):
        raise ConfigurationError(
            f"verbosity must be 0 (capture all), 1 (show stderr live) or 2 (show all live), got {verbosity!r}"
        )
    return verbosity


class _Tools:
    """What 0.4.0's wrappers share: the executables of a folder (a glob) as methods."""

    _glob = ""

    def __init__(self, path_to_exe: Union[str, "os.PathLike[str]"], verbosity: int) -> None:
        _guide()
        self.path_to_exe = Path(path_to_exe)
        self.verbosity = _verbosity(verbosity)
        found = self.path_to_exe.glob(self._glob) if self.path_to_exe.is_dir() else []
        #: Names of the executables in ``path_to_exe`` (0.4.0's ``exe``); with none there, the
        #: commands taurus-tools runs in their place.
        self.exe: List[str] = sorted(f.name for f in found if f.is_file() and os.access(f, os.X_OK))

    def _execute(self, name: str, *args: Any) -> Handle:
        raise NotImplementedError

    def _echo(self) -> Optional[Callable[[str, bytes], None]]:
        """A fresh live-output callback for one handle, per the current ``verbosity``."""
        return _Echo(_verbosity(self.verbosity)) if self.verbosity else None

    def __getattr__(self, name: str) -> Callable[..., Handle]:
        # Only reached for names that are not attributes: the commands.  A bound partial per
        # call (0.4.0 stored "the current command" on the object, so f = dm.dtcp; dm.dtls();
        # f(...) ran dtls).
        if not name.startswith("_") and name in self.__dict__.get("exe", ()):
            method = functools.partial(self._execute, name)
            functools.update_wrapper(method, self._execute)
            method.__name__ = name  # type: ignore[attr-defined]
            return method
        raise AttributeError(f"No executable with name {name} found in path {self.__dict__.get('path_to_exe')}")

    def __dir__(self) -> List[str]:
        return sorted({*super().__dir__(), *self.__dict__.get("exe", ())})

    def is_cluster(self) -> bool:
        """Whether the commands run as cluster jobs (False: on this machine)."""
        raise NotImplementedError


class Datamover(_Tools):
    """0.4.0's ``Datamover``: every ``dt*`` executable in ``path_to_exe`` as a method.

    Parameters
    ----------
    path_to_exe : str or path-like
        Folder of the site's ``dt*`` tools.  When it holds none, taurus-tools chooses
        (the tools elsewhere on ``PATH``, else Slurm, else this machine).
    blocking : bool
        Append ``--blocking`` (as the last argument): the command's handle lasts as long
        as the transfer.
    verbosity : {0, 1, 2}
        0 captures everything; 1 also shows stderr as it comes; 2 shows both streams as
        they come.  Output is always captured, so ``communicate()`` returns it at every
        level (0.4.0 returned None for streams it did not capture).

    Methods return a running :class:`~taurus_tools.Handle` whose ``communicate()`` gives
    bytes, like the ``subprocess.Popen`` 0.4.0 returned.
    """

    _glob = "dt*"

    def __init__(
        self,
        path_to_exe: Union[str, "os.PathLike[str]"] = DEFAULT_DATAMOVER_PATH,
        blocking: bool = True,
        verbosity: int = 0,
    ) -> None:
        super().__init__(path_to_exe, verbosity)
        self.blocking = blocking
        if self.exe:
            tools = {name: str(self.path_to_exe / name) for name in self.exe}
            backend: Backend = SiteBackend(tools, reason=f"datamover tools in {self.path_to_exe}", blocking_last=True)
        else:
            backend = select_backend("auto", blocking_last=True)
        #: The taurus-tools Datamover doing the work.
        self.datamover = _datamover.Datamover(backend, blocking=bool(blocking))
        if not self.exe:
            self.exe = list(self.datamover.commands())
        log.info("compat Datamover: %s", self.datamover.backend)

    def _execute(self, name: str, *args: Any) -> Handle:
        dm = self.datamover
        strs = [os.fspath(a) if isinstance(a, os.PathLike) else a for a in args]
        if name in _datamover.COMMANDS:
            return dm.call(name, *strs, blocking=bool(self.blocking), text=False, on_output=self._echo())
        # A site tool taurus-tools does not know (dtq, ...): run it as it is.
        launch = Launch((str(self.path_to_exe / name), *map(str, strs)), name=name)
        return dm.start(launch, text=False, on_output=self._echo())

    def is_cluster(self) -> bool:
        return self.datamover.backend.is_cluster()

    def __repr__(self) -> str:
        return f"<taurus_tools.compat.Datamover {self.datamover.backend.name}: {', '.join(self.exe)}>"


class Workspace(_Tools):
    """0.4.0's ``Workspace``: every ``ws_*`` executable in ``path_to_exe`` as a method.

    Where ``path_to_exe`` holds no ``ws_allocate``, the tools on ``PATH`` are used, else
    taurus-tools' local implementation of them.  ``verbosity`` as for :class:`Datamover`.
    """

    _glob = "ws_*"

    def __init__(
        self, path_to_exe: Union[str, "os.PathLike[str]"] = DEFAULT_WORKSPACE_PATH, verbosity: int = 0
    ) -> None:
        super().__init__(path_to_exe, verbosity)
        site_here = "ws_allocate" in self.exe
        #: The taurus-tools Workspace doing the work.
        self.workspace = (
            _workspace.Workspace("site", tools_dir=self.path_to_exe) if site_here else _workspace.Workspace()
        )
        if not site_here:
            self.exe = list(self.workspace.tools())

    def _execute(self, name: str, *args: Any) -> Handle:
        strs = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
        if name in _workspace.WS_TOOLS:
            return self.workspace.run(name, *strs, text=False, on_output=self._echo())
        # ws_share, ws_send_ical, ...: tools taurus-tools does not wrap, run as they are.
        launch = Launch((str(self.path_to_exe / name), *strs), name=name)
        return Handle(launch, text=False, on_output=self._echo())

    def is_cluster(self) -> bool:
        return self.workspace.workspace_backend.is_cluster()

    def __repr__(self) -> str:
        return f"<taurus_tools.compat.Workspace {self.workspace.backend}: {', '.join(self.exe)}>"


class _DefaultId(str):
    """The default ``id='cache'``, told apart from an explicit ``id='cache'`` by identity."""


_DEFAULT_ID = _DefaultId("cache")


class CacheWorkspace:
    """0.4.0's ``CacheWorkspace``: a workspace for temporary files, allocated at once.

    Parameters
    ----------
    path_to_exe : str or path-like
        Folder of the ``ws_*`` tools (see :class:`Workspace`).
    id : str
        Workspace name.  Left at its default, a unique ``cache-<host>-<pid>-<random>`` is
        used, so two jobs never share (and release) one cache; an explicit id, even
        ``"cache"``, is used as given.
    expire_in_days : int
        Lifetime.

    Attributes
    ----------
    name : str or None
        The workspace's path; None once :meth:`cleanup` released it.
    id, ws, expire_in_days
        As given (``id`` as used), and the :class:`Workspace` of the tools.

    Unlike 0.4.0, a workspace that existed before (an explicit id already allocated) is
    used but never released here, and a failed allocation raises
    :class:`~taurus_tools.WorkspaceError` instead of an ``AssertionError``.
    """

    def __init__(
        self,
        path_to_exe: Union[str, "os.PathLike[str]"] = DEFAULT_WORKSPACE_PATH,
        id: str = _DEFAULT_ID,
        expire_in_days: int = 1,
    ) -> None:
        self.ws = Workspace(path_to_exe=path_to_exe)
        self.expire_in_days = expire_in_days
        #: The taurus-tools CacheWorkspace doing the work.
        self.cache = _workspace.CacheWorkspace(
            None if id is _DEFAULT_ID else id, days=expire_in_days, workspace=self.ws.workspace
        )
        self.id = self.cache.id

    @property
    def name(self) -> Optional[str]:
        return str(self.cache.path) if self.cache.allocated else None

    def cleanup(self) -> None:
        """Release the workspace (its data stays restorable for a while); safe to call twice."""
        self.cache.cleanup()

    def __enter__(self) -> "CacheWorkspace":
        self.cache.allocate()
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self.cache.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<taurus_tools.compat.CacheWorkspace {self.id!r} {self.name or 'released'}>"


def _args_of(process: Any) -> str:
    return " ".join(str(a) for a in (getattr(process, "args", None) or []))


def _piped(process: Any) -> bool:
    return not isinstance(process, Handle) and (process.stdout is not None or process.stderr is not None)


def _wait_a_while(process: Any, seconds: float) -> int:
    """Wait up to ``seconds`` for the process to end (TimeoutExpired if it did not).

    A plain Popen's pipes are drained meanwhile, so a chatty command cannot block on a full
    pipe (Popen keeps what it read for the next ``communicate()``).  The end is the
    process's exit, not the pipes' end: a child left in the background may hold them.
    """
    if _piped(process):
        if process.poll() is None:
            try:
                process.communicate(timeout=seconds)
            except subprocess.TimeoutExpired:
                if process.poll() is None:
                    raise
        return int(process.returncode)
    return int(process.wait(seconds))


def _output_of(process: Any) -> Any:
    """(stdout, stderr) without hanging on pipes a background child still holds."""
    if not _piped(process):
        return process.communicate()
    try:
        return process.communicate(timeout=_PIPE_GRACE_S)
    except subprocess.TimeoutExpired:
        note = b"(not read: a process it started still holds its output pipes)"
        return note, note


def _stop(process: Any) -> int:
    """End ``process`` for good: the process tree, and the Slurm job of one of ours."""
    if isinstance(process, Handle):
        rc = process.cancel()
        return -15 if rc is None else rc  # (compat handles have no after=: never None here)
    terminate_tree(process.pid)
    return int(process.wait())


def waitfor(
    process: Any, timeout_in_s: float = -1, discard_output: bool = True, quiet: bool = True
) -> int:
    """Wait for a command to end and return its exit code, as 0.4.0's ``waitfor``.

    Parameters
    ----------
    process : Handle or subprocess.Popen
        What a method of :class:`Datamover`/:class:`Workspace` returned, or any Popen.
    timeout_in_s : float
        Seconds to wait; ``-1`` (or 0) waits as long as it takes.  When it runs out, the
        process tree and its Slurm job are cancelled, a warning is issued and the (then
        non-zero) exit code is returned.
    discard_output : bool
        Read the output at the end (and quote it in the warning if the command failed).
        It stays available: ``communicate()`` afterwards still returns it.
    quiet : bool
        Without it, print ``Waiting .`` and a dot every half second.

    Returns
    -------
    int
        The exit code; negative when a signal ended the command.  Any non-zero code comes
        with a warning (0.4.0 warned only for positive codes).
    """
    _guide()
    start = time.monotonic()
    limit = timeout_in_s if timeout_in_s is not None and timeout_in_s > 0 else None
    if not quiet:
        print("Waiting .", end="", flush=True)
    while True:
        step = 0.5 if limit is None else max(0.0, min(0.5, start + limit - time.monotonic()))
        try:
            code = _wait_a_while(process, step)
            break
        except subprocess.TimeoutExpired:
            pass
        if not quiet:
            print(".", end="", flush=True)
        if limit is not None and time.monotonic() - start >= limit:
            if not quiet:
                print()
            warnings.warn(f"Timeout while waiting for process: {_args_of(process)}", stacklevel=2)
            return _stop(process)
    if not quiet:
        print()
    if discard_output:
        out, err = _output_of(process)
        text = {name: (data or b"").strip() for name, data in (("out", out), ("err", err))}
        decoded = {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v for k, v in text.items()}
        message = f"process: {_args_of(process)}\nexited with error: {decoded['err']}\nand output: {decoded['out']}"
    else:
        message = f"process: {_args_of(process)}\nexited with error."
    if code != 0:
        warnings.warn(message + ("" if code > 0 else f"\n(exit code {code}: ended by a signal)"), stacklevel=2)
    return code


def save_to_project(
    save_fn: Callable[..., Any],
    file_path: str,
    *args: Any,
    file_path_arg_pos: int = 0,
    cache_workspace: Optional[CacheWorkspace] = None,
    path_to_datamover: str = DEFAULT_DATAMOVER_PATH,
    path_to_workspace_tools: str = DEFAULT_WORKSPACE_PATH,
    quiet: bool = False,
    **kw: Any,
) -> Any:
    """Save with ``save_fn`` to ``file_path``, through the datamover if that folder is read-only.

    ``save_fn`` gets the path to write at position ``file_path_arg_pos`` among ``args``,
    and ``kw``.  A writable folder is written directly; otherwise ``save_fn`` writes in a
    cache workspace (``cache_workspace``, else a new one, released afterwards) and
    ``dtcp`` copies the result over, verified by size (:func:`taurus_tools.stage_out`).

    Returns
    -------
    What ``save_fn`` returned.

    Raises
    ------
    StageError
        The copy failed or did not verify (0.4.0 only warned); the staged file is kept and
        the error says where.
    """
    _guide()
    target = Path(os.fspath(file_path).replace("\\", "/"))

    def save(path: Path) -> Any:
        return save_fn(*args[:file_path_arg_pos], str(path), *args[file_path_arg_pos:], **kw)

    if os.access(target.parent, os.W_OK):
        return save(target)
    dm = Datamover(path_to_exe=path_to_datamover)
    if cache_workspace is not None:
        staging: Dict[str, Any] = {"cache": cache_workspace.cache, "workspace": cache_workspace.ws.workspace}
    else:
        staging = {"workspace": Workspace(path_to_exe=path_to_workspace_tools).workspace}
    with stage_out(target, datamover=dm.datamover, progress=not quiet, **staging) as staged:
        output = save(staged)
    if not quiet:
        print(f"target file: {target}")
    return output
