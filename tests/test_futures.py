"""The one future type: command handles and started copies are concurrent.futures.Futures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from helpers import wait_for

from taurus_tools import (
    BackgroundFuture,
    CommandCancelledError,
    CommandError,
    CopyError,
    Datamover,
    DependencyError,
    Handle,
    Launch,
    ParallelCopy,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_slurm_env")]


def start(*argv: str) -> Handle:
    return Handle(Launch(tuple(argv)))


class TestHandle:
    def test_is_a_future_with_the_exit_code(self):
        h = start("sh", "-c", "echo hi")
        assert isinstance(h, concurrent.futures.Future) and isinstance(h, BackgroundFuture)
        assert h.result(timeout=30) == 0
        assert h.done() and not h.running() and not h.cancelled()
        assert h.exception() is None and h.poll() == 0

    def test_failure_is_raised_never_returned(self):
        h = start("sh", "-c", "echo oops >&2; exit 3")
        with pytest.raises(CommandError) as info:
            h.result(timeout=30)
        assert info.value.returncode == 3 and "oops" in info.value.stderr
        assert h.wait() == 3 and h.communicate() == ("", "oops\n")  # Popen's API is unchanged
        assert isinstance(h.exception(), CommandError)

    def test_running_until_the_end(self):
        h = start("sleep", "30")
        assert h.running() and not h.done()
        with pytest.raises(concurrent.futures.TimeoutError):
            h.result(timeout=0.05)
        assert h.cancel(grace=0.5) < 0
        assert h.cancelled() and h.done()
        with pytest.raises(CommandCancelledError) as info:
            h.result()
        assert isinstance(info.value, concurrent.futures.CancelledError)
        assert isinstance(info.value, CommandError)

    def test_wait_and_as_completed(self):
        fast, slow = start("true"), start("sh", "-c", "sleep 0.3")
        done, not_done = concurrent.futures.wait([fast, slow], timeout=30)
        assert done == {fast, slow} and not not_done
        order = list(concurrent.futures.as_completed([start("sh", "-c", "sleep 0.5"), start("true")], timeout=30))
        assert [h.args[0] for h in order] == ["true", "sh"]

    def test_first_exception(self):
        bad, slow = start("false"), start("sleep", "30")
        done, not_done = concurrent.futures.wait([bad, slow], timeout=30, return_when="FIRST_EXCEPTION")
        assert done == {bad} and not_done == {slow}
        slow.cancel(grace=0.5)

    def test_done_callback_may_use_the_popen_api(self):
        seen = []
        got = threading.Event()

        def callback(f):
            seen.append((f.wait(), f.communicate(), f.poll(), f.result()))
            got.set()

        h = start("sh", "-c", "echo out")
        h.add_done_callback(callback)
        assert got.wait(30)
        assert seen == [(0, ("out\n", ""), 0, 0)]
        late = []
        h.add_done_callback(lambda f: late.append(f.result()))  # already done: runs at once
        assert late == [0]

    def test_asyncio_wrap_future(self):
        async def main():
            return await asyncio.wrap_future(start("sh", "-c", "exit 0"))

        assert asyncio.run(main()) == 0

    def test_asyncio_wrap_future_raises(self):
        async def main():
            return await asyncio.wrap_future(start("sh", "-c", "exit 5"))

        with pytest.raises(CommandError):
            asyncio.run(main())

    def test_datamover_call_is_a_future(self, tmp_path):
        (tmp_path / "f").write_text("x")
        h = Datamover("local").dtls(str(tmp_path))
        assert h.result(timeout=30) == 0
        with pytest.raises(CommandError):
            Datamover("local").dtls(str(tmp_path / "missing")).result(timeout=30)


class TestParallelCopy:
    def tree(self, root):
        for i in range(5):
            (root / f"d{i}").mkdir(parents=True)
            (root / f"d{i}" / "f").write_text(str(i))
        return root

    def test_result_of_a_started_copy(self, tmp_path):
        src = self.tree(tmp_path / "src")
        pc = ParallelCopy(src, tmp_path / "dst", datamover=Datamover("local"), progress=False,
                          work_dir=tmp_path / "work")
        assert isinstance(pc, concurrent.futures.Future) and not pc.running() and not pc.done()
        result = pc.start().result(timeout=60)
        assert result.ok and pc.done() and pc.wait() is result
        assert (tmp_path / "dst" / "d3" / "f").read_text() == "3"

    def test_a_failed_copy_raises_copy_error_with_the_result(self, tmp_path):
        src = self.tree(tmp_path / "src")
        pc = ParallelCopy(src, tmp_path / "dst", datamover=Datamover("local"), progress=False,
                          work_dir=tmp_path / "work")
        real_run = pc.run

        def failing_run():
            result = real_run()
            result.ok = False
            result.files_failed = 1
            result.failed_messages.append("d1/f: Permission denied")
            return result

        pc.run = failing_run
        with pytest.raises(CopyError, match="Permission denied") as info:
            pc.start().result(timeout=60)
        assert pc.wait() is info.value.result and not pc.cancelled()

    def test_cancel(self, tmp_path):
        src = self.tree(tmp_path / "src")
        gate = threading.Event()
        pc = ParallelCopy(src, tmp_path / "dst", datamover=Datamover("local"), progress=False,
                          work_dir=tmp_path / "work")

        def slow_run():
            while not pc._stop.is_set():
                gate.wait(0.05)
            raise KeyboardInterrupt  # what the fan-out raises when told to stop

        pc.run = slow_run
        pc.start()
        wait_for(lambda: pc.running(), timeout=10, what="the copy to run")
        assert pc.cancel() is True
        with pytest.raises(concurrent.futures.CancelledError):
            pc.result(timeout=30)
        assert pc.cancelled() and pc.cancel() is False


class TestThen:
    """future.then(fn): Python code on the result, as a new future; nothing swallowed."""

    def test_runs_on_the_result(self, tmp_path):
        (tmp_path / "a").write_text("x")
        (tmp_path / "b").write_text("y")
        dm = Datamover("local")
        listing = dm.dtls(str(tmp_path))
        names = listing.then(lambda rc: listing.communicate()[0].split())
        assert isinstance(names, BackgroundFuture)
        assert names.result(timeout=30) == ["a", "b"]

    def test_chains(self):
        got = start("true").then(lambda rc: rc + 1).then(lambda n: n * 10)
        assert got.result(timeout=30) == 10

    def test_an_exception_in_fn_lands_on_the_new_future(self):
        def broken(rc):
            raise ValueError("bad parse")

        child = start("true").then(broken)
        with pytest.raises(ValueError, match="bad parse"):
            child.result(timeout=30)
        assert isinstance(child.exception(), ValueError)

    def test_a_failed_source_fails_the_chain_with_its_cause(self):
        calls = []
        child = start("sh", "-c", "exit 4").then(calls.append)
        grandchild = child.then(calls.append)
        with pytest.raises(DependencyError) as info:
            child.result(timeout=30)
        assert isinstance(info.value.__cause__, CommandError) and info.value.__cause__.returncode == 4
        with pytest.raises(DependencyError) as info:
            grandchild.result(timeout=30)
        assert isinstance(info.value.__cause__, DependencyError)
        assert calls == []

    def test_cancelled_source(self):
        h = start("sleep", "30")
        child = h.then(lambda rc: "never")
        h.cancel(grace=0.5)
        with pytest.raises(DependencyError) as info:
            child.result(timeout=30)
        assert isinstance(info.value.__cause__, CommandCancelledError)

    def test_on_a_finished_future_runs_at_once(self):
        h = start("true")
        h.result(timeout=30)
        assert h.then(lambda rc: "now").result(timeout=0) == "now"

    def test_on_a_started_copy(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        (src / "f").write_text("data")
        pc = ParallelCopy(src, tmp_path / "dst", datamover=Datamover("local"), progress=False,
                          work_dir=tmp_path / "work")
        copied = pc.start().then(lambda result: result.files_copied)
        assert copied.result(timeout=60) == 1
