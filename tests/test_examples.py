"""Every script in examples/ runs, on each backend it can use, so the examples never rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, env: dict) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, f"{name} failed:\n{res.stdout}\n{res.stderr}"
    return res


def local_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TAURUS_TOOLS_"))}
    env["TAURUS_TOOLS_BACKEND"] = "local"
    return env


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == ["slurm_jobs.py", "tour.py"]


def test_tour_local():
    res = run_example("tour.py", local_env())
    assert "backend: local" in res.stdout
    assert "tour finished" in res.stdout


@pytest.mark.parametrize("backend", ["slurm", "site"])
def test_tour_on_slurm(slurm_cluster, site_tools_dir, backend):
    env = dict(os.environ)
    env["TAURUS_TOOLS_BACKEND"] = backend
    if backend == "site":
        env["TAURUS_TOOLS_DT_DIR"] = str(site_tools_dir)
    res = run_example("tour.py", env)
    assert f"backend: {backend}" in res.stdout
    assert "tour finished" in res.stdout


def test_slurm_jobs(slurm_cluster):
    res = run_example("slurm_jobs.py", dict(os.environ))
    assert "exit codes: [0, 0, 0, 0]" in res.stdout
    assert "srun ran on:" in res.stdout
