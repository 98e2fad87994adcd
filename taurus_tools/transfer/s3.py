"""S3 locations, the boto3 client made right for them, and listing a prefix into records.

The first part of ``s3://`` copies (issue 15): :class:`S3Location` parses and checks
``s3://bucket/prefix``; :class:`S3Config` is the one configuration object (endpoint, profile,
threads), resolved the way boto3 resolves its own (environment, ``~/.aws/config`` profiles,
``AWS_ENDPOINT_URL``); :func:`make_client` builds a client with the settings that bite on
S3-compatible servers; :func:`list_prefix` streams a listing to disk in the copy engine's
record format.  The endpoint class that copies (a worker per shard) builds on these.

Facts behind the client's settings (checked 2026-12):

* path-style addressing for any endpoint that is not AWS (virtual-host style needs DNS
  names per bucket, which ``127.0.0.1`` and most on-premise servers do not have);
* ``request_checksum_calculation`` and ``response_checksum_validation`` set to
  ``"when_required"`` for such endpoints: boto3 >= 1.36 sends CRC32 trailers by default, which
  some servers store inside the object or refuse;
* ``max_pool_connections`` covers the worker's threads (below it: "Connection pool is full");
* timeouts and a bounded retry count, so an unreachable endpoint fails in bounded time and a
  wrong secret is refused at once (``InvalidAccessKeyId``/``SignatureDoesNotMatch`` are not
  retried by botocore).

Credentials are boto3's business (environment, shared files, profiles, instance roles): they
never pass through this module's arguments, messages or records.
"""

from __future__ import annotations

import base64
import os
import re
import sys
import urllib.parse
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigurationError, S3Error, SourceNotFoundError
from .endpoints import DestinationState, Endpoint, ShardAttempt
from .plan import ListingStats, excluded, read_entries
from .plan import path_problem as key_problem
from .s3_direct import ListedObject, direct_requests

if TYPE_CHECKING:
    from ..datamover.backends import Backend
    from ..process.launch import Launch
    from .config import CopyConfig
    from .state import ShardCounts

__all__ = [
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


@dataclass(frozen=True)
class S3Config:
    """How to reach S3: one object for the endpoint, the profile and the concurrency.

    Parameters
    ----------
    endpoint_url : str, optional
        The server, e.g. ``https://s3.example.org``; default: boto3's own resolution
        (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the profile's ``endpoint_url``, else AWS).
    profile : str, optional
        A profile of ``~/.aws/config``/``credentials``; default: boto3's (``AWS_PROFILE``).
    threads : int
        Concurrent transfers per worker process (1 to 256).
    connect_timeout_s, read_timeout_s : float
        Per request; an unreachable endpoint fails after about ``connect_timeout_s`` times
        the attempts.
    max_attempts : int
        Attempts per request (botocore's "standard" retry mode; 1 = no retry).
    """

    endpoint_url: Optional[str] = None
    profile: Optional[str] = None
    threads: int = 8
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parsed = urllib.parse.urlsplit(self.endpoint_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigurationError(
                    f"endpoint_url must be http(s)://HOST[:PORT], got {self.endpoint_url!r}"
                )
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 1 <= self.threads <= 256:
            raise ConfigurationError(f"threads must be an int from 1 to 256, got {self.threads!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        for name in ("connect_timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")


def _is_aws(endpoint: Optional[str]) -> bool:
    if endpoint is None:
        return True
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    return host == "amazonaws.com" or host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def make_client(config: S3Config = S3Config()) -> Tuple[Any, Optional[str]]:
    """A botocore S3 client for ``config``, and the endpoint it talks to (None: AWS).

    botocore is imported here, not with the package; boto3's session is not used (it
    would import s3transfer and boto3's resource layer, 0.1-0.3 s that a listing or a
    small-object worker does not need); the client, its credentials and its endpoint
    resolution are botocore's either way.
    """
    import botocore.config
    import botocore.exceptions
    import botocore.session

    session = botocore.session.Session(profile=config.profile)
    try:
        region = session.get_config_variable("region") or "us-east-1"
    except botocore.exceptions.ProfileNotFound:
        raise ConfigurationError(_no_such_profile(config.profile or os.environ.get("AWS_PROFILE", ""))) from None
    endpoint = config.endpoint_url
    if endpoint is None:
        # botocore resolves AWS_ENDPOINT_URL(_S3) and the profile's endpoint_url itself; ask
        # it, so that the settings below follow the server actually used.
        probe = session.create_client("s3", config=botocore.config.Config(region_name=region))
        resolved = probe.meta.endpoint_url
        endpoint = None if _is_aws(resolved) else resolved
    aws = _is_aws(endpoint)
    options: Dict[str, Any] = dict(
        region_name=region,
        max_pool_connections=max(10, config.threads + 2),
        connect_timeout=config.connect_timeout_s,
        read_timeout=config.read_timeout_s,
        retries={"mode": "standard", "max_attempts": config.max_attempts},
    )
    if not aws:
        options.update(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
    client = session.create_client("s3", endpoint_url=endpoint, config=botocore.config.Config(**options))
    return client, endpoint


def _no_such_profile(name: str) -> str:
    """Where a profile was looked for, and which profiles are there."""
    import botocore.session

    files = [
        os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
    ]
    try:
        known = sorted(botocore.session.Session().available_profiles)
    except Exception:  # an unreadable file: its own error comes with the next call
        known = []
    there = f"profiles there: {', '.join(known)}" if known else "no profile is defined there"
    return f"the AWS profile {name!r} is in neither {files[0]} nor {files[1]}; {there}"


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
    when given; a page it cannot get (any error) is asked again through the client, which
    retries and raises what is wrong.
    """
    token: Optional[str] = None
    while True:
        page = direct.list_page(location.bucket, location.prefix, token) if direct is not None else None
        if page is not None:
            objects, token = page
        else:
            kwargs = {"Bucket": location.bucket, "Prefix": location.prefix}
            if token is not None:
                kwargs["ContinuationToken"] = token
            reply = client.list_objects_v2(**kwargs)
            objects = [
                (item["Key"], int(item["Size"]), int(item["LastModified"].timestamp() * 1e9))
                for item in reply.get("Contents", ())
            ]
            token = reply.get("NextContinuationToken") if reply.get("IsTruncated") else None
        yield objects
        if token is None:
            return


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


# ---------------------------------------------------------------------------- the endpoint
#: The per-shard worker (run with site-packages: it needs boto3).
WORKER_SCRIPT = Path(__file__).with_name("s3_worker.py")


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
        self._client: Any = None
        self._endpoint: Optional[str] = None

    @classmethod
    def from_location(cls, location: str, config: Optional["CopyConfig"] = None) -> "S3Endpoint":
        return cls(location, config.s3() if config is not None else None)

    @property
    def location(self) -> str:
        return str(self.s3)

    def describe(self) -> str:
        return f"{self.s3} (endpoint {self._endpoint or self.config.endpoint_url or 'AWS'})"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client, self._endpoint = make_client(self.config)
        return self._client

    def _call(self, method: str, **kwargs: Any) -> Any:
        """A client call whose botocore errors become :class:`S3Error` (one line, no secret)."""
        try:
            return getattr(self.client, method)(**kwargs)
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "boto3")):
                raise S3Error(describe_error(exc, self.s3, self._endpoint)) from None
            raise

    def _first_key(self) -> Dict[str, Any]:
        return self._call("list_objects_v2", Bucket=self.s3.bucket, Prefix=self.s3.prefix, MaxKeys=1)  # type: ignore

    # ------------------------------------------------------------------ as a source
    def check_source(self) -> None:
        """The bucket must answer and the prefix hold keys, or name one object."""
        if self._first_key().get("KeyCount", 0) or not self.s3.prefix:
            return
        key = self.s3.prefix.rstrip("/")
        try:
            head = self.client.head_object(Bucket=self.s3.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
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
        self.client  # made before listing, so that errors name the endpoint
        direct = direct_requests(self.client, self._endpoint, 1)
        return list_prefix(self.client, self.s3, into, endpoint=self._endpoint, exclude=exclude, direct=direct)

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
        # The server as resolved here (profile, AWS_ENDPOINT_URL): the worker then makes
        # one client, not a probe first (a URL is no secret; credentials stay in the env).
        self.client
        endpoint = self._endpoint or self.config.endpoint_url
        if endpoint:
            argv.append(f"--endpoint-url={endpoint}")
        if self.config.profile:
            argv.append(f"--profile={self.config.profile}")
        if attempt.new:
            argv.append("--new")
        return backend.launch_program(attempt.name, argv, blocking=True, exclude_nodes=attempt.exclude_nodes)

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
