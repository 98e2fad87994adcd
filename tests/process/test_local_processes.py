"""Real processes on the local backend: output draining, timeouts, cancellation, names.

No Slurm needed.  Stub executables are small ``/bin/sh`` scripts in a tmp folder.
"""

from __future__ import annotations

import inspect
import io
import os
import signal
import threading
import time

import psutil
import pytest

from helpers import (
    NOISE, alive, interrupt_main_thread_inside, kill_group, prepend_path, tree, wait_for, wait_until, write_stub,
)

from taurus_tools.process.tree import terminate_tree, terminate_trees
from taurus_tools import (
    CommandError,
    CommandTimeoutError,
    Datamover,
    Handle,
    Launch,
    TaurusToolsError,
    waitfor,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_slurm_env")]

BIG = 20 * 1024 * 1024
STUBBORN = "trap '' TERM\nsleep 60 &\nwait\nwait\n"  # sleep inherits the ignored SIGTERM


@pytest.fixture
def dm():
    return Datamover("local")


@pytest.fixture
def stubs(tmp_path, monkeypatch):
    folder = tmp_path / "stub-bin"
    folder.mkdir()
    prepend_path(monkeypatch, folder)
    return folder


@pytest.fixture
def handles():
    """Handles created by a test; anything left running is killed afterwards."""
    made = []
    yield made
    for h in made:
        if not h.done():
            h.cancel(grace=0.5)
        kill_group(h.pid)


def start(handles, *argv, **kwargs):
    h = Handle(Launch(tuple(argv)), **kwargs)
    handles.append(h)
    return h


def poll_until_done(h, timeout=30.0):
    deadline = time.monotonic() + timeout
    while h.poll() is None:
        assert time.monotonic() < deadline, "command did not finish: the pipe is not drained"
        time.sleep(0.05)
    return h.returncode


def children_appear(h, n, timeout=10.0):
    """Wait until the handle's process tree has at least ``n`` processes; return their pids."""
    return wait_for(lambda: tree(h.pid), lambda pids: len(pids) >= n, timeout=timeout, what=f"{n} processes")


# =============================================================================== big output
class TestBigOutput:
    def test_20mb_stdout_while_only_polling(self, handles):
        h = start(handles, "head", "-c", str(BIG), "/dev/zero")
        assert poll_until_done(h) == 0
        out, err = h.communicate()
        assert len(out) == BIG
        assert out.count("\0") == BIG
        assert err == ""

    def test_20mb_stderr_while_only_polling(self, handles):
        h = start(handles, "sh", "-c", f"head -c {BIG} /dev/zero | tr '\\0' 'e' >&2; echo done")
        assert poll_until_done(h) == 0
        out, err = h.communicate()
        assert len(err) == BIG and set(err) == {"e"}
        assert out == "done\n"

    def test_20mb_binary_both_streams_exact(self, handles, tmp_path):
        data = os.urandom(BIG)
        blob = tmp_path / "blob"
        blob.write_bytes(data)
        h = start(handles, "sh", "-c", 'cat "$1"; cat "$1" >&2', "sh", str(blob), text=False)
        assert poll_until_done(h) == 0
        out, err = h.communicate()
        assert isinstance(out, bytes) and isinstance(err, bytes)
        assert out == data and err == data

    def test_recursive_dtls_of_big_tree(self, dm, tmp_path):
        root = tmp_path / "many"
        for i in range(40):
            sub = root / f"dir{i:03d}"
            sub.mkdir(parents=True)
            for j in range(100):
                (sub / f"some-long-file-name-{j:05d}.dat").touch()
        h = dm.dtls("-R", str(root))
        assert poll_until_done(h) == 0
        out = h.communicate()[0]
        assert out.count("some-long-file-name-") == 4000
        assert len(out) > 65536  # more than a pipe buffer


# =============================================================================== timeouts
class TestTimeout:
    def test_timeout_cancels_sleep(self, handles):
        h = start(handles, "sleep", "60")
        pid = h.pid
        t0 = time.monotonic()
        with pytest.raises(CommandTimeoutError) as info:
            waitfor(h, timeout=0.5, progress=False)
        elapsed = time.monotonic() - t0
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, TaurusToolsError)
        assert "sleep 60" in str(info.value)
        assert info.value.commands == [["sleep", "60"]]
        assert info.value.timeout == 0.5
        assert 0.4 <= elapsed < 15  # not the 60 s of the sleep (generous: a loaded machine)
        assert h.done() and h.returncode is not None and h.returncode < 0
        assert not psutil.pid_exists(pid) or alive([pid]) == []

    def test_timeout_kills_tree_ignoring_sigterm(self, stubs, handles):
        write_stub(stubs, "stubborn", STUBBORN)
        h = start(handles, "stubborn")
        pids = children_appear(h, 2)
        t0 = time.monotonic()
        with pytest.raises(CommandTimeoutError) as info:
            waitfor(h, timeout=0.3, progress=False)
        elapsed = time.monotonic() - t0
        assert "stubborn" in str(info.value)
        assert elapsed < 20  # SIGTERM ignored: SIGKILL after the 5 s grace, not the 60 s sleep
        assert alive(pids) == []
        assert h.returncode == -int(signal.SIGKILL)

    def test_timeout_only_cancels_unfinished(self, handles):
        quick = start(handles, "true")
        slow = start(handles, "sleep", "60")
        assert quick.wait(5) == 0
        with pytest.raises(CommandTimeoutError) as info:
            waitfor([quick, slow], timeout=0.3, progress=False)
        assert info.value.commands == [["sleep", "60"]]
        assert quick.returncode == 0
        assert slow.returncode < 0

    def test_wait_timeout_is_popen_like(self, handles):
        import subprocess

        h = start(handles, "sleep", "60")
        with pytest.raises(subprocess.TimeoutExpired):
            h.wait(timeout=0.1)
        assert h.poll() is None  # still running: wait() does not cancel
        assert h.cancel() < 0


# =============================================================================== cancel
class TestTerminateTree:
    def test_keeps_exit_status_for_popen(self):
        import subprocess

        p = subprocess.Popen(["sleep", "60"], start_new_session=True)
        try:
            assert terminate_tree(p.pid, grace=5) == int(signal.SIGTERM)
            # terminate_tree must not reap our child: Popen would then report 0
            assert p.wait(5) == -int(signal.SIGTERM)
        finally:
            kill_group(p.pid)

    def test_escalates_to_sigkill(self, stubs):
        import subprocess

        write_stub(stubs, "stubborn", STUBBORN)
        p = subprocess.Popen(["stubborn"], start_new_session=True)
        try:
            pids = wait_for(lambda: tree(p.pid), lambda pids: len(pids) >= 2, timeout=10, what="sh and its sleep")
            t0 = time.monotonic()
            assert terminate_tree(p.pid, grace=0.5) == int(signal.SIGKILL)
            assert time.monotonic() - t0 < 15  # the 0.5 s grace, not the 60 s sleep
            assert p.wait(5) == -int(signal.SIGKILL)
            assert alive(pids) == []
        finally:
            kill_group(p.pid)

    def test_gone_process(self):
        import subprocess

        p = subprocess.Popen(["true"])
        p.wait()
        assert terminate_tree(p.pid) is None

    def test_stopped_processes_all_at_once(self):
        """SIGSTOPped processes get SIGCONT, so SIGTERM ends them without the grace period."""
        import subprocess

        procs = [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(3)]
        try:
            for p in procs:
                os.kill(p.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            assert terminate_trees([p.pid for p in procs], grace=10) == int(signal.SIGTERM)
            assert time.monotonic() - t0 < 8, "waited for the 10 s grace: the stopped ones were not continued"
            assert [p.wait(5) for p in procs] == [-int(signal.SIGTERM)] * 3
        finally:
            for p in procs:
                kill_group(p.pid)


class TestCancel:
    def test_cancel_running_handle_kills_children(self, handles):
        h = start(handles, "sh", "-c", "sleep 30 & sleep 30 & wait")
        pids = children_appear(h, 3)
        assert h.poll() is None
        rc = h.cancel()
        assert rc < 0
        assert h.returncode == rc and h.poll() == rc
        assert alive(pids) == []

    def test_cancel_is_never_success(self, handles):
        # A command that exits 0 on SIGTERM was still stopped, not successful.
        h = start(handles, "sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait")
        children_appear(h, 2)
        assert h.cancel() < 0
        assert waitfor(h, progress=False) < 0

    def test_cancel_finished_handle_returns_its_code(self, handles):
        h = start(handles, "sh", "-c", "exit 3")
        assert h.wait(5) == 3
        assert h.cancel() == 3
        assert h.returncode == 3

    def test_terminate_and_kill_are_popen_like(self, handles):
        h = start(handles, "sleep", "30")
        h.terminate()
        assert h.wait(5) == -int(signal.SIGTERM)
        h2 = start(handles, "sleep", "30")
        h2.kill()
        assert h2.wait(5) == -int(signal.SIGKILL)

    def test_daemonized_grandchild_does_not_hang(self, handles):
        t0 = time.monotonic()
        h = start(handles, "sh", "-c", "sleep 30 & echo hi")
        try:
            assert h.wait(timeout=15) == 0
            assert time.monotonic() - t0 < 15  # not the 30 s of the grandchild
            assert h.communicate()[0] == "hi\n"
        finally:
            kill_group(h.pid)

    def test_context_manager_waits(self, dm, tmp_path):
        (tmp_path / "f").touch()
        with dm.dtls(str(tmp_path)) as h:
            pass
        assert h.returncode == 0
        assert h.communicate()[0] == "f\n"

    def test_context_manager_cancels_on_error(self, handles):
        with pytest.raises(RuntimeError, match="boom"):
            with start(handles, "sh", "-c", "sleep 30 & wait") as h:
                pids = children_appear(h, 2)
                raise RuntimeError("boom")
        assert h.returncode is not None and h.returncode < 0
        assert alive(pids) == []


# =============================================================================== waitfor
class TestWaitfor:
    def test_list_returns_codes_in_order(self, handles):
        first = start(handles, "sh", "-c", "sleep 0.4; exit 4")
        second = start(handles, "sh", "-c", "exit 0")
        third = start(handles, "sh", "-c", "exit 5")
        codes = waitfor([first, second, third], progress=False)
        assert codes == [4, 0, 5]
        assert waitfor(first, progress=False) == 4  # a single handle gives an int

    def test_check_raises_command_error(self, handles):
        h = start(handles, "sh", "-c", "echo out; echo 'something broke' >&2; exit 3")
        buf = io.StringIO()
        with pytest.raises(CommandError) as info:
            waitfor(h, check=True, progress=False, file=buf)
        exc = info.value
        assert exc.returncode == 3
        assert exc.cmd == ["sh", "-c", "echo out; echo 'something broke' >&2; exit 3"]
        assert "something broke" in exc.stderr
        assert exc.output == "out\n"
        assert "exited with code 3" in str(exc) and "something broke" in str(exc)

    def test_check_passes_on_success(self, handles):
        h = start(handles, "true")
        assert waitfor(h, check=True, progress=False) == 0

    def test_check_reports_a_failed_one_among_many(self, handles):
        ok = start(handles, "true")
        bad = start(handles, "sh", "-c", "exit 9")
        with pytest.raises(CommandError) as info:
            waitfor([ok, bad], check=True, progress=False, file=io.StringIO())
        assert info.value.returncode == 9

    def test_stderr_printed_and_noise_dropped(self, stubs, handles):
        write_stub(
            stubs,
            "noisy",
            f"echo '{NOISE[0]}' >&2\necho '{NOISE[1]}' >&2\necho 'cp: real problem' >&2\necho stdout-line\n",
        )
        h = start(handles, "noisy")
        buf = io.StringIO()
        assert waitfor(h, progress=False, file=buf) == 0
        shown = buf.getvalue()
        assert "cp: real problem" in shown
        assert "ioctl" not in shown and "pseudo-terminal" not in shown
        assert "stdout-line" not in shown
        # the handle itself keeps everything
        assert NOISE[0] in h.stderr_text

    def test_stderr_is_live(self, handles):
        h = start(handles, "sh", "-c", "echo 'first line' >&2; exec sleep 30")
        buf = io.StringIO()
        result = {}

        def wait():
            result["rc"] = waitfor(h, progress=False, file=buf, poll_interval=5)

        t = threading.Thread(target=wait)
        t.start()
        try:
            wait_for(buf.getvalue, lambda text: "first line" in text, timeout=15, what="the first stderr line")
            assert not h.done()
        finally:
            h.cancel()
            t.join(10)
        assert result["rc"] < 0

    def test_stderr_labels_for_many(self, handles):
        a = start(handles, "sh", "-c", "echo alpha >&2")
        b = start(handles, "sh", "-c", "echo beta >&2")
        buf = io.StringIO()
        waitfor([a, b], progress=False, file=buf)
        lines = buf.getvalue().splitlines()
        assert "[sh#1] alpha" in lines and "[sh#2] beta" in lines

    def test_show_stderr_false(self, handles):
        h = start(handles, "sh", "-c", "echo hidden >&2")
        buf = io.StringIO()
        waitfor(h, progress=False, show_stderr=False, file=buf)
        assert "hidden" not in buf.getvalue()

    def test_bad_arguments(self, handles):
        h = start(handles, "true")
        with pytest.raises(ValueError):
            waitfor(h, timeout=-1)
        with pytest.raises(ValueError):
            waitfor(h, poll_interval=0)

    @pytest.mark.usefixtures("sigint_raises")
    def test_keyboard_interrupt_cancels(self, handles):
        hs = [start(handles, "sh", "-c", "sleep 30 & wait"), start(handles, "sleep", "30")]
        pids = children_appear(hs[0], 2) + tree(hs[1].pid)
        assert threading.current_thread() is threading.main_thread()
        interrupter = interrupt_main_thread_inside(inspect.unwrap(waitfor).__code__, what="waitfor")
        try:
            with pytest.raises(KeyboardInterrupt):
                waitfor(hs, progress=False, file=io.StringIO())  # without the signal: 30 s
        finally:
            interrupter.join(30)
            assert not interrupter.failure, interrupter.failure
        for h in hs:
            assert h.done() and h.returncode < 0
        assert alive(pids) == []


# =============================================================================== stdin / text
class TestInputAndText:
    def test_input_str(self, handles):
        h = start(handles, "cat", input="hello\nwörld\n")
        assert h.communicate() == ("hello\nwörld\n", "")
        assert h.returncode == 0

    def test_input_bytes_text_false(self, handles):
        data = bytes(range(256)) * 8192  # 2 MiB: more than both pipe buffers
        h = start(handles, "cat", input=data, text=False)
        out, err = h.communicate(timeout=20)
        assert isinstance(out, bytes) and out == data
        assert err == b""

    def test_no_input_means_dev_null(self, handles):
        h = start(handles, "cat")
        assert h.wait(5) == 0  # would hang on a terminal or inherited stdin
        assert h.communicate() == ("", "")

    def test_datamover_input(self, dm, tmp_path):
        # rsync reads a file list from stdin with --files-from=-; cp does not read stdin,
        # so use a command whose tool does: tar -T -.
        (tmp_path / "a").write_text("A")
        (tmp_path / "b").write_text("B")
        archive = tmp_path / "out.tar"
        h = dm.dttar("-cf", str(archive), "-C", str(tmp_path), "-T", "-", input="a\nb\n")
        assert waitfor(h, progress=False) == 0
        listing = dm.dttar("-tf", str(archive))
        assert waitfor(listing, progress=False) == 0
        assert listing.communicate()[0].split() == ["a", "b"]

    def test_undecodable_output_survives(self, handles):
        h = start(handles, "printf", "caf\\351\\n")
        out, _ = h.communicate(timeout=5)
        assert out.encode("utf-8", "surrogateescape") == b"caf\xe9\n"


# =============================================================================== live output
LIVE = "echo first; echo oops >&2; sleep 30\n"


class TestLiveOutput:
    """on_output sees output as it comes; Handle.stdout/.stderr read like Popen's pipes."""

    def test_on_output_while_running_and_still_captured(self, handles):
        seen = []
        h = start(handles, "sh", "-c", LIVE, on_output=lambda stream, data: seen.append((stream, data)))
        wait_until(lambda: {s for s, _ in seen} == {"stdout", "stderr"}, 10, what="both streams seen live")
        assert h.poll() is None
        assert sorted(seen) == [("stderr", b"oops\n"), ("stdout", b"first\n")]
        h.cancel(grace=0.5)
        assert h.communicate() == ("first\n", "oops\n")

    def test_a_failing_callback_does_not_stop_the_capture(self, handles):
        def broken(stream, data):
            raise ValueError("display went away")

        h = start(handles, "sh", "-c", "echo a; echo b >&2", on_output=broken)
        assert h.communicate(timeout=10) == ("a\n", "b\n")

    def test_datamover_passes_on_output(self, dm, tmp_path):
        (tmp_path / "f").write_text("x")
        seen = []
        h = dm.dtls(str(tmp_path), on_output=lambda stream, data: seen.append(data))
        assert waitfor(h, progress=False) == 0
        assert b"".join(seen) == b"f\n"

    def test_readline_returns_lines_before_the_end(self, handles):
        h = start(handles, "sh", "-c", LIVE)
        assert h.stdout.readline() == "first\n"
        assert h.stderr.readline() == "oops\n"
        assert h.poll() is None
        h.cancel(grace=0.5)
        assert h.stdout.readline() == "first\n"  # a new reader starts at the beginning
        out = h.stdout
        out.readline()
        assert out.readline() == ""  # then the end

    def test_read_waits_for_the_end_and_iterates(self, handles):
        h = start(handles, "sh", "-c", "printf 'a\\nb\\nc'; sleep 0.2; printf '\\nd'")
        assert h.stdout.read() == "a\nb\nc\nd"
        assert h.returncode == 0
        assert list(h.stdout) == ["a\n", "b\n", "c\n", "d"]
        assert h.stdout.readlines() == ["a\n", "b\n", "c\n", "d"]
        reader = h.stdout
        assert (reader.read(2), reader.read(3), reader.read()) == ("a\n", "b\nc", "\nd")
        assert h.communicate() == ("a\nb\nc\nd", "")

    def test_bytes_with_text_false(self, handles):
        h = start(handles, "printf", "caf\\351\\n", text=False)
        with h.stdout as out:
            assert out.readline() == b"caf\xe9\n"
        assert out.closed

    def test_big_output_through_the_reader(self, handles):
        h = start(handles, "head", "-c", str(BIG), "/dev/zero", text=False)
        total = 0
        reader = h.stdout
        while True:
            chunk = reader.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
        assert total == BIG and h.wait(10) == 0


# =============================================================================== hostile names
HOSTILE = ["with space", "quote'\"s", "new\nline", "-leading-dash", "ünïcødé-名前", "star*?[x]", "$HOME;rm -rf x"]


class TestHostileNames:
    @pytest.mark.parametrize("name", HOSTILE)
    def test_copy_move_remove(self, dm, tmp_path, name):
        src_dir, dst_dir = tmp_path / "src", tmp_path / "dst"
        src_dir.mkdir()
        dst_dir.mkdir()
        payload = name.encode() + b"\x00\xff" + os.urandom(1024)
        (src_dir / name).write_bytes(payload)
        # relative names with cwd, and "--" as one must for names starting with "-"
        h = dm.dtcp("--", name, str(dst_dir / name), cwd=src_dir)
        assert waitfor(h, progress=False, check=True) == 0
        assert (dst_dir / name).read_bytes() == payload
        moved = name + ".moved"
        h = dm.dtmv("--", name, moved, cwd=dst_dir)
        assert waitfor(h, progress=False, check=True) == 0
        assert not (dst_dir / name).exists()
        assert (dst_dir / moved).read_bytes() == payload
        h = dm.dtrm("--", moved, cwd=dst_dir)
        assert waitfor(h, progress=False, check=True) == 0
        assert os.listdir(dst_dir) == []
        assert (src_dir / name).read_bytes() == payload  # the source is untouched

    def test_leading_dash_without_double_dash_is_an_option(self, dm, tmp_path):
        (tmp_path / "-leading-dash").write_text("x")
        h = dm.dtrm("-leading-dash", cwd=tmp_path)
        assert waitfor(h, progress=False, file=io.StringIO()) != 0  # rm parses it as options
        assert (tmp_path / "-leading-dash").exists()

    def test_recursive_copy_of_folder(self, dm, tmp_path):
        folder = tmp_path / "hostile folder ü"
        folder.mkdir()
        contents = {}
        for i, name in enumerate(HOSTILE):
            data = f"{i}:{name}".encode() + os.urandom(256)
            (folder / name).write_bytes(data)
            contents[name] = data
        (folder / "sub dir").mkdir()
        (folder / "sub dir" / "new\nline").write_bytes(b"nested")
        target = tmp_path / "copy"
        h = dm.dtcp("-r", str(folder), str(target))
        assert waitfor(h, progress=False, check=True) == 0
        assert sorted(os.listdir(target)) == sorted([*HOSTILE, "sub dir"])
        for name, data in contents.items():
            assert (target / name).read_bytes() == data
        assert (target / "sub dir" / "new\nline").read_bytes() == b"nested"
        listing = dm.dtls("-1", str(target))
        assert waitfor(listing, progress=False) == 0
        out = listing.communicate()[0]
        assert "ünïcødé-名前" in out and "with space" in out
        h = dm.dtrm("-r", str(target))
        assert waitfor(h, progress=False, check=True) == 0
        assert not target.exists()

    def test_bytes_file_name(self, dm, tmp_path):
        raw = os.fsencode(str(tmp_path)) + b"/latin1-\xe9"
        with open(raw, "wb") as fh:
            fh.write(b"latin")
        h = dm.dtcp(raw, raw + b".copy")
        assert waitfor(h, progress=False, check=True) == 0
        with open(raw + b".copy", "rb") as fh:
            assert fh.read() == b"latin"
