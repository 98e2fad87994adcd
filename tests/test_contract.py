"""Contract tests: the same behaviour tests over every datamover backend.

Each test runs on the ``local`` backend (plain tools on this machine), the ``slurm``
backend (plain tools as jobs of the real test cluster, fixture ``slurm_cluster``) and the
``site`` backend (the ``dt*`` emulation of ``tests/site_tools``, which runs real Slurm
jobs too), blocking and, where the backend has such a mode, non-blocking.  A backend that
differs from the others here breaks a promise the library makes for all of them.
"""

from __future__ import annotations

import concurrent.futures
import filecmp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

import psutil
import pytest
from helpers import HOSTILE_NAMES, NOISE, alive, tree, wait_for  # tests/ is on sys.path

from taurus_tools import CommandCancelledError, CommandError, Datamover, DependencyError

#: Seconds a command of the contract may take (Slurm jobs start within a second or two).
RUN_TIMEOUT = 60.0
#: Seconds until cancelled processes and jobs must be gone.
GONE_TIMEOUT = 30.0
#: A folder name that needs ``--`` and no shell anywhere: leading dash, spaces, both
#: quotes, comment and command separators, a newline, non-ASCII.
HOSTILE_FOLDER = "-src dir 'q\" #;x\nü 文"


@dataclass
class Backend:
    """A ready Datamover and, for the Slurm-based backends, the cluster it uses."""

    name: str
    dm: Datamover
    cluster: Optional[object] = None

    def jobs(self) -> List[int]:
        """Ids of all jobs squeue lists (none without a cluster)."""
        return [] if self.cluster is None else self.cluster.squeue_ids()


@pytest.fixture(
    params=[
        "local",
        pytest.param("slurm", marks=pytest.mark.slurm),
        pytest.param("site", marks=pytest.mark.slurm),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """A Datamover of each backend; the Slurm ones on the session's test cluster."""
    if request.param == "local":
        request.getfixturevalue("no_slurm_env")
        yield Backend("local", Datamover("local"))
        return
    cluster = request.getfixturevalue("slurm_cluster")  # marks the test for the after-test check
    if request.param == "slurm":
        dm = Datamover("slurm", job_log_dir=tmp_path / "jobs")
    else:
        monkeypatch.setenv("TAURUS_TEST_DT_LOGDIR", str(tmp_path / "dt-logs"))
        dm = Datamover("site", tools_dir=request.getfixturevalue("site_tools_dir"))
    yield Backend(request.param, dm, cluster)


blocking_modes = pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])


def stderr_lines(backend: Backend, text: str) -> List[str]:
    """stderr's lines without srun's two ``--pty`` noise lines (site backend only)."""
    lines = text.splitlines()
    if backend.name == "site":
        lines = [line for line in lines if line not in NOISE]
    return lines


# ---------------------------------------------------------------- 1. exit codes
@blocking_modes
def test_missing_path_fails_with_the_tools_code(backend, tmp_path, blocking):
    missing = tmp_path / "no-such-entry"
    handle = backend.dm.dtls(missing, blocking=blocking)
    with pytest.raises(CommandError) as info:
        handle.result(timeout=RUN_TIMEOUT)
    assert not isinstance(info.value, CommandCancelledError)
    assert handle.returncode == 2, handle.stderr_text  # ls's "serious trouble"
    assert info.value.returncode == 2
    assert str(missing) in handle.stderr_text
    assert str(missing) in info.value.stderr
    assert handle.done() and not handle.cancelled()
    assert isinstance(handle.exception(), CommandError)


@blocking_modes
def test_success_is_zero(backend, tmp_path, blocking):
    (tmp_path / "f").write_text("x")
    handle = backend.dm.dtls(tmp_path / "f", blocking=blocking)
    assert handle.result(timeout=RUN_TIMEOUT) == 0, handle.stderr_text
    assert handle.returncode == 0
    assert handle.exception() is None and not handle.cancelled()


# ---------------------------------------------------------------- 2. output
@blocking_modes
def test_stdout_is_the_tools_output_exactly(backend, tmp_path, blocking):
    # Prefixes fix the order in any collation; the rest tests spaces and non-ASCII.
    names = ["a-first", "b second", "c-ünïcødé 文件", "d.last"]
    folder = tmp_path / "listed"
    folder.mkdir()
    for name in names:
        (folder / name).write_text(name)
    handle = backend.dm.dtls("-1", folder, blocking=blocking)
    assert handle.result(timeout=RUN_TIMEOUT) == 0, handle.stderr_text
    out, err = handle.communicate()
    assert out == "".join(f"{name}\n" for name in names)
    assert stderr_lines(backend, err) == []


# ---------------------------------------------------------------- 3. hostile names
@blocking_modes
def test_recursive_copy_of_hostile_names_is_byte_identical(backend, tmp_path, blocking):
    src = tmp_path / HOSTILE_FOLDER
    src.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):
        with open(os.path.join(os.fsencode(src), name), "wb") as fh:
            fh.write(os.urandom(100 + i) + name)
    # Relative paths from cwd: the leading dash is seen by cp unless "--" stops it.
    handle = backend.dm.dtcp("-r", "--", HOSTILE_FOLDER, "dst", cwd=tmp_path, blocking=blocking)
    assert handle.result(timeout=RUN_TIMEOUT) == 0, handle.stderr_text
    dst = tmp_path / "dst"
    assert sorted(os.listdir(os.fsencode(dst))) == sorted(HOSTILE_NAMES)
    match, mismatch, errors = filecmp.cmpfiles(
        os.fsencode(src), os.fsencode(dst), HOSTILE_NAMES, shallow=False
    )
    assert (mismatch, errors) == ([], []), (mismatch, errors)
    assert sorted(match) == sorted(HOSTILE_NAMES)


@blocking_modes
def test_hostile_names_as_arguments_arrive_unchanged(backend, tmp_path, blocking):
    # Every name is an argument of its own (bytes, one not even UTF-8): through sbatch,
    # srun and the site wrapper, no shell may split, glob or re-encode any of them.
    content = {}
    for i, name in enumerate(HOSTILE_NAMES):
        content[name] = os.urandom(50 + i)
        with open(os.path.join(os.fsencode(tmp_path), name), "wb") as fh:
            fh.write(content[name])
    (tmp_path / "flat").mkdir()
    handle = backend.dm.dtcp("--", *HOSTILE_NAMES, "flat", cwd=tmp_path, blocking=blocking)
    assert handle.result(timeout=RUN_TIMEOUT) == 0, handle.stderr_text
    flat = os.fsencode(tmp_path / "flat")
    assert sorted(os.listdir(flat)) == sorted(HOSTILE_NAMES)
    for name, data in content.items():
        with open(os.path.join(flat, name), "rb") as fh:
            assert fh.read() == data, name


# ---------------------------------------------------------------- 4. cancel leaves nothing
def cp_processes(fifo: Path) -> List[int]:
    """pids of cp processes that read ``fifo`` (on this machine, inside a job or not)."""
    pids = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        info = proc.info
        if info["name"] == "cp" and str(fifo) in (info["cmdline"] or []):
            pids.append(proc.pid)
    return alive(pids)


@blocking_modes
def test_cancel_leaves_no_process_and_no_job(backend, tmp_path, blocking):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    before = set(backend.jobs())
    handle = backend.dm.dtcp(fifo, tmp_path / "never", blocking=blocking)
    # cp itself runs here (the test cluster's only node is this machine) and waits for a writer.
    readers = wait_for(lambda: cp_processes(fifo), timeout=RUN_TIMEOUT, what=f"cp to open {fifo}")
    assert not handle.done(), handle.stderr_text
    if backend.cluster is not None:
        wait_for(lambda: handle.job_id, timeout=RUN_TIMEOUT, what="the handle to know its Slurm job id")
    local = tree(handle.pid)
    rc = handle.cancel()
    assert rc < 0, (rc, handle.stderr_text)
    assert handle.returncode == rc
    assert handle.cancelled() and handle.done()
    with pytest.raises(CommandCancelledError) as info:
        handle.result(timeout=0)
    assert info.value.returncode == rc
    assert isinstance(info.value, concurrent.futures.CancelledError)
    wait_for(lambda: alive(local + readers) + cp_processes(fifo), lambda pids: not pids,
             timeout=GONE_TIMEOUT, what="no process of the cancelled command left")
    if backend.cluster is not None:
        wait_for(lambda: set(backend.jobs()) - before, lambda ids: not ids,
                 timeout=GONE_TIMEOUT, what="no job of the cancelled command in squeue")
        assert int(handle.job_id) not in backend.jobs()
    assert not (tmp_path / "never").exists() or (tmp_path / "never").stat().st_size == 0


# ---------------------------------------------------------------- 5. futures
@blocking_modes
def test_futures_wait_and_as_completed(backend, tmp_path, blocking):
    (tmp_path / "here").write_text("x")
    good = backend.dm.dtls(tmp_path / "here", blocking=blocking)
    bad = backend.dm.dtls(tmp_path / "gone", blocking=blocking)
    done, not_done = concurrent.futures.wait([good, bad], timeout=RUN_TIMEOUT)
    assert done == {good, bad} and not not_done
    assert good.result() == 0
    assert isinstance(bad.exception(), CommandError) and bad.exception().returncode == 2

    again = [backend.dm.dtls(tmp_path / "here", blocking=blocking) for _ in range(2)]
    finished = list(concurrent.futures.as_completed(again, timeout=RUN_TIMEOUT))
    assert sorted(map(id, finished)) == sorted(map(id, again))
    assert [f.result() for f in finished] == [0, 0]


@blocking_modes
def test_then_runs_after_success_and_not_after_failure(backend, tmp_path, blocking):
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    seen = []

    def after(rc):
        # Runs once the copy has ended: its result is there to read.
        seen.append((rc, (tmp_path / "dst").read_bytes()))
        return "next"

    chained = backend.dm.dtcp(src, tmp_path / "dst", blocking=blocking).then(after)
    assert chained.result(timeout=RUN_TIMEOUT) == "next"
    assert seen == [(0, b"payload")]

    failed = backend.dm.dtcp(tmp_path / "missing", tmp_path / "x", blocking=blocking)
    skipped = failed.then(seen.append)
    with pytest.raises(DependencyError) as info:
        skipped.result(timeout=RUN_TIMEOUT)
    assert isinstance(info.value.__cause__, CommandError)
    assert info.value.__cause__.returncode == failed.returncode == 1  # cp's
    assert len(seen) == 1


def test_then_after_cancel_does_not_run(backend, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ran = []
    handle = backend.dm.dtcp(fifo, tmp_path / "never")
    chained = handle.then(ran.append)
    wait_for(lambda: cp_processes(fifo), timeout=RUN_TIMEOUT, what=f"cp to open {fifo}")
    assert handle.cancel() < 0
    with pytest.raises(DependencyError) as info:
        chained.result(timeout=RUN_TIMEOUT)
    assert isinstance(info.value.__cause__, CommandCancelledError)
    assert ran == []
    wait_for(lambda: cp_processes(fifo), lambda pids: not pids, timeout=GONE_TIMEOUT, what="cp to be gone")


# ---------------------------------------------------------------- 6. after= chains
@blocking_modes
def test_after_runs_steps_in_order_and_stops_at_a_failure(backend, tmp_path, blocking):
    dm = backend.dm
    (tmp_path / "src").write_bytes(b"payload")
    first = dm.dtcp(tmp_path / "src", tmp_path / "a", blocking=blocking)
    second = dm.dtcp(tmp_path / "a", tmp_path / "b", blocking=blocking, after=[first])
    assert second.result(timeout=RUN_TIMEOUT) == 0
    assert (tmp_path / "b").read_bytes() == b"payload"
    assert second.started >= first.ended

    failed = dm.dtcp(tmp_path / "missing", tmp_path / "x", blocking=blocking)
    never = dm.dtcp(tmp_path / "a", tmp_path / "never", blocking=blocking, after=[failed])
    cleanup = dm.dtrm("-f", "--", tmp_path / "a", blocking=blocking, after=[never], on="always")
    with pytest.raises(DependencyError) as info:
        never.result(timeout=RUN_TIMEOUT)
    assert isinstance(info.value.__cause__, CommandError) and info.value.__cause__.returncode == 1
    assert never.pid is None and never.job_id is None  # nothing was started or submitted
    assert cleanup.result(timeout=RUN_TIMEOUT) == 0
    assert not (tmp_path / "a").exists() and not (tmp_path / "never").exists()


# ---------------------------------------------------------------- 7. parallel copy
def test_parallel_copy_verifies_and_resumes(backend, tmp_path):
    """The copy engine over each backend: a hostile tree arrives byte-identical and verified;
    a second run finds everything there; a changed source file is all the third one copies."""
    from helpers import HOSTILE, assert_identical, counts, make_tree

    from taurus_tools import ParallelCopy

    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    options = dict(workers=2, shards=4, progress=False, work_dir=tmp_path / "work")

    def run():
        result = ParallelCopy(src, dst, datamover=backend.dm, **options).run()
        assert result.ok, result.failed_messages
        return result

    first = run()
    planned, planned_bytes = counts(assert_identical(src, dst))
    assert (first.files_planned, first.bytes_planned) == (planned, planned_bytes)
    assert first.files_copied == planned and first.files_verified == planned and first.mismatches == 0

    def written() -> dict:
        """Each destination file's identity: a file written again (to a temporary name and
        renamed, as every backend does) gets a new inode."""
        return {p: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in dst.rglob("*") if not p.is_dir()}

    before = written()
    second = run()
    assert written() == before  # nothing rewritten
    changed = src / HOSTILE[0]
    os.utime(changed, (1, 1))  # same size, another mtime: it must be copied again
    third = run()
    after = written()
    assert {p for p in after if after[p] != before[p]} == {dst / HOSTILE[0]}
    assert_identical(src, dst)
    if backend.name != "site":
        # dtrsync decides itself what to skip; the driver counts what it handed over
        assert second.files_copied == 0 and second.files_skipped == planned, second.summary()
        assert third.files_copied == 1 and third.files_skipped == planned - 1, third.summary()
