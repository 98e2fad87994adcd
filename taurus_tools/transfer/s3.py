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

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, Optional, Tuple

from ..errors import ConfigurationError, S3Error
from .plan import ListingStats
from .plan import path_problem as key_problem

__all__ = ["S3Config", "S3Location", "make_client", "list_prefix", "key_problem", "describe_error"]

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
    """A boto3 S3 client for ``config``, and the endpoint it talks to (None: AWS).

    boto3 is imported here, not with the package.
    """
    import boto3
    import botocore.config

    session = boto3.session.Session(profile_name=config.profile)
    endpoint = config.endpoint_url
    if endpoint is None:
        # boto3 resolves AWS_ENDPOINT_URL(_S3) and the profile's endpoint_url itself; ask
        # it, so that the settings below follow the server actually used.
        probe = session.client("s3", config=botocore.config.Config(region_name=session.region_name or "us-east-1"))
        resolved = probe.meta.endpoint_url
        endpoint = None if _is_aws(resolved) else resolved
    aws = _is_aws(endpoint)
    options: Dict[str, Any] = dict(
        region_name=session.region_name or "us-east-1",
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
    client = session.client("s3", endpoint_url=endpoint, config=botocore.config.Config(**options))
    return client, endpoint


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def describe_error(exc: BaseException, location: S3Location, endpoint: Optional[str]) -> str:
    """One line for a failed S3 call: what, where, and what to check (never a credential)."""
    code = _error_code(exc)
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


def list_prefix(client: Any, location: S3Location, out: BinaryIO, *, endpoint: Optional[str] = None) -> ListingStats:
    """Write one record per object below ``location`` to ``out``; return the counts.

    Records have the engine's format (``f\\tSIZE\\tMTIME_NS\\tPATH\\0``, PATH relative to the
    location, UTF-8).  The listing streams page by page (1,000 keys each); nothing but the
    counters stays in memory.  Folder markers (keys ending in ``/``) are folders, not files,
    as for rclone and the AWS CLI: they are counted with ``dirs`` and not copied.  A key that
    cannot be a file name (see :func:`key_problem`) is left out with a message naming it.
    Raises :class:`S3Error` when the location cannot be listed at all.
    """
    stats = ListingStats()
    paginator = client.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=location.bucket, Prefix=location.prefix)
    try:
        for page in pages:
            records = []
            for item in page.get("Contents", ()):
                rel = item["Key"][len(location.prefix):]
                if rel.endswith(_FOLDER_MARKER_SUFFIX) and not item.get("Size"):
                    stats.dirs += 1
                    continue
                problem = key_problem(rel)
                if problem is not None:
                    stats.refuse(f"{location}{rel}", f"the key {problem}")
                    continue
                size = int(item["Size"])
                mtime_ns = int(item["LastModified"].timestamp() * 1e9)
                records.append(b"f\t%d\t%d\t%s\0" % (size, mtime_ns, rel.encode("utf-8", "surrogateescape")))
                stats.add("f", size)
            out.write(b"".join(records))
    except Exception as exc:
        if type(exc).__module__.startswith(("botocore", "boto3")):
            raise S3Error(describe_error(exc, location, endpoint)) from None
        raise
    return stats
