"""ParallelCopy with ``s3://`` on one side, against a real S3 server (issue 15).

Every copy here runs the real per-shard worker (:mod:`taurus_tools.transfer.s3_worker`)
as a process of the local backend (or as Slurm jobs, at the end) against the server of
the ``server`` fixture.  Where the test needs the server to misbehave on cue (deny one
key, cut one transfer short, hold the second part of a multipart upload while a
process is killed), the copy talks to it through :class:`s3_proxy.FaultProxy`, which
forwards everything else unchanged.  Keys the file-backed test server cannot hold at
all (``..``, ``//``, a key ``a`` beside ``a/b``, folder markers) come from moto's
server, which stores keys as given.

Quirks of ``rclone serve s3`` (REFERENCE section 7) and how the tests stand to them:
nothing asserts on ETags (its multipart ETags are plain MD5s) or on the case of
metadata names (it returns ``Mtime``; the worker and :meth:`Bucket.objects` read them
case-insensitively); it stores a folder marker ``a/`` as an empty file and lists it as
the key ``a``, so folder markers come from moto; it ignores ``If-Match``, so the
replaced-object test shows the worker's own check (on an AWS-like server the ranged
GET would fail with 412 first; the test accepts either way of detection).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import psutil
import pytest
from helpers import HOSTILE, HOSTILE_NAMES, MiB, make_tree, scripts_below, wait_for
from s3_proxy import FaultProxy, Request

from taurus_tools import (
    ConfigurationError,
    CopyResult,
    Datamover,
    ParallelCopy,
    SourceNotFoundError,
)
from taurus_tools.errors import S3Error
from taurus_tools.transfer.s3 import MD5_KEY, S3Config, format_mtime, make_client, object_mtime, stored_md5

pytestmark = pytest.mark.timeout(180)

MTIME0 = 1_600_000_000_123_456_789  # a past modification time with every nanosecond digit set
BIG = 20 * MiB  # above the worker's multipart threshold (8 MiB): three parts
WORKER = "transfer/s3_worker.py"


# =============================================================================== fixtures
@pytest.fixture
def server(s3_servers):
    """The S3 server under test: each test runs against rclone serve s3 and SeaweedFS."""
    return s3_servers


@dataclass
class Bucket:
    """A fresh bucket on the server, a client of it, and what the tests ask of it."""

    client: Any
    name: str
    server: Any

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.name}/{prefix}"

    def objects(self, prefix: str = "") -> Dict[str, Tuple[int, str, Optional[int]]]:
        """Every object below ``prefix``: relative key -> (size, digest, mtime metadata in ns)."""
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Contents", ()):
                got = self.client.get_object(Bucket=self.name, Key=item["Key"])
                data = got["Body"].read()
                out[item["Key"][len(prefix):]] = (len(data), _digest(data), object_mtime(got, stored_only=True))
        return out

    def keys(self, prefix: str = "") -> List[str]:
        """The keys starting with ``prefix`` (one page: the tests hold fewer than 1,000)."""
        found = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix).get("Contents", [])
        return [item["Key"] for item in found]

    def uploads(self) -> List[Tuple[str, str]]:
        """The unfinished multipart uploads of the bucket: (key, upload id)."""
        found = self.client.list_multipart_uploads(Bucket=self.name).get("Uploads", [])
        return [(u["Key"], u["UploadId"]) for u in found]

    def put(self, key: str, data: bytes, mtime_ns: Optional[int] = None) -> None:
        meta = {"mtime": format_mtime(mtime_ns)} if mtime_ns is not None else {}
        self.client.put_object(Bucket=self.name, Key=key, Body=data, Metadata=meta)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()  # type: ignore[no-any-return]


def use_server(env: Dict[str, str], monkeypatch) -> None:
    """Point boto3 (here and in every worker started from here) at a server: ``env`` has
    its ``AWS_*`` variables; other ways to a server or to credentials are taken away."""
    for name in ("AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


_buckets = iter(range(10**6))


@pytest.fixture
def bucket(server, monkeypatch) -> Bucket:
    use_server(server.env({}), monkeypatch)
    client, _ = make_client(S3Config())
    name = f"tt-copy-{os.getpid()}-{next(_buckets)}"
    client.create_bucket(Bucket=name)
    return Bucket(client, name, server)


@pytest.fixture
def proxy(server):
    """A :class:`FaultProxy` in front of the server; a test sets its ``on_request``."""
    with FaultProxy(server.endpoint_url) as p:
        yield p


@pytest.fixture
def dm(no_slurm_env):
    return Datamover("local")


# =============================================================================== helpers
def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def copy(src, dst, work: Path, dm: Datamover, **options) -> CopyResult:
    return pcopy(src, dst, work, dm, **options).run()


def pcopy(src, dst, work: Path, dm: Datamover, **options) -> ParallelCopy:
    options.setdefault("workers", 2)
    options.setdefault("threads", 4)
    options.setdefault("retry_delay_s", 0.05)
    return ParallelCopy(src, dst, datamover=dm, progress=False, work_dir=work, **options)


def files(root: Path) -> Dict[str, Tuple[int, str, int]]:
    """Every regular file below ``root``: relative path -> (size, digest, mtime in ns)."""
    out = {}
    top = os.fsencode(root)
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(dirpath, name)
            try:  # (a copy may still rename its temporary files)
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as fh:
                        out[os.fsdecode(os.path.relpath(path, top))] = (st.st_size, _digest(fh.read()), st.st_mtime_ns)
            except FileNotFoundError:
                pass
    return out


def part_files(root: Path) -> List[str]:
    """Temporary names of a download (``.tt-part-*``) anywhere below ``root``."""
    found = []
    for dirpath, dirs, names in os.walk(os.fsencode(root)):
        found += [os.fsdecode(os.path.join(dirpath, n)) for n in dirs + names if n.startswith(b".tt-part-")]
    return found


def write(path: Path, data: bytes, mtime_ns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _utf8_names(server: Any = None) -> List[str]:
    """The hostile names of tests/helpers.py that S3 keys can hold (all but the non-UTF-8
    one), and control characters; only those ``server`` keeps as sent (``keeps``: SeaweedFS
    turns a backslash into a slash, rclone serve s3 lists control characters in its own
    spelling once it reads a folder from disk)."""
    out = []
    for name in HOSTILE_NAMES:
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            continue
        out.append(text)
    out += [n for n in HOSTILE if n not in out] + ["control \x01\x1b\x7f\r chars"]
    if server is not None:
        out = [n for n in out if server.keeps(n)]
    return out


def make_s3_tree(root: Path, *, big: bool = False, server: Any = None) -> Dict[str, Tuple[int, str, int]]:
    """Hostile names at the top and three levels down, an empty file, a deep path, and
    (``big``) one 20 MiB file; each file with its own past mtime to the nanosecond."""
    i = 0
    for folder in ("", "sub dir/-x ü/deeper"):
        for name in _utf8_names(server):
            write(root / folder / name, os.urandom(100 + i), MTIME0 + i * 1_000_001)
            i += 1
    write(root / "zero", b"", MTIME0 - 1)
    write(root / "a" / "b" / "c" / "d" / "leaf.txt", b"leaf", MTIME0 + 3)
    if big:
        write(root / "big file.bin", os.urandom(BIG), MTIME0 + 5)
    return files(root)


def s3_workers(pid: int) -> List[psutil.Process]:
    """The S3 shard workers running below ``pid``."""
    return scripts_below(pid, WORKER)


def read_report(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class Hold:
    """An ``on_request`` that holds the requests ``match`` takes, from the ``after``-th on,
    until :meth:`release` (the test kills or cancels meanwhile)."""

    def __init__(self, match: Callable[[Request], bool], after: int = 1, timeout: float = 90.0) -> None:
        self.match = match
        self.after = after
        self.timeout = timeout
        self.count = 0
        self.held = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: Request):
        if not self.match(request) or self.released.is_set():
            return None
        with self._lock:
            self.count += 1
            hold = self.count > self.after
        if hold:
            self.held.set()
            self.released.wait(self.timeout)
        return None

    def release(self) -> None:
        self.released.set()


# =============================================================================== round trips
class TestRoundTrip:
    @pytest.mark.parametrize("verify", ["size", "checksum"])
    def test_hostile_tree_up_and_down_byte_identical_then_skipped_then_changed(
        self, tmp_path, bucket, dm, verify
    ):
        src, dst = tmp_path / "src", tmp_path / "dst"
        want = make_s3_tree(src, big=True, server=bucket.server)
        total = sum(size for size, _, _ in want.values())

        up = copy(src, bucket.url("up"), tmp_path / "w-up", dm, verify=verify)
        assert up.ok, up.failed_messages
        assert (up.files_planned, up.files_copied, up.bytes_copied) == (len(want), len(want), total)
        assert up.files_verified == len(want) and up.files_failed == 0 and up.retries == 0
        objects = bucket.objects("up/")
        # Byte-identical objects, each with the file's mtime to the nanosecond (rclone's key).
        assert objects == want
        odd = "new\nline" if bucket.server.keeps("new\nline") else "-leading-dash"
        for key in ("big file.bin", odd, "zero"):
            head = bucket.client.head_object(Bucket=bucket.name, Key="up/" + key)
            stored = {k.lower(): v for k, v in head["Metadata"].items()}.get(MD5_KEY)  # rclone's: "Md5chksum"
            if verify == "checksum":  # the MD5 to check later downloads against (not the ETag)
                assert stored == base64.b64encode(hashlib.md5((src / key).read_bytes()).digest()).decode()
                assert stored_md5(head) == hashlib.md5((src / key).read_bytes()).digest()
            else:
                assert stored is None
        assert bucket.uploads() == []

        rerun = dict(verify=verify, workers=1)  # (one worker will do: fewer interpreters to start)
        again = copy(src, bucket.url("up"), tmp_path / "w-up", dm, **rerun)
        assert again.ok and again.files_copied == 0
        assert (again.files_skipped, again.bytes_skipped) == (len(want), total)

        # A file changed without changing its size: its new mtime gets it copied again.
        changed = src / "sub dir" / "-x ü" / "deeper" / odd
        write(changed, os.urandom(changed.stat().st_size), MTIME0 + 10**9)
        want = files(src)
        third = copy(src, bucket.url("up"), tmp_path / "w-up", dm, **rerun)
        assert third.ok and (third.files_copied, third.files_skipped) == (1, len(want) - 1)
        assert bucket.objects("up/") == want

        down = copy(bucket.url("up"), dst, tmp_path / "w-down", dm, verify=verify)
        assert down.ok, down.failed_messages
        assert (down.files_copied, down.bytes_copied, down.files_verified) == (len(want), total, len(want))
        assert files(dst) == want  # contents, and the mtimes restored to the nanosecond
        assert part_files(dst) == []

        again = copy(bucket.url("up"), dst, tmp_path / "w-down", dm, **rerun)
        assert again.ok and again.files_copied == 0 and again.files_skipped == len(want)

        # An object replaced at the source (another size, another mtime): downloaded again.
        bucket.put("up/a/b/c/d/leaf.txt", b"a new leaf", MTIME0 + 77)
        third = copy(bucket.url("up"), dst, tmp_path / "w-down", dm, **rerun)
        assert third.ok and (third.files_copied, third.files_skipped) == (1, len(want) - 1)
        leaf = dst / "a" / "b" / "c" / "d" / "leaf.txt"
        assert leaf.read_bytes() == b"a new leaf" and leaf.stat().st_mtime_ns == MTIME0 + 77

    def test_links_and_names_that_cannot_be_keys_fail_with_their_reason_the_rest_is_copied(
        self, tmp_path, bucket, dm
    ):
        src = tmp_path / "src"
        make_tree(src)  # links (to a file, to a folder, absolute, dangling), empty folders
        write(src / "latin-1 \xe9".encode("latin-1").decode("utf-8", "surrogateescape"), b"x", MTIME0)
        write(src / "sub dir" / os.fsdecode(b"\xff.bin"), b"y", MTIME0)
        result = copy(src, bucket.url("t"), tmp_path / "work", dm)
        assert not result.ok
        lines = result.failed_messages
        assert result.files_failed == 4 and len(lines) == 4, lines
        by_name = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines}
        assert "symbolic link to a folder" in by_name["link to dir"]
        assert "dangling symbolic link" in by_name[repr("dangling\nlink")]
        assert "not valid UTF-8" in by_name[os.fsdecode(b"latin-1 \xe9")]
        assert "not valid UTF-8" in by_name[os.fsdecode(b"sub dir/\xff.bin")]
        assert result.retries == 0  # no retry heals these: reported at once
        keys = bucket.objects("t/")
        # Links to files are followed (as the AWS CLI does); folders are no objects.
        assert keys["link to file"][:2] == keys["with space"][:2]
        assert keys["absolute link"][0] == os.stat("/etc/hostname").st_size
        want = {rel: v for rel, v in files(src).items() if "\\udc" not in ascii(rel)}
        for rel, (size, digest, mtime) in want.items():
            assert keys[rel] == (size, digest, mtime), rel
        assert not any(k.startswith(("empty dir", "a/b/empty", "link to dir")) for k in keys)
        report = read_report(result.report)
        assert report["failed_messages"] == lines and report["files_failed"] == 4


# =============================================================================== one object
class TestOneOff:
    def test_one_object_into_a_folder(self, tmp_path, bucket, dm):
        bucket.put("p/file.bin", b"the one", MTIME0)
        bucket.put("p/file.bin.old", b"not this")
        bucket.put("p/other", b"nor this")
        dst = tmp_path / "dst"
        result = copy(bucket.url("p/file.bin"), dst, tmp_path / "work", dm)
        assert result.ok, result.failed_messages
        assert (result.files_planned, result.files_copied) == (1, 1)
        assert files(dst) == {"file.bin": (7, _digest(b"the one"), MTIME0)}

    def test_an_object_without_mtime_metadata_gets_its_last_modified_and_is_skipped_next_time(
        self, tmp_path, bucket, dm
    ):
        bucket.put("q/plain", b"put by another tool")  # no mtime metadata
        dst = tmp_path / "dst"
        first = copy(bucket.url("q/plain"), dst, tmp_path / "work", dm)
        assert first.ok and first.files_copied == 1
        head = bucket.client.head_object(Bucket=bucket.name, Key="q/plain")
        assert (dst / "plain").stat().st_mtime_ns == int(head["LastModified"].timestamp() * 1e9)
        second = copy(bucket.url("q/plain"), dst, tmp_path / "work", dm)
        assert second.ok and (second.files_copied, second.files_skipped) == (0, 1)


# =============================================================================== keys
@pytest.fixture(scope="module")
def moto_endpoint():
    """moto's S3 server on 127.0.0.1: it stores keys the file-backed server cannot (``..``,
    ``//``, ``a`` beside ``a/b``, folder markers).  Any secret passes: only for these keys."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        moto.stop()


@pytest.fixture
def moto_bucket(moto_endpoint, monkeypatch) -> Bucket:
    env = dict(
        AWS_ACCESS_KEY_ID="moto", AWS_SECRET_ACCESS_KEY="moto", AWS_ENDPOINT_URL=moto_endpoint,
        AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    use_server(env, monkeypatch)
    client, _ = make_client(S3Config())
    name = f"tt-keys-{next(_buckets)}"
    client.create_bucket(Bucket=name)
    return Bucket(client, name, None)


class TestKeysThatAreNoFileNames:
    def test_nothing_is_written_outside_and_each_bad_key_says_why(self, tmp_path, moto_bucket, dm):
        good = {"ok": b"ok", "ctl\x01\x7f\r": b"control", "tab\tx": b"tab", "sub/f": b"below a marker"}
        bad = {
            "../escape": "'..' component",
            "x/../../escape2": "'..' component",
            "/abs": "starts with '/'",
            "x//y": "empty component",
            "./z": "'.' component",
            "nonempty/": "ends with '/'",
        }
        for key, data in good.items():
            moto_bucket.put("p/" + key, data, MTIME0)
        for key in bad:
            moto_bucket.put("p/" + key, b"bad" if key == "nonempty/" else b"x", MTIME0)
        moto_bucket.put("p/folder/", b"")  # folder markers: folders, as for rclone and the AWS CLI
        moto_bucket.put("p/sub/", b"")
        dst = tmp_path / "in" / "dst"
        result = copy(moto_bucket.url("p"), dst, tmp_path / "work", dm)
        assert not result.ok
        assert files(dst) == {k: (len(v), _digest(v), MTIME0) for k, v in good.items()}
        assert not (dst / "folder").is_file()
        assert not list(tmp_path.rglob("escape*")) and not (tmp_path / "in" / "z").exists()
        lines = result.failed_messages
        assert len(lines) == len(bad), lines
        for key, why in bad.items():
            line = next((m for m in lines if m.startswith(repr(moto_bucket.url("p/" + key)))), None)
            assert line is not None and why in line, (key, lines)
        assert result.files_planned == len(good)  # refused keys are left out of the plan

    def test_a_key_and_a_key_below_it_one_is_copied_the_other_fails_saying_why(self, tmp_path, moto_bucket, dm):
        moto_bucket.put("p/a", b"file a", MTIME0)
        moto_bucket.put("p/a/b", b"file a/b", MTIME0)
        moto_bucket.put("p/c", b"c", MTIME0)
        dst = tmp_path / "dst"
        result = copy(moto_bucket.url("p"), dst, tmp_path / "work", dm, workers=1, threads=2)
        assert not result.ok and result.files_failed == 1
        (line,) = result.failed_messages
        got = files(dst)
        assert got["c"][1] == _digest(b"c")
        if "a" in got:  # the object a arrived, so a/b cannot
            assert line.startswith("a/b: ") and "'a' is a file" in line, line
        else:
            assert got["a/b"][1] == _digest(b"file a/b")
            assert line.startswith("a: ") and "a folder of that name" in line, line
        assert result.retries == 0  # no retry heals it

    @pytest.mark.parametrize("first", ["a", "a/b"])
    def test_a_key_and_a_key_below_it_in_either_order(self, tmp_path, moto_bucket, first):
        moto_bucket.put("p/a", b"file a", MTIME0)
        moto_bucket.put("p/a/b", b"file a/b", MTIME0)
        second = "a/b" if first == "a" else "a"
        want = {
            # The one that came second fails: "a" where a folder is, or "a/b" below a file.
            "a/b": "'a' is a file at the destination where the key needs a folder",
            "a": "a folder of that name is at the destination",
        }[second]
        dst = tmp_path / "dst"
        dst.mkdir()
        for new in (True, False):  # the first attempt into an empty folder, then a retry
            rc, status, messages = run_worker(
                tmp_path, "download", dst, moto_bucket.url("p"), [(6, first), (8, second)], new=new, threads=1
            )
            assert rc == 1 and status["failed"] == 1, messages
            (message,) = messages
            assert message["path"] == second and want in message["error"] and message["permanent"], message
        assert files(dst) == {first: (6 if first == "a" else 8, _digest(b"file " + first.encode()), MTIME0)}

    def test_the_worker_refuses_records_that_leave_the_destination(self, tmp_path, bucket):
        """Records are checked again where they are written (a listing is not trusted)."""
        bucket.put("w/ok", b"fine", MTIME0)
        dst = tmp_path / "in" / "dst"
        dst.mkdir(parents=True)
        bad = ["../up", "/abs/olute", "x/../../y", "x/../../../../etc/passwd-tt"]
        rc, status, messages = run_worker(tmp_path, "download", dst, bucket.url("w"), [(4, r) for r in ["ok", *bad]])
        assert rc == 1 and (status["files"], status["failed"], status["done"]) == (1, 4, True)
        assert files(dst) == {"ok": (4, _digest(b"fine"), MTIME0)}
        assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["dst"]
        assert not (tmp_path / "y").exists() and not Path("/etc/passwd-tt").exists()
        assert sorted(m["path"] for m in messages) == sorted(bad)
        assert all("leaves the destination" in m["error"] and m["permanent"] for m in messages)
        permanent = (tmp_path / "failed.permanent").read_bytes()
        assert sorted(permanent.split(b"\0")[:-1]) == sorted(b"f\t4\t%d\t%s" % (MTIME0, r.encode()) for r in bad)


def run_worker(
    tmp_path: Path, direction: str, local: Path, url: str, records, *, new: bool = False, threads: int = 2
) -> Tuple[int, dict, List[dict]]:
    """Run the S3 worker on hand-written records ``(size, path)``; its exit code, status and messages."""
    shard, status, failed = tmp_path / "shard", tmp_path / "status", tmp_path / "failed"
    shard.write_bytes(b"".join(b"f\t%d\t%d\t%s\0" % (size, MTIME0, os.fsencode(rel)) for size, rel in records))
    argv = [sys.executable, str(worker_script()), direction, f"--local={local}", f"--url={url}", f"--shard={shard}",
            f"--status={status}", f"--failed={failed}", f"--threads={threads}", *(["--new"] if new else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    lines = Path(str(failed) + ".messages").read_text().splitlines()
    return proc.returncode, json.loads(status.read_text()), [json.loads(line) for line in lines]


def worker_script() -> Path:
    from taurus_tools.transfer.s3 import WORKER_SCRIPT

    return WORKER_SCRIPT


# =============================================================================== crashes
def small_and_big(src: Path, big: int = 2) -> Dict[str, Tuple[int, str, int]]:
    """Twenty small files and ``big`` files of 9 MiB (multipart: two parts each)."""
    for i in range(20):
        write(src / f"small {i:02d}", os.urandom(1000 + i), MTIME0 + i)
    for i in range(big):
        write(src / "deep" / f"big {i}.bin", os.urandom(9 * MiB), MTIME0 + 100 + i)
    return files(src)


def cli(*args: str) -> List[str]:
    """``taurus-tools copy ARGS`` on the local backend, quiet."""
    return [sys.executable, "-m", "taurus_tools", "-q", "--backend", "local", "copy", *args]


def cli_argv(src, dst, work: Path, endpoint: str, *extra: str) -> List[str]:
    """A copy through ``endpoint`` with 2 workers x 2 threads, the report beside the work dir."""
    return cli(str(src), str(dst), "--workers", "2", "--threads", "2", "--work-dir", str(work),
               "--report", str(work.parent / "report.json"), "--endpoint-url", endpoint, *extra)


def run_cli(argv: List[str], env: Optional[Dict[str, str]] = None) -> Tuple[subprocess.CompletedProcess, float]:
    """Run a command line; its result and how long it took."""
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    return proc, time.monotonic() - started


def is_part_of(bucket: Bucket) -> Callable[[Request], bool]:
    return lambda r: r.is_part and r.bucket == bucket.name


def is_range_of(bucket: Bucket, key: str) -> Callable[[Request], bool]:
    return lambda r: r.is_ranged_get and r.bucket == bucket.name and r.key == key


def first_part_arrived(dst: Path) -> None:
    """Wait until a download's temporary file holds bytes (its first part was written)."""
    def filled() -> List[str]:
        found = []
        for path in part_files(dst):
            with contextlib.suppress(OSError):  # renamed or removed meanwhile
                if os.path.getsize(path) > 0:
                    found.append(path)
        return found

    wait_for(filled, timeout=60, what="a temporary file with the first part in it")


def held_while(copy_or_driver, hold: Hold) -> None:
    """Wait until ``hold`` holds a request (failing at once if the copy ends first)."""
    def ended() -> bool:
        return copy_or_driver.done() if hasattr(copy_or_driver, "done") else copy_or_driver.poll() is not None

    wait_for(lambda: hold.held.is_set() or ended(), timeout=60, what="a held request")
    assert not ended(), "the copy ended before the request it should hang in"


def test_a_download_in_the_driver_splices_its_bodies_and_the_report_says_where_shards_ran(
    tmp_path, bucket, dm, monkeypatch
):
    from taurus_tools.transfer import s3_http

    assert s3_http.CAN_SPLICE, "this Linux has no splice(2) for Python: the spliced path is untested"
    src = tmp_path / "src"
    want = small_and_big(src, big=1)
    assert copy(src, bucket.url("k"), tmp_path / "w-up", dm).ok
    spliced: List[int] = []
    real = s3_http._Connection.splice_to

    def counting(conn, fd, at, size):
        spliced.append(size)
        return real(conn, fd, at, size)

    monkeypatch.setattr(s3_http._Connection, "splice_to", counting)
    here = copy(bucket.url("k"), tmp_path / "here", tmp_path / "w-here", dm, in_process=True)
    assert here.ok and files(tmp_path / "here") == want
    # The large object's bytes (less what came with each response's head) went by splice.
    assert sum(spliced) > 8 * MiB, spliced
    assert read_report(here.report)["shards_in_process"] is True
    apart = copy(bucket.url("k"), tmp_path / "apart", tmp_path / "w-apart", dm, in_process=False)
    assert apart.ok and files(tmp_path / "apart") == want
    assert read_report(apart.report)["shards_in_process"] is False


class TestCrash:
    def test_kill_9_of_a_worker_mid_multipart_upload_is_retried_without_orphans(
        self, tmp_path, bucket, proxy, dm
    ):
        src = tmp_path / "src"
        want = small_and_big(src)
        proxy.on_request = hold = Hold(is_part_of(bucket))
        pc = pcopy(src, bucket.url("k"), tmp_path / "work", dm, endpoint_url=proxy.endpoint_url, workers=1,
                   threads=2, in_process=False).start()
        try:
            held_while(pc, hold)
            assert bucket.uploads(), "no multipart upload under way"
            (victim,) = s3_workers(os.getpid())
            victim.kill()  # (never waited for here: the copy's handle must reap it, to see -9)
        finally:
            hold.release()
        result = pc.wait(120)
        assert result.ok, result.failed_messages
        assert result.retries >= 1
        assert bucket.uploads() == []  # the retry aborted what the killed worker had begun
        assert bucket.objects("k/") == want
        assert result.files_copied + result.files_skipped == len(want)
        chunks = read_report(result.report)["benchmark_results"]
        assert any(c["exit_code"] == -signal.SIGKILL for c in chunks), chunks

    def test_kill_9_of_a_worker_mid_multipart_download_leaves_no_temporary_file(
        self, tmp_path, bucket, proxy, dm
    ):
        src, dst = tmp_path / "src", tmp_path / "dst"
        want = small_and_big(src, big=1)
        assert copy(src, bucket.url("k"), tmp_path / "w-up", dm).ok
        proxy.on_request = hold = Hold(is_range_of(bucket, "k/deep/big 0.bin"))
        pc = pcopy(bucket.url("k"), dst, tmp_path / "work", dm, endpoint_url=proxy.endpoint_url, workers=1,
                   threads=2, in_process=False).start()
        try:
            held_while(pc, hold)
            first_part_arrived(dst)
            (victim,) = s3_workers(os.getpid())
            victim.kill()
            complete = files(dst)
        finally:
            hold.release()
        # Nothing incomplete ever has a real name.
        assert all(
            want[rel] == got for rel, got in complete.items() if not os.path.basename(rel).startswith(".tt-part-")
        ), complete
        result = pc.wait(120)
        assert result.ok, result.failed_messages
        assert files(dst) == want
        assert part_files(dst) == []

    @pytest.mark.parametrize("in_process", ["yes", "no"])
    def test_kill_9_of_the_driver_mid_upload_then_resume(self, tmp_path, bucket, proxy, in_process):
        src, work = tmp_path / "src", tmp_path / "work"
        want = small_and_big(src)
        proxy.on_request = hold = Hold(is_part_of(bucket))
        argv = cli_argv(src, bucket.url("k"), work, proxy.endpoint_url, f"--in-process={in_process}")
        driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            held_while(driver, hold)
            # The other threads go on with the small files: some arrive before the kill.
            wait_for(lambda: bucket.keys("k/small"), timeout=60, what="a small file uploaded")
            workers = s3_workers(driver.pid)
            assert bool(workers) is (in_process == "no")  # (in the driver: its threads)
            driver.kill()
            for worker in workers:
                worker.kill()
            driver.wait(10)
            psutil.wait_procs(workers, timeout=10)
            assert bucket.uploads(), "no multipart upload was left to abort"
            at_kill = bucket.objects("k/")
        finally:
            hold.release()
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        resumed = len(proxy.requests)
        again, _ = run_cli(argv)
        assert again.returncode == 0, again.stderr
        assert bucket.uploads() == []
        assert bucket.objects("k/") == want
        # What had a key at the kill was whole, and the resume did not send it again.
        assert at_kill and all(want[key] == got for key, got in at_kill.items()), at_kill
        sent_again = {r.key[2:] for r in proxy.requests[resumed:] if r.method == "PUT"} & set(at_kill)
        assert not sent_again
        report = read_report(tmp_path / "report.json")
        assert report["ok"] and report["files_copied"] + report["files_skipped"] == len(want)

    @pytest.mark.parametrize("in_process", ["yes", "no"])
    def test_kill_9_of_the_driver_mid_download_then_resume(self, tmp_path, bucket, proxy, dm, in_process):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        want = small_and_big(src)
        assert copy(src, bucket.url("k"), tmp_path / "w-up", dm).ok
        proxy.on_request = hold = Hold(is_range_of(bucket, "k/deep/big 1.bin"))
        argv = cli_argv(bucket.url("k"), dst, work, proxy.endpoint_url, f"--in-process={in_process}")
        driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            held_while(driver, hold)
            first_part_arrived(dst)
            wait_for(lambda: [rel for rel in files(dst) if rel.startswith("small")], timeout=60,
                     what="a small file downloaded")
            workers = s3_workers(driver.pid)
            assert bool(workers) is (in_process == "no")
            driver.kill()
            for worker in workers:
                worker.kill()
            driver.wait(10)
            psutil.wait_procs(workers, timeout=10)
        finally:
            hold.release()
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        at_kill = {
            rel: got for rel, got in files(dst).items() if not os.path.basename(rel).startswith(".tt-part-")
        }
        assert at_kill and all(want[rel] == got for rel, got in at_kill.items()), at_kill  # whole, or absent
        inodes = {rel: os.lstat(dst / rel).st_ino for rel in at_kill}
        again, _ = run_cli(argv)
        assert again.returncode == 0, again.stderr
        assert files(dst) == want
        assert part_files(dst) == []
        rewritten = [rel for rel, inode in inodes.items() if os.lstat(dst / rel).st_ino != inode]
        assert rewritten == [], "files whole at the kill were downloaded again"

    @pytest.mark.parametrize("in_process", ["yes", "no"])
    def test_sigterm_to_the_command_mid_upload_aborts_it_and_a_rerun_completes(self, tmp_path, bucket, proxy,
                                                                               in_process):
        src, work = tmp_path / "src", tmp_path / "work"
        want = small_and_big(src)
        proxy.on_request = hold = Hold(is_part_of(bucket))
        argv = cli_argv(src, bucket.url("k"), work, proxy.endpoint_url, f"--in-process={in_process}")
        driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            held_while(driver, hold)
            assert bucket.uploads(), "no multipart upload under way"
            workers = s3_workers(driver.pid)
            assert bool(workers) is (in_process == "no")
            started = time.monotonic()
            driver.send_signal(signal.SIGTERM)
            _out, err = driver.communicate(timeout=60)
            took = time.monotonic() - started
        finally:
            hold.release()
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        assert driver.returncode == 128 + signal.SIGTERM, err
        assert "Run the same command again to resume it" in err
        assert took < 15, f"the command took {took:.1f} s to stop"
        assert bucket.uploads() == []  # the upload in flight was aborted before the command ended
        assert psutil.wait_procs(workers, timeout=10)[1] == []  # and no worker is left
        again, _ = run_cli(argv)
        assert again.returncode == 0, again.stderr
        assert bucket.objects("k/") == want and bucket.uploads() == []

    @pytest.mark.parametrize("in_process", [True, False])
    def test_cancel_mid_multipart_upload_aborts_it(self, tmp_path, bucket, proxy, dm, in_process):
        src = tmp_path / "src"
        small_and_big(src, big=1)
        proxy.on_request = hold = Hold(is_part_of(bucket))
        pc = pcopy(src, bucket.url("k"), tmp_path / "work", dm, endpoint_url=proxy.endpoint_url, workers=1,
                   in_process=in_process)
        pc.start()
        try:
            held_while(pc, hold)
            assert bucket.uploads()
            started = time.monotonic()
            assert pc.cancel(timeout=60)
            took = time.monotonic() - started
            # Interrupted, the worker aborted its multipart upload: nothing waits for a resume.
            assert bucket.uploads() == []
            assert took < 10, f"cancel took {took:.1f} s"
        finally:
            hold.release()


# =============================================================================== retry, verify, report
class FailOnce:
    """An ``on_request`` that answers the first ``times`` ``method`` requests for each of
    ``keys`` with ``action``."""

    def __init__(self, method: str, keys, action, times: int = 1) -> None:
        self.method, self.action = method, action
        self.left = dict.fromkeys(keys, times)
        self._lock = threading.Lock()

    def __call__(self, request: Request):
        with self._lock:
            if request.method == self.method and self.left.get(request.key):
                self.left[request.key] -= 1
                return self.action
        return None


class TestRetryVerifyReport:
    @pytest.mark.parametrize("direction", ["upload", "download"])
    def test_only_the_failed_entries_are_retried(self, tmp_path, bucket, proxy, dm, direction):
        src, dst = tmp_path / "src", tmp_path / "dst"
        want = small_and_big(src, big=0)
        flaky = {"small 03", "small 11", "small 17"}
        if direction == "upload":
            # A body the server says does not match its Content-MD5: worth another try.  Twice:
            # the worker's direct PUT (s3_direct) and then the client's, within one attempt.
            proxy.on_request = FailOnce("PUT", {"k/" + k for k in flaky}, (400, "BadDigest"), times=2)
            result = copy(src, bucket.url("k"), tmp_path / "work", dm, endpoint_url=proxy.endpoint_url)
            assert bucket.objects("k/") == want
        else:
            assert copy(src, bucket.url("k"), tmp_path / "w-up", dm).ok
            proxy.on_request = FailOnce("GET", {"k/" + k for k in flaky}, "truncate")  # cut short
            result = copy(bucket.url("k"), dst, tmp_path / "work", dm, endpoint_url=proxy.endpoint_url)
            assert files(dst) == want and part_files(dst) == []
        assert result.ok, result.failed_messages
        assert result.retries >= 1 and result.files_failed == 0
        assert (result.files_copied, result.bytes_copied) == (len(want), sum(v[0] for v in want.values()))
        method = "PUT" if direction == "upload" else "GET"
        sent = [r.key[2:] for r in proxy.requests if r.method == method and r.key.startswith("k/")]
        for failed in proxy.server_errors:  # the server's own failures, asked again within the attempt
            if failed.method == method and failed.key.startswith("k/"):
                sent.remove(failed.key[2:])
        # Every other one once; the flaky ones once more for each refusal (uploads: the direct
        # PUT and the client's, in the first attempt), then again in the retry.
        again = [*flaky, *flaky] if direction == "upload" else [*flaky]
        assert sorted(sent) == sorted([*want, *again])
        report = read_report(result.report)
        chunks = report["benchmark_results"]
        assert sum(c["total_number_of_files"] for c in chunks if c["attempt"] == 1) == len(flaky)
        # Per-shard figures: every file and byte counted once, in the attempt that copied it.
        assert sum(c["total_number_of_files"] for c in chunks) == len(want)
        assert sum(c["total_bytes_transferred"] for c in chunks) == report["bytes_planned"]
        assert report["total_retries"] == result.retries and report["ok"] is True

    def test_verify_checksum_refuses_content_that_is_not_the_stored_md5(self, tmp_path, bucket, dm):
        bucket.put("v/good", b"good", MTIME0)
        md5 = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
        bucket.client.put_object(Bucket=bucket.name, Key="v/bad", Body=b"corrupted",
                                 Metadata={"mtime": format_mtime(MTIME0), MD5_KEY: md5})
        dst = tmp_path / "dst"
        result = copy(bucket.url("v"), dst, tmp_path / "work", dm, verify="checksum", retries=1)
        assert not result.ok
        assert result.failed_messages == [
            "bad: the content's MD5 is not the one stored with the object (verify=checksum)"
        ]
        assert result.mismatches == 2 and result.retries == 1  # checked again on the retry
        assert files(dst) == {"good": (4, _digest(b"good"), MTIME0)}  # never under its real name
        assert part_files(dst) == []
        # verify=size does not read the content again: it copies what is there.
        assert copy(bucket.url("v"), dst, tmp_path / "w2", dm, verify="size").ok


class TestAccessDenied:
    def test_denied_keys_on_download_fail_once_each_the_rest_is_copied(self, tmp_path, bucket, proxy, dm):
        src, dst, work = tmp_path / "src", tmp_path / "dst", tmp_path / "work"
        want = small_and_big(src, big=0)
        # A name with a line break, where the server keeps one (not rclone serve s3: see keeps).
        odd = bucket.server.keeps("new\nline")
        if odd:
            write(src / "new\nline", b"denied too", MTIME0)
        assert copy(src, bucket.url("k"), tmp_path / "w-up", dm).ok
        denied = {"k/small 05", "k/new\nline"}
        proxy.on_request = lambda r: (403, "AccessDenied") if r.method == "GET" and r.key in denied else None
        proc, _ = run_cli(cli_argv(bucket.url("k"), dst, work, proxy.endpoint_url))
        assert proc.returncode == 1, proc.stderr
        assert "FAILED" in proc.stdout
        assert "failed: small 05: access denied" in proc.stderr
        messages = ["small 05: access denied"]
        if odd:
            assert "failed: 'new\\nline': access denied" in proc.stderr  # one line, quoted
            messages.insert(0, "'new\\nline': access denied")
        report = read_report(tmp_path / "report.json")
        assert sorted(report["failed_messages"]) == messages
        assert report["total_retries"] == 0  # denied is for good: not retried with backoff
        del want["small 05"]
        assert files(dst) == want

    def test_denied_keys_on_upload(self, tmp_path, bucket, proxy, dm):
        src = tmp_path / "src"
        want = small_and_big(src, big=0)
        proxy.on_request = lambda r: (403, "AccessDenied") if r.method == "PUT" and r.key == "k/small 07" else None
        result = copy(src, bucket.url("k"), tmp_path / "work", dm, endpoint_url=proxy.endpoint_url)
        assert not result.ok and result.failed_messages == ["small 07: access denied"]
        assert result.retries == 0
        del want["small 07"]
        assert bucket.objects("k/") == want

    def test_an_unreadable_local_file_on_upload(self, tmp_path, bucket):
        """As a user without root's file access (setpriv drops it): permission denied for
        one file, the rest uploaded, exit 1."""
        src, work = tmp_path / "src", tmp_path / "work"
        want = small_and_big(src, big=0)
        (src / "small 02").chmod(0)
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                "--inh-caps=-dac_override,-dac_read_search", "--",
                *cli_argv(src, bucket.url("k"), work, bucket.server.endpoint_url)]
        probe = subprocess.run(argv[:4] + [sys.executable, "-c", f"open({str(src / 'small 02')!r})"],
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "PermissionError" in probe.stderr, "setpriv did not drop root's access"
        proc, _ = run_cli(argv)
        assert proc.returncode == 1, proc.stderr
        assert "failed: small 02: Permission denied" in proc.stderr
        report = read_report(tmp_path / "report.json")
        assert report["failed_messages"] == ["small 02: Permission denied"] and report["total_retries"] == 0
        del want["small 02"]
        assert bucket.objects("k/") == want


# =============================================================================== bad input
class TestBadInput:
    def test_a_missing_bucket(self, tmp_path, bucket, dm):
        src, dst = tmp_path / "src", tmp_path / "dst"
        write(src / "f", b"f", MTIME0)
        for args in ((src, "s3://tt-no-such-bucket/x"), ("s3://tt-no-such-bucket/x", dst)):
            with pytest.raises(S3Error) as info:
                pcopy(*args, tmp_path / "work", dm)
            message = str(info.value)
            assert "s3://tt-no-such-bucket/x/" in message and bucket.server.endpoint_url in message
            assert "the bucket 'tt-no-such-bucket' does not exist" in message
        proc, _ = run_cli(cli("s3://tt-no-such-bucket/x", str(dst), "--work-dir", str(tmp_path / "w")))
        assert proc.returncode == 1 and "the bucket 'tt-no-such-bucket' does not exist" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not dst.exists() and not (tmp_path / "w").exists()

    def test_a_wrong_secret_is_refused_at_once_without_a_retry_storm(self, tmp_path, bucket, proxy, dm):
        write(tmp_path / "src" / "f", b"f", MTIME0)
        bucket.put("k/f", b"f", MTIME0)
        env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"}
        for args in ((bucket.url("k"), str(tmp_path / "dst")), (str(tmp_path / "src"), bucket.url("k"))):
            before = len(proxy.requests)
            proc, took = run_cli(cli(*args, "--endpoint-url", proxy.endpoint_url), env=env)
            assert proc.returncode == 1, proc.stderr
            assert "credentials were refused (SignatureDoesNotMatch)" in proc.stderr
            assert "AWS_ACCESS_KEY_ID" in proc.stderr and "Traceback" not in proc.stderr
            assert "wrong-secret-value" not in proc.stdout + proc.stderr
            assert bucket.server.secret not in proc.stdout + proc.stderr
            assert took < 15, f"took {took:.1f} s"
            assert len(proxy.requests) - before <= 2, proxy.requests[before:]  # refused requests are not retried
        assert not (tmp_path / "dst").exists()

    def test_an_unreachable_endpoint_fails_in_bounded_time(self, tmp_path, bucket):
        from slurm_cluster import _free_tcp_ports

        (port,) = _free_tcp_ports(1)  # nothing listens there
        write(tmp_path / "src" / "f", b"f", MTIME0)
        for args in ((bucket.url("k"), str(tmp_path / "dst")), (str(tmp_path / "src"), bucket.url("k"))):
            proc, took = run_cli(cli(*args, "--endpoint-url", f"http://127.0.0.1:{port}"))
            assert proc.returncode == 1, proc.stderr
            assert f"(endpoint http://127.0.0.1:{port}): the endpoint cannot be reached" in proc.stderr
            assert took < 30, f"took {took:.1f} s"
        assert not (tmp_path / "dst").exists()

    def test_s3_on_both_sides_is_refused(self, tmp_path, bucket, dm):
        bucket.put("a/f", b"f")
        with pytest.raises(ConfigurationError, match="an s3:// location pairs with a local folder"):
            pcopy(bucket.url("a"), bucket.url("b"), tmp_path / "work", dm)
        proc, _ = run_cli(cli(bucket.url("a"), bucket.url("b")))
        assert proc.returncode == 2 and "pairs with a local folder" in proc.stderr and "rclone" in proc.stderr
        assert set(bucket.objects()) == {"a/f"}

    def test_a_prefix_with_no_objects(self, tmp_path, bucket, dm):
        bucket.put("data/f", b"f")
        dst = tmp_path / "dst"
        with pytest.raises(SourceNotFoundError, match="no object has this prefix") as info:
            pcopy(bucket.url("dat"), dst, tmp_path / "work", dm)  # a prefix is a folder: not data/
        assert f"aws s3 ls s3://{bucket.name}/" in str(info.value)
        proc, _ = run_cli(cli(bucket.url("nothing/here"), str(dst)))
        assert proc.returncode == 2 and f"s3://{bucket.name}/nothing/here/" in proc.stderr
        assert not dst.exists()

    def test_an_object_replaced_during_its_download_never_arrives_torn(self, tmp_path, bucket, proxy, dm):
        old, new = os.urandom(BIG), os.urandom(BIG)
        bucket.put("r/big", old, MTIME0)
        replaced: List[Request] = []

        def replace_before_the_second_range(request: Request):
            if request.is_ranged_get and request.key == "r/big" and not replaced:
                if len(proxy.seen(is_range_of(bucket, "r/big"))) == 2:
                    bucket.put("r/big", new, MTIME0 + 1)  # straight to the server, same size
                    replaced.append(request)
            return None

        proxy.on_request = replace_before_the_second_range
        dst = tmp_path / "dst"
        result = copy(bucket.url("r"), dst, tmp_path / "work", dm, endpoint_url=proxy.endpoint_url, workers=1,
                      threads=1)
        assert replaced, "the download was not in parts"
        data = (dst / "big").read_bytes()
        assert data in (old, new), "a torn file: parts of the old object and of the new one"
        # Detected at the second part (412, or another ETag where If-Match is ignored): the
        # parts fetched are dropped and the object fetched again in the same attempt.
        assert result.ok and result.retries == 0, result.failed_messages
        assert data == new and (dst / "big").stat().st_mtime_ns == MTIME0 + 1
        assert part_files(dst) == []

    @pytest.mark.parametrize("cut", [1, 2])
    def test_a_part_cut_short_never_leaves_a_torn_file(self, tmp_path, bucket, proxy, dm, cut):
        """The first part (its body written while the others run) or a later one breaks off:
        the object fails this attempt, nothing of it stays, and the retry copies it whole."""
        data = os.urandom(BIG)
        bucket.put("t/big", data, MTIME0)
        seen: List[Request] = []

        def cut_one(request: Request):
            if request.is_ranged_get and request.key == "t/big":
                seen.append(request)
                if len(seen) == cut:
                    return "truncate"
            return None

        proxy.on_request = cut_one
        dst = tmp_path / "dst"
        result = copy(bucket.url("t"), dst, tmp_path / "work", dm, endpoint_url=proxy.endpoint_url, workers=1)
        assert result.ok and result.retries == 1, result.failed_messages
        assert (dst / "big").read_bytes() == data and (dst / "big").stat().st_mtime_ns == MTIME0
        assert part_files(dst) == []

    def test_parts_from_a_server_that_does_not_say_the_size(self, tmp_path, bucket, proxy, dm):
        """Ranged answers without Content-Range: the object's size comes from one HEAD, and
        the download is the same (with the first part's ETag held for every later part)."""
        data = os.urandom(BIG)
        bucket.put("n/big", data, MTIME0)
        proxy.on_request = lambda r: "no-content-range" if r.is_ranged_get else None
        dst = tmp_path / "dst"
        result = copy(bucket.url("n"), dst, tmp_path / "work", dm, endpoint_url=proxy.endpoint_url, workers=1)
        assert result.ok and result.retries == 0, result.failed_messages
        assert (dst / "big").read_bytes() == data and (dst / "big").stat().st_mtime_ns == MTIME0
        assert len(proxy.seen(lambda r: r.method == "HEAD" and r.key == "n/big")) == 1
        assert len(proxy.seen(is_range_of(bucket, "n/big"))) == 3  # no part asked twice

    def test_a_full_local_disk_on_download(self, tmp_path, bucket):
        """A 7 MiB tmpfs, mounted in a mount namespace of its own (nothing on the host)."""
        objects = {"big": os.urandom(9 * MiB), **{f"s{i}": os.urandom(2 * MiB) for i in range(3)}}
        for key, data in objects.items():
            bucket.put("full/" + key, data, MTIME0)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        argv = ["unshare", "--mount", "--propagation=private", sys.executable, "-c", _FULL_DISK,
                str(mnt), bucket.url("full"), str(tmp_path / "work")]
        proc, _ = run_cli(argv)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        # Checked before anything is copied: the plan needs 15 MiB.
        assert "has 7.0 MiB free but the copy needs 15.0 MiB" in out["refused"]
        assert str(mnt / "dst") in out["refused"] and "check_space=False" in out["refused"]
        # Told to go on anyway: what fits arrives whole, the rest fails saying why.
        assert not out["ok"] and out["failed"], out
        assert all(line.endswith(": No space left on device") for line in out["failed"]), out["failed"]
        names = {line.split(": ")[0] for line in out["failed"]}
        present = {rel[len("dst/"):]: digest for rel, digest in out["files"].items()}
        assert not [rel for rel in present if os.path.basename(rel).startswith(".tt-part-")], present
        assert sorted([*names, *present]) == sorted(objects)
        for rel, digest in present.items():
            assert digest == _digest(objects[rel]), rel


_FULL_DISK = r"""
import hashlib, json, os, subprocess, sys
mnt, url, work = sys.argv[1:4]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=7m", "tt-full", mnt], check=True)
from taurus_tools import Datamover, InsufficientSpaceError, ParallelCopy
out = {}
options = dict(datamover=Datamover("local"), progress=False, workers=1, threads=2, retries=1, retry_delay_s=0.05)
try:
    ParallelCopy(url, mnt + "/dst", work_dir=work + "/a", **options).run()
except InsufficientSpaceError as exc:
    out["refused"] = str(exc)
result = ParallelCopy(url, mnt + "/dst", work_dir=work + "/b", check_space=False, **options).run()
out.update(ok=result.ok, failed=result.failed_messages, files={})
for dirpath, _dirs, names in os.walk(mnt):
    for name in names:
        path = os.path.join(dirpath, name)
        with open(path, "rb") as fh:
            out["files"][os.path.relpath(path, mnt)] = hashlib.blake2b(fh.read(), digest_size=16).hexdigest()
print(json.dumps(out))
"""


# =============================================================================== credentials
class ArgvRecorder:
    """Every argv this process starts (subprocess.Popen), and every command line seen below
    it while it runs (psutil, every 10 ms: the CLI's own workers are grandchildren)."""

    def __init__(self, monkeypatch, *, ignore: Tuple[int, ...] = ()) -> None:
        self.ignore = set(ignore)  # the test's own S3 server: its secret is on its command line
        self.started: List[List[str]] = []
        self.seen: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        real_init = subprocess.Popen.__init__
        recorder = self

        def recording(popen, args, *more, **options):
            words = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
            recorder.started.append([os.fsdecode(w) for w in words])
            real_init(popen, args, *more, **options)

        monkeypatch.setattr(subprocess.Popen, "__init__", recording)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.01):
            for child in me.children(recursive=True):
                if child.pid in self.ignore:
                    continue
                try:
                    self.seen.add(tuple(child.cmdline()))
                except psutil.Error:
                    pass

    def __enter__(self) -> "ArgvRecorder":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def all(self) -> List[str]:
        return [" ".join(argv) for argv in [*self.started, *self.seen]]


class TestCredentials:
    def test_the_secret_is_never_in_argv_logs_reports_or_messages(self, tmp_path, bucket, dm, caplog, monkeypatch):
        secret = bucket.server.secret
        src = tmp_path / "src"
        small_and_big(src, big=1)
        write(src / os.fsdecode(b"\xff not a key"), b"fails", MTIME0)  # a failure message too
        caplog.set_level(logging.DEBUG)
        texts = []
        with ArgvRecorder(monkeypatch, ignore=server_pids(bucket)) as argvs:
            # Worker processes (their argv, their logs); the command line's below run in the driver.
            up = copy(src, bucket.url("c"), tmp_path / "w1", dm, verify="checksum", in_process=False)
            down = copy(bucket.url("c"), tmp_path / "dst", tmp_path / "w2", dm, verify="checksum", in_process=False)
            assert not up.ok and down.ok
            verbose = [sys.executable, "-m", "taurus_tools", "-vv", "--backend", "local", "copy", bucket.url("c"),
                       str(tmp_path / "dst2"), "--work-dir", str(tmp_path / "w3"), "--report", str(tmp_path / "r.json"),
                       "--in-process=yes"]
            proc, _ = run_cli(verbose)
            assert proc.returncode == 0, proc.stderr
            # At DEBUG: the shards' argv (the direct path's requests log nothing).
            assert "taurus-tools: DEBUG: shard 0 attempt 0: [" in proc.stderr
            # The same through botocore alone: its own records (requests, signing) too; in worker processes.
            verbose[-4:] = [str(tmp_path / "w5"), "--report", str(tmp_path / "r.json"), "--in-process=no"]
            through_botocore, _ = run_cli(verbose, env={**os.environ, "TAURUS_TOOLS_S3_DIRECT": "0"})
            assert through_botocore.returncode == 0, through_botocore.stderr
            assert "DEBUG: Making request for OperationModel(name=ListObjectsV2" in through_botocore.stderr
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
            with pytest.raises(S3Error) as info:
                pcopy(bucket.url("c"), tmp_path / "dst3", tmp_path / "w4", dm)
        texts += [caplog.text, proc.stdout, proc.stderr, through_botocore.stderr, repr(up), repr(down)]
        texts += [Path(p).read_text() for p in (up.report, down.report, tmp_path / "r.json")]
        texts += ["".join(traceback.format_exception(info.value)), repr(info.value.__reduce__())]
        for work in ("w1", "w2", "w3", "w5"):  # the work dirs (kept where a copy failed)
            for path in (tmp_path / work).rglob("*"):
                if path.is_file():
                    texts.append(path.read_bytes().decode("utf-8", "replace"))
        for text in texts:
            assert secret not in text and "wrong-secret-value" not in text
        commands = argvs.all()
        assert any(WORKER in c for c in commands), commands  # the workers were seen
        assert any(WORKER in " ".join(c) for c in argvs.seen), "no grandchild was seen"
        assert not [c for c in commands if secret in c or "wrong-secret-value" in c]
        assert not [c for c in commands if "AWS_SECRET" in c]


# =============================================================================== Slurm
@pytest.fixture
def dm_slurm(slurm_cluster, tmp_path):
    from taurus_tools import SlurmBackend

    dm = Datamover("slurm", job_log_dir=tmp_path / "jobs")
    assert isinstance(dm.backend, SlurmBackend) and dm.backend.partition == "datamover"
    return dm


class TestSlurm:
    """Shards as jobs on the data-mover partition; the worker on the node gets the
    credentials from the environment srun exports (never from its argv)."""

    @staticmethod
    def check_jobs(result: CopyResult, tmp_path: Path, secret: str, argvs: ArgvRecorder) -> None:
        report = read_report(result.report)
        assert report["backend"] == "slurm" and report["shards"] == 8
        chunks = report["benchmark_results"]
        assert sorted(c["chunk_number"] for c in chunks) == list(range(1, 9))
        assert len({c["job_id"] for c in chunks}) == 8 and all(c["job_id"].isdigit() for c in chunks)
        assert all(c["exit_code"] == 0 for c in chunks)
        srun = [argv for argv in argvs.started if any(WORKER in w for w in argv)]
        assert len(srun) == 8 and all("srun" in os.path.basename(argv[0]) for argv in srun), srun
        assert not [c for c in argvs.all() if secret in c]
        for path in (tmp_path / "jobs").rglob("*") if (tmp_path / "jobs").exists() else ():
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path

    def test_bucket_to_scratch_with_8_shards_as_jobs(self, slurm_cluster, dm_slurm, tmp_path, bucket, monkeypatch):
        want = {}
        for i, name in enumerate([*_utf8_names(bucket.server), *(f"d{i % 3}/f{i:02d}" for i in range(24))]):
            data = os.urandom(2000 + i)
            bucket.put("scratch in/" + name, data, MTIME0 + i)
            want[name] = (len(data), _digest(data), MTIME0 + i)
        bucket.put("scratch in/big.bin", os.urandom(9 * MiB), MTIME0)
        want["big.bin"] = files_of_object(bucket, "scratch in/big.bin", MTIME0)
        dst = tmp_path / "scratch"
        with ArgvRecorder(monkeypatch, ignore=server_pids(bucket)) as argvs:
            result = copy(bucket.url("scratch in"), dst, tmp_path / "work", dm_slurm, workers=8, shards=8)
        assert result.ok, result.failed_messages
        assert files(dst) == want and part_files(dst) == []
        self.check_jobs(result, tmp_path, bucket.server.secret, argvs)

    def test_scratch_to_bucket_with_8_shards_as_jobs(self, slurm_cluster, dm_slurm, tmp_path, bucket, monkeypatch):
        src = tmp_path / "scratch"
        want = make_s3_tree(src, server=bucket.server)
        write(src / "big.bin", os.urandom(9 * MiB), MTIME0)
        want = files(src)
        with ArgvRecorder(monkeypatch, ignore=server_pids(bucket)) as argvs:
            result = copy(src, bucket.url("from scratch"), tmp_path / "work", dm_slurm, workers=8, shards=8)
        assert result.ok, result.failed_messages
        assert bucket.objects("from scratch/") == want and bucket.uploads() == []
        self.check_jobs(result, tmp_path, bucket.server.secret, argvs)


def server_pids(bucket: Bucket) -> Tuple[int, ...]:
    """The test S3 servers running below this process (each session fixture's: they share
    the test key pair, and rclone's has it on its command line), and what runs below them."""
    pids = set()
    proc = getattr(bucket.server, "proc", None)
    if proc is not None:
        pids.add(proc.pid)
    for child in psutil.Process().children(recursive=True):
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        if argv[1:3] == ["serve", "s3"] or (argv and os.path.basename(argv[0]) == "weed"):
            pids.add(child.pid)
            pids.update(c.pid for c in child.children(recursive=True))
    return tuple(pids)


def files_of_object(bucket: Bucket, key: str, mtime_ns: int) -> Tuple[int, str, int]:
    data = bucket.get(key)
    return len(data), _digest(data), mtime_ns
