"""Endpoints: the registry that picks one from a location, and the interface the copy engine uses.

The interface tests wrap the local endpoint in one whose locations are not paths
(``test://...``) and that records every call: a copy through them succeeds only if the
driver lists, launches, verifies and finishes through the endpoint and nothing else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import pytest

import test_parallel_copy
from helpers import HOSTILE_NAMES
from test_parallel_copy import assert_same_tree, make_tree, read_report, write
from taurus_tools import ConfigurationError, ParallelCopy
from taurus_tools.transfer.endpoints import (
    ENDPOINTS,
    DestinationState,
    Endpoint,
    LocalEndpoint,
    ShardAttempt,
    endpoint_for,
    mover_for,
)
from taurus_tools.transfer.rclone import RcloneEndpoint
from taurus_tools.transfer.s3 import S3Endpoint
from taurus_tools.process.launch import Launch

dm = test_parallel_copy.dm  # fixture: the local backend


# =============================================================================== registry
class TestRegistry:
    @pytest.mark.parametrize(
        "location, path",
        [
            ("/data/run 1", "/data/run 1"),
            ("/data/x/../y/", "/data/y"),
            ("file:///data/run1", "/data/run1"),
            ("FILE:///data/run1", "/data/run1"),
            ("file://localhost/data/run1", "/data/run1"),
            ("file:///data/run%201/%FF%3F%23", os.fsdecode(b"/data/run 1/\xff?#")),
            ("/s3://not-a-url", "/s3:/not-a-url"),
            ("/C:/data", "/C:/data"),
        ],
    )
    def test_local_locations(self, location, path):
        endpoint = endpoint_for(location)
        assert type(endpoint) is LocalEndpoint
        assert endpoint.location == path and endpoint.local_path == Path(path) and endpoint.is_local

    @pytest.mark.parametrize("name", HOSTILE_NAMES + [b"remote:path", b"C:\\data"])
    def test_relative_paths_with_hostile_names(self, name, tmp_path, monkeypatch):
        """Any name is a relative path; one that reads as ``remote:path`` (an rclone remote)
        or a Windows drive is a local path written ``./NAME``."""
        monkeypatch.chdir(tmp_path)
        expected = os.path.join(os.fsencode(tmp_path), name)
        assert os.fsencode(endpoint_for(os.fsdecode(b"./" + name)).location) == expected
        if name == b"C:\\data":
            with pytest.raises(ConfigurationError, match="Windows"):
                endpoint_for(name.decode())
        elif b":" in name:
            assert type(endpoint_for(name.decode())) is RcloneEndpoint
        else:
            assert os.fsencode(endpoint_for(os.fsdecode(name)).location) == expected

    def test_path_objects_are_always_local(self, tmp_path):
        for odd in ("remote:path", "s3:", "C:"):
            assert endpoint_for(tmp_path / odd).local_path == tmp_path / odd
            assert endpoint_for(Path(odd)).local_path == Path.cwd() / odd

    def test_an_endpoint_is_taken_as_it_is(self, tmp_path):
        endpoint = LocalEndpoint(tmp_path)
        assert endpoint_for(endpoint) is endpoint

    @pytest.mark.parametrize(
        "location, why",
        [
            ("gs://bucket", "no endpoint copies gs:// locations yet"),
            ("HTTPS://example.org/x", "no endpoint copies https:// locations yet"),
            ("C:\\data", "looks like a Windows path"),
            ("c:/data", "looks like a Windows path"),
            ("D:", "looks like a Windows path"),
            ("\\\\server\\share", "looks like a Windows path"),
        ],
    )
    def test_forms_without_an_endpoint_are_refused_with_the_valid_ones(self, location, why):
        with pytest.raises(ConfigurationError) as info:
            endpoint_for(location)
        message = str(info.value)
        assert message.startswith(f"location {location!r}: ") and why in message
        for form in LocalEndpoint.forms + S3Endpoint.forms + RcloneEndpoint.forms:
            assert form in message

    @pytest.mark.parametrize(
        "location, remote, path",
        [("remote:path/x", "remote", "path/x"), ("my remote:", "my remote", ""), ("s3:bucket", "s3", "bucket"),
         (":local:/data", ":local", "/data"), (":s3:bucket/p", ":s3", "bucket/p")],
    )
    def test_rclone_forms_are_rclone_remotes(self, location, remote, path):
        """Whether the remote is configured is checked when the copy checks its locations
        (the message then says how to write a local folder of that name: ./NAME)."""
        endpoint = endpoint_for(location)
        assert type(endpoint) is RcloneEndpoint and endpoint.location == location
        assert (endpoint.remote.remote, endpoint.remote.path) == (remote, path)

    def test_rclone_options_in_a_location_are_refused(self):
        with pytest.raises(ConfigurationError, match="in the environment") as info:
            endpoint_for(":s3,secret_access_key=XYZ:bucket")
        assert "XYZ" not in str(info.value)

    @pytest.mark.parametrize(
        "location, why",
        [
            ("file://otherhost/data", "names the host 'otherhost'"),
            ("file:///data/#1", "must be written %3F and %23"),
            ("file:///data/what?", "must be written %3F and %23"),
        ],
    )
    def test_file_urls_that_would_mean_something_else(self, location, why):
        with pytest.raises(ConfigurationError, match=why):
            endpoint_for(location)

    def test_parallel_copy_refuses_before_anything_runs(self, tmp_path, dm, monkeypatch):
        monkeypatch.setenv("RCLONE_CONFIG", os.devnull)  # no remote is configured
        src = tmp_path / "src"
        write(src / "a", b"a")
        with pytest.raises(ConfigurationError, match="no endpoint copies gs:// locations yet"):
            ParallelCopy(str(src), "gs://bucket/prefix", datamover=dm, work_dir=tmp_path / "w")
        with pytest.raises(ConfigurationError, match="rclone remote"):
            ParallelCopy("remote:data", str(tmp_path / "dst"), datamover=dm, work_dir=tmp_path / "w")
        assert not (tmp_path / "w").exists() and not (tmp_path / "dst").exists()

    def test_a_new_form_is_one_registry_entry(self, tmp_path, monkeypatch):
        """What S3 and rclone remotes will do: a class and an entry, nothing else."""

        class Elsewhere(Recorded):
            forms = ("elsewhere://NAME",)

            @classmethod
            def from_location(cls, location: str, config=None) -> "Elsewhere":
                return cls(LocalEndpoint(tmp_path / location[len("elsewhere://"):]), [])

        monkeypatch.setitem(ENDPOINTS, "elsewhere", Elsewhere)
        endpoint = endpoint_for("elsewhere://there")
        assert isinstance(endpoint, Elsewhere) and endpoint.inner.path == tmp_path / "there"
        with pytest.raises(ConfigurationError) as info:
            endpoint_for("gs://bucket")
        assert "elsewhere://NAME" in str(info.value), "the valid forms come from the registry"


# =============================================================================== interface
class Recorded(Endpoint):
    """A local folder behind a location that is no path, recording every call made to it."""

    forms = ("test://NAME",)

    def __init__(self, inner: LocalEndpoint, calls: list, *, tool: bool = False) -> None:
        self.inner = inner
        self.calls = calls
        self.tool = tool  # copy with a program that reports nothing (as the site's dtrsync)

    @classmethod
    def from_location(cls, location: str, config=None) -> "Recorded":
        raise AssertionError("made by the tests only")

    def _call(self, name: str, *details) -> None:
        self.calls.append((self.location, name) + details)

    @property
    def location(self) -> str:
        return f"test://{self.inner.path.name}"

    def check_source(self) -> None:
        self._call("check_source")
        self.inner.check_source()

    def list(self, into, *, exclude=(), files_from=None):
        self._call("list")
        return self.inner.list(into, exclude=exclude, files_from=files_from)

    def check_destination(self, source: Endpoint) -> None:
        self._call("check_destination")
        self.inner.check_destination(source.inner)

    def prepare(self, *, create: bool) -> DestinationState:
        self._call("prepare", create)
        return self.inner.prepare(create=create)

    def free_bytes(self) -> Optional[int]:
        self._call("free_bytes")
        return self.inner.free_bytes()

    def moves(self, source: Endpoint, destination: Endpoint) -> bool:
        return isinstance(source, Recorded) and isinstance(destination, Recorded)

    def copy_shard(self, attempt: ShardAttempt, *, source, destination, backend) -> Launch:
        self._call("copy_shard", attempt.index, attempt.attempt)
        if self.tool:
            src, dst = source.inner.path, destination.inner.path
            return Launch(("cp", "-a", "--", f"{src}/.", f"{dst}/"), name=attempt.name)
        return self.inner.copy_shard(attempt, source=source.inner, destination=destination.inner, backend=backend)

    def verify_shard(self, attempt: ShardAttempt, *, source, destination):
        self._call("verify_shard", attempt.index, attempt.attempt)
        return self.inner.verify_shard(attempt, source=source.inner, destination=destination.inner)

    def set_folders(self, records, *, root, status, source, destination) -> List:
        self._call("set_folders", root)
        return self.inner.set_folders(records, root=root, status=status, source=source.inner,
                                      destination=destination.inner)

    def remove_leftovers(self, records, *, copy_tag, destination) -> int:
        self._call("remove_leftovers")
        return self.inner.remove_leftovers(records, copy_tag=copy_tag, destination=destination.inner)


def recorded_pair(tmp_path, **options):
    calls: list = []
    src = Recorded(LocalEndpoint(tmp_path / "src"), calls, **options)
    dst = Recorded(LocalEndpoint(tmp_path / "dst"), calls, **options)
    return src, dst, calls


class TestInterface:
    def test_the_driver_goes_through_the_endpoints_only(self, tmp_path, dm):
        src, dst, calls = recorded_pair(tmp_path)
        make_tree(src.inner.path, tmp_path / "outside")
        pc = ParallelCopy(src, dst, datamover=dm, progress=False, work_dir=tmp_path / "w", workers=2, shards=3)
        assert (pc.src, pc.dst) == ("test://src", "test://dst")
        result = pc.run()
        assert result.ok, result.failed_messages
        assert_same_tree(src.inner.path, dst.inner.path)
        report = read_report(result.report)
        assert (report["src"], report["dst"]) == ("test://src", "test://dst")
        names = [(where, name) for where, name, *_ in calls]
        assert names[:3] == [("test://src", "check_source"), ("test://dst", "check_destination"),
                             ("test://dst", "prepare")]
        assert names.count(("test://src", "list")) == 1
        assert sorted(c[2:] for c in calls if c[1] == "copy_shard") == [(0, 0), (1, 0), (2, 0)]
        assert {c[0] for c in calls if c[1] == "copy_shard"} == {"test://dst"}, "the destination moves"
        assert ("test://dst", "free_bytes") in names and ("test://dst", "set_folders", True) in calls
        assert not [c for c in calls if c[1] == "verify_shard"], "the worker verified its shards"

    def test_a_program_that_reports_nothing_is_verified_by_the_endpoint(self, tmp_path, dm):
        src, dst, calls = recorded_pair(tmp_path, tool=True)
        for i in range(5):
            write(src.inner.path / f"d{i % 2}" / f"f{i}", b"%d" % i)
        result = ParallelCopy(
            src, dst, datamover=dm, progress=False, work_dir=tmp_path / "w", workers=1, shards=1
        ).run()
        assert result.ok, result.failed_messages
        assert [c[1:] for c in calls if c[1] in ("copy_shard", "verify_shard")] == [
            ("copy_shard", 0, 0), ("verify_shard", 0, 0)
        ]
        assert result.files_verified == 5 and result.files_copied == 5

    def test_what_the_endpoint_verifies_as_missing_is_retried(self, tmp_path, dm, monkeypatch):
        """The endpoint's verification fails an entry: the retry goes through the endpoint too."""
        src, dst, calls = recorded_pair(tmp_path, tool=True)
        write(src.inner.path / "a", b"a")
        write(src.inner.path / "b", b"b")
        real_copy = Recorded.copy_shard

        def copy_only_a_first(self, attempt, **kw):
            launch = real_copy(self, attempt, **kw)
            if attempt.attempt == 0:
                s, d = kw["source"].inner.path, kw["destination"].inner.path
                return Launch(("cp", "-p", "--", f"{s}/a", f"{d}/a"), name=launch.name)
            return launch

        monkeypatch.setattr(Recorded, "copy_shard", copy_only_a_first)
        result = ParallelCopy(
            src, dst, datamover=dm, progress=False, work_dir=tmp_path / "w", workers=1, shards=1, retry_delay_s=0
        ).run()
        assert result.ok and result.retries == 1
        assert [c[1:] for c in calls if c[1] in ("copy_shard", "verify_shard")] == [
            ("copy_shard", 0, 0), ("verify_shard", 0, 0), ("copy_shard", 0, 1), ("verify_shard", 0, 1)
        ]
        assert (dst.inner.path / "b").read_bytes() == b"b"

    def test_a_worker_that_exits_0_without_reporting_its_end_did_not_succeed(self, tmp_path, dm, monkeypatch):
        """A status without "done": true and exit 0 (a worker killed and reaped by someone
        else) is a failed attempt, retried, never a copy that says ok with files missing."""
        src, dst, calls = recorded_pair(tmp_path)
        for i in range(4):
            write(src.inner.path / f"f{i}", b"%d" % i)
        real_copy = Recorded.copy_shard

        def half_done_first(self, attempt, **kw):
            launch = real_copy(self, attempt, **kw)
            if attempt.attempt == 0:
                status = '{"files": 1, "bytes": 1, "done": false}'
                code = f"open({str(attempt.files.status)!r}, 'w').write({status!r})"
                return Launch((sys.executable, "-c", code), name=launch.name)
            return launch

        monkeypatch.setattr(Recorded, "copy_shard", half_done_first)
        result = ParallelCopy(
            src, dst, datamover=dm, progress=False, work_dir=tmp_path / "w", workers=1, shards=1, retry_delay_s=0
        ).run()
        assert result.ok and result.retries == 1, result.failed_messages
        assert sorted(p.name for p in dst.inner.path.iterdir()) == ["f0", "f1", "f2", "f3"]

    def test_the_mover_is_the_destination_then_the_source(self, tmp_path):
        calls: list = []
        local = LocalEndpoint(tmp_path)
        recorded = Recorded(LocalEndpoint(tmp_path), calls)
        assert mover_for(local, LocalEndpoint(tmp_path / "x")).local_path == tmp_path / "x"
        assert mover_for(recorded, Recorded(LocalEndpoint(tmp_path / "y"), calls)).location == "test://y"
        with pytest.raises(ConfigurationError, match="no endpoint copies from test://.* to /"):
            mover_for(recorded, local)

    def test_the_interface_is_what_the_module_documents(self):
        import taurus_tools.transfer.endpoints as endpoints_mod

        assert Endpoint.__abstractmethods__ == {
            "from_location", "location", "check_source", "list", "check_destination", "prepare",
            "moves", "copy_shard", "verify_shard",
        }
        for name in sorted(Endpoint.__abstractmethods__) + ["free_bytes", "set_folders", "remove_leftovers"]:
            assert f"``{name}" in endpoints_mod.__doc__, name


@pytest.mark.parametrize("option", [{"endpoint_url": "http://127.0.0.1:9"}, {"profile": "some-profile"}])
def test_an_s3_option_for_a_copy_without_s3_is_refused(tmp_path, option):
    """--endpoint-url or --profile on a copy between folders (or rclone remotes) would do
    nothing: a typo'd s3:// location must not pass silently."""
    (tmp_path / "src").mkdir()
    (name,) = option
    with pytest.raises(ConfigurationError, match=rf"{name} is given, but neither .*src nor .*dst uses it.*s3://"):
        ParallelCopy(tmp_path / "src", tmp_path / "dst", work_dir=tmp_path / "w", **option)
    with pytest.raises(ConfigurationError, match=rf"{name} is given, but neither .* nor :local:.* uses it"):
        ParallelCopy(tmp_path / "src", f":local:{tmp_path}/remote", work_dir=tmp_path / "w", **option)
