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
from taurus_tools.transfer.s3_direct import (
    _http_date,
    MISSING,
    DirectRequests,
    next_token_of,
    parse_listing,
    _timestamp_ns,
    direct_requests,
    quote_key,
    usable,
)

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


def _direct(client, threads: int) -> DirectRequests:
    """The direct path to ``client``'s server."""
    direct = direct_requests(client, client.meta.endpoint_url, threads)
    assert direct is not None
    return direct


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def test_put_and_get_round_trip_through_boto3(env):
    server, bucket, client, endpoint = env
    assert usable(endpoint)
    direct = _direct(client, 4)
    for i, key in enumerate(KEYS):
        data = os.urandom(1000 + i)
        assert direct.put(bucket, key, data, md5_b64(data), {"mtime": f"1600000000.{i:09d}"}), key
        got = client.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == data, key
        assert object_mtime(got, stored_only=True) == 1_600_000_000_000_000_000 + i
        answer = direct.get(bucket, key)
        assert answer is not None, key
        head, response = answer
        assert response.read() == data
        assert head["ContentLength"] == len(data) and object_mtime(head, stored_only=True) == object_mtime(got)
    listed = [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(listed) == sorted(KEYS)


def test_anything_but_success_is_false_or_none(env):
    server, bucket, client, endpoint = env
    direct = _direct(client, 2)
    data = b"x" * 100
    assert not direct.put(bucket, "bad digest", data, md5_b64(b"other"), {})  # the server checks Content-MD5
    assert direct.get(bucket, "no such key") is None
    if server.name == "rclone":  # (SeaweedFS makes a missing bucket on the first PUT)
        assert not direct.put(f"{bucket}-missing", "k", data, md5_b64(data), {})
    # A wrong secret: refused (the server checks the signature), and nothing stored.
    wrong, _ = make_client(S3Config())
    wrong_direct = _direct(wrong, 1)
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
    direct = _direct(closed, 1)
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
    direct = _direct(client, 2)
    for first, last in ((0, 99), (1 << 20, (2 << 20) - 1), (len(data) - 10, len(data) - 1)):
        answer = direct.get(bucket, "big one", first=first, last=last, etag=etag)
        assert answer is not None and answer[1].read() == data[first : last + 1]
        assert (answer[0]["ContentLength"], answer[0]["ObjectSize"]) == (last - first + 1, len(data))
    client.put_object(Bucket=bucket, Key="big one", Body=os.urandom(3 << 20))  # replaced
    assert direct.get(bucket, "big one", first=0, last=99, etag=etag) is None


# ------------------------------------------------------------------------------- multipart
def _uploads(client, bucket):
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


@pytest.mark.parametrize("key", ["big one", "-dash #hash;semi ü/deep\tkey"])
def test_a_multipart_upload_is_what_boto3_reads_back(env, key):
    server, bucket, client, endpoint = env
    direct = _direct(client, 2)
    parts = [os.urandom(5 << 20), os.urandom(5 << 20), os.urandom(1234)]
    upload_id = direct.create_multipart(bucket, key, {"mtime": "1600000000.5"})
    assert upload_id
    etags = [direct.upload_part(bucket, key, upload_id, n, data) for n, data in enumerate(parts, 1)]
    assert all(etags)
    assert direct.complete_multipart(bucket, key, upload_id, etags)  # type: ignore[arg-type]
    got = client.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == b"".join(parts)
    assert object_mtime(got, stored_only=True) == 1_600_000_000_500_000_000
    assert _uploads(client, bucket) == []


def test_a_failed_or_aborted_multipart_upload_leaves_nothing(env):
    server, bucket, client, endpoint = env
    direct = _direct(client, 2)
    upload_id = direct.create_multipart(bucket, "k", {})
    assert upload_id
    etag = direct.upload_part(bucket, "k", upload_id, 1, os.urandom(5 << 20))
    assert etag
    assert direct.upload_part(bucket, "k", "no-such-upload", 1, b"x") is None
    assert [u["UploadId"] for u in _uploads(client, bucket)] == [upload_id]
    assert direct.abort_multipart(bucket, "k", upload_id)
    assert _uploads(client, bucket) == []
    assert not direct.abort_multipart(bucket, "k", "no-such-upload")
    # A part list the server refuses: not complete (rclone's server then drops the
    # upload itself, SeaweedFS keeps it until aborted).
    upload_id = direct.create_multipart(bucket, "k", {})
    assert upload_id and direct.upload_part(bucket, "k", upload_id, 1, os.urandom(5 << 20))
    assert not direct.complete_multipart(bucket, "k", upload_id, ['"0123456789abcdef0123456789abcdef"'])
    direct.abort_multipart(bucket, "k", upload_id)
    assert _uploads(client, bucket) == []
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_the_uploader_sends_large_files_in_parts_and_falls_back_whole(env, tmp_path):
    """FileUploader: a large file through the direct path's parts; when a part fails there,
    that upload is aborted and the transfer manager sends the file: the object is whole
    and no multipart upload is left either way."""
    from taurus_tools.transfer.s3_upload import MULTIPART_CHUNK, FileUploader

    server, bucket, client, endpoint = env
    path = tmp_path / "big file"
    path.write_bytes(os.urandom(2 * MULTIPART_CHUNK + 4321))
    direct = _direct(client, 4)
    sent = []
    real_part = direct.upload_part
    direct.upload_part = lambda *a: sent.append(a[3]) or real_part(*a)  # type: ignore[method-assign]
    uploader = FileUploader(client, bucket, threads=4, direct=direct)
    with open(path, "rb") as fh:
        uploader.upload(fh, os.fstat(fh.fileno()), "through parts", checksum=True)
    assert sorted(sent) == [1, 2, 3]
    assert client.get_object(Bucket=bucket, Key="through parts")["Body"].read() == path.read_bytes()
    direct.upload_part = lambda *a: None if a[3] == 2 else real_part(*a)  # type: ignore[method-assign]
    with open(path, "rb") as fh:
        uploader.upload(fh, os.fstat(fh.fileno()), "fell back", checksum=False)
    uploader.shutdown()
    assert client.get_object(Bucket=bucket, Key="fell back")["Body"].read() == path.read_bytes()
    assert _uploads(client, bucket) == []


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
    direct = _direct(client, 1)
    for prefix, max_keys in (("p/", 5), ("p/", 1000), ("", 7), ("p/deep/", 1), ("nothing/", 10)):
        assert _direct_pages(direct, bucket, prefix, max_keys) == _client_pages(client, bucket, prefix, max_keys)
    listed = [key for page in _direct_pages(direct, bucket, "p/", 5) for key, _, _ in page]
    assert sorted(listed) == sorted(k for k in keys if k.startswith("p/"))


def test_a_listing_the_direct_path_cannot_get_comes_through_the_client(env):
    server, bucket, client, endpoint = env
    for key in ("a", "b/c", "new\nline"):
        client.put_object(Bucket=bucket, Key=key, Body=b"data")
    refused = _direct(client, 1)
    refused._credentials = lambda: type(  # type: ignore[method-assign]
        "Creds", (), {"access_key": server.key, "secret_key": "not-the-secret", "token": None}
    )()
    assert refused.list_page(bucket, "") is None
    assert _direct(client, 1).list_page(f"{bucket}-missing", "") is None
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
        parse_listing(b"<Error><Code>AccessDenied</Code></Error>")
    with pytest.raises(ValueError):  # truncated, but no way to the next page
        parse_listing(b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>")
    assert parse_listing(b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>") == ([], None)


def test_head_answers_as_the_client_does(env):
    """HEAD through the direct path: the fields the worker reads equal head_object's; a
    missing key is MISSING (not an error); a refused request is None (the client decides)."""
    server, bucket, client, endpoint = env
    direct = _direct(client, 2)
    for i, key in enumerate(KEYS + HOSTILE_OBJECT_NAMES):
        client.put_object(Bucket=bucket, Key=key, Body=b"y" * (i + 1), Metadata={"mtime": f"1700000000.{i:09d}"})
        head = direct.head(bucket, key)
        assert isinstance(head, dict), key
        expected = client.head_object(Bucket=bucket, Key=key)
        for name in ("ContentLength", "ETag", "LastModified"):
            assert head[name] == expected[name], (key, name)
        assert object_mtime(head) == object_mtime(expected) == 1_700_000_000_000_000_000 + i
    assert direct.head(bucket, "no such key") is MISSING
    refused = _direct(client, 1)
    refused._credentials = lambda: type(  # type: ignore[method-assign]
        "Creds", (), {"access_key": server.key, "secret_key": "not-the-secret", "token": None}
    )()
    assert refused.head(bucket, KEYS[0]) is None


def test_access_without_botocore_where_the_environment_says_it_all(s3_server, tmp_path):
    """Key pair, endpoint and region in the environment: S3Access resolves them without
    importing botocore, and the direct path lists, puts, heads and gets with them (a
    worker whose requests all succeed never makes a client)."""
    import subprocess
    import sys

    bucket = s3_server.make_bucket(f"tt-access-{os.getpid()}-{next(_count)}")
    script = f"""
import sys
from taurus_tools.transfer.s3_access import S3Access, S3Config
from taurus_tools.transfer.s3_direct import MISSING
access = S3Access(S3Config())
direct = access.direct(2)
assert direct is not None
assert direct.put({bucket!r}, "k e y", b"data", {md5_b64(b"data")!r}, {{"mtime": "1.5"}})
assert direct.head({bucket!r}, "k e y")["ContentLength"] == 4
assert direct.head({bucket!r}, "missing") is MISSING
head, response = direct.get({bucket!r}, "k e y")
assert response.read() == b"data"
assert [o[0] for o in direct.list_page({bucket!r}, "")[0]] == ["k e y"]
print(access.endpoint, access.region, sorted(m for m in sys.modules if m.startswith("botocore")))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3_server.env())
    env["AWS_DEFAULT_REGION"] = "eu-test-1"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [s3_server.endpoint_url, "eu-test-1", "[]"]
    from taurus_tools.transfer.s3_access import _KeyPair

    assert "tt-test-secret" not in repr(_KeyPair("a", "tt-test-secret", None))


@pytest.mark.parametrize(
    "environ",
    [
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9001"},
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9001", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9002"},
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9001", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"},
        {},
        {"AWS_DEFAULT_REGION": "eu-west-3", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9002"},
    ],
)
def test_access_resolves_endpoint_and_region_as_botocore(environ, monkeypatch, tmp_path):
    """The shortcut's answers are botocore's own, on each environment case."""
    import botocore.session

    from taurus_tools.transfer.s3_access import S3Access

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    access = S3Access(S3Config())
    session = botocore.session.Session()
    region = session.get_config_variable("region") or "us-east-1"
    theirs = session.create_client("s3", region_name=region).meta.endpoint_url
    assert access.region == region
    assert (access.endpoint or "aws") == (theirs if "amazonaws.com" not in theirs else "aws")
    creds = access.credentials()
    assert (creds.access_key, creds.secret_key) == ("k", "s")


def test_the_next_token_is_found_without_parsing():
    page = (b"<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a</Key></Contents>"
            b"<NextContinuationToken>1/a+b=&amp;c</NextContinuationToken></ListBucketResult>")
    bare = page.replace(b"<Contents><Key>a</Key></Contents>", b"")
    assert next_token_of(page) == "1/a+b=&c" == parse_listing(bare)[1]
    assert next_token_of(page.replace(b"true", b"false")) is None
    from taurus_tools.transfer.s3_direct import _xml_escape, _xml_unescape

    assert _xml_escape('"e&t<a>g"') == '"e&amp;t&lt;a&gt;g"'
    assert _xml_unescape("&lt;&amp;lt;&gt;&quot;&apos;") == "<&lt;>\"'"


@pytest.mark.parametrize("guess", ["right", "wrong", "none"])
def test_a_listing_asks_ahead_and_survives_a_wrong_guess(env, monkeypatch, guess):
    """Pages are asked for ahead (the token found before the page is parsed); a wrong or
    missing guess costs a request, never a page: the listing equals the client's."""
    import taurus_tools.transfer.s3_direct as s3_direct

    server, bucket, client, endpoint = env
    for i in range(23):
        client.put_object(Bucket=bucket, Key=f"p/{i:03d} key", Body=b"x" * i)
    real = s3_direct.next_token_of
    fake = {"right": real, "wrong": lambda body: "not-a-token" if real(body) else None, "none": lambda body: None}
    monkeypatch.setattr(s3_direct, "next_token_of", fake[guess])
    direct = _direct(client, 1)
    real_body = direct.list_body
    monkeypatch.setattr(direct, "list_body", lambda b, p, t=None, max_keys=1000: real_body(b, p, t, max_keys=5))
    with_client, ahead = io.BytesIO(), io.BytesIO()
    location = S3Location.parse(f"s3://{bucket}/p")
    list_prefix(client, location, with_client)
    stats = list_prefix(client, location, ahead, direct=direct)
    assert ahead.getvalue() == with_client.getvalue() and stats.files == 23


def test_gather_waits_for_the_running_parts_before_raising():
    """A failed part must not let the caller close the file while other parts still use its
    descriptor (a reused number would take another file's bytes)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from taurus_tools.transfer.s3_upload import gather

    ended = threading.Event()

    def slow() -> int:
        time.sleep(0.5)
        ended.set()
        return 1

    def fail() -> int:
        raise OSError("this part failed")

    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(OSError, match="this part failed"):
            gather([pool.submit(slow), pool.submit(fail)])
        assert ended.is_set()
        assert gather([pool.submit(lambda: 2), pool.submit(lambda: 3)]) == [2, 3]


def test_a_missing_profile_is_a_configuration_error_whoever_names_it(monkeypatch, tmp_path):
    from taurus_tools.errors import ConfigurationError
    from taurus_tools.transfer.s3_access import S3Access

    config = tmp_path / "config"
    config.write_text("[profile one]\nregion = eu-test-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigurationError, match="the AWS profile 'two' is in neither"):
        S3Access(S3Config(profile="two"))
    monkeypatch.setenv("AWS_PROFILE", "two")
    with pytest.raises(ConfigurationError, match="the AWS profile 'two' is in neither"):
        S3Access(S3Config())  # (the region is looked for in the profile)
    assert S3Access(S3Config(profile="one")).region == "eu-test-1"


# =============================================================================== HTTP dates
@pytest.mark.parametrize("text", [
    "Wed, 03 Dec 2026 13:05:09 GMT",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Mon, 29 Feb 2100 23:59:59 GMT",  # not a day: the email package's error, as before
    "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850, through the email package
    "Sun Nov  6 08:49:37 1994",  # asctime, the same
    "Wed, 03 Foo 2026 13:05:09 GMT",
    "",
])
def test_http_dates_parse_as_the_email_package_does(text):
    """LastModified of a HEAD or GET: the same aware datetime (or the same error) as
    ``email.utils.parsedate_to_datetime``, which botocore uses."""
    from email.utils import parsedate_to_datetime

    try:
        want = parsedate_to_datetime(text)
    except (ValueError, TypeError) as exc:
        with pytest.raises(type(exc)):
            _http_date(text)
    else:
        got = _http_date(text)
        assert got == want and got.utcoffset() == want.utcoffset()
