"""Planning a parallel copy: list a tree once, to disk, and shard it.

The listing is streamed (``os.scandir``) into a file of NUL-terminated records, so a tree
of millions of files never sits in memory and any file name (newlines, tabs, bytes that
are not UTF-8) survives::

    KIND \\t SIZE \\t MTIME_NS \\t RELATIVE_PATH \\0

``KIND`` is ``f`` (file), ``l`` (symlink, copied as a link) or ``d`` (directory).
Entries that cannot be read while listing are not recorded; their messages are kept in
:class:`ListingStats` and end up in the report's ``failed_messages``.

Sharding reads that file back: by bytes with fpart's method (largest file first, onto the
currently lightest shard), or by count (``split -n l/N``).  Directories ride with shard 0,
so empty ones are kept; a file is never split.
"""

from __future__ import annotations

import builtins
import fnmatch
import heapq
import os
import stat
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from ._records import iter_records, record_blocks
from typing import IO, BinaryIO, Iterator, List, NamedTuple, Sequence, Tuple

__all__ = ["Entry", "ListingStats", "list_tree", "list_from_file", "read_entries", "shard", "ShardPlan"]


class Entry(NamedTuple):
    kind: str
    size: int
    mtime_ns: int
    path: bytes  # relative, as the file system has it


#: At most this many listing errors are kept word for word (the count is always right).
MAX_MESSAGES = 10000


@dataclass
class ListingStats:
    files: int = 0
    links: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: int = 0
    messages: List[str] = field(default_factory=list)

    def add(self, kind: str, size: int) -> None:
        if kind == "f":
            self.files += 1
            self.bytes += size
        elif kind == "l":
            self.links += 1
        else:
            self.dirs += 1

    def error(self, where: builtins.bytes, exc: OSError) -> None:  # (the field "bytes" hides the type)
        self.errors += 1
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(f"cannot read {os.fsdecode(where) or '.'}: {exc.strerror or exc}")


def _record(kind: str, size: int, mtime_ns: int, rel: bytes) -> bytes:
    return b"%s\t%d\t%d\t%s\0" % (kind.encode(), size, mtime_ns, rel)


def _excluded(rel: bytes, name: bytes, patterns: Sequence[str]) -> bool:
    if not patterns:
        return False
    rel_s = os.fsdecode(rel)
    name_s = os.fsdecode(name)
    return any(fnmatch.fnmatchcase(name_s, p) or fnmatch.fnmatchcase(rel_s, p) for p in patterns)


def list_tree(src: Path, out: BinaryIO, exclude: Sequence[str] = ()) -> ListingStats:
    """Walk ``src`` once, writing one record per entry to ``out``; return the counts.

    Symlinks are recorded as links, never followed.  Folders and entries that cannot be
    read are left out, with a message in the returned stats (the copy reports them as
    failed); the walk goes on.  Sockets, FIFOs and devices are not data: left out.
    """
    stats = ListingStats()
    root = os.fsencode(src)
    stack: List[bytes] = [b""]
    write = out.write
    files = links = dirs = nbytes = 0
    ifmt, ifreg, ifdir, iflnk = 0o170000, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
    # Hot loop (a million entries take seconds): counters in locals, one write per folder.
    while stack:
        rel_dir = stack.pop()
        prefix = rel_dir + b"/" if rel_dir else b""
        try:
            with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
                entries = list(it)
        except OSError as exc:
            stats.error(os.path.join(root, rel_dir), exc)
            continue
        records: List[bytes] = []
        add = records.append
        for entry in entries:
            rel = prefix + entry.name
            if exclude and _excluded(rel, entry.name, exclude):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                stats.error(os.path.join(root, rel), exc)
                continue
            fmt = st.st_mode & ifmt
            if fmt == ifreg:
                size = st.st_size
                add(b"f\t%d\t%d\t%s\0" % (size, st.st_mtime_ns, rel))
                files += 1
                nbytes += size
            elif fmt == ifdir:
                stack.append(rel)
                add(b"d\t0\t%d\t%s\0" % (st.st_mtime_ns, rel))
                dirs += 1
            elif fmt == iflnk:
                add(b"l\t0\t%d\t%s\0" % (st.st_mtime_ns, rel))
                links += 1
        write(b"".join(records))
    stats.files, stats.links, stats.dirs, stats.bytes = files, links, dirs, nbytes
    return stats


def list_from_file(src: Path, names: IO[str], out: BinaryIO) -> ListingStats:
    """Like :func:`list_tree`, for a precomputed list: one path relative to ``src`` per line."""
    stats = ListingStats()
    root = os.fsencode(src)
    for line in names:
        name = line.rstrip("\n")
        if not name:
            continue
        rel = os.fsencode(name.lstrip("/"))
        try:
            st = os.lstat(os.path.join(root, rel))
        except OSError as exc:
            stats.error(os.path.join(root, rel), exc)
            continue
        kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
        size = st.st_size if kind == "f" else 0
        out.write(_record(kind, size, st.st_mtime_ns, rel))
        stats.add(kind, size)
    return stats


def read_entries(path: Path) -> Iterator[Tuple[Entry, bytes]]:
    """Yield ``(Entry, raw_record)`` from a listing or shard file, streaming."""
    for raw in iter_records(path):
        kind, size, mtime, rel = raw[:-1].split(b"\t", 3)
        yield Entry(kind.decode(), int(size), int(mtime), rel), raw


@dataclass
class ShardPlan:
    """Where each shard file is, with its bytes and file count."""

    paths: List[Path]
    bytes: List[int]
    files: List[int]


def _block_sizes(block: bytes, count: int) -> List[int]:
    """Sizes of the ``count`` records in ``block``; -1 for records that are not files or links."""
    if block.count(b"\t") == 3 * count:
        # No name holds a tab: all fields at once (C speed), every 4th one a kind or size.
        fields = block.replace(b"\0", b"\t").split(b"\t")
        kinds = fields[0 : 4 * count : 4]
        sizes = list(map(int, fields[1 : 4 * count : 4]))
        if kinds.count(b"f") + kinds.count(b"l") != count:
            sizes = [size if kind in (b"f", b"l") else -1 for kind, size in zip(kinds, sizes)]
        return sizes
    sizes = []
    for rec in block[:-1].split(b"\0"):
        kind, size, _rest = rec.split(b"\t", 2)
        sizes.append(int(size) if kind in (b"f", b"l") else -1)
    return sizes


def shard(listing: Path, out_dir: Path, n: int, by: str = "bytes") -> ShardPlan:
    """Split a listing into ``n`` shard files in ``out_dir`` (``shard-0000`` ...).

    ``by="bytes"``: fpart's ``-n`` method, largest first onto the lightest shard, which
    keeps the largest shard within one file of the best possible.  ``by="count"``:
    consecutive runs of equal length, as ``split -n l/N``.  Directory records go to
    shard 0.  Memory: a few machine words per file (about 100 bytes per entry while
    sorting); the listing is read twice, a few MB at a time.
    """
    if n < 1:
        raise ValueError(f"shards must be >= 1, got {n}")
    if by not in ("bytes", "count"):
        raise ValueError(f"shard_by must be 'bytes' or 'count', got {by!r}")
    sizes = array("q")
    for block, count in record_blocks(listing):
        sizes.extend(_block_sizes(block, count))
    total = len(sizes)
    assign = array("I", bytes(4 * total)) if total else array("I")  # directories stay in shard 0
    loads = [0] * n
    counts = [0] * n
    if by == "bytes":
        # Largest first (directories, -1, sort last); ties keep listing order.
        order = sorted(range(total), key=sizes.__getitem__, reverse=True)
        heap = [(0, 0, s) for s in range(n)]  # (bytes, files, shard)
        replace = heapq.heapreplace
        for i in order:
            size = sizes[i]
            if size < 0:
                break
            load, cnt, s = heap[0]
            assign[i] = s
            replace(heap, (load + size, cnt + 1, s))
        del order
        for load, cnt, s in heap:
            loads[s], counts[s] = load, cnt
    else:
        files = total - sizes.count(-1)
        per, extra = divmod(files, n)
        s, filled = 0, 0
        for i in range(total):
            size = sizes[i]
            if size < 0:
                continue
            while s < n - 1 and filled >= per + (1 if s < extra else 0):
                s, filled = s + 1, 0
            assign[i] = s
            filled += 1
            loads[s] += size
            counts[s] += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"shard-{s:04d}" for s in range(n)]
    handles = [open(p, "wb") for p in paths]
    try:
        start = 0
        for block, count in record_blocks(listing):
            buckets: List[List[bytes]] = [[] for _ in range(n)]
            for rec, s in zip(block[:-1].split(b"\0"), assign[start : start + count]):
                buckets[s].append(rec)
            start += count
            for s, recs in enumerate(buckets):
                if recs:
                    recs.append(b"")
                    handles[s].write(b"\0".join(recs))
    finally:
        for h in handles:
            h.close()
    return ShardPlan(paths, loads, counts)
