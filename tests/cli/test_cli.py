"""The ``taurus-tools`` command line: where global options go, signals, error messages.

Most tests run the real command in a subprocess (``python -m taurus_tools``) on the local
backend; parsing is also checked in-process through ``taurus_tools.cli.main.parse_args``.
States that another process changes (a destination filling, processes ending) are
awaited with a deadline, never sampled once.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import psutil
import pytest


from helpers import prepend_path, wait_for, write_stub
from taurus_tools import Datamover
from taurus_tools.cli import main as _cli
from taurus_tools.process import handle as _process
from taurus_tools.cli.main import (
    _TOP_FLAGS,
    _VALUED,
    CANCEL_SIGNALS,
    _global_parent,
    build_parser,
    main,
    parse_args,
    split_pass_through,
)
from taurus_tools.errors import CommandNotFoundError, TaurusToolsError, UnknownCommandError

pytestmark = pytest.mark.timeout(240)

#: Every global option, with a value that differs from its default, and where it lands.
GLOBALS: List[Tuple[List[str], str, object]] = [
    (["--backend", "local"], "backend", "local"),
    (["--tools-dir", "/opt/dt"], "tools_dir", "/opt/dt"),
    (["--partition", "debug"], "partition", "debug"),
    (["--account", "p_x"], "account", "p_x"),
    (["--time", "90"], "time", "90"),
    (["--no-blocking"], "blocking", False),
    (["--timeout", "2.5"], "timeout", 2.5),
    (["-q"], "quiet", True),
    (["--quiet"], "quiet", True),
    (["-v"], "verbose", 1),
    (["-vv"], "verbose", 2),
    (["--verbose"], "verbose", 1),
]
DEFAULTS = {
    "backend": "auto",
    "tools_dir": None,
    "partition": "datamover",
    "account": None,
    "time": None,
    "blocking": True,
    "timeout": None,
    "quiet": False,
    "verbose": 0,
}
#: Each subcommand as (words before its arguments, its arguments).
SUBCOMMANDS: List[Tuple[List[str], List[str]]] = [
    (["copy"], ["SRC", "DST"]),
    (["info"], []),
    (["ws", "list"], []),
    (["ws", "allocate"], ["name", "3"]),
    (["ws", "extend"], ["name", "3"]),
    (["ws", "release"], ["name"]),
    (["ws", "find"], ["name"]),
    (["report"], ["result_all.json"]),
]


# ============================================================================ helpers
def await_state(
    observe: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.02,
    accept: Callable[[object], bool] = bool,
) -> object:
    """Observe until ``accept(value)`` or ``timeout`` s passed (helpers.wait_for, positionally)."""
    return wait_for(observe, accept, timeout=timeout, interval=interval, what=what)


def local_env(**extra: str) -> Dict[str, str]:
    """The environment without anything that steers to Slurm or to site tools."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAURUS_TOOLS_", "SLURM_"))}
    env.update(extra)
    return env


def cli_argv(*args: str) -> List[str]:
    return [sys.executable, "-m", "taurus_tools", *args]


def cli(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_argv(*args), env=env or local_env(), capture_output=True, text=True, timeout=timeout
    )


def error_lines(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if line.startswith("taurus-tools: error:")]


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], proc.stderr
    return lines[0]


def running(procs: Dict[int, psutil.Process]) -> List[int]:
    """The recorded processes that still run (not gone, not a zombie, not a reused pid)."""
    out = []
    for pid, proc in procs.items():
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def record_descendants(pid: int, procs: Dict[int, psutil.Process]) -> Dict[int, psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return procs
    for child in children:
        procs.setdefault(child.pid, child)
    return procs


def commands(procs: Dict[int, psutil.Process]) -> List[str]:
    """The command lines of the recorded processes that still run."""
    out = []
    for proc in procs.values():
        try:
            out.append(" ".join(proc.cmdline()) or proc.name())
        except psutil.Error:
            pass
    return out


def programs(procs: Dict[int, psutil.Process]) -> List[str]:
    """The program names (argv[0] without its folder) of the recorded processes that still run."""
    return [os.path.basename(c.split(" ", 1)[0]) for c in commands(procs)]


def kill_recorded(procs: Dict[int, psutil.Process]) -> None:
    for pid in running(procs):
        try:
            procs[pid].kill()
        except psutil.Error:
            pass


def sizes(root: Path) -> Dict[str, int]:
    """Relative path -> size of every file below ``root`` (hidden and temporary ones too)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            try:
                out[os.path.relpath(full, root)] = os.lstat(full).st_size
            except FileNotFoundError:
                pass
    return out


def tree(root: Path) -> Dict[str, Tuple[str, int, int, bytes]]:
    """Relative path -> (kind, permission bits, size, link target) of everything below ``root``."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                item = ("link", 0, 0, os.fsencode(os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                item = ("dir", stat.S_IMODE(st.st_mode), 0, b"")
            else:
                item = ("file", stat.S_IMODE(st.st_mode), st.st_size, b"")
            out[os.path.relpath(full, root)] = item
    return out


def same_content(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk = fa.read(1 << 20)
            if chunk != fb.read(1 << 20):
                return False
            if not chunk:
                return True


def assert_same_tree(src: Path, dst: Path) -> None:
    """Same entries, kinds, modes, sizes and link targets, and files byte for byte."""
    a, b = tree(src), tree(dst)
    assert sorted(a) == sorted(b)
    different = [path for path in a if a[path] != b[path]]
    different += [
        path for path, item in a.items() if item[0] == "file" and not same_content(str(src / path), str(dst / path))
    ]
    assert different == [], f"differ: {different[:5]}"


def default_signals() -> None:
    """In a driver's child before it runs: the default action for SIGHUP, SIGINT and SIGTERM,
    whatever pytest was started with (``nohup`` ignores SIGHUP, a background job SIGINT)."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


class Driver:
    """``taurus-tools ...`` started in the background, its output in files."""

    def __init__(self, argv: Sequence[str], folder: Path, env: Optional[Dict[str, str]] = None) -> None:
        self.out, self.err = folder / "driver.out", folder / "driver.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                list(argv), stdout=out, stderr=err, env=env or local_env(), preexec_fn=default_signals
            )
        self.seen: Dict[int, psutil.Process] = {}

    def record(self) -> Dict[int, psutil.Process]:
        return record_descendants(self.proc.pid, self.seen)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self) -> None:
        """Clean-up after a failed test: nothing it started may outlive it."""
        if self.proc.poll() is None:
            self.record()
            self.proc.kill()
            self.proc.wait(30)
        kill_recorded(self.seen)

    def signal_and_wait(self, signum: int, timeout: float = 60) -> int:
        """Send ``signum``; return the exit code once the driver and all it started are gone."""
        self.record()
        assert self.seen, "the driver had started no process to cancel"
        self.proc.send_signal(signum)
        rc = self.proc.wait(timeout)
        await_state(
            lambda: running(self.seen), 30, "every process the driver started to end", accept=lambda pids: not pids
        )
        return rc


def assert_nothing_grows(dst: Path) -> None:
    """With no writer left, sizes stay as they are (compared over a second)."""
    before = sizes(dst)
    time.sleep(1.0)
    assert sizes(dst) == before


# ============================================================================ 1. option positions
class TestGlobalOptionsAnywhere:
    @pytest.mark.parametrize("words, args", SUBCOMMANDS, ids=lambda v: " ".join(v) or "-")
    @pytest.mark.parametrize("option, dest, value", GLOBALS, ids=lambda v: str(v))
    def test_before_after_and_between(self, words, args, option, dest, value):
        places = {
            "before": [*option, *words, *args],
            "after": [*words, *args, *option],
            "after the verb": [*words, *option, *args],
        }
        if len(words) == 2:  # ws OPTION list
            places["between"] = [words[0], *option, words[1], *args]
        for place, argv in places.items():
            opts = parse_args(argv)
            assert getattr(opts, dest) == value, (place, argv)
            for other, default in DEFAULTS.items():
                if other != dest:
                    assert getattr(opts, other) == default, (place, argv, other)
            assert not [name for name in vars(opts) if name.startswith("verbose_")]

    @pytest.mark.parametrize("words, args", SUBCOMMANDS, ids=lambda v: " ".join(v) or "-")
    def test_defaults_when_not_given(self, words, args):
        opts = parse_args([*words, *args])
        assert {name: getattr(opts, name) for name in DEFAULTS} == DEFAULTS

    @pytest.mark.parametrize("words, args", SUBCOMMANDS, ids=lambda v: " ".join(v) or "-")
    def test_both_orders_the_later_wins(self, words, args):
        opts = parse_args(["--backend", "slurm", "--timeout", "9", *words, *args, "--backend", "local"])
        assert opts.backend == "local" and opts.timeout == 9.0  # before kept, after wins
        opts = parse_args(["--backend", "local", *words, *args, "--backend", "local"])
        assert opts.backend == "local"
        opts = parse_args([*words, *args, "--partition", "a", "--partition", "b"])
        assert opts.partition == "b"

    def test_verbose_counts_wherever_given(self):
        assert parse_args(["-v", "copy", "S", "D", "-v"]).verbose == 2
        assert parse_args(["-v", "ws", "-v", "list", "-vv"]).verbose == 4
        assert parse_args(["info", "-vv"]).verbose == 2

    def test_every_valued_global_option_is_skipped_before_a_pass_through(self):
        """split_pass_through must know every global option that takes a value."""
        parent = _global_parent()
        valued = {s for a in parent._actions if a.nargs != 0 for s in a.option_strings}
        assert valued == set(_VALUED)
        for option in _VALUED:
            assert split_pass_through([option, "dtls", "dtcp", "x"]) == ([option, "dtls"], "dtcp", ["x"])

    def test_copy_with_options_after_the_verb(self, tmp_path):
        src = tmp_path / "src"
        (src / "sub").mkdir(parents=True)
        (src / "sub" / "a.txt").write_bytes(b"alpha")
        (src / "b.bin").write_bytes(bytes(range(256)) * 100)
        dst = tmp_path / "dst"
        proc = cli("copy", str(src), str(dst), "--workers", "2", "--backend", "local", "-q",
                   "--work-dir", str(tmp_path / "work"), "-v")
        assert proc.returncode == 0, proc.stderr
        assert "ok:" in proc.stdout
        assert "datamover backend: local" in proc.stderr  # -v after the verb took effect
        assert_same_tree(src, dst)

    def test_ws_and_info_with_options_after_the_verb(self, tmp_path):
        env = local_env(TAURUS_TOOLS_WS_ROOT=str(tmp_path / "wsroot"))
        proc = cli("ws", "--ws-backend", "local", "allocate", "run1", "3", "--backend", "local", "-q", env=env)
        assert proc.returncode == 0, proc.stderr
        proc = cli("ws", "--ws-backend", "local", "list", "--backend", "local", "-v", "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert [item["id"] for item in json.loads(proc.stdout)] == ["run1"]
        assert "workspace backend: local" in proc.stderr  # -v after `ws list`
        proc = cli("info", "--json", "--backend", "local", env=local_env(TAURUS_TOOLS_BACKEND="auto"))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["backend"] == "local"

    def test_options_after_a_pass_through_command_go_to_the_tool(self, tmp_path):
        """``dtls --backend``: ls gets --backend, fails with its own message and exit code."""
        ls = subprocess.run(["ls", "--backend"], capture_output=True, text=True)
        assert ls.returncode != 0
        proc = cli("--backend", "local", "dtls", "--backend")
        assert proc.returncode == ls.returncode, proc.stderr
        assert "ls:" in proc.stderr and "--backend" in proc.stderr
        assert "usage: taurus-tools" not in proc.stderr
        # With no --backend before it, too (the environment picks the local backend).
        proc = cli("-q", "dtls", "--backend", "local", str(tmp_path), env=local_env(TAURUS_TOOLS_BACKEND="local"))
        assert proc.returncode == ls.returncode and "ls:" in proc.stderr, proc.stderr

    @pytest.mark.parametrize("argv", [["copy", "--help"], ["ws", "list", "--help"], ["ws", "--help"],
                                      ["info", "--help"], ["ws", "allocate", "--help"]])
    def test_help_of_each_subcommand_lists_the_global_options(self, argv):
        proc = cli(*argv)
        assert proc.returncode == 0, proc.stderr
        assert "global options" in proc.stdout
        for option in ("--backend", "--tools-dir", "--partition", "--account", "--time", "--no-blocking",
                       "--timeout", "--quiet", "--verbose"):
            assert option in proc.stdout, (argv, option)

    def test_top_level_help_says_where_global_options_go(self):
        proc = cli("--help")
        assert proc.returncode == 0
        text = " ".join(proc.stdout.split())
        assert "Global options go anywhere for copy, ws, info and report" in text
        assert "they must come before the command's name, since everything after it goes to the tool" in text


class TestProgressIntoALog:
    """stderr is a pipe here (a batch job's log): a few whole lines, never a bar's redraws."""

    def test_a_wait_of_over_a_second_writes_its_end_as_one_line(self, tmp_path):
        if shutil.which("rsync") is None:
            pytest.skip("rsync is not installed (scripts/test installs it)")
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.mkdir()
        (src / "data.bin").write_bytes(os.urandom(3 << 20))
        dst.mkdir()
        # 3 MiB at 2 MB/s: about 1.5 s, past the second before progress shows.
        proc = cli("--backend", "local", "dtrsync", "-a", "--bwlimit=2000", f"{src}/", f"{dst}/")
        assert proc.returncode == 0, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.startswith("Waiting for")]
        assert len(lines) == 1 and "] 100 %, 1 of 1 cmd" in lines[0], proc.stderr
        assert "\r" not in proc.stderr
        quiet = cli("--backend", "local", "-q", "dtrsync", "-a", "--bwlimit=2000", f"{src}/", f"{tmp_path}/q/")
        assert quiet.returncode == 0 and "Waiting for" not in quiet.stderr, quiet.stderr

    def test_a_short_wait_writes_nothing(self, tmp_path):
        proc = cli("--backend", "local", "dtls", str(tmp_path))
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from all_parsers(sub)


def _abbreviations() -> List[Tuple[str, str]]:
    """Every shortening (``--b`` ... ``--backen``) of every long global option, with the option."""
    longs = [name for name in (*_VALUED, *_TOP_FLAGS) if name.startswith("--") and name not in ("--help", "--version")]
    return [(name[:end], name) for name in longs for end in range(3, len(name)) if name[:end] not in longs]


class TestNoAbbreviations:
    """``--back local dtcp ...`` stopped with "invalid choice: 'dtcp'": split_pass_through did not
    know that ``--back`` takes a value, saw ``local`` where the command goes and left the line to
    argparse, which took ``--back`` for ``--backend`` and found no subcommand ``dtcp``.  Now no
    option is ever abbreviated, and an unknown one before the command is named in a usage error."""

    def test_no_parser_accepts_abbreviations(self):
        parsers = list(all_parsers(build_parser()))
        assert len(parsers) == 11  # top, info, copy, checkpoint, report, ws and its five
        parsers += [_global_parent(), _global_parent("copy")]
        assert [p.prog for p in parsers if p.allow_abbrev] == []

    @pytest.mark.parametrize("short, option", _abbreviations(), ids=lambda v: v)
    def test_abbreviated_global_option_before_a_pass_through_is_a_usage_error(
        self, short, option, tmp_path, monkeypatch, capsys
    ):
        stubs = tmp_path / "bin"
        marker = tmp_path / "ls-ran"
        write_stub(stubs, "ls", f"touch '{marker}'\n")
        prepend_path(monkeypatch, stubs)
        monkeypatch.setenv("TAURUS_TOOLS_BACKEND", "local")
        value = ["local"] if option in _VALUED else []
        for argv in ([short, *value, "dtls", str(tmp_path)], [f"{short}=local", "dtls", str(tmp_path)]):
            if option not in _VALUED and "=" in argv[0]:
                continue
            with pytest.raises(SystemExit) as stop:
                main(argv)
            assert stop.value.code == 2
            err = capsys.readouterr().err
            assert f"unrecognized option {argv[0]!r} before the command" in err, err
            assert option in err  # "did you mean --backend?"
            assert "invalid choice" not in err
        assert not marker.exists(), "the command ran"

    @pytest.mark.parametrize("words, args", SUBCOMMANDS, ids=lambda v: " ".join(v) or "-")
    @pytest.mark.parametrize("short", ["--back", "--verb", "--no-block"])
    def test_abbreviated_options_are_errors_anywhere(self, words, args, short, capsys):
        value = ["local"] if short == "--back" else []
        for argv in ([short, *value, *words, *args], [*words, *args, short, *value]):
            with pytest.raises(SystemExit) as stop:
                parse_args(argv) if argv[0] != short else main(argv)
            assert stop.value.code == 2, argv
            assert short in capsys.readouterr().err

    @pytest.mark.parametrize(
        "argv, message",
        [
            (["copy", "S", "D", "--work", "W"], "unrecognized arguments: --work W"),
            (["ws", "list", "--js"], "unrecognized arguments: --js"),
            (["ws", "--ws-b", "local", "list"], "invalid choice: 'local'"),  # argparse's words, still exit 2
        ],
    )
    def test_abbreviated_subcommand_options_are_errors(self, argv, message, capsys):
        with pytest.raises(SystemExit) as stop:
            parse_args(argv)
        assert stop.value.code == 2
        assert message in capsys.readouterr().err

    def test_the_real_command(self, tmp_path):
        (tmp_path / "listed.txt").write_text("")
        proc = cli("--back", "local", "dtls", str(tmp_path))
        assert proc.returncode == 2, proc.stderr
        assert "unrecognized option '--back' before the command (did you mean --backend?)" in proc.stderr
        assert "invalid choice" not in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""
        for spelled in (["--backend", "local"], ["--backend=local"]):
            proc = cli(*spelled, "-q", "dtls", str(tmp_path))
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout == "listed.txt\n"

    def test_full_names_and_groups_of_short_flags_are_known(self):
        assert _cli.unknown_global_option(["-vq", "--backend=local", "--timeout", "5", "-vv", "dtls", "--x"]) is None
        assert _cli.unknown_global_option(["--account", "--weird-value", "dtls"]) is None
        assert _cli.unknown_global_option(["-vx", "dtls"]) == "-vx"
        assert _cli.unknown_global_option(["dtls", "--back"]) is None  # the tool's


# ============================================================================ 2. signals
@pytest.fixture(scope="module")
def big_tree(tmp_path_factory) -> Path:
    """~1 GiB in 32 files of 32 MiB (and a few small ones): copying it takes a second or more."""
    root = tmp_path_factory.mktemp("big") / "src"
    block = os.urandom(1 << 20)
    for i in range(32):
        folder = root / f"d{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"f{i:02d}.bin", "wb") as fh:
            fh.write(b"%08d" % i)
            for _ in range(32):
                fh.write(block)
    for i in range(20):
        (root / "small").mkdir(exist_ok=True)
        (root / "small" / f"s{i}.txt").write_text(f"small {i}\n")
    return root


def _write_fails(fd: int) -> Optional[int]:
    """The errno of writing a byte to ``fd``, None if it works."""
    try:
        os.write(fd, b"x")
    except OSError as exc:
        return exc.errno
    return None


def _has_data(dst: Path) -> bool:
    return any(size > 0 for size in sizes(dst).values())


class TestSignalsCancel:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
    def test_copy_stops_its_workers_and_the_rerun_resumes(self, tmp_path, big_tree, signum):
        dst, work = tmp_path / "dst", tmp_path / "work"
        argv = cli_argv("copy", str(big_tree), str(dst), "--workers", "2", "--backend", "local", "-q",
                        "--work-dir", str(work))
        driver = Driver(argv, tmp_path)
        try:

            def receiving() -> bool:
                driver.record()
                return driver.proc.poll() is not None or _has_data(dst)

            await_state(receiving, 60, "the destination to receive data", interval=0.002)
            assert driver.proc.poll() is None, "the copy finished before the signal; make the tree bigger"
            assert any("transfer/worker.py" in c for c in commands(driver.record())), "no copy worker was seen"
            rc = driver.signal_and_wait(signum)
        finally:
            driver.stop()
        err = driver.stderr()
        assert rc == 128 + signum, err
        assert "Traceback" not in err, err
        assert f"copy stopped by {signal.Signals(signum).name}" in err
        assert "Run the same command again to resume it" in err and str(work) in err
        assert_nothing_grows(dst)
        assert (work / "state.json").exists()

        again = subprocess.run(argv, capture_output=True, text=True, env=local_env(), timeout=180)
        assert again.returncode == 0, again.stderr
        assert "ok:" in again.stdout
        assert_same_tree(big_tree, dst)

    def test_sigterm_cancels_dtrsync_and_its_process_tree(self, tmp_path):
        if shutil.which("rsync") is None:
            pytest.skip("rsync is not installed (scripts/test installs it)")
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.mkdir()
        with open(src / "big.bin", "wb") as fh:
            fh.write(os.urandom(1 << 20) * 64)
        dst.mkdir()
        # 64 MiB at 2 MB/s: half a minute, unless it is cancelled.
        argv = cli_argv("--backend", "local", "-q", "dtrsync", "-a", "--bwlimit=2000", f"{src}/", f"{dst}/")
        driver = Driver(argv, tmp_path)
        try:
            await_state(lambda: driver.proc.poll() is not None or _has_data(dst), 60, "rsync to write")
            assert driver.proc.poll() is None, driver.stderr()
            assert "rsync" in programs(driver.record()), driver.stderr()
            rc = driver.signal_and_wait(signal.SIGTERM)
        finally:
            driver.stop()
        err = driver.stderr()
        assert rc == 143, err
        assert "dtrsync cancelled by SIGTERM" in err and "Traceback" not in err
        assert_nothing_grows(dst)
        assert sizes(dst).get("big.bin") != 64 << 20

    def test_sighup_cancels_a_pass_through(self, tmp_path):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)  # cp blocks opening it: a command that runs until cancelled
        driver = Driver(cli_argv("--backend", "local", "-q", "dtcp", str(fifo), str(tmp_path / "x")), tmp_path)
        try:
            await_state(lambda: "cp" in programs(driver.record()), 30, "cp to start")
            rc = driver.signal_and_wait(signal.SIGHUP)
        finally:
            driver.stop()
        assert rc == 129, driver.stderr()
        assert "dtcp cancelled by SIGHUP" in driver.stderr()

    def test_an_ignored_sighup_stays_ignored(self, tmp_path):
        """As under ``nohup``: SIGHUP ignored at the start does not stop the command."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        nohup = [sys.executable, "-c",
                 "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
                 "os.execv(sys.executable, [sys.executable, '-m', 'taurus_tools', *sys.argv[1:]])",
                 "--backend", "local", "-q", "dtcp", str(fifo), str(tmp_path / "x")]
        driver = Driver(nohup, tmp_path)
        try:
            await_state(lambda: "cp" in programs(driver.record()), 30, "cp to start")
            driver.proc.send_signal(signal.SIGHUP)
            with pytest.raises(subprocess.TimeoutExpired):
                driver.proc.wait(1.5)  # still running a while after the SIGHUP
            assert running(driver.seen)
            rc = driver.signal_and_wait(signal.SIGTERM)
        finally:
            driver.stop()
        assert rc == 143, driver.stderr()

    def test_handlers_are_restored_after_main(self, monkeypatch, capsys):
        monkeypatch.delenv("TAURUS_TOOLS_BACKEND", raising=False)
        before = {sig: signal.getsignal(sig) for sig in CANCEL_SIGNALS}
        assert main(["info", "--json", "--backend", "local"]) == 0
        assert {sig: signal.getsignal(sig) for sig in CANCEL_SIGNALS} == before
        capsys.readouterr()

    def test_main_in_another_thread_leaves_signals_alone(self, capsys):
        """Python sets signal handlers only in the main thread: elsewhere main() just runs."""
        result: List[object] = []
        thread = threading.Thread(target=lambda: result.append(main(["info", "--json", "--backend", "local"])))
        thread.start()
        thread.join(60)
        assert result == [0]
        capsys.readouterr()

    # -- a signal at an awkward moment: sent to the main thread itself, exactly there
    def test_a_signal_while_the_handlers_are_installed_is_not_lost(self, monkeypatch, capsys):
        """SIGTERM right after its handler is in place, before main() runs anything: exit 143."""
        before = {sig: signal.getsignal(sig) for sig in CANCEL_SIGNALS}
        real_signal = signal.signal
        sent: List[int] = []

        def install(sig, handler):
            previous = real_signal(sig, handler)
            if sig == signal.SIGTERM and not sent and isinstance(getattr(handler, "__self__", None),
                                                                 _cli._CancelOnSignals):
                sent.append(sig)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
            return previous

        ran: List[object] = []
        monkeypatch.setattr(signal, "signal", install)
        monkeypatch.setattr(_cli, "_main", lambda argv: ran.append(argv) or 0)
        assert main(["info"]) == 143
        monkeypatch.undo()
        assert sent == [signal.SIGTERM] and ran == []
        assert {sig: signal.getsignal(sig) for sig in CANCEL_SIGNALS} == before
        assert "taurus-tools: stopped by SIGTERM" in capsys.readouterr().err

    @pytest.mark.parametrize("where", ["process started", "handle returned"])
    def test_a_signal_between_start_and_registration_still_cancels(self, where, tmp_path, monkeypatch, capsys):
        """SIGTERM after the child exists but before run_command holds its handle: it is cancelled."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)  # cp blocks opening it: runs until cancelled
        monkeypatch.delenv("TAURUS_TOOLS_BACKEND", raising=False)
        children: Dict[int, psutil.Process] = {}

        def signal_now(pid: int) -> None:
            children[pid] = psutil.Process(pid)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

        if where == "process started":
            real_spawn = _process.Handle._spawn

            def spawn(self, env, args):
                popen = real_spawn(self, env, args)
                signal_now(popen.pid)  # inside Handle(): no handle anywhere yet
                return popen

            monkeypatch.setattr(_process.Handle, "_spawn", spawn)
        else:
            real_call = Datamover.call

            def call(self, *args, **kwargs):
                handle = real_call(self, *args, **kwargs)
                signal_now(handle.pid)  # returned, not yet in run_command's hands
                return handle

            monkeypatch.setattr(Datamover, "call", call)
        try:
            assert main(["--backend", "local", "-q", "dtcp", str(fifo), str(tmp_path / "x")]) == 143
            assert children, "no process was started"
            await_state(lambda: running(children), 30, "the started cp to end", accept=lambda pids: not pids)
        finally:
            kill_recorded(children)
        assert "dtcp cancelled by SIGTERM" in capsys.readouterr().err

    @pytest.mark.parametrize("command", ["dtcp", "copy"])
    def test_sighup_with_the_terminal_gone_still_exits_129(self, command, tmp_path, big_tree):
        """After a hang-up every write to the terminal fails (EIO): the messages are dropped, the
        exit status stays 128 + SIGHUP (not 1 from an OSError, nor 120 from Python's last flush)."""
        if command == "dtcp":
            fifo = tmp_path / "fifo"
            os.mkfifo(fifo)
            argv = cli_argv("--backend", "local", "-q", "dtcp", str(fifo), str(tmp_path / "x"))
        else:
            argv = cli_argv("copy", str(big_tree), str(tmp_path / "dst"), "--workers", "2", "--backend", "local",
                            "-q", "--work-dir", str(tmp_path / "work"))
        master, slave = os.openpty()  # our copy of the terminal's end stays open, to probe it
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=local_env(), preexec_fn=default_signals
            )
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        seen: Dict[int, psutil.Process] = {}
        try:
            if command == "dtcp":
                await_state(lambda: "cp" in programs(record_descendants(proc.pid, seen)), 30, "cp to start")
            else:
                await_state(lambda: record_descendants(proc.pid, seen) is not None and _has_data(tmp_path / "dst"),
                            60, "the copy to write", interval=0.005)
            assert proc.poll() is None, os.read(master, 65536)
            os.close(master)  # the terminal is gone: writing to it fails now
            master = -1
            assert _write_fails(slave) == errno.EIO
            record_descendants(proc.pid, seen)
            proc.send_signal(signal.SIGHUP)
            rc = proc.wait(60)
            await_state(lambda: running(seen), 30, "every process it started to end", accept=lambda pids: not pids)
        finally:
            if master >= 0:
                os.close(master)
            os.close(slave)
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            kill_recorded(seen)
        assert rc == 129


# ============================================================================ 3. messages, not tracebacks
class TestUsageErrors:
    @pytest.mark.parametrize(
        "argv, message",
        [
            (["--timeout", "-1", "dtls", "/"], "argument --timeout: expected a number of seconds > 0, got '-1'"),
            (["--timeout", "0", "dtls", "/"], "expected a number of seconds > 0, got '0'"),
            (["--timeout", "nan", "dtls", "/"], "expected a number of seconds > 0"),
            (["--timeout", "soon", "dtls", "/"], "expected a number of seconds > 0, got 'soon'"),
            (["copy", "S", "D", "--timeout", "-5"], "expected a number of seconds > 0"),
            (["copy", "S", "D", "--workers", "0"], "argument --workers: expected a whole number >= 1, got '0'"),
            (["copy", "S", "D", "--workers", "1.5"], "expected a whole number >= 1, got '1.5'"),
            (["copy", "S", "D", "--shards", "0"], "argument --shards: expected a whole number >= 1, got '0'"),
            (["copy", "S", "D", "--retries", "-1"], "argument --retries: expected a whole number >= 0, got '-1'"),
        ],
    )
    def test_numbers_out_of_range_are_usage_errors(self, argv, message, tmp_path, monkeypatch, capsys):
        stubs = tmp_path / "bin"
        marker = tmp_path / "ls-ran"
        write_stub(stubs, "ls", f"touch '{marker}'\n")
        prepend_path(monkeypatch, stubs)
        monkeypatch.setenv("TAURUS_TOOLS_BACKEND", "local")
        argv = [str(tmp_path / a) if a in ("S", "D") else a for a in argv]
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "usage: taurus-tools" in err
        assert not marker.exists(), "the command ran before the value was rejected"
        assert not (tmp_path / "D").exists()

    def test_the_real_command_rejects_a_negative_timeout_before_running(self):
        proc = cli("--timeout", "-1", "dtls", "/")
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        assert "--timeout: expected a number of seconds > 0" in proc.stderr

    def test_values_in_range_are_accepted(self):
        assert parse_args(["--timeout", "0.5"]).timeout == 0.5
        opts = parse_args(["copy", "S", "D", "--retries", "0", "--workers", "1", "--shards", "3"])
        assert (opts.retries, opts.workers, opts.shards) == (0, 1, 3)


class TestOSErrorsAreMessages:
    @pytest.mark.parametrize(
        "error",
        [
            PermissionError(13, "Permission denied", "/projects/x"),
            FileNotFoundError(2, "No such file or directory", "/gone"),
            NotADirectoryError(20, "Not a directory", "/a/file/b"),
            IsADirectoryError(21, "Is a directory", b"/bytes\xff/name"),
            OSError(18, "Invalid cross-device link", "/a", "/b"),
            OSError("a message\nover two lines"),
        ],
        ids=lambda e: type(e).__name__,
    )
    def test_escaping_os_errors_are_one_line(self, error, monkeypatch, capsys):
        def fail(opts):
            raise error

        monkeypatch.setattr("taurus_tools.cli.main.info", fail)
        assert main(["info", "--backend", "local"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("taurus-tools: error: "), err
        if error.strerror:
            assert error.strerror in err and "[Errno" not in err
        if error.filename2:
            assert "'/a' -> '/b'" in err

    def test_errors_of_the_library_keep_their_exit_codes(self, monkeypatch, capsys):
        """CommandNotFoundError is a FileNotFoundError too, but stays a usage error (2)."""
        assert main(["--backend", "local", "dtinfo"]) == 2
        assert "available commands" in capsys.readouterr().err

    def test_destination_whose_parent_cannot_be_written(self, unprivileged):
        base = unprivileged.base
        src = base / "src"
        (src / "sub").mkdir(parents=True)
        (src / "sub" / "f.txt").write_text("payload")
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        dst = locked / "new" / "dst"
        proc = unprivileged.run(cli_argv("copy", str(src), str(dst), "--backend", "local", "-q",
                                         "--work-dir", str(unprivileged.work)))
        assert proc.returncode == 1, proc.stderr
        assert_one_line_error(proc, "Permission denied", str(locked))
        assert not (locked / "new").exists()

    def test_work_dir_that_is_a_file(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        (src / "f").write_text("x")
        (tmp_path / "not-a-folder").write_text("")
        proc = cli("copy", str(src), str(tmp_path / "dst"), "--backend", "local", "-q",
                   "--work-dir", str(tmp_path / "not-a-folder"))
        # ParallelCopy checks it before any work: a usage error.
        assert proc.returncode == 2, proc.stderr
        assert_one_line_error(proc, "not-a-folder")
        assert not (tmp_path / "dst").exists()


class Unprivileged:
    """Runs a command without root's power over file modes, in ``base`` (readable by it)."""

    def __init__(self, base: Path, how: str, work: Path) -> None:
        self.base, self.how, self.work = base, how, work

    def run(self, argv: List[str]) -> subprocess.CompletedProcess:
        env = local_env(HOME=str(self.work))
        kwargs: dict = dict(env=env, cwd=str(self.base), capture_output=True, text=True, timeout=120)
        if self.how == "nobody":
            kwargs.update(user=NOBODY, group=NOBODY, extra_groups=[])
        elif self.how == "setpriv":
            argv = DROP_DAC + argv
        return subprocess.run(argv, **kwargs)


NOBODY = 65534
#: Root without the capabilities that let it ignore file modes (stays uid 0).
DROP_DAC = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
    "--",
]


def _nobody_can_run_us(base: Path) -> bool:
    probe = [sys.executable, "-c", "import taurus_tools, psutil, tqdm"]
    try:
        proc = subprocess.run(probe, user=NOBODY, group=NOBODY, extra_groups=[], cwd=str(base),
                              env=local_env(), capture_output=True, timeout=60)
    except OSError:  # e.g. the interpreter lives under /root (mode 700)
        return False
    return proc.returncode == 0


@pytest.fixture
def unprivileged() -> Iterator[Unprivileged]:
    """A folder outside pytest's (mode 700) tmp folders, and a way to run without root's rights.

    Not root: the command runs as is (file modes apply).  Root (CI): as ``nobody`` when
    it can run this interpreter and package, else as root without the DAC capabilities;
    when neither works the test fails (it must not be skipped in CI).
    """
    base = Path(tempfile.mkdtemp(prefix="taurus-tools-cli-"))
    try:
        base.chmod(0o755)
        work = base / "work"
        work.mkdir()
        how = "self"
        if os.geteuid() == 0:
            if _nobody_can_run_us(base):
                how = "nobody"
                os.chown(work, NOBODY, NOBODY)
            elif shutil.which("setpriv"):
                how = "setpriv"
            else:
                pytest.fail("running as root, but neither nobody can run this Python nor is setpriv there "
                            "(apt-get install util-linux) to drop root's file access")
        helper = Unprivileged(base, how, work)
        if how == "setpriv":
            denied = base / "denied"
            denied.write_text("")
            denied.chmod(0)
            probe = helper.run([sys.executable, "-c", f"open({str(denied)!r}).read()"])
            if probe.returncode == 0:
                pytest.fail("setpriv did not take away root's file access; cannot test permission denied")
        yield helper
    finally:
        for dirpath, dirs, _files in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(dirpath, name), 0o755)
        shutil.rmtree(base, ignore_errors=True)


# ============================================================================ 4. dm.dtfoo
class TestUnknownDtAttribute:
    def test_lists_the_commands_and_is_an_attribute_error(self):
        dm = Datamover("local")
        with pytest.raises(AttributeError) as info:
            dm.dtfoo()
        error = info.value
        assert isinstance(error, UnknownCommandError) and isinstance(error, TaurusToolsError)
        assert "'dtfoo' is not available" in str(error)
        assert "available commands: dtcp, dtmv, dtrm, dtls, dtrsync, dttar, dtwget" in str(error)
        assert error.command == "dtfoo" and error.available == dm.commands()
        # The same words as dm.call("dtfoo"):
        with pytest.raises(CommandNotFoundError) as called:
            dm.call("dtfoo")
        assert str(called.value) == str(error)

    def test_hasattr_and_getattr_keep_working(self):
        dm = Datamover("local")
        assert not hasattr(dm, "dtfoo")
        assert getattr(dm, "dtfoo", "fallback") == "fallback"
        assert hasattr(dm, "dtcp") and hasattr(dm, "dtinfo")  # dtinfo exists, the backend lacks it

    def test_other_unknown_attributes_are_plain(self):
        dm = Datamover("local")
        with pytest.raises(AttributeError) as info:
            dm.backnd
        assert type(info.value) is AttributeError
        assert "'Datamover' object has no attribute 'backnd'" in str(info.value)
        assert "available commands" not in str(info.value)

    def test_pickles(self):
        import pickle

        error = UnknownCommandError("dtx", ("dtcp",), "not a datamover command")
        again = pickle.loads(pickle.dumps(error))
        assert (again.command, again.available, str(again)) == ("dtx", ("dtcp",), str(error))
