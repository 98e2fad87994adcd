"""Tests of the test infrastructure itself: the Slurm cluster fixture and the
``dt*`` datamover emulation in ``tests/site_tools`` (plain subprocess only)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest
from helpers import wait_for
from slurm_cluster import NODE_UP_STATES, SlurmCluster, SlurmClusterError

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
    return wait_for(
        lambda: job_info(job_id),
        lambda info: info["JobState"] in FINAL_STATES,
        timeout=timeout,
        interval=0.2,
        what=f"job {job_id} to finish",
    )


def wait_job_state(job_id: int, state: str, timeout: float = 30) -> dict[str, str]:
    """Poll until the job is in ``state`` (e.g. ``RUNNING``); return :func:`job_info`."""
    return wait_for(
        lambda: job_info(job_id),
        lambda info: info["JobState"] == state,
        timeout=timeout,
        what=f"job {job_id} to be {state}",
    )


def sinfo_states(args: Sequence[str | os.PathLike[str]]) -> dict[str, str]:
    """Run an ``sinfo``-like command printing ``PARTITION STATE`` lines; map them.

    A partition listed twice would be lost in the mapping, so that is an error.
    """
    res = run(args, check=True)
    rows = [line.split() for line in res.stdout.splitlines()]
    assert all(len(row) == 2 for row in rows), repr(res.stdout)
    states = dict(rows)
    assert len(states) == len(rows), repr(res.stdout)
    return states


def wait_nodes_up(
    args: Sequence[str | os.PathLike[str]], partitions: set[str], timeout: float = 30
) -> dict[str, str]:
    """Wait until ``args`` lists exactly ``partitions``, each with its node up.

    "Up" is any state of :data:`slurm_cluster.NODE_UP_STATES`: a node is ``comp``
    for a moment after every job and ``mix`` or ``alloc`` while one runs, so a test
    that means "the cluster works" must not insist on ``idle``.
    """
    return wait_for(
        lambda: sinfo_states(args),
        lambda states: set(states) == partitions and set(states.values()) <= NODE_UP_STATES,
        timeout=timeout,
        what=f"partitions {sorted(partitions)} with their node up ({sorted(NODE_UP_STATES)})",
    )


def wait_queue_empty(cluster: SlurmCluster, timeout: float = 30) -> list[int]:
    """Poll until ``squeue`` is empty (jobs may be COMPLETING briefly); return the last ids."""
    return wait_for(cluster.squeue_ids, lambda ids: not ids, timeout=timeout, interval=0.2, what="an empty squeue")


def stderr_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    return res.stderr.splitlines()


# --------------------------------------------------------------- the cluster


def test_fixture_points_environment_at_cluster(slurm_cluster: SlurmCluster) -> None:
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.conf_path)
    assert slurm_cluster.env == {"SLURM_CONF": str(slurm_cluster.conf_path)}
    assert slurm_cluster.running
    # sinfo through the environment reaches this cluster: its two partitions, node up.
    # Not necessarily idle: a job of an earlier test may still be COMPLETING ("comp").
    wait_nodes_up(["sinfo", "--noheader", "--format=%R %t"], {"datamover", "debug"})
    # Idle once no job is left (the check after every Slurm test waits for that too).
    states = wait_for(
        lambda: sinfo_states(["sinfo", "--noheader", "--format=%R %t"]),
        lambda states: set(states.values()) == {"idle"},
        timeout=60,
        what="both partitions idle",
    )
    assert states == {"datamover": "idle", "debug": "idle"}


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
    # all complete if they run at the same time.  They also wait for the file "go",
    # so none can have ended (and left squeue) before squeue is asked below.
    script = (
        'touch "$1/started.$SLURM_JOB_ID"; '
        'for i in $(seq 600); do [ "$(ls "$1" | wc -l)" -ge 8 ] && [ -e "$1.go" ] && exit 0; '
        "sleep 0.1; done; exit 1"
    )
    (tmp_path / "started").mkdir()
    job_ids = [
        submit(["sbatch", "-p", "datamover", "-o", tmp_path / "%j.log",
                "--wrap", f"sh -c '{script}' job {tmp_path}/started"])
        for _ in range(8)
    ]  # fmt: skip
    queued = slurm_cluster.squeue_ids()
    (tmp_path / "started.go").touch()
    assert set(job_ids) <= set(queued), queued
    infos = [wait_job(j, timeout=90) for j in job_ids]
    assert [i["JobState"] for i in infos] == ["COMPLETED"] * 8, infos
    assert [i["ExitCode"] for i in infos] == ["0:0"] * 8
    assert len(list((tmp_path / "started").iterdir())) == 8


def test_cancelled_job_states(slurm_cluster: SlurmCluster, site_tools_dir: Path) -> None:
    # Running, then cancelled: CANCELLED by SIGTERM; dtq lists it, dtcancel cancels it.
    job = submit(
        ["sbatch", "-p", "datamover", "-J", "sleeper", "-o", "/dev/null", "--wrap", "sleep 300"]
    )
    wait_job_state(job, "RUNNING")
    res = run([site_tools_dir / "dtq"])
    assert res.returncode == 0, res.stderr
    assert str(job) in res.stdout.split()
    res = run([site_tools_dir / "dtqueue", "-h", "-o", "%i %j %P"])
    assert res.returncode == 0, res.stderr
    # Our job, and only jobs of the datamover partition (an earlier test's may linger).
    lines = res.stdout.splitlines()
    assert f"{job} sleeper datamover" in lines, res.stdout
    assert all(line.endswith(" datamover") for line in lines), res.stdout
    res = run([site_tools_dir / "dtcancel", str(job)])
    assert res.returncode == 0, res.stderr
    info = wait_job(job)
    # Killed by the signal (0:15), or its shell exited 128+15 when scancel's SIGTERM met
    # it between starting and exec-ing sleep (143:0: seen once on a loaded machine).
    assert info["JobState"] == "CANCELLED" and info["ExitCode"] in ("0:15", "143:0"), info
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
    # Only the datamover partition ("%P" of the default one would end in "*"), node up.
    assert wait_nodes_up([site_tools_dir / "dtinfo", "-h", "-o", "%P %t"], {"datamover"})


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
    # cp writes "cp: " and "cannot stat ..." with separate write()s, and srun's own
    # "srun: error: localhost: task 0: Exited with exit code 1" line (another thread)
    # can land between the two: look for the parts, not for "cp: cannot stat".
    assert "cp: " in res.stderr and "cannot stat 'missing " in res.stderr, res.stderr


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
    for proc in cluster.live_processes():
        try:
            if proc.name() == "slurmstepd":
                return True
        except psutil.Error:
            pass
    return False


def _wait_stepd(cluster: SlurmCluster, timeout: float = 30) -> None:
    wait_for(lambda: _has_stepd(cluster), timeout=timeout, what="a slurmstepd (the batch job to start)")


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
        # The batch job runs (its slurmstepd, not just a lingering one of srun's step).
        wait_for(
            lambda: other.run(["squeue", "--noheader", "--jobs", str(job), "--format=%T"]).stdout.strip(),
            lambda state: state == "RUNNING",
            timeout=30,
            what=f"job {job} of the second cluster to run",
        )
        _wait_stepd(other)
        assert job in other.squeue_ids()
    assert not other.running
    assert other.live_processes() == []
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
    assert cluster.live_processes() == []


def test_start_failure_reports_logs(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # More memory than the machine has: the node never becomes idle.
    cluster = SlurmCluster(tmp_path / "bad", real_memory=1 << 40)
    with pytest.raises(SlurmClusterError, match=r"(?s)not idle.*slurmd\.log"):
        cluster.start(timeout=3)
    assert not cluster.running
    assert cluster.live_processes() == []


# ------------------------------------------------------------------- the end


def test_no_job_left(slurm_cluster: SlurmCluster) -> None:
    assert wait_queue_empty(slurm_cluster) == []
