"""Copy one shard between a local folder and ``s3://``: the process a parallel copy starts per
shard, or (:class:`InlineShard`, for a plan of few or large objects on this machine) the same
worker on threads of the copy's own process.

``python .../taurus_tools/transfer/s3_worker.py {upload|download} --local DIR --url s3://BUCKET/PREFIX/
--shard FILE --status FILE --failed FILE [--verify size|checksum|none] [--threads N]
[--endpoint-url URL] [--profile NAME] [--region NAME] [--ca-bundle FILE] [--part-tag TAG] [--new]``

It keeps the protocol of the local worker (:mod:`taurus_tools.transfer.worker`, whose
reporting it reuses): counters as JSON in ``--status``, failed records in ``--failed``
with one JSON line each in ``FILE.messages`` (``FILE.permanent`` for those no retry can
heal), exit 0 when everything was copied or skipped and verified, 1 when some entries
failed, 2 on bad usage.  Credentials come from the environment, the shared files or the
profile, as boto3 finds them: never from an argument.

One client per process (made only when a request needs it: see
:mod:`taurus_tools.transfer.s3_access`), ``--threads`` transfers at once.  Objects below the multipart
threshold (8 MiB) go in one request each (a PUT with ``Content-MD5``, so the server checks
the body; a GET streamed to disk), sent by :mod:`taurus_tools.transfer.s3_direct` on a
non-AWS endpoint (a quarter of botocore's CPU per object; any answer but success is asked
again through the client; ``TAURUS_TOOLS_S3_DIRECT=0`` turns it off); larger ones through one
shared s3transfer manager (multipart, classic client: the CRT client ignores the
endpoint).

Upload (local to S3), per file:

* skipped when the object has the file's size and the file's modification time in its
  ``mtime`` metadata (rclone's key and format: Unix seconds with a fraction), one HEAD
  each (none with ``--new``: the prefix was empty when the copy began);
* a symbolic link to a file is followed (as the AWS CLI does); to a folder, or a dangling
  one, it fails for good: object storage has no links; folders are not objects;
* every object gets ``mtime`` metadata, and with ``--verify checksum`` also ``md5chksum``
  (base64 MD5 of the content, as rclone stores it) for later checks (a multipart ETag
  is not an MD5 of the content);
* a multipart upload that fails is aborted, and so is one in flight on SIGTERM (at
  once: the worker does not wait for its parts); one a killed worker left is aborted
  by the next attempt at the shard (each attempt that is not ``--new`` first aborts the
  unfinished uploads of its own large keys), so no orphaned parts stay behind.

Download (S3 to local), per object:

* skipped when the local file has the object's size and the modification time of its
  ``mtime`` metadata (its LastModified without one): a HEAD for each file whose size matches;
* written under a temporary name in its own folder (``.tt-part-TAG-T``: a rename within
  a folder; a killed attempt's leftovers, s3transfer's included, are removed by the next
  attempt at the shard, and on SIGTERM by the worker itself), checked, given
  the source's modification time, and only then renamed into place: nothing incomplete
  ever has a real name;
* large objects are fetched in parts with ``If-Match`` on the ETag the first part came
  with, and every part must come with that ETag (servers that ignore ``If-Match`` exist);
  through the transfer manager the object is asked for again at the end: an object
  replaced during its download is fetched again rather than arriving torn;
* keys that would leave the destination (``..``, a leading ``/``) are refused, and so
  (unless ``--new``) is writing through a destination folder that is a symbolic link.

Errors that no retry heals (access denied, no such key, a name the other side cannot
hold) fail the entry for good; refused credentials or an unreachable endpoint fail the
rest of the shard at once (retried by the driver with backoff), rather than one timeout
per object.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import os
import signal
import sys
import threading
import time
from functools import partial
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

if __package__ in (None, ""):  # run as a script: the package is two folders up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from taurus_tools.transfer.s3_access import S3Access  # noqa: E402
from taurus_tools.transfer.s3_direct import MISSING, DirectRequests  # noqa: E402
from taurus_tools.transfer.s3_http import Response  # noqa: E402
from taurus_tools.transfer.s3_upload import (  # noqa: E402
    MULTIPART_CHUNK,
    MULTIPART_THRESHOLD,
    Changed,
    FileUploader,
    Stopped,
    gather,
    md5_of,
)
from taurus_tools.transfer.records import iter_records, link_above  # noqa: E402
from taurus_tools.transfer.s3 import (  # noqa: E402
    S3Config,
    S3Location,
    describe_error,
    error_code,
    object_mtime,
    stored_md5,
)
from taurus_tools.transfer.worker import (  # noqa: E402
    PART_PREFIX,
    PERMANENT_ERRNOS,
    PERMANENT_SUFFIX,
    Refused,
    Worker,
    _Lazy,
    escapes,
)

_BLOCK = 1 << 20
#: Error codes that end the whole shard at once (every further request would fail alike).
SHARD_FATAL = frozenset(("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "NoSuchBucket"))
#: Error codes no retry heals for this object.
PERMANENT_CODES = frozenset(("AccessDenied", "NoSuchKey", "404", "403", "KeyTooLongError", "InvalidObjectName"))
#: Connection failures: the endpoint is gone; the rest of the shard fails at once.
UNREACHABLE = frozenset(("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"))


#: Why an object cannot be written where a folder of its name is.
_FOLDER_THERE = (
    "a folder of that name is at the destination, holding keys below this one ('a' and 'a/b'): "
    "a file cannot take its place"
)


class Broken(Exception):
    """Nothing more in this shard can work (credentials refused, endpoint unreachable)."""


class S3ShardWorker:
    """Copies the records of one shard in ``threads`` threads; :meth:`run` returns the exit code."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.upload = args.direction == "upload"
        self.location = S3Location.parse(args.url)
        self.local = os.fsencode(args.local).rstrip(b"/") + b"/"
        self.verify = args.verify
        self.new = args.new
        self.threads = args.threads
        self.config = S3Config(
            endpoint_url=args.endpoint_url,
            profile=args.profile,
            threads=args.threads,
            region=args.region,
            ca_bundle=args.ca_bundle,
        )
        #: The server and credentials; its botocore client is made only if a request needs it.
        self.access = S3Access(self.config)
        self.endpoint = self.access.endpoint
        #: Small objects' PUT/GET/HEAD without botocore's per-call cost (None: through the client).
        self.direct: Optional[DirectRequests] = self.access.direct(self.threads)
        self.stopping = threading.Event()
        #: Sends files (uploads), and owns the transfer manager (downloads use it too).
        self.uploader = FileUploader(
            self.access, self.location.bucket, threads=self.threads, direct=self.direct, stopping=self.stopping
        )
        self._lock = threading.Lock()
        self._local_names = threading.local()
        self._thread_count = 0
        self._real_dirs: Set[bytes] = set()
        self._made_dirs: Set[bytes] = set()
        self._temporaries: Set[bytes] = set()  # download temporaries in use (removed on SIGTERM)
        self._parts: Optional[ThreadPoolExecutor] = None  # large downloads' parts (direct path)
        self._pool: Optional[ThreadPoolExecutor] = None  # the objects' transfers (run())
        self.broken: Optional[str] = None
        self.part_tag = os.fsencode(args.part_tag or f"w{os.getpid()}")
        #: The names of the shard's temporaries (each attempt's, see remove_own_leftovers).
        self.leftovers: Tuple[bytes, ...] = (PART_PREFIX + self.part_tag + b"-t",)
        failed = open(args.failed, "wb")
        # Made on its first write only: the driver takes the file's existence for failures
        # no retry heals, and a shard that had none would then end failed after its retry.
        permanent = _Lazy(args.failed + PERMANENT_SUFFIX)
        messages = open(args.failed + ".messages", "w")
        self.report = Worker(
            self.local, self.local, args.verify, args.status, failed, messages, new=args.new, permanent=permanent
        )
        self._files = (failed, permanent, messages)

    @property
    def client(self) -> Any:
        """The botocore client (made on first use: a shard whose requests all succeed on the
        direct path never imports botocore's client machinery)."""
        return self.access.client

    # ------------------------------------------------------------------ bookkeeping
    def count(self, **add: int) -> None:
        with self._lock:
            for name, value in add.items():
                self.report.counts[name] += value
            self.report.status()

    def fail(self, raw: bytes, rel: bytes, why: str, permanent: bool = False) -> None:
        with self._lock:
            self.report.fail(raw, rel, why, permanent)
            self.report.status()

    @property
    def manager(self) -> Any:
        """The shared transfer manager for large objects (made on first use)."""
        return self.uploader.manager

    def temporary(self, dst: bytes) -> bytes:
        """This thread's temporary download name for ``dst``: in its own folder, so that the
        rename is within one folder (across folders, renames on one file system take a lock
        of the whole file system: with threads downloading small files, a third of the time)."""
        number = getattr(self._local_names, "number", None)
        if number is None:
            with self._lock:
                self._thread_count += 1
                number = self._local_names.number = self._thread_count
        name = dst[: dst.rfind(b"/") + 1] + PART_PREFIX + self.part_tag + b"-t%d" % number
        with self._lock:
            self._temporaries.add(name)
        return name

    def done_with(self, temporary: bytes) -> None:
        with self._lock:
            self._temporaries.discard(temporary)

    # ------------------------------------------------------------------ the shard
    def run(self, shard: str) -> int:
        if not self.new:  # what a killed attempt at this shard left
            if self.upload:
                self.abort_unfinished(shard)
            else:
                self.remove_own_leftovers(shard)
        in_flight: Set[Future] = set()
        # Not a with block: its exit would wait for the transfers in flight, and on SIGTERM
        # main() must not (see interrupted()).
        pool = self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="s3")
        try:
            for raw in iter_records(shard):
                if self.stopping.is_set():
                    raise KeyboardInterrupt
                kind, size, mtime, rel = raw[:-1].split(b"\t", 3)
                if kind == b"d":
                    continue  # object storage has no folders (and keys imply theirs)
                if self.broken is not None:
                    self.fail(raw, rel, self.broken)
                    continue
                if len(in_flight) >= 4 * self.threads:
                    _done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                in_flight.add(pool.submit(self.one, raw, kind, int(size), int(mtime), rel))
            wait(in_flight)
            if self.stopping.is_set():  # (what was stopped is neither copied nor failed)
                raise KeyboardInterrupt
        except BaseException:
            self.stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        self.uploader.shutdown()
        self.report.status(done=True)
        for fh in self._files:
            fh.close()
        return 1 if self.report.counts["failed"] else 0

    def stop(self) -> None:
        """Stop from another thread (a cancelled copy whose worker runs in the driver): no
        transfer begins, the requests in flight are broken off, and :meth:`run` raises
        KeyboardInterrupt soon."""
        self.stopping.set()
        if self.direct is not None:
            self.direct.interrupt()

    def close(self) -> None:
        """Wait for the worker's threads and release what it holds (files, connections):
        what a process's end does, for a worker that ran in the driver."""
        for pool in (self._pool, self._parts):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self.uploader.shutdown()
        if self.direct is not None:
            self.direct.close()
        for fh in self._files:
            fh.close()

    def interrupted(self) -> None:
        """On SIGTERM (a cancelled copy): abort the multipart uploads in flight and remove the
        temporary files of downloads, without waiting for the transfers (a part can take
        minutes, and the driver kills a worker that has not ended within seconds).

        s3transfer's own cancel would wait for the parts in flight first.  (Should the
        server start an upload after this, in the moment before the process ends, the
        next attempt at the shard aborts it.)
        """
        if self.upload:
            for key in self.uploader.in_flight():
                self.uploader.abort_uploads_of(key)
        else:
            self.remove_own_leftovers()

    def one(self, raw: bytes, kind: bytes, size: int, mtime_ns: int, rel: bytes) -> None:
        if self.broken is not None:
            self.fail(raw, rel, self.broken)
            return
        if self.stopping.is_set():
            return  # (the attempt is cancelled: its lists of failures are not read)
        try:
            if self.upload:
                self.put(kind, rel)
            else:
                self.get(size, mtime_ns, rel)
        except Refused as exc:
            self.fail(raw, rel, str(exc), permanent=True)
        except Stopped:
            pass
        except Changed as exc:
            self.fail(raw, rel, str(exc))
        except OSError as exc:
            self.fail(raw, rel, exc.strerror or str(exc), exc.errno in PERMANENT_ERRNOS)
        except Exception as exc:  # botocore's errors, and s3transfer's
            why, permanent = self.explain(exc)
            self.fail(raw, rel, why, permanent)

    def explain(self, exc: BaseException) -> Tuple[str, bool]:
        """What to say of a failed request, and whether it is for good; ends the shard if nothing can work."""
        code = error_code(exc)
        name = type(exc).__name__
        if code in ("PreconditionFailed", "412"):
            return "the object changed while it was being downloaded", False
        if code in SHARD_FATAL or name in UNREACHABLE or name == "NoCredentialsError":
            self.broken = describe_error(exc, self.location, self.endpoint)
            return self.broken, False
        if code in PERMANENT_CODES:
            return ("access denied" if code in ("AccessDenied", "403") else f"{code}"), True
        return f"{name}: {code or exc}", False

    # ------------------------------------------------------------------ upload
    def put(self, kind: bytes, rel: bytes) -> None:
        try:
            key = self.location.key(rel.decode("utf-8"))
        except UnicodeDecodeError:
            raise Refused(
                "the name is not valid UTF-8, and S3 keys are UTF-8: rename it (e.g. convmv -f latin1 -t utf8)"
            ) from None
        path = self.local + rel
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            if kind == b"l":
                raise Refused("a dangling symbolic link: object storage has no links, and it points nowhere") from None
            raise exc
        st = os.fstat(fd)
        if (st.st_mode & 0o170000) != 0o100000:
            # Before fdopen, which refuses a folder with a bare "Is a directory".
            os.close(fd)
            raise Refused(
                "a symbolic link to a folder: object storage has no links (copy the folder itself)"
                if kind == b"l"
                else "not a regular file any more"
            )
        with os.fdopen(fd, "rb") as fh:
            if not self.new:
                head = self.head(key)
                if (
                    head is not None
                    and head["ContentLength"] == st.st_size
                    and object_mtime(head, stored_only=True) == st.st_mtime_ns
                ):
                    self.count(skipped=1, skipped_bytes=st.st_size, verified=int(self.verify != "none"))
                    return
            self.uploader.upload(fh, st, key, checksum=self.verify == "checksum")
            if st.st_size >= MULTIPART_THRESHOLD and self.verify != "none":
                head = self.head(key)
                if head is None or head["ContentLength"] != st.st_size:
                    self.count(mismatches=1)
                    raise Changed(f"the object has not the file's size after the upload (verify={self.verify})")
        self.count(files=1, bytes=st.st_size, verified=int(self.verify != "none"))

    def head(self, key: str) -> Optional[Dict[str, Any]]:
        """The object's headers, None if there is no such object."""
        if self.direct is not None:
            answer = self.direct.head(self.location.bucket, key)
            if answer is MISSING:
                return None
            if answer is not None:
                return answer  # type: ignore[return-value]
        self.uploader.go_on()
        try:
            return self.client.head_object(Bucket=self.location.bucket, Key=key)  # type: ignore[no-any-return]
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def abort_unfinished(self, shard: str) -> None:
        """Abort the unfinished multipart uploads of this shard's large keys (a killed attempt's)."""
        for raw in iter_records(shard):
            kind, size, _mtime, rel = raw[:-1].split(b"\t", 3)
            if kind == b"d" or int(size) < MULTIPART_THRESHOLD:
                continue
            try:
                key = self.location.key(rel.decode("utf-8"))
            except UnicodeDecodeError:  # no key: the upload reports it
                continue
            self.uploader.abort_uploads_of(key)

    # ------------------------------------------------------------------ download
    def remove_own_leftovers(self, shard: Optional[str] = None) -> None:
        """Remove what an earlier attempt at this shard left: its threads' temporary names
        (``.tt-part-TAG-tN``) in the destination's top folder, with those s3transfer made
        beside them (``.tt-part-TAG-tN.XXXXXXXX``, a random suffix no later attempt would
        overwrite), and with ``shard`` in the folders of its records too (one ``scandir``
        each; without, in the folders of the temporaries in use: on SIGTERM).  One attempt at
        a shard runs at a time, so none of them is in use by another."""
        prefixes = self.leftovers
        folders = {self.local}
        if shard is None:
            with self._lock:
                folders.update(name[: name.rfind(b"/")] for name in self._temporaries)
        else:
            for raw in iter_records(shard):
                rel = raw[:-1].split(b"\t", 3)[3]
                cut = rel.rfind(b"/")
                if cut > 0 and not escapes(rel):
                    folders.add(self.local + rel[:cut])
        for folder in folders:
            try:
                with os.scandir(folder) as found:
                    for item in found:
                        if item.name.startswith(prefixes) and item.is_file(follow_symlinks=False):
                            with contextlib.suppress(OSError):
                                os.unlink(item.path)
            except OSError:
                pass

    def get(self, size: int, listed_mtime_ns: int, rel: bytes) -> None:
        if escapes(rel):
            raise Refused("the key is absolute or leaves the destination with '..': refused")
        key = self.location.key(rel.decode("utf-8", "surrogateescape"))
        dst = self.local + rel
        if not self.new:
            link = link_above(self.local, rel, self._real_dirs)
            if link is not None:
                raise Refused(self._no_folder(link))
            try:
                st = os.lstat(dst)
            except FileNotFoundError:
                pass
            else:
                if (st.st_mode & 0o170000) == 0o040000:
                    raise Refused(_FOLDER_THERE)
                if st.st_size == size and (st.st_mode & 0o170000) == 0o100000:
                    head = self.head(key)
                    if head is not None and head["ContentLength"] == size:
                        if object_mtime(head) == st.st_mtime_ns:
                            self.count(skipped=1, skipped_bytes=size, verified=int(self.verify != "none"))
                            return
        parent = dst[: dst.rfind(b"/")]
        if parent not in self._made_dirs:
            try:
                os.makedirs(parent, exist_ok=True)
            except (FileExistsError, NotADirectoryError):  # the object "a" arrived before "a/b"
                raise Refused(self._no_folder(link_above(self.local, rel, set()) or rel[: rel.rfind(b"/")])) from None
            self._made_dirs.add(parent)
        tmp = self.temporary(dst)
        try:
            got, digest, head = self._fetch(key, size, tmp)
            if self.verify != "none" and os.stat(tmp).st_size != got:
                raise Changed(f"the file has not the object's size after the download (verify={self.verify})")
            if self.verify == "checksum":
                want = stored_md5(head)
                if want is not None and want != digest:
                    self.count(mismatches=1)
                    raise Changed("the content's MD5 is not the one stored with the object (verify=checksum)")
            os.utime(tmp, ns=(time.time_ns(), object_mtime(head) or time.time_ns()))
            try:
                os.replace(tmp, dst)
            except IsADirectoryError:  # "a/b" arrived before "a"
                raise Refused(_FOLDER_THERE) from None
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        finally:
            self.done_with(tmp)
        self.count(files=1, bytes=got, verified=int(self.verify != "none"))

    def _no_folder(self, folder: bytes) -> str:
        """Why a key cannot be written below ``folder`` (relative), which is no folder at the destination."""
        name = os.fsdecode(folder)
        if os.path.islink(self.local + folder):
            return (
                f"{name!r} is a symbolic link at the destination where the key needs a folder; "
                "not writing through it"
            )
        return (
            f"{name!r} is a file at the destination where the key needs a folder (an object and keys "
            "below it, 'a' and 'a/b', cannot both be files)"
        )

    def _fetch(self, key: str, size: int, tmp: bytes) -> Tuple[int, Optional[bytes], Dict[str, Any]]:
        """Download ``key`` to ``tmp``; return the bytes written, their MD5 (verify=checksum) and the headers."""
        bucket = self.location.bucket
        md5 = hashlib.md5() if self.verify == "checksum" else None
        if size < MULTIPART_THRESHOLD:
            answer = self.direct.get(bucket, key) if self.direct is not None else None
            if answer is not None:
                response, body = answer
                if md5 is None:  # straight to the file (spliced where it can be)
                    with open(tmp, "wb") as out:
                        got = body.write_to(out.fileno(), 0)
                    if got != response["ContentLength"]:
                        raise Changed(f"the download ended after {got} of {response['ContentLength']} bytes")
                    return got, None, response
                blocks = body.blocks(_BLOCK)
            else:  # through the client: its retries, and its error if it fails
                self.uploader.go_on()
                response = self.client.get_object(Bucket=bucket, Key=key)
                blocks = iter(partial(response["Body"].read, _BLOCK), b"")
            got = 0
            with open(tmp, "wb") as out:
                for block in blocks:
                    out.write(block)
                    got += len(block)
                    if md5 is not None:
                        md5.update(block)
            if got != response["ContentLength"]:
                raise Changed(f"the download ended after {got} of {response['ContentLength']} bytes")
            return got, md5.digest() if md5 else None, response
        # On the direct path the parts come with the headers (the first part's say which
        # version, and every later one must be of that version): no HEAD before or after.
        head = self._parts_direct(key, size, tmp)
        if head is None:  # through the transfer manager
            self.uploader.go_on()
            head = self.head(key)
            if head is None:  # gone since the listing: the client's error says so
                head = self.client.head_object(Bucket=bucket, Key=key)
            # s3transfer fetches the parts with If-Match on this ETag (and skips its own HEAD):
            # an object replaced meanwhile fails with 412 instead of arriving torn.
            future = self.manager.download(bucket, key, os.fsdecode(tmp), subscribers=[_Known(head)])
            future.result()
            # Not every server honours If-Match (rclone serve s3 ignores it): ask again.
            after = self.head(key)
            if after is None or any(after.get(n) != head.get(n) for n in ("ETag", "ContentLength", "LastModified")):
                raise Changed("the object changed while it was being downloaded in parts; it is downloaded again")
        got = os.stat(tmp).st_size
        if got != head["ContentLength"]:
            raise Changed(f"the download ended after {got} of {head['ContentLength']} bytes")
        if md5 is not None:
            with open(tmp, "rb") as fh:
                return got, md5_of(fh), head
        return got, None, head

    def _parts_direct(self, key: str, size: int, tmp: bytes) -> Optional[Dict[str, Any]]:
        """Fetch a large object (``size`` bytes when listed) in parts through the direct
        path, each written in place (``pwrite``) by its own thread; the object's headers, or
        None (nothing kept) when that path cannot or any part fails: the transfer manager
        then downloads it.

        The first part, asked for without a condition, says which version is fetched (its
        ETag) and how large it is (Content-Range; a HEAD where the server does not say); every
        later part is asked for with If-Match on that ETag and must come with it, also from a
        server that ignores If-Match (rclone serve s3): a version replaced meanwhile fails the
        part, never mixes into the file."""
        if self.direct is None:
            return None
        with self._lock:
            if self._parts is None:
                self._parts = ThreadPoolExecutor(self.threads, thread_name_prefix="s3-part")
        direct, bucket = self.direct, self.location.bucket
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:

            def write(body: Response, first: int, last: int) -> bool:
                return body.write_to(fd, first) == last - first + 1

            def part(first: int, last: int, etag: str) -> bool:
                self.uploader.go_on()
                answer = direct.get(bucket, key, first=first, last=last, etag=etag)
                return answer is not None and write(answer[1], first, last)

            end = min(MULTIPART_CHUNK, size)  # the first part's (its size as listed: the version may differ)
            answer = direct.get(bucket, key, first=0, last=end - 1)
            if answer is None:
                return None
            head, body = answer
            total = head.pop("ObjectSize", None)
            if total is None and head["ETag"]:  # the server did not say: the HEAD, if still that version
                whole = self.head(key)
                total = whole["ContentLength"] if whole is not None and whole.get("ETag") == head["ETag"] else None
            if total is None or not head["ETag"]:  # (no ETag: no way to hold the parts to one version)
                write(body, 0, end - 1)  # (read out: its connection serves again)
                return None
            head["ContentLength"] = total
            # The other parts start now, while this thread writes the first one's body.
            rest = [
                self._parts.submit(part, first, min(first + MULTIPART_CHUNK, total) - 1, head["ETag"])
                for first in range(end, total, MULTIPART_CHUNK)
            ]
            try:
                ok = write(body, 0, end - 1)
            except BaseException:
                for future in rest:
                    future.cancel()
                wait(rest)  # (they write to fd, which is closed next)
                raise
            ok = all(gather(rest)) and ok
        finally:
            os.close(fd)
        return head if ok else None


class _Known:
    """Gives s3transfer the size and ETag of the object from our own HEAD (a subscriber:
    s3transfer calls the ``on_*`` methods it finds; no base class needed, so s3transfer
    is imported only by a worker with a large object)."""

    def __init__(self, head: Dict[str, Any]) -> None:
        self.head = head

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(int(self.head["ContentLength"]))
        future.meta.provide_object_etag(self.head["ETag"])


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="s3_worker", description="copy one shard between a folder and s3://")
    p.add_argument("direction", choices=("upload", "download"))
    p.add_argument("--local", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--shard", required=True)
    p.add_argument("--status", required=True)
    p.add_argument("--failed", required=True)
    p.add_argument("--verify", choices=("size", "checksum", "none"), default="size")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--endpoint-url")
    p.add_argument("--profile")
    p.add_argument("--region")
    p.add_argument("--ca-bundle")
    p.add_argument("--part-tag")
    p.add_argument("--new", action="store_true")
    return p.parse_args(argv)


_INSTANCES = itertools.count(1)


class InlineShard:
    """The worker run on a thread of the driver (see ``Launch.inline``): for a plan of few
    or large objects on this machine, where starting an interpreter per shard costs more
    than it saves.  Same arguments, files and exit codes as the process; :meth:`stop` is its
    SIGTERM, and it ends only once its threads have (nothing of it writes after that)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.args = parse_args(list(argv))
        self.worker = worker = S3ShardWorker(self.args)
        # Temporaries of their own for each attempt in this process (``TAG.iN-tM``), also
        # removed by later attempts: should a cancelled one's thread outlive the cancel (a
        # request that would not break off), it never writes into a later attempt's file.
        tag = worker.part_tag
        worker.part_tag = tag + b".i%d" % next(_INSTANCES)
        worker.leftovers = (PART_PREFIX + tag + b"-t", PART_PREFIX + tag + b".i")

    def run(self) -> int:
        worker = self.worker
        try:
            return worker.run(self.args.shard)
        except KeyboardInterrupt:  # stop(): the transfers in flight end first, then their leftovers go
            worker.close()
            worker.interrupted()
            return 128 + signal.SIGTERM
        finally:
            worker.close()

    def stop(self) -> None:
        self.worker.stop()


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    worker = S3ShardWorker(args)

    def stop(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough
        worker.stopping.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return worker.run(args.shard)
    except KeyboardInterrupt:
        worker.interrupted()
        sys.stderr.flush()
        # Not a normal exit: that would wait for the threads' transfers in flight.
        os._exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
