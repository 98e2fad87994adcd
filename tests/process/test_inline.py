"""Handles of programs run on a thread of this process (``Launch.inline``): the same future,
exit codes, cancellation and dependencies as a process, without one.

The S3 copy's in-process shards (tests/transfer/test_s3_copy.py) are the real user; here the
handle's own contract, with small programs whose every step the test controls.
"""

from __future__ import annotations

import signal
import threading
from typing import List, Optional, Tuple

import pytest

from helpers import wait_for

from taurus_tools import CommandError, Datamover, Handle, Launch, waitfor
from taurus_tools.errors import CommandCancelledError

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_slurm_env")]


class Program:
    """Runs until released or stopped; records what the handle asked of it."""

    def __init__(self, argv: Tuple[str, ...], rc: int = 0, ignore_stop: bool = False,
                 crash: Optional[BaseException] = None) -> None:
        self.argv = argv
        self.rc = rc
        self.ignore_stop = ignore_stop
        self.crash = crash
        self.started = threading.Event()
        self.release = threading.Event()
        self.stops = 0
        self.thread: Optional[threading.Thread] = None

    def run(self) -> int:
        self.thread = threading.current_thread()
        self.started.set()
        self.release.wait(30)
        if self.crash is not None:
            raise self.crash
        if self.stops and not self.ignore_stop:
            return 143  # as the worker says SIGTERM
        return self.rc

    def stop(self) -> None:
        self.stops += 1
        if not self.ignore_stop:
            self.release.set()


def inline(made: List[Program], **program) -> Launch:
    def make(argv: Tuple[str, ...]) -> Program:
        p = Program(argv, **program)
        made.append(p)
        return p

    return Launch(("python", "worker.py", "--shard=a b"), name="worker", inline=make)


def test_success_is_a_handle_like_a_process():
    made: List[Program] = []
    h = Handle(inline(made))
    (p,) = made
    assert p.argv == ("python", "worker.py", "--shard=a b")  # the argv a process would run
    assert p.started.wait(10) and p.thread is not threading.current_thread()
    assert h.running() and h.poll() is None and h.state == "running"
    assert "in this process" in repr(h) and h.pid is None
    p.release.set()
    assert h.wait(10) == 0 and h.result() == 0 and h.state == "done"
    assert h.stdout_text == "" and h.stderr_text == ""


def test_an_exit_code_fails_it_as_a_process_would():
    made: List[Program] = []
    h = Handle(inline(made, rc=3))
    made[0].release.set()
    assert h.wait(10) == 3
    with pytest.raises(CommandError) as caught:
        h.result()
    assert caught.value.returncode == 3 and h.state == "failed"


def test_a_crash_is_exit_1_with_its_traceback_on_stderr():
    made: List[Program] = []
    h = Handle(inline(made, crash=RuntimeError("broken inside")))
    made[0].release.set()
    assert h.wait(10) == 1
    assert "RuntimeError: broken inside" in h.stderr_text and "Traceback" in h.stderr_text


def test_a_program_that_cannot_begin_ends_the_handle_at_once():
    def make(argv):
        raise SystemExit("worker: error: the arguments are wrong")  # (argparse's way)

    h = Handle(Launch(("python", "worker.py"), inline=make))
    assert h.wait(10) == 1 and "the arguments are wrong" in h.stderr_text

    def usage(argv):
        raise SystemExit(2)

    assert Handle(Launch(("python", "worker.py"), inline=usage)).wait(10) == 2


def test_cancel_stops_it_and_is_never_success():
    made: List[Program] = []
    h = Handle(inline(made))
    assert made[0].started.wait(10)
    assert h.cancel(timeout=10) == -signal.SIGTERM
    assert made[0].stops == 1 and h.state == "cancelled"
    with pytest.raises(CommandCancelledError):
        h.result()
    assert h.cancel() == -signal.SIGTERM and made[0].stops == 1  # (a finished one: nothing more)


@pytest.mark.parametrize("how, code", [("terminate", -signal.SIGTERM), ("kill", -signal.SIGKILL)])
def test_terminate_and_kill_stop_it_with_their_signal(how, code):
    made: List[Program] = []
    h = Handle(inline(made))
    assert made[0].started.wait(10)
    getattr(h, how)()
    assert h.wait(10) == code
    h.send_signal(signal.SIGTERM)  # (ended: nothing happens)
    assert made[0].stops == 1


def test_a_signal_that_ends_no_process_is_ignored():
    made: List[Program] = []
    h = Handle(inline(made))
    assert made[0].started.wait(10)
    h.send_signal(signal.SIGUSR1)
    assert made[0].stops == 0 and h.poll() is None
    made[0].release.set()
    assert h.wait(10) == 0


def test_a_program_that_does_not_stop_is_reported_ended_after_the_timeout(caplog):
    made: List[Program] = []
    h = Handle(inline(made, ignore_stop=True))
    assert made[0].started.wait(10)
    assert h.cancel(timeout=0.3) == -signal.SIGTERM
    assert h.done() and "still running" in caplog.text
    made[0].release.set()  # (the thread ends later; its code changes nothing)
    made[0].thread.join(10)
    assert h.returncode == -signal.SIGTERM


def test_after_and_waitfor_as_for_processes(tmp_path):
    made: List[Program] = []
    first = Datamover("local").dtls("/")
    second = Handle(inline(made), after=[first])
    wait_for(lambda: made, timeout=10, what="the program made once its dependency ended")
    woken = threading.Event()
    second.add_waker(woken)
    made[0].release.set()
    assert waitfor([first, second], timeout=10) == [0, 0]
    assert woken.is_set()


def test_a_failed_dependency_means_it_never_begins():
    made: List[Program] = []
    failed = Datamover("local").dtls("/no such folder")
    h = Handle(inline(made), after=[failed])
    with pytest.raises(Exception):
        h.wait(10)
    assert made == [] and h.state == "not run"
