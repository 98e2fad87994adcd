"""What an independent fault suite found in the parallel copy (issue 10), each as a test.

Writing outside the destination, a user's file clobbered by a temporary name, legal long
names, permanent errors retried, tracebacks instead of messages, and outcomes nobody was
told about.  Real copies on the local backend; permission cases drop root's file access.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import test_parallel_copy
from test_parallel_copy import (
    BLOCK,
    MTIME0,
    assert_same_tree,
    cli,
    cli_copy_argv,
    fs,
    growing_until_a_copy_fails,
    part_files,
    pcopy,
    read_report,
    rewrite_source_after_copying,
    unprivileged,
    write,
)

import taurus_tools.transfer.worker as copy_worker
import taurus_tools.transfer.parallel_copy as pc_mod
from taurus_tools import (
    ConfigurationError,
    CopyConfig,
    ParallelCopy,
    PathNotWritableError,
    SourceNotFoundError,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_slurm_env")]
dm = test_parallel_copy.dm  # fixtures: the local backend, and a check that root's file access can be dropped
denied_file = test_parallel_copy.denied_file


def tree_bytes(root) -> dict:
    """Every file under ``root`` (outside a copy's destination, too): path -> content."""
    out = {}
    for dirpath, _dirs, names in os.walk(fs(root)):
        for name in names:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as fh:
                out[full] = fh.read()
    return out


def run_worker_sorting(tmp_path, src, dst, records: bytes):
    """Run a worker on ``records`` (it must fail some); return what it wrote to retry, what
    it kept aside as permanent, and its messages."""
    (tmp_path / "shard").write_bytes(records)
    with open(tmp_path / "failed", "wb") as failed, open(tmp_path / "permanent", "wb") as permanent, open(
        tmp_path / "messages", "w"
    ) as messages:
        status = str(tmp_path / "st")
        worker = copy_worker.Worker(fs(src), fs(dst), "size", status, failed, messages, permanent=permanent)
        assert worker.run(str(tmp_path / "shard")) == 1
    lines = [json.loads(x) for x in (tmp_path / "messages").read_text().splitlines()]
    return (tmp_path / "failed").read_bytes(), (tmp_path / "permanent").read_bytes(), lines


def growing_file_and_a_link_in_the_way(tmp_path):
    """``src`` with a big ``grows.log`` and ``sub/f.txt``; ``dst`` with a link ``sub`` to a
    folder outside: a transient and a permanent failure.  Returns src, dst, work."""
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    write(src / "grows.log", BLOCK * 64, MTIME0)
    write(src / "sub" / "f.txt", b"f", MTIME0)
    outside.mkdir()
    dst.mkdir()
    os.symlink(outside, dst / "sub")
    return src, dst, tmp_path / "work"


# ======================================================================= outside the destination
class TestNothingWrittenOutside:
    def test_files_from_entries_that_leave_the_source_are_refused(self, tmp_path):
        src, dst = tmp_path / "s" / "src", tmp_path / "d" / "dst"
        write(src / "a.txt", b"a", MTIME0)
        write(tmp_path / "s" / "victim.txt", b"read from outside the source", MTIME0)
        write(tmp_path / "d" / "victim.txt", b"precious", MTIME0)
        listing = tmp_path / "list"
        listing.write_text(f"a.txt\n../victim.txt\nsub/../../victim.txt\n{tmp_path / 'd' / 'victim.txt'}\n")
        proc = unprivileged(cli_copy_argv(src, dst, tmp_path / "w", tmp_path / "r.json", "--files-from", listing))
        assert proc.returncode == 1, proc.stderr
        assert (tmp_path / "d" / "victim.txt").read_bytes() == b"precious"
        assert (dst / "a.txt").read_bytes() == b"a"
        assert sorted(os.listdir(dst)) == ["a.txt"]
        messages = read_report(tmp_path / "r.json")["failed_messages"]
        assert len(messages) == 3 and all("refused" in m for m in messages), messages
        assert "'../victim.txt': refused: it leaves the source with '..'" in messages
        assert "Traceback" not in proc.stderr

    def test_the_worker_refuses_records_that_leave_the_destination(self, tmp_path):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "ok", b"ok", MTIME0)
        write(tmp_path / "victim.txt", b"precious", MTIME0)
        records = b"".join(
            b"f\t2\t%d\t%s\0" % (MTIME0, rel) for rel in (b"ok", b"../victim.txt", b"a/../../victim.txt", b"/tmp/x")
        )
        failed, permanent, lines = run_worker_sorting(tmp_path, src, dst, records)
        assert (tmp_path / "victim.txt").read_bytes() == b"precious"
        assert (dst / "ok").read_bytes() == b"ok"
        assert failed == b"", "a refused path is retried"
        assert permanent == records[records.index(b"f\t2", 1):]
        assert [m["permanent"] for m in lines] == [True, True, True]
        assert all("refused" in m["error"] for m in lines)

    def test_no_write_through_a_link_in_the_destination(self, tmp_path, dm):
        """A destination that holds a link where the source has a folder: refused, at once, said."""
        src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
        write(src / "top.txt", b"top", MTIME0)
        write(src / "sub" / "f.txt", b"f", MTIME0)
        write(src / "sub" / "deeper" / "g.txt", b"g", MTIME0)
        outside.mkdir()
        (outside / "deeper").mkdir()
        dst.mkdir()
        os.symlink(outside, dst / "sub")
        result = pcopy(src, dst, tmp_path / "work", dm, retries=2).run()
        assert not result.ok
        assert os.listdir(outside) == ["deeper"] and os.listdir(outside / "deeper") == []
        assert (dst / "top.txt").read_bytes() == b"top"
        assert result.retries == 0, "a refused path was retried"
        failed = [m for m in result.failed_messages if "symbolic link at the destination" in m]
        assert len(failed) == len(result.failed_messages) == 4, result.failed_messages  # 2 folders, 2 files
        assert result.files_failed == 2
        assert sorted(m.split(": ")[0] for m in failed) == ["sub/", "sub/deeper/", "sub/deeper/g.txt", "sub/f.txt"]
        # Once the user has removed the link, running the copy again copies what was refused.
        os.unlink(dst / "sub")
        again = pcopy(src, dst, tmp_path / "work", dm).run()
        assert again.ok, again.failed_messages
        assert_same_tree(src, dst)


# ======================================================================= temporary names
class TestTemporaryNames:
    def test_a_source_file_named_like_a_temporary_file_is_never_clobbered(self, tmp_path, dm):
        """The fault suite lost ``.victim.txt.tt-part`` in 2 to 5 runs of 5; now 0 of 5."""
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / ".victim.txt.tt-part", b"the user's own file" * 1000, MTIME0)
        write(src / ".tt-part-0-0", b"another user's file", MTIME0)
        for i in range(40):  # enough files that both workers run at once
            write(src / f"f{i:02d}", BLOCK[: 20000 + i], MTIME0)
        for run in range(5):
            write(src / "victim.txt", b"version %d" % run * (run + 1), MTIME0 + run + 1)
            result = pcopy(src, dst, tmp_path / "work", dm, workers=2, shards=4).run()
            assert result.ok, result.failed_messages
            assert_same_tree(src, dst)  # no leftover either: it would be an extra file

    @pytest.mark.parametrize("atomic", [False, True], ids=["direct", "atomic"])
    def test_legal_long_names_copy_on_every_path(self, tmp_path, dm, atomic):
        src, dst = tmp_path / "src", tmp_path / "dst"
        names = [b"a" * 255, b"b" * 254, b"c" * 247, "ü".encode() * 127 + b"x"]
        assert all(len(n) <= 255 for n in names) and len(names[3]) == 255
        for n in names:
            write(os.path.join(fs(src), n), n, MTIME0)
            write(os.path.join(fs(src), b"d" * 200, n), n * 2, MTIME0)
        result = pcopy(src, dst, tmp_path / "work", dm, atomic=atomic).run()
        assert result.ok, result.failed_messages
        assert_same_tree(src, dst)
        # Changed files go through the temporary name: still every legal name.
        for n in names:
            write(os.path.join(fs(src), n), n + b"changed", MTIME0 + 1)
        again = pcopy(src, dst, tmp_path / "work", dm, atomic=atomic).run()
        assert again.ok, again.failed_messages
        assert again.files_copied == len(names)
        assert_same_tree(src, dst)
        assert part_files(dst) == []


# ======================================================================= permanent or transient
class TestErrorClasses:
    def test_worker_sorts_failures_into_permanent_and_transient(self, tmp_path, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "changes.bin", b"a" * 1000, MTIME0)
        rewrite_source_after_copying(monkeypatch, src / "changes.bin", b"b" * 1000, MTIME0 + 1)
        missing = b"f\t5\t%d\tvanished.bin\0" % MTIME0
        changes = b"f\t1000\t%d\tchanges.bin\0" % MTIME0
        failed, permanent, lines = run_worker_sorting(tmp_path, src, dst, missing + changes)
        assert failed == changes, "worth another try"
        assert permanent == missing, "no retry can bring it back"
        assert [(m["path"], m["permanent"]) for m in lines] == [("vanished.bin", True), ("changes.bin", False)]

    def test_permanent_failures_reported_at_once_transient_ones_retried(self, tmp_path, dm):
        """One shard with both: the link (permanent) is not retried, the growing file is, alone."""
        src, dst, work, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "work", tmp_path / "outside"
        write(src / "grows.log", BLOCK * 64, MTIME0)
        write(src / "sub" / "f.txt", b"f", MTIME0)
        for i in range(5):
            write(src / f"small-{i}", b"%d" % i, MTIME0)
        outside.mkdir()
        dst.mkdir()
        os.symlink(outside, dst / "sub")
        with growing_until_a_copy_fails(src / "grows.log", work):
            result = pcopy(src, dst, work, dm, workers=1, shards=1, retries=3, keep_work_dir=True).run()
        assert not result.ok
        assert result.retries >= 1
        assert (dst / "grows.log").read_bytes() == (src / "grows.log").read_bytes()
        assert os.listdir(outside) == []
        assert result.files_failed == 1, result.failed_messages
        assert [m.split(": ")[0] for m in result.failed_messages] == ["sub/", "sub/f.txt"]
        assert all("symbolic link at the destination" in m for m in result.failed_messages)
        retry = json.loads((work / "runs" / "shard-0000.1.status").read_text())
        assert retry["files"] + retry["failed"] == 1 and retry["skipped"] == 0, "the retry was not only grows.log"

    def test_an_attempt_that_dies_after_permanent_failures_loses_nothing(self, tmp_path, dm):
        """Exit 1 without the worker's end (a crash, srun refusing) is no list of failures:
        the whole attempt is retried, and what failed for good is still reported."""
        src, dst, work = growing_file_and_a_link_in_the_way(tmp_path)
        pc = pcopy(src, dst, work, dm, workers=1, shards=1, retries=3, keep_work_dir=True)
        real_launch = pc._launch
        attempts = []

        def launch(dm_, task):
            launch_, status, failed = real_launch(dm_, task)
            attempts.append(task.attempt)
            if task.attempt == 1:  # dies before it could say anything
                return type(launch_)(("sh", "-c", "exit 1"), name=launch_.name), status, failed
            return launch_, status, failed

        pc._launch = launch
        with growing_until_a_copy_fails(src / "grows.log", work):
            result = pc.run()
        assert attempts[:3] == [0, 1, 2]
        assert not result.ok
        assert [m.split(": ")[0] for m in result.failed_messages] == ["sub/", "sub/f.txt"]
        assert (dst / "grows.log").read_bytes() == (src / "grows.log").read_bytes()
        os.unlink(dst / "sub")
        again = pcopy(src, dst, work, dm, workers=1, shards=1).run()
        assert again.ok, again.failed_messages
        assert_same_tree(src, dst)

    def test_a_resume_never_takes_an_earlier_runs_files_for_its_own(self, tmp_path, dm):
        """Attempt numbers start again at 0 on a resume: run 1's lists must not count."""
        src, dst, work = growing_file_and_a_link_in_the_way(tmp_path)
        options = dict(workers=1, shards=1, keep_work_dir=True)
        with growing_until_a_copy_fails(src / "grows.log", work):
            first = pcopy(src, dst, work, dm, retries=0, **options).run()
        assert not first.ok and first.files_failed == 2, first.failed_messages
        assert (work / "runs" / "shard-0000.0.failed.permanent").exists()
        for old in (work / "runs").glob("*.messages"):  # so that the writer below grows again
            old.unlink()
        os.unlink(dst / "sub")
        with growing_until_a_copy_fails(src / "grows.log", work):
            second = pcopy(src, dst, work, dm, retries=3, **options).run()
        assert second.ok, second.failed_messages
        assert second.retries >= 1, "the growing file did not fail once: the case was not exercised"
        assert_same_tree(src, dst)


# ======================================================================= temporary files left behind
class TestLeftovers:
    def test_a_rerun_with_another_plan_removes_a_killed_runs_temporary_files(self, tmp_path, dm, monkeypatch):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        for i in range(6):
            write(src / "d" / f"f{i}", b"%d" % i, MTIME0)
        write(dst / "d" / "f0", b"old", MTIME0 - 1)
        # What a run with 4 shards, killed mid-file, leaves: its state and a temporary file.
        killed = pcopy(src, dst, work, dm, shards=4, keep_work_dir=True, dry_run=False)
        monkeypatch.setattr(killed, "_fan_out", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            killed.run()
        tag = pc_mod.part_tag_of(killed.src, killed.dst, killed.work_dir)
        write(dst / "d" / f".tt-part-{tag}-3", b"half a file")
        write(dst / f".tt-part-{tag}-2", b"half another")
        write(dst / "d" / ".tt-part-0123456789ab-1", b"not ours: another copy's")
        result = pcopy(src, dst, work, dm, shards=2).run()  # another plan: starts over
        assert result.ok, result.failed_messages
        assert sorted(os.listdir(dst / "d")) == [".tt-part-0123456789ab-1"] + [f"f{i}" for i in range(6)]
        assert sorted(os.listdir(dst)) == ["d"]

    def test_a_link_that_cannot_replace_a_folder_leaves_no_temporary_link(self, tmp_path):
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.mkdir()
        os.symlink("target", src / "l")
        (dst / "l").mkdir(parents=True)
        write(dst / "l" / "inside", b"x")
        failed, permanent, lines = run_worker_sorting(tmp_path, src, dst, b"l\t0\t%d\tl\0" % MTIME0)
        assert sorted(os.listdir(dst)) == ["l"] and os.listdir(dst / "l") == ["inside"]
        assert lines and lines[0]["path"] == "l"


# ======================================================================= user errors: messages
class TestUserErrorsBeforeWork:
    def test_report_into_an_existing_folder(self, tmp_path, capsys):
        src, dst, reports = tmp_path / "src", tmp_path / "dst", tmp_path / "reports"
        write(src / "a", b"a")
        reports.mkdir()
        assert cli(src, dst, "--report", reports, "--work-dir", tmp_path / "w") == 0
        assert read_report(reports / "result_all.json")["ok"] is True
        assert sorted(os.listdir(reports)) == ["result_all.json"]

    def test_work_dir_that_is_a_file_is_refused_before_anything_is_copied(self, tmp_path, capsys):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "a", b"a")
        work.write_text("not a folder")
        assert cli(src, dst, "--work-dir", work) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [f"taurus-tools: error: work dir {work} exists and is not a folder"]
        assert not dst.exists()

    def test_destination_parent_not_writable(self, tmp_path, denied_file):
        src, parent = tmp_path / "src", tmp_path / "readonly"
        write(src / "a", b"a")
        parent.mkdir()
        parent.chmod(0o555)
        try:
            proc = unprivileged(cli_copy_argv(src, parent / "dst", tmp_path / "w", tmp_path / "r.json"))
        finally:
            parent.chmod(0o755)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"taurus-tools: error: cannot create the destination {parent / 'dst'}: Permission denied"
        ]
        assert not (tmp_path / "r.json").exists()

    def test_report_in_a_folder_that_cannot_be_written(self, tmp_path, denied_file):
        src, dst, parent = tmp_path / "src", tmp_path / "dst", tmp_path / "readonly"
        write(src / "a", b"a")
        parent.mkdir()
        parent.chmod(0o555)
        try:
            proc = unprivileged(cli_copy_argv(src, dst, tmp_path / "w", parent / "r.json"))
        finally:
            parent.chmod(0o755)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "report" in proc.stderr
        assert not dst.exists(), "the copy started although its report could not be written"

    def test_an_existing_destination_need_not_be_writable_here(self, tmp_path, dm, monkeypatch):
        """Through the site's tools only the data-transfer nodes may write it (``/projects``)."""
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "a", b"a")
        dst.mkdir()
        real_access = pc_mod.os.access
        monkeypatch.setattr(pc_mod.os, "access", lambda p, mode: Path(p) != dst and real_access(p, mode))
        assert pcopy(src, dst, tmp_path / "w", dm, dry_run=True).run().ok
        assert pcopy(src, dst, tmp_path / "w", dm).run().ok

    def test_source_that_is_a_link_loop_or_dangling(self, tmp_path, dm):
        os.symlink("loop", tmp_path / "loop")
        with pytest.raises(SourceNotFoundError, match="is a symbolic link loop"):
            ParallelCopy(tmp_path / "loop", tmp_path / "dst", datamover=dm)
        os.symlink("nowhere", tmp_path / "dangling")
        with pytest.raises(SourceNotFoundError, match="is a symbolic link to 'nowhere', which does not exist"):
            ParallelCopy(tmp_path / "dangling", tmp_path / "dst", datamover=dm)

    def test_exclude_none_and_wrong_types(self, tmp_path, dm):
        assert CopyConfig(exclude=None, exclude_nodes=None).exclude == ()
        assert CopyConfig(exclude="*.tmp").exclude == ("*.tmp",)
        for bad in (5, ["ok", 3], [""]):
            with pytest.raises(ConfigurationError, match="exclude must be a string or a sequence"):
                CopyConfig(exclude=bad)
        src = tmp_path / "src"
        write(src / "a", b"a")
        assert pcopy(src, tmp_path / "dst", tmp_path / "w", dm, exclude=None).run().ok

    def test_path_not_writable_is_a_permission_error(self):
        err = PathNotWritableError("cannot create the destination /x: Permission denied")
        assert isinstance(err, PermissionError)
        import pickle

        assert str(pickle.loads(pickle.dumps(err))) == str(err)


# ======================================================================= outcomes that are said
class TestSaidOutcomes:
    def test_everything_excluded_is_said(self, tmp_path, capsys):
        src, dst = tmp_path / "src", tmp_path / "dst"
        for name in ("a", "b", "c/d"):
            write(src / name, b"x")
        assert cli(src, dst, "--exclude", "*", "--work-dir", tmp_path / "w", "--report", tmp_path / "r.json") == 0
        out = capsys.readouterr().out
        assert "nothing to copy: every entry of" in out and "3 entries excluded" in out, out
        assert read_report(tmp_path / "r.json")["files_excluded"] == 3

    def test_special_files_are_counted_and_named(self, tmp_path, dm, capsys):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "data", b"data")
        os.mkfifo(src / "pipe")
        os.makedirs(src / "d")
        os.mkfifo(src / "d" / "another pipe")
        assert cli(src, dst, "--work-dir", tmp_path / "w", "--report", tmp_path / "r.json") == 0
        out = capsys.readouterr().out
        assert "2 special files (FIFOs, sockets, devices: not data) not copied" in out, out
        report = read_report(tmp_path / "r.json")
        assert report["special_skipped"] == 2
        assert sorted(report["special_examples"]) == ["d/another pipe (FIFO)", "pipe (FIFO)"]
        assert sorted(os.listdir(dst)) == ["d", "data"]
