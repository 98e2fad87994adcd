"""ParallelCopy on the local backend, for real: byte-identical copies of hostile trees,
the report, bad input, permission denied, ``kill -9`` of the driver and of a worker
followed by a resume, a source changing during the copy, verify and repair, background
use (start/wait/cancel), dry runs and ``taurus-tools copy``.

Every copy gets its own ``work_dir`` (never ``~/.cache``) and ``progress=False``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from helpers import HOSTILE_NAMES, alive, interrupt_main_thread_inside, scripts_below, wait_until

import taurus_tools.datamover.backends as backends_mod
import taurus_tools.transfer.worker as copy_worker
import taurus_tools.transfer.parallel_copy as pc_mod
from taurus_tools import (
    ConfigurationError,
    CopyCancelledError,
    CopyConfig,
    CopyResult,
    Datamover,
    InsufficientSpaceError,
    ParallelCopy,
    SourceNotFoundError,
    TaurusToolsError,
)
from taurus_tools.cli.main import main
from taurus_tools.transfer.plan import read_entries

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_slurm_env")]

HOSTILE = HOSTILE_NAMES
REPORT_KEYS = {
    "total_retries",
    "total_size_gib",
    "failed_messages",
    "benchmark_results",
    "backend",
    "workers",
    "files_verified",
    "mismatches",
    "files_skipped",
}
CHUNK_KEYS = {
    "start_time_ms",
    "end_time_ms",
    "duration_ms",
    "average_mbps",
    "total_bytes_transferred",
    "total_number_of_files",
    "chunk_number",
}
BLOCK = os.urandom(1 << 20)
MTIME0 = 1_600_000_000_000_000_000  # a past, exact nanosecond modification time


# =============================================================================== helpers
@pytest.fixture
def dm():
    return Datamover("local")


def fs(path) -> bytes:
    return os.fsencode(path)


def write(path, data: bytes = b"x", mtime_ns=None) -> None:
    path = fs(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def pcopy(src, dst, work, dm, **options) -> ParallelCopy:
    options.setdefault("retry_delay_s", 0.05)
    options.setdefault("workers", 2)  # each shard is a Python process: keep the test machine calm
    return ParallelCopy(src, dst, datamover=dm, progress=False, work_dir=work, **options)


def snapshot(root, mtimes: bool = True) -> dict:
    """Everything under ``root``: files (content hash, mtime, mode), links (target), folders (mtime, mode)."""
    out = {}
    top = fs(root)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, top)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", st.st_mtime_ns if mtimes else None, stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.blake2b(digest_size=16)
                with open(full, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        digest.update(block)
                mtime = st.st_mtime_ns if mtimes else None
                out[rel] = ("f", st.st_size, digest.hexdigest(), mtime, stat.S_IMODE(st.st_mode))
    return out


def assert_same_tree(src, dst, mtimes: bool = True) -> dict:
    a, b = snapshot(src, mtimes), snapshot(dst, mtimes)
    if a != b:
        missing = sorted(set(a) - set(b))[:10]
        extra = sorted(set(b) - set(a))[:10]
        differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])[:10]
        pytest.fail(f"trees differ: missing {missing}, extra {extra}, different {differ}")
    return a


def part_files(root) -> list:
    found = []
    for dirpath, dirnames, filenames in os.walk(fs(root)):
        found += [os.path.join(dirpath, n) for n in filenames + dirnames if n.startswith(b".tt-part-")]
    return found


def make_tree(root: Path, outside: Path) -> dict:
    """A tree with hostile names, nested and empty folders, zero-byte files and links.

    Returns the counts a copy should plan: files, links, bytes.
    """
    rng = random.Random(7)
    top = fs(root)
    files = links = size = 0
    for d in (b"", b"sub dir", b"a/b/c", b"new\nline dir"):
        for i, name in enumerate(HOSTILE):
            n = rng.choice([0, 1, 100, 4096, 65536, 300_000])
            write(os.path.join(top, d, name), os.urandom(n), MTIME0 + i * 1_000_000_007 + len(d))
            files += 1
            size += n
    write(os.path.join(top, b"big", b"three.mib"), BLOCK * 3, MTIME0 + 5)
    files += 1
    size += 3 << 20
    for i in range(5):
        write(os.path.join(top, b"zero", b"z%d" % i), b"", MTIME0 + i)
        files += 1
    os.makedirs(os.path.join(top, b"empty"))
    os.makedirs(os.path.join(top, b"a/empty too/deeper"))
    outside.mkdir(exist_ok=True)
    (outside / "outside-only.dat").write_bytes(b"must not be copied")
    for name, target in [
        (b"link-to-outside-folder", fs(outside)),
        (b"a/rel-link", b"b/c/" + HOSTILE[0]),
        (b"broken link", b"/nonexistent/\xff"),
        (b"sub dir/dir-link", b"../a"),
        (b"\xfflink", HOSTILE[7]),
    ]:
        os.symlink(target, os.path.join(top, name))
        links += 1
    return {"files": files, "links": links, "bytes": size}


@pytest.fixture(scope="module")
def big_src(tmp_path_factory) -> Path:
    """~760 MB in 600 files of 1 MiB and 10 of 16 MiB: copying it takes about a second."""
    root = tmp_path_factory.mktemp("big") / "src"
    for i in range(600):
        write(root / f"d{i % 12:02d}" / f"f{i:04d}.bin", b"%08d" % i + BLOCK, MTIME0 + i)
    for i in range(10):
        write(root / f"large-{i}.bin", b"%08d" % i + BLOCK * 16, MTIME0 + i)
    return root


def complete_files(dst: Path, src: Path) -> dict:
    """Destination files that look complete, path -> inode.

    Complete means what a resume takes as done: the source's size and modification time.
    A file being copied into a new destination is written under its own name and gets
    the source's time last, so it never looks complete before it is.
    """
    out = {}
    dst_b, src_b = fs(dst), fs(src)
    for dirpath, _dirs, filenames in os.walk(dst_b):
        for n in filenames:
            if not n.startswith(b".tt-part-"):
                full = os.path.join(dirpath, n)
                try:
                    d = os.lstat(full)
                    s = os.lstat(src_b + full[len(dst_b) :])
                except FileNotFoundError:
                    continue
                if d.st_size == s.st_size and d.st_mtime_ns == s.st_mtime_ns:
                    out[full] = d.st_ino
    return out


def assert_whole(files, dst: Path, src: Path) -> None:
    """Files that look complete (see complete_files) have the source's content."""
    dst_b, src_b = fs(dst), fs(src)
    for full in files:
        with open(full, "rb") as a, open(src_b + full[len(dst_b) :], "rb") as b:
            assert a.read() == b.read(), f"{full!r} looks complete but is not"


def copy_workers(pid: int, script: str = "transfer/worker.py") -> list:
    """psutil processes running the shard copy worker (``.../transfer/worker.py``) below ``pid``."""
    return scripts_below(pid, script)


def kill_all(procs) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def unfinished_shard_files(work: Path, dst: Path) -> set:
    """Destination paths of the files in shards that the saved state does not call done."""
    state = json.loads((work / "state.json").read_text())
    out = set()
    for s in state["shards"]:
        if s["state"] != "done":
            out |= {
                os.path.join(fs(dst), e.path) for e, _ in read_entries(s["path"]) if e.kind == "f"
            }
    return out


def read_report(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# =============================================================================== copying
class TestCopy:
    def test_hostile_tree_is_byte_identical(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        counts = make_tree(src, tmp_path / "outside")
        result = pcopy(src, dst, tmp_path / "work", dm, workers=3).run()
        assert result.ok, result.failed_messages
        snap = assert_same_tree(src, dst)
        assert snap[b"link-to-outside-folder"] == ("l", fs(tmp_path / "outside"))
        assert snap[b"empty"][0] == "d" and snap[b"a/empty too/deeper"][0] == "d"
        assert not (dst / "link-to-outside-folder").resolve().is_relative_to(dst.resolve())
        assert not any(b"outside-only" in p for p in snap), "a link's target was copied"
        assert part_files(dst) == []
        assert isinstance(result, CopyResult)
        assert result.files_planned == counts["files"] + counts["links"]
        assert result.bytes_planned == counts["bytes"]
        assert result.files_copied == result.files_planned
        assert result.bytes_copied == counts["bytes"]
        assert (
            result.files_skipped,
            result.bytes_skipped,
            result.files_failed,
            result.retries,
        ) == (0, 0, 0, 0)
        assert result.failed_messages == []
        assert result.files_verified == counts["files"] + counts["links"]
        assert result.mismatches == 0
        assert 0 < result.duration_s < 60
        assert result.throughput_mb_s == pytest.approx(
            result.bytes_copied / 1e6 / result.duration_s
        )
        assert result.report == tmp_path / "work" / "result_all.json"
        assert "ok:" in result.summary() and str(result.report) in result.summary()

    def test_report_schema(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        counts = make_tree(src, tmp_path / "outside")
        report_path = tmp_path / "elsewhere" / "report.json"
        result = pcopy(
            src, dst, tmp_path / "work", dm, workers=2, shards=5, report=report_path
        ).run()
        assert result.ok and result.report == report_path
        report = read_report(report_path)
        assert REPORT_KEYS <= set(report)
        assert report["total_retries"] == 0
        assert report["total_size_gib"] == pytest.approx(counts["bytes"] / 2**30, abs=1e-6)
        assert report["failed_messages"] == []
        assert report["backend"] == "local"
        assert report["workers"] == 2
        assert report["files_verified"] == counts["files"] + counts["links"]
        assert report["mismatches"] == 0 and report["files_skipped"] == 0
        assert report["ok"] is True
        chunks = report["benchmark_results"]
        assert sorted(c["chunk_number"] for c in chunks) == [1, 2, 3, 4, 5]
        for c in chunks:
            assert CHUNK_KEYS <= set(c)
            assert all(isinstance(c[k], int) for k in CHUNK_KEYS - {"average_mbps"})
            assert c["end_time_ms"] >= c["start_time_ms"] > 1_600_000_000_000
            assert c["duration_ms"] == max(1, c["end_time_ms"] - c["start_time_ms"])
            assert c["job_id"] is None and c["host"] == os.uname().nodename
            assert 0 <= c["start_delay_ms"] <= c["duration_ms"] + 50
            assert c["average_mbps"] == pytest.approx(
                c["total_bytes_transferred"] * 8 / 1e6 / (c["duration_ms"] / 1000),
                rel=1e-3,
                abs=1e-3,
            )
        assert sum(c["total_bytes_transferred"] for c in chunks) == counts["bytes"]
        assert sum(c["total_number_of_files"] for c in chunks) == counts["files"] + counts["links"]

    def test_empty_tree(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.mkdir()
        result = pcopy(src, dst, tmp_path / "work", dm).run()
        assert result.ok
        assert (result.files_planned, result.bytes_planned, result.files_copied) == (0, 0, 0)
        assert dst.is_dir() and list(dst.iterdir()) == []
        assert read_report(result.report)["total_size_gib"] == 0

    def test_only_empty_folders_and_zero_byte_files(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        for i in range(20):
            write(src / f"d{i % 3}" / f"zero-{i}", b"", MTIME0 + i)
        (src / "x" / "y" / "z").mkdir(parents=True)
        result = pcopy(src, dst, tmp_path / "work", dm, workers=4, shards=8).run()
        assert result.ok
        assert result.files_copied == 20 and result.bytes_copied == 0
        assert_same_tree(src, dst)

    def test_second_run_skips_everything(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        counts = make_tree(src, tmp_path / "outside")
        assert pcopy(src, dst, tmp_path / "work", dm).run().ok
        inodes = complete_files(dst, src)
        again = pcopy(src, dst, tmp_path / "work", dm).run()
        assert again.ok
        assert again.files_copied == 0 and again.bytes_copied == 0
        assert again.files_skipped == counts["files"] + counts["links"]
        assert again.bytes_skipped == counts["bytes"]
        assert complete_files(dst, src) == inodes, "skipped files were rewritten"
        assert read_report(again.report)["files_skipped"] == again.files_skipped
        assert_same_tree(src, dst)

    def test_skip_checks_left_out_only_into_an_empty_destination(self, tmp_path, dm, monkeypatch):
        """``--new`` (no lstat per file) only for first attempts into an empty destination."""
        launched = []
        real_launch = ParallelCopy._launch

        def launch(self, dm, task):
            out = real_launch(self, dm, task)
            launched.append("--new" in out[0].argv)
            return out

        monkeypatch.setattr(ParallelCopy, "_launch", launch)
        src = tmp_path / "src"
        for i in range(6):
            write(src / f"d{i % 2}" / f"f{i}", b"%d" % i, MTIME0)
        assert pcopy(src, tmp_path / "new", tmp_path / "w1", dm, shards=3).run().ok
        assert launched == [True] * 3
        launched.clear()
        (tmp_path / "empty").mkdir()
        assert pcopy(src, tmp_path / "empty", tmp_path / "w2", dm, shards=3).run().ok
        assert launched == [True] * 3
        launched.clear()
        write(tmp_path / "used" / "d0" / "f0", b"old", MTIME0 - 1)
        result = pcopy(src, tmp_path / "used", tmp_path / "w3", dm, shards=3).run()
        assert result.ok and launched == [False] * 3
        assert (tmp_path / "used" / "d0" / "f0").read_bytes() == b"0"
        assert_same_tree(src, tmp_path / "used")

    @staticmethod
    def folders_with_modes_and_times(src):
        """Folders with unusual modes (one read-only, with a file in it) and past times."""
        modes = {"private": 0o700, "shared": 0o2775, "read-only": 0o555, "a": 0o750, "a/b": 0o711}
        for name in modes:
            write(src / name / "f", name.encode(), MTIME0)
        (src / "a" / "b" / "empty").mkdir()
        modes["a/b/empty"] = 0o700
        for i, name in enumerate(sorted(modes, key=len, reverse=True)):  # deepest first
            os.chmod(src / name, modes[name])
            os.utime(src / name, ns=(MTIME0 + i, MTIME0 + i))
        os.chmod(src, 0o751)
        os.utime(src, ns=(MTIME0 - 7, MTIME0 - 7))
        return modes

    def test_folders_keep_their_modes_and_times(self, tmp_path, dm):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        modes = self.folders_with_modes_and_times(src)
        old = os.umask(0o027)
        try:
            result = pcopy(src, dst, work, dm, shards=3).run()
        finally:
            os.umask(old)
        assert result.ok, result.failed_messages
        assert_same_tree(src, dst)  # folders' modes and times included
        assert {n: stat.S_IMODE(os.stat(dst / n).st_mode) for n in modes} == modes
        # The destination folder was made by the copy: it is the source's copy too.
        assert stat.S_IMODE(os.stat(dst).st_mode) == 0o751
        assert os.stat(dst).st_mtime_ns == MTIME0 - 7
        again = pcopy(src, dst, work, dm, shards=3).run()
        assert again.ok and again.files_copied == 0
        assert_same_tree(src, dst)

    def test_an_existing_destination_folder_keeps_its_own_mode(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        self.folders_with_modes_and_times(src)
        dst.mkdir()
        os.chmod(dst, 0o770)
        result = pcopy(src, dst, tmp_path / "work", dm).run()
        assert result.ok, result.failed_messages
        assert stat.S_IMODE(os.stat(dst).st_mode) == 0o770
        assert_same_tree(src, dst)

    def test_folders_are_set_only_once_every_shard_is_done(self, tmp_path, dm, monkeypatch):
        """A shard that failed for good leaves the folders as they are (its rerun writes there)."""
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        self.folders_with_modes_and_times(src)
        real_launch = ParallelCopy._launch

        def fail_shard_1(self, dm_, task):
            launch, status, failed = real_launch(self, dm_, task)
            if task.index == 1:
                launch = type(launch)(("sh", "-c", "exit 3"), name=launch.name)
            return launch, status, failed

        monkeypatch.setattr(ParallelCopy, "_launch", fail_shard_1)
        result = pcopy(src, dst, work, dm, shards=2, retries=0).run()
        assert not result.ok
        assert stat.S_IMODE(os.stat(dst / "read-only").st_mode) != 0o555
        assert not json.loads((work / "state.json").read_text()).get("folders_done")
        monkeypatch.setattr(ParallelCopy, "_launch", real_launch)
        result = pcopy(src, dst, work, dm, shards=2).run()
        assert result.ok, result.failed_messages
        assert_same_tree(src, dst)

    def test_a_folder_replaced_by_a_link_is_not_followed(self, tmp_path, dm, monkeypatch):
        src, dst, elsewhere = tmp_path / "src", tmp_path / "dst", tmp_path / "elsewhere"
        self.folders_with_modes_and_times(src)
        elsewhere.mkdir()
        os.chmod(elsewhere, 0o755)
        real_fan_out = ParallelCopy._fan_out

        def fan_out_then_swap(self, *args):
            real_fan_out(self, *args)
            shutil.rmtree(dst / "a" / "b" / "empty")
            os.symlink(elsewhere, dst / "a" / "b" / "empty")

        monkeypatch.setattr(ParallelCopy, "_fan_out", fan_out_then_swap)
        result = pcopy(src, dst, tmp_path / "work", dm).run()
        assert not result.ok
        assert len(result.failed_messages) == 1
        assert result.failed_messages[0].startswith("a/b/empty: cannot set the folder's mode and times:")
        assert stat.S_IMODE(os.stat(elsewhere).st_mode) == 0o755, "the link was followed"
        assert stat.S_IMODE(os.stat(dst / "private").st_mode) == 0o700, "the other folders were not set"

    def test_file_modes_are_kept_whatever_the_umask(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        modes = {"group-writable": 0o664, "script": 0o775, "private": 0o600, "all": 0o777, "read-only": 0o444}
        for name, mode in modes.items():
            write(src / name, name.encode(), MTIME0)
            os.chmod(src / name, mode)
        old = os.umask(0o027)
        try:
            result = pcopy(src, dst, tmp_path / "work", dm, shards=2).run()
        finally:
            os.umask(old)
        assert result.ok, result.failed_messages
        assert {n: stat.S_IMODE(os.stat(dst / n).st_mode) for n in modes} == modes
        assert_same_tree(src, dst)

    def test_differing_destination_files_are_overwritten(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "same_size_other_mtime", b"new content", MTIME0)
        write(src / "other_size", b"new content", MTIME0)
        write(src / "identical", b"same content", MTIME0)
        write(src / "same_size_same_mtime_but_older_name.txt", b"abc", MTIME0)
        write(dst / "same_size_other_mtime", b"old content", MTIME0 - 10**9)
        write(dst / "other_size", b"old", MTIME0)  # same mtime, size differs
        write(dst / "identical", b"same content", MTIME0)
        os.symlink(
            "elsewhere", dst / "same_size_same_mtime_but_older_name.txt"
        )  # a link where a file goes
        ino = os.lstat(dst / "identical").st_ino
        result = pcopy(src, dst, tmp_path / "work", dm).run()
        assert result.ok, result.failed_messages
        assert_same_tree(src, dst)
        assert result.files_skipped == 1 and result.files_copied == 3
        assert os.lstat(dst / "identical").st_ino == ino

    def test_destination_link_replaced_by_new_target(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.mkdir()
        os.symlink("new-target", src / "link")
        os.symlink("same", src / "unchanged")
        dst.mkdir()
        os.symlink("old-target", dst / "link")
        os.symlink("same", dst / "unchanged")
        result = pcopy(src, dst, tmp_path / "work", dm).run()
        assert result.ok
        assert os.readlink(dst / "link") == "new-target"
        assert result.files_skipped == 1 and result.files_copied == 1

    def test_leftovers_of_an_interrupted_copy_never_look_complete(self, tmp_path, dm, monkeypatch):
        """A killed attempt's temporary file and a truncated file are both replaced by the whole file."""
        src, dst = tmp_path / "src", tmp_path / "dst"
        data = BLOCK * 2
        write(src / "a" / "half.bin", data, MTIME0)
        write(src / "a" / "parted.bin", data, MTIME0)
        write(src / "truncated same mtime.bin", data, MTIME0)
        write(dst / "a" / "half.bin", data[: len(data) // 2], MTIME0 + 1)
        monkeypatch.setattr(pc_mod, "part_tag_of", lambda *paths: "feed")
        write(dst / "a" / ".tt-part-feed-0", data[:1000])  # shard 0 of this copy, killed mid-file
        write(dst / "truncated same mtime.bin", data[:-1], MTIME0)
        result = pcopy(src, dst, tmp_path / "work", dm, shards=1).run()
        assert result.ok
        assert part_files(dst) == []
        assert_same_tree(src, dst)
        assert result.files_copied == 3

    @pytest.mark.parametrize("shard_by", ["bytes", "count"])
    def test_more_shards_than_files(self, tmp_path, dm, shard_by):
        src, dst = tmp_path / "src", tmp_path / "dst"
        for i in range(3):
            write(src / f"f{i}", os.urandom(100 * i), MTIME0)
        (src / "empty").mkdir()
        result = pcopy(
            src, dst, tmp_path / "work", dm, workers=4, shards=16, shard_by=shard_by
        ).run()
        assert result.ok and result.files_copied == 3
        assert_same_tree(src, dst)

    def test_exclude(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        for rel in (
            "keep.txt",
            "x.tmp",
            "sub/y.tmp",
            "sub/keep.dat",
            "cache/big.dat",
            "sub/cache/c.dat",
        ):
            write(src / rel, rel.encode(), MTIME0)
        result = pcopy(src, dst, tmp_path / "work", dm, exclude=("*.tmp", "cache")).run()
        assert result.ok
        assert sorted(k.decode() for k, v in snapshot(dst).items() if v[0] == "f") == [
            "keep.txt",
            "sub/keep.dat",
        ]
        assert result.files_planned == 2

    def test_files_from(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        for rel in ("a.txt", "with space/b.txt", "-c", "not-listed"):
            write(src / rel, rel.encode(), MTIME0)
        listing = tmp_path / "files.txt"
        listing.write_text("a.txt\nwith space/b.txt\n-c\n")
        result = pcopy(src, dst, tmp_path / "work", dm, files_from=listing).run()
        assert result.ok and result.files_planned == 3
        assert sorted(k.decode() for k, v in snapshot(dst).items() if v[0] == "f") == [
            "-c",
            "a.txt",
            "with space/b.txt",
        ]

    def test_files_from_with_a_missing_entry(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "a.txt", b"a", MTIME0)
        listing = tmp_path / "files.txt"
        listing.write_bytes(b"a.txt\nmissing.txt\n\xff-missing\n")
        result = pcopy(src, dst, tmp_path / "work", dm, files_from=listing).run()
        assert not result.ok
        assert (dst / "a.txt").read_bytes() == b"a"
        assert len(result.failed_messages) == 2
        assert any(
            "missing.txt" in m and "No such file or directory" in m for m in result.failed_messages
        )
        report = read_report(result.report)
        assert len(report["failed_messages"]) == 2
        assert any("-missing" in m for m in report["failed_messages"])
        assert report["ok"] is False

    def test_files_from_that_does_not_exist(self, tmp_path, dm):
        (tmp_path / "src").mkdir()
        with pytest.raises(SourceNotFoundError, match="files_from"):
            pcopy(
                tmp_path / "src",
                tmp_path / "dst",
                tmp_path / "work",
                dm,
                files_from=tmp_path / "nope",
            ).run()

    def test_work_dir_cleaned_after_success_report_kept(self, tmp_path, dm):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "f", b"f")
        work.mkdir()
        (work / "notes-of-the-user.txt").write_text("mine")
        result = pcopy(src, dst, work, dm).run()
        assert result.ok
        assert result.report.exists()
        left = {p.name for p in work.iterdir()}
        assert not {"listing", "shards", "runs", "state.json"} & left
        assert (
            "notes-of-the-user.txt" in left
        ), "cleaning the work dir removed a file the copy did not make"

    def test_keep_work_dir(self, tmp_path, dm):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "f", b"f")
        result = pcopy(src, dst, work, dm, keep_work_dir=True, shards=3).run()
        assert result.ok
        assert (work / "listing").exists() and (work / "state.json").exists()
        state = json.loads((work / "state.json").read_text())
        assert [s["state"] for s in state["shards"]] == ["done"] * 3

    def test_config_object_and_overrides(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f", b"f")
        config = CopyConfig(
            workers=3, verify="checksum", progress=False, work_dir=tmp_path / "work"
        )
        pc = ParallelCopy(src, dst, config, datamover=dm, workers=2)
        assert pc.config.workers == 2 and pc.config.verify == "checksum"
        assert pc.config.shard_count == 2
        assert pc.work_dir == tmp_path / "work"
        assert pc.run().ok

    @pytest.mark.parametrize("cpus, expected", [(1, 1), (3, 3), (64, 8)])
    def test_default_workers_locally_at_most_one_per_cpu(self, tmp_path, dm, monkeypatch, cpus, expected):
        monkeypatch.setattr(backends_mod, "usable_cpus", lambda: cpus)
        src = tmp_path / "src"
        for i in range(10):
            write(src / f"f{i}", b"%d" % i)
        pc = ParallelCopy(src, tmp_path / "dst", datamover=dm, progress=False, work_dir=tmp_path / "work")
        assert pc.config.workers is None
        result = pc.run()
        assert result.ok and pc.config.workers == expected
        report = read_report(result.report)
        assert (report["workers"], report["shards"]) == (expected, expected)

    def test_default_workers_through_jobs_is_8(self, monkeypatch):
        monkeypatch.setattr(backends_mod, "usable_cpus", lambda: 2)
        not_local = object.__new__(backends_mod.SiteBackend)
        assert CopyConfig().for_backend(not_local).workers == 8
        assert CopyConfig(workers=3).for_backend(not_local).workers == 3
        assert CopyConfig(workers=16).for_backend(backends_mod.LocalBackend()).workers == 16
        assert CopyConfig().for_backend(backends_mod.LocalBackend()).workers == 2
        with pytest.raises(ConfigurationError, match="workers is not set yet"):
            CopyConfig().shard_count
        assert CopyConfig(shards=5).shard_count == 5


# =============================================================================== bad input
class TestBadInput:
    def test_missing_source(self, tmp_path, dm):
        with pytest.raises(SourceNotFoundError, match="does not exist") as info:
            pcopy(tmp_path / "nope", tmp_path / "dst", tmp_path / "work", dm)
        assert isinstance(info.value, FileNotFoundError)
        assert isinstance(info.value, TaurusToolsError)
        assert not (tmp_path / "dst").exists() and not (tmp_path / "work").exists()

    def test_a_source_file_is_copied_into_the_destination_folder(self, tmp_path, dm):
        """A one-off transfer: `copy FILE DIR` puts FILE into DIR (as `cp FILE DIR/`), nothing else."""
        (tmp_path / "src").mkdir()
        name = "-one file #1\n\u00e9.bin"
        (tmp_path / "src" / name).write_bytes(b"x" * 1000)
        (tmp_path / "src" / "other").write_bytes(b"not this one")
        os.utime(tmp_path / "src" / name, ns=(1, 1_600_000_000_123_456_789))
        result = pcopy(tmp_path / "src" / name, tmp_path / "dst", tmp_path / "work", dm).run()
        assert result.ok and result.files_copied == 1 and result.bytes_copied == 1000
        assert os.listdir(tmp_path / "dst") == [name]
        copied = (tmp_path / "dst" / name).stat()
        assert copied.st_mtime_ns == 1_600_000_000_123_456_789
        again = pcopy(tmp_path / "src" / name, tmp_path / "dst", tmp_path / "work2", dm).run()
        assert again.ok and again.files_skipped == 1 and again.files_copied == 0

    def test_a_source_file_onto_itself_or_a_fifo_is_refused(self, tmp_path, dm):
        (tmp_path / "file").write_text("x")
        with pytest.raises(ConfigurationError, match="onto itself"):
            pcopy(tmp_path / "file", tmp_path, tmp_path / "work", dm)
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(ConfigurationError, match="neither a folder .* nor a regular file"):
            pcopy(tmp_path / "fifo", tmp_path / "dst", tmp_path / "work", dm)
        assert (tmp_path / "file").read_text() == "x" and not (tmp_path / "dst").exists()

    def test_same_folder(self, tmp_path, dm):
        (tmp_path / "src").mkdir()
        with pytest.raises(ConfigurationError, match="same folder"):
            pcopy(tmp_path / "src", tmp_path / "src", tmp_path / "work", dm)
        os.symlink(tmp_path / "src", tmp_path / "alias")
        with pytest.raises(ConfigurationError, match="same folder"):
            pcopy(tmp_path / "src", tmp_path / "alias", tmp_path / "work", dm)

    def test_destination_inside_source(self, tmp_path, dm):
        src = tmp_path / "src"
        (src / "sub").mkdir(parents=True)
        for dst in (src / "sub", src / "new" / "deeper", tmp_path / "src" / ".." / "src" / "x"):
            with pytest.raises(ConfigurationError, match="inside the source"):
                pcopy(src, dst, tmp_path / "work", dm)
        assert sorted(p.name for p in src.iterdir()) == ["sub"]

    def test_destination_is_a_file(self, tmp_path, dm):
        (tmp_path / "src").mkdir()
        (tmp_path / "dst").write_text("precious")
        with pytest.raises(ConfigurationError, match="not a folder"):
            pcopy(tmp_path / "src", tmp_path / "dst", tmp_path / "work", dm)
        assert (tmp_path / "dst").read_text() == "precious"

    @pytest.mark.parametrize(
        "options,pattern",
        [
            ({"workers": 0}, "workers must be an int >= 1, got 0"),
            ({"workers": "4"}, "workers must be an int >= 1"),
            ({"shards": 0}, "shards must be an int >= 1"),
            ({"retries": -1}, "retries must be an int >= 0"),
            ({"verify": "md5"}, "verify must be one of size, checksum, none or None, got 'md5'"),
            ({"shard_by": "x"}, "shard_by must be 'bytes' or 'count', got 'x'"),
            ({"retry_delay_s": -1}, "retry_delay_s must be >= 0"),
            ({"in_process": "maybe"}, "in_process must be one of auto, yes, no (or True/False), got 'maybe'"),
        ],
    )
    def test_invalid_option_values(self, tmp_path, dm, options, pattern):
        (tmp_path / "src").mkdir()
        with pytest.raises(ConfigurationError) as info:
            pcopy(tmp_path / "src", tmp_path / "dst", tmp_path / "work", dm, **options)
        assert pattern in str(info.value)
        with pytest.raises(ConfigurationError):
            CopyConfig(**options)

    def test_unknown_option_lists_the_valid_ones(self, tmp_path, dm):
        (tmp_path / "src").mkdir()
        with pytest.raises(ConfigurationError) as info:
            pcopy(tmp_path / "src", tmp_path / "dst", tmp_path / "work", dm, worker=4)
        message = str(info.value)
        assert "unknown copy option(s) worker" in message
        for valid in ("workers=None", "verify='size'", "shard_by='bytes'", "check_space=True"):
            assert valid in message

    def test_insufficient_space(self, tmp_path, dm, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f", BLOCK)
        usage = namedtuple("usage", "total used free percent")
        asked = []

        def disk_usage(path):
            asked.append(path)
            return usage(10**6, 10**6 - 1000, 1000, 99.9)

        monkeypatch.setattr(psutil, "disk_usage", disk_usage)
        with pytest.raises(InsufficientSpaceError, match="check_space=False") as info:
            pcopy(src, dst, tmp_path / "work", dm).run()
        assert isinstance(info.value, OSError)
        assert "1000 B free" in str(info.value) and "1.0 MiB" in str(info.value)
        assert asked == [str(dst)], "the destination (made before any work) is probed"
        assert not dst.exists() or list(dst.iterdir()) == []
        result = pcopy(src, dst, tmp_path / "work", dm, check_space=False).run()
        assert result.ok and (dst / "f").read_bytes() == BLOCK

    def test_enough_space(self, tmp_path, dm, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f", BLOCK)
        usage = namedtuple("usage", "total used free percent")
        monkeypatch.setattr(psutil, "disk_usage", lambda p: usage(2**40, 0, len(BLOCK), 0.0))
        assert pcopy(src, dst, tmp_path / "work", dm).run().ok

    def test_one_driver_per_work_dir(self, tmp_path, dm):
        src = tmp_path / "src"
        write(src / "f", b"f")
        work = tmp_path / "work"
        work.mkdir()
        import fcntl

        with open(work / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            with pytest.raises(ConfigurationError, match="another copy is running"):
                pcopy(src, tmp_path / "dst", work, dm).run()


# =============================================================================== permissions
#: Root ignores file modes; without these capabilities it obeys them like any user.
#: (``nobody`` cannot even start this interpreter: it lives under /root, mode 700.)
DROP_DAC = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
    "--",
]


def unprivileged(argv, **kwargs):
    if shutil.which("setpriv") is None:
        pytest.fail(
            "setpriv (util-linux) is needed to run the copy without root's file access; apt-get install util-linux"
        )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(pc_mod.__file__).parents[2]), os.environ.get("PYTHONPATH")])
        ),
    }
    return subprocess.run(
        DROP_DAC + list(argv), env=env, capture_output=True, text=True, timeout=60, **kwargs
    )


@pytest.fixture
def denied_file(tmp_path):
    """A mode-000 file; fails the test when the unprivileged run could still read it."""
    path = tmp_path / "probe-000"
    path.write_text("secret")
    path.chmod(0)
    probe = unprivileged([sys.executable, "-c", f"open({str(path)!r}).read()"])
    if probe.returncode == 0:
        pytest.fail(
            f"{' '.join(DROP_DAC)} did not take away root's file access; cannot test permission denied"
        )
    if "PermissionError" not in probe.stderr:
        pytest.fail(f"unexpected failure of the unprivileged probe: {probe.stderr}")
    return path


class TestPermissionDenied:
    def test_unreadable_file_and_folder_reported_rest_copied(self, tmp_path, denied_file):
        src, dst, work, report = (
            tmp_path / "src",
            tmp_path / "dst",
            tmp_path / "work",
            tmp_path / "report.json",
        )
        for i in range(30):
            write(src / f"d{i % 3}" / f"ok-{i}.dat", os.urandom(1000 + i), MTIME0 + i)
        write(src / "d1" / "secret file.dat", b"top secret", MTIME0)
        (src / "d1" / "secret file.dat").chmod(0)
        write(src / "locked" / "inside.dat", b"x", MTIME0)
        (src / "locked").chmod(0)
        try:
            proc = unprivileged(cli_copy_argv(src, dst, work, report, "--retries", "1"))
        finally:
            (src / "locked").chmod(0o755)
        assert proc.returncode == 1, proc.stderr
        assert "FAILED" in proc.stdout
        data = read_report(report)
        assert data["ok"] is False
        messages = data["failed_messages"]
        assert any("secret file.dat" in m and "Permission denied" in m for m in messages), messages
        assert any("locked" in m and "Permission denied" in m for m in messages), messages
        assert len(messages) == 2, messages
        assert data["files_failed"] == 1
        # Permission denied cannot heal by waiting: reported at once, never retried with backoff.
        assert data["total_retries"] == 0, "a permanent failure was retried"
        assert not list((work / "runs").glob("shard-*.1.status"))
        assert "secret file.dat" in proc.stderr
        assert not (dst / "d1" / "secret file.dat").exists()
        assert part_files(dst) == []
        for i in range(30):
            rel = Path(f"d{i % 3}") / f"ok-{i}.dat"
            assert (dst / rel).read_bytes() == (src / rel).read_bytes()
            assert os.stat(dst / rel).st_mtime_ns == MTIME0 + i

    def test_unreadable_source_is_a_usage_error(self, tmp_path, denied_file):
        src = tmp_path / "src"
        write(src / "f", b"f")
        src.chmod(0)
        try:
            proc = unprivileged(
                cli_copy_argv(src, tmp_path / "dst", tmp_path / "work", tmp_path / "r.json")
            )
        finally:
            src.chmod(0o755)
        assert proc.returncode == 2, proc.stderr
        assert "cannot be read" in proc.stderr
        assert not (tmp_path / "dst").exists()


# =============================================================================== resume
def cli_copy_argv(src, dst, work, report, *extra):
    """``python -m taurus_tools copy`` on the local backend with 2 workers."""
    head = [sys.executable, "-m", "taurus_tools", "-q", "--backend", "local", "copy"]
    # fmt: off
    return [*head, str(src), str(dst), "--workers", "2", "--work-dir", str(work),
            "--report", str(report), *extra]
    # fmt: on


class TestResume:
    @pytest.mark.parametrize("workers_left", ["killed", "running", "hung"])
    def test_kill_9_of_the_driver_then_resume(self, tmp_path, big_src, workers_left):
        """kill -9 of the driver; its workers die too, go on copying, or one hangs (SIGSTOP).

        A hung one must be stopped by the resumed run (it would race it for the same files).
        """
        dst, work, report = tmp_path / "dst", tmp_path / "work", tmp_path / "report.json"
        argv = cli_copy_argv(big_src, dst, work, report, "--shards", "4")
        driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        workers = []
        try:

            def progressed():
                workers.extend(p for p in copy_workers(driver.pid) if p not in workers)
                return len(complete_files(dst, big_src)) >= 40 or driver.poll() is not None

            assert wait_until(progressed, timeout=30, step=0.002)
            assert (
                driver.poll() is None
            ), "the copy finished before it could be killed; make the tree bigger"
            workers.extend(p for p in copy_workers(driver.pid) if p not in workers)
            if workers_left == "hung":  # one hangs (stopped), the others die with the driver
                with contextlib.suppress(psutil.Error):
                    workers[0].suspend()
            driver.send_signal(signal.SIGKILL)
            if workers_left == "killed":
                kill_all(workers)
            elif workers_left == "hung":
                kill_all(workers[1:])
            driver.wait(10)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
            driver.stdout.close()
            driver.stderr.close()
        try:
            self.resume_after_kill(big_src, dst, work, report, argv, workers, workers_left)
        finally:
            kill_all(workers)

    @staticmethod
    def resume_after_kill(big_src, dst, work, report, argv, workers, workers_left):
        total = len(snapshot(big_src, mtimes=False)) - 12  # minus the 12 folders
        assert workers, "no copy worker was seen"
        if workers_left == "killed":
            assert wait_until(lambda: not alive(p.pid for p in workers), timeout=10)
        at_kill = complete_files(dst, big_src)
        assert_whole(at_kill, dst, big_src)
        assert 0 < len(at_kill) < total, len(at_kill)
        assert (work / "state.json").exists()
        state = json.loads((work / "state.json").read_text())
        assert any(s["state"] != "done" for s in state["shards"])
        # Files a killed shard had finished: found complete by its rerun, so "skipped".
        finished_in_killed_shards = len(set(at_kill) & unfinished_shard_files(work, dst))
        assert finished_in_killed_shards >= 1

        again = subprocess.run(argv, capture_output=True, text=True, timeout=90)
        assert again.returncode == 0, again.stderr
        assert "ok:" in again.stdout
        if workers_left == "hung":  # the user is told, not only the log
            assert "stopped what an earlier, interrupted run of this copy left running" in again.stderr
        wait_until(lambda: not alive(p.pid for p in workers), 10, what="the killed driver's workers to be gone")
        assert part_files(dst) == []
        assert_same_tree(big_src, dst)
        data = read_report(report)
        assert data["ok"] and data["files_failed"] == 0
        assert data["files_copied"] + data["files_skipped"] == total
        assert data["bytes_copied"] + data["bytes_skipped"] == data["bytes_planned"]
        if workers_left != "running":
            assert data["files_skipped"] == finished_in_killed_shards
        else:  # the orphaned workers went on copying for a while
            assert data["files_skipped"] >= finished_in_killed_shards
        now = complete_files(dst, big_src)
        rewritten = [p for p, ino in at_kill.items() if now.get(p) != ino]
        assert rewritten == [], f"files complete before the kill were copied again: {rewritten[:5]}"

    def test_kill_9_of_a_worker_is_retried(self, tmp_path, dm, big_src):
        dst, work = tmp_path / "dst", tmp_path / "work"
        pc = pcopy(
            big_src, dst, work, dm, workers=2, shards=4, retries=2, keep_work_dir=True
        ).start()
        victims = []

        def a_worker_has_copied_files():
            """A worker whose status file already counts copied files (so they count once)."""
            if pc.done():
                return True
            for proc in copy_workers(os.getpid()):
                try:
                    argv = proc.cmdline()
                except psutil.Error:
                    continue
                status = Path(argv[argv.index("--status") + 1])
                try:
                    copied = json.loads(status.read_text()).get("files", 0)
                except (OSError, ValueError):
                    continue
                if copied >= 1:
                    victims.append(proc)
                    return True
            return False

        assert wait_until(a_worker_has_copied_files, timeout=30, step=0.002)
        assert victims, "the copy finished before a worker could be killed"
        victims[0].kill()
        result = pc.wait(90)
        assert result.ok, result.failed_messages
        assert result.retries >= 1
        assert part_files(dst) == []
        assert_same_tree(big_src, dst)
        report = read_report(result.report)
        assert report["total_retries"] == result.retries
        assert any(c["exit_code"] == -signal.SIGKILL for c in report["benchmark_results"])
        assert (
            result.files_copied + result.files_skipped == result.files_planned
        ), "files copied by the killed attempt were counted again (as skipped) by its retry"
        assert result.bytes_copied + result.bytes_skipped == result.bytes_planned

    def test_worker_killed_more_often_than_retries_fails(self, tmp_path, dm):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "f", b"f")
        # Every attempt of the shard is killed at once (kill -9), more often than retried.
        pc = pcopy(src, dst, work, dm, retries=1, shards=1, verify=None)
        real_launch = pc._launch

        def launch(dm_, task):
            launch_, status, failed = real_launch(dm_, task)
            argv = ("sh", "-c", "kill -9 $$")
            return type(launch_)(argv, name=launch_.name), status, failed

        pc._launch = launch
        result = pc.run()
        assert not result.ok
        assert result.retries == 1
        assert result.files_failed >= 1
        assert any(
            "exited with code -9" in m for m in result.failed_messages
        ), result.failed_messages
        state = json.loads((work / "state.json").read_text())
        assert state["shards"][0]["state"] == "failed"

    def test_retry_on_limits_which_exit_codes_retry(self, tmp_path, dm):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "f", b"f")
        pc = pcopy(src, dst, work, dm, retries=3, shards=1, retry_on=[75], verify=None)
        real_launch = pc._launch
        calls = []

        def launch(dm_, task):
            launch_, status, failed = real_launch(dm_, task)
            calls.append(task.attempt)
            return type(launch_)(("sh", "-c", "exit 3"), name=launch_.name), status, failed

        pc._launch = launch
        result = pc.run()
        assert not result.ok and result.retries == 0 and calls == [0]

    def test_cancel_leaves_a_resumable_work_dir(self, tmp_path, dm, big_src):
        dst, work = tmp_path / "dst", tmp_path / "work"
        pc = pcopy(big_src, dst, work, dm, workers=2).start()
        running = wait_until(
            lambda: "done"
            if pc.done()
            else len(complete_files(dst, big_src)) >= 20 and copy_workers(os.getpid()),
            timeout=30,
            interval=0.002,
            what="20 files copied and a worker running",
        )
        assert running != "done", "the copy finished before it could be cancelled"
        pc.cancel()
        with pytest.raises(CopyCancelledError, match="resume") as info:
            pc.wait(30)
        assert isinstance(info.value, concurrent.futures.CancelledError)
        assert alive(p.pid for p in running) == [], "cancel() left shard processes running"
        state = json.loads((work / "state.json").read_text())
        assert any(s["state"] != "done" for s in state["shards"])
        assert not any(s["state"] == "running" for s in state["shards"])
        at_cancel = complete_files(dst, big_src)
        assert_whole(at_cancel, dst, big_src)
        finished_in_cancelled_shards = len(set(at_cancel) & unfinished_shard_files(work, dst))
        result = pcopy(big_src, dst, work, dm, workers=2).run()
        assert result.ok
        assert_same_tree(big_src, dst)
        assert part_files(dst) == []
        assert result.files_skipped == finished_in_cancelled_shards
        assert result.files_copied + result.files_skipped == result.files_planned
        now = complete_files(dst, big_src)
        assert all(
            now.get(p) == ino for p, ino in at_cancel.items()
        ), "files complete at cancel were copied again"

    def test_rerun_retries_shards_that_failed_for_good(self, tmp_path, dm):
        """Unlike fpsync's resume, failed shards are not taken as done."""
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        for i in range(6):
            write(src / f"f{i}", os.urandom(100 + i), MTIME0)
        pc = pcopy(src, dst, work, dm, retries=0, shards=3, verify=None)
        real_launch = pc._launch

        def launch(dm_, task):
            launch_, status, failed = real_launch(dm_, task)
            if task.index == 1:
                return type(launch_)(("sh", "-c", "exit 3"), name=launch_.name), status, failed
            return launch_, status, failed

        pc._launch = launch
        first = pc.run()
        assert not first.ok and first.files_copied == 4
        # One line per file the failed shard held, naming it.
        assert len(first.failed_messages) == first.files_failed == 2
        for message in first.failed_messages:
            name, _, why = message.partition(": ")
            assert name in {f"f{i}" for i in range(6)} and not (dst / name).exists()
            assert why == "shard command exited with code 3: no message"
        again = pcopy(src, dst, work, dm, retries=0, shards=3).run()
        assert again.ok, again.failed_messages
        assert again.files_copied == 6 and again.files_skipped == 0
        assert_same_tree(src, dst)

    def test_resume_false_starts_over(self, tmp_path, dm):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "a", b"a", MTIME0)
        assert pcopy(src, dst, work, dm, keep_work_dir=True).run().ok
        write(src / "b", b"b", MTIME0)
        fresh = pcopy(src, dst, work, dm, resume=False).run()
        assert (
            fresh.ok
            and fresh.files_planned == 2
            and fresh.files_copied == 1
            and fresh.files_skipped == 1
        )
        assert (dst / "b").read_bytes() == b"b"

    def test_changed_plan_starts_over(self, tmp_path, dm):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "a", b"a", MTIME0)
        assert pcopy(src, dst, work, dm, keep_work_dir=True, shards=2).run().ok
        write(src / "b", b"b", MTIME0)
        result = pcopy(src, dst, work, dm, shards=3).run()
        assert result.ok and result.files_planned == 2
        assert (dst / "b").read_bytes() == b"b"


# =============================================================================== source changes
def rewrite_source_after_copying(monkeypatch, path: Path, data: bytes, mtime_ns: int) -> None:
    """Make the worker's data copy rewrite ``path`` (a source it copies) once it is done:
    a source that changes during its copy."""
    real = copy_worker._copy_data

    def copy_then_rewrite(fin, fout, size):
        n = real(fin, fout, size)
        write(path, data, mtime_ns)
        return n

    monkeypatch.setattr(copy_worker, "_copy_data", copy_then_rewrite)


def run_worker(tmp_path, src, dst, records: bytes, verify="size"):
    shard_file = tmp_path / "shard"
    shard_file.write_bytes(records)
    failed_path = tmp_path / "failed"
    with open(failed_path, "wb") as failed, open(str(failed_path) + ".messages", "w") as messages:
        worker = copy_worker.Worker(
            fs(src), fs(dst), verify, str(tmp_path / "status"), failed, messages
        )
        rc = worker.run(str(shard_file))
    lines = Path(str(failed_path) + ".messages").read_text().splitlines()
    return rc, worker, failed_path.read_bytes(), [json.loads(x) for x in lines]


class TestWritePaths:
    """Where a file is written while it is copied, and what an interruption leaves."""

    @staticmethod
    def watch_the_copy(monkeypatch, src, dst, name):
        """Record, while ``name``'s data is being copied, what the destination shows."""
        seen = {}
        real = copy_worker._copy_data

        def copy_and_look(fin, fout, size):
            n = real(fin, fout, size)
            target = dst / name
            seen["at its name"] = target.read_bytes() if target.exists() else None
            seen["looks complete"] = target.exists() and (
                os.stat(target).st_mtime_ns == os.stat(src / name).st_mtime_ns
            )
            seen["parts"] = [os.path.basename(p) for p in part_files(dst)]
            return n

        monkeypatch.setattr(copy_worker, "_copy_data", copy_and_look)
        return seen

    def worker(self, tmp_path, src, dst, **options):
        options.setdefault("part_tag", b"t")
        return copy_worker.Worker(fs(src), fs(dst), "size", str(tmp_path / "st"), None, None, **options)

    def test_new_destination_file_is_written_under_its_name_and_dated_last(self, tmp_path, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f.bin", BLOCK, MTIME0)
        seen = self.watch_the_copy(monkeypatch, src, dst, "f.bin")
        assert self.worker(tmp_path, src, dst, new=True).copy_file(fs(src / "f.bin"), fs(dst / "f.bin"))
        assert seen == {"at its name": BLOCK, "looks complete": False, "parts": []}
        assert os.stat(dst / "f.bin").st_mtime_ns == MTIME0
        assert (dst / "f.bin").read_bytes() == BLOCK

    @pytest.mark.parametrize("how", ["atomic", "not a new destination"])
    def test_otherwise_it_goes_through_a_temporary_name(self, tmp_path, monkeypatch, how):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f.bin", BLOCK, MTIME0)
        if how == "atomic":
            options, before = {"new": True, "atomic": True}, None
        else:
            options, before = {"new": False}, b"old version"
            write(dst / "f.bin", before, MTIME0 - 1)
        seen = self.watch_the_copy(monkeypatch, src, dst, "f.bin")
        assert self.worker(tmp_path, src, dst, **options).copy_file(fs(src / "f.bin"), fs(dst / "f.bin"))
        assert seen == {"at its name": before, "looks complete": False, "parts": [b".tt-part-t"]}
        assert (dst / "f.bin").read_bytes() == BLOCK and part_files(dst) == []

    def test_a_failed_direct_write_leaves_nothing(self, tmp_path, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f.bin", BLOCK, MTIME0)
        monkeypatch.setattr(copy_worker, "_copy_data", lambda fin, fout, size: os.write(fout, b"partial"))
        with pytest.raises(ValueError, match="copied 7 of"):
            self.worker(tmp_path, src, dst, new=True).copy_file(fs(src / "f.bin"), fs(dst / "f.bin"))
        assert not (dst / "f.bin").exists() and part_files(dst) == []

    def test_worker_killed_mid_file_then_the_resume_copies_it_again(self, tmp_path):
        """kill -9 halfway through a file written under its own name (a real process)."""
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "a.bin", BLOCK, MTIME0)
        write(src / "b.bin", BLOCK * 2, MTIME0 + 1)
        write(src / "c.bin", BLOCK, MTIME0 + 2)
        work.mkdir()
        shard = work / "shard"
        sizes = {"a.bin": len(BLOCK), "b.bin": 2 * len(BLOCK), "c.bin": len(BLOCK)}
        shard.write_bytes(b"".join(b"f\t%d\t0\t%s\0" % (size, name.encode()) for name, size in sizes.items()))
        wrapper = work / "dying_worker.py"
        wrapper.write_text(
            "import os, signal, sys\n"
            f"sys.path.insert(0, {str(Path(copy_worker.__file__).parent)!r})\n"
            "import worker as w\n"
            "def half_then_die(fin, fout, size):\n"
            "    if size > (3 << 20) // 2:\n"
            "        os.write(fout, os.read(fin, size // 2))\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return os.write(fout, os.read(fin, size))\n"
            "w._copy_data = half_then_die\n"
            "sys.exit(w.main())\n"
        )

        def worker(script, *extra):
            # fmt: off
            argv = [sys.executable, "-S", str(script), "--src", str(src), "--dst", str(dst),
                    "--shard", str(shard), "--status", str(work / "status"),
                    "--failed", str(work / "failed"), *extra]
            # fmt: on
            return subprocess.run(argv, capture_output=True, text=True, timeout=60)

        assert worker(wrapper, "--new").returncode == -signal.SIGKILL
        assert (dst / "a.bin").read_bytes() == BLOCK
        assert os.path.getsize(dst / "b.bin") == len(BLOCK), "the half-written file is at its name"
        assert set(complete_files(dst, src)) == {fs(dst / "a.bin")}, "the half-written file looks complete"
        assert not (dst / "c.bin").exists()
        # A resume or retry never passes --new: it checks every file and redoes b.bin.
        again = worker(copy_worker.__file__)
        assert again.returncode == 0, again.stderr
        status = json.loads((work / "status").read_text())
        assert (status["skipped"], status["files"], status["verified"]) == (1, 2, 3)
        assert_same_tree(src, dst)
        assert part_files(dst) == []


class TestSourceChanging:
    def test_worker_catches_a_file_growing_during_its_copy(self, tmp_path, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "grows.bin", BLOCK, MTIME0)
        real = copy_worker._copy_data

        def copy_then_append(fin, fout, size):
            n = real(fin, fout, size)
            with open(src / "grows.bin", "ab") as fh:
                fh.write(b"more")
            return n

        monkeypatch.setattr(copy_worker, "_copy_data", copy_then_append)
        with pytest.raises(ValueError, match="source changed during the copy"):
            copy_worker.Worker(
                fs(src), fs(dst), "size", str(tmp_path / "st"), None, None
            ).copy_file(fs(src / "grows.bin"), fs(dst / "grows.bin"))
        assert not (dst / "grows.bin").exists()
        assert part_files(dst) == []

    def test_worker_catches_a_rewrite_of_the_same_size(self, tmp_path, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "same.bin", b"a" * 1000, MTIME0)
        write(dst / "same.bin", b"old" * 10, MTIME0 - 5)
        rewrite_source_after_copying(monkeypatch, src / "same.bin", b"b" * 1000, MTIME0 + 1)
        rc, worker, failed, messages = run_worker(
            tmp_path, src, dst, b"f\t1000\t%d\tsame.bin\0" % MTIME0
        )
        assert rc == 1
        assert (
            failed == b"f\t1000\t%d\tsame.bin\0" % MTIME0
        ), "the failed record goes to the retry list as is"
        assert messages == [{"path": "same.bin", "error": "source changed during the copy", "permanent": False}]
        assert worker.counts["failed"] == 1 and worker.counts["files"] == 0
        assert (
            dst / "same.bin"
        ).read_bytes() == b"old" * 10, "the old destination file was replaced by a torn one"
        assert part_files(dst) == []

    def test_worker_short_copy_is_not_renamed(self, tmp_path, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f.bin", BLOCK, MTIME0)
        monkeypatch.setattr(
            copy_worker, "_copy_data", lambda fin, fout, size: os.write(fout, b"partial")
        )
        rc, _w, _f, messages = run_worker(
            tmp_path, src, dst, b"f\t%d\t%d\tf.bin\0" % (len(BLOCK), MTIME0)
        )
        assert rc == 1
        assert messages[0]["error"] == f"copied 7 of {len(BLOCK)} bytes"
        assert not (dst / "f.bin").exists() and part_files(dst) == []

    def test_worker_checksum_mismatch_is_not_renamed(self, tmp_path, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f.bin", BLOCK, MTIME0)

        def flip_a_byte(fin, fout, size):
            data = os.read(fin, size)
            return os.write(fout, bytes([data[0] ^ 1]) + data[1:])

        monkeypatch.setattr(copy_worker, "_copy_data", flip_a_byte)
        rc, _w, _f, messages = run_worker(
            tmp_path, src, dst, b"f\t%d\t%d\tf.bin\0" % (len(BLOCK), MTIME0), "checksum"
        )
        assert rc == 1 and "checksum" in messages[0]["error"]
        assert not (dst / "f.bin").exists() and part_files(dst) == []
        rc, *_ = run_worker(
            tmp_path, src, dst, b"f\t%d\t%d\tf.bin\0" % (len(BLOCK), MTIME0), "size"
        )
        assert rc == 0, "verify=size does not hash (that is what checksum is for)"

    def test_worker_failures_do_not_stop_the_shard(self, tmp_path):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "a", b"a", MTIME0)
        write(src / "c", b"c", MTIME0)
        records = b"f\t1\t1\ta\0f\t1\t1\tgone\0l\t0\t1\tgone-link\0f\t1\t1\tc\0"
        rc, worker, failed, messages = run_worker(tmp_path, src, dst, records)
        assert rc == 1
        assert failed == b"f\t1\t1\tgone\0l\t0\t1\tgone-link\0"
        assert [m["path"] for m in messages] == ["gone", "gone-link"]
        assert worker.counts["files"] == 2 and worker.counts["failed"] == 2
        status = json.loads((tmp_path / "status").read_text())
        assert status["done"] is True and status["files"] == 2 and status["failed"] == 2

    @pytest.mark.parametrize("retries", [0, 2])
    def test_file_growing_while_the_copy_runs(self, tmp_path, dm, retries):
        """A background writer appends to a big file until its copy has failed once."""
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "grow: ing.log", BLOCK * 96, MTIME0)
        for i in range(10):
            write(src / f"small-{i}", b"%d" % i, MTIME0)
        with growing_until_a_copy_fails(src / "grow: ing.log", work):
            result = pcopy(
                src, dst, work, dm, workers=2, shards=2, retries=retries, retry_delay_s=0.5, keep_work_dir=True
            ).run()
        assert part_files(dst) == []
        if retries:
            assert result.ok, result.failed_messages
            assert result.retries >= 1
            assert_same_tree(src, dst)
            retried = [json.loads(p.read_text()) for p in (work / "runs").glob("shard-*.1.status")]
            assert len(retried) == 1
            assert (
                retried[0]["files"] + retried[0]["failed"] == 1 and retried[0]["skipped"] == 0
            ), "the retry went over the whole shard instead of only what failed"
        else:
            assert not result.ok
            assert result.failed_messages == ["grow: ing.log: source changed during the copy"]
            assert result.files_failed == 1
            assert not (dst / "grow: ing.log").exists(), "a half copy is at the destination"
            assert all((dst / f"small-{i}").exists() for i in range(10))


@contextlib.contextmanager
def growing_until_a_copy_fails(path: Path, work: Path):
    """Append to ``path`` in the background until a worker of the copy in ``work`` has
    failed with "source changed" (so that its retry can succeed)."""
    stop = threading.Event()

    def failed_once():
        runs = work / "runs"
        return runs.exists() and any("source changed" in p.read_text() for p in runs.glob("*.messages"))

    appending = threading.Event()

    def append():
        with open(path, "ab", buffering=0) as fh:
            while not stop.is_set() and not failed_once():
                fh.write(b"log line\n")
                appending.set()
                time.sleep(0.0005)

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    # The copy starts once the file grows (else, on a busy machine, a fast copy could end
    # before the writer ran at all: seen once in CI, the copy then rightly succeeded).
    assert appending.wait(10), "the writer did not start appending"
    try:
        yield
    finally:
        stop.set()
        writer.join(10)


# =============================================================================== verify
class TestVerify:
    def test_checksum(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        counts = make_tree(src, tmp_path / "outside")
        result = pcopy(src, dst, tmp_path / "work", dm, verify="checksum").run()
        assert result.ok
        assert result.files_verified == counts["files"] + counts["links"]
        assert read_report(result.report)["verify"] == "checksum"
        assert_same_tree(src, dst)

    def test_verify_none_checks_nothing(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f", b"f")
        result = pcopy(src, dst, tmp_path / "work", dm, verify=None).run()
        assert result.ok and result.files_verified == 0
        assert read_report(result.report)["verify"] == "none"

    def damage_before_verify(self, monkeypatch, tmp_path, victims: dict, times: int = 1):
        """Shard workers that damage files after copying them and before verifying them.

        ``victims`` maps a path relative to the destination to ``"truncate"`` (cut in
        half), ``"delete"`` or ``"relink"`` (a link pointing elsewhere).  A worker damages
        the victims of its own shard, ``times`` damages in all; the count is kept in files
        under ``tmp_path``.
        Returns a function giving how many damages were done.
        """
        wrapper = tmp_path / "damaging_worker.py"
        marks = tmp_path / "damage-marks"
        marks.mkdir()
        wrapper.write_text(
            "import os, sys\n"
            f"sys.path.insert(0, {str(Path(copy_worker.__file__).parent)!r})\n"
            "import worker as w\n"
            f"VICTIMS = {{os.fsencode(k): v for k, v in {ascii(victims)}.items()}}\n"
            f"MARKS, TIMES = {str(marks)!r}, {times}\n"
            "real = w.Worker.verify_shard\n"
            "def verify_shard(self, shard, *more):\n"
            "    with open(shard, 'rb') as fh:\n"
            "        records = fh.read()\n"
            "    for rel, how in VICTIMS.items():\n"
            "        path = self.dst + rel\n"
            "        done = len(os.listdir(MARKS))\n"
            "        if done >= TIMES or b'\\t' + rel + b'\\0' not in records:\n"
            "            continue\n"
            "        if how == 'truncate':\n"
            "            os.truncate(path, os.path.getsize(path) // 2)\n"
            "        else:\n"
            "            os.unlink(path)\n"
            "            if how == 'relink':\n"
            "                os.symlink('wrong', path)\n"
            "        open(os.path.join(MARKS, str(done)), 'w').close()\n"
            "    real(self, shard, *more)\n"
            "w.Worker.verify_shard = verify_shard\n"
            "sys.exit(w.main())\n"
        )
        real_launch = ParallelCopy._launch

        def launch(self, dm, task):
            launch, status, failed = real_launch(self, dm, task)
            argv = [str(wrapper) if a.endswith("transfer/worker.py") else a for a in launch.argv]
            return dataclasses.replace(launch, argv=tuple(argv)), status, failed

        monkeypatch.setattr(ParallelCopy, "_launch", launch)
        return lambda: len(os.listdir(marks))

    def test_mismatch_is_repaired(self, tmp_path, dm, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        for i in range(8):
            write(src / f"f{i}", os.urandom(5000), MTIME0)
        damages = self.damage_before_verify(monkeypatch, tmp_path, {"f3": "truncate"})
        result = pcopy(src, dst, tmp_path / "work", dm, shards=4).run()
        assert damages() == 1
        assert result.ok, result.failed_messages
        assert result.mismatches == 1
        assert result.retries == 1
        assert result.files_verified == 8
        assert result.files_copied == 8, "the repaired file counts once"
        assert_same_tree(src, dst)
        report = read_report(result.report)
        assert report["mismatches"] == 1 and report["files_copied"] == 8

    def test_mismatch_that_stays_is_reported(self, tmp_path, dm, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        for i in range(4):
            write(src / f"f{i}", os.urandom(5000), MTIME0)
        damages = self.damage_before_verify(monkeypatch, tmp_path, {"f1": "truncate"}, times=3)
        result = pcopy(src, dst, tmp_path / "work", dm, retries=2).run()
        assert damages() == 3
        assert not result.ok
        assert result.failed_messages == [
            "f1: does not match the source after copying (verify=size)"
        ]
        assert result.files_failed == 1 and result.mismatches == 3
        assert result.files_copied == 3 and result.files_verified == 3

    def test_no_repair_without_retries(self, tmp_path, dm, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f", os.urandom(5000), MTIME0)
        damages = self.damage_before_verify(monkeypatch, tmp_path, {"f": "truncate"}, times=5)
        result = pcopy(src, dst, tmp_path / "work", dm, retries=0).run()
        assert damages() == 1
        assert not result.ok and result.mismatches == 1
        assert result.failed_messages == [
            "f: does not match the source after copying (verify=size)"
        ]

    def test_missing_destination_file_is_a_mismatch(self, tmp_path, dm, monkeypatch):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f", b"data", MTIME0)
        os.symlink("f", src / "link")
        damages = self.damage_before_verify(
            monkeypatch, tmp_path, {"f": "delete", "link": "relink"}, times=2
        )
        result = pcopy(src, dst, tmp_path / "work", dm, shards=1).run()
        assert damages() == 2
        assert result.ok and result.mismatches == 2 and result.retries == 1
        assert_same_tree(src, dst)

    def test_verify_none_does_not_notice(self, tmp_path, dm, monkeypatch):
        """The damage check itself works: without verification the damage stays."""
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f", os.urandom(5000), MTIME0)
        damages = self.damage_before_verify(monkeypatch, tmp_path, {"f": "truncate"})
        result = pcopy(src, dst, tmp_path / "work", dm, verify=None).run()
        assert result.ok and damages() == 0, "verify=none must not even run the verify pass"

    def test_worker_verify_pass_counts(self, tmp_path):
        """The pass in the worker: what was damaged after the copy fails, the rest verifies."""
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "a", b"aaaa", MTIME0)
        write(src / "b", b"bbbb", MTIME0)
        os.symlink("a", src / "l")
        records = b"d\t0\t1\tsub\0f\t4\t%d\ta\0f\t4\t%d\tb\0l\t0\t1\tl\0" % (MTIME0, MTIME0)
        real = copy_worker.Worker.verify_shard

        def damage_then_verify(self, shard, *more):
            (dst / "b").write_bytes(b"bb")
            (dst / "l").unlink()
            real(self, shard, *more)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(copy_worker.Worker, "verify_shard", damage_then_verify)
            rc, worker, failed, messages = run_worker(tmp_path, src, dst, records)
        assert rc == 1
        assert failed == b"f\t4\t%d\tb\0l\t0\t1\tl\0" % MTIME0
        assert [m["path"] for m in messages] == ["b", "l"]
        assert {m["error"] for m in messages} == {"does not match the source after copying (verify=size)"}
        c = worker.counts
        # a copied and verified; b and l copied, then failed the verification
        assert (c["files"], c["bytes"], c["verified"], c["mismatches"], c["failed"]) == (1, 4, 1, 2, 2)
        status = json.loads((tmp_path / "status").read_text())
        assert status["mismatches"] == 2 and status["verified"] == 1 and status["done"] is True

    def test_worker_verifies_the_size_it_copied_not_the_listed_one(self, tmp_path):
        """Files that changed between listing and copy: checked against what was copied."""
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "grew", b"g" * 10, MTIME0)
        write(src / "shrank", b"s" * 3, MTIME0)
        write(src / "damaged", b"d" * 7, MTIME0)
        records = b"f\t4\t1\tgrew\0f\t9\t1\tshrank\0f\t5\t1\tdamaged\0"
        real = copy_worker.Worker.verify_shard

        def damage_then_verify(self, shard, *more):
            (dst / "damaged").write_bytes(b"d" * 5)  # the listed size, not the copied one
            real(self, shard, *more)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(copy_worker.Worker, "verify_shard", damage_then_verify)
            rc, worker, failed, messages = run_worker(tmp_path, src, dst, records)
        assert rc == 1
        assert [m["path"] for m in messages] == ["damaged"]
        c = worker.counts
        assert (c["files"], c["bytes"], c["verified"], c["mismatches"]) == (2, 13, 2, 1)
        assert (dst / "grew").read_bytes() == b"g" * 10 and (dst / "shrank").read_bytes() == b"s" * 3


# =============================================================================== background use
class TestBackground:
    def test_start_and_wait(self, tmp_path, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        counts = make_tree(src, tmp_path / "outside")
        pc = pcopy(src, dst, tmp_path / "work", dm)
        assert pc.start() is pc
        result = pc.wait(60)
        assert pc.done()
        assert result.ok and result.files_copied == counts["files"] + counts["links"]
        assert pc.wait() is result
        with pytest.raises(RuntimeError, match="already started"):
            pc.start()
        assert_same_tree(src, dst)

    def test_wait_before_start_and_timeout(self, tmp_path, dm, big_src):
        pc = pcopy(big_src, tmp_path / "dst", tmp_path / "work", dm, workers=1)
        with pytest.raises(RuntimeError, match="start"):
            pc.wait()
        pc.start()
        with pytest.raises(TimeoutError, match="still running"):
            pc.wait(0.01)
        pc.cancel()
        with pytest.raises(CopyCancelledError):
            pc.wait(30)

    @pytest.mark.usefixtures("sigint_raises")
    def test_interrupted_wait_leaves_the_copy_running_and_waitable(self, tmp_path, dm):
        """Ctrl-C inside wait() (a KeyboardInterrupt in the middle of the wait) must not make
        done() True while the copy runs, nor break the next wait()."""
        src = tmp_path / "src"
        write(src / "f", BLOCK)
        pc = pcopy(src, tmp_path / "dst", tmp_path / "work", dm)
        gate = threading.Event()
        finished = CopyResult(ok=True, src=str(src), dst=str(tmp_path / "dst"))
        pc.run = lambda: (gate.wait(60), finished)[1]  # the copy itself is not the point
        pc.start()
        interrupter = interrupt_main_thread_inside(pc_mod.ParallelCopy.wait.__code__, what="pc.wait()")
        try:
            with pytest.raises(KeyboardInterrupt):
                pc.wait(30)
        finally:
            interrupter.join(30)
            assert not interrupter.failure, interrupter.failure
        assert not pc.done()
        with pytest.raises(TimeoutError, match="still running"):
            pc.wait(0.01)
        gate.set()
        assert pc.wait(30) is finished and pc.done()

    def test_python_exiting_with_a_started_copy_cancels_it_resumably(self, tmp_path):
        """A script (or a Jupyter kernel being shut down or restarted) that ends while a
        started copy runs: its shard processes are stopped, not left writing unowned, the
        user is told, and the next run resumes."""
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        for i in range(4):
            write(src / f"f{i}", BLOCK, MTIME0)
        script = tmp_path / "ends.py"
        script.write_text(
            "import sys, time\n"
            "import psutil\n"
            "from taurus_tools import Datamover, ParallelCopy\n"
            "src, dst, work = sys.argv[1:4]\n"
            "pc = ParallelCopy(src, dst, work_dir=work, datamover=Datamover('local'), progress=False,\n"
            "                  shards=2, workers=2)\n"
            "real = pc._launch\n"
            "def launch(dm, task):  # the shard 'workers' run until stopped\n"
            "    launch_, status, failed = real(dm, task)\n"
            "    return type(launch_)(('sleep', '97.25'), name=launch_.name), status, failed\n"
            "pc._launch = launch\n"
            "pc.start()\n"
            "deadline = time.monotonic() + 30\n"
            "while time.monotonic() < deadline:\n"
            "    kids = [p for p in psutil.Process().children(recursive=True) if p.cmdline()[1:] == ['97.25']]\n"
            "    if len(kids) == 2:\n"
            "        break\n"
            "    time.sleep(0.02)\n"
            "print(' '.join(str(p.pid) for p in kids), flush=True)\n"
            "# the script ends here, the copy still running\n"
        )
        done = subprocess.run(
            [sys.executable, str(script), str(src), str(dst), str(work)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        pids = [int(p) for p in done.stdout.split()]
        assert len(pids) == 2, done.stdout + done.stderr
        assert "Python is exiting while a copy runs" in done.stderr and "run it again to resume" in done.stderr
        wait_until(lambda: not alive(pids), 10, what="the shard processes to be stopped")
        state = json.loads((work / "state.json").read_text())
        assert not any(s["state"] == "running" for s in state["shards"])
        result = pcopy(src, dst, work, Datamover("local")).run()
        assert result.ok and result.files_copied == 4
        assert_same_tree(src, dst)

    def test_errors_come_back_from_wait(self, tmp_path, dm, monkeypatch):
        src = tmp_path / "src"
        write(src / "f", BLOCK)
        usage = namedtuple("usage", "total used free percent")
        monkeypatch.setattr(psutil, "disk_usage", lambda p: usage(1, 1, 0, 100.0))
        pc = pcopy(src, tmp_path / "dst", tmp_path / "work", dm).start()
        with pytest.raises(InsufficientSpaceError):
            pc.wait(30)


# =============================================================================== dry run
class TestDryRun:
    def test_lists_and_shards_copies_nothing(self, tmp_path, dm):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        counts = make_tree(src, tmp_path / "outside")
        result = pcopy(src, dst, work, dm, dry_run=True, shards=6).run()
        assert result.dry_run and result.ok
        assert result.files_planned == counts["files"] + counts["links"]
        assert result.bytes_planned == counts["bytes"]
        assert result.files_copied == 0 and result.bytes_copied == 0
        assert not dst.exists()
        assert len(list((work / "shards").iterdir())) == 6
        report = read_report(result.report)
        assert report["dry_run"] is True and report["benchmark_results"] == []
        assert report["total_size_gib"] == pytest.approx(counts["bytes"] / 2**30, abs=1e-6)
        assert "dry run" in result.summary()

    def test_a_real_copy_after_a_dry_run_sees_new_files(self, tmp_path, dm):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "a", b"a", MTIME0)
        assert pcopy(src, dst, work, dm, dry_run=True).run().files_planned == 1
        write(src / "b", b"b", MTIME0)
        result = pcopy(src, dst, work, dm).run()
        assert result.ok and result.files_planned == 2
        assert_same_tree(src, dst)


# =============================================================================== CLI
def cli(*args) -> int:
    """``taurus-tools -q --backend local copy ARGS...`` in this process."""
    return main(["-q", "--backend", "local", "copy", *map(str, args)])


class TestCli:
    def test_copy_exit_0_with_summary(self, tmp_path, capsys):
        src, dst, work, report = tmp_path / "src", tmp_path / "dst", tmp_path / "w", tmp_path / "r"
        counts = make_tree(src, tmp_path / "outside")
        rc = cli(src, dst, "--workers", 2, "--work-dir", work, "--report", report)
        out, err = capsys.readouterr()
        assert rc == 0, err
        planned = counts["files"] + counts["links"]
        assert out.startswith(f"ok: {planned} files")
        assert f"of {planned} planned" in out and f"report: {report}" in out
        assert err == ""
        assert read_report(report)["workers"] == 2
        assert_same_tree(src, dst)

    def test_copy_options_reach_the_copy(self, tmp_path, capsys):
        src, dst, work, report = tmp_path / "src", tmp_path / "dst", tmp_path / "w", tmp_path / "r"
        for rel in ("a.txt", "b.tmp", "c.txt"):
            write(src / rel, rel.encode())
        # fmt: off
        rc = cli(src, dst, "--workers", 3, "--shards", 5, "--shard-by", "count",
                 "--verify", "checksum", "--retries", 0, "--exclude", "*.tmp",
                 "--work-dir", work, "--report", report, "--keep-work-dir", "-q", "--atomic")
        # fmt: on
        assert rc == 0, capsys.readouterr().err
        data = read_report(report)
        assert (data["workers"], data["shards"], data["shard_by"]) == (3, 5, "count")
        assert (data["verify"], data["total_retries"], data["atomic"]) == ("checksum", 0, True)
        assert sorted(p.name for p in dst.iterdir()) == ["a.txt", "c.txt"]
        assert (work / "state.json").exists()

    def test_copy_exit_1_when_something_failed(self, tmp_path, capsys):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        write(src / "a", b"a")
        (tmp_path / "list").write_text("a\nmissing\n")
        rc = cli(src, dst, "--files-from", tmp_path / "list", "--work-dir", work)
        out, err = capsys.readouterr()
        assert rc == 1
        assert out.startswith("FAILED:")
        assert "failed: cannot read" in err and "missing" in err
        assert (dst / "a").read_bytes() == b"a"

    def test_copy_exit_2_for_a_missing_source(self, tmp_path, capsys):
        rc = cli(tmp_path / "nope", tmp_path / "dst", "--work-dir", tmp_path / "work")
        assert rc == 2
        assert "does not exist" in capsys.readouterr().err
        assert not (tmp_path / "dst").exists()

    @pytest.mark.parametrize("case", ["workers=0", "dst inside src", "dst is a file"])
    def test_copy_exit_2_for_bad_usage(self, tmp_path, capsys, case):
        src = tmp_path / "src"
        src.mkdir()
        dst, extra = tmp_path / "dst", []
        if case == "workers=0":
            extra = ["--workers", 0]
        elif case == "dst inside src":
            dst = src / "inside"
        else:
            dst.write_text("precious")
        try:
            rc = cli(src, dst, "--work-dir", tmp_path / "w", *extra)
        except SystemExit as exc:  # argparse's own usage errors
            rc = exc.code
        assert rc == 2
        assert "error:" in capsys.readouterr().err

    def test_copy_dry_run(self, tmp_path, capsys):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "a", b"a")
        rc = cli(src, dst, "--dry-run", "--work-dir", tmp_path / "w")
        assert rc == 0
        assert capsys.readouterr().out.startswith("dry run: 0 files")
        assert not dst.exists()

    def test_copy_as_a_program(self, tmp_path):
        src, dst = tmp_path / "src", tmp_path / "dst"
        make_tree(src, tmp_path / "outside")
        argv = cli_copy_argv(src, dst, tmp_path / "w", tmp_path / "r.json")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("ok:")
        assert_same_tree(src, dst)
