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
    from .datamover.backends import Backend, LocalBackend, SiteBackend, SlurmBackend, select_backend
    from .datamover.datamover import COMMANDS, Datamover
    from .errors import (
        BackendUnavailableError,
        CheckpointError,
        CommandCancelledError,
        CommandError,
        CommandNotFoundError,
        CommandTimeoutError,
        ConfigurationError,
        CopyCancelledError,
        CopyError,
        DependencyError,
        DestinationUnreachableError,
        InsufficientSpaceError,
        PathNotWritableError,
        SlurmError,
        S3Error,
        SourceNotFoundError,
        StageError,
        TaurusToolsError,
        UnknownCommandError,
        WorkspaceError,
    )
    from .callbacks import MilestoneProgress, NoProgress, NotebookLine, ProgressCallback, TqdmProgress
    from .transfer.config import CopyConfig
    from .futures import BackgroundFuture
    from .policy import ExitPolicy
    from .checkpoint.checkpoint import Checkpoint
    from .transfer.parallel_copy import CopyResult, ParallelCopy
    from .process.launch import Launch
    from .process.handle import Handle
    from .slurm.options import SlurmOptions
    from .transfer.staging import stage_in, stage_out
    from .datamover.wait import waitfor
    from .workspace.workspace import CacheWorkspace, Workspace
    from .workspace.backends import (
        LocalWorkspaceBackend,
        SiteWorkspaceBackend,
        WorkspaceBackend,
        select_workspace_backend,
    )
    from .workspace.format import WorkspaceInfo, parse_filesystems, parse_ws_list

#: Where each public name lives; a module is imported when one of its names is first used,
#: so that importing taurus_tools (and running ``taurus-tools --version``) stays cheap.
_HOMES = {
    **dict.fromkeys(("Backend", "LocalBackend", "SiteBackend", "SlurmBackend", "select_backend"), "datamover.backends"),
    **dict.fromkeys(("COMMANDS", "Datamover"), "datamover.datamover"),
    **dict.fromkeys(
        (
            "BackendUnavailableError",
            "CheckpointError",
            "CommandCancelledError",
            "CommandError",
            "CommandNotFoundError",
            "CommandTimeoutError",
            "ConfigurationError",
            "CopyCancelledError",
            "CopyError",
            "DependencyError",
            "DestinationUnreachableError",
            "InsufficientSpaceError",
            "PathNotWritableError",
            "SlurmError",
            "S3Error",
            "SourceNotFoundError",
            "StageError",
            "TaurusToolsError",
            "UnknownCommandError",
            "WorkspaceError",
        ),
        "errors",
    ),
    "BackgroundFuture": "futures",
    "ExitPolicy": "policy",
    "Checkpoint": "checkpoint.checkpoint",
    **dict.fromkeys(
        ("MilestoneProgress", "NoProgress", "NotebookLine", "ProgressCallback", "TqdmProgress"), "callbacks"
    ),
    "CopyConfig": "transfer.config",
    **dict.fromkeys(("CopyResult", "ParallelCopy"), "transfer.parallel_copy"),
    "Handle": "process.handle",
    "Launch": "process.launch",
    "SlurmOptions": "slurm.options",
    **dict.fromkeys(("stage_in", "stage_out"), "transfer.staging"),
    "waitfor": "datamover.wait",
    **dict.fromkeys(("CacheWorkspace", "Workspace"), "workspace.workspace"),
    **dict.fromkeys(
        ("LocalWorkspaceBackend", "SiteWorkspaceBackend", "WorkspaceBackend", "select_workspace_backend"),
        "workspace.backends",
    ),
    **dict.fromkeys(("WorkspaceInfo", "parse_filesystems", "parse_ws_list"), "workspace.format"),
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
    "Checkpoint",
    "CheckpointError",
    "DestinationUnreachableError",
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
    "S3Error",
    "SourceNotFoundError",
    "Datamover",
    "DependencyError",
    "ExitPolicy",
    "Handle",
    "Launch",
    "LocalBackend",
    "LocalWorkspaceBackend",
    "MilestoneProgress",
    "NoProgress",
    "NotebookLine",
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
