"""PUT and GET of single objects, and listing pages, without botocore's per-call machinery.

On a small object botocore spends about 2 ms of CPU per call (events, validation,
serialisation, parsing), which on a node's few cores is most of an upload of 64 KiB
objects; on a listing it builds a dict and a datetime per key, 0.1 ms each.
:class:`DirectRequests` sends the requests the S3 worker makes per small object, and the
driver's listing pages, itself: signed with AWS Signature Version 4 (with the credentials
boto3 resolved, re-read for each request so that refreshed ones are used), on one urllib3
connection pool sized for the worker's threads, and spends about a third of that.

It answers only the happy path.  Any other answer (an error status, a redirect, a broken
connection) returns None, and the worker repeats the request through the boto3 client,
which retries, reports and classifies errors as usual: the fast path never decides that
something failed.  It is used only for path-style endpoints that are not AWS (on AWS the
client's own addressing and checksums apply), and not where a proxy is configured.

Nothing here logs, and a signature never leaves the request's headers.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import hashlib
import hmac
import os
import re
import urllib.parse
from email.utils import parsedate_to_datetime
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple
from xml.etree import ElementTree

__all__ = ["DirectRequests", "direct_requests", "usable"]

#: An object of a listing page: key, size, LastModified as nanoseconds since the epoch.
ListedObject = Tuple[str, int, int]

_UNSIGNED = "UNSIGNED-PAYLOAD"
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def usable(endpoint: Optional[str], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the direct path may talk to ``endpoint`` (a non-AWS server, no proxy)."""
    if not endpoint or any(environ.get(name) for name in _PROXY_VARIABLES):
        return False
    parts = urllib.parse.urlsplit(endpoint)
    return parts.scheme in ("http", "https") and not (parts.path.strip("/") or parts.query)


def direct_requests(client: Any, endpoint: Optional[str], threads: int) -> Optional["DirectRequests"]:
    """A :class:`DirectRequests` for ``client`` where the direct path may be used, else None.

    Not for AWS, behind a proxy, or when ``TAURUS_TOOLS_S3_DIRECT=0`` (everything then goes
    through the boto3 client).
    """
    if not usable(endpoint) or os.environ.get("TAURUS_TOOLS_S3_DIRECT", "1") == "0":
        return None
    return DirectRequests(client, threads)


def quote_key(key: str) -> str:
    """A key as S3 wants it in the path: UTF-8, every byte but ``A-Za-z0-9-._~/`` escaped."""
    return urllib.parse.quote(key.encode("utf-8", "surrogateescape"), safe="/~")


class DirectRequests:
    """SigV4-signed single-request PUT/GET on one connection pool (see the module's docstring).

    Parameters
    ----------
    client : botocore S3 client
        Made by :func:`taurus_tools.transfer.s3.make_client`; its endpoint, region, timeouts
        and credentials are used.
    threads : int
        Connections to keep (one per worker thread).
    """

    def __init__(self, client: Any, threads: int) -> None:
        import urllib3

        self._client = client
        self.endpoint = client.meta.endpoint_url.rstrip("/")
        self.region = client.meta.region_name or "us-east-1"
        parts = urllib.parse.urlsplit(self.endpoint)
        self.host = parts.netloc
        config = client.meta.config
        timeout = urllib3.Timeout(connect=config.connect_timeout, read=config.read_timeout)
        # A connection the server closed after an earlier answer is tried again (PUT and GET
        # are idempotent); nothing else is: the client does the real retries.
        retries = urllib3.Retry(total=2, redirect=0, status=0, other=0, raise_on_redirect=False, raise_on_status=False)
        options: Dict[str, Any] = dict(maxsize=threads, block=False, timeout=timeout, retries=retries)
        if parts.scheme == "https":
            verify = client._endpoint.http_session._verify  # the CA bundle botocore uses
            options.update(cert_reqs="CERT_REQUIRED", ca_certs=verify if isinstance(verify, str) else None)
        self._pool = urllib3.connectionpool.connection_from_url(self.endpoint, **options)
        self._keys: Dict[Tuple[str, str], bytes] = {}

    # ------------------------------------------------------------------ signing
    def _credentials(self) -> Any:
        return self._client._request_signer._credentials.get_frozen_credentials()

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._keys.get((secret, day))
        if cached is None:
            key = ("AWS4" + secret).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {(secret, day): key}  # one day, one secret at a time
            cached = key
        return cached

    def _signed(
        self, method: str, path: str, headers: Dict[str, str], query: str = ""
    ) -> Dict[str, str]:
        creds = self._credentials()
        now = _dt.datetime.now(_dt.timezone.utc)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers = dict(headers)
        headers.update({"host": self.host, "x-amz-date": stamp, "x-amz-content-sha256": _UNSIGNED})
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        names = sorted(name.lower() for name in headers)
        lowered = {name.lower(): value for name, value in headers.items()}
        signed_names = ";".join(names)
        canonical = "\n".join(
            [method, path, query, "".join(f"{n}:{lowered[n].strip()}\n" for n in names), signed_names, _UNSIGNED]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(creds.secret_key, day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        del headers["host"]  # urllib3 sends it
        return headers

    # ------------------------------------------------------------------ requests
    def put(self, bucket: str, key: str, body: bytes, content_md5: str, metadata: Mapping[str, str]) -> bool:
        """PUT one object; True when the server stored it (200), False for anything else."""
        path = f"/{bucket}/{quote_key(key)}"
        headers = {"Content-MD5": content_md5, "Content-Length": str(len(body))}
        headers.update({f"x-amz-meta-{name}": value for name, value in metadata.items()})
        try:
            response = self._pool.urlopen("PUT", path, body=body, headers=self._signed("PUT", path, headers))
            response.drain_conn()
            return response.status == 200  # type: ignore[no-any-return]
        except Exception:
            return False

    def get(
        self, bucket: str, key: str, *, first: Optional[int] = None, last: Optional[int] = None, etag: str = ""
    ) -> Optional[Tuple[Dict[str, Any], Iterator[bytes]]]:
        """GET one object, or its bytes ``first`` to ``last`` (inclusive) if that version
        (``etag``) is still there: its headers (as boto3 names them: ContentLength, ETag,
        LastModified, Metadata, ServerSideEncryption) and its body in blocks; None unless the
        server sent exactly that (200, or 206 for a range)."""
        path = f"/{bucket}/{quote_key(key)}"
        headers: Dict[str, str] = {}
        if first is not None:
            headers["Range"] = f"bytes={first}-{last}"
        if etag:
            headers["If-Match"] = etag
        try:
            response = self._pool.urlopen(
                "GET", path, headers=self._signed("GET", path, headers), preload_content=False
            )
        except Exception:
            return None
        if first is None:
            wrong = response.status != 200
        else:  # 206; some servers (rclone serve s3) answer a range with 200 and just its bytes
            length = response.headers.get("Content-Length", "")
            wrong = response.status not in (200, 206) or length != str(last - first + 1)  # type: ignore[operator]
        if wrong or (etag and response.headers.get("ETag") != etag):
            response.drain_conn()
            response.release_conn()
            return None
        raw = response.headers
        try:
            head: Dict[str, Any] = {
                "ContentLength": int(raw["Content-Length"]),
                "ETag": raw.get("ETag", ""),
                "LastModified": parsedate_to_datetime(raw["Last-Modified"]),
                "Metadata": {
                    name[len("x-amz-meta-"):]: value
                    for name, value in raw.items()
                    if name.lower().startswith("x-amz-meta-")
                },
            }
        except (KeyError, ValueError, TypeError):
            response.drain_conn()
            response.release_conn()
            return None
        if raw.get("x-amz-server-side-encryption"):
            head["ServerSideEncryption"] = raw["x-amz-server-side-encryption"]
        return head, _blocks(response)

    def list_page(
        self, bucket: str, prefix: str, token: Optional[str] = None, *, max_keys: int = 1000
    ) -> Optional[Tuple[List[ListedObject], Optional[str]]]:
        """One page (up to ``max_keys``) of ``list_objects_v2`` below ``prefix``: its objects
        and the token of the next page (None after the last); None for anything but a
        200 answer that parses (the caller then asks the client).

        Keys come URL-encoded (``encoding-type=url``: XML cannot carry every byte a key may
        hold) and are decoded as botocore does; LastModified gives the same nanoseconds as
        ``int(boto3's datetime.timestamp() * 1e9)``, so both paths write the same records.
        """
        params = {"list-type": "2", "prefix": prefix, "encoding-type": "url", "max-keys": str(max_keys)}
        if token is not None:
            params["continuation-token"] = token
        query = "&".join(
            f"{urllib.parse.quote(name, safe='-_.~')}={urllib.parse.quote(value, safe='-_.~')}"
            for name, value in sorted(params.items())
        )
        path = f"/{bucket}"
        try:
            response = self._pool.urlopen("GET", f"{path}?{query}", headers=self._signed("GET", path, {}, query))
            if response.status != 200:
                return None
            return _parse_listing(response.data)
        except Exception:  # broken connection, or an answer that is no listing
            return None


#: LastModified as S3 writes it: 2026-12-03T13:05:09.123Z (the fraction optional, any length).
_ISO_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:Z|\+00:00)$")


def _timestamp_ns(text: str) -> int:
    """Nanoseconds of an S3 time, as ``int(datetime.timestamp() * 1e9)`` of botocore's parse
    (microseconds, further digits cut off)."""
    match = _ISO_TIME.match(text.strip())
    if match is None:
        raise ValueError(f"not an S3 time: {text!r}")
    *fields, fraction = match.groups()
    seconds = calendar.timegm(tuple(int(f) for f in fields) + (0, 0, 0))  # type: ignore[arg-type]
    micro = int((fraction or "0").ljust(6, "0")[:6])
    return int((seconds * 10**6 + micro) / 10**6 * 1e9)  # timedelta.total_seconds(), as datetime.timestamp()


def _parse_listing(body: bytes) -> Tuple[List[ListedObject], Optional[str]]:
    root = ElementTree.fromstring(body)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if root.tag != ns + "ListBucketResult":
        raise ValueError("not a listing")
    contents, key_tag, size_tag, time_tag = ns + "Contents", ns + "Key", ns + "Size", ns + "LastModified"
    fields: Dict[str, str] = {}
    objects: List[Tuple[str, str, str]] = []
    for child in root:
        if child.tag == contents:
            key = size = when = None
            for element in child:
                tag = element.tag
                if tag == key_tag:
                    key = element.text or ""
                elif tag == size_tag:
                    size = element.text
                elif tag == time_tag:
                    when = element.text
            if key is None or size is None or when is None:
                raise ValueError("an object without its key, size or time")
            objects.append((key, size, when))
        else:
            fields[child.tag[len(ns):]] = child.text or ""
    encoded = fields.get("EncodingType") == "url"
    times: Dict[str, int] = {}  # a listing's objects often share their second
    listed = []
    for key, size, when in objects:
        if encoded and ("%" in key or "+" in key):
            key = urllib.parse.unquote_plus(key)
        ns_time = times.get(when)
        if ns_time is None:
            ns_time = times[when] = _timestamp_ns(when)
        listed.append((key, int(size), ns_time))
    truncated = fields.get("IsTruncated", "false").lower() == "true"
    token = fields.get("NextContinuationToken") if truncated else None
    if truncated and not token:
        raise ValueError("a truncated listing without a continuation token")
    return listed, token


def _blocks(response: Any, size: int = 1 << 20) -> Iterator[bytes]:
    try:
        while True:
            block = response.read(size)
            if not block:
                return
            yield block
    finally:
        response.release_conn()
