"""``taurus-tools checkpoint ... --exit-policy RULES -- COMMAND`` (and ``run_checkpointed(policy=)``).

The command is a real process that counts its runs in a file and exits with the code
given for each run; each run writes a file of its own into the checkpointed folder, so a
pass between runs shows in the destination (the real S3 server where it matters).

* ``retry``: a pass, the backoff, the command again, within ``retries``; then its status;
* ``fail`` and ``complete``: one run, the command's status;
* ``retry_elsewhere`` outside Slurm, and in a batch job Slurm may not requeue: said, then
  retried here;
* ``retry_elsewhere`` in a requeueable batch job of the multi-node cluster: the final pass,
  the job requeued with its node excluded, its second run on another node;
* a signal ends the retries.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from helpers import wait_for

from taurus_tools import Checkpoint, ConfigurationError
from taurus_tools.checkpoint.command import run_checkpointed

pytestmark = pytest.mark.timeout(180)

#: Runs as ``COMMAND FOLDER RUNS CODES...``: appends this run's node (or "-") to RUNS, writes
#: FOLDER/run-N.bin, and exits with the N-th of CODES (0 after them).
COMMAND = r"""
import os, sys
folder, runs, codes = sys.argv[1], sys.argv[2], [int(c) for c in sys.argv[3:]]
with open(runs, "a") as fh:
    fh.write(os.environ.get("SLURMD_NODENAME", "-") + "\n")
n = len(open(runs).read().split())
with open(os.path.join(folder, "run-%d.bin" % n), "w") as fh:
    fh.write("run %d" % n)
sys.exit(codes[n - 1] if n <= len(codes) else 0)
"""


@pytest.fixture
def command(tmp_path) -> List[str]:
    path = tmp_path / "command.py"
    path.write_text(COMMAND)
    (tmp_path / "src").mkdir()
    return [sys.executable, str(path), str(tmp_path / "src"), str(tmp_path / "runs")]


def runs(tmp_path: Path) -> List[str]:
    path = tmp_path / "runs"
    return path.read_text().split() if path.exists() else []


def wrapper(src: Path, dest: str, policy: str, *options: str) -> List[str]:
    return [sys.executable, "-m", "taurus_tools", "checkpoint", str(src), dest, "--every", "1d", "--settle", "0",
            "--exit-policy", policy, *options]  # fmt: skip


def folder_manifests(folder: Path) -> List[Dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((folder / "manifests").glob("*.json"))]


# =============================================================================== retry, with the S3 server
def test_retry_runs_the_command_again_after_a_pass(tmp_path, command, s3_server):
    bucket = s3_server.make_bucket(f"tt-ckpol-{os.getpid()}")
    argv = wrapper(tmp_path / "src", f"s3://{bucket}/r", "0=complete,1-255=retry,retries=2,backoff=0.3")
    started = time.monotonic()
    done = subprocess.run([*argv, "--", *command, "3", "4"], env=s3_server.env(), capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert len(runs(tmp_path)) == 3
    assert time.monotonic() - started >= 0.3 + 0.6  # the backoff doubles
    assert "the command: exit 3: run 2 in 0.3 s (rule 1-255=retry)" in err
    assert "the command: exit 4: run 3 in 0.6 s (rule 1-255=retry)" in err
    client = s3_server.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="r/manifests/")["Contents"])
    passes = [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]
    # a pass after each failed run (what it left), and the final one
    assert [sorted(f["path"] for f in p["files"]) for p in passes] == [
        ["run-1.bin"], ["run-1.bin", "run-2.bin"], ["run-1.bin", "run-2.bin", "run-3.bin"]
    ]


def test_retries_are_bounded_and_the_status_is_the_commands(tmp_path, command):
    argv = wrapper(tmp_path / "src", str(tmp_path / "dst"), "*=retry,retries=1,backoff=0")
    done = subprocess.run([*argv, "--", *command, "5", "6", "7"], capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 6, err
    assert len(runs(tmp_path)) == 2
    assert "the command: exit 6: no retry left (rule *=retry)" in err
    assert sorted(f["path"] for f in folder_manifests(tmp_path / "dst")[-1]["files"]) == ["run-1.bin", "run-2.bin"]


@pytest.mark.parametrize("policy, said", [("3=fail,*=retry", "exit 3: fail (rule 3=fail)"), ("3=complete,*=retry", "")])
def test_fail_and_complete_end_with_the_commands_status(tmp_path, command, policy, said):
    argv = wrapper(tmp_path / "src", str(tmp_path / "dst"), policy)
    done = subprocess.run([*argv, "--", *command, "3"], capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 3, err
    assert len(runs(tmp_path)) == 1
    assert said in err and ("no retry" not in err)
    assert [f["path"] for f in folder_manifests(tmp_path / "dst")[-1]["files"]] == ["run-1.bin"]


def test_retry_elsewhere_outside_slurm_retries_here(tmp_path, command, no_slurm_env):
    argv = wrapper(tmp_path / "src", str(tmp_path / "dst"), "1-255=retry_elsewhere,backoff=0")
    done = subprocess.run([*argv, "--", *command, "9"], capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "exit 9: retry_elsewhere (rule 1-255=retry_elsewhere): not in a Slurm job, so no node to leave: " \
           "retried here" in err  # fmt: skip
    assert len(runs(tmp_path)) == 2


def test_a_signal_ends_the_retries(tmp_path):
    """SIGTERM to the wrapper reaches the command; its end (143) is not retried, whatever the policy."""
    src = tmp_path / "src"
    src.mkdir()
    started = tmp_path / "started"
    script = f"import time; open({str(started)!r}, 'a').write('x'); time.sleep(60)"
    argv = wrapper(src, str(tmp_path / "dst"), "*=retry,retries=5,backoff=0")
    proc = subprocess.Popen([*argv, "--", sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        wait_for(started.exists, timeout=60, what="the command started")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert started.read_text() == "x"


def test_a_bad_policy_stops_before_the_command_runs(tmp_path, command):
    argv = wrapper(tmp_path / "src", str(tmp_path / "dst"), "1-10=later")
    done = subprocess.run([*argv, "--", *command], capture_output=True, timeout=120)
    assert done.returncode == 2
    assert "unknown exit-policy action 'later'" in done.stderr.decode()
    assert runs(tmp_path) == []


def test_the_same_from_python(tmp_path, command):
    said: List[str] = []
    ck = Checkpoint(tmp_path / "src", str(tmp_path / "dst"), every="1d", settle=0)
    code = run_checkpointed([*command, "2"], ck, say=said.append, policy="2=retry,backoff=0")
    assert code == 0 and len(runs(tmp_path)) == 2
    assert any("exit 2: run 2 in 0.0 s (rule 2=retry)" in line for line in said)
    with pytest.raises(ConfigurationError, match="policy must be an ExitPolicy"):
        run_checkpointed(command, ck, policy=3)  # type: ignore[arg-type]


# =============================================================================== Slurm batch jobs
def submit(cluster: Any, tmp_path: Path, command_line: List[str], *sbatch: str) -> str:
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\nexec {shlex.join(command_line)}\n")
    done = cluster.run(["sbatch", "--parsable", f"--output={tmp_path / 'job.out'}", "--open-mode=append", *sbatch,
                        str(script)])  # fmt: skip
    return done.stdout.strip().split(";")[0]


def hurry_requeued(cluster: Any, job: str, restarts: int) -> Dict[str, str]:
    """Wait until ``job`` is requeued for the ``restarts``-th time with excluded nodes, then
    start it now: Slurm gives a requeued job a begin time 2 minutes on (its credentials'
    lifetime, for the node it left), and the job is kept off that node.  Its fields then."""
    requeued = wait_for(lambda: cluster.job_fields(job), lambda f: f["Restarts"] == str(restarts)
                        and f["Reason"] == "BeginTime" and f["ExcNodeList"] != "(null)", timeout=120, interval=0.2,
                        what=f"job {job} requeued")  # fmt: skip
    cluster.run(["scontrol", "update", f"JobId={job}", "StartTime=now"])
    return requeued


@pytest.mark.timeout(300)
def test_a_job_slurm_may_not_requeue_retries_here(tmp_path, command, slurm_cluster):
    argv = wrapper(tmp_path / "src", str(tmp_path / "dst"), "0=complete,*=retry_elsewhere,backoff=0")
    job = submit(slurm_cluster, tmp_path, [*argv, "--", *command, "3"], "--no-requeue")
    wait_for(slurm_cluster.squeue_ids, lambda ids: int(job) not in ids, timeout=200, interval=0.5, what="the job")
    text = (tmp_path / "job.out").read_text()
    assert f"job {job} is not requeueable (sbatch --requeue, or JobRequeue=1 in slurm.conf): retried here" in text
    assert len(runs(tmp_path)) == 2
    assert slurm_cluster.job_fields(job)["JobState"] == "COMPLETED"


@pytest.mark.timeout(400)
def test_retry_elsewhere_requeues_the_job_without_its_node(tmp_path, command, multinode):
    """The command fails on the first node: the final pass saves what it wrote, the job's
    node joins its ExcNodeList and the job is requeued; its second run, on another node,
    succeeds, and the newest pass holds both runs' files."""
    dst = tmp_path / "dst"
    argv = wrapper(tmp_path / "src", str(dst), "0=complete,*=retry_elsewhere,retries=2,backoff=0")
    job = submit(multinode, tmp_path, [*argv, "--", *command, "3"], "--requeue", "--partition=debug")
    assert hurry_requeued(multinode, job, 1)["ExcNodeList"] == runs(tmp_path)[0]
    wait_for(lambda: len(runs(tmp_path)), lambda n: n >= 2, timeout=120, interval=0.5, what="a second run")
    wait_for(multinode.squeue_ids, lambda ids: int(job) not in ids, timeout=60, interval=0.5, what="the job")
    first, second = runs(tmp_path)
    assert first != second
    fields = multinode.job_fields(job)
    assert (fields["JobState"], fields["Restarts"], fields["ExcNodeList"]) == ("COMPLETED", "1", first)
    text = (tmp_path / "job.out").read_text()
    assert f"then job {job} is requeued without node(s) {first}" in text, text
    assert "WARNING" not in text  # Slurm's SIGTERM to the job it requeues is expected
    assert sorted(f["path"] for f in folder_manifests(dst)[-1]["files"]) == ["run-1.bin", "run-2.bin"]


@pytest.mark.timeout(400)
def test_requeues_are_bounded_by_the_policys_retries(tmp_path, command, multinode):
    """Slurm's Restarts count bounds the requeues: with retries=1 the second run, failing
    too, ends the job with the command's status."""
    argv = wrapper(tmp_path / "src", str(tmp_path / "dst"), "0=complete,*=retry_elsewhere,retries=1,backoff=0")
    job = submit(multinode, tmp_path, [*argv, "--", *command, "3", "4"], "--requeue", "--partition=debug")
    hurry_requeued(multinode, job, 1)
    ended = wait_for(lambda: multinode.job_fields(job), lambda f: f["JobState"] in ("FAILED", "COMPLETED"),
                     timeout=120, interval=0.5, what="the job ended")  # fmt: skip
    assert (ended["JobState"], ended["ExitCode"], ended["Restarts"]) == ("FAILED", "4:0", "1")
    first, second = runs(tmp_path)
    assert first != second
    text = (tmp_path / "job.out").read_text()
    assert f"exit 4: retry_elsewhere (rule *=retry_elsewhere): job {job} was requeued 1 time(s) already: " \
           "no retry left" in text, text  # fmt: skip
