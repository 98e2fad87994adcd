"""Tests of the test infrastructure itself: the Slurm cluster fixture and the
``dt*`` datamover emulation in ``tests/site_tools`` (plain subprocess only)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest
from slurm_cluster import SlurmCluster, SlurmClusterError

#: The lines srun prints when ``--pty`` is used without a terminal (REFERENCE §1).
NOISE = (
    "srun: error: ioctl(TIOCGWINSZ): Inappropriate ioctl for device",
    "srun: error: Not using a pseudo-terminal, disregarding --pty option",
)

#: A file name that breaks naive quoting: leading "-", space, quote, newline, non-ASCII.
NASTY = "-x y'z\nü.txt"

FINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE",
}  # fmt: skip

SUBMITTED = re.compile(r"Submitted batch job (\d+)\n")


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    check: bool = False,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a command with the test environment (SLURM_CONF set by the fixture), no stdin."""
    return subprocess.run(
        [os.fspath(a) for a in args],
        cwd=cwd,
        env=env,
        check=check,
        timeout=timeout,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def submit(
    args: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run a submitting command and return the job id from ``Submitted batch job N``."""
    res = run(args, cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr
    match = SUBMITTED.fullmatch(res.stdout)
    assert match, repr(res.stdout)
    return int(match.group(1))


def job_info(job_id: int) -> dict[str, str]:
    """Return ``JobState``, ``ExitCode``, ... of a job from ``scontrol show job -o``.

    Only fields that cannot contain spaces are parsed: ``Command=`` and
    ``WorkDir=`` may contain anything, even newlines.
    """
    out = run(["scontrol", "show", "job", str(job_id), "-o"], check=True).stdout
    keys = ("JobId", "JobName", "JobState", "Reason", "ExitCode", "Partition", "TimeLimit")
    return {k: m.group(1) for k in keys for m in [re.search(rf"\b{k}=(\S*)", out)] if m}


def wait_job(job_id: int, timeout: float = 60) -> dict[str, str]:
    """Poll until the job is in a final state; return :func:`job_info`."""
    deadline = time.monotonic() + timeout
    while True:
        info = job_info(job_id)
        if info["JobState"] in FINAL_STATES:
            return info
        assert time.monotonic() < deadline, f"job {job_id} not finished: {info}"
        time.sleep(0.2)


def wait_queue_empty(cluster: SlurmCluster, timeout: float = 30) -> list[int]:
    """Poll until ``squeue`` is empty (jobs may be COMPLETING briefly); return the last ids."""
    deadline = time.monotonic() + timeout
    ids = cluster.squeue_ids()
    while ids and time.monotonic() < deadline:
        time.sleep(0.2)
        ids = cluster.squeue_ids()
    return ids


def stderr_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    return res.stderr.splitlines()


# --------------------------------------------------------------- the cluster


def test_fixture_points_environment_at_cluster(slurm_cluster: SlurmCluster) -> None:
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.conf_path)
    assert slurm_cluster.env == {"SLURM_CONF": str(slurm_cluster.conf_path)}
    assert slurm_cluster.running
    res = run(["sinfo", "--noheader", "--format=%R %t"], check=True)
    assert sorted(res.stdout.split("\n")[:-1]) == ["datamover idle", "debug idle"]


@pytest.mark.parametrize("partition", ["debug", "datamover"])
def test_srun_runs_on_both_partitions(slurm_cluster: SlurmCluster, partition: str) -> None:
    res = run(["srun", "-p", partition, "printenv", "SLURM_JOB_PARTITION"])
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{partition}\n"


def test_srun_passes_exit_code(slurm_cluster: SlurmCluster) -> None:
    res = run(["srun", "sh", "-c", "exit 3"])
    assert res.returncode == 3
    assert "srun: error: localhost: task 0: Exited with exit code 3" in stderr_lines(res)


def test_eight_sbatch_jobs_run_concurrently(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # Every job waits (up to 60 s) until all eight have started: they can only
    # all complete if they run at the same time.
    script = (
        'touch "$1/started.$SLURM_JOB_ID"; '
        'for i in $(seq 600); do [ "$(ls "$1" | wc -l)" -ge 8 ] && exit 0; sleep 0.1; done; '
        "exit 1"
    )
    (tmp_path / "started").mkdir()
    job_ids = [
        submit(["sbatch", "-p", "datamover", "-o", tmp_path / "%j.log",
                "--wrap", f"sh -c '{script}' job {tmp_path}/started"])
        for _ in range(8)
    ]  # fmt: skip
    assert set(job_ids) <= set(slurm_cluster.squeue_ids())
    infos = [wait_job(j, timeout=90) for j in job_ids]
    assert [i["JobState"] for i in infos] == ["COMPLETED"] * 8, infos
    assert [i["ExitCode"] for i in infos] == ["0:0"] * 8
    assert len(list((tmp_path / "started").iterdir())) == 8


def test_cancelled_job_states(slurm_cluster: SlurmCluster, site_tools_dir: Path) -> None:
    # Running, then cancelled: ExitCode 0:15 (signal 15); dtq lists it, dtcancel cancels it.
    job = submit(
        ["sbatch", "-p", "datamover", "-J", "sleeper", "-o", "/dev/null", "--wrap", "sleep 300"]
    )
    deadline = time.monotonic() + 30
    while job_info(job)["JobState"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    res = run([site_tools_dir / "dtq"])
    assert res.returncode == 0, res.stderr
    assert str(job) in res.stdout.split()
    res = run([site_tools_dir / "dtqueue", "-h", "-o", "%i %j %P"])
    assert res.stdout == f"{job} sleeper datamover\n"
    res = run([site_tools_dir / "dtcancel", str(job)])
    assert res.returncode == 0, res.stderr
    info = wait_job(job)
    assert (info["JobState"], info["ExitCode"]) == ("CANCELLED", "0:15")
    # A failing batch job: FAILED with the script's exit code.
    job = submit(["sbatch", "-p", "datamover", "-o", "/dev/null", "--wrap", "exit 7"])
    info = wait_job(job)
    assert (info["JobState"], info["ExitCode"], info["Reason"]) == (
        "FAILED",
        "7:0",
        "NonZeroExitCode",
    )


def test_dtinfo_shows_datamover_partition(
    slurm_cluster: SlurmCluster, site_tools_dir: Path
) -> None:
    res = run([site_tools_dir / "dtinfo", "-h", "-o", "%P %t"])
    assert res.returncode == 0, res.stderr
    assert res.stdout == "datamover idle\n"


# --------------------------------------------------------- datamover emulation


@pytest.fixture
def nasty_file(tmp_path: Path) -> Path:
    src = tmp_path / NASTY
    src.write_text("payload\n")
    return src


def test_dtcp_blocking_nasty_name(
    slurm_cluster: SlurmCluster, site_tools_dir: Path, nasty_file: Path, tmp_path: Path
) -> None:
    dst = tmp_path / ("copy " + NASTY)
    # --blocking in the middle; "--" and the names go to cp unchanged.
    dtcp = site_tools_dir / "dtcp"
    res = run([dtcp, "--", nasty_file.name, "--blocking", dst.name], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    noise = [line for line in stderr_lines(res) if "ioctl" in line or "pseudo" in line]
    assert noise == list(NOISE)
    assert dst.read_text() == "payload\n"
    # The exit code is cp's.
    res = run([dtcp, "--blocking", "--", "missing " + NASTY, "x"], cwd=tmp_path)
    assert res.returncode == 1
    assert NOISE[0] in stderr_lines(res) and NOISE[1] in stderr_lines(res)
    assert "cp: cannot stat" in res.stderr


def test_dtcp_non_blocking_nasty_name(
    slurm_cluster: SlurmCluster, site_tools_dir: Path, nasty_file: Path, tmp_path: Path
) -> None:
    dst = tmp_path / ("copy2 " + NASTY)
    # Run from another directory with absolute paths: the script finds its own dir.
    job = submit([site_tools_dir / "dtcp", "--", nasty_file, dst], cwd="/")
    info = wait_job(job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), info
    assert (info["JobName"], info["Partition"]) == ("dtcp", "datamover")
    assert dst.read_text() == "payload\n"
    log = slurm_cluster.base_dir / "dt-logs" / f"dt-{job}.out"
    assert log.read_text() == ""


def test_dtcp_non_blocking_failure_and_options_anywhere(
    slurm_cluster: SlurmCluster, site_tools_dir: Path, tmp_path: Path
) -> None:
    # sbatch succeeds; the job fails with cp's exit code.  --time and
    # --account are taken out wherever they are.
    job = submit(
        [site_tools_dir / "dtcp", "--time=7", "missing", "--account=p_test", "x"], cwd=tmp_path
    )
    info = wait_job(job)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "1:0"), info
    assert info["TimeLimit"] == "00:07:00"
    log = slurm_cluster.base_dir / "dt-logs" / f"dt-{job}.out"
    assert "cp: cannot stat 'missing'" in log.read_text()


def test_dtls_is_blocking_and_fails_for_missing_path(
    slurm_cluster: SlurmCluster, site_tools_dir: Path, nasty_file: Path, tmp_path: Path
) -> None:
    # Called by name through PATH, from the directory holding the file.
    env = {**os.environ, "PATH": f"{site_tools_dir}{os.pathsep}{os.environ['PATH']}"}
    res = run(["dtls", "--", nasty_file.name], cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    # Surprise: with `srun --pty` the task's stdout is a pseudo-terminal even
    # though srun itself has none (stdin and stderr are not), so ls formats
    # for a terminal: columns and shell-escape quoting of odd names.
    assert res.stdout == "'-x y'\\''z'$'\\n''ü.txt'\n"
    res = run(["dtls", "/nonexistent/path"], cwd=tmp_path, env=env)
    assert res.returncode == 2
    assert NOISE[0] in stderr_lines(res) and NOISE[1] in stderr_lines(res)
    assert "No such file or directory" in res.stderr


# ------------------------------------------------------------ start and stop


def _has_stepd(cluster: SlurmCluster) -> bool:
    """Tell whether a ``slurmstepd`` of ``cluster`` is running."""
    for proc in _processes_of(cluster):
        try:
            if proc.name() == "slurmstepd":
                return True
        except psutil.Error:
            pass
    return False


def _wait_stepd(cluster: SlurmCluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not _has_stepd(cluster):
        assert time.monotonic() < deadline, "the batch job never started"
        time.sleep(0.1)


def _processes_of(cluster: SlurmCluster) -> list[psutil.Process]:
    """Live processes of ``cluster``: daemons, step daemons, jobs (zombies ignored)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and cluster._belongs_here(proc):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def test_second_cluster_start_stop_leaves_nothing(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    # A job on the session cluster must survive stopping another cluster.
    session_job = submit(["sbatch", "-o", "/dev/null", "--wrap", "sleep 300"])
    with SlurmCluster(tmp_path / "second") as other:
        assert {other.ctld_port, other.slurmd_port}.isdisjoint(
            {slurm_cluster.ctld_port, slurm_cluster.slurmd_port}
        )
        env = {**os.environ, **other.env}
        job = submit(["sbatch", "-o", "/dev/null", "--wrap", "sleep 300"], env=env)
        res = run(["srun", "true"], env=env)
        assert res.returncode == 0, res.stderr
        _wait_stepd(other)
        assert job in other.squeue_ids()
    assert not other.running
    assert _processes_of(other) == []
    other.stop()  # idempotent
    assert slurm_cluster.running
    assert session_job in slurm_cluster.squeue_ids()
    run(["scancel", str(session_job)], check=True)
    assert wait_job(session_job)["JobState"] == "CANCELLED"


def test_stop_after_daemons_were_killed(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # slurm_cluster: only for the skip/fail logic when Slurm is missing.
    cluster = SlurmCluster(tmp_path / "killed").start()
    try:
        env = {**os.environ, **cluster.env}
        submit(["sbatch", "-o", "/dev/null", "--wrap", "sleep 300"], env=env)
        _wait_stepd(cluster)
        for proc in (cluster._ctld, cluster._slurmd):
            assert proc is not None
            proc.kill()
            proc.wait()
    finally:
        cluster.stop()
    assert _processes_of(cluster) == []


def test_start_failure_reports_logs(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # More memory than the machine has: the node never becomes idle.
    cluster = SlurmCluster(tmp_path / "bad", real_memory=1 << 40)
    with pytest.raises(SlurmClusterError, match=r"(?s)not idle.*slurmd\.log"):
        cluster.start(timeout=3)
    assert not cluster.running
    assert _processes_of(cluster) == []


# ------------------------------------------------------------------- the end


def test_no_job_left(slurm_cluster: SlurmCluster) -> None:
    assert wait_queue_empty(slurm_cluster) == []
