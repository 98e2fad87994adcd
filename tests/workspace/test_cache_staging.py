"""CacheWorkspace, stage_out and stage_in on real workspaces (local ws backend) and real copies.

Every workspace lives under a temporary ``TAURUS_TOOLS_WS_ROOT`` of its own, run by the
local hpc-workspace implementation as separate processes; copies run ``cp`` on this
machine, or as jobs on the real Slurm test cluster (fixture ``slurm_cluster``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Dict, List

import pytest

import taurus_tools.transfer.staging as staging
from taurus_tools import (
    CacheWorkspace,
    CommandError,
    CommandTimeoutError,
    ConfigurationError,
    Datamover,
    StageError,
    TaurusToolsError,
    Workspace,
    WorkspaceError,
    stage_in,
    stage_out,
)
from taurus_tools.workspace.format import NAME_RE

HOSTILE = "a 'b'\nc-ü"


# ---------------------------------------------------------------------------- helpers
@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace("local", root=tmp_path / "ws")


@pytest.fixture
def dm() -> Datamover:
    return Datamover("local")


def ids(ws: Workspace) -> List[str]:
    return sorted(info.id for info in ws.list())


def snapshot(path: Path) -> Dict[str, object]:
    """Relative path -> bytes (files) or "<dir>" (folders) for a whole tree, or a file."""
    if path.is_file():
        return {"": path.read_bytes()}
    out: Dict[str, object] = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        out[rel] = "<dir>" if p.is_dir() else p.read_bytes()
    return out


def make_tree(top: Path) -> Dict[str, object]:
    """A folder with nested files, an empty folder and a hostile name; its snapshot."""
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "empty").mkdir()
    (top / "top.txt").write_text("top level\n")
    (top / "sub" / "data.bin").write_bytes(bytes(range(256)) * 40)
    (top / "sub" / "deeper" / "zero").write_bytes(b"")
    (top / "sub" / HOSTILE).write_text("hostile name\n", encoding="utf-8")
    (top / HOSTILE).mkdir()
    (top / HOSTILE / "inner.txt").write_text("inside a hostile folder\n")
    snap = snapshot(top)
    assert "empty" in snap and f"sub/{HOSTILE}" in snap  # the tree is what we meant
    return snap


# ---------------------------------------------------------------------------- CacheWorkspace
def test_default_id_is_unique_and_never_the_shared_cache(ws):
    a = CacheWorkspace(workspace=ws)
    b = CacheWorkspace(workspace=ws)
    try:
        assert a.id != b.id
        for c in (a, b):
            assert c.id != "cache"
            assert c.id.startswith("cache-")
            assert NAME_RE.match(c.id)
        assert a.path != b.path
        assert ids(ws) == sorted([a.id, b.id])
    finally:
        a.cleanup()
        b.cleanup()
    assert ids(ws) == []


def test_attributes_and_allocation_on_construction(ws, tmp_path):
    cws = CacheWorkspace(workspace=ws)
    try:
        assert isinstance(cws.name, str)
        assert isinstance(cws.path, Path)
        assert cws.name == str(cws.path)
        assert cws.path.is_dir()
        assert cws.path.is_absolute()
        assert (tmp_path / "ws") in cws.path.parents
        assert cws.allocated
        listed = {info.id: info for info in ws.list()}
        assert listed[cws.id].path == cws.path
        assert ws.find(cws.id) == cws.path
        (cws.path / "scratch.txt").write_text("temporary")
    finally:
        cws.cleanup()


def test_cleanup_releases_and_is_idempotent(ws):
    cws = CacheWorkspace(workspace=ws)
    path = cws.path
    cws.cleanup()
    assert ids(ws) == []
    assert not path.exists()
    assert not cws.allocated
    assert len(ws.released()) == 1
    cws.cleanup()  # a second call neither fails nor releases anything else
    assert len(ws.released()) == 1
    with pytest.raises(TaurusToolsError, match="released"):
        cws.path


def test_delete_data_leaves_nothing_to_restore(ws):
    cws = CacheWorkspace(workspace=ws, delete_data=True)
    cws.cleanup()
    assert ids(ws) == []
    assert ws.released() == []


def test_name_and_days_are_checked_before_allocating(ws):
    with pytest.raises(ConfigurationError):
        CacheWorkspace("no/slashes", workspace=ws)
    with pytest.raises(ConfigurationError):
        CacheWorkspace(workspace=ws, days=0)
    assert ids(ws) == []


def test_context_manager_releases_on_exit(ws):
    with CacheWorkspace(workspace=ws) as cws:
        path = cws.path
        (path / "f").write_text("x")
        assert ids(ws) == [cws.id]
    assert ids(ws) == []
    assert not path.exists()
    assert not cws.allocated


def test_body_exception_propagates_unchanged_and_releases(ws):
    boom = ValueError("from the body")
    with pytest.raises(ValueError) as info:
        with CacheWorkspace(workspace=ws) as cws:
            raise boom
    assert info.value is boom
    assert not getattr(boom, "__notes__", None)
    assert ids(ws) == []
    assert not cws.allocated


def test_body_exception_survives_a_failing_release(ws, monkeypatch):
    def failing_release(*args, **kwargs):
        raise WorkspaceError("release broke", 255, ["ws_release"], "", "Error: disk on fire")

    boom = KeyError("from the body")
    with pytest.raises(KeyError) as info:
        with CacheWorkspace(workspace=ws) as cws:
            monkeypatch.setattr(ws, "release", failing_release)
            raise boom
    assert info.value is boom
    if sys.version_info >= (3, 11):
        notes = getattr(boom, "__notes__", [])
        assert any(cws.id in n and "release broke" in n for n in notes), notes
    monkeypatch.undo()
    assert ids(ws) == [cws.id]  # the release really failed; the workspace is still there
    assert cws.allocated and cws.path.is_dir()  # and the object says so
    cws.cleanup()  # so a later cleanup() can still release it
    assert ids(ws) == []


def test_failing_release_without_body_exception_raises(ws, monkeypatch):
    def failing_release(*args, **kwargs):
        raise WorkspaceError("release broke", 255, ["ws_release"], "", "")

    with pytest.raises(WorkspaceError, match="release broke"):
        with CacheWorkspace(workspace=ws) as cws:
            monkeypatch.setattr(ws, "release", failing_release)
    with pytest.raises(WorkspaceError, match="release broke"):
        cws.cleanup()  # still held, so it tries (and fails) again rather than doing nothing
    monkeypatch.undo()
    assert ids(ws) == [cws.id]
    cws.cleanup()
    assert ids(ws) == [] and not cws.allocated
    cws.cleanup()


def test_never_releases_a_workspace_it_did_not_allocate(ws):
    shared = ws.allocate("shared", 3)
    (shared.path / "keep.txt").write_text("someone else's data")
    cws = CacheWorkspace("shared", workspace=ws)
    assert cws.path == shared.path
    cws.cleanup()
    assert ids(ws) == ["shared"]
    assert (shared.path / "keep.txt").read_text() == "someone else's data"
    with CacheWorkspace("shared", workspace=ws) as again:
        assert again.path == shared.path
    assert ids(ws) == ["shared"]
    assert ws.released() == []


def test_named_workspace_it_created_is_released(ws):
    with CacheWorkspace("mine", workspace=ws) as cws:
        assert ids(ws) == ["mine"]
    assert ids(ws) == []
    assert not cws.allocated


def test_enter_after_cleanup_allocates_again(ws):
    cws = CacheWorkspace(workspace=ws)
    cws.cleanup()
    assert ids(ws) == []
    with cws as same:
        assert same is cws
        assert cws.allocated
        assert cws.path.is_dir()
        assert ids(ws) == [cws.id]
    assert ids(ws) == []
    assert len(ws.released()) == 2


def test_two_threads_get_distinct_workspaces(ws):
    barrier = threading.Barrier(2)
    made: Dict[int, CacheWorkspace] = {}
    errors: List[BaseException] = []

    def make(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            made[i] = CacheWorkspace(workspace=ws)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    a, b = made[0], made[1]
    assert a.id != b.id and a.path != b.path
    assert ids(ws) == sorted([a.id, b.id])
    (b.path / "b.txt").write_text("b's data")
    a.cleanup()
    assert b.path.is_dir() and (b.path / "b.txt").read_text() == "b's data"
    assert ids(ws) == [b.id]
    b.cleanup()
    assert ids(ws) == []


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from taurus_tools import CacheWorkspace

    go = Path(sys.argv[1])
    cws = CacheWorkspace()
    (cws.path / "mine.txt").write_text(cws.id)
    print(cws.id, flush=True)
    print(cws.name, flush=True)
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("never told to go")
        time.sleep(0.02)
    cws.cleanup()
    print("released", flush=True)
    """
)


def test_two_processes_get_distinct_workspaces(ws, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAURUS_TOOLS_")}
    env["TAURUS_TOOLS_WS_ROOT"] = str(tmp_path / "ws")
    gos = [tmp_path / "go-0", tmp_path / "go-1"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for go in gos
    ]
    try:
        got = []
        for p in procs:
            wid = p.stdout.readline().strip()
            path = Path(p.stdout.readline().strip())
            assert wid, p.stderr.read()
            got.append((wid, path))
        (a_id, a_path), (b_id, b_path) = got
        assert a_id != b_id and a_path != b_path
        assert ids(ws) == sorted([a_id, b_id])  # both under the one root, both alive

        gos[0].touch()
        out, err = procs[0].communicate(timeout=60)
        assert procs[0].returncode == 0, err
        assert "released" in out
        assert ids(ws) == [b_id]
        assert b_path.is_dir() and (b_path / "mine.txt").read_text() == b_id

        gos[1].touch()
        out, err = procs[1].communicate(timeout=60)
        assert procs[1].returncode == 0, err
        assert ids(ws) == []
    finally:
        for go in gos:
            go.touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


# ---------------------------------------------------------------------------- stage_out (local)
def test_stage_out_file(ws, dm, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    target = project / "result.bin"
    payload = bytes(range(256)) * 1000 + b"end"
    with stage_out(target, datamover=dm, workspace=ws, progress=False) as tmp:
        assert tmp.name == "result.bin"
        assert tmp != target
        assert (tmp_path / "ws") in tmp.parents
        assert len(ws.list()) == 1 and ws.list()[0].path == tmp.parent
        assert not target.exists()
        tmp.write_bytes(payload)
    assert target.read_bytes() == payload
    assert ids(ws) == []
    assert not tmp.exists()


def test_stage_out_directory(ws, dm, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    target = project / "run 1"
    with stage_out(target, datamover=dm, workspace=ws, progress=False) as tmp:
        tmp.mkdir()
        expected = make_tree(tmp)
    assert target.is_dir()
    assert snapshot(target) == expected
    assert (target / "empty").is_dir()
    assert ids(ws) == []


def test_stage_out_hostile_target_name(ws, dm, tmp_path):
    target = tmp_path / HOSTILE
    with stage_out(target, datamover=dm, workspace=ws, progress=False) as tmp:
        tmp.write_text("odd\n")
    assert target.read_text() == "odd\n"
    assert ids(ws) == []


def test_stage_out_body_raises_copies_nothing_and_releases(ws, dm, tmp_path):
    target = tmp_path / "result.txt"
    boom = RuntimeError("analysis failed")
    with pytest.raises(RuntimeError) as info:
        with stage_out(target, datamover=dm, workspace=ws, progress=False) as tmp:
            tmp.write_text("half-written")
            raise boom
    assert info.value is boom
    assert not target.exists()
    assert ids(ws) == []
    assert len(ws.released()) == 1


@pytest.mark.parametrize("how", ["missing parent", "target is a directory"])
def test_stage_out_copy_failure_keeps_the_data(ws, dm, tmp_path, how):
    if how == "missing parent":
        target = tmp_path / "no" / "such" / "result.txt"
    else:
        target = tmp_path / "result.txt"
        target.mkdir()
    with pytest.raises(StageError) as info:
        with stage_out(target, datamover=dm, workspace=ws, progress=False) as tmp:
            tmp.write_text("precious")
    err = info.value
    staged = Path(err.staged)
    assert staged == tmp
    assert staged.read_text() == "precious"
    assert err.staged in str(err)
    assert err.target == str(target)
    assert "exit code" in str(err)
    assert ids(ws) != [] and ws.list()[0].path == staged.parent  # not released
    assert ws.released() == []
    if how == "missing parent":
        assert not target.parent.exists()
    else:
        assert target.is_dir() and list(target.iterdir()) == []


def test_stage_out_nothing_written(ws, dm, tmp_path):
    target = tmp_path / "result.txt"
    with pytest.raises(StageError, match="nothing was written") as info:
        with stage_out(target, datamover=dm, workspace=ws, progress=False) as tmp:
            pass
    assert info.value.staged == str(tmp)
    assert "kept" not in str(info.value)
    assert not target.exists()
    assert ws.list() == [], "an empty cache is released"


def test_stage_out_wrong_name_keeps_what_was_written(ws, dm, tmp_path):
    target = tmp_path / "result.txt"
    with pytest.raises(StageError, match="holds other files: result.tif") as info:
        with stage_out(target, datamover=dm, workspace=ws, progress=False) as tmp:
            (tmp.parent / "result.tif").write_text("data under another name")
    assert (Path(info.value.staged).parent / "result.tif").read_text() == "data under another name"
    assert len(ws.list()) == 1
    assert not target.exists()


class TestStageOutInAGivenCache:
    """stage_out(cache=...): a folder of its own inside a cache workspace that stays allocated."""

    def test_success_removes_only_its_folder(self, ws, dm, tmp_path):
        target = tmp_path / "result.bin"
        with CacheWorkspace(workspace=ws) as cache:
            (cache.path / "other.txt").write_text("someone else's")
            with stage_out(target, datamover=dm, cache=cache, progress=False) as tmp:
                assert tmp.parent.parent == cache.path and tmp.name == "result.bin"
                tmp.write_bytes(b"payload")
            assert target.read_bytes() == b"payload"
            assert not tmp.parent.exists()
            assert sorted(p.name for p in cache.path.iterdir()) == ["other.txt"]
            assert ids(ws) == [cache.id]  # still allocated
        assert ids(ws) == []

    def test_two_stagings_of_one_name_do_not_collide(self, ws, dm, tmp_path):
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with CacheWorkspace(workspace=ws) as cache:
            with stage_out(tmp_path / "a" / "x", datamover=dm, cache=cache, progress=False) as first:
                with stage_out(tmp_path / "b" / "x", datamover=dm, cache=cache, progress=False) as second:
                    assert first != second
                    second.write_text("b")
                first.write_text("a")
        assert (tmp_path / "a" / "x").read_text() == "a" and (tmp_path / "b" / "x").read_text() == "b"

    def test_body_exception_removes_its_folder_only(self, ws, dm, tmp_path):
        with CacheWorkspace(workspace=ws) as cache:
            with pytest.raises(RuntimeError):
                with stage_out(tmp_path / "r", datamover=dm, cache=cache, progress=False) as tmp:
                    tmp.write_text("half")
                    raise RuntimeError("analysis failed")
            assert not tmp.parent.exists() and ids(ws) == [cache.id]
        assert not (tmp_path / "r").exists()

    def test_copy_failure_keeps_the_staged_data(self, ws, dm, tmp_path):
        with CacheWorkspace(workspace=ws) as cache:
            with pytest.raises(StageError) as info:
                with stage_out(tmp_path / "no" / "r", datamover=dm, cache=cache, progress=False) as tmp:
                    tmp.write_text("precious")
            assert Path(info.value.staged).read_text() == "precious"
            assert Path(info.value.staged).parent.parent == cache.path


def truncating_copy(dm, src, dst, timeout, progress):
    """Stand-in for _copy that "succeeds" but delivers a short file."""
    dst.write_bytes(src.read_bytes()[:-1])
    return 0, ""


def test_stage_out_verify_catches_a_short_copy(ws, dm, tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "_copy", truncating_copy)
    target = tmp_path / "result.bin"
    with pytest.raises(StageError, match="size differs") as info:
        with stage_out(target, datamover=dm, workspace=ws, progress=False) as tmp:
            tmp.write_bytes(b"0123456789")
    assert Path(info.value.staged).read_bytes() == b"0123456789"
    assert ws.list()[0].path == tmp.parent  # kept


def test_stage_out_verify_off_trusts_the_exit_code(ws, dm, tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "_copy", truncating_copy)
    target = tmp_path / "result.bin"
    with stage_out(target, datamover=dm, workspace=ws, progress=False, verify=False) as tmp:
        tmp.write_bytes(b"0123456789")
    assert target.read_bytes() == b"012345678"
    assert ids(ws) == []


def test_stage_out_verify_catches_a_missing_file(ws, dm, tmp_path, monkeypatch):
    def partial_copy(dm, src, dst, timeout, progress):
        dst.mkdir()
        (dst / "a.txt").write_bytes((src / "a.txt").read_bytes())
        return 0, ""

    monkeypatch.setattr(staging, "_copy", partial_copy)
    with pytest.raises(StageError, match="missing") as info:
        with stage_out(tmp_path / "out", datamover=dm, workspace=ws, progress=False) as tmp:
            tmp.mkdir()
            (tmp / "a.txt").write_text("a")
            (tmp / "b.txt").write_text("b")
    assert "b.txt" in str(info.value)
    assert (Path(info.value.staged) / "b.txt").read_text() == "b"


def test_stage_out_copy_that_does_not_finish_keeps_the_data(ws, dm, tmp_path, monkeypatch):
    seen = {}

    def hanging_copy(dm, src, dst, timeout, progress):
        seen["timeout"] = timeout
        raise CommandTimeoutError([["dtcp", str(src), str(dst)]], timeout)

    monkeypatch.setattr(staging, "_copy", hanging_copy)
    with pytest.raises(StageError, match="did not finish") as info:
        target = tmp_path / "r.txt"
        with stage_out(target, datamover=dm, workspace=ws, timeout=7.5, progress=False) as tmp:
            tmp.write_text("kept")
    assert seen["timeout"] == 7.5
    assert isinstance(info.value.__cause__, CommandTimeoutError)
    assert Path(info.value.staged).read_text() == "kept"
    assert len(ws.list()) == 1


# ---------------------------------------------------------------------------- stage_in
def test_stage_in_file(ws, dm, tmp_path):
    src = tmp_path / "input.bin"
    src.write_bytes(os.urandom(50_000))
    with stage_in(src, datamover=dm, workspace=ws, progress=False) as local:
        assert local != src and local.name == src.name
        assert (tmp_path / "ws") in local.parents
        assert local.read_bytes() == src.read_bytes()
        assert ids(ws) != []
    assert ids(ws) == []
    assert not local.exists()
    assert src.exists()


def test_stage_in_folder(ws, dm, tmp_path):
    src = tmp_path / "inputs"
    src.mkdir()
    expected = make_tree(src)
    with stage_in(src, datamover=dm, workspace=ws, progress=False) as local:
        assert local.is_dir()
        assert snapshot(local) == expected
    assert ids(ws) == []
    assert snapshot(src) == expected


def test_stage_in_body_exception_releases(ws, dm, tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("x")
    with pytest.raises(ZeroDivisionError):
        with stage_in(src, datamover=dm, workspace=ws, progress=False):
            1 / 0
    assert ids(ws) == []


def test_stage_in_missing_source(ws, dm, tmp_path):
    entered = []
    with pytest.raises(CommandError) as info:
        with stage_in(tmp_path / "missing.txt", datamover=dm, workspace=ws, progress=False):
            entered.append(True)
    assert not entered
    assert info.value.returncode != 0
    assert "missing.txt" in str(info.value)
    assert ids(ws) == []


# ---------------------------------------------------------------------------- on real Slurm
@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "sbatch"])
def test_stage_out_via_slurm(slurm_cluster, tmp_path, blocking):
    ws = Workspace("local", root=tmp_path / "ws")
    dm = Datamover("slurm", blocking=blocking, job_log_dir=tmp_path / "jobs")
    assert dm.backend.name == "slurm"
    project = tmp_path / "project"
    project.mkdir()
    target = project / "result 'run 1'"
    with stage_out(target, datamover=dm, workspace=ws, timeout=120, progress=False) as tmp:
        tmp.mkdir()
        expected = make_tree(tmp)
    assert snapshot(target) == expected
    assert ids(ws) == []


def test_stage_out_via_slurm_failure_keeps_data(slurm_cluster, tmp_path):
    ws = Workspace("local", root=tmp_path / "ws")
    dm = Datamover("slurm", blocking=False, job_log_dir=tmp_path / "jobs")
    target = tmp_path / "missing" / "result.txt"
    with pytest.raises(StageError) as info:
        with stage_out(target, datamover=dm, workspace=ws, timeout=120, progress=False) as tmp:
            tmp.write_text("precious")
    assert Path(info.value.staged).read_text() == "precious"
    assert ids(ws) != []
    assert not target.exists()
