"""``Checkpoint`` and ``restore`` from Python: a folder destination, and the real S3 test server.

What a checkpoint promises, each shown where it can fail: unchanged files are never sent
again; a file being written is never saved torn; a manifest is written last, so restore
gives the newest complete pass even after a pass that broke off half way; a destination
that fails for a while costs passes, not the job, and later passes catch up without
resending; a final pass that cannot save everything says which files it did not save.
Waits have deadlines (``wait_for``), never a sleep and one look.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from helpers import HOSTILE_NAMES, wait_for
from s3_proxy import FaultProxy

from taurus_tools import Checkpoint, CheckpointError, ConfigurationError, SourceNotFoundError
from taurus_tools.checkpoint.checkpoint import parse_every
from taurus_tools.checkpoint.destinations import LocalDestination
from taurus_tools.checkpoint.manifest import Entry, Manifest
from taurus_tools.checkpoint.restore import restore
from taurus_tools.errors import DestinationUnreachableError
from taurus_tools.transfer.s3 import S3Config

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def manifests(folder: Path) -> List[Dict[str, Any]]:
    """The manifests in a folder destination, oldest first."""
    found = sorted((folder / "manifests").glob("*.json")) if (folder / "manifests").is_dir() else []
    return [json.loads(p.read_text()) for p in found]


# =============================================================================== parsing and checks
class TestEvery:
    @pytest.mark.parametrize(
        "text, seconds", [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("5", 5), (2.5, 2.5), ("0.5s", 0.5)]
    )
    def test_durations(self, text, seconds):
        assert parse_every(text) == seconds

    @pytest.mark.parametrize("bad", ["5x", "", "-1", "0", "1w", "s", True, float("nan"), "10 minutes"])
    def test_bad_values_name_the_forms(self, bad):
        with pytest.raises(ConfigurationError, match="30s, 10m, 2h, 1d|more than 0"):
            parse_every(bad)


class TestChecksBeforeStart:
    def test_missing_folder(self, tmp_path):
        with pytest.raises(SourceNotFoundError, match="not a folder"):
            Checkpoint(tmp_path / "missing", str(tmp_path / "dst"), every="1s").start()

    def test_bad_regex(self, tmp_path):
        with pytest.raises(ConfigurationError, match="regular expression"):
            Checkpoint(tmp_path, str(tmp_path / "x"), every="1s", regex="(")

    def test_destination_inside_the_folder(self, tmp_path):
        with pytest.raises(ConfigurationError, match="inside the folder"):
            Checkpoint(tmp_path, str(tmp_path / "ckpt"), every="1s")

    def test_a_bad_rclone_location_is_refused(self, tmp_path):
        with pytest.raises(ConfigurationError, match="not a remote name"):
            Checkpoint(tmp_path, "bad!remote:bucket/x", every="1s")

    def test_unreachable_s3_at_start(self, tmp_path, monkeypatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        config = S3Config(endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout_s=1)
        ck = Checkpoint(tmp_path, "s3://bucket/p", every="1s", s3=config)
        with pytest.raises(DestinationUnreachableError, match="cannot be reached"):
            ck.start()
        assert not ck.running()
        # ... unless asked to start anyway: then only the final pass decides.
        (tmp_path / "a.bin").write_bytes(b"a")
        ck = Checkpoint(tmp_path, "s3://bucket/p", every="1s", s3=config, start_unreachable=True, final_timeout=1)
        ck.start()
        with pytest.raises(CheckpointError) as caught:
            ck.stop(timeout=60)
        assert "a.bin" in caught.value.not_saved


def test_manifest_round_trips_every_name():
    files = {os.fsdecode(name): Entry(i, 10**18 + i, md5(name), 1) for i, name in enumerate(HOSTILE_NAMES)}
    manifest = Manifest(3, time.time_ns(), files, {"x": "why"})
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert {os.fsencode(p) for p in again.files} == set(HOSTILE_NAMES)


# =============================================================================== a folder destination
def test_passes_send_only_new_and_changed_files_and_never_propagate_deletions(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"a1")
    (src / "sub" / "b.bin").write_bytes(b"b1")
    (src / "notes.txt").write_bytes(b"not selected")
    ck = Checkpoint(src, str(dst), every="1d", regex=r"\.bin$", settle=0)
    ck.start()
    try:
        first = ck.run_pass()
        assert (first.number, first.sent) == (1, 2)
        again = ck.run_pass()
        assert (again.number, again.sent) == (None, 0)  # nothing new: nothing sent, no manifest
        (src / "a.bin").write_bytes(b"a2-longer")
        (src / "sub" / "b.bin").unlink()
        third = ck.run_pass()
        assert (third.number, third.sent) == (2, 1)
    finally:
        final = ck.stop(timeout=30)
    assert final.ok and final.newest == 2
    newest = manifests(dst)[-1]
    assert {f["path"]: f["pass"] for f in newest["files"]} == {"a.bin": 2, "sub/b.bin": 1}
    assert not list(dst.rglob("notes.txt"))
    out = tmp_path / "out"
    restore(str(dst), out)
    assert (out / "a.bin").read_bytes() == b"a2-longer"
    assert (out / "sub" / "b.bin").read_bytes() == b"b1"  # deleted here, kept there


@pytest.mark.parametrize("through", ["folder", "s3"])
def test_deletions_propagated_when_asked(tmp_path, through, request, monkeypatch):
    """propagate_deletions: a file deleted here (or no longer selected) leaves the next
    manifest, so a restore does not bring it back; a pass that only found deletions
    writes its manifest; earlier passes keep what they stored (restorable by number)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("keep.bin", "sub/gone.bin", "sub/-dash gone #;.bin"):
        (src / name).write_bytes(name.encode())
    if through == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = server.make_bucket(f"tt-ckpt-del-{os.getpid()}")
        dest = f"s3://{bucket}/run"
        s3 = S3Config(endpoint_url=server.endpoint_url)
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
    else:
        dest, s3 = str(tmp_path / "dst"), None
    ck = Checkpoint(src, dest, every="1d", settle=0, propagate_deletions=True, s3=s3)
    ck.start()
    try:
        first = ck.run_pass()
        assert (first.number, first.sent, first.removed) == (1, 3, 0)
        (src / "sub" / "gone.bin").unlink()
        (src / "sub" / "-dash gone #;.bin").unlink()
        second = ck.run_pass()
        assert (second.number, second.sent, second.removed) == (2, 0, 2)
        third = ck.run_pass()
        assert (third.number, third.removed) == (None, 0)  # nothing changed since: no manifest
    finally:
        final = ck.stop(timeout=30)
    assert final.ok and final.newest == 2 and final.files == 1
    out = tmp_path / "out"
    restore(dest, out, s3=s3)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["keep.bin"]
    restore(dest, tmp_path / "first", number=1, s3=s3)
    assert len([p for p in (tmp_path / "first").rglob("*") if p.is_file()]) == 3


def test_a_failed_pass_is_retried_without_resending_and_restore_never_mixes(tmp_path, monkeypatch):
    """Pass 2 breaks off after its first file (the destination fails): its manifest is
    missing, so restore gives pass 1 exactly, not pass 1 with one file of pass 2.  The
    next attempt sends only what the broken one had not sent."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name in "abc":
        (src / f"{name}.bin").write_bytes(f"{name}-v1".encode())
    ck = Checkpoint(src, str(dst), every="1d", settle=0).start()
    try:
        assert ck.run_pass().number == 1
        for name in "abc":
            (src / f"{name}.bin").write_bytes(f"{name}-v2".encode())
        real_send = LocalDestination.send
        sent: List[str] = []

        def failing_after_one(self, fh, st, name):
            if sent:
                raise DestinationUnreachableError("the test's destination is down")
            sent.append(name)
            return real_send(self, fh, st, name)

        monkeypatch.setattr(LocalDestination, "send", failing_after_one)
        broken = ck.run_pass()
        assert broken.error and broken.number is None and len(sent) == 1
        out = tmp_path / "out"
        restore(str(dst), out)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == {f"{n}.bin": f"{n}-v1".encode() for n in "abc"}

        monkeypatch.setattr(LocalDestination, "send", real_send)
        resumed = ck.run_pass()
        assert (resumed.number, resumed.sent) == (2, 2)
    finally:
        ck.stop(timeout=30)
    restore(str(dst), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {f"{n}.bin": f"{n}-v2".encode() for n in "abc"}


def test_hostile_names_round_trip_through_a_folder(tmp_path):
    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "out"
    src.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):
        (src / os.fsdecode(name)).write_bytes(b"x" * i)
    with Checkpoint(src, str(dst), every="1d") as ck:
        pass
    assert ck.result().ok
    restore(str(dst), out)
    assert {os.fsencode(p.name): p.stat().st_size for p in out.iterdir()} == {
        name: i for i, name in enumerate(HOSTILE_NAMES)
    }


def test_the_context_manager_makes_the_final_pass_when_the_block_fails(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    with pytest.raises(ZeroDivisionError):
        with Checkpoint(src, str(dst), every="1d"):
            (src / "late.bin").write_bytes(b"written just before the error")
            1 / 0
    assert [f["path"] for f in manifests(dst)[-1]["files"]] == ["late.bin"]


def test_idle_between_passes_costs_no_cpu(tmp_path):
    """The thread sleeps on an event between passes: under 1 % of a core while idle."""
    import psutil

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a")
    me = psutil.Process()
    with Checkpoint(src, str(tmp_path / "dst"), every="1h"):
        before, t0 = me.cpu_times(), time.monotonic()
        threading.Event().wait(2.0)
        after, t1 = me.cpu_times(), time.monotonic()
    used = (after.user + after.system) - (before.user + before.system)
    assert used / (t1 - t0) < 0.01, f"{used:.3f} s of CPU in {t1 - t0:.1f} s while idle"


# =============================================================================== s3://
def _bucket_on(server, monkeypatch) -> str:
    for name, value in server.env({}).items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return server.make_bucket(f"tt-ckpt-{os.getpid()}-{next(_numbers)}")


@pytest.fixture
def bucket(s3_server, monkeypatch) -> str:
    return _bucket_on(s3_server, monkeypatch)


@pytest.fixture
def each_bucket(s3_servers, monkeypatch) -> Tuple[Any, str]:
    """Each real S3 server in turn, and a fresh bucket on it."""
    return s3_servers, _bucket_on(s3_servers, monkeypatch)


_numbers = iter(range(10**6))


def s3_manifests(client, bucket: str, prefix: str) -> List[Dict[str, Any]]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}manifests/").get("Contents", [])
    keys = sorted(item["Key"] for item in listed)
    return [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]


def test_a_large_file_being_written_is_never_saved_torn(tmp_path, s3_server, bucket):
    """A 20 MiB file (multipart) written in small pieces over ~3 s while passes run every
    0.2 s: no manifest ever names it with less than its whole content."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.bin").write_bytes(b"s")
    block = os.urandom(MiB // 4)
    whole = block * 80

    def write_slowly() -> None:
        with open(src / "big.bin", "wb") as fh:
            for _ in range(80):
                fh.write(block)
                fh.flush()
                threading.Event().wait(0.04)

    client = s3_server.client()
    with Checkpoint(src, f"s3://{bucket}/run", every=0.2, settle=1):
        writer = threading.Thread(target=write_slowly)
        writer.start()
        wait_for(lambda: s3_manifests(client, bucket, "run/"), lambda m: len(m) >= 1, timeout=30, what="pass 1")
        writer.join()
    seen = [f for m in s3_manifests(client, bucket, "run/") for f in m["files"] if f["path"] == "big.bin"]
    assert seen, "the final pass saved the big file"
    assert all((f["size"], f["md5"]) == (len(whole), md5(whole)) for f in seen)
    stored = {f["pass"] for f in seen}
    for number in stored:
        assert client.get_object(Bucket=bucket, Key=f"run/data/{number:06d}/big.bin")["Body"].read() == whole


def test_the_server_down_for_two_intervals_costs_passes_not_the_job(tmp_path, s3_server, bucket):
    """The server answers 503 for a while: passes fail (logged), the checkpoint goes on,
    and once it is back the next pass saves what changed meanwhile, without resending
    what had reached it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a")
    down = threading.Event()
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.on_request = lambda request: (503, "ServiceUnavailable") if down.is_set() else None
        config = S3Config(endpoint_url=proxy.endpoint_url, max_attempts=1)
        client = s3_server.client()
        ck = Checkpoint(src, f"s3://{bucket}/p", every=0.3, settle=0, s3=config).start()
        wait_for(lambda: s3_manifests(client, bucket, "p/"), lambda m: len(m) == 1, timeout=30, what="pass 1")
        down.set()
        (src / "b.bin").write_bytes(b"b")
        wait_for(lambda: sum(1 for r in ck.passes if r.error), lambda n: n >= 2, timeout=30,
                 what="two failed passes")
        assert not ck.done()
        down.clear()
        newest = wait_for(lambda: s3_manifests(client, bucket, "p/"), lambda m: len(m) == 2, timeout=30,
                          what="a pass after the server came back")[-1]
        report = ck.stop(timeout=60)
        a_puts = proxy.seen(lambda r: r.method == "PUT" and r.key.endswith("/a.bin"))
    assert sorted(f["path"] for f in newest["files"]) == ["a.bin", "b.bin"]
    assert len(a_puts) == 1, "a.bin, unchanged, was sent once"
    assert report.ok


def test_the_server_stopped_for_two_intervals_and_restarted(tmp_path, monkeypatch):
    """A real server stopped (connections refused) for two intervals, then started again on
    its port with its data: the checkpoint keeps running and the next pass catches up."""
    from s3_server import RcloneS3Server

    server = RcloneS3Server(tmp_path / "server").start()
    try:
        for name, value in server.env({}).items():
            monkeypatch.setenv(name, value)
        bucket = server.make_bucket("tt-ckpt-restarted")
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.bin").write_bytes(b"a")
        config = S3Config(endpoint_url=server.endpoint_url, max_attempts=1, connect_timeout_s=1)
        ck = Checkpoint(src, f"s3://{bucket}/p", every=0.3, settle=0, s3=config).start()
        client = server.client()
        wait_for(lambda: s3_manifests(client, bucket, "p/"), lambda m: len(m) == 1, timeout=30, what="pass 1")
        port = server.port
        server.stop()
        (src / "b.bin").write_bytes(b"b")
        wait_for(lambda: sum(1 for r in ck.passes if r.error), lambda n: n >= 2, timeout=30,
                 what="two failed passes while the server is down")
        assert not ck.done()
        server.start(port=port)
        newest = wait_for(lambda: s3_manifests(client, bucket, "p/"), lambda m: len(m) == 2, timeout=30,
                          what="a pass after the server came back")[-1]
        report = ck.stop(timeout=60)
        assert sorted(f["path"] for f in newest["files"]) == ["a.bin", "b.bin"]
        assert report.ok
    finally:
        server.stop()


def test_started_while_unreachable_it_goes_on_from_the_newest_pass_there(tmp_path, s3_server, bucket):
    """A job restarted while the server is down: once it answers, the next pass is number
    2 and still holds pass 1's files (it never reuses pass 1's number or folder)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a")
    down = threading.Event()
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.on_request = lambda request: (503, "ServiceUnavailable") if down.is_set() else None
        config = S3Config(endpoint_url=proxy.endpoint_url, max_attempts=1)
        with Checkpoint(src, f"s3://{bucket}/u", every="1h", s3=config):
            pass
        (src / "b.bin").write_bytes(b"b")
        down.set()
        ck = Checkpoint(src, f"s3://{bucket}/u", every="1h", s3=config, start_unreachable=True).start()
        assert ck.run_pass().error
        down.clear()
        report = ck.stop(timeout=60)
    assert (report.newest, report.files) == (2, 2)
    newest = s3_manifests(s3_server.client(), bucket, "u/")[-1]
    assert {f["path"]: f["pass"] for f in newest["files"]} == {"a.bin": 1, "b.bin": 2}


def test_a_failing_final_pass_names_the_files_not_saved(tmp_path, s3_server, bucket):
    src = tmp_path / "src"
    src.mkdir()
    with FaultProxy(s3_server.endpoint_url) as proxy:
        config = S3Config(endpoint_url=proxy.endpoint_url, max_attempts=1)
        ck = Checkpoint(src, f"s3://{bucket}/p", every="1h", final_timeout=1, s3=config).start()
        (src / "lost.bin").write_bytes(b"never saved")
        proxy.on_request = lambda request: (503, "ServiceUnavailable")
        with pytest.raises(CheckpointError, match="did not save") as caught:
            ck.stop(timeout=60)
    assert list(caught.value.not_saved) == ["lost.bin"]


def test_hostile_names_round_trip_through_s3(tmp_path, each_bucket):
    server, bucket = each_bucket
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    names = [n for n in HOSTILE_NAMES if server.keeps(n)]  # (see RcloneS3Server.keeps)
    for i, name in enumerate(names):
        (src / os.fsdecode(name)).write_bytes(b"x" * i)
    ck = Checkpoint(src, f"s3://{bucket}/h", every="1h").start()
    with pytest.raises(CheckpointError) as caught:
        ck.stop(timeout=60)
    # S3 keys are UTF-8: the one name that is not cannot be saved, and is named.
    assert list(caught.value.not_saved) == [os.fsdecode(b"\xff.bin")]
    assert "UTF-8" in caught.value.not_saved[os.fsdecode(b"\xff.bin")]
    restore(f"s3://{bucket}/h", out)
    assert {os.fsencode(p.name): p.stat().st_size for p in out.iterdir()} == {
        name: i for i, name in enumerate(names) if name != b"\xff.bin"
    }


# =============================================================================== rclone remotes
def test_hostile_names_and_incremental_passes_through_an_rclone_remote(tmp_path, local_remote):
    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "out"
    src.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):
        (src / os.fsdecode(name)).write_bytes(b"x" * i)
    ck = Checkpoint(src, f"{local_remote}:{dst}", every="1d", settle=0).start()
    try:
        first = ck.run_pass()
        # rclone cannot name a file whose name is not UTF-8; every other one is sent in one go.
        assert (first.number, first.sent) == (1, len(HOSTILE_NAMES) - 1)
        assert list(first.not_saved) == [os.fsdecode(b"\xff.bin")]
        (src / "new\nline.txt").write_bytes(b"changed")
        second = ck.run_pass()
        assert (second.number, second.sent) == (2, 1)
    finally:
        with pytest.raises(CheckpointError):
            ck.stop(timeout=60)
    restore(f"{local_remote}:{dst}", out)
    want = {name: i for i, name in enumerate(HOSTILE_NAMES) if name != b"\xff.bin"}
    want[b"new\nline.txt"] = len(b"changed")
    assert {os.fsencode(p.name): p.stat().st_size for p in out.iterdir()} == want
    assert (out / "new\nline.txt").read_bytes() == b"changed"


def test_an_unreachable_rclone_remote_is_refused_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("RCLONE_CONFIG", os.devnull)
    for name, value in dict(TYPE="s3", PROVIDER="Other", ENDPOINT="http://127.0.0.1:9", ACCESS_KEY_ID="k",
                            SECRET_ACCESS_KEY="s", FORCE_PATH_STYLE="true").items():
        monkeypatch.setenv(f"RCLONE_CONFIG_GONE_{name}", value)
    with pytest.raises(DestinationUnreachableError, match="rclone lsf failed"):
        Checkpoint(tmp_path, "gone:bucket/p", every="1s").start()
