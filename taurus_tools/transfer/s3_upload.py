"""Upload one open local file to one S3 key: the piece the S3 worker and checkpoints share.

:class:`FileUploader` sends a file the way every ``s3://`` upload of taurus-tools does:

* ``mtime`` metadata (rclone's key and format: Unix seconds with a fraction), and with
  ``checksum=True`` also ``md5chksum`` (base64 MD5 of the content, as rclone stores it);
* below :data:`MULTIPART_THRESHOLD` one PUT with ``Content-MD5`` (the server checks the
  body), through :mod:`taurus_tools.transfer.s3_direct` when given one, else the client;
* from the threshold on in 8 MiB parts, through the direct path when given one (parts read
  with ``pread`` and sent by a pool of ``threads``; any failure aborts that upload and the
  file goes again) else through one shared s3transfer manager (made on first use;
  s3transfer aborts a multipart upload that fails); the keys in flight are known
  (:meth:`FileUploader.in_flight`) so that a process stopped by a signal can abort them
  (:meth:`FileUploader.abort_uploads_of`) without waiting for their parts;
* the file's size and modification time are compared before and after: a file that
  changed while it was sent raises :class:`Changed` (the object may then hold a torn copy
  under its key; the caller sends it again, or does not count it).

boto3 and s3transfer are imported when first needed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO, Dict, List, Optional, Set, Union

from .s3 import MD5_KEY, MTIME_KEY, format_mtime

__all__ = ["Changed", "FileUploader", "MULTIPART_THRESHOLD", "MULTIPART_CHUNK", "gather", "md5_of"]

#: Objects from this size on go through the transfer manager in parts.
MULTIPART_THRESHOLD = 8 << 20
MULTIPART_CHUNK = 8 << 20
_BLOCK = 1 << 20


_PREADV = hasattr(os, "preadv")


class Stopped(Exception):
    """The worker is stopping (cancelled): no request begins, none is asked again."""


class Changed(Exception):
    """The source changed while it was copied, or the copy does not match: worth another try."""


def md5_of(fh: Any) -> bytes:
    """The MD5 of what is left to read in ``fh``."""
    digest = hashlib.md5()
    while True:
        block = fh.read(_BLOCK)
        if not block:
            return digest.digest()
        digest.update(block)


def gather(futures: "List[Future[Any]]") -> List[Any]:
    """The results of ``futures``, in order.  When one fails, those not started are cancelled
    and the running ones waited for before its exception is raised: they read or write a file
    descriptor the caller closes next, whose number a later ``open`` may reuse."""
    try:
        return [future.result() for future in futures]
    except BaseException:
        for future in futures:
            future.cancel()
        wait(futures)
        raise


def check_unchanged(fd: int, before: os.stat_result, sent: int) -> None:
    """Raise :class:`Changed` unless ``sent`` bytes were the whole file and its size and
    modification time are still those of ``before``."""
    after = os.fstat(fd)
    if sent != before.st_size or after.st_size != before.st_size or after.st_mtime_ns != before.st_mtime_ns:
        raise Changed("the file changed while it was being copied; it is copied again")


class FileUploader:
    """Sends open files to keys of one bucket (see the module's docstring).

    Parameters
    ----------
    client : botocore S3 client or S3Access
        From :func:`taurus_tools.transfer.s3.make_client`; or the
        :class:`~taurus_tools.transfer.s3_access.S3Access` whose client is made when a
        request first needs it.
    bucket : str
    threads : int
        Concurrent parts of the transfer manager.
    direct : DirectRequests, optional
        The fast path for single-request PUTs (None: through the client).
    """

    def __init__(
        self, client: Any, bucket: str, *, threads: int, direct: Any = None, stopping: Optional[threading.Event] = None
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.threads = threads
        self.direct = direct
        self._lock = threading.Lock()
        self._manager: Any = None
        self._multipart: Set[str] = set()
        self._direct_ids: Dict[str, str] = {}  # key -> the direct path's upload in flight
        self._parts: Optional[ThreadPoolExecutor] = None
        self._buffers = threading.local()  # each part thread's read buffer (_read)
        #: Set when the worker stops: no part begins, nothing is asked again (raises Stopped).
        self.stopping = stopping if stopping is not None else threading.Event()

    @property
    def client(self) -> Any:
        """The botocore client (an S3Access's made now if it was not yet)."""
        from .s3_access import S3Access

        return self._client.client if isinstance(self._client, S3Access) else self._client

    @property
    def manager(self) -> Any:
        """The shared transfer manager (made on first use; downloads use it too)."""
        with self._lock:
            if self._manager is None:
                from boto3.s3.transfer import TransferConfig, create_transfer_manager

                config = TransferConfig(
                    multipart_threshold=MULTIPART_THRESHOLD,
                    multipart_chunksize=MULTIPART_CHUNK,
                    max_concurrency=self.threads,
                    use_threads=True,
                    preferred_transfer_client="classic",
                    io_chunksize=4 << 20,  # (256 KiB by default: the writer thread was the bottleneck)
                )
                self._manager = create_transfer_manager(self.client, config)
            return self._manager

    def upload(self, fh: BinaryIO, st: os.stat_result, key: str, *, checksum: bool) -> Optional[bytes]:
        """Send the open file ``fh`` (whose ``fstat`` was ``st``) to ``key``.

        Returns the MD5 of what was sent when it was computed (always below the multipart
        threshold, with ``checksum`` above it), else None.  Raises :class:`Changed` when the
        file changed meanwhile, and botocore's or s3transfer's errors as they come.
        """
        fd = fh.fileno()
        metadata = {MTIME_KEY: format_mtime(st.st_mtime_ns)}
        if st.st_size < MULTIPART_THRESHOLD:
            data = fh.read(st.st_size + 1)
            digest = hashlib.md5(data).digest()
            if checksum:
                metadata[MD5_KEY] = base64.b64encode(digest).decode()
            check_unchanged(fd, st, len(data))
            # Content-MD5: the server refuses a body that does not match.
            content_md5 = base64.b64encode(digest).decode()
            if self.direct is None or not self.direct.put(
                self.bucket, key, data, content_md5, metadata
            ):  # (anything but success is asked again through the client, which says why)
                self.go_on()
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentMD5=content_md5, Metadata=metadata
                )
            return digest
        whole: Optional[bytes] = None
        if checksum:
            whole = md5_of(fh)
            metadata[MD5_KEY] = base64.b64encode(whole).decode()
            fh.seek(0)
        with self._lock:
            self._multipart.add(key)
        try:
            if not self._parts_direct(fd, st, key, metadata):
                self.go_on()
                self.manager.upload(fh, self.bucket, key, extra_args={"Metadata": metadata}).result()
        finally:
            with self._lock:
                self._multipart.discard(key)
        check_unchanged(fd, st, st.st_size)
        return whole

    def _parts_direct(self, fd: int, st: os.stat_result, key: str, metadata: Dict[str, str]) -> bool:
        """Send a large file in parts through the direct path, :attr:`threads` at a time,
        each read with ``pread``; False (the upload aborted, nothing left behind) when that
        path cannot or any request fails: the transfer manager then sends it.  Raises
        :class:`Changed` (after aborting) when the file is shorter than it was."""
        direct = self.direct
        if direct is None:
            return False
        upload_id = direct.create_multipart(self.bucket, key, metadata)
        if upload_id is None:
            return False
        with self._lock:
            self._direct_ids[key] = upload_id
            if self._parts is None:
                self._parts = ThreadPoolExecutor(self.threads, thread_name_prefix="s3-put-part")
        size, done = st.st_size, False

        def part(first: int) -> Optional[str]:
            self.go_on()
            want = min(MULTIPART_CHUNK, size - first)
            data = self._read(fd, want, first)
            if len(data) != want:
                raise Changed("the file changed while it was being copied; it is copied again")
            return direct.upload_part(self.bucket, key, upload_id, first // MULTIPART_CHUNK + 1, data)  # type: ignore

        try:
            etags = gather([self._parts.submit(part, first) for first in range(0, size, MULTIPART_CHUNK)])
            done = all(etags) and direct.complete_multipart(self.bucket, key, upload_id, etags)  # type: ignore
        finally:
            with self._lock:
                self._direct_ids.pop(key, None)
            if not done and not direct.abort_multipart(self.bucket, key, upload_id):
                self.abort_uploads_of(key)  # (through the client, which lists what is left)
        return done

    def _read(self, fd: int, size: int, at: int) -> "Union[bytes, memoryview]":
        """``size`` bytes of ``fd`` from ``at`` (fewer at its end), into this thread's own
        buffer where the system can (a fresh 8 MiB per part costs its page faults each time):
        valid until this thread reads again."""
        if not _PREADV:
            return os.pread(fd, size, at)
        buffer = getattr(self._buffers, "buffer", None)
        if buffer is None or len(buffer) < size:
            buffer = self._buffers.buffer = memoryview(bytearray(max(size, MULTIPART_CHUNK)))
        return buffer[: os.preadv(fd, [buffer[:size]], at)]

    def go_on(self) -> None:
        """Raise :class:`Stopped` once the worker is stopping (before a request begins)."""
        if self.stopping.is_set():
            raise Stopped()

    def in_flight(self, timeout: float = 2.0) -> List[str]:
        """The keys whose multipart upload is under way.  From a signal handler too: the
        lock is waited for at most ``timeout`` seconds (the signal may have come while this
        thread held it)."""
        locked = self._lock.acquire(timeout=timeout)
        try:
            return sorted(self._multipart)
        finally:
            if locked:
                self._lock.release()

    def abort_uploads_of(self, key: str) -> None:
        """Abort every unfinished multipart upload of ``key`` (refusals are left to the
        upload of the key to report)."""
        upload_id = self._direct_ids.get(key)
        if upload_id is not None and self.direct is not None:
            self.direct.abort_multipart(self.bucket, key, upload_id)
        try:
            found = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for upload in found.get("Uploads", ()):
                if upload["Key"] == key:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
        except Exception:  # a refused request: the upload of the key reports the reason
            pass

    def shutdown(self) -> None:
        """End the transfer manager's threads (if it was made)."""
        with self._lock:
            manager, self._manager = self._manager, None
            parts, self._parts = self._parts, None
        if manager is not None:
            manager.shutdown()
        if parts is not None:
            parts.shutdown()
