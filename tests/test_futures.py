"""The one future type: command handles and started copies are concurrent.futures.Futures."""

from __future__ import annotations

import asyncio
import os
import time
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
        # the root error, not the DependencyError in between
        assert isinstance(info.value.__cause__, CommandError) and info.value.__cause__.returncode == 4
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


def local_dm() -> Datamover:
    return Datamover("local")


class TestAfter:
    """after=[futures]: start only once they succeeded; fail at once, with the root cause, if not."""

    def test_waits_for_its_dependency_then_runs(self, tmp_path):
        marker = tmp_path / "first done"
        dm = local_dm()
        first = start("sh", "-c", 'sleep 0.5; touch "$1"', "sh", str(marker))
        second = dm.dtls(marker, after=[first])
        assert not second.running() and second.pid is None and second.poll() is None
        assert "waiting" in repr(second)
        assert second.result(timeout=30) == 0
        # It ran after the first one: the file it lists existed when it started.
        assert second.communicate()[0].strip() == str(marker)
        assert second.started is not None and first.ended is not None and second.started >= first.ended

    def test_a_failed_dependency_fails_it_at_once_with_the_root_cause(self, tmp_path):
        dm = local_dm()
        first = start("sh", "-c", "echo broken >&2; exit 4")
        second = dm.dtcp(tmp_path / "a", tmp_path / "b", after=[first])
        third = dm.dtls(tmp_path, after=[second])
        for h in (second, third):
            with pytest.raises(DependencyError) as info:
                h.result(timeout=30)
            cause = info.value.__cause__
            assert isinstance(cause, CommandError) and cause.returncode == 4 and "broken" in cause.stderr
            assert "not run" in str(info.value)
            assert h.pid is None and h.returncode is None and h.started is None
            with pytest.raises(DependencyError):
                h.wait(timeout=5)
            with pytest.raises(DependencyError):
                h.poll()  # a polling loop ends, with the reason
            assert "not run" in repr(h)
        assert not (tmp_path / "b").exists()

    def test_on_always_runs_after_a_failure(self, tmp_path):
        dm = local_dm()
        first = start("sh", "-c", "exit 2")
        target = tmp_path / "scratch"
        target.mkdir()
        cleanup = dm.dtrm("-r", target, after=[first], on="always")
        assert cleanup.result(timeout=30) == 0
        assert not target.exists()

    def test_waits_for_all_of_them(self, tmp_path):
        dm = local_dm()
        slow = start("sleep", "1")
        quick = start("true")
        step = dm.dtls(tmp_path, after=[quick, slow])
        quick.result(timeout=30)
        assert not step.done()
        assert step.result(timeout=30) == 0 and step.started >= slow.ended

    def test_one_failure_among_many(self):
        ok = start("true")
        bad = start("sh", "-c", "exit 7")
        step = local_dm().dtls("/", after=[ok, bad])
        with pytest.raises(DependencyError) as info:
            step.result(timeout=30)
        assert info.value.__cause__.returncode == 7

    def test_cancel_while_waiting_means_never_run(self, tmp_path):
        marker = tmp_path / "ran"
        first = start("sleep", "1")
        second = local_dm().dtcp("/dev/null", marker, after=[first])
        assert second.cancel() < 0
        assert second.cancelled() and second.done()
        with pytest.raises(concurrent.futures.CancelledError):
            second.result(timeout=0)
        assert second.wait(timeout=0) < 0 and second.poll() < 0
        first.result(timeout=30)
        # the dependency ending later must not start it
        with pytest.raises(AssertionError):
            wait_for(marker.exists, timeout=1.0, interval=0.1, what="the cancelled copy")
        assert second.pid is None

    def test_a_cancelled_dependency(self):
        first = start("sleep", "30")
        second = local_dm().dtls("/", after=[first])
        first.cancel(grace=0.5)
        with pytest.raises(DependencyError) as info:
            second.result(timeout=30)
        assert isinstance(info.value.__cause__, CommandCancelledError)

    def test_after_an_already_finished_future_starts_at_once(self):
        first = start("true")
        first.result(timeout=30)
        step = local_dm().dtls("/", after=[first])
        assert step.running() or step.done()  # started in this call, not later
        assert step.pid is not None and step.result(timeout=30) == 0

    def test_after_accepts_then_futures_and_plain_futures(self):
        plain: concurrent.futures.Future = concurrent.futures.Future()
        first = start("true").then(lambda rc: "parsed")
        step = local_dm().dtls("/", after=[first, plain])
        assert not step.done()
        plain.set_result(None)
        assert step.result(timeout=30) == 0

    def test_a_plain_future_that_failed(self):
        plain: concurrent.futures.Future = concurrent.futures.Future()
        plain.set_exception(ValueError("upstream broke"))
        step = local_dm().dtls("/", after=[plain])
        with pytest.raises(DependencyError, match="upstream broke") as info:
            step.result(timeout=5)
        assert isinstance(info.value.__cause__, ValueError)

    def test_bad_arguments_say_what_is_valid(self):
        from taurus_tools import ConfigurationError

        with pytest.raises(ConfigurationError, match="after\\[0\\] is str"):
            local_dm().dtls("/", after=["not a future"])
        with pytest.raises(ConfigurationError, match="on must be one of"):
            local_dm().dtls("/", after=[start("true")], on="sometimes")
        with pytest.raises(ConfigurationError, match="list of futures"):
            local_dm().dtls("/", after=5)

    def test_a_start_error_lands_on_the_future(self, tmp_path):
        first = start("true")
        gone = tmp_path / "missing-program"
        step = local_dm().run(gone, after=[first])
        with pytest.raises(OSError):
            step.result(timeout=30)
        with pytest.raises(OSError):
            step.wait(timeout=5)

    def test_srun_and_run_take_after(self, tmp_path):
        dm = local_dm()
        first = start("sh", "-c", "exit 5")
        with pytest.raises(DependencyError):
            dm.run("echo", "x", after=[first]).result(timeout=30)
        ran = dm.run("echo", "hello world", after=[start("true")])
        assert ran.result(timeout=30) == 0 and ran.communicate()[0] == "hello world\n"

    def test_copies_take_after(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        (src / "f").write_text("data")
        dm = local_dm()
        bad = start("sh", "-c", "exit 3")
        pc = ParallelCopy(src, tmp_path / "dst", datamover=dm, progress=False, work_dir=tmp_path / "w1")
        assert pc.start(after=[bad]) is pc
        with pytest.raises(DependencyError) as info:
            pc.result(timeout=60)
        assert info.value.__cause__.returncode == 3
        with pytest.raises(DependencyError):
            pc.wait(timeout=5)
        assert not (tmp_path / "dst").exists()
        # and one that waits, then copies; a command after the copy
        gate = start("sleep", "0.5")
        pc2 = ParallelCopy(src, tmp_path / "dst2", datamover=dm, progress=False, work_dir=tmp_path / "w2")
        pc2.start(after=[gate])
        assert not pc2.running()
        listed = dm.dtls(tmp_path / "dst2", after=[pc2])
        assert listed.result(timeout=60) == 0 and listed.communicate()[0] == "f\n"
        assert pc2.result(timeout=5).files_copied == 1

    def test_a_copy_cancelled_while_waiting(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        gate = start("sleep", "0.5")
        pc = ParallelCopy(src, tmp_path / "dst", datamover=local_dm(), progress=False, work_dir=tmp_path / "w")
        pc.start(after=[gate])
        assert pc.cancel() and pc.cancelled()
        from taurus_tools import CopyCancelledError

        with pytest.raises(CopyCancelledError):
            pc.wait(timeout=5)
        gate.result(timeout=30)
        assert not pc.running() and not (tmp_path / "dst").exists()

    def test_waitfor_on_a_never_run_command(self):
        from taurus_tools import waitfor

        step = local_dm().dtls("/", after=[start("false")])
        assert waitfor(step, progress=False) == 1
        with pytest.raises(DependencyError):
            waitfor(step, progress=False, check=True)


class TestWaitforAnyFuture:
    """waitfor takes copies and then() futures as well as handles."""

    def test_mixed_list(self, tmp_path):
        from taurus_tools import waitfor

        src = tmp_path / "src"
        src.mkdir()
        (src / "f").write_text("x")
        pc = ParallelCopy(src, tmp_path / "dst", datamover=local_dm(), progress=False, work_dir=tmp_path / "w")
        pc.start()
        parsed = start("echo", "3").then(lambda rc: 3)
        broken = start("true").then(lambda rc: 1 / 0)
        codes = waitfor([start("sh", "-c", "exit 2"), pc, parsed, broken], progress=False)
        assert codes == [2, 0, 0, 1]
        with pytest.raises(ZeroDivisionError):
            waitfor([parsed, broken], progress=False, check=True)

    def test_timeout_cancels_a_copy(self, tmp_path):
        from taurus_tools import CommandTimeoutError, waitfor

        gate = start("sleep", "30")
        (tmp_path / "src").mkdir()
        pc = ParallelCopy(tmp_path / "src", tmp_path / "dst", datamover=local_dm(), progress=False,
                          work_dir=tmp_path / "w")
        pc.start(after=[gate])
        with pytest.raises(CommandTimeoutError, match="ParallelCopy"):
            waitfor(pc, timeout=0.3, progress=False)
        assert pc.cancelled()
        gate.cancel(grace=0.5)

    def test_wrong_type_says_what_is_valid(self):
        from taurus_tools import ConfigurationError, waitfor

        with pytest.raises(ConfigurationError, match="waitfor takes"):
            waitfor("dtls", progress=False)
        with pytest.raises(ConfigurationError, match="item 1 is int"):
            waitfor([start("true"), 5], progress=False)


class TestBackgroundThreads:
    """Handles run on reused daemon threads: one per running command, none started for a
    command when an idle one is there."""

    def test_threads_are_reused_and_each_command_has_its_own(self):
        import taurus_tools.futures as futures

        # sequential commands: after the first, each finds the previous one's thread idle
        start("true").result(timeout=30)
        wait_for(lambda: futures._THREADS._idle, lambda n: n >= 1, timeout=10, what="an idle thread")
        before = threading.active_count()
        for _ in range(20):
            start("true").result(timeout=30)
        assert threading.active_count() <= before + 1  # (the previous may still be finishing)
        # concurrent commands each get a thread: none waits for another to finish
        slow = [start("sleep", "1") for _ in range(5)]
        quick = start("true")
        assert quick.result(timeout=5) == 0
        assert not any(h.done() for h in slow)
        assert [h.result(timeout=30) for h in slow] == [0] * 5
        wait_for(lambda: futures._THREADS._idle, lambda n: n >= 5, timeout=10, what="their threads to be idle")

    def test_a_failing_task_does_not_kill_the_thread(self, caplog):
        from taurus_tools.futures import in_background

        done = threading.Event()

        def boom():
            raise RuntimeError("boom")

        in_background(boom, "test:boom")
        in_background(done.set, "test:after")
        assert done.wait(10)
        wait_for(lambda: "background task failed" in caplog.text, timeout=10, what="the failure to be logged")

    def test_an_idle_thread_ends_after_its_wait(self, monkeypatch):
        import taurus_tools.futures as futures

        pool = futures._Threads()
        monkeypatch.setattr(futures, "IDLE_THREAD_S", 0.2)
        ran = threading.Event()
        pool.submit(ran.set, "test:short")
        assert ran.wait(10)
        wait_for(lambda: pool._idle, lambda n: n == 0, timeout=10, what="the idle thread to end")
        again = threading.Event()
        pool.submit(again.set, "test:again")  # a new thread starts for it
        assert again.wait(10)


def slow_tree(root, files=6, mib=24):
    """A source whose copy takes a while (checksum verify doubles the reads)."""
    root.mkdir()
    block = os.urandom(1 << 20)
    for i in range(files):
        with open(root / f"f{i}", "wb") as fh:
            for _ in range(mib):
                fh.write(block)
    return root


def workers_of(work_dir):
    """Running per-shard worker processes of the copy whose work dir is ``work_dir``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if any(part.endswith("transfer/worker.py") for part in cmd) and any(str(work_dir) in part for part in cmd):
            found.append(proc.pid)
    return found


class TestCancelTellsTheTruth:
    """cancel() returns once nothing of the work runs, and says whether it stopped it."""

    def test_waitfor_timeout_leaves_no_shard_running(self, tmp_path):
        from taurus_tools import CommandTimeoutError, waitfor

        src = slow_tree(tmp_path / "src")
        pc = ParallelCopy(src, tmp_path / "dst", datamover=local_dm(), progress=False, work_dir=tmp_path / "w",
                          workers=3, shards=6, shard_by="count", verify="checksum", check_space=False)
        pc.start()
        wait_for(lambda: workers_of(tmp_path / "w"), timeout=30, what="the shard workers to start")
        with pytest.raises(CommandTimeoutError):
            waitfor(pc, timeout=0.2, progress=False)
        assert pc.done() and pc.cancelled()  # cancel() waited for the copy to stop
        assert workers_of(tmp_path / "w") == []

    def test_cancel_after_the_last_shard_is_false_and_the_copy_stands(self, tmp_path, monkeypatch):
        import taurus_tools.transfer.parallel_copy as pc_mod

        src = tmp_path / "src"
        src.mkdir()
        (src / "f").write_text("x")
        in_folders, release = threading.Event(), threading.Event()
        real = pc_mod.ParallelCopy._set_folders

        def slow_folders(self, *args, **kwargs):
            in_folders.set()
            release.wait(10)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(pc_mod.ParallelCopy, "_set_folders", slow_folders)
        dm = local_dm()
        pc = ParallelCopy(src, tmp_path / "dst", datamover=dm, progress=False, work_dir=tmp_path / "w")
        pc.start()
        after = dm.dtls(tmp_path / "dst", after=[pc])
        assert in_folders.wait(30)
        threading.Timer(0.3, release.set).start()
        assert pc.cancel() is False  # it was past its shards: it finished, and says so
        assert pc.result(timeout=5).ok and not pc.cancelled()
        assert after.result(timeout=30) == 0  # what came after ran, as the copy succeeded

    def test_an_error_in_the_fan_out_stops_the_running_shards(self, tmp_path, monkeypatch):
        import errno

        import taurus_tools.transfer.parallel_copy as pc_mod

        def no_space(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")

        monkeypatch.setattr(pc_mod.ParallelCopy, "_finish_shard", no_space)
        src = slow_tree(tmp_path / "src", files=4, mib=16)
        pc = ParallelCopy(src, tmp_path / "dst", datamover=local_dm(), progress=False, work_dir=tmp_path / "w",
                          workers=4, shards=4, shard_by="count", verify="checksum", check_space=False)
        with pytest.raises(OSError, match="No space left"):
            pc.run()
        wait_for(lambda: workers_of(tmp_path / "w"), lambda pids: not pids, timeout=30,
                 what="no shard worker left once run() raised")

    def test_cancel_of_a_waiting_copy_closes_its_progress(self, tmp_path):
        from taurus_tools import ProgressCallback

        class Recording(ProgressCallback):
            closed = 0

            def close(self):
                Recording.closed += 1

        src = tmp_path / "src"
        src.mkdir()
        gate = start("sleep", "30")
        pc = ParallelCopy(src, tmp_path / "dst", datamover=local_dm(), progress=Recording(), work_dir=tmp_path / "w")
        pc.start(after=[gate])
        assert pc.cancel() is True and Recording.closed == 1
        gate.cancel(grace=0.5)
        assert Recording.closed == 1  # once

    def test_shards_share_the_datamovers_slurm_client(self, tmp_path, monkeypatch):
        src = tmp_path / "src"
        src.mkdir()
        for i in range(4):
            (src / f"f{i}").write_text(str(i))
        dm = local_dm()
        started = []
        real = dm.start

        def spy(launch, **kwargs):
            handle = real(launch, **kwargs)
            started.append(handle)
            return handle

        monkeypatch.setattr(dm, "start", spy)
        result = ParallelCopy(src, tmp_path / "dst", datamover=dm, progress=False, work_dir=tmp_path / "w",
                              shards=4, shard_by="count").run()
        assert result.ok and len(started) == 4
        assert {id(h._slurm) for h in started} == {id(dm._slurm)}  # one client, one watcher


class TestPendingHandleRaces:
    def test_wait_during_a_cancel_before_start_gives_the_code(self):
        gate = start("sleep", "30")
        step = local_dm().dtls("/", after=[gate])
        in_callback = threading.Event()

        def slow_callback(_):
            in_callback.set()
            time.sleep(0.5)  # Future.cancel runs this before cancel() records the code

        step.add_done_callback(slow_callback)
        codes = []
        waiter = threading.Thread(target=lambda: codes.append(step.wait(timeout=30)))
        waiter.start()
        canceller = threading.Thread(target=step.cancel)
        canceller.start()
        assert in_callback.wait(10)
        assert step.returncode == -15 and step.poll() == -15  # not None while done()
        waiter.join(30)
        canceller.join(30)
        assert codes == [-15]
        gate.cancel(grace=0.5)

    def test_with_block_error_is_not_hidden_by_a_step_that_never_ran(self):
        failed = start("false")
        assert isinstance(failed.exception(timeout=30), CommandError)
        with pytest.raises(ValueError, match="the block's own error"):
            with local_dm().run("true", after=[failed]) as step:  # it never runs
                raise ValueError("the block's own error")
        assert step.cancel() is None and isinstance(step.exception(), DependencyError)
        # and one cancelled while it waits: the block's error again, the step never runs
        gate = start("sleep", "30")
        with pytest.raises(ValueError, match="again"):
            with local_dm().run("true", after=[gate]) as waiting:
                raise ValueError("again")
        assert waiting.cancelled() and waiting.pid is None
        gate.cancel(grace=0.5)


def test_cancel_from_the_copys_own_progress_callback_does_not_wait_for_itself(tmp_path):
    from taurus_tools import CopyCancelledError, ProgressCallback

    src = slow_tree(tmp_path / "src", files=4, mib=8)
    box = {}

    class CancelOnFirstUpdate(ProgressCallback):
        def update(self, amount=0, files=0):
            if amount and "pc" in box and not box.get("asked"):
                box["asked"] = time.monotonic()
                box["returned"] = box["pc"].cancel()
                box["took"] = time.monotonic() - box["asked"]

    pc = ParallelCopy(src, tmp_path / "dst", datamover=local_dm(), progress=CancelOnFirstUpdate(),
                      work_dir=tmp_path / "w", workers=2, shards=4, shard_by="count", check_space=False)
    box["pc"] = pc
    pc.start()
    with pytest.raises(CopyCancelledError):
        pc.wait(timeout=60)
    assert box["returned"] is True and box["took"] < 5
