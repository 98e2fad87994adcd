"""End to end: code written for taurus_datamover 0.4.0 runs on ``taurus_tools.compat``.

Only the import changes.  The original README's code blocks, 0.4.0's signatures,
``waitfor``'s timeouts and a downstream client (after biapol_taurus.ProjectFileTransfer)
run on three backends: this machine (no ``dt*`` tools, no Slurm), the real Slurm test
cluster (no ``dt*`` tools: compat falls back to taurus-tools' "auto" choice) and the site
emulation ``tests/site_tools`` (``dt*`` scripts running jobs in partition "datamover").
Workspaces are the local implementation under a temporary ``TAURUS_TOOLS_WS_ROOT``.

``save_to_project`` into a folder the caller cannot write runs as ``nobody``: the caller
is a subprocess started with ``setpriv`` (keeping only CAP_DAC_READ_SEARCH, to run this
Python wherever it lives; it grants no writes), and its datamover is a stub ``dtcp``
running a copy of ``cp`` with CAP_DAC_OVERRIDE (the rights of the transfer nodes).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import errno
import inspect
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy
import psutil
import pytest
from helpers import NOISE, alive, wait_for, write_stub  # tests/ is on sys.path (conftest)

import taurus_tools
from taurus_tools.compat import CacheWorkspace, Datamover, Workspace, save_to_project, waitfor

TESTS_DIR = Path(__file__).resolve().parent
DT_DEFAULT = "/sw/taurus/tools/slurmtools/default/bin/"
WS_DEFAULT = "/usr/bin/"
#: Seconds any one command (a Slurm job included) gets before a test fails.
JOB_S = 120.0
EMPTY = inspect.Parameter.empty
POS = inspect.Parameter.POSITIONAL_OR_KEYWORD
KW = inspect.Parameter.KEYWORD_ONLY


# ============================================================================ helpers
@dataclass
class Where:
    """One backend the old code runs on: what to give ``Datamover(path_to_exe=...)``."""

    name: str  # "local", "slurm" or "site"
    path_to_exe: Path
    cluster: Any  # the SlurmCluster, or None

    def datamover(self, *args: Any, **kw: Any) -> Datamover:
        dm = Datamover(str(self.path_to_exe), *args, **kw)
        assert dm.datamover.backend.name == self.name, dm.datamover.backend.reason
        assert dm.is_cluster() is (self.name != "local")
        return dm

    def jobs(self) -> set:
        return set(self.cluster.squeue_ids()) if self.cluster is not None else set()


BACKENDS = ["local", pytest.param("slurm", marks=pytest.mark.slurm), pytest.param("site", marks=pytest.mark.slurm)]


@pytest.fixture
def no_tools(tmp_path: Path) -> Path:
    """A folder without any ``dt*`` or ``ws_*`` tool."""
    folder = tmp_path / "no-tools"
    folder.mkdir()
    return folder


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workspaces and job files in tmp_path, one locale, no backend forced, no --blocking quirk."""
    monkeypatch.setenv("TAURUS_TOOLS_WS_ROOT", str(tmp_path / "ws"))
    monkeypatch.setenv("TAURUS_TOOLS_JOB_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("TAURUS_TEST_DT_LOGDIR", str(tmp_path / "dt-logs"))
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    for var in ("TAURUS_TOOLS_BACKEND", "TAURUS_TOOLS_DT_DIR", "DT_BLOCKING_LAST_ONLY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def ws_root(tmp_path: Path) -> Path:
    """Where the local workspace tools keep this test's workspaces."""
    return tmp_path / "ws"


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, no_tools: Path) -> Where:
    """Each backend: this machine, the Slurm fallback, the site tools (both on the test cluster)."""
    if request.param == "local":
        request.getfixturevalue("no_slurm_env")
        return Where("local", no_tools, None)
    cluster = request.getfixturevalue("slurm_cluster")
    if request.param == "slurm":
        return Where("slurm", no_tools, cluster)
    return Where("site", request.getfixturevalue("site_tools_dir"), cluster)


@pytest.fixture
def local_dm(no_tools: Path, no_slurm_env: None) -> Datamover:
    return Where("local", no_tools, None).datamover()


def local_workspaces(ws_root: Path) -> List[str]:
    """``<user>-<id>`` of each workspace allocated (not released) under the local root."""
    return sorted(p.stem for p in ws_root.glob(".ws-db/*/*.json"))


def open_writer(fifo: Path) -> Optional[int]:
    """A write end of ``fifo`` once a reader has it open, else None."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return None
        raise
    os.set_blocking(fd, True)
    return fd


def feed(fifo: Path, data: bytes) -> None:
    """Write ``data`` into ``fifo`` as soon as its reader (a cp, maybe in a job) opened it."""
    fd = wait_for(lambda: open_writer(fifo), lambda fd: fd is not None, timeout=JOB_S, what=f"a reader of {fifo}")
    with os.fdopen(fd, "wb") as writer:
        writer.write(data)


def with_arg(arg: Path) -> List[int]:
    """Live processes with ``arg`` among their arguments (dt tool, srun, cp in the job)."""
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if str(arg) in (proc.info["cmdline"] or []):
            pids.append(proc.info["pid"])
    return alive(pids)


def cp_reading(fifo: Path) -> List[int]:
    """Live ``cp`` processes reading ``fifo`` (locally or in a Slurm job)."""
    found = []
    for pid in with_arg(fifo):
        try:
            if os.path.basename(psutil.Process(pid).cmdline()[0]) == "cp":
                found.append(pid)
        except (psutil.Error, IndexError):
            pass
    return found


def within(seconds: float, fn: Callable[[], Any], stop: Callable[[], None]) -> Any:
    """``fn()``'s result, or a failure (after ``stop()``) if it takes longer than ``seconds``."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(fn)
        try:
            return future.result(timeout=seconds)
        except concurrent.futures.TimeoutError:
            stop()
            pytest.fail(f"{fn} did not return within {seconds} s")


class Captured:
    """What ``capsys`` has seen so far, accumulated across ``readouterr()`` calls."""

    def __init__(self, capsys: pytest.CaptureFixture) -> None:
        self.capsys = capsys
        self.out = self.err = ""

    def read(self) -> "Captured":
        out, err = self.capsys.readouterr()
        self.out += out
        self.err += err
        return self


def params(obj: Any) -> List[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]


def grp_folder(root: Path) -> Path:
    """The README's ``/grp/g_biapol``: folders data, presentations, projects; data/test."""
    grp = root / "grp" / "g_biapol"
    for sub in ("data/test/test", "presentations", "projects"):
        (grp / sub).mkdir(parents=True)
    (grp / "data" / "test" / "readme.txt").write_text("a test file\n")
    (grp / "data" / "test" / "test" / "image.bin").write_bytes(bytes(range(256)) * 64)
    return grp


# ============================================================================ README
class TestReadmeDatamover:
    """The README's Datamover blocks, with /grp and /projects in tmp_path."""

    def test_help(self, where: Where) -> None:
        dm = where.datamover()
        out, _ = dm.dtls("--help").communicate()
        assert isinstance(out, bytes)
        text = out.decode("utf-8")
        # srun runs the program by its full path: "Usage: /usr/bin/ls ..." in a job
        usage = r"Usage: (\S*/)?ls \[OPTION\]\.\.\. \[FILE\]\.\.\.\nList information about the FILEs"
        assert re.match(usage, text), text[:300]
        assert "-a, --all                  do not ignore entries starting with ." in text

    def test_listing_poll_waitfor_communicate(self, where: Where, tmp_path: Path) -> None:
        grp = str(grp_folder(tmp_path))
        dm = where.datamover()
        proc = dm.dtls("-lh", grp)
        assert proc.poll() in (None, 0)  # None while running; this machine's ls may be done already
        rc = wait_for(proc.poll, lambda rc: rc is not None, timeout=JOB_S, what="dtls to end")
        assert rc == 0 and proc.poll() == 0
        proc = dm.dtls("-lh", grp)
        assert waitfor(proc) == 0
        out, _ = proc.communicate()
        assert isinstance(out, bytes)
        lines = out.decode("utf-8").strip().split("\n")
        assert lines[0].startswith("total ")
        assert [line.split()[-1] for line in lines[1:]] == ["data", "presentations", "projects"]
        assert all(line.startswith("d") for line in lines[1:])
        assert proc.stdout.read() == out  # as Popen's stdout, bytes

    def test_poll_is_none_while_the_command_runs(self, where: Where, tmp_path: Path) -> None:
        fifo, copy = tmp_path / "fifo", tmp_path / "copy"
        os.mkfifo(fifo)
        proc = where.datamover().dtcp(str(fifo), str(copy))
        assert proc.poll() is None  # cp waits for a writer: it cannot have ended
        wait_for(lambda: cp_reading(fifo), timeout=JOB_S, what="cp to read the fifo")
        assert proc.poll() is None
        feed(fifo, b"through the fifo")
        assert wait_for(proc.poll, lambda rc: rc is not None, timeout=JOB_S, what="dtcp to end") == 0
        assert copy.read_bytes() == b"through the fifo"

    def test_copy_then_remove(self, where: Where, tmp_path: Path) -> None:
        grp = grp_folder(tmp_path)
        project = tmp_path / "projects" / "p_bioimage"
        project.mkdir(parents=True)
        dm = where.datamover()
        assert waitfor(dm.dtcp("-r", f"{grp}/data/test", f"{project}/")) == 0
        ls = subprocess.run(["ls", "-la", f"{project}/test/"], capture_output=True, text=True)  # !ls -la ...
        assert [line.split()[-1] for line in ls.stdout.splitlines()[1:]] == [".", "..", "readme.txt", "test"]
        assert (project / "test" / "readme.txt").read_text() == "a test file\n"
        assert (project / "test" / "test" / "image.bin").read_bytes() == bytes(range(256)) * 64
        assert waitfor(dm.dtrm("-r", f"{project}/test")) == 0
        ls = subprocess.run(["ls", "-la", f"{project}/test/"], capture_output=True, text=True)
        assert ls.returncode == 2 and "No such file or directory" in ls.stderr
        assert os.listdir(project) == []

    def test_cache_workspace_block(self, where: Where, tmp_path: Path, ws_root: Path) -> None:
        dm = where.datamover()
        project = tmp_path / "projects" / "my_project"
        project.mkdir(parents=True)
        tiff = b"II*\x00" + bytes(1000)
        with CacheWorkspace() as cws:
            temp_file = cws.name + "/temp.tiff"
            Path(temp_file).write_bytes(tiff)  # imsave(temp_file)
            target_file = str(project / "data.tiff")
            # The README does not wait; here the copy must end before the block releases the cache.
            assert waitfor(dm.dtcp(temp_file, target_file)) == 0
        assert (project / "data.tiff").read_bytes() == tiff
        assert cws.name is None and local_workspaces(ws_root) == []

    def test_not_blocking(self, where: Where, tmp_path: Path) -> None:
        """``blocking=False``: a batch job on Slurm; the handle lasts until the job ends."""
        (tmp_path / "src.txt").write_text("batch\n")
        dm = where.datamover(False)
        assert dm.blocking is False
        proc = dm.dtcp(str(tmp_path / "src.txt"), str(tmp_path / "dst.txt"))
        assert "--blocking" not in proc.args
        assert waitfor(proc) == 0 and (tmp_path / "dst.txt").read_text() == "batch\n"
        assert isinstance(proc.communicate()[0], bytes)

    @pytest.mark.parametrize("where", BACKENDS[2:], indirect=True)
    def test_srun_messages_with_verbosity_1(self, where: Where, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
        """The README's "srun: error: ... pseudo-terminal" lines: in stderr, shown live at verbosity 1."""
        grp = str(grp_folder(tmp_path))
        proc = where.datamover(True, 1).dtls("-lh", grp)
        assert waitfor(proc) == 0
        out, err = proc.communicate()
        shown = capsys.readouterr()
        for line in NOISE:
            assert line in shown.err and line.encode() in err
        assert b"presentations" in out and "presentations" not in shown.out

    @pytest.mark.parametrize("where", BACKENDS[:2], indirect=True)
    def test_default_path_falls_back(self, where: Where) -> None:
        """``Datamover()`` as the README writes it, where the ZIH folder does not exist."""
        assert not os.path.exists(DT_DEFAULT), "this test needs a machine without the ZIH tools"
        dm = Datamover()
        assert dm.path_to_exe == Path(DT_DEFAULT)
        assert dm.datamover.backend.name == where.name and dm.is_cluster() is (where.name != "local")
        assert {"dtcp", "dtls", "dtmv", "dtrm"} <= set(dm.exe)


class TestReadmeWorkspace:
    """The README's Workspace and CacheWorkspace blocks (local workspaces)."""

    def test_allocate_list_release(self, ws_root: Path) -> None:
        ws = Workspace()
        assert ws.workspace.backend == "local", "this test needs a machine without hpc-workspace"
        out, _ = ws.ws_allocate("my-workspace", "30").communicate()
        assert isinstance(out, bytes)
        workspace_path = out.strip().decode("utf-8")
        assert Path(workspace_path).is_dir() and ws_root in Path(workspace_path).parents
        assert workspace_path.endswith("-my-workspace")
        out, _ = ws.ws_list().communicate()
        text = out.strip().decode("utf-8")
        assert text.startswith("id: my-workspace\n"), text
        assert f"     workspace directory  : {workspace_path}\n" in text
        assert re.search(r"\n     remaining time       : 29 days \d+ hours\n", text), text
        assert "\n     filesystem name      : scratch\n" in text
        assert "\n     available extensions : 10" in text
        assert ws.ws_release("my-workspace").wait() == 0
        assert not Path(workspace_path).exists()
        out, _ = ws.ws_list().communicate()
        assert b"my-workspace" not in out

    def test_cache_workspace_temporary_directory_cleanup(self, ws_root: Path) -> None:
        cws = CacheWorkspace()
        assert cws.ws.workspace.backend == "local"
        tmp = TemporaryDirectory(prefix=cws.name + "/")
        assert tmp.name.startswith(cws.name + "/") and os.path.isdir(tmp.name)
        assert local_workspaces(ws_root) == [Path(cws.name).name]
        cws.cleanup()
        assert cws.name is None and local_workspaces(ws_root) == []
        tmp.cleanup()  # its folder went with the workspace: nothing to complain about
        with cws:  # a released cache is allocated again for the block, as in 0.4.0
            assert os.path.isdir(cws.name) and local_workspaces(ws_root) == [Path(cws.name).name]
        assert cws.name is None and local_workspaces(ws_root) == []


# ============================================================================ signatures
class TestSignatures:
    """0.4.0's names, parameters, defaults and attributes; positional and keyword calls."""

    def test_parameters_are_0_4_0s(self) -> None:
        assert params(Datamover) == [("path_to_exe", POS, DT_DEFAULT), ("blocking", POS, True), ("verbosity", POS, 0)]
        assert params(Workspace) == [("path_to_exe", POS, WS_DEFAULT), ("verbosity", POS, 0)]
        assert params(CacheWorkspace) == [
            ("path_to_exe", POS, WS_DEFAULT),
            ("id", POS, "cache"),
            ("expire_in_days", POS, 1),
        ]
        assert params(waitfor) == [
            ("process", POS, EMPTY),
            ("timeout_in_s", POS, -1),
            ("discard_output", POS, True),
            ("quiet", POS, True),
        ]
        assert params(save_to_project) == [
            ("save_fn", POS, EMPTY),
            ("file_path", POS, EMPTY),
            ("args", inspect.Parameter.VAR_POSITIONAL, EMPTY),
            ("file_path_arg_pos", KW, 0),
            ("cache_workspace", KW, None),
            ("path_to_datamover", KW, DT_DEFAULT),
            ("path_to_workspace_tools", KW, WS_DEFAULT),
            ("quiet", KW, False),
            ("kw", inspect.Parameter.VAR_KEYWORD, EMPTY),
        ]

    def test_datamover_positional_and_keyword(self, no_tools: Path, no_slurm_env: None) -> None:
        for dm in (Datamover(str(no_tools), False, 1), Datamover(path_to_exe=no_tools, blocking=False, verbosity=1)):
            assert isinstance(dm.path_to_exe, Path) and dm.path_to_exe == no_tools
            assert dm.blocking is False and dm.verbosity == 1
            assert {"dtcp", "dtls", "dtmv", "dtrm", "dtrsync"} <= set(dm.exe)
            assert dm.is_cluster() is False

    def test_datamover_on_site_tools(self, site_tools_dir: Path, slurm_cluster: Any) -> None:
        dm = Datamover(site_tools_dir)
        expected = sorted(p.name for p in site_tools_dir.glob("dt*") if os.access(p, os.X_OK))
        assert sorted(dm.exe) == expected and "dtq" in dm.exe
        assert dm.blocking is True and dm.verbosity == 0 and dm.is_cluster() is True
        queue = dm.dtq()  # a site tool taurus-tools does not know runs as it is
        assert waitfor(queue, JOB_S) == 0
        assert b"JOBID" in queue.communicate()[0]

    def test_workspace_positional_and_keyword(self, no_tools: Path) -> None:
        for ws in (Workspace(str(no_tools), 2), Workspace(path_to_exe=no_tools, verbosity=2)):
            assert isinstance(ws.path_to_exe, Path) and ws.path_to_exe == no_tools
            assert ws.verbosity == 2
            assert {"ws_allocate", "ws_list", "ws_release"} <= set(ws.exe)
            assert ws.is_cluster() is False

    def test_cache_workspace_positional_and_keyword(self, no_tools: Path, ws_root: Path) -> None:
        for make in (
            lambda: CacheWorkspace(str(no_tools), "cache", 2),
            lambda: CacheWorkspace(path_to_exe=no_tools, id="cache", expire_in_days=2),
        ):
            cws = make()
            assert cws.id == "cache" and cws.expire_in_days == 2
            assert isinstance(cws.ws, Workspace) and cws.ws.path_to_exe == no_tools
            assert Path(cws.name).name.endswith("-cache") and os.path.isdir(cws.name)
            (info,) = cws.ws.workspace.list()
            assert info.id == "cache" and info.expires - info.created == datetime.timedelta(days=2)
            cws.cleanup()
            assert cws.name is None and local_workspaces(ws_root) == []

    def test_default_id_is_unique(self, ws_root: Path) -> None:
        a, b = CacheWorkspace(), CacheWorkspace()
        try:
            assert a.id != b.id and "cache" not in (a.id, b.id)
            assert a.id.startswith("cache") and b.id.startswith("cache")
            assert a.name != b.name and os.path.isdir(a.name) and os.path.isdir(b.name)
            assert local_workspaces(ws_root) == sorted([Path(a.name).name, Path(b.name).name])
        finally:
            a.cleanup()
            b.cleanup()
        assert local_workspaces(ws_root) == []

    def test_explicit_id_that_exists_is_used_not_released(self, ws_root: Path) -> None:
        ws = Workspace()
        out, _ = ws.ws_allocate("cache", "3").communicate()
        existing = out.strip().decode()
        with CacheWorkspace(id="cache") as cws:
            assert cws.name == existing
        assert os.path.isdir(existing), "a workspace CacheWorkspace did not create is not released"
        assert ws.ws_release("cache").wait() == 0

    def test_waitfor_positional_and_keyword(self, local_dm: Datamover, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("x")
        proc = local_dm.dtls(str(tmp_path))
        assert waitfor(proc, 60, False, True) == 0
        assert b"file" in proc.communicate()[0]
        proc = local_dm.dtls(str(tmp_path))
        assert waitfor(process=proc, timeout_in_s=60, discard_output=False, quiet=True) == 0
        assert b"file" in proc.communicate()[0]

    def test_save_to_project_positional_and_keyword(self, tmp_path: Path, no_tools: Path) -> None:
        """A writable folder is written directly: the datamover (a refusing stub) is not used."""
        calls: List[tuple] = []
        refusing = tmp_path / "refusing"
        write_stub(refusing, "dtcp", f"touch '{tmp_path}/dtcp-was-called'\nexit 1\n")

        def save(*args: Any, **kw: Any) -> str:
            calls.append((args, kw))
            Path(args[1]).write_text(args[0])
            return "saved"

        target = tmp_path / "direct.txt"
        got = save_to_project(
            save, str(target), "content", "after",
            file_path_arg_pos=1, cache_workspace=None, path_to_datamover=str(refusing),
            path_to_workspace_tools=str(no_tools), quiet=True, extra=3,
        )
        assert got == "saved" and target.read_text() == "content"
        assert calls == [(("content", str(target), "after"), {"extra": 3})]
        got = save_to_project(lambda path, text: Path(path).write_text(text), str(tmp_path / "first.txt"), "pos 0",
                              path_to_datamover=str(refusing))
        assert got == len("pos 0") and (tmp_path / "first.txt").read_text() == "pos 0"
        (tmp_path / "sub").mkdir()
        save_to_project(lambda path: Path(path).write_text("slashes"), f"{tmp_path}\\sub\\win.txt", quiet=True)
        assert (tmp_path / "sub" / "win.txt").read_text() == "slashes"  # 0.4.0 turned \\ into /
        assert not (tmp_path / "dtcp-was-called").exists()


class TestCommandsAsMethods:
    """Executables as methods: dispatch, unknown names, verbosity."""

    def test_method_keeps_its_command(self, local_dm: Datamover, tmp_path: Path) -> None:
        """0.4.0 ran the command named last: ``f = dm.dtcp; dm.dtls(); f(a, b)`` ran dtls."""
        src, dst = tmp_path / "src.txt", tmp_path / "dst.txt"
        src.write_text("copied")
        f = local_dm.dtcp
        listing = local_dm.dtls(str(tmp_path))
        copy = f(str(src), str(dst))
        assert waitfor(copy) == 0 and dst.read_text() == "copied"
        assert os.path.basename(copy.args[0]) in ("cp", "dtcp")
        assert waitfor(listing) == 0 and b"src.txt" in listing.communicate()[0]

    def test_methods_from_many_threads(self, local_dm: Datamover, tmp_path: Path) -> None:
        barrier = threading.Barrier(8)
        for i in range(4):
            (tmp_path / f"in{i}").write_text(f"file {i}")

        def work(i: int) -> tuple:
            barrier.wait()
            if i % 2:
                proc = local_dm.dtls(str(tmp_path / f"in{i // 2}"))
            else:
                copy = local_dm.dtcp
                proc = copy(str(tmp_path / f"in{i // 2}"), str(tmp_path / f"out{i // 2}"))
            return waitfor(proc, 60), proc.communicate()[0]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(8)))
        for i, (rc, out) in enumerate(results):
            assert rc == 0
            if i % 2:
                assert out == f"{tmp_path}/in{i // 2}\n".encode()
            else:
                assert out == b"" and (tmp_path / f"out{i // 2}").read_text() == f"file {i // 2}"

    def test_popen_attributes(self, local_dm: Datamover, tmp_path: Path) -> None:
        """What old code used of the Popen 0.4.0 returned: args, pid, poll, returncode, kill, wait."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        proc = local_dm.dtcp(str(fifo), str(tmp_path / "never"))
        assert proc.args[-2:] == [str(fifo), str(tmp_path / "never")]
        assert isinstance(proc.pid, int) and proc.poll() is None and proc.returncode is None
        wait_for(lambda: cp_reading(fifo), timeout=30, what="cp to read the fifo")
        proc.kill()
        assert proc.wait(30) == -signal.SIGKILL and proc.returncode == proc.poll() == -signal.SIGKILL
        assert proc.communicate() == (b"", b"")

    def test_unknown_command(self, local_dm: Datamover, no_tools: Path) -> None:
        with pytest.raises(AttributeError, match="No executable with name dtfoo"):
            local_dm.dtfoo
        assert not hasattr(local_dm, "dtq")  # not a site tool here
        assert not hasattr(local_dm, "ws_list")
        ws = Workspace(no_tools)
        with pytest.raises(AttributeError):
            ws.dtcp
        assert "dtcp" in dir(local_dm) and "ws_list" in dir(ws)

    @pytest.fixture
    def talker(self, tmp_path: Path) -> tuple:
        """A ``dtcp`` that prints on both streams, then runs until ``release`` exists."""
        release = tmp_path / "release"
        tools = tmp_path / "talker"
        write_stub(tools, "dtcp", f"""
echo "progress on stderr" >&2
echo "result on stdout"
while [ ! -e '{release}' ]; do sleep 0.05; done
echo "finished on stderr" >&2
""")
        return tools, release

    @pytest.mark.parametrize("verbosity", [0, 1, 2])
    def test_verbosity_shows_output_live(self, talker: tuple, capsys: pytest.CaptureFixture, verbosity: int) -> None:
        tools, release = talker
        dm = Datamover(tools, True, verbosity)
        captured = Captured(capsys)
        proc = dm.dtcp("a", "b")
        assert proc.args[-1] == "--blocking"
        if verbosity:
            wait_for(lambda: captured.read().err, lambda err: "progress on stderr" in err, timeout=30,
                     what="stderr shown live")
        if verbosity == 2:
            wait_for(lambda: captured.read().out, lambda out: "result on stdout" in out, timeout=30,
                     what="stdout shown live")
        assert proc.poll() is None, "the text came while the command still ran"
        release.touch()
        assert waitfor(proc, 30) == 0
        out, err = proc.communicate()
        assert out == b"result on stdout\n"
        assert b"progress on stderr\n" in err and b"finished on stderr\n" in err
        captured.read()
        assert ("progress on stderr" in captured.err) is (verbosity > 0)
        assert ("finished on stderr" in captured.err) is (verbosity > 0)
        assert ("result on stdout" in captured.out) is (verbosity == 2)

    def test_workspace_verbosity(self, no_tools: Path, capsys: pytest.CaptureFixture) -> None:
        ws = Workspace(no_tools, 2)
        out, _ = ws.ws_allocate("shown", "1").communicate()
        assert capsys.readouterr().out == out.decode()
        assert ws.ws_release("shown").wait() == 0


# ============================================================================ waitfor
class TestWaitfor:
    """Timeouts cancel the process tree and the Slurm job; pipes never deadlock."""

    @pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
    def test_timeout_cancels_everything(self, where: Where, tmp_path: Path, blocking: bool) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        before = where.jobs()
        proc = where.datamover(blocking).dtcp(str(fifo), str(tmp_path / "never"))
        wait_for(lambda: cp_reading(fifo), timeout=JOB_S, what="cp to read the fifo")
        if where.cluster is not None:
            new = wait_for(lambda: where.jobs() - before, timeout=JOB_S, what="the transfer job")
        pids = alive([proc.pid]) + with_arg(fifo)  # dt tool, srun or sbatch, cp (in the job)
        started = time.monotonic()
        with pytest.warns(UserWarning, match="Timeout while waiting for process"):
            rc = waitfor(proc, timeout_in_s=0.5)
        assert time.monotonic() - started < 60
        assert rc != 0 and proc.returncode == rc
        wait_for(lambda: alive(pids) + with_arg(fifo), lambda left: not left, timeout=30,
                 what="the local processes and the job's cp to be gone")
        if where.cluster is not None:
            wait_for(where.jobs, lambda ids: not ids & new, timeout=60, what=f"jobs {new} to leave squeue")
        assert not (tmp_path / "never").exists()

    def test_failure_warns_and_returns_the_code(self, where: Where, tmp_path: Path) -> None:
        proc = where.datamover().dtls(str(tmp_path / "missing"))
        with pytest.warns(UserWarning, match=r"(?s)exited with error: .*cannot access"):
            assert waitfor(proc) == 2
        assert b"cannot access" in proc.communicate()[1]

    def test_not_quiet_prints_dots(self, local_dm: Datamover, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
        assert waitfor(local_dm.dtls(str(tmp_path)), quiet=False) == 0
        assert re.fullmatch(r"Waiting \.+\n", capsys.readouterr().out)

    def test_popen_with_megabytes_of_output(self) -> None:
        code = "import sys; sys.stdout.write('o' * 3_000_000); sys.stderr.write('e' * 1_500_000)"
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert within(60, lambda: waitfor(proc), proc.kill) == 0
        out, err = proc.communicate()
        assert out == b"o" * 3_000_000 and err == b"e" * 1_500_000

    def test_popen_timeout_kills_the_tree(self) -> None:
        proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300; wait"], stdout=subprocess.PIPE)
        children = wait_for(lambda: psutil.Process(proc.pid).children(), lambda c: len(c) == 2, timeout=30,
                            what="both sleeps")
        tree = [proc.pid, *(c.pid for c in children)]
        with pytest.warns(UserWarning, match="Timeout while waiting for process: sh -c"):
            rc = within(60, lambda: waitfor(proc, 0.5), proc.kill)
        assert rc != 0
        wait_for(lambda: alive(tree), lambda pids: not pids, timeout=30, what="the process tree to be gone")

    @pytest.fixture
    def orphan(self, tmp_path: Path) -> Iterator[tuple]:
        """A Popen that ended at once, leaving a child that holds its stdout open."""
        pidfile = tmp_path / "orphan.pid"
        proc = subprocess.Popen(["sh", "-c", f'sleep 300 & echo $! > "{pidfile}"; echo started'],
                                stdout=subprocess.PIPE)
        assert proc.wait(30) == 0

        def release() -> None:
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass

        yield proc, release
        release()
        assert proc.communicate(timeout=30)[0] == b"started\n"

    def test_popen_ended_but_its_pipe_is_held(self, orphan: tuple) -> None:
        """0.4.0 polled: with ``discard_output=False`` an ended process is done at once."""
        proc, release = orphan
        assert within(5, lambda: waitfor(proc, discard_output=False), release) == 0

    def test_popen_ended_is_no_timeout(self, orphan: tuple) -> None:
        """Nor is it reported (and "cancelled") as a timeout."""
        proc, release = orphan
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert within(30, lambda: waitfor(proc, 2, False), release) == 0

    def test_popen_without_pipes(self) -> None:
        """verbosity 2 in 0.4.0: Popen without pipes (0.4.0's waitfor failed on its None output)."""
        assert waitfor(subprocess.Popen(["true"])) == 0
        with pytest.warns(UserWarning, match="exited with error"):
            assert waitfor(subprocess.Popen(["sh", "-c", "exit 3"])) == 3


# ============================================================================ a downstream client
class ProjectFiles:
    """A client written against taurus_datamover 0.4.0 (after biapol_taurus.ProjectFileTransfer).

    Also imported by the unprivileged subprocess of :class:`TestDownstreamClient`.
    """

    def __init__(self, project: str, path_to_datamover: str, path_to_workspace_tools: str = "/usr/bin/"):
        self.project = project.rstrip("/")
        self.path_to_datamover = path_to_datamover
        self.path_to_workspace_tools = path_to_workspace_tools
        self.dm = Datamover(path_to_exe=path_to_datamover)
        self.cache = CacheWorkspace(path_to_exe=path_to_workspace_tools)

    def _run(self, proc: Any) -> bytes:
        code = waitfor(proc)
        out, err = proc.communicate()
        if code != 0:
            raise RuntimeError(f"{proc.args} failed ({code}): {err.decode()}")
        return out

    def get(self, relative: str) -> str:
        """Copy a project file or folder into the cache; return its local path."""
        self._run(self.dm.dtcp("-r", f"{self.project}/{relative}", self.cache.name + "/"))
        return self.cache.name + "/" + relative.rstrip("/").split("/")[-1]

    def put(self, local: str, relative: str) -> None:
        self._run(self.dm.dtcp("-r", local, f"{self.project}/{relative}"))

    def listing(self, relative: str = "") -> Dict[str, List[str]]:
        """``dtls -R1`` parsed: folder (relative to the project) -> its entries."""
        top = f"{self.project}/{relative}".rstrip("/")
        # The site's dtls runs ls on a terminal (srun --pty), where ls would quote odd names.
        out = self._run(self.dm.dtls("-R1", "--quoting-style=literal", top))
        tree: Dict[str, List[str]] = {}
        folder = ""
        for line in out.decode("utf-8").split("\n"):
            if line.endswith(":") and (line[:-1] == top or line.startswith(top + "/")):
                folder = line[len(top) + 1:-1]
                tree[folder] = []
            elif line:
                tree.setdefault(folder, []).append(line)
        return tree

    def sync_preview(self, local: str, relative: str) -> List[str]:
        """What ``dtrsync -auvn`` would transfer (a dry run: nothing is copied)."""
        out = self._run(self.dm.dtrsync("-auvn", local.rstrip("/") + "/", f"{self.project}/{relative}/"))
        noise = ("sending ", "sent ", "total size ", "created directory ")
        lines = out.decode("utf-8").split("\n")
        return [line for line in lines if line and line != "./" and not line.startswith(noise)]

    def save(self, save_fn: Callable[..., Any], relative: str, *args: Any, **kw: Any) -> Any:
        return save_to_project(
            save_fn, f"{self.project}/{relative}", *args,
            cache_workspace=self.cache, path_to_datamover=self.path_to_datamover,
            path_to_workspace_tools=self.path_to_workspace_tools, quiet=True, **kw,
        )

    def close(self) -> None:
        self.cache.cleanup()


#: Run by ``nobody``: saves through ProjectFiles into a project folder it cannot write.
NOBODY_SCRIPT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import numpy
from taurus_tools import StageError
from taurus_tools.compat import save_to_project
from test_compat import ProjectFiles

project, datamover, ws_tools = sys.argv[2:5]
report = {"uid": os.getuid()}
try:
    open(os.path.join(project, "results", "direct.npy"), "wb")
    report["direct"] = "written"
except PermissionError:
    report["direct"] = "refused"
client = ProjectFiles(project, datamover, ws_tools)
try:
    report["cache"] = client.cache.name
    report["returned"] = repr(client.save(numpy.save, "results/arr.npy", numpy.arange(12).reshape(3, 4)))
    report["cache_after"] = sorted(os.listdir(client.cache.name))
    # 0.4.0's plain call: a cache of its own, released after the copy; quiet=False names the target
    save_to_project(numpy.save, os.path.join(project, "results", "own-cache.npy"), numpy.ones(2),
                    path_to_datamover=datamover, path_to_workspace_tools=ws_tools, quiet=False)
    try:
        client.save(numpy.save, "missing/arr.npy", numpy.zeros(3))
        report["missing"] = "no error"
    except StageError as exc:
        report["missing"] = str(exc)
finally:
    client.close()
print(json.dumps(report))
"""


def _sbin_which(name: str) -> Optional[str]:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


@pytest.fixture
def unprivileged() -> Iterator[Dict[str, Any]]:
    """For ``nobody``: a project folder it cannot write, a ``dtcp`` that can, a ws root, a home."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs the tests as root: this test switches to the user nobody", pytrace=False)
        pytest.skip("needs root, to run the caller as nobody")
    missing = [tool for tool in ("setpriv", "setcap") if _sbin_which(tool) is None]
    assert not missing, f"missing {missing}: apt-get install util-linux libcap2-bin"
    nobody = pwd.getpwnam("nobody")
    # Not in tmp_path, which only root may enter: nobody must reach these paths itself (os.access
    # ignores capabilities).
    top = Path(tempfile.mkdtemp(prefix="taurus-compat-nobody-"))
    top.chmod(0o755)
    for name in ("ws", "home", "calls"):
        (top / name).mkdir()
        os.chown(top / name, nobody.pw_uid, nobody.pw_gid)
    (top / "project" / "results").mkdir(parents=True)
    (top / "no-tools").mkdir()
    bin_dir = top / "bin"
    bin_dir.mkdir()
    shutil.copy2(shutil.which("cp") or "/bin/cp", bin_dir / "cp-dac")
    subprocess.run([_sbin_which("setcap"), "cap_dac_override+ep", str(bin_dir / "cp-dac")], check=True)
    dtcp = bin_dir / "dtcp"
    dtcp.write_text(f"""#!/bin/bash
# The datamover's side: log the arguments, then copy with the rights the caller lacks.
printf '%s\\0' "$@" > "{top}/calls/dtcp.$$"
args=("$@")
[[ ${{#args[@]}} -gt 0 && ${{args[-1]}} == --blocking ]] && unset 'args[-1]'
exec "{bin_dir}/cp-dac" "${{args[@]}}"
""")
    dtcp.chmod(0o755)
    (top / "run.py").write_text(NOBODY_SCRIPT)
    yield {"top": top, "uid": nobody.pw_uid, "gid": nobody.pw_gid}
    shutil.rmtree(top, ignore_errors=True)


class TestDownstreamClient:
    """The client pattern: cache workspace, dtcp -r in and out, dtls -R1, dtrsync -auvn, save_to_project."""

    def test_round_trip(self, where: Where, tmp_path: Path, ws_root: Path) -> None:
        project = tmp_path / "project"
        files = {"raw/a.txt": b"alpha\n", "raw/with space.txt": b"spaced\n", "raw/sub/\u00fcmlaut.bin": bytes(300)}
        for rel, data in files.items():
            (project / rel).parent.mkdir(parents=True, exist_ok=True)
            (project / rel).write_bytes(data)
        client = ProjectFiles(str(project), str(where.path_to_exe))
        assert client.dm.datamover.backend.name == where.name
        try:
            tree = {"": ["raw"], "raw": ["a.txt", "sub", "with space.txt"], "raw/sub": ["\u00fcmlaut.bin"]}
            assert client.listing() == tree
            local = client.get("raw")
            assert local == client.cache.name + "/raw"
            for rel, data in files.items():
                assert Path(client.cache.name, rel).read_bytes() == data
            Path(local, "new result.txt").write_text("computed\n")
            preview = client.sync_preview(local, "processed")
            names = ["a.txt", "new result.txt", "sub/", "sub/\u00fcmlaut.bin", "with space.txt"]
            assert sorted(preview) == names, preview
            assert not (project / "processed").exists(), "a dry run copies nothing"
            client.put(local, "processed")
            assert (project / "processed" / "new result.txt").read_text() == "computed\n"
            assert (project / "processed" / "sub" / "\u00fcmlaut.bin").read_bytes() == bytes(300)
            arr = numpy.arange(6.0).reshape(2, 3)
            assert client.save(numpy.save, "processed/arr.npy", arr) is None  # writable: written directly
            assert (numpy.load(project / "processed" / "arr.npy") == arr).all()
        finally:
            client.close()
        assert client.cache.name is None and local_workspaces(ws_root) == []

    def test_save_as_nobody_into_a_folder_only_the_datamover_can_write(self, unprivileged: Dict[str, Any]) -> None:
        top, uid = unprivileged["top"], unprivileged["uid"]
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(top / "home"),
            "LC_ALL": "C",
            "TAURUS_TOOLS_WS_ROOT": str(top / "ws"),
        }
        # CAP_DAC_READ_SEARCH (read and search anything, write nothing) lets nobody run this
        # Python wherever it is installed (e.g. a venv of a Python under /root).
        argv = [
            _sbin_which("setpriv"), f"--reuid={uid}", f"--regid={unprivileged['gid']}", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
            sys.executable, str(top / "run.py"), str(TESTS_DIR),
            *(str(top / name) for name in ("project", "bin", "no-tools")),
        ]
        run = subprocess.run(argv, env=env, cwd=top, capture_output=True, text=True, timeout=JOB_S)
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout.strip().split("\n")[-1])
        assert report["uid"] == uid and report["direct"] == "refused"
        target = top / "project" / "results" / "arr.npy"
        assert report["returned"] == "None"
        assert (numpy.load(target) == numpy.arange(12).reshape(3, 4)).all()
        assert target.stat().st_uid == uid, "created by the capable cp, which ran as nobody"
        assert report["cache"].startswith(str(top / "ws") + "/") and report["cache_after"] == []
        assert not os.path.exists(report["cache"]), "the cache was released"
        own = top / "project" / "results" / "own-cache.npy"
        assert (numpy.load(own) == numpy.ones(2)).all() and own.stat().st_uid == uid
        assert f"target file: {own}" in run.stdout
        assert local_workspaces(top / "ws") == [], "both caches were released"
        calls = {}  # target -> the stub dtcp's arguments
        for call in (top / "calls").iterdir():
            args = [a.decode() for a in call.read_bytes().split(b"\0")[:-1]]
            calls[args[-2]] = args
        assert sorted(calls) == sorted([str(target), str(own), str(top / "project" / "missing" / "arr.npy")])
        args = calls[str(target)]
        assert args[:3] == ["-r", "-T", "--"] and args[-1] == "--blocking"  # 0.4.0's place for it
        assert args[-3].startswith(report["cache"] + "/") and args[-3].endswith("/arr.npy")
        assert "missing/arr.npy" in report["missing"] and "exit code" in report["missing"]
        assert not (top / "project" / "missing").exists()


# ============================================================================ --blocking last
class TestBlockingLastOnly:
    """Site tools that see ``--blocking`` only as the last argument, like 0.4.0's mock cluster."""

    @pytest.fixture(autouse=True)
    def last_only(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DT_BLOCKING_LAST_ONLY", "1")

    def test_compat_blocking_and_not(self, slurm_cluster: Any, site_tools_dir: Path, tmp_path: Path) -> None:
        src = tmp_path / "src"
        src.mkdir()
        (src / "f.txt").write_text("data\n")
        dm = Datamover(site_tools_dir)
        proc = dm.dtcp("-r", str(src), str(tmp_path / "dst"))
        assert proc.args[-1] == "--blocking"
        assert waitfor(proc, JOB_S) == 0
        assert (tmp_path / "dst" / "f.txt").read_text() == "data\n"
        proc = dm.dtls("-1", str(tmp_path / "dst"))
        assert proc.args[-1] == "--blocking" and waitfor(proc, JOB_S) == 0
        assert proc.communicate()[0] == b"f.txt\n"
        proc = Datamover(site_tools_dir, False).dtcp(str(src / "f.txt"), str(tmp_path / "batch.txt"))
        assert "--blocking" not in proc.args
        assert waitfor(proc, JOB_S) == 0, "the handle follows the sbatch job"
        assert (tmp_path / "batch.txt").read_text() == "data\n"

    def test_modern_datamover_puts_blocking_first(self, slurm_cluster: Any, site_tools_dir: Path,
                                                  tmp_path: Path) -> None:
        """There ``--blocking`` reaches cp: the tool submits a job whose cp fails on it."""
        (tmp_path / "f.txt").write_text("data\n")
        modern = taurus_tools.Datamover(tools_dir=site_tools_dir)
        handle = modern.dtcp(str(tmp_path / "f.txt"), str(tmp_path / "copy.txt"))
        assert handle.args[1] == "--blocking"
        taurus_tools.waitfor(handle, timeout=JOB_S, progress=False)
        match = re.search(r"Submitted batch job (\d+)", handle.stdout_text + handle.stderr_text)
        assert match, (handle.stdout_text, handle.stderr_text)
        job = int(match.group(1))
        wait_for(slurm_cluster.squeue_ids, lambda ids: job not in ids, timeout=JOB_S, what=f"job {job} to end")
        log = wait_for(lambda: tmp_path / "dt-logs" / f"dt-{job}.out", lambda p: p.exists(), timeout=30)
        assert "unrecognized option '--blocking'" in log.read_text()
        assert not (tmp_path / "copy.txt").exists()


# ============================================================================ migration guide
def test_first_use_logs_the_migration_once(tmp_path: Path) -> None:
    """Logged (not warned) once per process, naming the modern calls."""
    code = (
        "import logging, sys, warnings\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(name)s|%(message)s')\n"
        "warnings.simplefilter('error')\n"
        "from taurus_tools.compat import Datamover, Workspace\n"
        f"Datamover({str(tmp_path)!r}); Workspace({str(tmp_path)!r}); Datamover({str(tmp_path)!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("taurus_tools.compat|taurus_tools.compat runs code written for taurus_datamover") == 1
    assert "taurus_tools.Datamover(tools_dir=P)" in run.stdout and "stage_out(path)" in run.stdout
