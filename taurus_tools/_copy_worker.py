"""Copy one shard: the process a parallel copy starts per shard (locally or as a job).

``python -S .../taurus_tools/_copy_worker.py --src SRC --dst DST --shard FILE --status FILE
--failed FILE [--verify size|checksum|none]`` (``python -m taurus_tools._copy_worker`` works too)

It imports only :mod:`taurus_tools._records` (which imports nothing) and a little of the
standard library: a parallel copy starts it once per shard, so its start-up time counts
(about 17 ms with ``-S`` on the benchmark machine, against 28 ms when it imported
:mod:`taurus_tools._plan`).

It reads the shard's records (see :mod:`taurus_tools._plan`) and for each one:

* directory: created (so empty ones are kept);
* symlink: recreated as a link with the same target (never followed);
* file: skipped when the destination has the same size and modification time; else
  copied to ``.NAME.tt-part`` next to the destination, checked (size, or content hash
  with ``--verify checksum``; the source must not have changed meanwhile), given the
  source's modification time, and only then renamed into place.  An interrupted copy
  therefore never leaves a file that looks complete.

Failures do not stop the shard: each failed record is appended to ``--failed`` (so a
retry copies only those) with its message in ``FILE.messages``.  ``--status`` is
rewritten about twice a second with progress counters as JSON.  Exit code: 0 when
everything was copied or skipped, 1 when some entries failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import BinaryIO, Dict, Optional

try:
    from ._records import iter_records
except ImportError:  # run as a script (``python -S .../_copy_worker.py``): no package import
    from _records import iter_records  # type: ignore[no-redef]

PART_SUFFIX = b".tt-part"
_CHUNK = 1 << 24
_STATUS_EVERY_S = 0.5


def part_name(dst: bytes) -> bytes:
    """The temporary name a file is written under before it is renamed into place."""
    head, tail = os.path.split(dst)
    return os.path.join(head, b"." + tail + PART_SUFFIX)


def _copy_data(fin: int, fout: int, size: int) -> int:
    """Copy ``size`` bytes (fewer if the source shrank); the caller checks the source did not change."""
    copied = 0
    try:
        # Stop at the expected size: no extra call just to see end-of-file.  A source that
        # grew meanwhile is caught by the caller's fstat (size or mtime changed).
        while copied < size:
            n = os.copy_file_range(fin, fout, min(_CHUNK, size - copied))
            if n == 0:
                break
            copied += n
        return copied
    except OSError:
        # Not supported here (old kernel, some file systems): plain reads and writes.
        os.lseek(fin, copied, os.SEEK_SET)
        os.lseek(fout, copied, os.SEEK_SET)
        while copied < size:
            data = os.read(fin, min(_CHUNK, size - copied))
            if not data:
                return copied
            os.write(fout, data)
            copied += len(data)
        return copied


def file_hash(path: bytes) -> str:
    import hashlib  # only for verify="checksum"

    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while True:
            data = fh.read(_CHUNK)
            if not data:
                return digest.hexdigest()
            digest.update(data)


class Worker:
    def __init__(self, src: bytes, dst: bytes, verify: str, status: str, failed: BinaryIO, messages) -> None:
        self.src = src
        self.dst = dst
        self.verify = verify
        self.status_path = status
        self.failed = failed
        self.messages = messages
        self.counts: Dict[str, int] = {"files": 0, "bytes": 0, "skipped": 0, "skipped_bytes": 0, "failed": 0}
        self._last_status = 0.0

    def status(self, done: bool = False) -> None:
        now = time.monotonic()
        if not done and now - self._last_status < _STATUS_EVERY_S:
            return
        self._last_status = now
        tmp = self.status_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({**self.counts, "done": done}, fh)
        os.replace(tmp, self.status_path)

    def fail(self, raw: bytes, rel: bytes, why: str) -> None:
        self.counts["failed"] += 1
        self.failed.write(raw)
        self.messages.write(json.dumps({"path": os.fsdecode(rel), "error": why}) + "\n")

    def run(self, shard: str) -> int:
        for raw in iter_records(shard):
            kind, _size, _mtime, rel = raw[:-1].split(b"\t", 3)
            src = os.path.join(self.src, rel)
            dst = os.path.join(self.dst, rel)
            try:
                if kind == b"d":
                    os.makedirs(dst, exist_ok=True)
                elif kind == b"l":
                    self.copy_link(src, dst)
                else:
                    self.copy_file(src, dst)
            except OSError as exc:
                self.fail(raw, rel, f"{exc.strerror or exc}")
            except ValueError as exc:
                self.fail(raw, rel, str(exc))
            self.status()
        self.status(done=True)
        return 1 if self.counts["failed"] else 0

    def copy_link(self, src: bytes, dst: bytes) -> None:
        target = os.readlink(src)
        try:
            if os.readlink(dst) == target:
                self.counts["skipped"] += 1
                return
        except OSError:
            pass
        tmp = part_name(dst)
        os.makedirs(os.path.dirname(dst) or b".", exist_ok=True)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        os.replace(tmp, dst)
        self.counts["files"] += 1

    def copy_file(self, src: bytes, dst: bytes) -> None:
        try:
            dt: Optional[os.stat_result] = os.lstat(dst)
        except FileNotFoundError:
            dt = None
        if dt is not None:
            st = os.lstat(src)
            if dt.st_size == st.st_size and dt.st_mtime_ns == st.st_mtime_ns:
                self.counts["skipped"] += 1
                self.counts["skipped_bytes"] += st.st_size
                return
        tmp = part_name(dst)
        fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fin)
            mode = st.st_mode & 0o7777
            try:
                fout = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                fout = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
            try:
                try:
                    copied = _copy_data(fin, fout, st.st_size)
                    after = os.fstat(fin)
                    if after.st_size != st.st_size or after.st_mtime_ns != st.st_mtime_ns:
                        raise ValueError("source changed during the copy")
                    if copied != st.st_size:
                        raise ValueError(f"copied {copied} of {st.st_size} bytes")
                    if self.verify == "checksum" and file_hash(src) != file_hash(tmp):
                        raise ValueError("content differs after the copy (checksum)")
                    os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(fout)
                os.replace(tmp, dst)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        finally:
            os.close(fin)
        self.counts["files"] += 1
        self.counts["bytes"] += st.st_size


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m taurus_tools._copy_worker")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--shard", required=True)
    p.add_argument("--status", required=True)
    p.add_argument("--failed", required=True)
    p.add_argument("--verify", choices=("size", "checksum", "none"), default="size")
    a = p.parse_args(argv)
    with open(a.failed, "wb") as failed, open(a.failed + ".messages", "w") as messages:
        worker = Worker(os.fsencode(a.src), os.fsencode(a.dst), a.verify, a.status, failed, messages)
        return worker.run(a.shard)


if __name__ == "__main__":
    sys.exit(main())
