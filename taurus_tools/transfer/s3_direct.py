"""PUT and GET of single objects, and listing pages, without botocore's per-call machinery.

On a small object botocore spends about 2 ms of CPU per call (events, validation,
serialisation, parsing), which on a node's few cores is most of an upload of 64 KiB
objects; on a listing it builds a dict and a datetime per key, 0.1 ms each.
:class:`DirectRequests` sends the requests the S3 worker makes per small object, and the
driver's listing pages, itself: signed with AWS Signature Version 4 (with the credentials
boto3 resolved, re-read for each request so that refreshed ones are used), on one
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
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union
from xml.etree import ElementTree

from .s3_http import Pool, Response

__all__ = ["DirectRequests", "MISSING", "direct_requests", "usable"]

#: An object of a listing page: key, size, LastModified as nanoseconds since the epoch.
ListedObject = Tuple[str, int, int]

_UNSIGNED = "UNSIGNED-PAYLOAD"
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


class Missing:
    """What :meth:`DirectRequests.head` answers for an object the server says is not there."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()


def usable(endpoint: Optional[str], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the direct path may talk to ``endpoint`` (a non-AWS server, no proxy)."""
    if not endpoint or any(environ.get(name) for name in _PROXY_VARIABLES):
        return False
    parts = urllib.parse.urlsplit(endpoint)
    return parts.scheme in ("http", "https") and not (parts.path.strip("/") or parts.query)


def direct_requests(client: Any, endpoint: Optional[str], threads: int) -> Optional["DirectRequests"]:
    """A :class:`DirectRequests` to the server of a botocore ``client`` where the direct path
    may be used, else None (AWS, a proxy, ``TAURUS_TOOLS_S3_DIRECT=0``: everything then goes
    through the client).  :meth:`taurus_tools.transfer.s3_access.S3Access.direct` makes one
    without a client."""
    if not usable(endpoint) or os.environ.get("TAURUS_TOOLS_S3_DIRECT", "1") == "0":
        return None
    config = client.meta.config
    verify = client._endpoint.http_session._verify  # the CA bundle botocore uses
    return DirectRequests(
        client.meta.endpoint_url,
        client.meta.region_name or "us-east-1",
        lambda: client._request_signer._credentials.get_frozen_credentials(),
        threads=threads,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        ca_certs=verify if isinstance(verify, str) else None,
    )


def quote_key(key: str) -> str:
    """A key as S3 wants it in the path: UTF-8, every byte but ``A-Za-z0-9-._~/`` escaped."""
    return urllib.parse.quote(key.encode("utf-8", "surrogateescape"), safe="/~")


class DirectRequests:
    """SigV4-signed single-request PUT/GET on one connection pool (see the module's docstring).

    Parameters
    ----------
    endpoint : str
        ``http(s)://HOST[:PORT]`` of the server (path-style addressing).
    region : str
        The region requests are signed for.
    credentials : callable
        Returns the credentials to sign with (``access_key``, ``secret_key``, ``token``),
        called for each request so that refreshed ones are used.
    threads : int
        Connections to keep (one per worker thread).
    connect_timeout, read_timeout : float
        Seconds, per request.
    ca_certs : str, optional
        The CA bundle to verify an https server with.
    """

    def __init__(
        self,
        endpoint: str,
        region: str,
        credentials: Callable[[], Any],
        *,
        threads: int,
        connect_timeout: float,
        read_timeout: float,
        ca_certs: Optional[str] = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self._credentials = credentials
        self.host = urllib.parse.urlsplit(self.endpoint).netloc
        self._pool = Pool(
            self.endpoint,
            maxsize=threads,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            ca_certs=ca_certs,
        )
        self._keys: Dict[Tuple[str, str], bytes] = {}

    def interrupt(self) -> None:
        """Break off the requests in flight (they fail in their threads; later ones go on)."""
        self._pool.interrupt()

    def close(self) -> None:
        """Close the idle connections."""
        self._pool.close()

    # ------------------------------------------------------------------ signing
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
        del headers["host"]  # the pool sends it
        return headers

    # ------------------------------------------------------------------ requests
    def put(self, bucket: str, key: str, body: bytes, content_md5: str, metadata: Mapping[str, str]) -> bool:
        """PUT one object; True when the server stored it (200), False for anything else."""
        path = f"/{bucket}/{quote_key(key)}"
        headers = {"Content-MD5": content_md5, "Content-Length": str(len(body))}
        headers.update({f"x-amz-meta-{name}": value for name, value in metadata.items()})
        try:
            signed = self._signed("PUT", path, headers)
            response = self._pool.request("PUT", path, signed, body)
            response.discard()
            return response.status == 200
        except Exception:
            return False

    def get(
        self, bucket: str, key: str, *, first: Optional[int] = None, last: Optional[int] = None, etag: str = ""
    ) -> "Optional[Tuple[Dict[str, Any], Response]]":
        """GET one object, or its bytes ``first`` to ``last`` (inclusive) if that version
        (``etag``) is still there: its headers (as boto3 names them: ContentLength, ETag,
        LastModified, Metadata, ServerSideEncryption; for a range also ObjectSize, the whole
        object's size from Content-Range, None where the server does not say) and the
        response, its body to read (``blocks()``, ``write_to(fd, offset)``); None unless the
        server sent exactly that (200, or 206 for a range).  A body that breaks off raises
        :class:`~taurus_tools.transfer.s3_http.HTTPFailure` as it is read."""
        path = f"/{bucket}/{quote_key(key)}"
        headers: Dict[str, str] = {}
        if first is not None:
            headers["Range"] = f"bytes={first}-{last}"
        if etag:
            headers["If-Match"] = etag
        try:
            response = self._pool.request("GET", path, self._signed("GET", path, headers))
        except Exception:
            return None
        if first is None:
            wrong = response.status != 200
        else:  # 206; some servers (rclone serve s3) answer a range with 200 and just its bytes
            length = response.headers.get("content-length", "")
            wrong = response.status not in (200, 206) or length != str(last - first + 1)  # type: ignore[operator]
        head = None if wrong or (etag and response.headers.get("etag") != etag) else _head_of(response.headers)
        if head is None:
            response.discard()
            return None
        if first is not None:
            total = response.headers.get("content-range", "").rpartition("/")[2]
            head["ObjectSize"] = int(total) if total.isdigit() else None
        return head, response

    def head(self, bucket: str, key: str) -> "Optional[Dict[str, Any] | Missing]":
        """HEAD one object: its headers as :meth:`get` gives them, :data:`MISSING` when the
        server says there is no such object (404), None for any other answer."""
        path = f"/{bucket}/{quote_key(key)}"
        try:
            response = self._pool.request("HEAD", path, self._signed("HEAD", path, {}))
            response.discard()
        except Exception:
            return None
        if response.status == 404:
            return MISSING
        return _head_of(response.headers) if response.status == 200 else None

    # ------------------------------------------------------------------ multipart uploads
    def _request(
        self,
        method: str,
        bucket: str,
        key: str,
        params: Mapping[str, str],
        headers: Dict[str, str],
        body: "Union[bytes, memoryview]" = b"",
    ) -> Any:
        """One signed request with a query; the response (its body unread), None if none came."""
        path, query = f"/{bucket}/{quote_key(key)}", _query(params)
        try:
            return self._pool.request(method, f"{path}?{query}", self._signed(method, path, headers, query), body)
        except Exception:
            return None

    def _answer(self, response: Any, status: int, xml: bool = False) -> "Optional[ElementTree.Element | bool]":
        """True (with ``xml``: the root of its XML body) for a response with ``status``; None otherwise."""
        if response is None:
            return None
        try:
            if response.status != status:
                response.discard()
                return None
            if not xml:
                response.discard()
                return True
            return _xml_root(response.read())
        except Exception:
            return None

    def create_multipart(self, bucket: str, key: str, metadata: Mapping[str, str]) -> Optional[str]:
        """Start a multipart upload with ``metadata``; its upload id, None if the server did not."""
        headers = {f"x-amz-meta-{name}": value for name, value in metadata.items()}
        response = self._request("POST", bucket, key, {"uploads": ""}, headers)
        root = self._answer(response, 200, xml=True)
        upload_id = _child_text(root, "UploadId") if isinstance(root, ElementTree.Element) else None
        return upload_id or None

    def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: "Union[bytes, memoryview]"
    ) -> Optional[str]:
        """Send part ``number`` (from 1); its ETag, None if the server did not take it."""
        params = {"partNumber": str(number), "uploadId": upload_id}
        response = self._request("PUT", bucket, key, params, {"Content-Length": str(len(body))}, body)
        etag = response.headers.get("etag") if response is not None else None
        return etag if self._answer(response, 200) and etag else None

    def complete_multipart(self, bucket: str, key: str, upload_id: str, etags: List[str]) -> bool:
        """Put the parts (ETags in order, numbered from 1) together; True when the object is there."""
        parts = "".join(
            f"<Part><PartNumber>{number}</PartNumber><ETag>{_xml_escape(etag)}</ETag></Part>"
            for number, etag in enumerate(etags, 1)
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        headers = {"Content-Length": str(len(body)), "Content-Type": "application/xml"}
        response = self._request("POST", bucket, key, {"uploadId": upload_id}, headers, body)
        return self._answer(response, 200, xml=True) is not None

    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> bool:
        """Abort an upload; True when the server says it is gone (204)."""
        return self._answer(self._request("DELETE", bucket, key, {"uploadId": upload_id}, {}), 204) is True

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
        body = self.list_body(bucket, prefix, token, max_keys=max_keys)
        if body is None:
            return None
        try:
            return parse_listing(body)
        except Exception:  # an answer that is no listing
            return None

    def list_body(
        self, bucket: str, prefix: str, token: Optional[str] = None, *, max_keys: int = 1000
    ) -> Optional[bytes]:
        """The XML of one listing page (see :meth:`list_page`), None for anything but a 200 answer."""
        params = {"list-type": "2", "prefix": prefix, "encoding-type": "url", "max-keys": str(max_keys)}
        if token is not None:
            params["continuation-token"] = token
        query = _query(params)
        path = f"/{bucket}"
        try:
            response = self._pool.request("GET", f"{path}?{query}", self._signed("GET", path, {}, query))
            if response.status != 200:
                response.discard()
                return None
            return response.read()
        except Exception:  # broken connection
            return None


_NEXT_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")


def next_token_of(body: bytes) -> Optional[str]:
    """The continuation token of a listing page, found without parsing the page (so that the
    next page can be asked for while this one is parsed); None if there is none.  A guess:
    :func:`_parse_listing`'s token is the one that counts."""
    if b"<IsTruncated>true</IsTruncated>" not in body:
        return None
    found = _NEXT_TOKEN.search(body)
    return _xml_unescape(found.group(1).decode("utf-8")) if found else None


def _xml_escape(text: str) -> str:
    """``&``, ``<``, ``>`` as XML text needs them (xml.sax.saxutils's, without importing
    urllib.request and http.client with it: 20 ms of every worker's start)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml_unescape(text: str) -> str:
    """The text of XML character data with the predefined entities resolved."""
    if "&" not in text:
        return text
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&amp;", "&")):
        text = text.replace(entity, char)
    return text


def _query(params: Mapping[str, str]) -> str:
    """A canonical query string: names sorted, names and values escaped as SigV4 wants."""
    return "&".join(
        f"{urllib.parse.quote(name, safe='-_.~')}={urllib.parse.quote(value, safe='-_.~')}"
        for name, value in sorted(params.items())
    )


def _xml_root(body: bytes) -> Optional[ElementTree.Element]:
    """The root of an S3 XML answer unless it is an Error (S3 may answer 200 with one;
    the roots of good answers vary: rclone's server says InitiateMultipartUpload where
    AWS says InitiateMultipartUploadResult)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    return None if root.tag.rpartition("}")[2] == "Error" else root


def _child_text(root: ElementTree.Element, tag: str) -> Optional[str]:
    for child in root:
        if child.tag.rpartition("}")[2] == tag:
            return child.text or ""
    return None


def _head_of(raw: Mapping[str, str]) -> Optional[Dict[str, Any]]:
    """An object's response headers (names in lower case) as boto3 names them
    (ContentLength, ETag, LastModified, Metadata, ServerSideEncryption); None if they are
    not those of an object."""
    try:
        head: Dict[str, Any] = {
            "ContentLength": int(raw["content-length"]),
            "ETag": raw.get("etag", ""),
            "LastModified": _http_date(raw["last-modified"]),
            "Metadata": {name[11:]: value for name, value in raw.items() if name.startswith("x-amz-meta-")},
        }
    except (KeyError, ValueError, TypeError):
        return None
    if raw.get("x-amz-server-side-encryption"):
        head["ServerSideEncryption"] = raw["x-amz-server-side-encryption"]
    return head


#: An HTTP date as servers send it (RFC 9110's IMF-fixdate): ``Wed, 03 Dec 2026 13:05:09 GMT``.
_HTTP_DATE = re.compile(r"[A-Za-z]{3}, (\d\d) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT$")
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


def _http_date(text: str) -> _dt.datetime:
    """An HTTP date as the aware datetime ``email.utils.parsedate_to_datetime`` gives (UTC),
    without importing the email package in every worker; the older forms through it."""
    match = _HTTP_DATE.match(text.strip())
    month = _MONTHS.get(match.group(2)) if match else None
    if match is None or month is None:
        from email.utils import parsedate_to_datetime

        return parsedate_to_datetime(text)
    day, _, year, hour, minute, second = match.groups()
    return _dt.datetime(int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=_dt.timezone.utc)


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


def parse_listing(body: bytes) -> Tuple[List[ListedObject], Optional[str]]:
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
