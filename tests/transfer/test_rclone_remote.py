"""rclone locations: ``remote:path`` parsed, and listed by a real rclone into records."""

from __future__ import annotations

import io
import os

import pytest
from helpers import HOSTILE_OBJECT_NAMES

from taurus_tools import CommandNotFoundError, ConfigurationError, SourceNotFoundError
from taurus_tools.transfer.plan import read_entries
from taurus_tools.transfer.rclone import RemoteLocation, list_remote, parse_mod_time, rclone_executable

pytestmark = pytest.mark.timeout(120)


class TestLocation:
    @pytest.mark.parametrize(
        "text, remote, path",
        [
            ("remote:", "remote", ""),
            ("remote:bucket/dir", "remote", "bucket/dir"),
            ("my remote.1:/abs/path", "my remote.1", "/abs/path"),
            (":local:/tmp/x", ":local", "/tmp/x"),
            ("r:a:b", "r", "a:b"),
        ],
    )
    def test_valid(self, text, remote, path):
        loc = RemoteLocation.parse(text)
        assert (loc.remote, loc.path) == (remote, path) and str(loc) == text

    @pytest.mark.parametrize(
        "text, why",
        [
            ("/local/path", "not an rclone location"),
            ("noremote", "not an rclone location"),
            (" lead:x", "not a remote name"),
            ("bad/name:x", "not a remote name"),
            (":s3,secret_access_key=XYZ:bucket", "in the environment"),
            (":S3:x", "not a backend name"),
        ],
    )
    def test_invalid_says_what_is_valid(self, text, why):
        with pytest.raises(ConfigurationError, match=why) as info:
            RemoteLocation.parse(text)
        assert "XYZ" not in str(info.value)


@pytest.mark.parametrize(
    "text, ns",
    [
        ("1970-01-01T00:00:01Z", 1_000_000_000),
        ("1970-01-01T00:00:01.5Z", 1_500_000_000),
        ("1970-01-01T01:00:01.000000007+01:00", 1_000_000_007),
        ("1970-01-01T00:00:00.123456789-00:30", 1800 * 10**9 + 123456789),
    ],
)
def test_mod_time(text, ns):
    assert parse_mod_time(text) == ns


def test_mod_time_refuses_other_text():
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_mod_time("yesterday")


NAMES = HOSTILE_OBJECT_NAMES


def test_lists_hostile_names_in_rclones_encoding(local_remote, tmp_path):
    src = tmp_path / "src"
    for i, name in enumerate(NAMES):
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i + 1))
    (src / "empty dir").mkdir()
    out = tmp_path / "listing"
    with open(out, "wb") as fh:
        stats = list_remote(RemoteLocation.parse(f"{local_remote}:{src}"), fh)
    entries = {e.path.decode(): e for e, _raw in read_entries(out)}
    # rclone shows a newline in a local name as U+240A, and takes that form back
    want = {name.replace("\n", "\u240a"): i + 1 for i, name in enumerate(NAMES)}
    assert {k: e.size for k, e in entries.items()} == want
    assert stats.files == len(NAMES) and stats.errors == 0
    for name in NAMES:
        assert entries[name.replace("\n", "\u240a")].mtime_ns == (src / name).stat().st_mtime_ns


def test_a_bucket_through_an_s3_remote(s3_server, monkeypatch, tmp_path):
    """The test S3 server as an rclone remote, configured (credentials included) by environment only."""
    import boto3

    client = boto3.client(
        "s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=s3_server.key,
        aws_secret_access_key=s3_server.secret, region_name="us-east-1",
    )
    client.create_bucket(Bucket="tt-rclone-list")
    for i, name in enumerate(NAMES):
        client.put_object(Bucket="tt-rclone-list", Key="p/" + name, Body=b"y" * (i + 1))
    for key, value in dict(TYPE="s3", PROVIDER="Other", ENDPOINT=s3_server.endpoint_url,
                           ACCESS_KEY_ID=s3_server.key, SECRET_ACCESS_KEY=s3_server.secret,
                           FORCE_PATH_STYLE="true").items():
        monkeypatch.setenv(f"RCLONE_CONFIG_S3T_{key}", value)
    monkeypatch.setenv("RCLONE_CONFIG", os.devnull)
    out = io.BytesIO()
    stats = list_remote(RemoteLocation.parse("s3t:tt-rclone-list/p"), out)
    assert stats.files == len(NAMES) and stats.bytes == sum(range(1, len(NAMES) + 1))
    assert out.getvalue().count(b"\0") == len(NAMES)


def test_missing_folder(local_remote, tmp_path):
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        list_remote(RemoteLocation.parse(f"{local_remote}:{tmp_path / 'nope'}"), io.BytesIO())


def test_unconfigured_remote(monkeypatch):
    if rclone_executable() is None:
        pytest.fail("rclone is not installed")
    monkeypatch.setenv("RCLONE_CONFIG", os.devnull)
    monkeypatch.delenv("RCLONE_CONFIG_NOSUCH_TYPE", raising=False)
    with pytest.raises(ConfigurationError, match="rclone remote 'nosuch' is not configured"):
        list_remote(RemoteLocation.parse("nosuch:x"), io.BytesIO())


def test_no_rclone(tmp_path):
    with pytest.raises(CommandNotFoundError, match="rclone"):
        list_remote(RemoteLocation.parse("r:x"), io.BytesIO(), rclone=str(tmp_path / "no-rclone"))
