"""Reading the listing and shard files: NUL-terminated records, a few MB at a time.

The format (written by :mod:`taurus_tools._plan`) is ``KIND\\tSIZE\\tMTIME_NS\\tPATH\\0``.
This module imports nothing, so the copy worker (started once per shard) can use it
without paying for the package's imports.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the worker 2 ms
    from typing import Iterator, Tuple

#: How much of a file is read at a time.
READ_SIZE = 1 << 22


def record_blocks(path: "str | bytes | object", read_size: int = READ_SIZE) -> Iterator[Tuple[bytes, int]]:
    """Yield ``(block, count)``: runs of whole records (each ending in NUL) and how many."""
    with open(path, "rb") as fh:  # type: ignore[arg-type]
        pending = b""
        while True:
            chunk = fh.read(read_size)
            if not chunk:
                return
            data = pending + chunk if pending else chunk
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
