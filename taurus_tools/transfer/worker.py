"""Copy one shard, then verify it: the process a parallel copy starts per shard (locally or as a job).

``python -S .../taurus_tools/transfer/worker.py --src SRC --dst DST --shard FILE --status FILE
--failed FILE [--verify size|checksum|none] [--part-tag TAG] [--new] [--atomic]``
(``python -m taurus_tools.transfer.worker`` works too)

It imports only :mod:`taurus_tools.transfer.records` (which imports only :mod:`os`) and modules that a
bare interpreter has loaded anyway: a parallel copy starts it once per shard, so its
start-up time counts (about 6 ms with ``-S`` on the benchmark machine, against 17 ms with
:mod:`argparse` and :mod:`json`, and 28 ms when it imported :mod:`taurus_tools.transfer.plan`).

It reads the shard's records (see :mod:`taurus_tools.transfer.plan`) and for each one:

* directory: created (so empty ones are kept);
* symlink: recreated as a link with the same target (never followed);
* file: skipped when the destination has the same size and modification time; else
  copied to a temporary name next to the destination (see :func:`part_name`), checked
  (size, or content hash with ``--verify checksum``; the source must not have changed
  meanwhile), given the source's modification time and permission bits, and only then
  renamed into place.  An interrupted copy therefore never leaves a file that looks
  complete, and a file that was there keeps its old version.

A record whose path is absolute or climbs out with ``..`` is refused, and (unless
``--new``) so is a destination folder that is a symbolic link: nothing is ever written
outside the destination.

``--new`` says the destination held nothing when the copy began, so no file of this shard
can be there yet unless this copy put it there: the skip check (one ``lstat`` per file)
is left out, and files are written under their own name, without the rename (unless
``--atomic``).  They still get the source's modification time last: a file cut short by
a crash never matches the source, so the resume, which never passes ``--new``, copies it
again.  The parallel copy passes ``--new`` only to the first attempt of a fresh copy.

Then, unless ``--verify none``, a second pass over the shard checks every file and link it
copied or skipped, as it now is on disk: the destination must exist with the size of the
source (a link: the same target).  This is the copy's verification; it runs here, next to
the data and in parallel, rather than as one serial walk in the driver.  A file that does
not match counts as failed, so the retry that follows copies it again.

Failures do not stop the shard: each failed record is appended to ``--failed`` (so a
retry copies only those) with its message in ``FILE.messages`` (JSON lines).  Failures
that another try cannot heal (permission denied, a name too long for the destination, a
refused path: see :data:`PERMANENT_ERRNOS`) go to ``FILE.permanent`` instead, so the
driver reports them at once rather than retrying them with backoff.
``--status`` is rewritten about twice a second with progress counters as JSON, with when
and where the shard started (epoch ms, host name, ``$SLURM_JOB_ID``).  Exit code:
0 when everything was copied or skipped and verified, 1 when some entries failed, 2 on
bad usage.
"""

from __future__ import annotations

import errno  # built in: no import cost
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the worker 2 ms
    from typing import BinaryIO

try:
    from .records import iter_records, link_above
except ImportError:  # run as a script (``python -S .../worker.py``): no package import
    from records import iter_records, link_above  # type: ignore[no-redef]

PART_PREFIX = b".tt-part-"
#: ``--failed FILE``: the messages go to ``FILE`` + this, the records that failed for good to
#: ``FILE`` + :data:`PERMANENT_SUFFIX` (the driver's work dir names them the same way).
MESSAGES_SUFFIX = ".messages"
PERMANENT_SUFFIX = ".permanent"
_BLOCK = 1 << 24  # bytes copied, read or hashed at a time
_STATUS_EVERY_S = 0.5
COUNTERS = ("files", "bytes", "skipped", "skipped_bytes", "failed", "verified", "mismatches")

# What happened to each record of the shard, one byte per record (for the verify pass).
_COPIED, _SKIPPED, _FAILED = 0, 1, 2

#: Errors another try cannot heal: reported at once, never retried with backoff.  (Out
#: of space, I/O errors, stale handles and the like may heal: they are retried.)
PERMANENT_ERRNOS = frozenset(
    (
        errno.EACCES,
        errno.EPERM,
        errno.ENOENT,
        errno.EEXIST,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EINVAL,
        errno.EROFS,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EFBIG,
    )
)


class Refused(Exception):
    """A record the worker will not copy, whatever happens (e.g. it would leave the destination)."""


def part_name(dst: bytes, tag: bytes) -> bytes:
    """The temporary name a file is written under before it is renamed into place.

    ``.tt-part-TAG`` in the destination file's folder, where ``TAG`` is the copy's tag (48
    bits of a hash, see :func:`taurus_tools.transfer.parallel_copy.part_tag_of`) and the shard's
    number: short, whatever the length of the file's own name (a
    legal 255-byte name still copies), unique to one worker at a time (a worker copies
    one file at a time), and never the name of a file of the source or destination,
    which no copy but this one could have named so.  A retry or resume of the shard
    uses the same name, so it overwrites the leftover of a killed attempt.
    """
    return dst[: dst.rfind(b"/") + 1] + PART_PREFIX + tag


def escapes(rel: bytes) -> bool:
    """True when a relative path is absolute or climbs out of its root with ``..``."""
    return rel[:1] == b"/" or (b".." in rel and b".." in rel.split(b"/"))


def _copy_data(fin: int, fout: int, size: int) -> int:
    """Copy ``size`` bytes (fewer if the source shrank); the caller checks the source did not change."""
    copied = 0
    try:
        # Stop at the expected size: no extra call just to see end-of-file.  A source that
        # grew meanwhile is caught by the caller's fstat (size or mtime changed).
        while copied < size:
            n = os.copy_file_range(fin, fout, min(_BLOCK, size - copied))
            if n == 0:
                break
            copied += n
        return copied
    except OSError:
        # Not supported here (old kernel, some file systems): plain reads and writes.
        os.lseek(fin, copied, os.SEEK_SET)
        os.lseek(fout, copied, os.SEEK_SET)
        while copied < size:
            data = os.read(fin, min(_BLOCK, size - copied))
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
            data = fh.read(_BLOCK)
            if not data:
                return digest.hexdigest()
            digest.update(data)


def _safe(name: str) -> str:
    """Host names and job ids as they may appear in the hand-written JSON status."""
    return "".join(c for c in name if c.isalnum() or c in ".-_")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class Worker:
    """Copies and verifies the records of one shard; ``run(shard)`` returns the exit code."""

    def __init__(
        self,
        src: bytes,
        dst: bytes,
        verify: str,
        status: str,
        failed,  # binary file: the failed records
        messages,  # text file: one JSON line per failed record
        new: bool = False,
        atomic: bool = False,
        part_tag: bytes | None = None,
        permanent=None,  # binary file for failures no retry can heal; default: ``failed``
    ) -> None:
        self.src = src.rstrip(b"/") + b"/"
        self.dst = dst.rstrip(b"/") + b"/"
        self.verify = verify
        self.new = new
        self.atomic = atomic
        self.part_tag = part_tag or b"w%d" % os.getpid()
        self.status_path = status
        self.failed = failed
        self.permanent = permanent
        self.messages = messages
        # Destination folders seen to be real folders, not links (see _check_parents).
        self._real_dirs: set[bytes] = set()
        self.counts = dict.fromkeys(COUNTERS, 0)
        # Where and when this shard really ran (a Slurm job may wait in the queue first).
        job = _safe(os.environ.get("SLURM_JOB_ID", ""))
        job_json = f'"{job}"' if job else "null"
        host = _safe(os.uname().nodename)
        self._where = f'"started_ms": {int(time.time() * 1000)}, "host": "{host}", "job_id": {job_json}'
        self._umask = _umask()
        self._last_status = 0.0

    def status(self, done: bool = False) -> None:
        now = time.monotonic()
        if not done and now - self._last_status < _STATUS_EVERY_S:
            return
        self._last_status = now
        tmp = self.status_path + ".tmp"
        fields = ", ".join(f'"{k}": {v}' for k, v in self.counts.items())
        with open(tmp, "w") as fh:
            fh.write(f'{{{fields}, {self._where}, "done": {"true" if done else "false"}}}')
        os.replace(tmp, self.status_path)

    def fail(self, raw: bytes, rel: bytes, why: str, permanent: bool = False) -> None:
        import json  # only when something failed

        self.counts["failed"] += 1
        (self.permanent if permanent and self.permanent is not None else self.failed).write(raw)
        entry = {"path": os.fsdecode(rel), "error": why, "permanent": permanent}
        self.messages.write(json.dumps(entry) + "\n")

    def _check_parents(self, rel: bytes) -> None:
        """Refuse to write under a destination folder that is a symbolic link.

        Into a destination that held something before the copy, a link may stand where
        the source has a folder; following it would write outside the destination.
        One ``lstat`` per folder per worker (remembered); not needed with ``--new``,
        where the only links are the ones this copy made from the source's links, and
        a listing never holds a path below a link.
        """
        link = link_above(self.dst, rel, self._real_dirs)
        if link is not None:
            raise Refused(
                f"{os.fsdecode(link)!r} is a symbolic link at the destination where the source has "
                "a folder; not writing through it (remove the link, or copy into another destination)"
            )

    def run(self, shard: str) -> int:
        outcome = bytearray()
        sizes: dict[int, int] = {}  # the files whose size is not the listed one
        counts = self.counts
        src_root, dst_root = self.src, self.dst
        check_parents = None if self.new else self._check_parents
        for i, raw in enumerate(iter_records(shard)):
            kind, size, _mtime, rel = raw[:-1].split(b"\t", 3)
            try:
                if escapes(rel):
                    raise Refused("the path is absolute or leaves the source with '..': refused")
                if check_parents:
                    check_parents(rel + b"/" if kind == b"d" else rel)
                if kind == b"f":
                    before = counts["bytes"] + counts["skipped_bytes"]
                    copied = self.copy_file(src_root + rel, dst_root + rel)
                    now = counts["bytes"] + counts["skipped_bytes"] - before
                    if now != int(size):  # the source changed since it was listed
                        sizes[i] = now
                elif kind == b"d":
                    os.makedirs(dst_root + rel, exist_ok=True)
                    copied = True
                else:
                    copied = self.copy_link(src_root + rel, dst_root + rel)
                outcome.append(_COPIED if copied else _SKIPPED)
            except OSError as exc:
                self.fail(raw, rel, f"{exc.strerror or exc}", exc.errno in PERMANENT_ERRNOS)
                outcome.append(_FAILED)
            except ValueError as exc:  # the source changed, a short copy, a checksum: worth another try
                self.fail(raw, rel, str(exc))
                outcome.append(_FAILED)
            except Refused as exc:
                self.fail(raw, rel, str(exc), permanent=True)
                outcome.append(_FAILED)
            self.status()
        if self.verify != "none":
            self.verify_shard(shard, outcome, sizes)
        self.status(done=True)
        return 1 if counts["failed"] else 0

    def verify_shard(self, shard: str, outcome: bytearray | None = None, sizes: dict[int, int] | None = None) -> None:
        """Check every file and link copied or skipped: it must be at the destination, whole.

        ``outcome`` says what :meth:`run` did to each record (None: someone else copied
        them all, counted as listed), and ``sizes`` the files whose size was not the
        listed one.  A file is whole when it has the size this worker found at the source
        as it copied or skipped it (the source was checked not to change meanwhile; a
        second ``lstat`` of it would cost 7 % of the copy); without ``outcome``, the
        source's size now.  A link must have the source's target.
        What does not match is counted as a mismatch and as a failure, not as copied.
        """
        counts = self.counts
        src_root, dst_root = self.src, self.dst
        why = f"does not match the source after copying (verify={self.verify})"
        for i, raw in enumerate(iter_records(shard)):
            done = _COPIED if outcome is None else outcome[i]
            if done == _FAILED or raw[0] == 0x64:  # b"d"[0]: folders are not verified
                continue
            _kind, size, _mtime, rel = raw[:-1].split(b"\t", 3)
            if raw[0] == 0x66:  # b"f"
                counted = sizes.get(i, int(size)) if sizes else int(size)
                try:
                    want = counted if outcome is not None else os.lstat(src_root + rel).st_size
                    ok = os.lstat(dst_root + rel).st_size == want
                except OSError:
                    ok = False
            else:
                counted = 0  # a link counts no bytes
                try:
                    ok = os.readlink(dst_root + rel) == os.readlink(src_root + rel)
                except OSError:
                    ok = False
            if ok:
                counts["verified"] += 1
            else:
                counts["mismatches"] += 1
                # Counted once, as a failure (the retry that follows copies it again).
                if done == _SKIPPED:
                    counts["skipped"] -= 1
                    counts["skipped_bytes"] -= counted
                else:
                    counts["files"] -= 1
                    counts["bytes"] -= counted
                self.fail(raw, rel, why)
            self.status()

    def set_folders(self, shard: str, root: bool = False) -> int:
        """Give the shard's folders (and with ``root`` the destination itself) the source's
        permission bits and times; return how many were set.

        Run once every file is in place: creating a file changes its folder's time, and
        a read-only folder would refuse the files.  Failures are recorded like a file's.
        """
        done = 0
        src_root, dst_root = self.src, self.dst
        if root:
            try:
                self._set_folder(src_root, dst_root)
                done += 1
            except OSError as exc:
                self.fail(b"", b".", f"cannot set the folder's mode and times: {exc.strerror or exc}")
        for raw in iter_records(shard):
            if raw[0] != 0x64:  # b"d"[0]
                continue
            rel = raw[:-1].split(b"\t", 3)[3]
            try:
                self._set_folder(src_root + rel, dst_root + rel)
                done += 1
            except OSError as exc:
                self.fail(raw, rel, f"cannot set the folder's mode and times: {exc.strerror or exc}")
        return done

    @staticmethod
    def _set_folder(src: bytes, dst: bytes) -> None:
        st = os.lstat(src)
        if (st.st_mode & 0o170000) != 0o040000:  # no longer a folder: nothing to copy from
            return
        # Through a descriptor: never follows a link that took the folder's place.
        fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, st.st_mode & 0o7777)
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)

    def copy_link(self, src: bytes, dst: bytes) -> bool:
        target = os.readlink(src)
        if self.new:  # nothing there yet, and a link is made in one step anyway
            try:
                self._symlink(target, dst)
                self.counts["files"] += 1
                return True
            except FileExistsError:  # someone put something there meanwhile
                pass
        else:
            try:
                if os.readlink(dst) == target:
                    self.counts["skipped"] += 1
                    return False
            except OSError:
                pass
        tmp = part_name(dst, self.part_tag)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        self._symlink(target, tmp)
        try:
            os.replace(tmp, dst)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.counts["files"] += 1
        return True

    @staticmethod
    def _symlink(target: bytes, path: bytes) -> None:
        try:
            os.symlink(target, path)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(target, path)

    def copy_file(self, src: bytes, dst: bytes) -> bool:
        if not self.new:
            try:
                dt = os.lstat(dst)
            except FileNotFoundError:
                pass
            else:
                st = os.lstat(src)
                if dt.st_size == st.st_size and dt.st_mtime_ns == st.st_mtime_ns:
                    self.counts["skipped"] += 1
                    self.counts["skipped_bytes"] += st.st_size
                    return False
        # Never follow a link, never block on a FIFO: the source may have changed since
        # it was listed (a file replaced by a link would copy what it points to).
        fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            st = os.fstat(fin)
            if (st.st_mode & 0o170000) != 0o100000:
                raise Refused("the source is no longer a regular file (it changed since it was listed)")
            mode = st.st_mode & 0o7777
            # Into a new destination (see --new) a file is written under its own name:
            # one rename less per file.  Its modification time is set last, so until it
            # is complete it never matches the source, and a resume (which checks every
            # file) copies it again.  Otherwise files go through a temporary name: an
            # existing file keeps its old version if the copy is interrupted, and the
            # leftover of an interrupted copy is reused.
            fout = -1
            if self.new and not self.atomic:
                try:
                    fout = self._open_new(dst, os.O_EXCL, mode)
                except FileExistsError:  # someone put it there meanwhile
                    pass
            temporary = fout < 0
            target = part_name(dst, self.part_tag) if temporary else dst
            if temporary:
                # Reuses a leftover of this shard's killed attempt; never follows a link.
                fout = self._open_new(target, os.O_TRUNC | os.O_NOFOLLOW, mode)
            try:
                try:
                    copied = _copy_data(fin, fout, st.st_size)
                    after = os.fstat(fin)
                    if after.st_size != st.st_size or after.st_mtime_ns != st.st_mtime_ns:
                        raise ValueError("source changed during the copy")
                    if copied != st.st_size:
                        raise ValueError(f"copied {copied} of {st.st_size} bytes")
                    if self.verify == "checksum" and file_hash(src) != file_hash(target):
                        raise ValueError("content differs after the copy (checksum)")
                    if mode & self._umask:  # the umask took bits the source has
                        os.fchmod(fout, mode)
                    os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(fout)
                if temporary:
                    os.replace(target, dst)
            except BaseException:
                try:
                    os.unlink(target)  # ours either way: the temporary name or a file we created
                except OSError:
                    pass
                raise
        finally:
            os.close(fin)
        self.counts["files"] += 1
        self.counts["bytes"] += st.st_size
        return True

    @staticmethod
    def _open_new(path: bytes, flag: int, mode: int) -> int:
        """Open ``path`` for writing (``flag``: O_EXCL, or O_TRUNC with O_NOFOLLOW), creating its folder."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | flag
        try:
            return os.open(path, flags, mode)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return os.open(path, flags, mode)


_USAGE = (
    "usage: python -S worker.py --src SRC --dst DST --shard FILE --status FILE "
    "--failed FILE [--verify size|checksum|none] [--part-tag TAG] [--new] [--atomic]"
)


def parse_args(argv: list[str]) -> dict[str, str] | str:
    """The options as a dict, or the reason they are wrong (no argparse: it costs 5 ms to import)."""
    opts = {"verify": "size", "new": "", "atomic": "", "part-tag": ""}
    names = ("--src", "--dst", "--shard", "--status", "--failed", "--verify", "--part-tag")
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--new", "--atomic"):
            opts[arg[2:]] = "1"
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if name not in names:
            return f"unknown argument {arg!r}"
        if not eq:
            if i + 1 >= len(argv):
                return f"{name} needs a value"
            value = argv[i + 1]
            i += 1
        opts[name[2:]] = value
        i += 1
    missing = [n for n in names[:-2] if n[2:] not in opts]
    if missing:
        return "missing " + ", ".join(missing)
    if opts["verify"] not in ("size", "checksum", "none"):
        return f"--verify must be size, checksum or none, not {opts['verify']!r}"
    return opts


def run_program(argv, usage: str, prog: str, parse, run) -> int:
    """A shard program's ``main``: ``-h``, options parsed by ``parse`` (a dict, or why they are
    wrong: exit 2), then ``run(opts, failed, messages, permanent)`` with the files of
    ``--failed FILE`` open (the permanent one made on its first write only)."""
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        print(usage)
        return 0
    opts = parse(args)
    if isinstance(opts, str):
        print(f"{usage}\n{prog}: error: {opts}", file=sys.stderr)
        return 2
    failed_path = opts["failed"]
    with open(failed_path, "wb") as failed, open(failed_path + MESSAGES_SUFFIX, "w") as messages, \
            _Lazy(failed_path + PERMANENT_SUFFIX) as permanent:
        return run(opts, failed, messages, permanent)


def _copy_shard(opts: dict[str, str], failed, messages, permanent) -> int:
    worker = Worker(
        os.fsencode(opts["src"]),
        os.fsencode(opts["dst"]),
        opts["verify"],
        opts["status"],
        failed,
        messages,
        new=bool(opts["new"]),
        atomic=bool(opts["atomic"]),
        part_tag=os.fsencode(opts["part-tag"]) or None,
        permanent=permanent,
    )
    return worker.run(opts["shard"])


def main(argv: list[str] | None = None) -> int:
    return run_program(argv, _USAGE, "worker.py", parse_args, _copy_shard)


class _Lazy:
    """A binary file opened for writing on its first write only (most shards never fail)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fh: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self.fh is None:
            self.fh = open(self.path, "wb")
        self.fh.write(data)

    def __enter__(self) -> "_Lazy":
        return self

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
