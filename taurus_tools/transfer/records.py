"""Reading the listing and shard files: NUL-terminated records, a few MB at a time; the
name of a shard's file; and the check that a record's path runs through real folders only.

The format (written by :mod:`taurus_tools.transfer.plan`) is ``KIND\\tSIZE\\tMTIME_NS\\tPATH\\0``.
This module imports only :mod:`os` (loaded by every interpreter anyway), so the copy
worker (started once per shard) can use it without paying for the package's imports.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the worker 2 ms
    from typing import Iterator, Tuple

#: How much of a file is read at a time.
READ_SIZE = 1 << 22


def shard_file_name(index: int) -> str:
    """``shard-NNNN``: the name of a shard's records file (see :class:`taurus_tools.transfer.work_dir.WorkDir`)."""
    return f"shard-{index:04d}"


def record_blocks(path: "str | bytes | object", read_size: int = READ_SIZE) -> Iterator[Tuple[bytes, int]]:
    """Yield ``(block, count)``: runs of whole records (each ending in NUL) and how many."""
    with open(path, "rb") as fh:  # type: ignore[arg-type]
        pending = b""
        while True:
            got = fh.read(read_size)
            if not got:
                return
            data = pending + got if pending else got
            cut = data.rfind(b"\0") + 1
            pending = data[cut:]
            if cut:
                block = data[:cut]
                yield block, block.count(b"\0")


def iter_records(path: "str | bytes | object") -> Iterator[bytes]:
    """Yield each raw record (with its trailing NUL), streaming."""
    for block, _count in record_blocks(path):
        start = 0
        while True:
            end = block.find(b"\0", start)
            if end < 0:
                break
            yield block[start : end + 1]
            start = end + 1


def link_above(root: bytes, rel: bytes, real_dirs: set) -> "bytes | None":
    """The first folder on ``rel``'s path below ``root`` that is a symbolic link (or no
    folder at all), or None.

    Folders seen to be real are remembered in ``real_dirs`` (only once the whole path
    above them is known to be real); a folder that does not exist ends the check (it and
    what is below it are yet to be made).  Planning checks the source with it, the copy
    worker the destination.
    """
    unchecked = []
    end = rel.rfind(b"/")
    while end > 0 and rel[:end] not in real_dirs:
        unchecked.append(rel[:end])
        end = rel.rfind(b"/", 0, end)
    for folder in reversed(unchecked):  # from the top: a link above is found first
        try:
            st = os.lstat(os.path.join(root, folder))
        except FileNotFoundError:
            return None
        if (st.st_mode & 0o170000) != 0o040000:
            return folder
        real_dirs.add(folder)
    return None
