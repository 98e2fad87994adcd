"""The ``taurus-tools`` command as a user runs it, on every backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "taurus_tools", *args],
        env=env,
        capture_output=True,
        timeout=timeout,
    )


def backend_env(name: str, request) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAURUS_TOOLS_")}
    if name == "local":
        env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
        env["TAURUS_TOOLS_BACKEND"] = "local"
        return env
    request.getfixturevalue("slurm_cluster")
    env.update({k: v for k, v in os.environ.items() if k.startswith("SLURM_")})
    env["TAURUS_TOOLS_BACKEND"] = name
    if name == "site":
        env["TAURUS_TOOLS_DT_DIR"] = str(request.getfixturevalue("site_tools_dir"))
    return env


@pytest.fixture(params=["local", "slurm", "site"])
def env(request):
    return backend_env(request.param, request)


def test_copy_and_exit_codes(env, tmp_path: Path):
    src = tmp_path / "src dir"
    src.mkdir()
    (src / "-odd 'name'\n.txt").write_bytes(b"\x00\x01data")
    res = cli("dtcp", "-r", str(src), str(tmp_path / "dst"), env=env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "dst" / "-odd 'name'\n.txt").read_bytes() == b"\x00\x01data"
    res = cli("-q", "dtls", str(tmp_path / "missing"), env=env)
    assert res.returncode == 2
    assert b"cannot access" in res.stderr
    assert b"Inappropriate ioctl" not in res.stderr


def test_info_json(env):
    res = cli("info", "--json", env=env)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["backend"] == env["TAURUS_TOOLS_BACKEND"]
    assert data["reason"]
    assert data["slurm"]["available"] == (env["TAURUS_TOOLS_BACKEND"] != "local")
    if data["slurm"]["available"]:
        assert "datamover" in data["slurm"]["partitions"]


def test_timeout_exit_code(env, tmp_path: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    res = cli("--timeout", "2", "dtcp", str(fifo), str(tmp_path / "x"), env=env)
    assert res.returncode == 124
    assert b"timed out" in res.stderr


def test_version_and_usage_errors(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TAURUS_"))}
    res = cli("--version", env=env)
    assert res.returncode == 0 and res.stdout.startswith(b"taurus-tools ")
    res = cli("--backend", "local", "dtinfo", env=env)
    assert res.returncode == 2 and b"available commands: dtcp" in res.stderr
    res = cli("--time", "soon", "--backend", "local", "dtls", env=env)
    assert res.returncode == 2 and b"not a Slurm time limit" in res.stderr
