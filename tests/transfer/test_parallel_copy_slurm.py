"""ParallelCopy through real Slurm jobs (the ``slurm_cluster`` fixture).

* the slurm backend: one ``srun`` job per shard on the datamover partition, at most
  ``workers`` at a time -- shown to run as concurrent jobs by sampling ``squeue``;
* ``exclude_nodes`` reaches srun as ``--exclude`` (excluding the only node fails readably);
* ``cancel()`` leaves no job behind and a resumable work directory;
* the site backend: the emulated ``dtrsync`` of ``tests/site_tools`` copies each shard.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import List, Tuple

import pytest
from helpers import MiB, assert_identical, counts, make_tree  # trees of hostile names, shared

import taurus_tools.transfer.parallel_copy as pc_mod
from taurus_tools import (
    CopyCancelledError,
    CopyResult,
    Datamover,
    ParallelCopy,
    SiteBackend,
    SlurmBackend,
)

pytestmark = pytest.mark.slurm


def report_of(result: CopyResult) -> dict:
    assert result.report is not None and result.report.is_file()
    return json.loads(result.report.read_text())


def max_overlap(intervals: List[Tuple[int, int]]) -> int:
    """The largest number of intervals that share one moment."""
    # An interval that ends when another starts does not overlap it: ends sort first.
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


class JobSampler:
    """Sample squeue from a thread: how many of the jobs are RUNNING at once, at most."""

    def __init__(self, cluster, prefix: str = "tt-copy-shard-", interval: float = 0.05) -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.interval = interval
        self.running: List[int] = []
        self.names: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            args = ["squeue", "--all", "--noheader", "--format=%A|%T|%P|%j"]
            out = self.cluster.run(args, check=False).stdout
            rows = [line.split("|", 3) for line in out.splitlines() if line.strip()]
            mine = [r for r in rows if r[3].startswith(self.prefix)]
            self.names.update(r[3] for r in mine)
            self.running.append(sum(1 for r in mine if r[1] == "RUNNING" and r[2] == "datamover"))
            self._stop.wait(self.interval)

    def __enter__(self) -> "JobSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def wait_no_jobs(cluster, before: set, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while set(cluster.squeue_ids()) - before:
        assert time.monotonic() < deadline, f"jobs left in squeue: {cluster.squeue_ids()}"
        time.sleep(0.2)


@pytest.fixture
def dm_slurm(slurm_cluster, tmp_path):
    dm = Datamover("slurm", job_log_dir=tmp_path / "jobs")
    assert isinstance(dm.backend, SlurmBackend) and dm.backend.partition == "datamover"
    return dm


# ---------------------------------------------------------------- the slurm backend
def test_slurm_copy_runs_shards_as_concurrent_jobs(slurm_cluster, dm_slurm, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    # One 128 MiB file per shard (largest first onto the lightest shard) and checksum
    # verification keep every shard's job busy for about a second on two CPUs.
    make_tree(src, big_files=8, big_mib=128)
    before = set(slurm_cluster.squeue_ids())
    copy = ParallelCopy(
        src,
        dst,
        datamover=dm_slurm,
        workers=8,
        shards=8,
        verify="checksum",
        progress=False,
        work_dir=tmp_path / "work",
        keep_work_dir=True,
    )
    with JobSampler(slurm_cluster) as sampler:
        result = copy.run()
    assert result.ok, result.failed_messages
    snap = assert_identical(src, dst)
    planned_files, planned_bytes = counts(snap)
    assert (result.files_planned, result.bytes_planned) == (planned_files, planned_bytes)
    assert (result.files_copied, result.bytes_copied) == (planned_files, planned_bytes)
    assert result.files_failed == 0 and result.retries == 0 and result.mismatches == 0
    assert result.files_verified == planned_files
    assert not [p for p in dst.rglob("*") if p.name.startswith(".tt-part-")]

    # Eight shards, eight jobs of ours RUNNING at the same time on the datamover partition.
    # (The shards' own start and end times below prove the eight ran at once; a squeue
    # sample every 50 ms may miss that moment on a loaded machine.)
    assert len(sampler.names) >= 8, sampler.names
    assert max(sampler.running) >= 2, sampler.running
    wait_no_jobs(slurm_cluster, before)

    report = report_of(result)
    assert report["backend"] == "slurm" and report["workers"] == 8 and report["shards"] == 8
    chunks = report["benchmark_results"]
    assert sorted(c["chunk_number"] for c in chunks) == list(range(1, 9))
    assert all(c["exit_code"] == 0 and c["total_bytes_transferred"] >= 128 * MiB for c in chunks)
    assert sum(c["total_bytes_transferred"] for c in chunks) == planned_bytes
    assert sum(c["total_number_of_files"] for c in chunks) == planned_files
    assert max_overlap([(c["start_time_ms"], c["end_time_ms"]) for c in chunks]) == 8
    # Each chunk names its own job (from the job's $SLURM_JOB_ID) and node.
    assert len({c["job_id"] for c in chunks}) == 8 and all(c["job_id"].isdigit() for c in chunks)
    assert {c["host"] for c in chunks} == {os.uname().nodename}
    assert all(c["start_delay_ms"] is not None and c["start_delay_ms"] >= 0 for c in chunks)
    # state.json records every shard as done (also the ones that finished last).
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    assert [s["state"] for s in state["shards"]] == ["done"] * 8


def test_slurm_exclude_nodes_reaches_srun(slurm_cluster, dm_slurm, tmp_path):
    launch = dm_slurm.backend.launch_program(
        "copy-shard-0", ["true"], blocking=True, exclude_nodes=("localhost",)
    )
    assert "--exclude=localhost" in launch.argv and "--partition=datamover" in launch.argv
    assert launch.argv[-1] == "true"

    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    before = set(slurm_cluster.squeue_ids())
    result = ParallelCopy(
        src,
        dst,
        datamover=dm_slurm,
        workers=8,
        shards=8,
        exclude_nodes=("localhost",),  # the cluster's only node: nowhere left to run
        retries=1,
        retry_delay_s=0.1,
        progress=False,
        work_dir=tmp_path / "work",
    ).run()
    assert not result.ok
    assert result.files_failed > 0 and result.files_copied == 0
    assert not dst.exists() or not [p for p in dst.rglob("*") if not p.is_dir()]
    # srun refused every shard: one line per file it held, naming the file and saying
    # which command failed and why.
    shard_messages = [m for m in result.failed_messages if ": shard command exited" in m]
    assert shard_messages, result.failed_messages
    assert len(result.failed_messages) == result.files_failed == result.files_planned
    for message in shard_messages:
        assert "\n" not in message
        assert "srun" in message and "node configuration is not available" in message, message
    report = report_of(result)
    assert report["ok"] is False and report["failed_messages"] == result.failed_messages
    assert all(c["exit_code"] != 0 for c in report["benchmark_results"])
    wait_no_jobs(slurm_cluster, before)


def test_slurm_cancel_leaves_no_job_and_resumes(slurm_cluster, dm_slurm, tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, big_files=8, big_mib=1)
    # Hold every shard's job: into a destination that is not empty, shard N writes each
    # file to ".tt-part-TAG-N" in its folder first (every shard has a big file at the top),
    # and opening a FIFO of that name for writing blocks until someone reads it.
    monkeypatch.setattr(pc_mod, "part_tag_of", lambda *paths: "hold")
    dst.mkdir()
    fifos = [dst / f".tt-part-hold-{i}" for i in range(8)]
    for fifo in fifos:
        os.mkfifo(fifo)
    before = set(slurm_cluster.squeue_ids())
    work = tmp_path / "work"
    options = dict(datamover=dm_slurm, workers=8, shards=8, progress=False, work_dir=work)
    copy = ParallelCopy(src, dst, **options).start()
    deadline = time.monotonic() + 60
    running: List[str] = []
    while len(running) < 8:
        assert time.monotonic() < deadline, slurm_cluster.run(["squeue", "--all"]).stdout
        assert not copy.done(), copy.wait()
        args = ["squeue", "--all", "--noheader", "--states=RUNNING", "--format=%A|%j"]
        out = slurm_cluster.run(args).stdout
        running = [line for line in out.splitlines() if "|tt-copy-shard-" in line]
        time.sleep(0.1)
    cancelled_at = time.monotonic()
    copy.cancel()
    with pytest.raises(CopyCancelledError, match="run it again to resume"):
        copy.wait(timeout=60)
    assert time.monotonic() - cancelled_at < 45
    # No job of ours is left, and the work dir says what is still to do.
    wait_no_jobs(slurm_cluster, before)
    state = json.loads((work / "state.json").read_text())
    assert state["shards"] and all(s["state"] in ("pending", "done") for s in state["shards"])
    assert any(s["state"] == "pending" for s in state["shards"])
    assert all(f.exists() for f in fifos), "nothing read the held files"

    for fifo in fifos:
        fifo.unlink()
    result = ParallelCopy(src, dst, **options).run()
    assert result.ok, result.failed_messages
    assert_identical(src, dst)
    assert result.files_copied + result.files_skipped == result.files_planned
    wait_no_jobs(slurm_cluster, before)


# ---------------------------------------------------------------- the site tools
def test_site_backend_copies_with_dtrsync(slurm_cluster, site_tools_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TAURUS_TEST_DT_LOGDIR", str(tmp_path / "dt-logs"))
    dm = Datamover(tools_dir=site_tools_dir)
    assert isinstance(dm.backend, SiteBackend)
    # A destination two levels below anything that exists: rsync itself creates only the
    # last level (and eight of them racing to create it can fail with "File exists").
    src, dst = tmp_path / "src", tmp_path / "new" / "deep dir" / "dst"
    make_tree(src, big_files=8, big_mib=1)
    work = tmp_path / "work"
    options = dict(workers=8, shards=8, progress=False, work_dir=work, keep_work_dir=True)
    copy = ParallelCopy(src, dst, datamover=dm, **options)
    before = set(slurm_cluster.squeue_ids())
    with JobSampler(slurm_cluster, prefix="dtrsync") as sampler:
        result = copy.run()
    assert result.ok, result.failed_messages
    snap = assert_identical(src, dst)
    planned_files, planned_bytes = counts(snap)
    assert (result.files_planned, result.bytes_planned) == (planned_files, planned_bytes)
    assert (result.files_copied, result.bytes_copied) == (planned_files, planned_bytes)
    assert result.files_verified == planned_files and result.mismatches == 0
    assert result.retries == 0 and result.files_failed == 0
    report = report_of(result)
    assert report["backend"] == "site"
    chunks = report["benchmark_results"]
    assert sorted(c["chunk_number"] for c in chunks) == list(range(1, 9))
    assert sum(c["total_number_of_files"] for c in chunks) == planned_files
    # The shards' paths went to rsync NUL-separated: the newline names arrived whole.
    paths = sorted((work / "runs").glob("*.paths"))
    assert len(paths) == 8
    listed = b"".join(p.read_bytes() for p in paths).split(b"\0")
    assert "new\nline".encode() in listed
    # Each shard ran as `dtrsync ... --files-from=PATHS SRC/ DST/`: a job named dtrsync.
    assert "dtrsync" in sampler.names, sampler.names
    wait_no_jobs(slurm_cluster, before)


def test_site_shards_are_verified_by_the_driver(slurm_cluster, site_tools_dir, tmp_path, monkeypatch):
    """dtrsync cannot verify: the driver checks its shards and retries only what differs."""
    import taurus_tools.transfer.worker as copy_worker

    monkeypatch.setenv("TAURUS_TEST_DT_LOGDIR", str(tmp_path / "dt-logs"))
    dm = Datamover(tools_dir=site_tools_dir)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}").write_bytes(os.urandom(3000 + i))
    os.symlink("f0", src / "link")
    real = copy_worker.Worker.verify_shard
    damaged: List[str] = []

    def damage_then_verify(self, shard, outcome=None):
        if not damaged:  # after the first shard's dtrsync: a short file and a wrong link
            (dst / "f2").write_bytes(b"short")
            (dst / "link").unlink()
            os.symlink("elsewhere", dst / "link")
            damaged.append("f2")
        real(self, shard, outcome)

    monkeypatch.setattr(copy_worker.Worker, "verify_shard", damage_then_verify)
    result = ParallelCopy(
        src, dst, datamover=dm, workers=1, shards=1, retry_delay_s=0.1, progress=False, work_dir=tmp_path / "work"
    ).run()
    assert damaged
    assert result.ok, result.failed_messages
    assert result.mismatches == 2 and result.retries == 1
    assert result.files_verified == 7
    assert (dst / "f2").read_bytes() == (src / "f2").read_bytes()
    assert os.readlink(dst / "link") == "f0"
    # The retry gave dtrsync only what differed; each file counts once as copied.
    chunks = report_of(result)["benchmark_results"]
    assert [c["total_number_of_files"] for c in chunks] == [5, 2]
    assert result.files_copied == 7
