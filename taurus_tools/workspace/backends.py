"""Workspace backends: which ``ws_*`` tools run, and how.

Two small classes fill one interface (:class:`WorkspaceBackend`), as the datamover's
backends do (:mod:`taurus_tools.datamover.backends`):

* :class:`SiteWorkspaceBackend` runs hpc-workspace's real executables;
* :class:`LocalWorkspaceBackend` runs taurus-tools' own implementation
  (:mod:`taurus_tools.workspace.local_tools`) as ``python -m taurus_tools.workspace.local_tools TOOL ...``, which
  prints what hpc-workspace version 1 prints.

:func:`select_workspace_backend` picks one: the site's tools where they are found, else
the local implementation, and says why.  The tools are found by the same helper as the
datamover's (:func:`~taurus_tools.datamover.backends.find_tools`).  Backends only *describe* how a
tool runs (argv and environment); :class:`~taurus_tools.workspace.workspace.Workspace` runs it.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..datamover.backends import StrPath, find_tools
from ..errors import BackendUnavailableError, CommandNotFoundError, ConfigurationError
from .._log import get_logger
from .._names import WS_BACKENDS

log = get_logger(__name__)

__all__ = [
    "WorkspaceBackend",
    "SiteWorkspaceBackend",
    "LocalWorkspaceBackend",
    "select_workspace_backend",
    "find_ws_tools",
    "WS_TOOLS",
    "ROOT_ENV",
]

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
#: Where hpc-workspace installs its tools when they are not on PATH.
SYSTEM_WS_DIR = "/usr/bin"


class WorkspaceBackend(ABC):
    """Which ``ws_*`` tools run, and how.

    Subclass it to run the tools some other way (in a container, over ssh, ...) and pass
    an instance as ``Workspace(backend=...)``.

    Attributes
    ----------
    name : str
        ``"site"`` or ``"local"`` for the built-in backends.
    reason : str
        Why this backend was chosen (logged, and shown by ``Workspace.reason``).
    root : Path or None
        Where this backend keeps workspaces itself; None where the site's tools decide.
    """

    name: str = ""
    root: Optional[Path] = None

    def __init__(self, reason: str = "") -> None:
        self.reason = reason

    @abstractmethod
    def tools(self) -> Tuple[str, ...]:
        """The ``ws_*`` tools this backend can run, in the order of :data:`WS_TOOLS`."""

    @abstractmethod
    def argv(self, tool: str, args: Sequence[str]) -> List[str]:
        """The argv that runs ``tool args...``.

        Raises
        ------
        CommandNotFoundError
            ``tool`` is not one this backend can run.
        """

    def env(self) -> Optional[Dict[str, str]]:
        """The environment the tools run in; None (the default): this process's."""
        return None

    def is_cluster(self) -> bool:
        """Whether the workspaces are a cluster's (True by default)."""
        return True

    def _unknown(self, tool: str, detail: str) -> CommandNotFoundError:
        return CommandNotFoundError(tool, self.tools(), detail)

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})" if self.reason else self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} reason={self.reason!r}>"


class SiteWorkspaceBackend(WorkspaceBackend):
    """hpc-workspace's own ``ws_*`` executables.

    Parameters
    ----------
    executables : mapping of str to str
        Tool name -> path, as :func:`find_ws_tools` returns them.
    reason : str
        Why this backend was chosen.
    """

    name = "site"

    def __init__(self, executables: Mapping[str, str], *, reason: str = "") -> None:
        super().__init__(reason)
        self.executables = dict(executables)

    def tools(self) -> Tuple[str, ...]:
        return tuple(t for t in WS_TOOLS if t in self.executables)

    def argv(self, tool: str, args: Sequence[str]) -> List[str]:
        exe = self.executables.get(tool)
        if exe is None:
            raise self._unknown(tool, "not installed here")
        return [exe, *args]


class LocalWorkspaceBackend(WorkspaceBackend):
    """taurus-tools' own ``ws_*`` tools, keeping workspaces in a folder of this machine.

    Parameters
    ----------
    root : path-like, optional
        Where workspaces live; default ``$TAURUS_TOOLS_WS_ROOT``, else a per-user folder
        in the system's temporary directory.  Filesystems (spaces) are configured in
        ``ROOT/ws.json``.
    reason : str
        Why this backend was chosen.
    env : mapping, optional
        The environment to run the tools in (default: this process's), with ``root`` added.
    """

    name = "local"

    def __init__(
        self, root: Optional[StrPath] = None, *, reason: str = "", env: Optional[Mapping[str, str]] = None
    ) -> None:
        super().__init__(reason)
        if root is None:
            from .local_tools import default_root

            self.root = default_root()
        else:
            self.root = Path(root)
        self._env = {**(os.environ if env is None else env), ROOT_ENV: str(self.root)}

    def tools(self) -> Tuple[str, ...]:
        return WS_TOOLS

    def argv(self, tool: str, args: Sequence[str]) -> List[str]:
        if tool not in WS_TOOLS:
            raise self._unknown(tool, "not a workspace tool")
        return [sys.executable, "-m", "taurus_tools.workspace.local_tools", tool, *args]

    def env(self) -> Optional[Dict[str, str]]:
        return dict(self._env)

    def is_cluster(self) -> bool:
        """False: the workspaces are folders of this machine."""
        return False


def find_ws_tools(
    tools_dir: Optional[StrPath] = None, env: Optional[Mapping[str, str]] = None
) -> Tuple[Dict[str, str], List[str]]:
    """Find the site's ``ws_*`` tools.

    Looks in ``tools_dir`` (which, when given, must hold ``ws_allocate``), else on ``PATH``,
    then in ``/usr/bin``.  Returns the tools found (name -> path) and the places searched.
    """
    if tools_dir is not None:
        places: List[Tuple[Optional[StrPath], str, bool]] = [(tools_dir, "tools_dir", True)]
    else:
        places = [(None, "PATH", False), (SYSTEM_WS_DIR, SYSTEM_WS_DIR, False)]
    return find_tools(
        WS_TOOLS, places, enough=lambda tools: "ws_allocate" in tools, lacking="no ws_allocate", env=env
    )


def select_workspace_backend(
    backend: str = "auto",
    *,
    tools_dir: Optional[StrPath] = None,
    root: Optional[StrPath] = None,
    env: Optional[Mapping[str, str]] = None,
) -> WorkspaceBackend:
    """Build the workspace backend asked for; ``"auto"`` tries site, then local.

    Parameters
    ----------
    backend : {"auto", "site", "local"}
        ``"auto"`` uses the site's tools when ``ws_allocate`` is found (see
        :func:`find_ws_tools`), else the local implementation.
    tools_dir : path-like, optional
        Folder with the site's ``ws_*`` tools.
    root : path-like, optional
        Where the local backend keeps workspaces (see :class:`LocalWorkspaceBackend`).
    env : mapping, optional
        The environment whose ``PATH`` is searched and in which local tools run
        (default: this process's).

    Raises
    ------
    ConfigurationError
        An unknown backend name, a ``tools_dir`` without ``ws_allocate``, or ``root`` when
        the site's tools were chosen.
    BackendUnavailableError
        ``"site"`` asked for and no ``ws_allocate`` found.
    """
    if backend not in WS_BACKENDS:
        raise ConfigurationError(f"backend={backend!r} is not one of: {', '.join(WS_BACKENDS)}")
    chosen: WorkspaceBackend
    if backend == "local":
        why = "asked for"
    else:
        tools, searched = find_ws_tools(tools_dir, env)
        where = ", ".join(searched)
        if tools:
            if root is not None:
                raise ConfigurationError("root= applies to the local backend only")
            folders = sorted({os.path.dirname(p) for p in tools.values()})
            reason = f"found ws_* tools in {', '.join(folders)}: {', '.join(sorted(tools))}"
            chosen = SiteWorkspaceBackend(tools, reason=reason)
            log.info("workspace backend: %s", chosen)
            return chosen
        if backend == "site":
            raise BackendUnavailableError(f"no ws_allocate found; searched {where}")
        why = f"no ws_* tools found (searched {where});"
    chosen = LocalWorkspaceBackend(root, env=env)
    chosen.reason = f"{why} local workspaces under {chosen.root}"
    log.info("workspace backend: %s", chosen)
    return chosen
