"""Where checkpoints go: an ``s3://`` prefix or a local folder, behind one small interface.

A :class:`Destination` stores named blobs (``data/000003/run/a.bin``,
``manifests/000003.json``; see :mod:`taurus_tools.checkpoint.manifest`) and reads them back.
:meth:`Destination.send` sends one open file and returns its MD5; a file that changed while
it was sent raises :class:`~taurus_tools.transfer.s3_upload.Changed`; a destination that
cannot be reached at all raises :class:`DestinationUnreachableError` (the pass ends: every
further file would fail alike); anything else fails that file alone.

* ``s3://bucket/prefix``: the same client and upload as ``s3://`` copies
  (:class:`~taurus_tools.transfer.s3_access.S3Access`,
  :class:`~taurus_tools.transfer.s3_upload.FileUploader`): ``mtime`` and ``md5chksum``
  metadata as rclone writes them, ``Content-MD5`` on single requests, multipart from 8 MiB
  with the upload aborted when it fails.
* a folder: a plain copy under a temporary name in the target's folder, given the source's
  modification time, then renamed: nothing incomplete ever has a real name.
* an rclone remote (``remote:path``, ``:backend:path``): a pass's files go in one
  ``rclone copy --files-from-raw LIST --no-traverse`` (as the rclone copy's shards do), each
  file's MD5 taken here first and its size and time compared after; manifests go with
  ``rclone rcat``, blobs come back with ``rclone copyto``.  The remote's configuration and
  credentials come from rclone's config or ``RCLONE_CONFIG_*`` variables, never from an
  argument.
* a folder through a :class:`~taurus_tools.datamover.datamover.Datamover`
  (:class:`DatamoverDestination`): a pass's files in one ``dtrsync --files-from``, the
  manifest in a second call; for folders the job cannot write itself.

The process a pass runs (``rclone copy``, ``dtrsync``) is retried within the pass as an
:class:`~taurus_tools.policy.ExitPolicy` says (:func:`run_under_policy`, through
:func:`~taurus_tools.datamover.wait.waitfor`); by default the tool's temporary errors once
(:data:`RCLONE_PASS_POLICY`, :data:`DATAMOVER_PASS_POLICY`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import stat
import subprocess
import threading
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple

from .._log import get_logger
from ..errors import ConfigurationError, DestinationUnreachableError
from ..transfer.s3_upload import Changed, check_unchanged
from .manifest import MANIFESTS, Entry, Manifest, data_name, manifest_name, manifest_number

__all__ = [
    "Destination",
    "DatamoverDestination",
    "LocalDestination",
    "RcloneDestination",
    "S3Destination",
    "destination_for",
    "DATAMOVER_PASS_POLICY",
    "RCLONE_PASS_POLICY",
]

log = get_logger(__name__)

_BLOCK = 1 << 20
#: Nanoseconds in a second: a datamover's copy is checked for its modification time to the
#: second (some file systems keep no finer times).
_NS = 10**9
#: S3 error codes after which no further request of the pass can succeed.
_PASS_FATAL = frozenset(
    (
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "NoSuchBucket",
        "ServiceUnavailable",
        "SlowDown",
        "InternalError",
        "500",
        "502",
        "503",
        "504",
    )
)
#: botocore's errors for a server that does not answer.
_UNREACHABLE = frozenset(
    (
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "NoCredentialsError",
    )
)


class Destination:
    """Named blobs somewhere (see the module's docstring)."""

    #: Files :meth:`send_files` sends at once.
    threads = 1

    def describe(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Raise :class:`DestinationUnreachableError` unless the destination answers and takes writes."""
        raise NotImplementedError

    def names(self, prefix: str) -> List[str]:
        """The names below ``prefix`` (a folder: ``manifests/``), relative to it."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def write(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` at once (readers see all of it or nothing)."""
        raise NotImplementedError

    def send(self, fh: BinaryIO, st: os.stat_result, name: str) -> str:
        """Store the open file ``fh`` (``st``: its ``fstat``) under ``name``; return its MD5 (hex)."""
        raise NotImplementedError

    def fetch(self, name: str, target: str) -> None:
        """Write the blob ``name`` to the file ``target`` (replaced if there)."""
        raise NotImplementedError

    def send_files(
        self, root: str, files: Sequence[Tuple[str, os.stat_result]], number: int
    ) -> Iterator[Tuple[str, "Entry | BaseException"]]:
        """Send the files ``files`` (path relative to ``root``, and its ``lstat`` when listed)
        as pass ``number``'s: for each, its :class:`Entry`, or the exception that kept it
        back (:class:`Changed`: changed since it was listed or while it was sent; an
        ``OSError`` or :class:`ConfigurationError` for that file).  After a
        :class:`DestinationUnreachableError` nothing more is sent.  Through :meth:`send`,
        :attr:`threads` at a time; a destination may send them in one go instead."""
        broken = threading.Event()

        def one(item: Tuple[str, os.stat_result]) -> "Entry | BaseException":
            rel, listed = item
            if broken.is_set():
                return DestinationUnreachableError("the pass failed before it")
            try:
                with open_listed(root, rel, listed) as (fh, st):
                    md5 = self.send(fh, st, data_name(number, rel))
            except DestinationUnreachableError as exc:
                broken.set()
                return exc
            except (OSError, ConfigurationError, Changed) as exc:
                return exc
            return Entry(st.st_size, st.st_mtime_ns, md5, number)

        if self.threads <= 1 or len(files) <= 1:
            outcomes: Iterator["Entry | BaseException"] = map(one, files)
            pool = None
        else:
            pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="taurus-tools:ckpt")
            outcomes = pool.map(one, files)
        try:
            for (rel, _), outcome in zip(files, outcomes):
                yield rel, outcome
                if isinstance(outcome, DestinationUnreachableError):
                    return
        finally:
            if pool is not None:
                broken.set()  # what is still queued returns at once
                pool.shutdown(wait=True)

    def close(self) -> None:
        """Release connections and threads."""

    # ------------------------------------------------------------------ manifests
    def manifest_numbers(self) -> List[int]:
        """The numbers of the passes whose manifest is there, oldest first."""
        found = (manifest_number(name) for name in self.names(MANIFESTS))
        return sorted(n for n in found if n is not None)

    def newest_manifest(self) -> Optional[Manifest]:
        """The newest complete pass (None: none yet).  A manifest that cannot be read (not
        this format) is skipped with a warning: the one before it is still complete."""
        for number in reversed(self.manifest_numbers()):
            name = manifest_name(number)
            try:
                return Manifest.from_json(self.read(name), f"{self.describe()} {name}")
            except ConfigurationError as exc:
                log.warning("%s", exc)
        return None

    def write_manifest(self, manifest: Manifest) -> None:
        self.write(manifest_name(manifest.number), manifest.to_json())


@contextlib.contextmanager
def open_listed(root: str, rel: str, listed: os.stat_result) -> Iterator[Tuple[BinaryIO, os.stat_result]]:
    """Open ``root/rel`` for reading (no symbolic link followed), with its ``fstat``; raise
    :class:`Changed` if it is not the regular file of that size and time that was listed."""
    fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigurationError("not a regular file any more")
        if st.st_size != listed.st_size or st.st_mtime_ns != listed.st_mtime_ns:
            raise Changed("changed since it was listed")
        yield fh, st


def destination_for(dest: str, *, s3: Any = None, datamover: Any = None, policy: Any = None) -> Destination:
    """The destination ``dest`` names: ``s3://bucket/prefix`` or a folder.

    ``s3``: the :class:`~taurus_tools.transfer.s3.S3Config` for ``s3://`` (default: boto3's
    own resolution).  Anything else with a ``:`` before the first ``/`` that is no existing
    folder is an rclone remote (``remote:path``, ``:backend:path``).  With ``datamover`` (a
    :class:`~taurus_tools.datamover.datamover.Datamover`), ``dest`` must be a folder, and
    it is written through that datamover (:class:`DatamoverDestination`).

    ``policy``: the :class:`~taurus_tools.policy.ExitPolicy` (or its compact form) for the
    processes a pass runs (rclone, the datamover's); default :data:`RCLONE_PASS_POLICY`,
    :data:`DATAMOVER_PASS_POLICY`.  ``s3://`` passes run no process (each request is retried
    by botocore), so a policy there is a :class:`ConfigurationError`.
    """
    if not isinstance(dest, (str, os.PathLike)):
        raise ConfigurationError(f"dest must be s3://BUCKET/PREFIX or a folder, got {dest!r}")
    text = os.fspath(dest)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    head = text.split("/", 1)[0]
    remote = not text.startswith("s3://") and ":" in head and not os.path.exists(head)
    if datamover is not None:
        if text.startswith("s3://") or remote:
            raise ConfigurationError(
                f"datamover= writes a folder destination; {text!r} is written by this process (give no datamover)"
            )
        return DatamoverDestination(text, datamover, policy=policy)
    if text.startswith("s3://"):
        if policy is not None:
            raise ConfigurationError(
                "an exit policy applies to passes that run a process (rclone remotes, a datamover); "
                "s3:// passes send their requests from this process, each retried by botocore"
            )
        return S3Destination(text, s3)
    if remote:
        return RcloneDestination(text, policy=policy)
    if policy is not None:
        raise ConfigurationError(
            "an exit policy applies to passes that run a process (rclone remotes, a datamover); "
            f"{text!r} is a folder written by this process (give datamover= to write it through one)"
        )
    return LocalDestination(text)


# ---------------------------------------------------------------------------- a folder
class LocalDestination(Destination):
    """A folder (made at :meth:`check` if missing)."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)

    def describe(self) -> str:
        return self.folder

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def check(self) -> None:
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise DestinationUnreachableError(
                f"checkpoint destination {self.folder!r} cannot be made: {exc.strerror or exc}"
            ) from None
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise DestinationUnreachableError(f"checkpoint destination {self.folder!r} is not writable")

    def names(self, prefix: str) -> List[str]:
        try:
            return sorted(os.listdir(self._path(prefix)))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DestinationUnreachableError(f"{self._path(prefix)!r}: {exc.strerror or exc}") from None

    def read(self, name: str) -> bytes:
        with open(self._path(name), "rb") as fh:
            return fh.read()

    def _temporary(self, target: str) -> str:
        return os.path.join(os.path.dirname(target), f".tt-part-ckpt-{os.getpid()}-{threading.get_ident()}")

    def write(self, name: str, data: bytes) -> None:
        target = self._path(name)
        tmp = self._temporary(target)
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            remove_quietly(tmp)
            raise DestinationUnreachableError(f"{target!r} cannot be written: {exc.strerror or exc}") from None

    def send(self, fh: BinaryIO, st: os.stat_result, name: str) -> str:
        target = self._path(name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = self._temporary(target)
        try:
            digest, sent = _copy(fh, tmp)
            check_unchanged(fh.fileno(), st, sent)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, target)
        except BaseException:
            remove_quietly(tmp)
            raise
        return digest

    def fetch(self, name: str, target: str) -> None:
        with open(self._path(name), "rb") as fh:
            _copy(fh, target)


def _copy(fh: BinaryIO, target: str) -> "tuple[str, int]":
    """Copy what is left in ``fh`` to a new file ``target``; its MD5 (hex) and length."""
    md5 = hashlib.md5()
    sent = 0
    with open(target, "wb") as out:
        while True:
            block = fh.read(_BLOCK)
            if not block:
                break
            md5.update(block)
            out.write(block)
            sent += len(block)
    return md5.hexdigest(), sent


def remove_quietly(path: str) -> None:
    """Remove a file if it is there (a temporary left by a failure)."""
    try:
        os.unlink(path)
    except OSError:
        pass


# ---------------------------------------------------------------------------- s3://
class S3Destination(Destination):
    """``s3://bucket/prefix``; the bucket must exist (it is not made)."""

    def __init__(self, location: str, config: Any = None) -> None:
        from ..transfer.s3 import S3Config, S3Location

        self.location = S3Location.parse(location)
        self.config = config if config is not None else S3Config()
        self.threads = self.config.threads
        self._endpoint: Optional[str] = None
        self._uploader: Any = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.location} (endpoint {self._endpoint or self.config.endpoint_url or 'AWS'})"

    @property
    def uploader(self) -> Any:
        with self._lock:
            if self._uploader is None:
                from ..transfer.s3_access import S3Access
                from ..transfer.s3_upload import FileUploader

                access = S3Access(self.config)  # (its client is made when first needed)
                self._endpoint = access.endpoint
                direct = access.direct(self.config.threads)
                self._uploader = FileUploader(access, self.location.bucket, threads=self.config.threads, direct=direct)
            return self._uploader

    @property
    def client(self) -> Any:
        return self.uploader.client

    def _fail(self, exc: BaseException) -> BaseException:
        """What a failed request becomes: the end of the pass, or the failure of one file."""
        from ..errors import S3Error
        from ..transfer.s3 import describe_error, error_code

        if not type(exc).__module__.startswith(("botocore", "boto3", "s3transfer", "urllib3")):
            return exc
        code = error_code(exc)
        message = describe_error(exc, self.location, self._endpoint)
        if code in _PASS_FATAL or type(exc).__name__ in _UNREACHABLE:
            return DestinationUnreachableError(message)
        return S3Error(message)

    def check(self) -> None:
        try:
            self.client.list_objects_v2(Bucket=self.location.bucket, Prefix=self.location.prefix, MaxKeys=1)
        except Exception as exc:
            error = self._fail(exc)
            raise DestinationUnreachableError(f"checkpoint destination: {error}") from None

    def names(self, prefix: str) -> List[str]:
        full = self.location.key(prefix)
        found: List[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=full
            ):
                found.extend(item["Key"][len(full):] for item in page.get("Contents", ()))
        except Exception as exc:
            raise self._fail(exc) from None
        return sorted(found)

    def read(self, name: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.location.bucket, Key=self.location.key(name))
            return answer["Body"].read()  # type: ignore[no-any-return]
        except Exception as exc:
            raise self._fail(exc) from None

    def write(self, name: str, data: bytes) -> None:
        import base64

        try:
            self.client.put_object(
                Bucket=self.location.bucket,
                Key=self.location.key(name),
                Body=data,
                ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode(),
            )
        except Exception as exc:
            raise self._fail(exc) from None

    def send(self, fh: BinaryIO, st: os.stat_result, name: str) -> str:
        try:
            key = self.location.key(name.encode("utf-8").decode("utf-8"))
        except UnicodeEncodeError:
            raise ConfigurationError(
                "the name is not valid UTF-8, and S3 keys are UTF-8: rename it (e.g. convmv -f latin1 -t utf8)"
            ) from None
        try:
            digest = self.uploader.upload(fh, st, key, checksum=True)
        except Changed:
            raise
        except Exception as exc:
            raise self._fail(exc) from None
        assert digest is not None  # checksum=True: always computed
        return digest.hex()  # type: ignore[no-any-return]

    def fetch(self, name: str, target: str) -> None:
        try:
            # (the shared transfer manager: parts for large objects; the client is botocore's,
            # without boto3's download_file)
            self.uploader.manager.download(self.location.bucket, self.location.key(name), target).result()
        except Exception as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        with self._lock:
            uploader = self._uploader
        if uploader is not None:
            uploader.shutdown()


# ---------------------------------------------------------------------------- rclone remotes
class RcloneDestination(Destination):
    """An rclone remote (``remote:path`` or ``:backend:path``); see the module's docstring."""

    #: Seconds any one rclone call may take (a pass's copy: per file sent, at least this).
    TIMEOUT_S = 600.0
    _OPTIONS = ("--retries", "1", "--low-level-retries", "3", "--contimeout", "10s")

    def __init__(self, location: str, *, policy: Any = None) -> None:
        from ..transfer.rclone import RcloneEndpoint, RemoteLocation

        self.endpoint = RcloneEndpoint(RemoteLocation.parse(location))
        #: What the pass's ``rclone copy`` is retried on (its exit code), within the pass.
        self.policy = pass_policy(policy, RCLONE_PASS_POLICY)
        self.base = str(self.endpoint.remote).rstrip("/")
        if not self.base.endswith(":"):
            self.base += "/"

    def describe(self) -> str:
        return str(self.endpoint.remote)

    def _run(self, argv: Sequence[str], *, data: Optional[bytes] = None, timeout: Optional[float] = None) -> Any:
        """Run rclone with ``argv``; its CompletedProcess (bytes).  rclone failing to start or
        to finish in time ends the pass."""
        full = [self.endpoint.rclone, *argv]
        try:
            return subprocess.run(
                full,
                input=data,
                stdin=None if data is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout or self.TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DestinationUnreachableError(f"{self.describe()}: rclone {argv[0]}: {exc}") from None

    def _failed(self, proc: Any, what: str) -> DestinationUnreachableError:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return DestinationUnreachableError(
            f"{self.describe()}: rclone {what} failed (exit {proc.returncode}): {lines[-1] if lines else ''}"
        )

    def check(self) -> None:
        from ..transfer.rclone import EXIT_DIR_NOT_FOUND

        self.endpoint.rclone  # installed, or CommandNotFoundError
        proc = self._run(["lsf", "--max-depth", "1", *self._OPTIONS, "--", self.base], timeout=120)
        if proc.returncode not in (0, EXIT_DIR_NOT_FOUND):
            raise self._failed(proc, "lsf")

    def names(self, prefix: str) -> List[str]:
        from ..transfer.rclone import EXIT_DIR_NOT_FOUND
        from ..transfer.rclone_worker import local_name

        proc = self._run(["lsf", "--files-only", *self._OPTIONS, "--", self.base + prefix])
        if proc.returncode == EXIT_DIR_NOT_FOUND:
            return []
        if proc.returncode != 0:
            raise self._failed(proc, "lsf")
        return sorted(os.fsdecode(local_name(line)) for line in proc.stdout.decode("utf-8").splitlines() if line)

    def _remote(self, name: str) -> str:
        from ..transfer.rclone_worker import rclone_name

        return self.base + rclone_name(os.fsencode(name))

    def read(self, name: str) -> bytes:
        proc = self._run(["cat", *self._OPTIONS, "--", self._remote(name)])
        if proc.returncode != 0:
            raise self._failed(proc, "cat")
        return proc.stdout  # type: ignore[no-any-return]

    def write(self, name: str, data: bytes) -> None:
        proc = self._run(["rcat", *self._OPTIONS, "--", self._remote(name)], data=data)
        if proc.returncode != 0:
            raise self._failed(proc, "rcat")

    def fetch(self, name: str, target: str) -> None:
        proc = self._run(["copyto", *self._OPTIONS, "--", self._remote(name), target])
        if proc.returncode != 0:
            error = self._failed(proc, "copyto")
            raise OSError(str(error))

    def send_files(
        self, root: str, files: Sequence[Tuple[str, os.stat_result]], number: int
    ) -> Iterator[Tuple[str, "Entry | BaseException"]]:
        """One ``rclone copy --files-from-raw`` for every file; each checked after."""
        import tempfile

        from ..transfer.rclone_worker import rclone_name
        from ..transfer.s3_upload import md5_of

        taken: List[Tuple[str, str, os.stat_result, str]] = []  # rel, rclone's name, stat, md5
        for rel, listed in files:
            try:
                name = rclone_name(os.fsencode(rel))
                with open_listed(root, rel, listed) as (fh, st):
                    md5 = md5_of(fh).hex()
            except ValueError:
                yield rel, ConfigurationError("the name is not valid UTF-8: rclone cannot name it")
                continue
            except (OSError, ConfigurationError, Changed) as exc:
                yield rel, exc
                continue
            taken.append((rel, name, st, md5))
        if not taken:
            return
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", prefix="tt-ckpt-", suffix=".list") as listing:
            listing.write("".join(name + "\n" for _, name, _, _ in taken))
            listing.flush()
            target = self.base + data_name(number, "").rstrip("/")
            argv = ["copy", "--files-from-raw", listing.name, "--no-traverse", *self._OPTIONS, "--", root, target]
            code, why = self._copy(argv, timeout=self.TIMEOUT_S + 10 * len(taken))
            there = self._sizes(listing.name, target)
        if there is None:
            error = DestinationUnreachableError(f"{self.describe()}: rclone copy failed (exit {code}): {why}")
            for rel, _, _, _ in taken[:1]:
                yield rel, error
            return
        for rel, name, st, md5 in taken:
            try:
                now = os.lstat(os.path.join(root, rel))
            except OSError as exc:
                yield rel, exc
                continue
            if now.st_size != st.st_size or now.st_mtime_ns != st.st_mtime_ns:
                yield rel, Changed("changed while it was sent")
            elif there.get(name) != st.st_size:
                yield rel, OSError(f"not at the destination after rclone copy (exit {code})")
            else:
                yield rel, Entry(st.st_size, st.st_mtime_ns, md5, number)

    def _copy(self, argv: Sequence[str], *, timeout: float) -> Tuple[int, str]:
        """A pass's ``rclone copy``, run again as :attr:`policy` says: (exit code, last stderr line)."""
        from ..process.handle import Handle
        from ..process.launch import Launch

        def start(on_output: Any) -> Any:
            return Handle(Launch((self.endpoint.rclone, *argv), name="rclone"), text=False, on_output=on_output)

        return run_under_policy(start, self.policy, timeout, f"{self.describe()}: rclone copy")

    def _sizes(self, listing: str, target: str) -> Optional[Dict[str, int]]:
        """The listed names found below ``target``, with their sizes (one lookup per name);
        None when the remote cannot be asked."""
        from ..transfer.rclone import EXIT_DIR_NOT_FOUND

        argv = ["lsjson", "--files-only", "--no-mimetype", "--no-modtime", "--files-from-raw", listing,
                "--no-traverse", *self._OPTIONS, "--", target]
        proc = self._run(argv)
        if proc.returncode == EXIT_DIR_NOT_FOUND:
            return {}
        if proc.returncode != 0:
            return None
        return {item["Path"]: int(item["Size"]) for item in json.loads(proc.stdout or b"[]")}


# ---------------------------------------------------------------------------- through a datamover
#: What a datamover pass's rsync retries by default: its network and protocol errors (10, 12)
#: and timeouts (30, 35) once; a job whose node failed once elsewhere, a preempted one once.
DATAMOVER_PASS_POLICY = (
    "10,12,30,35=retry,NODE_FAIL,BOOT_FAIL=retry_elsewhere,PREEMPTED=retry,*=fail,retries=1,backoff=2"
)
#: What an rclone pass retries by default: rclone's "temporary error" (exit 5), once.
RCLONE_PASS_POLICY = "5=retry,NODE_FAIL,BOOT_FAIL=retry_elsewhere,*=fail,retries=1,backoff=2"


def pass_policy(policy: Any, default: str) -> Any:
    """``policy`` (an :class:`~taurus_tools.policy.ExitPolicy`, its compact form, or None
    for ``default``) as an ExitPolicy."""
    from ..policy import ExitPolicy

    if policy is None:
        return ExitPolicy(default)
    if isinstance(policy, str):
        return ExitPolicy(policy)
    if not isinstance(policy, ExitPolicy):
        raise ConfigurationError(f"policy must be an ExitPolicy or its compact form (a str), got {policy!r}")
    return policy


def run_under_policy(start: Any, policy: Any, timeout: float, what: str) -> Tuple[int, str]:
    """Start a pass's command (``start(on_output)`` returns its :class:`~taurus_tools.process.handle.Handle`)
    and wait for it, run again as ``policy`` says (:func:`~taurus_tools.datamover.wait.waitfor`:
    its exit code, signal and Slurm state; ``retry_elsewhere`` keeps a Slurm job's retry off its
    node).  Returns the last attempt's exit code and the last line its attempts wrote on stderr.
    A command that cannot start, or runs past ``timeout`` seconds (then cancelled), raises
    :class:`DestinationUnreachableError`: the pass ends."""
    from ..datamover.wait import is_noise, waitfor
    from ..errors import CommandError, CommandTimeoutError

    errors = bytearray()

    def on_output(stream: str, data: bytes) -> None:
        if stream == "stderr":
            errors.extend(data)
            del errors[: max(0, len(errors) - 4096)]

    try:
        handle = start(on_output)
        code = waitfor(handle, timeout, policy=policy, progress=False, show_stderr=False)
    except CommandTimeoutError:
        raise DestinationUnreachableError(f"{what} did not end within {timeout:g} s (cancelled)") from None
    except (OSError, CommandError) as exc:
        raise DestinationUnreachableError(f"{what} could not run: {exc}") from None
    lines = [line for line in bytes(errors).decode("utf-8", "replace").splitlines() if line and not is_noise(line)]
    return code, lines[-1] if lines else ""


class DatamoverDestination(LocalDestination):
    """A folder written through a :class:`~taurus_tools.datamover.datamover.Datamover`
    (``dtrsync``): on a cluster, by the data-transfer nodes, so it may be a folder the
    job itself cannot write (``/projects``, read-only on compute nodes).

    A pass is one ``dtrsync -a --from0 --files-from=LIST PATH/ DEST/data/NNNNNN/`` over all
    its files, each file's MD5 taken here first; then each file is checked here (unchanged
    since it was listed; at the destination with its size and modification time), and the
    manifest goes last, ``dtrsync`` of one file (rsync writes under a temporary name and
    renames).  The layout is that of every destination, so :func:`~taurus_tools.checkpoint.restore.restore`
    reads it as a folder.  DEST must be readable from here (it is read back to check each
    pass, and for the manifests), and its parent folder must exist.

    The list and the manifest are written first to ``list_dir`` (default: the job log
    folder, ``$TAURUS_TOOLS_JOB_DIR`` or ``~/.cache/taurus-tools/jobs``): it must be
    visible where the datamover's jobs run.  Names are written NUL-separated, and rsync
    takes them as they are (no wildcards, no escapes): any name works.
    """

    #: Seconds one datamover call may take at least (a pass's: this plus 10 s per file).
    TIMEOUT_S = 600.0

    def __init__(self, folder: str, datamover: Any, *, policy: Any = None, list_dir: Optional[str] = None) -> None:
        from ..datamover.backends import default_job_log_dir
        from ..datamover.datamover import Datamover

        if not isinstance(datamover, Datamover):
            raise ConfigurationError(f"datamover must be a Datamover, got {datamover!r}")
        super().__init__(folder)
        self.datamover = datamover
        self.policy = pass_policy(policy, DATAMOVER_PASS_POLICY)
        self.list_dir = os.path.abspath(list_dir) if list_dir is not None else str(default_job_log_dir())

    def describe(self) -> str:
        return f"{self.folder} (through the {self.datamover.backend.name} datamover)"

    def _rsync(self, args: Sequence[str], what: str, timeout: float) -> Tuple[int, str]:
        """One ``dtrsync`` call, retried as the policy says: (exit code, last stderr line)."""

        def start(on_output: Any) -> Any:
            return self.datamover.dtrsync(*args, text=False, on_output=on_output)

        return run_under_policy(start, self.policy, timeout, f"{self.describe()}: dtrsync ({what})")

    @contextlib.contextmanager
    def _staging(self) -> Iterator[str]:
        """A new folder in ``list_dir`` for one call's list or manifest, removed after."""
        import shutil
        import tempfile

        try:
            os.makedirs(self.list_dir, exist_ok=True)
            folder = tempfile.mkdtemp(prefix="tt-ckpt-", dir=self.list_dir)
        except OSError as exc:
            raise DestinationUnreachableError(
                f"{self.list_dir!r} (where the datamover reads its list) cannot be written: {exc.strerror or exc}"
            ) from None
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def check(self) -> None:
        """Make DEST, ``DEST/data`` and ``DEST/manifests`` through the datamover (``rsync -r``
        of an empty tree: folders there keep their permissions), then see them from here."""
        if "dtrsync" not in self.datamover.commands():
            raise DestinationUnreachableError(
                f"the {self.datamover.backend.name} datamover has no dtrsync (rsync not installed?): "
                f"it cannot write {self.folder!r}"
            )
        with self._staging() as folder:
            for sub in ("data", "manifests"):
                os.mkdir(os.path.join(folder, sub))
            code, why = self._rsync(["-r", "--", folder + "/", self.folder + "/"], "folders", self.TIMEOUT_S)
        if code != 0:
            raise DestinationUnreachableError(
                f"checkpoint destination {self.describe()} cannot be made (exit {code}): {why}"
            )
        if not os.path.isdir(os.path.join(self.folder, "manifests")):
            raise DestinationUnreachableError(
                f"checkpoint destination {self.folder!r} was made through the datamover but cannot be seen from "
                "here: the checkpoint reads it back to check each pass"
            )

    def write(self, name: str, data: bytes) -> None:
        """One file through the datamover: rsync renames it into place when it is complete."""
        target = self._path(name)
        with self._staging() as folder:
            staged = os.path.join(folder, os.path.basename(target))
            with open(staged, "wb") as out:
                out.write(data)
            code, why = self._rsync(
                ["-t", "--", staged, os.path.dirname(target) + "/"], os.path.basename(name), self.TIMEOUT_S
            )
        if code != 0:
            raise DestinationUnreachableError(f"{target!r} could not be written (dtrsync exit {code}): {why}")
        try:
            with open(target, "rb") as fh:
                there = fh.read()
        except OSError as exc:
            raise DestinationUnreachableError(f"{target!r} is not there after dtrsync: {exc.strerror or exc}") from None
        if there != data:
            raise DestinationUnreachableError(f"{target!r} does not hold what was written (dtrsync exit {code})")

    def send(self, fh: BinaryIO, st: os.stat_result, name: str) -> str:
        raise NotImplementedError("a datamover destination sends a pass's files together (send_files)")

    def send_files(
        self, root: str, files: Sequence[Tuple[str, os.stat_result]], number: int
    ) -> Iterator[Tuple[str, "Entry | BaseException"]]:
        """One ``dtrsync --files-from`` for every file; each checked after."""
        from ..transfer.s3_upload import md5_of

        taken: List[Tuple[str, os.stat_result, str]] = []  # rel, stat, md5
        for rel, listed in files:
            try:
                with open_listed(root, rel, listed) as (fh, st):
                    md5 = md5_of(fh).hex()
            except (OSError, ConfigurationError, Changed) as exc:
                yield rel, exc
                continue
            taken.append((rel, st, md5))
        if not taken:
            return
        target = os.path.join(self.folder, data_name(number, ""))
        with self._staging() as folder:
            listing = os.path.join(folder, "files")
            with open(listing, "wb") as out:
                out.write(b"".join(os.fsencode(rel) + b"\0" for rel, _, _ in taken))
            args = ["-a", "--from0", f"--files-from={listing}", "--", root.rstrip("/") + "/", target]
            code, why = self._rsync(args, f"pass {number}, {len(taken)} files", self.TIMEOUT_S + 10 * len(taken))
        arrived = 0
        outcomes: List[Tuple[str, "Entry | BaseException"]] = []
        for rel, st, md5 in taken:
            try:
                now = os.lstat(os.path.join(root, rel))
            except OSError as exc:
                outcomes.append((rel, exc))
                continue
            try:
                there = os.lstat(os.path.join(target, rel))
            except OSError:
                there = None
            if there is not None and there.st_size == st.st_size:
                arrived += 1
            if now.st_size != st.st_size or now.st_mtime_ns != st.st_mtime_ns:
                outcomes.append((rel, Changed("changed while it was sent")))
            elif there is None or there.st_size != st.st_size or there.st_mtime_ns // _NS != st.st_mtime_ns // _NS:
                outcomes.append((rel, OSError(f"not at the destination after dtrsync (exit {code}): {why}")))
            else:
                outcomes.append((rel, Entry(st.st_size, st.st_mtime_ns, md5, number)))
        if code != 0 and not arrived:  # nothing got there: the destination, not the files
            yield taken[0][0], DestinationUnreachableError(f"{self.describe()}: dtrsync failed (exit {code}): {why}")
            return
        yield from outcomes
