"""A copy's typed state (``_copy_state``) and its work dir's paths (``_work_dir``).

The old-format tests resume a work dir that release a3c891b left when its driver was
killed half way (``tests/data/workdir-a3c891b.*``, made by ``tests/data/capture_workdir_a3c891b.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

import test_parallel_copy
from test_parallel_copy import assert_same_tree, cli, fs, pcopy, read_report, write
from taurus_tools import ConfigurationError, ParallelCopy
from taurus_tools.transfer.state import (
    STATE_VERSION,
    AttemptRecord,
    CopyState,
    ShardCounts,
    ShardState,
    ShardStatus,
    WorkerStatus,
)
from taurus_tools.transfer.worker import COUNTERS
from taurus_tools.transfer.worker import main as worker_main
from taurus_tools.transfer.plan import ListingStats
from taurus_tools.transfer.work_dir import WorkDir

dm = test_parallel_copy.dm  # fixture: the local backend

DATA = Path(__file__).resolve().parents[1] / "data"
#: Where the capture ran; the fixture's paths start with it.
CAPTURED_ROOT = "/tmp/tt-a3c891b"
#: The entry of shard 1 that failed for good: a folder was in its way at the destination.
OBSTACLE = b"sub/two\nlines"


# =============================================================================== round trip
def full_state() -> CopyState:
    """A state with every field away from its default, names that are hard to carry."""
    hostile = os.fsdecode(b"new\nline \xff \"q\" -x")
    listing = ListingStats(files=3, links=1, dirs=2, bytes=1234, errors=1, messages=[f"cannot read {hostile}: x"])
    listing.special, listing.special_examples, listing.excluded = 1, ["pipe (FIFO)"], 4
    shard = ShardState(
        index=1,
        path=Path("/w/shards/shard-0001"),
        bytes=900,
        files=2,
        todo=Path("/w/runs/shard-0001.0.failed"),
        status=ShardStatus.FAILED,
        attempts=3,
        counts=ShardCounts(files=1, bytes=200, skipped=2, skipped_bytes=5, failed=1, verified=3, mismatches=1),
        pid=4242,
        job_name="copy-shard-1-abc",
        failed_list=Path("/w/runs/shard-0001.2.final"),
        messages={hostile: "Is a directory"},
        generic="shard command exited with code 1: no message",
        permanent=Path("/w/runs/shard-0001.permanent"),
        permanent_messages={hostile: "Is a directory"},
    )
    return CopyState(
        src="/s",
        dst="/d",
        plan='["/s", "/d", 2, "bytes", [], ""]',
        listing=listing,
        shards=[ShardState(index=0, path=Path("/w/shards/shard-0000"), bytes=1, files=1, todo=Path("/w/x")), shard],
        retries=2,
        results=[
            AttemptRecord(shard=1, attempt=0, start_time_ms=1, end_time_ms=5, bytes=200, files=1, exit_code=1,
                          worker_start_ms=3, host="node-1", job_id="77"),
            AttemptRecord(shard=0, attempt=0, start_time_ms=2, end_time_ms=4, bytes=1, files=1, exit_code=0),
        ],
        new_dst=True,
        made_dst=True,
        sweep_parts=True,
        folders_done=True,
        finished=True,
    )


class TestStateJson:
    def test_round_trip_through_a_file(self, tmp_path):
        state = full_state()
        work = WorkDir(tmp_path)
        state.save(work.state, work.state_tmp)
        assert not work.state_tmp.exists()
        again = CopyState.load(work.state)
        assert again == state
        assert again.to_json() == state.to_json()

    def test_the_format_is_explicit(self):
        data = full_state().to_json()
        assert data["version"] == STATE_VERSION == 2
        assert list(data) == [
            "version", "src", "dst", "plan", "listing", "shards", "retries", "results",
            "new_dst", "made_dst", "sweep_parts", "folders_done", "finished",
        ]
        assert data["shards"][1]["state"] == "failed" and data["shards"][1]["todo"] == "/w/runs/shard-0001.0.failed"
        assert data["results"][0] == {
            "shard": 1, "attempt": 0, "start_time_ms": 1, "end_time_ms": 5, "bytes": 200, "files": 1,
            "exit_code": 1, "worker_start_ms": 3, "host": "node-1", "job_id": "77",
        }
        json.dumps(data)  # plain JSON values only

    def test_counts_are_the_workers_counters(self):
        """The status file's counters (the worker's protocol) are the fields of ShardCounts."""
        assert tuple(ShardCounts().to_json()) == COUNTERS

    def test_worker_status(self, tmp_path):
        path = tmp_path / "status"
        assert WorkerStatus.read(path) is None  # not written yet
        path.write_text("{}")
        assert WorkerStatus.read(path) is None  # a tool that says nothing
        path.write_text('{"files": 2, "bytes": 10, "started_ms": 5, "host": "n1", "job_id": null, "done": true}')
        status = WorkerStatus.read(path)
        assert status == WorkerStatus(ShardCounts(files=2, bytes=10), started_ms=5, host="n1", done=True)
        path.write_text('{"files": 2, "bytes')  # half written: read again later
        assert WorkerStatus.read(path) is None

    def test_version_1_is_read(self):
        data = json.loads((DATA / "workdir-a3c891b.state.json").read_text())
        assert data["version"] == 1
        state = CopyState.from_json(data)
        assert state.version == 1
        assert [s.status for s in state.shards] == [
            ShardStatus.DONE, ShardStatus.FAILED, ShardStatus.RUNNING, ShardStatus.PENDING
        ]
        assert [(r.shard, r.attempt, r.exit_code) for r in state.results] == [(0, 0, 0), (1, 0, 1)]
        assert state.shards[1].messages == {"sub/two\nlines": "Is a directory"}
        assert state.shards[1].permanent == Path(CAPTURED_ROOT, "work/runs/shard-0001.permanent")
        assert state.listing == ListingStats(files=8, links=1, dirs=3, bytes=3600)
        written = state.to_json()
        assert written["version"] == 2
        assert [r["shard"] for r in written["results"]] == [0, 1]
        assert all("chunk_number" not in r for r in written["results"])

    @pytest.mark.parametrize("version", [None, 0, 3, 99, "2", True])
    def test_other_versions_are_refused(self, version):
        data = json.loads((DATA / "workdir-a3c891b.state.json").read_text())
        if version is None:
            del data["version"]
        else:
            data["version"] = version
        with pytest.raises(ConfigurationError, match="reads versions 1 and 2") as info:
            CopyState.from_json(data)
        assert ("has no state version" if version is None else f"has state version {version!r}") in str(info.value)


# =============================================================================== old work dir
def unpack_old_work_dir(root: Path, version=1) -> tuple:
    """The capture's source, destination and work dir under ``root``, its state's paths moved there.

    ``version``: the state's version as written (None: no version field).
    """
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.9.17, 3.11.4
    with tarfile.open(DATA / "workdir-a3c891b.tar.gz") as tar:
        tar.extractall(root, **safe)
    text = (DATA / "workdir-a3c891b.state.json").read_text()
    data = json.loads(text.replace(CAPTURED_ROOT, str(root)))
    if version is None:
        del data["version"]
    else:
        data["version"] = version
    (root / "work" / "state.json").write_text(json.dumps(data, indent=1))
    return root / "src", root / "dst", root / "work"


def record_launches(monkeypatch) -> list:
    """(shard, attempt, records) of every attempt a ParallelCopy launches."""
    launched = []
    real_launch = ParallelCopy._launch

    def launch(self, dm, queued):
        launched.append((queued.index, queued.attempt, Path(queued.records).relative_to(self.work_dir)))
        return real_launch(self, dm, queued)

    monkeypatch.setattr(ParallelCopy, "_launch", launch)
    return launched


class TestOldWorkDir:
    def test_resumes_where_the_old_release_stopped(self, tmp_path, dm, monkeypatch):
        src, dst, work = unpack_old_work_dir(tmp_path)
        launched = record_launches(monkeypatch)
        options = dict(workers=1, shards=4, keep_work_dir=True)
        # The folder in the way is still there: that entry fails again, and only it.
        result = pcopy(src, dst, work, dm, **options).run()
        assert not result.ok
        assert result.failed_messages == ["'sub/two\\nlines': Is a directory"]
        assert result.files_failed == 1
        # Shard 0 was done; shard 1 tries only what it failed for good; 2 (its driver was
        # killed while it ran) and 3 (never started) copy everything.
        assert sorted(launched) == [
            (1, 0, Path("runs/shard-0001.0.final")),
            (2, 0, Path("shards/shard-0002")),
            (3, 0, Path("shards/shard-0003")),
        ]
        report = read_report(result.report)
        old = [(r["chunk_number"], r["attempt"], r["exit_code"]) for r in report["benchmark_results"][:2]]
        assert old == [(1, 0, 0), (2, 0, 1)], "the old run's attempts are kept in the report"
        saved = json.loads((work / "state.json").read_text())
        assert saved["version"] == STATE_VERSION
        assert [s["state"] for s in saved["shards"]] == ["done", "failed", "done", "done"]
        # The folder is moved out of the way: the next run copies the one entry and is done.
        shutil.rmtree(fs(dst / OBSTACLE.decode()))
        launched.clear()
        result = pcopy(src, dst, work, dm, **options).run()
        assert result.ok, result.failed_messages
        assert launched == [(1, 0, Path("runs/shard-0001.0.final"))]  # what the run before failed for good
        assert_same_tree(src, dst)
        assert result.files_planned == 9
        # Every entry was copied once over the three runs, by the old release or this one.
        assert result.files_copied == 9 and result.files_skipped == 0
        chunks = [(r["chunk_number"], r["exit_code"]) for r in read_report(result.report)["benchmark_results"]]
        assert chunks[:2] == [(1, 0), (2, 1)] and sorted(chunks[2:]) == [(2, 0), (2, 1), (3, 0), (4, 0)]

    @pytest.mark.parametrize("version", [None, 99])
    def test_a_version_it_cannot_read_is_refused_and_kept(self, tmp_path, dm, version):
        src, dst, work = unpack_old_work_dir(tmp_path, version)

        def contents():
            kept = sorted(n for n in os.listdir(fs(work)) if n != b".lock")  # the lock is taken, that is all
            return kept, (work / "state.json").read_text(), sorted(os.listdir(fs(dst)))

        before = contents()
        with pytest.raises(ConfigurationError) as info:
            pcopy(src, dst, work, dm, workers=1, shards=4).run()
        message = str(info.value)
        assert f"cannot resume the copy in the work dir {work}" in message
        assert ("has no state version" if version is None else "has state version 99") in message
        assert "resume=False" in message and "--no-resume" in message and "--work-dir" in message
        assert contents() == before, "a refused work dir is left as it was"
        # Starting over is the way out that the message names.
        shutil.rmtree(fs(dst / OBSTACLE.decode()))
        result = pcopy(src, dst, work, dm, workers=1, shards=4, resume=False).run()
        assert result.ok, result.failed_messages
        assert_same_tree(src, dst)

    def test_refusal_on_the_command_line(self, tmp_path, capsys):
        src, dst, work = unpack_old_work_dir(tmp_path, 99)
        assert cli(src, dst, "--workers", "1", "--shards", "4", "--work-dir", work) == 2
        err = capsys.readouterr().err
        assert "cannot resume the copy in the work dir" in err and "--no-resume" in err
        assert "Traceback" not in err


# =============================================================================== work dir
class TestWorkDir:
    def test_paths(self, tmp_path):
        work = WorkDir(tmp_path / "w")
        root = tmp_path / "w"
        assert (work.state, work.state_tmp, work.listing, work.listing_tmp) == (
            root / "state.json", root / "state.tmp", root / "listing", root / "listing.tmp"
        )
        assert (work.lock_file, work.report, work.folders_status) == (
            root / ".lock", root / "result_all.json", root / "runs" / "folders.status"
        )
        assert work.shard(3) == root / "shards" / "shard-0003"
        files = work.attempt(3, 1)
        runs = root / "runs"
        assert files.status == runs / "shard-0003.1.status"
        assert files.failed == runs / "shard-0003.1.failed"
        assert files.messages == runs / "shard-0003.1.failed.messages"
        assert files.permanent == runs / "shard-0003.1.failed.permanent"
        assert files.paths == runs / "shard-0003.1.paths"
        assert work.kept_permanent(3) == runs / "shard-0003.permanent"
        assert work.final_list(3, 1) == runs / "shard-0003.1.final"

    def test_default_location_is_unchanged(self, monkeypatch, tmp_path):
        """Work dirs of earlier releases are found again: the same hash of the same paths."""
        monkeypatch.setenv("HOME", str(tmp_path))
        work = WorkDir.default_for("/data/src", "/data/dst")
        assert work.root == tmp_path / ".cache" / "taurus-tools" / "copies" / "10cbb1027f1da5a5"

    def test_the_worker_writes_the_files_it_is_told_and_the_work_dir_names(self, tmp_path):
        """The worker derives the messages and permanent files from --failed as WorkDir does."""
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "a", b"a")
        write(src / "b", b"b")
        (dst / "b").mkdir(parents=True)  # a folder in the way: fails for good
        records = tmp_path / "records"
        records.write_bytes(b"f\t1\t0\ta\0f\t1\t0\tb\0f\t1\t0\tmissing\0")
        work = WorkDir(tmp_path / "w")
        work.runs.mkdir(parents=True)
        files = work.attempt(0, 0)
        argv = ["--src", str(src), "--dst", str(dst), "--shard", str(records), "--status", str(files.status),
                "--failed", str(files.failed)]
        assert worker_main(argv) == 1
        assert sorted(p.name for p in work.runs.iterdir()) == sorted(
            p.name for p in (files.status, files.failed, files.messages, files.permanent)
        )
        assert files.permanent.read_bytes() == b"f\t1\t0\tb\0f\t1\t0\tmissing\0"
        assert [json.loads(line)["path"] for line in files.messages.read_text().splitlines()] == ["b", "missing"]

    def test_a_copy_writes_only_paths_the_work_dir_names(self, tmp_path, dm, monkeypatch):
        """After a copy with retries and a permanent failure, every file in the work dir is
        one WorkDir names: no path is made up anywhere else."""
        src, dst, work_root = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        for i in range(6):
            write(src / f"d{i % 2}" / f"f{i}", b"%d" % i * (i + 1))
        (dst / "d0" / "f0").mkdir(parents=True)  # fails for good
        real_launch = ParallelCopy._launch

        def launch(self, dm_, queued):
            out = real_launch(self, dm_, queued)
            if queued.index == 1 and queued.attempt == 0:  # dies without a word: retried
                return (type(out[0])(("sh", "-c", "exit 1"), name=out[0].name),) + tuple(out[1:])
            return out

        monkeypatch.setattr(ParallelCopy, "_launch", launch)
        result = pcopy(src, dst, work_root, dm, shards=3, retries=2, keep_work_dir=True).run()
        assert not result.ok and result.retries >= 1
        work = WorkDir(work_root)
        named = {work.state, work.listing, work.lock_file, work.report, work.shards, work.runs, work.folders_status}
        for index in range(3):
            named |= {work.shard(index), work.kept_permanent(index)}
            for attempt in range(3):
                files = work.attempt(index, attempt)
                named |= {files.status, files.failed, files.messages, files.permanent, files.paths}
                named.add(work.final_list(index, attempt))
        found = {Path(os.fsdecode(os.path.join(d, n))) for d, ds, fs_ in os.walk(work_root) for n in ds + fs_}
        assert found and found <= named, sorted(found - named)
        assert work.kept_permanent(0) in found and work.final_list(0, 0) in found

    def test_clean_removes_only_the_copys_own_files(self, tmp_path):
        work = WorkDir(tmp_path / "w")
        for path in (work.state, work.listing, work.shard(0), work.attempt(0, 0).status, work.report):
            write(path, b"x")
        write(work.root / "notes.txt", b"mine")
        work.clean()
        assert sorted(os.listdir(work.root)) == ["notes.txt", "result_all.json"]
        work.clean(everything=True)
        assert os.listdir(work.root) == ["notes.txt"]


class TestNodeFailureRecords:
    """How an attempt that a Slurm node failure ended is kept (the report's node_failures)."""

    def test_slurm_state_and_nodes_round_trip_and_name_the_failed_nodes(self):
        ok = AttemptRecord(shard=0, attempt=0, start_time_ms=1, end_time_ms=2, bytes=3, files=1, exit_code=0)
        lost = AttemptRecord(
            shard=1, attempt=0, start_time_ms=1, end_time_ms=2, bytes=0, files=0, exit_code=1,
            job_id="12", slurm_state="NODE_FAIL", nodes="n2",
        )  # fmt: skip
        failed = AttemptRecord(
            shard=2, attempt=0, start_time_ms=1, end_time_ms=2, bytes=0, files=0, exit_code=1,
            job_id="13", slurm_state="FAILED", nodes="n3",
        )  # fmt: skip
        assert "slurm_state" not in ok.to_json() and "nodes" not in ok.to_json()  # the old format
        back = [AttemptRecord.from_json(json.loads(json.dumps(r.to_json())), 2) for r in (ok, lost, failed)]
        assert back == [ok, lost, failed]
        assert [r.node_failed for r in back] == [False, True, False]
        state = CopyState(src="s", dst="d", plan="p", results=back + [lost])
        assert state.failed_nodes() == ["n2"]

    def test_a_missing_interpreter_or_worker_is_named(self):
        from taurus_tools.transfer.parallel_copy import _missing_path

        assert _missing_path("slurmstepd: error: execve(): /opt/py env/bin/python: No such file or directory\n") == (
            "/opt/py env/bin/python"
        )
        assert _missing_path(
            "/usr/bin/python3: can't open file '/sw/tt/transfer/worker.py': [Errno 2] No such file or directory\n"
        ) == "/sw/tt/transfer/worker.py"
        assert _missing_path("srun: error: n1: task 0: Exited with exit code 3\n") is None
