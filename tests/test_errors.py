"""The exception hierarchy: messages, builtin bases, pickling."""

from __future__ import annotations

import pickle
import subprocess

import pytest


import taurus_tools
from taurus_tools import (
    BackendUnavailableError,
    CheckpointError,
    CommandError,
    CommandNotFoundError,
    CommandTimeoutError,
    ConfigurationError,
    DestinationUnreachableError,
    SlurmError,
    TaurusToolsError,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_slurm_env")]


# =============================================================================== errors
def _error_samples():
    return [
        (TaurusToolsError("base"), Exception, ()),
        (ConfigurationError("bad value"), ValueError, ()),
        (BackendUnavailableError("no tools"), RuntimeError, ()),
        (SlurmError("sinfo failed"), RuntimeError, ()),
        (
            CommandNotFoundError("dtx", ["dtcp", "dtls"], "detail"),
            FileNotFoundError,
            ("command", "available", "detail"),
        ),
        (
            CommandError(3, ["cp", "a b", "c"], "out", "err line\n", job_id="77"),
            subprocess.CalledProcessError,
            ("returncode", "cmd", "output", "stderr", "job_id"),
        ),
        (CommandTimeoutError([["sleep", "60"], ["ls"]], 2.5), TimeoutError, ("commands", "timeout")),
        (DestinationUnreachableError("s3://b/p: the endpoint cannot be reached"), ConnectionError, ()),
        (CheckpointError("final pass", {"a.bin": "why"}), RuntimeError, ("not_saved",)),
    ]


class TestErrors:
    @pytest.mark.parametrize("exc, builtin, attrs", _error_samples(), ids=lambda v: type(v).__name__)
    def test_hierarchy_and_pickle(self, exc, builtin, attrs):
        assert isinstance(exc, TaurusToolsError)
        assert isinstance(exc, builtin)
        clone = pickle.loads(pickle.dumps(exc))
        assert type(clone) is type(exc)
        assert str(clone) == str(exc)
        for attr in attrs:
            assert getattr(clone, attr) == getattr(exc, attr), attr

    def test_exported_from_package(self):
        for exc, _, _ in _error_samples():
            assert getattr(taurus_tools, type(exc).__name__) is type(exc)

    def test_command_error_message(self):
        stderr = "".join(f"line {i}\n" for i in range(1, 31))
        exc = CommandError(3, ["cp", "-r", "a b", "c"], stderr=stderr, job_id="99")
        msg = str(exc)
        assert "cp -r 'a b' c" in msg
        assert "exited with code 3" in msg
        assert "Slurm job 99" in msg
        assert "line 30" in msg and "line 11" in msg
        assert "line 10\n" not in msg  # only the tail
        assert exc.returncode == 3 and exc.cmd == ["cp", "-r", "a b", "c"]

    def test_command_error_signal(self):
        msg = str(CommandError(-9, ["sleep", "60"]))
        assert "killed by signal 9" in msg and "sleep 60" in msg

    def test_timeout_error_message(self):
        msg = str(CommandTimeoutError([["sleep", "60"]], 1.5))
        assert "1.5 s" in msg and "sleep 60" in msg

    def test_not_found_message(self):
        exc = CommandNotFoundError("dtx", ["dtcp"])
        assert "'dtx'" in str(exc) and "available commands: dtcp" in str(exc)
        assert "none" in str(CommandNotFoundError("dtx"))
