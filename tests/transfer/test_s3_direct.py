"""The S3 worker's direct PUT/GET (taurus_tools/transfer/s3_direct.py) against both real servers.

The servers check every signature, so a wrong canonical request, a wrongly escaped key or a
missing signed header fails here.  What the direct path stores must be what boto3 reads
back (names, bytes, metadata), and anything but success must come back as False/None (the
worker then asks again through the client, which reports the error).
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os

import pytest
from helpers import HOSTILE_OBJECT_NAMES

from taurus_tools.transfer.s3 import S3Config, S3Location, list_prefix, make_client, object_mtime
from taurus_tools.transfer.s3_direct import DirectRequests, _parse_listing, _timestamp_ns, quote_key, usable

_count = itertools.count()

KEYS = [
    "plain",
    "sub dir/with space",
    "quote's \"double\"",
    "-leading dash",
    "#hash;semi?query&amp+plus=eq",
    "percent %41 %2F",
    "non-ascii ü ß 日本 \U0001f600",
    "tilde~ (paren) [bracket] {brace} !*@$,",
    "deep/a/b/c/d/e/leaf.txt",
]


@pytest.fixture
def env(s3_servers, monkeypatch):
    for name, value in s3_servers.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_servers.make_bucket(f"tt-direct-{os.getpid()}-{next(_count)}")
    client, endpoint = make_client(S3Config())
    return s3_servers, bucket, client, endpoint


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_put_and_get_round_trip_through_boto3(env):
    server, bucket, client, endpoint = env
    assert usable(endpoint)
    direct = DirectRequests(client, 4)
    for i, key in enumerate(KEYS):
        data = os.urandom(1000 + i)
        assert direct.put(bucket, key, data, md5_b64(data), {"mtime": f"1600000000.{i:09d}"}), key
        got = client.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == data, key
        assert object_mtime(got, stored_only=True) == 1_600_000_000_000_000_000 + i
        answer = direct.get(bucket, key)
        assert answer is not None, key
        head, blocks = answer
        assert b"".join(blocks) == data
        assert head["ContentLength"] == len(data) and object_mtime(head, stored_only=True) == object_mtime(got)
    listed = [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(listed) == sorted(KEYS)


def test_anything_but_success_is_false_or_none(env):
    server, bucket, client, endpoint = env
    direct = DirectRequests(client, 2)
    data = b"x" * 100
    assert not direct.put(bucket, "bad digest", data, md5_b64(b"other"), {})  # the server checks Content-MD5
    assert direct.get(bucket, "no such key") is None
    if server.name == "rclone":  # (SeaweedFS makes a missing bucket on the first PUT)
        assert not direct.put(f"{bucket}-missing", "k", data, md5_b64(data), {})
    # A wrong secret: refused (the server checks the signature), and nothing stored.
    wrong, _ = make_client(S3Config())
    wrong_direct = DirectRequests(wrong, 1)
    wrong_direct._credentials = lambda: type(  # type: ignore[method-assign]
        "Creds", (), {"access_key": server.key, "secret_key": "not-the-secret", "token": None}
    )()
    assert not wrong_direct.put(bucket, "unsigned", data, md5_b64(data), {})
    assert wrong_direct.get(bucket, "plain") is None
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    # The pool still works after those answers (a connection the server closed is replaced).
    assert direct.put(bucket, "after", data, md5_b64(data), {})


def test_a_closed_port_is_false_not_a_hang(env, monkeypatch):
    server, bucket, client, endpoint = env
    from slurm_cluster import _free_tcp_ports

    (port,) = _free_tcp_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    closed, _ = make_client(S3Config(connect_timeout_s=1, max_attempts=1))
    direct = DirectRequests(closed, 1)
    assert not direct.put(bucket, "k", b"x", md5_b64(b"x"), {})
    assert direct.get(bucket, "k") is None


@pytest.mark.parametrize(
    "endpoint, environ, expected",
    [
        ("http://127.0.0.1:9000", {}, True),
        ("https://s3.example.org", {}, True),
        (None, {}, False),  # AWS itself: the client's own addressing and checksums
        ("http://127.0.0.1:9000", {"HTTPS_PROXY": "http://proxy:3128"}, False),
        ("http://127.0.0.1:9000", {"http_proxy": "http://proxy:3128"}, False),
        ("http://127.0.0.1:9000/base/path", {}, False),
    ],
)
def test_usable(endpoint, environ, expected):
    assert usable(endpoint, environ) is expected


def test_quote_key_escapes_all_but_the_unreserved():
    assert quote_key("a b/c~d_e.f-g") == "a%20b/c~d_e.f-g"
    assert quote_key("ü?#&+=%") == "%C3%BC%3F%23%26%2B%3D%25"


def test_a_range_of_that_version_only(env):
    server, bucket, client, endpoint = env
    data = os.urandom(3 << 20)
    client.put_object(Bucket=bucket, Key="big one", Body=data)
    etag = client.head_object(Bucket=bucket, Key="big one")["ETag"]
    direct = DirectRequests(client, 2)
    for first, last in ((0, 99), (1 << 20, (2 << 20) - 1), (len(data) - 10, len(data) - 1)):
        answer = direct.get(bucket, "big one", first=first, last=last, etag=etag)
        assert answer is not None and b"".join(answer[1]) == data[first : last + 1]
    client.put_object(Bucket=bucket, Key="big one", Body=os.urandom(3 << 20))  # replaced
    assert direct.get(bucket, "big one", first=0, last=99, etag=etag) is None


# ------------------------------------------------------------------------------- listing
def _client_pages(client, bucket, prefix, max_keys):
    """What boto3 lists, as (key, size, LastModified ns) per page."""
    pages, kwargs = [], {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
    while True:
        reply = client.list_objects_v2(**kwargs)
        pages.append([
            (o["Key"], o["Size"], int(o["LastModified"].timestamp() * 1e9)) for o in reply.get("Contents", ())
        ])
        if not reply.get("IsTruncated"):
            return pages
        kwargs["ContinuationToken"] = reply["NextContinuationToken"]


def _direct_pages(direct, bucket, prefix, max_keys):
    pages, token = [], None
    while True:
        answer = direct.list_page(bucket, prefix, token, max_keys=max_keys)
        assert answer is not None
        page, token = answer
        pages.append(page)
        if token is None:
            return pages


def test_listing_pages_are_the_clients(env):
    """Keys XML cannot carry (a newline, control characters) come URL-encoded and decoded;
    the pages, sizes and times are exactly what boto3 lists."""
    server, bucket, client, endpoint = env
    keys = [f"p/{key}" for key in KEYS + HOSTILE_OBJECT_NAMES + ["control \x01\x1b\x7f chars", "plus+and space"]]
    keys += ["p-sibling/not below", "other"]
    for i, key in enumerate(keys):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * i)
    direct = DirectRequests(client, 1)
    for prefix, max_keys in (("p/", 5), ("p/", 1000), ("", 7), ("p/deep/", 1), ("nothing/", 10)):
        assert _direct_pages(direct, bucket, prefix, max_keys) == _client_pages(client, bucket, prefix, max_keys)
    listed = [key for page in _direct_pages(direct, bucket, "p/", 5) for key, _, _ in page]
    assert sorted(listed) == sorted(k for k in keys if k.startswith("p/"))


def test_a_listing_the_direct_path_cannot_get_comes_through_the_client(env):
    server, bucket, client, endpoint = env
    for key in ("a", "b/c", "new\nline"):
        client.put_object(Bucket=bucket, Key=key, Body=b"data")
    refused = DirectRequests(client, 1)
    refused._credentials = lambda: type(  # type: ignore[method-assign]
        "Creds", (), {"access_key": server.key, "secret_key": "not-the-secret", "token": None}
    )()
    assert refused.list_page(bucket, "") is None
    assert DirectRequests(client, 1).list_page(f"{bucket}-missing", "") is None
    with_client, through_refused = io.BytesIO(), io.BytesIO()
    list_prefix(client, S3Location(bucket, ""), with_client)
    stats = list_prefix(client, S3Location(bucket, ""), through_refused, direct=refused)
    assert through_refused.getvalue() == with_client.getvalue() and stats.files == 3


@pytest.mark.parametrize(
    "text",
    ["2026-12-03T13:05:09.000Z", "2026-12-03T13:05:09Z", "2026-12-03T13:05:09.123456789Z",
     "1999-02-28T23:59:59.999Z", "2026-12-03T13:05:09.5+00:00"],
)
def test_times_are_botocores_to_the_nanosecond(text):
    from botocore.utils import parse_timestamp

    assert _timestamp_ns(text) == int(parse_timestamp(text).timestamp() * 1e9)


def test_an_answer_that_is_no_listing_is_an_error():
    with pytest.raises(ValueError):
        _parse_listing(b"<Error><Code>AccessDenied</Code></Error>")
    with pytest.raises(ValueError):  # truncated, but no way to the next page
        _parse_listing(b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>")
    assert _parse_listing(b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>") == ([], None)
