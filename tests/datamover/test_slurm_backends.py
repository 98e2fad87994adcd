"""The slurm and site backends against a real Slurm cluster (the ``slurm_cluster`` fixture).

The site backend runs the emulated ``dt*`` tools of ``tests/site_tools`` which, like the
real ones, submit with sbatch (non-blocking) or run ``srun --pty`` (blocking).
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from pathlib import Path

import pytest
from helpers import wait_for, wait_until  # tests/ is on sys.path (conftest)

from taurus_tools import (
    CommandError,
    CommandTimeoutError,
    Datamover,
    Handle,
    SiteBackend,
    SlurmBackend,
    waitfor,
)

pytestmark = pytest.mark.slurm

HOSTILE = ["with space", "quote'\"s", "new\nline", "-leading-dash", "ünïcødé-名前"]


def fill(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    content = {}
    for i, name in enumerate(HOSTILE):
        data = os.urandom(1000 + i)
        (folder / name).write_bytes(data)
        content[name] = data
    return content


def assert_gone(cluster, job_id, timeout=30.0):
    wait_for(
        cluster.squeue_ids, lambda ids: int(job_id) not in ids, timeout=timeout, interval=0.2,
        what=f"job {job_id} to leave squeue",
    )


@pytest.fixture
def dm_slurm(slurm_cluster, tmp_path):
    return Datamover("slurm", job_log_dir=tmp_path / "jobs")


@pytest.fixture
def dm_site(slurm_cluster, site_tools_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TAURUS_TEST_DT_LOG", str(tmp_path))
    return Datamover(tools_dir=site_tools_dir)


@pytest.fixture(params=["slurm", "site"])
def dm_any(request):
    return request.getfixturevalue(f"dm_{request.param}")


# ---------------------------------------------------------------- choosing the backend
def test_auto_picks_slurm_when_it_answers(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.delenv("TAURUS_TOOLS_BACKEND", raising=False)
    monkeypatch.delenv("TAURUS_TOOLS_DT_DIR", raising=False)
    dm = Datamover(job_log_dir=tmp_path)
    assert isinstance(dm.backend, SlurmBackend)
    assert dm.backend.partition == "datamover"
    assert "Slurm answers" in dm.backend.reason


def test_auto_picks_site_tools_on_path(slurm_cluster, site_tools_dir, monkeypatch):
    monkeypatch.setenv("PATH", f"{site_tools_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("TAURUS_TOOLS_BACKEND", raising=False)
    dm = Datamover()
    assert isinstance(dm.backend, SiteBackend)
    assert str(site_tools_dir) in dm.backend.reason
    assert {"dtcp", "dtls", "dtinfo", "dtqueue", "dtcancel"} <= set(dm.commands())


def test_missing_partition_falls_back_to_default(slurm_cluster, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="taurus_tools"):
        dm = Datamover("slurm", partition="no-such-partition", job_log_dir=tmp_path)
    assert dm.backend.partition is None
    assert "no-such-partition" in caplog.text and "default" in caplog.text
    src = tmp_path / "a.txt"
    src.write_text("x")
    assert waitfor(dm.dtcp(src, tmp_path / "b.txt"), progress=False) == 0
    assert (tmp_path / "b.txt").read_text() == "x"


# ---------------------------------------------------------------- copies through real jobs
@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_copy_move_remove_hostile_names(dm_any, tmp_path, blocking):
    content = fill(tmp_path / "src")
    dst = tmp_path / "dst"
    assert waitfor(dm_any.dtcp("-r", tmp_path / "src", dst, blocking=blocking), timeout=120) == 0
    for name, data in content.items():
        assert (dst / name).read_bytes() == data
    moved = tmp_path / "moved"
    moved.mkdir()
    handles = [dm_any.dtmv("--", dst / name, moved, blocking=blocking) for name in HOSTILE]
    assert waitfor(handles, timeout=120) == [0] * len(HOSTILE)
    assert sorted(os.listdir(moved)) == sorted(HOSTILE)
    assert os.listdir(dst) == []
    handles = [dm_any.dtrm("--", moved / name, blocking=blocking) for name in HOSTILE]
    assert waitfor(handles, timeout=120) == [0] * len(HOSTILE)
    assert os.listdir(moved) == []


def test_nonblocking_returns_job_exit_code_not_sbatch(dm_any, tmp_path):
    handle = dm_any.dtcp(tmp_path / "missing", tmp_path / "x", blocking=False)
    rc = waitfor(handle, timeout=120, progress=False)
    assert handle.job_id is not None and re.fullmatch(r"\d+", handle.job_id)
    assert rc == 1  # cp's code; sbatch itself exited 0
    with pytest.raises(CommandError) as info:
        waitfor(dm_any.dtcp(tmp_path / "missing", tmp_path / "x", blocking=False), check=True)
    assert info.value.returncode == 1 and info.value.job_id


def test_nonblocking_handle_runs_until_the_job_ends(dm_slurm, slurm_cluster, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    handle = dm_slurm.dtcp(fifo, tmp_path / "out", blocking=False)
    # sbatch returns at once; the job runs and its cp waits for a writer.
    wait_until(lambda: handle.job_id is not None or handle.poll() is not None, 30, what="sbatch's job id")
    assert handle.job_id is not None, handle.stderr_text
    wait_for(
        lambda: slurm_cluster.run(["squeue", "-h", "-j", handle.job_id, "-o", "%T"]).stdout.strip(),
        lambda state: state == "RUNNING", timeout=30, what=f"job {handle.job_id} to run",
    )
    assert handle.poll() is None
    with open(fifo, "wb") as writer:
        writer.write(b"payload")
    assert handle.wait(60) == 0
    assert (tmp_path / "out").read_bytes() == b"payload"


def test_slurm_job_output_reaches_communicate(dm_slurm, tmp_path):
    fill(tmp_path / "src")
    for blocking in (True, False):
        handle = dm_slurm.dtls("-1", tmp_path / "src", blocking=blocking)
        assert waitfor(handle, timeout=60, progress=False) == 0
        out, err = handle.communicate()
        assert "with space" in out and "ünïcødé-名前" in out, (blocking, out)
        assert handle.job_id is not None and re.fullmatch(r"\d+", handle.job_id), (blocking, err)
        assert "srun: jobid" not in err and "launch/slurm" not in err, (blocking, err)
    assert not list((tmp_path / "jobs").glob("*.out")), "job output files are removed"


def test_site_blocking_drops_pty_noise_but_keeps_it_in_stderr(dm_site, tmp_path):
    stream = io.StringIO()
    handle = dm_site.dtls(tmp_path / "missing")
    assert waitfor(handle, timeout=60, file=stream, progress=False) == 2
    shown = stream.getvalue()
    assert "cannot access" in shown
    assert "Inappropriate ioctl" not in shown and "pseudo-terminal" not in shown
    assert "Inappropriate ioctl" in handle.stderr_text
    # The job id came from the verbose srun inside the tool; its verbose lines are gone.
    assert handle.job_id is not None and re.fullmatch(r"\d+", handle.job_id)
    for text in (shown, handle.stderr_text):
        assert "srun: jobid" not in text and "defined options" not in text and "launch/slurm" not in text


def test_site_options_are_passed(slurm_cluster, site_tools_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TAURUS_TEST_DT_LOG", str(tmp_path))
    dm = Datamover(tools_dir=site_tools_dir, time="00:05:00")
    assert dm.launch("dtcp", "a", "b").argv[1:] == ("--blocking", "--time=00:05:00", "a", "b")
    src = tmp_path / "f"
    src.write_text("y")
    handle = dm.dtcp(src, tmp_path / "g", blocking=False)
    assert waitfor(handle, timeout=60) == 0
    assert (tmp_path / "g").read_text() == "y"


# ---------------------------------------------------------------- cancelling
def _fifo_copy(dm, tmp_path, blocking):
    fifo = tmp_path / f"fifo-{blocking}"
    os.mkfifo(fifo)
    return dm.dtcp(fifo, tmp_path / f"never-{blocking}", blocking=blocking)


def _wait_for_job(slurm_cluster, handle, before, timeout=30.0):
    """Wait until a job that was not there ``before`` runs (a leftover one does not count)."""
    old = {str(i) for i in before}
    wait_for(
        lambda: set(slurm_cluster.run(["squeue", "-h", "--states=RUNNING", "-o", "%A"]).stdout.split()) - old,
        timeout=timeout, what="the new job to run",
    )
    return handle


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_cancel_leaves_no_job(dm_any, slurm_cluster, tmp_path, blocking):
    before = set(slurm_cluster.squeue_ids())
    handle = _wait_for_job(slurm_cluster, _fifo_copy(dm_any, tmp_path, blocking), before)
    deadline = time.monotonic() + 10
    while handle.job_id is None:  # cancelling goes by the id, blocking or not
        assert time.monotonic() < deadline, handle.stderr_text
        time.sleep(0.05)
    rc = handle.cancel()
    assert rc < 0 and handle.returncode == rc
    deadline = time.monotonic() + 20
    while set(slurm_cluster.squeue_ids()) - before:
        assert time.monotonic() < deadline, slurm_cluster.squeue_ids()
        time.sleep(0.2)


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_waitfor_timeout_cancels_jobs(dm_any, slurm_cluster, tmp_path, blocking):
    before = set(slurm_cluster.squeue_ids())
    handle = _wait_for_job(slurm_cluster, _fifo_copy(dm_any, tmp_path, blocking), before)
    started = time.monotonic()
    with pytest.raises(CommandTimeoutError) as info:
        waitfor(handle, timeout=2, progress=False)
    assert time.monotonic() - started < 40
    assert "cp" in str(info.value) or "dtcp" in str(info.value)
    assert handle.returncode is not None and handle.returncode < 0
    deadline = time.monotonic() + 20
    while set(slurm_cluster.squeue_ids()) - before:
        assert time.monotonic() < deadline, slurm_cluster.squeue_ids()
        time.sleep(0.2)


# ---------------------------------------------------------------- management and srun
def test_management_commands(dm_any, slurm_cluster, tmp_path):
    info = dm_any.dtinfo()
    assert waitfor(info, timeout=30, progress=False) == 0
    assert "datamover" in info.communicate()[0]
    before = set(slurm_cluster.squeue_ids())
    handle = _wait_for_job(slurm_cluster, _fifo_copy(dm_any, tmp_path, False), before)
    deadline = time.monotonic() + 30
    while handle.job_id is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    queue = dm_any.dtqueue()
    assert waitfor(queue, timeout=30, progress=False) == 0
    assert handle.job_id in queue.communicate()[0]
    assert waitfor(dm_any.dtcancel(handle.job_id), timeout=30, progress=False) == 0
    assert handle.wait(60) < 0 or handle.returncode != 0
    assert_gone(slurm_cluster, handle.job_id)


def test_srun_tasks_and_exclude(dm_slurm):
    handle = dm_slurm.srun("sh", "-c", "echo task $SLURM_PROCID", ntasks=2, partition="debug")
    assert waitfor(handle, timeout=60, progress=False) == 0
    assert sorted(handle.communicate()[0].split("\n")[:2]) == ["task 0", "task 1"]
    bad = dm_slurm.srun("true", exclude=["localhost"], partition="debug")
    assert waitfor(bad, timeout=60, progress=False) != 0


def test_srun_handle_is_a_handle(dm_slurm):
    handle = dm_slurm.srun("true")
    assert isinstance(handle, Handle)
    assert handle.wait(60) == 0
    assert handle.args[0].endswith("srun")
