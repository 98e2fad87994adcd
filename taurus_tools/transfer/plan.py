"""Planning a parallel copy: list a tree once, to disk, and shard it.

The listing is streamed (``os.scandir``) into a file of NUL-terminated records, so a tree
of millions of files never sits in memory and any file name (newlines, tabs, bytes that
are not UTF-8) survives::

    KIND \\t SIZE \\t MTIME_NS \\t RELATIVE_PATH \\0

``KIND`` is ``f`` (file), ``l`` (symlink, copied as a link) or ``d`` (directory).
Entries that cannot be read while listing are not recorded; their messages are kept in
:class:`ListingStats` and end up in the report's ``failed_messages``.  Sockets, FIFOs and
devices are not data: they are left out and counted (``special``), as are the entries
``exclude`` patterns leave out (``excluded``).

Sharding reads that file back: by bytes with fpart's method (largest file first, onto the
currently lightest shard), or by count (``split -n l/N``).  Directories ride with shard 0,
so empty ones are kept; a file is never split.
"""

from __future__ import annotations

import builtins
import fnmatch
import heapq
import os
import posixpath
import stat
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from .records import iter_records, link_above, record_blocks, shard_file_name
from typing import IO, BinaryIO, Iterator, List, NamedTuple, Optional, Sequence, Tuple

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
    #: Sockets, FIFOs and devices left out (not data), and the first few of their paths.
    special: int = 0
    special_examples: List[str] = field(default_factory=list)
    #: Entries left out by ``exclude`` patterns (a folder counts once, with what it holds).
    excluded: int = 0

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

    def refuse(self, entry: str, why: str) -> None:
        self.errors += 1
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(f"{entry!r}: refused: {why}")

    def skip_special(self, rel: builtins.bytes, mode: int) -> None:
        self.special += 1
        if len(self.special_examples) < MAX_SPECIAL_EXAMPLES:
            what = _SPECIAL_KINDS.get(stat.S_IFMT(mode), "special file")
            self.special_examples.append(f"{os.fsdecode(rel)} ({what})")


#: How many paths of special files the stats keep (the count is always right).
MAX_SPECIAL_EXAMPLES = 20
_SPECIAL_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def _record(kind: str, size: int, mtime_ns: int, rel: bytes) -> bytes:
    return b"%s\t%d\t%d\t%s\0" % (kind.encode(), size, mtime_ns, rel)


def excluded(rel: "bytes | str", name: "bytes | str", patterns: Sequence[str]) -> bool:
    """Whether an ``exclude`` glob matches the entry's name or its path relative to the root."""
    if not patterns:
        return False
    rel_s = os.fsdecode(rel)
    name_s = os.fsdecode(name)
    return any(fnmatch.fnmatchcase(name_s, p) or fnmatch.fnmatchcase(rel_s, p) for p in patterns)


def list_tree(src: Path, out: BinaryIO, exclude: Sequence[str] = ()) -> ListingStats:
    """Walk ``src`` once, writing one record per entry to ``out``; return the counts.

    Symlinks are recorded as links, never followed.  Folders and entries that cannot be
    read are left out, with a message in the returned stats (the copy reports them as
    failed); the walk goes on.  Sockets, FIFOs and devices are not data: left out and
    counted, as are excluded entries.
    """
    stats = ListingStats()
    root = os.fsencode(src)
    stack: List[bytes] = [b""]
    write = out.write
    files = links = dirs = nbytes = left_out = 0
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
            if exclude and excluded(rel, entry.name, exclude):
                left_out += 1
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
            else:
                stats.skip_special(rel, st.st_mode)
        write(b"".join(records))
    stats.files, stats.links, stats.dirs, stats.bytes, stats.excluded = files, links, dirs, nbytes, left_out
    return stats


def list_from_file(src: Path, names: IO[str], out: BinaryIO) -> ListingStats:
    """Like :func:`list_tree`, for a precomputed list: one path relative to ``src`` per line.

    An absolute path inside ``src`` is taken relative to it.  Entries that would reach
    outside ``src`` are refused (a message each, nothing recorded): absolute paths
    elsewhere, paths that climb out with ``..``, and paths below a symbolic link (the
    copy would make the link at the destination and then write through it).  A folder
    entry stands for the folder itself, not its contents.
    """
    stats = ListingStats()
    root = os.fsencode(src)
    root_s = os.fsdecode(root).rstrip("/") + "/"
    # An absolute entry may name the source as given or by its real path.
    roots = sorted({root_s, os.path.realpath(root_s).rstrip("/") + "/"}, key=len, reverse=True)
    real_dirs: set = set()  # folders of the source seen to be real folders, not links
    for line in names:
        name = line.rstrip("\n")
        if not name:
            continue
        rel_s = name
        if name.startswith("/"):
            inside = [r for r in roots if (name + "/").startswith(r)]
            if not inside:
                stats.refuse(name, f"an absolute path outside the source {root_s}")
                continue
            rel_s = name[len(inside[0]):] or "."
        rel_s = posixpath.normpath(rel_s)
        if rel_s == ".." or rel_s.startswith("../"):
            stats.refuse(name, "it leaves the source with '..'")
            continue
        if rel_s == ".":
            continue  # the source itself: its contents are what the copy is about
        rel = os.fsencode(rel_s)
        link = link_above(root, rel, real_dirs)
        if link is not None:
            stats.refuse(name, f"{os.fsdecode(link)!r} on its path is not a folder (a symbolic link?)")
            continue
        try:
            st = os.lstat(os.path.join(root, rel))
        except OSError as exc:
            stats.error(os.path.join(root, rel), exc)
            continue
        fmt = stat.S_IFMT(st.st_mode)
        kind = {stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFREG: "f"}.get(fmt)
        if kind is None:
            stats.skip_special(rel, st.st_mode)
            continue
        size = st.st_size if kind == "f" else 0
        out.write(_record(kind, size, st.st_mtime_ns, rel))
        stats.add(kind, size)
    return stats


def path_problem(relative: str) -> Optional[str]:
    """Why ``relative`` (an object key or remote path below a location) cannot be a relative
    file name at a destination, or None if it can.

    Refused: an empty key, a leading ``/`` (absolute-looking), empty components (``a//b``),
    ``.`` or ``..`` components (path traversal), NUL, and components longer than 255 bytes.
    A newline or another control character is a valid file name on POSIX and is kept.
    """
    if not relative:
        return "is empty"
    if relative.startswith("/"):
        return "starts with '/' (an absolute path)"
    if "\0" in relative:
        return "holds a NUL character"
    for part in relative.split("/"):
        if part == "":
            return "has an empty component ('//')"
        if part in (".", ".."):
            return f"has a {part!r} component (it would leave the destination)"
        if len(part.encode("utf-8", "surrogateescape")) > 255:
            return "has a component longer than 255 bytes"
    return None


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
    paths = [out_dir / shard_file_name(s) for s in range(n)]
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
