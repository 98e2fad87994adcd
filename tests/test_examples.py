"""Every script in examples/ runs, on each backend it can use, so the examples never rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import wait_for

from taurus_tools import Workspace

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, env: dict, *args: str, returncode: int = 0) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == returncode, f"{name} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res


def wait_jobs_gone(cluster, before: set) -> None:
    """Wait until no job but those of ``before`` is in squeue.

    A job stays in squeue (COMPLETING) for a moment after its last process ended, so
    right after an example has finished its jobs may still be listed.
    """
    wait_for(
        cluster.squeue_ids,
        lambda ids: set(ids) <= before,
        timeout=60,
        interval=0.2,
        what=f"the example's jobs to leave squeue (jobs from before: {sorted(before)})",
    )


def local_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TAURUS_TOOLS_"))}
    env["TAURUS_TOOLS_BACKEND"] = "local"
    return env


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == [
        "cache_workspace.py",
        "parallel_copy.py",
        "parallel_copy_slurm.py",
        "pipeline.py",
        "slurm_jobs.py",
        "stage_out.py",
        "tour.py",
    ]


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


def with_ws_root(env: dict, root: Path) -> dict:
    env = dict(env)
    env["TAURUS_TOOLS_WS_ROOT"] = str(root)
    return env


def test_cache_workspace_local(tmp_path):
    root = tmp_path / "ws"
    res = run_example("cache_workspace.py", with_ws_root(local_env(), root))
    assert "workspace backend: local" in res.stdout
    assert f"temporary files in: {root}" in res.stdout
    assert "mean of 40000 values: 10.0" in res.stdout
    assert "is no longer listed" in res.stdout
    assert "cache workspace example finished" in res.stdout
    ws = Workspace("local", root=root)
    assert ws.list() == []
    assert len(ws.released()) == 2  # both caches it made, and nothing else


def check_stage_out(res: subprocess.CompletedProcess, root: Path) -> None:
    assert f"writing to: {root}" in res.stdout
    arrived = "arrived: ['plots', 'plots/fig.svg', 'table 0.csv', 'table 1.csv', 'table 2.csv']"
    assert arrived in res.stdout
    assert "block raised: the analysis failed" in res.stdout
    assert f"copy failed; data kept at: {root}" in res.stdout
    assert "rows read: 300" in res.stdout
    assert "stage_out finished" in res.stdout
    ws = Workspace("local", root=root)
    assert ws.list() == []  # every cache workspace was released, the failed one by hand
    assert len(ws.released()) == 5


def test_stage_out_local(tmp_path):
    root = tmp_path / "ws"
    res = run_example("stage_out.py", with_ws_root(local_env(), root))
    assert "backend: local" in res.stdout
    check_stage_out(res, root)


def test_stage_out_slurm(slurm_cluster, tmp_path):
    root = tmp_path / "ws"
    env = with_ws_root(dict(os.environ), root)
    env["TAURUS_TOOLS_BACKEND"] = "slurm"
    res = run_example("stage_out.py", env)
    assert "backend: slurm" in res.stdout
    check_stage_out(res, root)


def check_parallel_copy(res: subprocess.CompletedProcess, backend: str) -> None:
    assert f"backend: {backend}" in res.stdout
    assert "copying ... " in res.stdout  # polled done() while the copy ran in the background
    assert "ok: 206 files" in res.stdout and ", 0 failed, of 206 planned" in res.stdout, res.stdout
    assert "report: " in res.stdout and "result_all.json" in res.stdout
    assert "identical: yes" in res.stdout
    assert "parallel copy example finished" in res.stdout
    assert "Traceback" not in res.stderr


def test_parallel_copy_local():
    res = run_example("parallel_copy.py", local_env())
    check_parallel_copy(res, "local")


def test_parallel_copy_on_slurm(slurm_cluster):
    env = dict(os.environ)
    env["TAURUS_TOOLS_BACKEND"] = "slurm"
    before = set(slurm_cluster.squeue_ids())
    res = run_example("parallel_copy.py", env)
    check_parallel_copy(res, "slurm")
    assert "jobs go to partition datamover" in res.stdout
    wait_jobs_gone(slurm_cluster, before)  # srun jobs end with their shards


def test_parallel_copy_slurm(slurm_cluster):
    before = set(slurm_cluster.squeue_ids())
    res = run_example("parallel_copy_slurm.py", dict(os.environ))
    assert "backend: slurm" in res.stdout and "jobs go to partition datamover" in res.stdout
    assert "ok: 168 files" in res.stdout and ", 0 failed, of 168 planned" in res.stdout, res.stdout
    rows = [line.split() for line in res.stdout.splitlines()]
    rows = [r for r in rows if r and r[0].isdigit()]  # the per-shard table
    assert [int(r[0]) for r in rows] == list(range(1, 17)), res.stdout
    assert all(r[-1] == "0" for r in rows)  # every shard job exited 0
    assert sum(int(r[1]) for r in rows) == 168
    assert sum(int(r[2]) for r in rows) == sum((i + 1) << 20 for i in range(8)) + sum(
        len(f"node {j} step {k}\n") * (k + 1) for j in range(4) for k in range(40)
    )
    assert "shard jobs: 16, at most 8 at once" in res.stdout
    assert "parallel copy through Slurm finished" in res.stdout
    wait_jobs_gone(slurm_cluster, before)


def check_pipeline(res: subprocess.CompletedProcess, root: Path, failing: bool) -> None:
    out = res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    # every later step was started at once, pending on the earlier ones
    assert "steps started: <Handle python" in out and " waiting>" in out, out
    assert "stage in: ok" in out and "clean up: ok" in out, out
    if failing:
        assert "process: CommandError" in out and "stage out: DependencyError" in out, out
        # (on Slurm, srun's own "task 0: Exited with exit code 1" line comes first)
        assert "processing stderr: " in out and "analysis: cannot parse sample 2.txt" in out
        assert "stage out not run; root cause: CommandError, exit code 1" in out
        assert "results exist: False" in out
    else:
        assert "process: ok" in out and "stage out: ok" in out, out
        assert "sample 4.txt: 50 words" in out
        assert "results: ['sample 0.count', 'sample 1.count', 'sample 2.count', 'sample 3.count', " \
               "'sample 4.count']" in out
        assert "results exist: True" in out
    assert "scratch left: []" in out  # the clean-up ran in both cases
    if "backend: local" in out:
        assert "processing job: None" in out and "in Slurm job: none" in out
    assert "pipeline finished" in out
    ws = Workspace("local", root=root)
    assert ws.list() == [] and len(ws.released()) == 1


@pytest.mark.parametrize("failing", [False, True], ids=["ok", "failing-middle"])
def test_pipeline_local(tmp_path, failing):
    root = tmp_path / "ws"
    args = ["--fail"] if failing else []
    res = run_example("pipeline.py", with_ws_root(local_env(), root), *args, returncode=1 if failing else 0)
    assert "backend: local" in res.stdout
    check_pipeline(res, root, failing)


@pytest.mark.parametrize("failing", [False, True], ids=["ok", "failing-middle"])
def test_pipeline_on_slurm(slurm_cluster, tmp_path, failing):
    root = tmp_path / "ws"
    env = with_ws_root(dict(os.environ), root)
    env["TAURUS_TOOLS_BACKEND"] = "slurm"
    before = set(slurm_cluster.squeue_ids())
    args = ["--fail"] if failing else []
    res = run_example("pipeline.py", env, *args, returncode=1 if failing else 0)
    assert "backend: slurm" in res.stdout
    check_pipeline(res, root, failing)
    # the processing ran as a Slurm job, the one its handle names
    job = re.search(r"^processing job: (\d+)$", res.stdout, re.M)
    assert job is not None, res.stdout
    assert f"processing output: in Slurm job: {job.group(1)}" in res.stdout
    wait_jobs_gone(slurm_cluster, before)
