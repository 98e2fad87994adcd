"""taurus-tools: move data on HPC clusters from Python and the shell.

The datamover commands (``dtcp``, ``dtls``, ...), ``rclone`` and ``srun`` as methods of
:class:`Datamover` that return a running, Popen-compatible :class:`Handle` at once, and
:func:`waitfor` to wait for one or many of them.  Works with a site's real ``dt*`` tools,
on any Slurm cluster without them, and on a machine with no Slurm at all.
"""

import logging

from ._backends import Backend, LocalBackend, SiteBackend, SlurmBackend, select_backend
from ._datamover import COMMANDS, Datamover
from ._errors import (
    BackendUnavailableError,
    CommandError,
    CommandNotFoundError,
    CommandTimeoutError,
    ConfigurationError,
    CopyCancelledError,
    InsufficientSpaceError,
    PathNotWritableError,
    SlurmError,
    SourceNotFoundError,
    StageError,
    TaurusToolsError,
    UnknownCommandError,
    WorkspaceError,
)
from ._parallel_copy import CopyConfig, CopyResult, ParallelCopy
from ._process import Handle, Launch
from ._version import __version__
from ._staging import stage_in, stage_out
from ._wait import waitfor
from ._workspace import CacheWorkspace, Workspace
from ._ws_format import WorkspaceInfo, parse_filesystems, parse_ws_list

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "CacheWorkspace",
    "COMMANDS",
    "CommandError",
    "CommandNotFoundError",
    "CommandTimeoutError",
    "ConfigurationError",
    "CopyCancelledError",
    "CopyConfig",
    "CopyResult",
    "InsufficientSpaceError",
    "PathNotWritableError",
    "ParallelCopy",
    "SourceNotFoundError",
    "Datamover",
    "Handle",
    "Launch",
    "LocalBackend",
    "SiteBackend",
    "SlurmBackend",
    "SlurmError",
    "StageError",
    "TaurusToolsError",
    "UnknownCommandError",
    "Workspace",
    "WorkspaceError",
    "WorkspaceInfo",
    "__version__",
    "parse_filesystems",
    "parse_ws_list",
    "select_backend",
    "stage_in",
    "stage_out",
    "waitfor",
]
