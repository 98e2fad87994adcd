"""taurus-tools: move data on HPC clusters from Python and the shell.

The datamover commands (``dtcp``, ``dtls``, ...), ``rclone`` and ``srun`` as methods of
:class:`Datamover` that return a running, Popen-compatible :class:`Handle` at once, and
:func:`waitfor` to wait for one or many of them.  Works with a site's real ``dt*`` tools,
on any Slurm cluster without them, and on a machine with no Slurm at all.
"""

import importlib

from ._version import __version__

# Not typing.TYPE_CHECKING: importing typing costs a few ms of every start; type checkers
# read any constant of this name as True.
TYPE_CHECKING = False
if TYPE_CHECKING:  # what the names below are, for type checkers and editors
    from ._backends import Backend, LocalBackend, SiteBackend, SlurmBackend, select_backend
    from ._datamover import COMMANDS, Datamover
    from ._errors import (
        BackendUnavailableError,
        CommandCancelledError,
        CommandError,
        CommandNotFoundError,
        CommandTimeoutError,
        ConfigurationError,
        CopyCancelledError,
        CopyError,
        DependencyError,
        InsufficientSpaceError,
        PathNotWritableError,
        SlurmError,
        SourceNotFoundError,
        StageError,
        TaurusToolsError,
        UnknownCommandError,
        WorkspaceError,
    )
    from ._callbacks import NoProgress, ProgressCallback, TqdmProgress
    from ._copy_config import CopyConfig
    from ._futures import BackgroundFuture
    from ._parallel_copy import CopyResult, ParallelCopy
    from ._launch import Launch
    from ._process import Handle
    from ._slurm_options import SlurmOptions
    from ._staging import stage_in, stage_out
    from ._wait import waitfor
    from ._workspace import CacheWorkspace, Workspace
    from ._ws_backends import LocalWorkspaceBackend, SiteWorkspaceBackend, WorkspaceBackend, select_workspace_backend
    from ._ws_format import WorkspaceInfo, parse_filesystems, parse_ws_list

#: Where each public name lives; a module is imported when one of its names is first used,
#: so that importing taurus_tools (and running ``taurus-tools --version``) stays cheap.
_HOMES = {
    **dict.fromkeys(("Backend", "LocalBackend", "SiteBackend", "SlurmBackend", "select_backend"), "_backends"),
    **dict.fromkeys(("COMMANDS", "Datamover"), "_datamover"),
    **dict.fromkeys(
        (
            "BackendUnavailableError",
            "CommandCancelledError",
            "CommandError",
            "CommandNotFoundError",
            "CommandTimeoutError",
            "ConfigurationError",
            "CopyCancelledError",
            "CopyError",
            "DependencyError",
            "InsufficientSpaceError",
            "PathNotWritableError",
            "SlurmError",
            "SourceNotFoundError",
            "StageError",
            "TaurusToolsError",
            "UnknownCommandError",
            "WorkspaceError",
        ),
        "_errors",
    ),
    "BackgroundFuture": "_futures",
    **dict.fromkeys(("NoProgress", "ProgressCallback", "TqdmProgress"), "_callbacks"),
    "CopyConfig": "_copy_config",
    **dict.fromkeys(("CopyResult", "ParallelCopy"), "_parallel_copy"),
    "Handle": "_process",
    "Launch": "_launch",
    "SlurmOptions": "_slurm_options",
    **dict.fromkeys(("stage_in", "stage_out"), "_staging"),
    "waitfor": "_wait",
    **dict.fromkeys(("CacheWorkspace", "Workspace"), "_workspace"),
    **dict.fromkeys(
        ("LocalWorkspaceBackend", "SiteWorkspaceBackend", "WorkspaceBackend", "select_workspace_backend"),
        "_ws_backends",
    ),
    **dict.fromkeys(("WorkspaceInfo", "parse_filesystems", "parse_ws_list"), "_ws_format"),
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> "list[str]":
    return sorted({*globals(), *_HOMES})


__all__ = [
    "BackgroundFuture",
    "Backend",
    "BackendUnavailableError",
    "CacheWorkspace",
    "COMMANDS",
    "CommandCancelledError",
    "CommandError",
    "CommandNotFoundError",
    "CommandTimeoutError",
    "ConfigurationError",
    "CopyCancelledError",
    "CopyConfig",
    "CopyError",
    "CopyResult",
    "InsufficientSpaceError",
    "PathNotWritableError",
    "ParallelCopy",
    "SourceNotFoundError",
    "Datamover",
    "DependencyError",
    "Handle",
    "Launch",
    "LocalBackend",
    "LocalWorkspaceBackend",
    "NoProgress",
    "ProgressCallback",
    "SiteBackend",
    "SiteWorkspaceBackend",
    "SlurmBackend",
    "SlurmError",
    "SlurmOptions",
    "StageError",
    "TaurusToolsError",
    "TqdmProgress",
    "UnknownCommandError",
    "Workspace",
    "WorkspaceBackend",
    "WorkspaceError",
    "WorkspaceInfo",
    "__version__",
    "parse_filesystems",
    "parse_ws_list",
    "select_backend",
    "select_workspace_backend",
    "stage_in",
    "stage_out",
    "waitfor",
]
