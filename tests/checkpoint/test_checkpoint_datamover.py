"""Checkpoints written through a datamover, and the exit policy of a pass's process.

A folder destination given with ``datamover=`` is written by ``dtrsync`` (rsync on the
local backend, an srun job on the slurm backend): one call per pass, then one for the
manifest; the layout is the same as for every destination, so restore reads it as a
folder.  Hostile names go through rsync's NUL-separated list untouched.

A pass's process (the datamover's rsync, an rclone copy) is retried within the pass as
the pass policy says: the tests put a real wrapper before the real tool that fails its
first run(s) with a chosen exit code, and count the runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from helpers import HOSTILE_NAMES, write_stub

from taurus_tools import Checkpoint, CheckpointError, ConfigurationError, Datamover
from taurus_tools.checkpoint.destinations import DatamoverDestination, RcloneDestination
from taurus_tools.checkpoint.restore import restore
from taurus_tools.datamover.backends import LocalBackend
from taurus_tools.errors import DestinationUnreachableError

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def job_dir(tmp_path, monkeypatch) -> Path:
    """Where the datamover's lists and manifests are staged (and Slurm jobs write their output)."""
    folder = tmp_path / "jobs"
    monkeypatch.setenv("TAURUS_TOOLS_JOB_DIR", str(folder))
    return folder


def manifests(folder: Path) -> List[Dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((folder / "manifests").glob("*.json"))]


def hostile_tree(src: Path) -> Dict[bytes, bytes]:
    src.mkdir()
    (src / "sub").mkdir()
    want = {}
    for i, name in enumerate(HOSTILE_NAMES):
        (src / os.fsdecode(name)).write_bytes(b"x" * i + name)
        want[name] = b"x" * i + name
    (src / "sub" / "a.bin").write_bytes(b"a1")
    want[b"sub/a.bin"] = b"a1"
    return want


def tree_of(root: Path) -> Dict[bytes, bytes]:
    return {
        os.fsencode(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()
    }


def flaky(tmp_path: Path, name: str, real: str, code: int, failures: int, only: str = "") -> Path:
    """A wrapper ``name`` that exits ``code`` on its first ``failures`` runs (those whose
    arguments contain ``only``) and runs ``real`` otherwise; it counts its runs in ``<name>.runs``."""
    folder = tmp_path / f"flaky-{name}"
    counter = folder / f"{name}.runs"
    write_stub(
        folder,
        name,
        f"""
case "$*" in *"{only}"*) ;; *) exec {real} "$@" ;; esac
n=$(cat {counter} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {counter}
if [ $n -le {failures} ]; then echo "{name}: made to fail ($n)" >&2; exit {code}; fi
exec {real} "$@"
""",
    )
    return counter


def runs(counter: Path) -> int:
    return int(counter.read_text()) if counter.exists() else 0


def local_datamover(tmp_path: Path, rsync_code: int = 0, failures: int = 0) -> "tuple[Datamover, Path]":
    """The local datamover; with ``failures``, its rsync is a wrapper failing that often for a pass's data."""
    counter = flaky(tmp_path, "rsync", "/usr/bin/rsync", rsync_code, failures, only="--files-from")
    path = f"{counter.parent}{os.pathsep}{os.environ['PATH']}" if failures else os.environ["PATH"]
    return Datamover(LocalBackend(env={"PATH": path})), counter


# =============================================================================== the local backend
def test_passes_through_the_local_datamover_keep_the_layout_and_every_name(tmp_path):
    src, dst, out = tmp_path / "src", tmp_path / "project" / "ckpt", tmp_path / "out"
    want = hostile_tree(src)
    (tmp_path / "project").mkdir()
    dm, _ = local_datamover(tmp_path)
    ck = Checkpoint(src, str(dst), every="1d", settle=0, datamover=dm)
    assert isinstance(ck.destination, DatamoverDestination)
    ck.start()
    try:
        first = ck.run_pass()
        assert (first.number, first.sent, first.not_saved) == (1, len(want), {})
        assert ck.run_pass().number is None  # nothing new: no call, no manifest
        (src / "sub" / "a.bin").write_bytes(b"a2-longer")
        (src / "-leading-dash").unlink()  # deletions are never propagated
        second = ck.run_pass()
        assert (second.number, second.sent) == (2, 1)
    finally:
        final = ck.stop(timeout=60)
    assert final.ok and final.newest == 2
    assert sorted(p.name for p in (dst / "data").iterdir()) == ["000001", "000002"]
    assert [p.name for p in (dst / "data" / "000002").rglob("*") if p.is_file()] == ["a.bin"]
    newest = manifests(dst)[-1]
    assert {f["path"]: f["pass"] for f in newest["files"]}["sub/a.bin"] == 2
    assert not list((dst / "manifests").glob(".*"))  # rsync's temporary names are gone
    assert not [p for p in (tmp_path / "jobs").rglob("*") if p.is_file()]  # lists removed
    restore(str(dst), out)
    want[b"sub/a.bin"] = b"a2-longer"
    assert tree_of(out) == want
    for data in (dst / "data" / "000001").rglob("*"):  # times kept, as rsync -a keeps them
        if data.is_file() and data.name != "a.bin" and data.name != "-leading-dash":
            assert data.stat().st_mtime_ns == (src / data.relative_to(dst / "data" / "000001")).stat().st_mtime_ns


def test_a_file_that_changes_during_the_pass_waits_for_the_next(tmp_path):
    """rsync reads the file after its MD5 was taken: the wrapper changes it in between
    (as a writer would); the file is left for the next pass, never saved with another MD5."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "stable.bin").write_bytes(b"s")
    (src / "moving.bin").write_bytes(b"m1")
    folder = tmp_path / "writer-bin"
    write_stub(folder, "rsync", f'printf m2-changed >> {src / "moving.bin"}\nexec /usr/bin/rsync "$@"\n')
    dm = Datamover(LocalBackend(env={"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}))
    ck = Checkpoint(src, str(dst), every="1d", settle=0, datamover=dm).start()
    try:
        report = ck.run_pass()
    finally:
        ck.cancel()
    assert report.deferred == ["moving.bin"] and report.sent == 1
    assert [f["path"] for f in manifests(dst)[-1]["files"]] == ["stable.bin"]


def a_folder(tmp_path: Path) -> "tuple[Path, Path]":
    """``src`` holding a.bin, and where its checkpoint goes."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a")
    return src, dst


def one_file(tmp_path: Path, dm: Datamover, **options: Any) -> "tuple[Checkpoint, Path]":
    """A started checkpoint of :func:`a_folder` through ``dm``."""
    src, dst = a_folder(tmp_path)
    return Checkpoint(src, str(dst), every="1d", settle=0, datamover=dm, **options).start(), dst


def passes_after_one_retry(ck: Checkpoint, counter: Path) -> None:
    """A pass of the started ``ck`` is complete, its process having run twice; then the final pass."""
    try:
        report = ck.run_pass()
        assert (report.number, report.error) == (1, None)
        assert runs(counter) == 2
    finally:
        ck.stop(timeout=60)


def test_the_pass_policy_retries_the_datamover_within_the_pass(tmp_path):
    dm, counter = local_datamover(tmp_path, rsync_code=12, failures=1)
    ck, _ = one_file(tmp_path, dm)  # the default policy: rsync's 12 retried once
    passes_after_one_retry(ck, counter)


def test_a_code_the_policy_fails_on_leaves_the_files_to_the_next_pass(tmp_path):
    dm, counter = local_datamover(tmp_path, rsync_code=12, failures=1)
    ck, dst = one_file(tmp_path, dm, policy="12=fail")
    try:
        failed = ck.run_pass()
        assert failed.number is None and "dtrsync failed (exit 12): rsync: made to fail (1)" in (failed.error or "")
        assert runs(counter) == 1 and not manifests(dst)
        again = ck.run_pass()  # the next interval: the wrapper lets it through
        assert (again.number, again.sent) == (1, 1)
    finally:
        ck.stop(timeout=60)


def test_retries_of_a_pass_are_bounded_and_the_final_pass_says_what_was_not_saved(tmp_path):
    dm, counter = local_datamover(tmp_path, rsync_code=30, failures=100)
    ck, _ = one_file(tmp_path, dm, final_timeout="1s", policy="30=retry,retries=2,backoff=0")
    failed = ck.run_pass()
    assert failed.error and runs(counter) == 3
    with pytest.raises(CheckpointError, match="exit 30") as info:
        ck.stop(timeout=60)
    assert list(info.value.not_saved) == ["a.bin"]


# =============================================================================== rclone's pass policy
def test_the_pass_policy_retries_rclone_copy_within_the_pass(tmp_path, local_remote):
    src, dst = a_folder(tmp_path)
    ck = Checkpoint(src, f"{local_remote}:{dst}", every="1d", settle=0)  # default: rclone's 5 retried once
    assert isinstance(ck.destination, RcloneDestination)
    counter = flaky(tmp_path, "rclone", ck.destination.endpoint.rclone, 5, 1, only="copy --files-from-raw")
    object.__setattr__(ck.destination.endpoint, "_rclone", str(counter.parent / "rclone"))
    passes_after_one_retry(ck.start(), counter)
    assert (dst / "data" / "000001" / "a.bin").read_bytes() == b"a"


# =============================================================================== choices refused
class TestRefused:
    def test_a_datamover_for_s3_or_a_remote(self, tmp_path):
        dm = Datamover("local")
        for dest in ("s3://bucket/p", "remote:path"):
            with pytest.raises(ConfigurationError, match="datamover= writes a folder destination"):
                Checkpoint(tmp_path, dest, datamover=dm)

    def test_a_pass_policy_where_no_process_runs(self, tmp_path):
        with pytest.raises(ConfigurationError, match="s3:// passes send their requests from this process"):
            Checkpoint(tmp_path, "s3://bucket/p", policy="*=retry")
        with pytest.raises(ConfigurationError, match="give datamover= to write it through one"):
            Checkpoint(tmp_path, str(tmp_path.parent / "elsewhere"), policy="*=retry")

    def test_a_bad_policy(self, tmp_path):
        with pytest.raises(ConfigurationError, match="unknown exit-policy action"):
            Checkpoint(tmp_path, str(tmp_path.parent / "x"), datamover=Datamover("local"), policy="3=later")

    def test_a_destination_whose_parent_is_missing(self, tmp_path):
        (tmp_path / "src").mkdir()
        ck = Checkpoint(tmp_path / "src", str(tmp_path / "no" / "such" / "ckpt"), datamover=Datamover("local"))
        with pytest.raises(DestinationUnreachableError, match="cannot be made"):
            ck.start()


# =============================================================================== the command line
def test_the_command_line_writes_through_the_datamover(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    argv = [sys.executable, "-m", "taurus_tools", "checkpoint", str(src), str(dst), "--every", "1d", "--datamover",
            "--backend", "local", "--pass-policy", "12=retry,retries=1", "--", sys.executable, "-c",
            f"open({str(src / 'out.bin')!r}, 'w').write('done')"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert "(through the local datamover)" in done.stderr.decode()
    assert (dst / "data" / "000001" / "out.bin").read_text() == "done"
    assert [f["path"] for f in manifests(dst)[-1]["files"]] == ["out.bin"]


# =============================================================================== a real Slurm cluster
@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend, blocking", [("slurm", True), ("site", True), ("site", False)])
def test_passes_through_a_cluster_datamover(tmp_path, slurm_cluster, site_tools_dir, backend, blocking):
    """Each pass is one job running rsync (srun; the site's dtrsync, blocking or a batch job
    followed to its end); hostile names; restore gives the newest pass."""
    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "out"
    want = hostile_tree(src)
    dm = Datamover(backend, tools_dir=site_tools_dir if backend == "site" else None, job_log_dir=tmp_path / "jobs",
                   blocking=blocking)  # fmt: skip
    ck = Checkpoint(src, str(dst), every="1d", settle=0, datamover=dm).start()
    assert ck.destination.describe() == f"{dst} (through the {backend} datamover)"
    try:
        assert ck.run_pass().sent == len(want)
        (src / "sub" / "a.bin").write_bytes(b"a2")
        assert ck.run_pass().number == 2
    finally:
        final = ck.stop(timeout=120)
    assert final.ok and final.newest == 2
    restore(str(dst), out)
    want[b"sub/a.bin"] = b"a2"
    assert tree_of(out) == want


@pytest.mark.timeout(300)
def test_a_pass_retried_elsewhere_keeps_its_job_off_the_node(tmp_path, multinode, monkeypatch, caplog):
    """The pass's rsync fails on the first node it runs on (exit 12, as a broken mount there
    would make it): ``12=retry_elsewhere`` runs the pass's job again, off that node, and the
    pass completes."""
    src, dst = a_folder(tmp_path)
    nodes = tmp_path / "nodes"
    folder = tmp_path / "node-bin"
    write_stub(folder, "rsync", f"""
case "$*" in *--files-from*) ;; *) exec /usr/bin/rsync "$@" ;; esac
echo "$SLURMD_NODENAME" >> {nodes}
if [ "$(head -n 1 {nodes})" = "$SLURMD_NODENAME" ]; then echo "rsync: no mount here" >&2; exit 12; fi
exec /usr/bin/rsync "$@"
""")  # fmt: skip
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")  # the jobs' PATH too
    dm = Datamover("slurm", partition="datamover", job_log_dir=tmp_path / "jobs")
    ck = Checkpoint(src, str(dst), every="1d", settle=0, datamover=dm, policy="12=retry_elsewhere,backoff=0")
    caplog.set_level("INFO", logger="taurus_tools")
    ck.start()
    try:
        report = ck.run_pass()
    finally:
        ck.stop(timeout=120)
    assert (report.number, report.error) == (1, None)
    first, second = nodes.read_text().split()
    assert first != second
    assert f"node {first} excluded from later attempts (Slurm FAILED (exit 12), rule 12=retry_elsewhere)" in caplog.text
    assert (dst / "data" / "000001" / "a.bin").read_bytes() == b"a"
