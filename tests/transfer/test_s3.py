"""S3 locations, the client's settings and listing a prefix, against each real test server (rclone, SeaweedFS)."""

from __future__ import annotations

import datetime as dt
import io
import time

import pytest
from helpers import HOSTILE_OBJECT_NAMES

from taurus_tools import ConfigurationError
from taurus_tools.transfer.config import CopyConfig
from taurus_tools.errors import S3Error
from taurus_tools.transfer.plan import read_entries
from taurus_tools.transfer.s3 import S3Config, S3Location, key_problem, list_prefix, make_client

pytestmark = pytest.mark.timeout(120)


class TestLocation:
    @pytest.mark.parametrize(
        "text, bucket, prefix",
        [
            ("s3://bucket", "bucket", ""),
            ("s3://bucket/", "bucket", ""),
            ("s3://my.bucket-1/data", "my.bucket-1", "data/"),
            ("s3://b12/data/", "b12", "data/"),
            ("s3://b12/a b/ü 名/", "b12", "a b/ü 名/"),
        ],
    )
    def test_valid(self, text, bucket, prefix):
        loc = S3Location.parse(text)
        assert (loc.bucket, loc.prefix) == (bucket, prefix)
        assert str(loc) == f"s3://{bucket}/{prefix}"
        assert loc.key("x/y") == prefix + "x/y"

    @pytest.mark.parametrize(
        "text, why",
        [
            ("/local/path", "not an S3 location"),
            ("s3:/bucket", "not an S3 location"),
            ("s3://", "not a valid bucket name"),
            ("s3://Upper", "not a valid bucket name"),
            ("s3://ab", "not a valid bucket name"),
            ("s3://a..b/x", "not a valid bucket name"),
            ("s3://-bucket", "not a valid bucket name"),
            ("s3://bucket/../etc", "'..' component"),
            ("s3://bucket/a//b", "empty component"),
        ],
    )
    def test_invalid_says_what_is_valid(self, text, why):
        with pytest.raises(ConfigurationError, match=why) as info:
            S3Location.parse(text)
        assert "s3://BUCKET/PREFIX" in str(info.value)


@pytest.mark.parametrize(
    "key, problem",
    [
        ("a/b.txt", None),
        ("new\nline", None),  # a valid POSIX name: kept
        ("-leading dash ü", None),
        ("", "is empty"),
        ("/abs", "starts with '/'"),
        ("a//b", "empty component"),
        ("a/../b", "'..' component"),
        ("./a", "'.' component"),
        ("nul\0byte", "NUL"),
        ("x" * 256, "longer than 255 bytes"),
    ],
)
def test_key_problem(key, problem):
    got = key_problem(key)
    assert (got is None) if problem is None else (problem in got)


class TestConfig:
    @pytest.mark.parametrize(
        "options, why",
        [
            (dict(endpoint_url="127.0.0.1:9000"), "http"),
            (dict(endpoint_url="ftp://host"), "http"),
            (dict(threads=0), "threads"),
            (dict(threads=True), "threads"),
            (dict(max_attempts=0), "max_attempts"),
            (dict(connect_timeout_s=0), "connect_timeout_s"),
        ],
    )
    def test_bad_values_are_refused(self, options, why):
        with pytest.raises(ConfigurationError, match=why):
            S3Config(**options)

    def test_client_for_a_non_aws_endpoint(self, s3_servers, monkeypatch):
        for name, value in s3_servers.env().items():
            monkeypatch.setenv(name, value)
        client, endpoint = make_client(S3Config(threads=32))
        assert endpoint == s3_servers.endpoint_url  # from AWS_ENDPOINT_URL, as boto3 resolves it
        cfg = client.meta.config
        assert cfg.s3["addressing_style"] == "path"
        assert cfg.request_checksum_calculation == "when_required"
        assert cfg.response_checksum_validation == "when_required"
        assert cfg.max_pool_connections >= 32

    def test_client_for_aws_keeps_the_defaults(self, monkeypatch):
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
        client, endpoint = make_client(S3Config())
        assert endpoint is None
        assert client.meta.config.s3 is None or client.meta.config.s3.get("addressing_style") != "path"


@pytest.fixture
def s3(s3_servers, monkeypatch, request):
    """A client of the test server and a fresh bucket."""
    for name, value in s3_servers.env().items():
        monkeypatch.setenv(name, value)
    client, endpoint = make_client(S3Config())
    bucket = f"tt-{request.node.originalname.lower().replace('_', '-')[:40].strip('-')}-{time.monotonic_ns() % 100000}"
    client.create_bucket(Bucket=bucket)
    return client, endpoint, bucket


HOSTILE_KEYS = HOSTILE_OBJECT_NAMES


class TestListing:
    def test_hostile_keys_become_records(self, s3, tmp_path):
        client, endpoint, bucket = s3
        for i, key in enumerate(HOSTILE_KEYS):
            client.put_object(Bucket=bucket, Key="data/" + key, Body=b"x" * (i + 1))
        client.put_object(Bucket=bucket, Key="data-old/not-below", Body=b"no")  # a sibling prefix
        out = tmp_path / "listing"
        with open(out, "wb") as fh:
            stats = list_prefix(client, S3Location.parse(f"s3://{bucket}/data"), fh, endpoint=endpoint)
        entries = {e.path.decode(): e for e, _raw in read_entries(out)}
        assert sorted(entries) == sorted(HOSTILE_KEYS)
        for i, key in enumerate(HOSTILE_KEYS):
            assert entries[key].kind == "f" and entries[key].size == i + 1
        assert stats.files == len(HOSTILE_KEYS) and stats.bytes == sum(range(1, len(HOSTILE_KEYS) + 1))
        assert stats.errors == 0
        now_ns = time.time_ns()
        assert all(abs(e.mtime_ns - now_ns) < 600e9 for e in entries.values())

    def test_many_pages_stream(self, s3, tmp_path):
        client, endpoint, bucket = s3
        for i in range(2100):  # three pages of at most 1,000 keys
            client.put_object(Bucket=bucket, Key=f"k/{i:05d}", Body=b"")
        out = io.BytesIO()
        stats = list_prefix(client, S3Location.parse(f"s3://{bucket}/k/"), out, endpoint=endpoint)
        assert stats.files == 2100
        assert out.getvalue().count(b"\0") == 2100

    def test_a_missing_bucket(self, s3, tmp_path):
        client, endpoint, _ = s3
        with pytest.raises(S3Error, match="the bucket 'tt-no-such-bucket' does not exist"):
            list_prefix(client, S3Location.parse("s3://tt-no-such-bucket/x"), io.BytesIO(), endpoint=endpoint)

    def test_a_wrong_secret_is_refused_at_once_and_never_shown(self, s3_servers, monkeypatch):
        for name, value in s3_servers.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
        client, endpoint = make_client(S3Config())
        started = time.monotonic()
        with pytest.raises(S3Error, match="credentials were refused") as info:
            list_prefix(client, S3Location.parse("s3://somebucket/x"), io.BytesIO(), endpoint=endpoint)
        assert time.monotonic() - started < 10
        text = str(info.value) + repr(info.value.__reduce__())
        assert "wrong-secret-value" not in text and s3_servers.secret not in text
        assert info.value.__cause__ is None and info.value.__suppress_context__

    def test_an_unreachable_endpoint_fails_in_bounded_time(self, monkeypatch):
        from slurm_cluster import _free_tcp_ports

        (port,) = _free_tcp_ports(1)  # nothing listens there
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        client, endpoint = make_client(S3Config(endpoint_url=f"http://127.0.0.1:{port}", connect_timeout_s=1,
                                                max_attempts=2))
        started = time.monotonic()
        with pytest.raises(S3Error, match="cannot be reached"):
            list_prefix(client, S3Location.parse("s3://bucket/x"), io.BytesIO(), endpoint=endpoint)
        assert time.monotonic() - started < 30


class _Client:
    """A stand-in client with keys rclone's file-backed server cannot store (one page)."""

    def __init__(self, keys):
        self.keys = keys

    def list_objects_v2(self, **kwargs):
        when = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
        return {"Contents": [{"Key": k, "Size": 0 if k.endswith("/") else 3, "LastModified": when} for k in self.keys]}


def test_keys_that_are_no_file_names_are_refused_with_their_reason():
    # (rclone's server keeps objects as files, so it cannot hold these: a stand-in lists them)
    keys = ["p/ok", "p/a/../../etc/passwd", "p//abs", "p/x//y", "p/./z", "p/nul\0", "p/folder/"]
    out = io.BytesIO()
    stats = list_prefix(_Client(keys), S3Location.parse("s3://bucket/p"), out)
    assert out.getvalue() == b"f\t3\t%d\tok\0" % int(dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc).timestamp() * 1e9)
    assert stats.files == 1 and stats.errors == 5
    assert stats.dirs == 1  # the folder marker is a folder, as for rclone and the AWS CLI
    joined = "\n".join(stats.messages)
    assert "'..' component" in joined and "starts with '/'" in joined and "empty component" in joined
    assert "'.' component" in joined and "NUL" in joined


# ------------------------------------------------------------------ where the shards run
@pytest.mark.parametrize(
    "in_process, files, size, expected",
    [
        ("auto", 8, 8 * 64 << 20, True),  # few large objects: no interpreter to start per shard
        ("auto", 256, 256 * 1000, True),  # few objects, whatever their size
        ("auto", 20_000, 20_000 * (16 << 10), False),  # many small ones: processes beat one GIL
        ("auto", 20_000, 20_000 * (8 << 20), True),  # many large ones: their bytes skip Python
        ("auto", 0, 0, True),
        (True, 20_000, 20_000, True),
        ("no", 1, 1 << 30, False),
    ],
)
def test_where_the_shards_run(in_process, files, size, expected):
    config = CopyConfig(in_process=in_process)
    assert config.in_process in ("auto", "yes", "no")
    assert config.runs_in_process(files, size) is expected


def test_the_site_backend_runs_programs_here_and_so_inline(tmp_path):
    from taurus_tools.datamover.backends import SiteBackend

    def make(argv):
        raise AssertionError("not called: nothing is started here")

    site = SiteBackend({}).launch_program("copy-shard-0", ["python", "w.py"], blocking=True, inline=make)
    assert site.inline is make and site.argv == ("python", "w.py")


def test_each_in_process_attempt_has_temporaries_of_its_own(tmp_path, monkeypatch):
    """A cancelled in-process attempt whose thread outlived the cancel never writes into a
    later attempt's temporary: each gets names of its own, and each removes all of them."""
    from taurus_tools.transfer.s3_worker import InlineShard

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    (tmp_path / "shard").write_bytes(b"")

    def attempt(n):
        return InlineShard([
            "download", f"--local={tmp_path}/dst", "--url=s3://bucket/p/", f"--shard={tmp_path}/shard",
            f"--status={tmp_path}/st{n}", f"--failed={tmp_path}/f{n}", "--part-tag=TAG-1",
            "--endpoint-url=http://127.0.0.1:9", "--region=us-east-1",
        ])

    first, second = attempt(0), attempt(1)
    try:
        tags = {first.worker.part_tag, second.worker.part_tag}
        assert len(tags) == 2 and all(t.startswith(b"TAG-1.i") for t in tags)
        assert first.worker.leftovers == second.worker.leftovers == (b".tt-part-TAG-1-t", b".tt-part-TAG-1.i")
        assert not first.worker.temporary(b"/d/x").startswith(b"/d/.tt-part-TAG-10")  # (shard 10 is not shard 1)
    finally:
        first.worker.close()
        second.worker.close()
