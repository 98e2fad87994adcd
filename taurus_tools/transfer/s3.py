"""S3 locations, listing a prefix into records, and the ``s3://`` endpoint of copies.

The first part of ``s3://`` copies (issue 15): :class:`S3Location` parses and checks
``s3://bucket/prefix``; :func:`list_prefix` streams a listing to disk in the copy engine's
record format; :class:`S3Endpoint` is the copy endpoint (a worker per shard,
:mod:`taurus_tools.transfer.s3_worker`).  How the server is reached (:class:`S3Config`,
:class:`S3Access`, :func:`make_client`) is :mod:`taurus_tools.transfer.s3_access`, re-exported
here.

Credentials are boto3's business (environment, shared files, profiles, instance roles): they
never pass through this module's arguments, messages or records.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigurationError, S3Error, SourceNotFoundError
from .endpoints import DestinationState, Endpoint, ShardAttempt
from .plan import ListingStats, excluded, read_entries
from .plan import path_problem as key_problem
from .s3_access import S3Access, S3Config, make_client
from .s3_direct import MISSING, ListedObject

if TYPE_CHECKING:
    from ..datamover.backends import Backend
    from ..process.launch import InlineProgram, Launch
    from .config import CopyConfig
    from .state import ShardCounts

__all__ = [
    "S3Access",
    "S3Config",
    "S3Endpoint",
    "S3Location",
    "describe_error",
    "error_code",
    "key_problem",
    "list_prefix",
    "make_client",
    "object_mtime",
    "stored_md5",
]

#: S3's rules for bucket names (general purpose buckets), as one expression.
_BUCKET = re.compile(r"^(?!xn--)(?!.*-s3alias$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: How a folder marker (an empty object whose key ends in "/") is written; rclone and the AWS
#: CLI treat such keys as folders, never as files.
_FOLDER_MARKER_SUFFIX = "/"


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix``: a bucket and a folder-like prefix in it ("" for the whole bucket).

    The prefix is a folder: ``s3://b/data`` and ``s3://b/data/`` both mean the keys under
    ``data/`` (as for ``aws s3 cp --recursive`` and rclone), never ``data-old/...``.
    """

    bucket: str
    prefix: str = ""

    FORMS = "s3://BUCKET or s3://BUCKET/PREFIX (bucket: 3-63 of a-z, 0-9, '.', '-')"

    @classmethod
    def parse(cls, location: str) -> "S3Location":
        if not isinstance(location, str) or not location.startswith("s3://"):
            raise ConfigurationError(f"{location!r} is not an S3 location; write {cls.FORMS}")
        rest = location[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ConfigurationError(f"{location!r}: {bucket!r} is not a valid bucket name; write {cls.FORMS}")
        problem = key_problem(prefix.rstrip("/")) if prefix.strip("/") else None
        if problem is not None:
            raise ConfigurationError(f"{location!r}: the prefix {problem}; write {cls.FORMS}")
        prefix = prefix.strip("/")
        return cls(bucket, prefix + "/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, relative: str) -> str:
        """The object key of a path relative to this location."""
        return self.prefix + relative


#: Object metadata (as rclone writes it): the source's modification time, in Unix seconds
#: with a fraction, and the base64 MD5 of the content.
MTIME_KEY = "mtime"
MD5_KEY = "md5chksum"


def format_mtime(mtime_ns: int) -> str:
    """``mtime`` metadata for a modification time: ``1701234567.5`` (exact to the ns)."""
    seconds, ns = divmod(mtime_ns, 1_000_000_000)
    return f"{seconds}.{ns:09d}".rstrip("0").rstrip(".")


def _metadata(head: Mapping[str, Any], key: str) -> Optional[str]:
    # Metadata names are case-insensitive HTTP headers: some servers return "Mtime".
    for name, value in (head.get("Metadata") or {}).items():
        if name.lower() == key:
            return str(value)
    return None


def object_mtime(head: Mapping[str, Any], *, stored_only: bool = False) -> Optional[int]:
    """An object's modification time in ns: its ``mtime`` metadata, else (unless
    ``stored_only``) its LastModified; None when there is none."""
    text = _metadata(head, MTIME_KEY)
    if text is not None:
        seconds, _, fraction = text.strip().partition(".")
        try:
            if seconds.lstrip("-").isdigit() and (fraction == "" or fraction.isdigit()):
                return int(seconds) * 1_000_000_000 + int((fraction + "0" * 9)[:9])
            return int(float(text) * 1e9)
        except ValueError:
            pass
    if stored_only or head.get("LastModified") is None:
        return None
    return int(head["LastModified"].timestamp() * 1e9)


def stored_md5(head: Mapping[str, Any]) -> Optional[bytes]:
    """The MD5 of an object's content as stored with it: ``md5chksum`` metadata, else the
    ETag of an object sent in one part (a multipart ETag, with ``-N``, is no MD5)."""
    text = _metadata(head, MD5_KEY)
    if text is not None:
        try:
            digest = base64.b64decode(text, validate=True)
            if len(digest) == 16:
                return digest
        except ValueError:
            pass
    etag = str(head.get("ETag") or "").strip('"')
    if head.get("ServerSideEncryption") == "aws:kms":
        return None  # its ETag is no MD5 of the content
    if re.fullmatch(r"[0-9a-fA-F]{32}", etag):
        return bytes.fromhex(etag)
    return None


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore error (``NoSuchBucket``, ``404``, ...); "" for others."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def describe_error(exc: BaseException, location: S3Location, endpoint: Optional[str]) -> str:
    """One line for a failed S3 call: what, where, and what to check (never a credential)."""
    code = error_code(exc)
    where = f"{location} (endpoint {endpoint or 'AWS'})"
    if code in ("NoSuchBucket",):
        return f"{where}: the bucket {location.bucket!r} does not exist"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
        return f"{where}: the credentials were refused ({code}); check AWS_ACCESS_KEY_ID/AWS_PROFILE"
    if code in ("AccessDenied", "AllAccessDisabled", "403"):
        return f"{where}: access denied"
    name = type(exc).__name__
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        return f"{where}: the endpoint cannot be reached ({name})"
    if name == "NoCredentialsError":
        return f"{where}: no credentials found (environment, ~/.aws/credentials or a profile)"
    return f"{where}: {name}: {code or exc}"


def _listing_pages(client: Any, location: S3Location, direct: Optional[Any]) -> Iterator[List[ListedObject]]:
    """The objects below ``location``, a page (up to 1,000) at a time.

    Each page through ``direct`` (a :class:`~taurus_tools.transfer.s3_direct.DirectRequests`)
    when given, the next page asked for (by a second thread) while this one is parsed and
    written: the server's work on a page and ours overlap.  A page the direct path cannot
    get (any error) is asked again through the client, which retries and raises what is wrong.
    """
    if direct is None:
        token: Optional[str] = None
        while True:
            objects, token = _client_page(client, location, token)
            yield objects
            if token is None:
                return
    from concurrent.futures import ThreadPoolExecutor

    from .s3_direct import next_token_of, parse_listing

    def fetch(token: Optional[str]) -> Optional[bytes]:
        return direct.list_body(location.bucket, location.prefix, token)  # type: ignore[no-any-return]

    with ThreadPoolExecutor(1, thread_name_prefix="s3-list") as ahead:
        token = None
        pending = ahead.submit(fetch, None)
        while True:
            body = pending.result()
            guess = next_token_of(body) if body is not None else None
            if guess is not None:
                pending = ahead.submit(fetch, guess)
            page = None
            if body is not None:
                try:
                    page = parse_listing(body)
                except Exception:  # no listing after all: the client says what it is
                    page = None
            objects, following = page if page is not None else _client_page(client, location, token)
            yield objects
            if following is None:
                return
            if following != guess:  # (the page asked ahead is not the next one: ask for that)
                pending = ahead.submit(fetch, following)
            token = following


def _client_page(client: Any, location: S3Location, token: Optional[str]) -> Tuple[List[ListedObject], Optional[str]]:
    """One listing page through the client (its retries, its errors)."""
    kwargs = {"Bucket": location.bucket, "Prefix": location.prefix}
    if token is not None:
        kwargs["ContinuationToken"] = token
    reply = client.list_objects_v2(**kwargs)
    objects = [
        (item["Key"], int(item["Size"]), int(item["LastModified"].timestamp() * 1e9))
        for item in reply.get("Contents", ())
    ]
    return objects, (reply.get("NextContinuationToken") if reply.get("IsTruncated") else None)


def list_prefix(
    client: Any,
    location: S3Location,
    out: BinaryIO,
    *,
    endpoint: Optional[str] = None,
    exclude: Sequence[str] = (),
    direct: Optional[Any] = None,
) -> ListingStats:
    """Write one record per object below ``location`` to ``out``; return the counts.

    Records have the engine's format (``f\\tSIZE\\tMTIME_NS\\tPATH\\0``, PATH relative to the
    location, UTF-8).  The listing streams page by page (1,000 keys each); nothing but the
    counters stays in memory.  Folder markers (keys ending in ``/``) are folders, not files,
    as for rclone and the AWS CLI: they are counted with ``dirs`` and not copied (one that
    holds data is refused).  A key that cannot be a file name (see :func:`key_problem`) is
    left out with a message naming it; keys whose name or relative path matches an
    ``exclude`` glob are left out and counted.  ``direct``: pages through that
    :class:`~taurus_tools.transfer.s3_direct.DirectRequests` (four times faster than
    botocore's parsing), the client where it fails.
    Raises :class:`S3Error` when the location cannot be listed at all.
    """
    stats = ListingStats()
    cut = len(location.prefix)
    try:
        for objects in _listing_pages(client, location, direct):
            records = []
            for key, size, mtime_ns in objects:
                rel = key[cut:]
                if rel.endswith(_FOLDER_MARKER_SUFFIX):
                    if not size:
                        stats.dirs += 1
                    else:
                        stats.refuse(
                            f"{location}{rel}",
                            f"the key ends with '/', as a folder marker does, but holds {size} bytes: "
                            "no file can have that name",
                        )
                    continue
                problem = key_problem(rel)
                if problem is not None:
                    stats.refuse(f"{location}{rel}", f"the key {problem}")
                    continue
                if exclude and excluded(rel, rel.rpartition("/")[2], exclude):
                    stats.excluded += 1
                    continue
                records.append(b"f\t%d\t%d\t%s\0" % (size, mtime_ns, rel.encode("utf-8", "surrogateescape")))
                stats.add("f", size)
            out.write(b"".join(records))
    except Exception as exc:
        if type(exc).__module__.startswith(("botocore", "boto3")):
            raise S3Error(describe_error(exc, location, endpoint)) from None
        raise
    return stats


_UNSET = object()


class _NotThere(Exception):
    """The direct path's answer: no such object."""


class _LazyClient:
    """A client made when a method of it is first asked for (the listing needs none when
    every page comes through the direct path)."""

    def __init__(self, access: S3Access) -> None:
        self._access = access

    def __getattr__(self, name: str) -> Any:
        return getattr(self._access.client, name)


# ---------------------------------------------------------------------------- the endpoint
#: The per-shard worker (run with site-packages: it needs boto3).
WORKER_SCRIPT = Path(__file__).with_name("s3_worker.py")


def _inline_shard(argv: Tuple[str, ...]) -> "InlineProgram":
    """The worker of ``argv`` (python, the script, its arguments) on a thread of this process."""
    from .s3_worker import InlineShard

    return InlineShard(argv[2:])


class S3Endpoint(Endpoint):
    """``s3://bucket/prefix`` as a copy's source or destination; the other side is a local folder.

    Its shards copy with :mod:`taurus_tools.transfer.s3_worker` (one boto3 client and
    ``config.threads`` transfers per worker), started through the Datamover's backend like
    any copy worker: a local process, or a job on the data-mover partition.

    A location naming one object (``s3://b/run/out.h5``, with no keys below ``out.h5/``)
    copies that object alone into the destination folder.

    Parameters
    ----------
    location : str or S3Location
    config : S3Config
        The server, profile and threads (default: boto3's resolution, 8 threads).
    """

    forms = (S3Location.FORMS,)
    config_fields = ("endpoint_url", "profile")

    def __init__(self, location: "str | S3Location", config: Optional[S3Config] = None) -> None:
        self.s3 = location if isinstance(location, S3Location) else S3Location.parse(location)
        self.config = config or S3Config()
        #: Where keys are relative to: the location, or the folder of the one object it names.
        self.root = self.s3
        #: The name of the one object a location names (see :meth:`check_source`), else None.
        self.single: Optional[Tuple[str, int, int]] = None
        self._access: Optional[S3Access] = None
        self._direct_requests: Any = _UNSET

    @classmethod
    def from_location(cls, location: str, config: Optional["CopyConfig"] = None) -> "S3Endpoint":
        return cls(location, config.s3() if config is not None else None)

    @property
    def location(self) -> str:
        return str(self.s3)

    def describe(self) -> str:
        endpoint = self._access.endpoint if self._access is not None else self.config.endpoint_url
        return f"{self.s3} (endpoint {endpoint or 'AWS'})"

    @property
    def access(self) -> S3Access:
        """The server, region and credentials (resolved on first use), and the client."""
        if self._access is None:
            self._access = S3Access(self.config)
        return self._access

    @property
    def _endpoint(self) -> Optional[str]:
        return self.access.endpoint

    @property
    def client(self) -> Any:
        return self.access.client

    @property
    def _direct(self) -> Any:
        """The direct path (one connection: the driver's requests come one at a time), or None."""
        if self._direct_requests is _UNSET:
            self._direct_requests = self.access.direct(1)
        return self._direct_requests

    def _call(self, method: str, **kwargs: Any) -> Any:
        """A client call whose botocore errors become :class:`S3Error` (one line, no secret)."""
        try:
            return getattr(self.client, method)(**kwargs)
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "boto3")):
                raise S3Error(describe_error(exc, self.s3, self._endpoint)) from None
            raise

    def _first_key(self) -> Dict[str, Any]:
        """``KeyCount`` 0 or 1: whether a key has the prefix (through the client if the direct path fails)."""
        page = self._direct.list_page(self.s3.bucket, self.s3.prefix, max_keys=1) if self._direct else None
        if page is not None:
            return {"KeyCount": len(page[0])}
        return self._call("list_objects_v2", Bucket=self.s3.bucket, Prefix=self.s3.prefix, MaxKeys=1)  # type: ignore

    # ------------------------------------------------------------------ as a source
    def check_source(self) -> None:
        """The bucket must answer and the prefix hold keys, or name one object."""
        if self._first_key().get("KeyCount", 0) or not self.s3.prefix:
            return
        key = self.s3.prefix.rstrip("/")
        try:
            head = self._direct.head(self.s3.bucket, key) if self._direct else None
            if head is None:
                head = self.client.head_object(Bucket=self.s3.bucket, Key=key)
            elif head is MISSING:
                raise _NotThere
        except Exception as exc:
            if not isinstance(exc, _NotThere) and error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise S3Error(describe_error(exc, self.s3, self._endpoint)) from None
            raise SourceNotFoundError(
                f"source {self.s3}: no object has this prefix (and there is no object {key!r}); "
                f"list the bucket with: aws s3 ls s3://{self.s3.bucket}/"
            ) from None
        folder, _, name = key.rpartition("/")
        self.root = S3Location(self.s3.bucket, folder + "/" if folder else "")
        self.single = (name, int(head["ContentLength"]), object_mtime(head) or 0)

    def list(self, into: BinaryIO, *, exclude: Sequence[str] = (), files_from: Optional[Path] = None) -> ListingStats:
        if files_from is not None:
            raise ConfigurationError(
                f"files_from names local paths; it cannot select keys of {self.s3} (use exclude patterns)"
            )
        if self.single is not None:
            name, size, mtime_ns = self.single
            stats = ListingStats()
            into.write(b"f\t%d\t%d\t%s\0" % (size, mtime_ns, name.encode("utf-8", "surrogateescape")))
            stats.add("f", size)
            return stats
        access = self.access  # resolved before listing, so that errors name the endpoint
        return list_prefix(
            _LazyClient(access), self.s3, into, endpoint=access.endpoint, exclude=exclude, direct=self._direct
        )

    # ------------------------------------------------------------------ as a destination
    def check_destination(self, source: Endpoint) -> None:
        if not source.is_local:
            raise ConfigurationError(
                f"cannot copy {source.describe()} to {self.s3}: an s3:// location pairs with a local folder. "
                "Copy through a folder, or give both sides as rclone remotes (remote:path)"
            )
        self._first_key()  # the bucket answers, with these credentials

    def prepare(self, *, create: bool) -> DestinationState:
        """Buckets are not made (as ``aws s3 cp``): a missing one was refused already."""
        return DestinationState(existed=True, empty=not self._first_key().get("KeyCount", 0))

    # ------------------------------------------------------------------ as the mover
    def moves(self, source: Endpoint, destination: Endpoint) -> bool:
        return (source is self and destination.is_local) or (destination is self and source.is_local)

    def _local_side(self, source: Endpoint, destination: Endpoint) -> Tuple[str, Path]:
        upload = destination is self
        local = (source if upload else destination).local_path
        if local is None:
            raise ConfigurationError(
                f"an s3:// copy needs a local folder on the other side, not {source} / {destination}"
            )
        return ("upload" if upload else "download"), local

    def copy_shard(
        self, attempt: ShardAttempt, *, source: Endpoint, destination: Endpoint, backend: "Backend"
    ) -> "Launch":
        direction, local = self._local_side(source, destination)
        # Values as --opt=VALUE: a folder whose name starts with "-" stays a value.
        argv = [
            sys.executable,
            str(WORKER_SCRIPT),
            direction,
            f"--local={local}",
            f"--url={self.root}",
            f"--shard={attempt.records}",
            f"--status={attempt.files.status}",
            f"--failed={attempt.files.failed}",
            f"--verify={attempt.verify}",
            f"--threads={self.config.threads}",
            f"--part-tag={attempt.copy_tag}-{attempt.index}",
        ]
        # The server and region as resolved here (profile, AWS_ENDPOINT_URL): the worker
        # resolves nothing again (a URL is no secret; credentials stay in the environment).
        access = self.access
        endpoint = access.endpoint or self.config.endpoint_url
        if endpoint:
            argv.append(f"--endpoint-url={endpoint}")
        argv.append(f"--region={access.region}")
        if self.config.ca_bundle:
            argv.append(f"--ca-bundle={self.config.ca_bundle}")
        if self.config.profile:
            argv.append(f"--profile={self.config.profile}")
        if attempt.new:
            argv.append("--new")
        return backend.launch_program(
            attempt.name,
            argv,
            blocking=True,
            exclude_nodes=attempt.exclude_nodes,
            inline=_inline_shard if attempt.in_process else None,
        )

    def verify_shard(self, attempt: ShardAttempt, *, source: Endpoint, destination: Endpoint) -> "ShardCounts":
        """Check by size a shard that a program copied without reporting: HEAD per object
        (upload) or ``lstat`` per file (download); what does not match is a failed entry."""
        import json

        from .state import ShardCounts

        direction, local = self._local_side(source, destination)
        counts = ShardCounts()
        files = attempt.files
        with open(files.failed, "wb") as failed, open(files.messages, "w") as messages:
            for entry, raw in read_entries(attempt.records):
                if entry.kind == "d":
                    continue
                rel = os.fsdecode(entry.path)
                try:
                    if direction == "upload":
                        head = self.client.head_object(Bucket=self.s3.bucket, Key=self.root.key(rel))
                        ok = int(head["ContentLength"]) == os.stat(os.path.join(local, rel)).st_size
                    else:
                        ok = os.lstat(os.path.join(local, rel)).st_size == entry.size
                except Exception:
                    ok = False
                if ok:
                    counts.files += 1
                    counts.bytes += entry.size
                    counts.verified += 1
                else:
                    counts.failed += 1
                    counts.mismatches += 1
                    failed.write(raw)
                    messages.write(json.dumps({"path": rel, "error": "missing or of another size", "permanent": False}))
                    messages.write("\n")
        return counts

    def remove_leftovers(self, records: Path, *, copy_tag: str, destination: Endpoint) -> int:
        """Downloads: the temporary files a killed worker left in the destination's top
        folder (the local folder's own sweep).  Uploads leave none: each new attempt
        aborts the multipart uploads a killed one left (see the worker)."""
        if destination is self:
            return 0
        return destination.remove_leftovers(records, copy_tag=copy_tag, destination=destination)
