"""Planning a parallel copy: the streamed listing (``list_tree``, ``list_from_file``,
``read_entries``) and the sharding (``shard``), without copying anything.

The size-boundary tests compare multisets of records: a file lost or duplicated at a
shard boundary (seed 000's chunker lost one at each) makes them fail.
"""

from __future__ import annotations

import io
import os
import random
from collections import Counter
from pathlib import Path

import pytest

from helpers import HOSTILE_NAMES

from taurus_tools.transfer.plan import Entry, list_from_file, list_tree, read_entries, shard

pytestmark = pytest.mark.timeout(60)

HOSTILE = HOSTILE_NAMES


def fs(path) -> bytes:
    return os.fsencode(path)


def write(path: bytes, data: bytes = b"x") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def listing_of(src: Path, tmp_path: Path, exclude=()):
    out = tmp_path / "listing"
    with open(out, "wb") as fh:
        stats = list_tree(src, fh, exclude)
    entries = [e for e, _ in read_entries(out)]
    return entries, stats


def by_path(entries):
    table = {e.path: e for e in entries}
    assert len(table) == len(entries), "an entry was listed twice"
    return table


# =============================================================================== listing
class TestListTree:
    def test_hostile_names_survive_exactly(self, tmp_path):
        src = tmp_path / "src"
        root = fs(src)
        expected = {}
        for i, name in enumerate(HOSTILE):
            data = os.urandom(i * 7)
            write(os.path.join(root, name), data)
            write(os.path.join(root, b"sub\ndir", name), data + b"!")
            expected[name] = len(data)
            expected[os.path.join(b"sub\ndir", name)] = len(data) + 1
        entries, stats = listing_of(src, tmp_path)
        table = by_path(entries)
        files = {p: e.size for p, e in table.items() if e.kind == "f"}
        assert files == expected
        assert table[b"sub\ndir"].kind == "d"
        for rel, e in table.items():
            st = os.lstat(os.path.join(root, rel))
            assert e.mtime_ns == st.st_mtime_ns, rel
        assert (stats.files, stats.dirs, stats.links, stats.errors) == (len(expected), 1, 0, 0)
        assert stats.bytes == sum(expected.values())

    def test_records_are_nul_terminated_and_streamable(self, tmp_path):
        """Records cross the 1 MiB read chunk of read_entries intact."""
        src = tmp_path / "src"
        src.mkdir()
        long_dir = src / ("d" * 200)
        long_dir.mkdir()
        for i in range(6000):  # about 1.3 MB of records
            (long_dir / f"{'n' * 100}{i:05d}\nx").touch()
        entries, stats = listing_of(src, tmp_path)
        assert os.path.getsize(tmp_path / "listing") > (1 << 20)
        names = [e.path for e in entries if e.kind == "f"]
        assert len(names) == len(set(names)) == 6000 == stats.files
        raw = (tmp_path / "listing").read_bytes()
        assert raw.endswith(b"\0") and raw.count(b"\0") == 6001
        assert b"".join(r for _, r in read_entries(tmp_path / "listing")) == raw

    def test_symlinks_are_recorded_not_followed(self, tmp_path):
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.dat").write_bytes(b"s" * 1000)
        src = tmp_path / "src"
        (src / "inner").mkdir(parents=True)
        (src / "inner" / "real.txt").write_text("real")
        os.symlink(outside, src / "to_outside")
        os.symlink("inner/real.txt", src / "rel_link")
        os.symlink("/nonexistent/target", src / "broken")
        os.symlink("loop", src / "loop")
        os.symlink(src / "inner", src / "inner" / "to_parent_dir")
        entries, stats = listing_of(src, tmp_path)
        table = by_path(entries)
        for name in (b"to_outside", b"rel_link", b"broken", b"loop", b"inner/to_parent_dir"):
            assert table[name].kind == "l", name
            assert table[name].size == 0
        assert not any(b"secret" in p for p in table), "the link to a folder outside was followed"
        assert not any(p.startswith(b"inner/to_parent_dir/") for p in table)
        assert (stats.files, stats.links, stats.dirs) == (1, 5, 1)
        assert stats.bytes == 4

    def test_empty_directories_are_kept(self, tmp_path):
        src = tmp_path / "src"
        (src / "a" / "b" / "c").mkdir(parents=True)
        (src / "empty").mkdir()
        entries, stats = listing_of(src, tmp_path)
        assert {e.path for e in entries if e.kind == "d"} == {b"a", b"a/b", b"a/b/c", b"empty"}
        assert stats.dirs == 4 and stats.files == 0

    def test_special_files_are_left_out(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        os.mkfifo(src / "fifo")
        (src / "f").write_text("f")
        entries, _ = listing_of(src, tmp_path)
        assert [e.path for e in entries] == [b"f"]

    def test_exclude_by_name_and_by_relative_path(self, tmp_path):
        src = tmp_path / "src"
        for rel in (
            "keep.txt",
            "drop.tmp",
            "sub/drop.tmp",
            "sub/deeper/drop.tmp",
            "sub/keep.dat",
            "sub/skipme.dat",
            "other/skipme.dat",
            "cache/inside.dat",
            "nested/cache/inside.dat",
        ):
            write(fs(src / rel))
        entries, stats = listing_of(src, tmp_path, exclude=("*.tmp", "sub/skip*", "cache"))
        files = {e.path.decode() for e in entries if e.kind == "f"}
        assert files == {"keep.txt", "sub/keep.dat", "other/skipme.dat"}
        dirs = {e.path.decode() for e in entries if e.kind == "d"}
        assert dirs == {
            "sub",
            "sub/deeper",
            "other",
            "nested",
        }, "an excluded folder must take its contents along"
        assert stats.files == 3

    def test_exclude_matches_hostile_names(self, tmp_path):
        src = tmp_path / "src"
        root = fs(src)
        for name in HOSTILE:
            write(os.path.join(root, name))
        entries, _ = listing_of(src, tmp_path, exclude=("*\n*", "-*", os.fsdecode(b"\xff*")))
        names = {e.path for e in entries}
        assert names == set(HOSTILE) - {b"new\nline.txt", b"-leading-dash", b"--rf", b"\xff.bin"}

    def test_unreadable_root_is_an_error_not_a_crash(self, tmp_path):
        entries, stats = listing_of(tmp_path / "missing", tmp_path)
        assert entries == []
        assert stats.errors == 1
        assert "No such file or directory" in stats.messages[0]


class TestListFromFile:
    def test_paths_from_a_list(self, tmp_path):
        src = tmp_path / "src"
        write(fs(src / "a.txt"), b"aaa")
        write(fs(src / "with space" / "b.txt"), b"bb")
        write(fs(src / "-dash"), b"")
        write(fs(src / "not listed"), b"zzz")
        os.symlink("a.txt", src / "link")
        (src / "emptydir").mkdir()
        # An absolute path inside the source is taken relative to it.
        names = io.StringIO(f"a.txt\n{src}/with space/b.txt\n\n-dash\n./link\nemptydir/\nmissing.txt\n")
        out = tmp_path / "listing"
        with open(out, "wb") as fh:
            stats = list_from_file(src, names, fh)
        table = by_path([e for e, _ in read_entries(out)])
        assert {p: (e.kind, e.size) for p, e in table.items()} == {
            b"a.txt": ("f", 3),
            b"with space/b.txt": ("f", 2),
            b"-dash": ("f", 0),
            b"link": ("l", 0),
            b"emptydir": ("d", 0),
        }
        assert (stats.files, stats.links, stats.dirs, stats.bytes) == (3, 1, 1, 5)
        assert stats.errors == 1
        assert len(stats.messages) == 1
        assert (
            "missing.txt" in stats.messages[0] and "No such file or directory" in stats.messages[0]
        )

    def test_entries_reaching_outside_the_source_are_refused(self, tmp_path):
        """Absolute paths elsewhere, '..' out of the source and paths below a link: refused, each said."""
        src = tmp_path / "src"
        write(fs(src / "in.txt"), b"in")
        write(fs(src / "d" / "f.txt"), b"f")
        write(fs(tmp_path / "victim.txt"), b"victim")
        write(fs(tmp_path / "outside" / "secret"), b"secret")
        os.symlink(tmp_path / "outside", src / "link-dir")
        os.mkfifo(src / "pipe")
        bad = ["../victim.txt", "d/../../victim.txt", "..", str(tmp_path / "victim.txt"), "/etc/passwd",
               "link-dir/secret", "d/../link-dir/secret"]
        names = io.StringIO("\n".join(["in.txt", "d/../d/f.txt", "link-dir", "pipe", *bad]) + "\n")
        out = tmp_path / "listing"
        with open(out, "wb") as fh:
            stats = list_from_file(src, names, fh)
        table = by_path([e for e, _ in read_entries(out)])
        assert sorted(table) == [b"d/f.txt", b"in.txt", b"link-dir"]
        assert table[b"link-dir"].kind == "l"
        assert stats.errors == len(bad) == len(stats.messages)
        for name, message in zip(bad, stats.messages):
            assert repr(name) in message and "refused" in message, (name, message)
        assert stats.special == 1 and stats.special_examples == ["pipe (FIFO)"]

    def test_non_utf8_name_in_list(self, tmp_path):
        src = tmp_path / "src"
        write(os.path.join(fs(src), b"\xff.bin"), b"12345")
        names = io.TextIOWrapper(
            io.BytesIO(b"\xff.bin\n"), encoding="utf-8", errors="surrogateescape"
        )
        out = tmp_path / "listing"
        with open(out, "wb") as fh:
            stats = list_from_file(src, names, fh)
        assert [(e.path, e.size) for e, _ in read_entries(out)] == [(b"\xff.bin", 5)]
        assert stats.errors == 0


# =============================================================================== sharding
def write_listing(path: Path, sizes, dirs=0, prefix=b"f") -> list:
    """A listing of files with these sizes (and some directories); returns the raw records."""
    records = []
    with open(path, "wb") as fh:
        for i in range(dirs):
            rec = b"d\t0\t1\tdir%05d\0" % i
            records.append(rec)
            fh.write(rec)
        for i, size in enumerate(sizes):
            rec = b"f\t%d\t%d\t%s/%07d name\0" % (size, 1_700_000_000_000_000_000 + i, prefix, i)
            records.append(rec)
            fh.write(rec)
    return records


def shard_contents(plan):
    """Per shard: the raw records it holds."""
    return [[raw for _, raw in read_entries(p)] for p in plan.paths]


def check_plan(plan, records, n):
    """Every record lands in exactly one shard; the plan's sums match the shard files."""
    contents = shard_contents(plan)
    assert len(plan.paths) == len(plan.bytes) == len(plan.files) == n
    assert Counter(r for shard_ in contents for r in shard_) == Counter(
        records
    ), "a record was lost or duplicated"
    for i, shard_ in enumerate(contents):
        entries = [read_record(r) for r in shard_]
        files = [e for e in entries if e.kind != "d"]
        assert plan.files[i] == len(files)
        assert plan.bytes[i] == sum(e.size for e in files)
        if i:
            assert not any(e.kind == "d" for e in entries), "directories ride with shard 0"
    return contents


def read_record(raw: bytes) -> Entry:
    kind, size, mtime, rel = raw.rstrip(b"\0").split(b"\t", 3)
    return Entry(kind.decode(), int(size), int(mtime), rel)


def heavy_tailed(count: int, seed: int = 4) -> list:
    rng = random.Random(seed)
    sizes = [int(1024 * rng.paretovariate(1.1)) for _ in range(count)]
    sizes += [4096] * 500 + [0] * 300 + [1] * 200  # many equal sizes: ties at every boundary
    rng.shuffle(sizes)
    return sizes


class TestShardByBytes:
    @pytest.mark.parametrize("n", [1, 7, 64])
    def test_heavy_tailed_balance_and_no_record_lost(self, tmp_path, n):
        sizes = heavy_tailed(20000)
        records = write_listing(tmp_path / "listing", sizes, dirs=5)
        plan = shard(tmp_path / "listing", tmp_path / "shards", n, "bytes")
        check_plan(plan, records, n)
        bound = max(sum(sizes) / n, max(sizes))
        assert max(plan.bytes) <= 1.02 * bound, (max(plan.bytes), bound)
        assert sum(plan.files) == len(sizes)

    def test_beats_line_count_split_on_heavy_tails(self, tmp_path):
        """The point of sharding by bytes: on a heavy-tailed list ``split -n l/N`` is far off."""
        sizes = heavy_tailed(20000, seed=11)
        write_listing(tmp_path / "listing", sizes)
        by_bytes = shard(tmp_path / "listing", tmp_path / "b", 64, "bytes")
        by_count = shard(tmp_path / "listing", tmp_path / "c", 64, "count")
        assert max(by_bytes.bytes) < max(by_count.bytes)

    @pytest.mark.parametrize("n", [3, 7, 10])
    def test_equal_sizes_at_every_boundary(self, tmp_path, n):
        sizes = [4096] * 1000 + [8192] * 99 + [1] * 11
        records = write_listing(tmp_path / "listing", sizes)
        plan = shard(tmp_path / "listing", tmp_path / "shards", n, "bytes")
        check_plan(plan, records, n)
        assert max(plan.bytes) - min(plan.bytes) <= 8192
        assert max(plan.bytes) <= 1.02 * max(sum(sizes) / n, 8192)

    def test_more_shards_than_files(self, tmp_path):
        records = write_listing(tmp_path / "listing", [10, 20, 30], dirs=2)
        plan = shard(tmp_path / "listing", tmp_path / "shards", 8, "bytes")
        check_plan(plan, records, 8)
        assert sorted(plan.files) == [0] * 5 + [1] * 3
        assert sorted(plan.bytes) == [0] * 5 + [10, 20, 30]
        assert all(p.exists() for p in plan.paths), "empty shards still get a (empty) file"

    def test_zero_byte_files_spread_by_count(self, tmp_path):
        records = write_listing(tmp_path / "listing", [0] * 10)
        plan = shard(tmp_path / "listing", tmp_path / "shards", 4, "bytes")
        check_plan(plan, records, 4)
        assert sorted(plan.files) == [2, 2, 3, 3]
        assert plan.bytes == [0, 0, 0, 0]

    def test_one_huge_file_is_alone_in_its_shard(self, tmp_path):
        huge = 10 * 2**30
        sizes = [1000] * 400 + [huge] + [5000] * 100
        records = write_listing(tmp_path / "listing", sizes)
        plan = shard(tmp_path / "listing", tmp_path / "shards", 4, "bytes")
        contents = check_plan(plan, records, 4)
        [big_shard] = [i for i, b in enumerate(plan.bytes) if b >= huge]
        assert plan.files[big_shard] == 1 and plan.bytes[big_shard] == huge
        assert [read_record(r).size for r in contents[big_shard]] == [huge]
        rest = [b for i, b in enumerate(plan.bytes) if i != big_shard]
        assert max(rest) - min(rest) <= 5000

    def test_symlinks_count_as_entries(self, tmp_path):
        with open(tmp_path / "listing", "wb") as fh:
            records = [b"l\t0\t1\tlink%d\0" % i for i in range(6)] + [b"f\t100\t1\tfile\0"]
            fh.write(b"".join(records))
        plan = shard(tmp_path / "listing", tmp_path / "shards", 3, "bytes")
        check_plan(plan, records, 3)
        assert sum(plan.files) == 7

    def test_empty_listing(self, tmp_path):
        (tmp_path / "listing").write_bytes(b"")
        plan = shard(tmp_path / "listing", tmp_path / "shards", 4, "bytes")
        assert plan.files == [0] * 4 and plan.bytes == [0] * 4
        assert all(p.read_bytes() == b"" for p in plan.paths)


class TestShardByCount:
    @pytest.mark.parametrize("n,count", [(1, 10), (4, 10), (7, 1000), (64, 20000), (5, 5), (8, 3)])
    def test_counts_differ_by_at_most_one(self, tmp_path, n, count):
        sizes = heavy_tailed(count)[:count]
        records = write_listing(tmp_path / "listing", sizes, dirs=3)
        plan = shard(tmp_path / "listing", tmp_path / "shards", n, "count")
        check_plan(plan, records, n)
        assert max(plan.files) - min(plan.files) <= 1
        assert sum(plan.files) == count

    def test_consecutive_runs_like_split(self, tmp_path):
        sizes = list(range(1, 23))
        records = write_listing(tmp_path / "listing", sizes)
        plan = shard(tmp_path / "listing", tmp_path / "shards", 4, "count")
        contents = check_plan(plan, records, 4)
        assert [r for shard_ in contents for r in shard_] == records, "split -n l/N keeps the order"
        assert plan.files == [6, 6, 5, 5]


class TestShardErrors:
    def test_bad_arguments(self, tmp_path):
        write_listing(tmp_path / "listing", [1, 2])
        with pytest.raises(ValueError, match="shards must be >= 1"):
            shard(tmp_path / "listing", tmp_path / "s", 0)
        with pytest.raises(ValueError, match="'bytes' or 'count'"):
            shard(tmp_path / "listing", tmp_path / "s", 2, "size")


def test_listing_to_shards_round_trip(tmp_path):
    """A real tree with hostile names: list, shard, and every entry is in one shard."""
    src = tmp_path / "src"
    root = fs(src)
    rng = random.Random(1)
    for i, name in enumerate(HOSTILE):
        for d in (b"", b"a", b"a/b c"):
            write(os.path.join(root, d, name), os.urandom(rng.randrange(0, 3000)))
    (src / "empty").mkdir()
    os.symlink("a", src / "link")
    with open(tmp_path / "listing", "wb") as fh:
        list_tree(src, fh)
    records = [raw for _, raw in read_entries(tmp_path / "listing")]
    for by in ("bytes", "count"):
        plan = shard(tmp_path / "listing", tmp_path / by, 5, by)
        check_plan(plan, records, 5)
