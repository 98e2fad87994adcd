"""The names of the datamover commands and backends, with nothing else to import.

The command line builds its parser from these; importing them must not load the machinery
(``psutil``, Slurm, threads), so that ``taurus-tools --version`` and ``--help`` start fast.
"""

from typing import Dict, Tuple

#: Transfer commands and the Linux tool each one runs.
TRANSFER_COMMANDS: Dict[str, str] = {
    "dtcp": "cp",
    "dtmv": "mv",
    "dtrm": "rm",
    "dtls": "ls",
    "dtrsync": "rsync",
    "dttar": "tar",
    "dtwget": "wget",
}
#: Commands that manage transfer jobs rather than move data.
MANAGEMENT_COMMANDS: Tuple[str, ...] = ("dtinfo", "dtqueue", "dtcancel")
#: Every command a backend may offer.
COMMANDS: Tuple[str, ...] = (*TRANSFER_COMMANDS, *MANAGEMENT_COMMANDS)
#: What ``backend=`` accepts.
BACKENDS: Tuple[str, ...] = ("auto", "site", "slurm", "local")
#: What ``Workspace(backend=)`` and ``taurus-tools ws --ws-backend`` accept.
WS_BACKENDS: Tuple[str, ...] = ("auto", "site", "local")
