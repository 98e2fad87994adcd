"""The shared Slurm job watcher: one squeue call per interval for every job a client follows.

Four layers: the watcher's logic against a scripted client (no processes); the client's
``job_states`` (squeue) against ``fp``; handles following jobs through the watcher; and
30 real non-blocking jobs on the ``slurm_cluster`` fixture, whose Slurm calls must not
grow with their number.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Dict, List, Optional, Sequence

import pytest
from helpers import FAKE_BIN, FakeSlurmClient, wait_for, wait_until, write_stub

from taurus_tools import Datamover, waitfor
from taurus_tools.errors import SlurmError
from taurus_tools.process.launch import Launch
from taurus_tools.process.handle import Handle
from taurus_tools.slurm.client import JobState, SlurmClient
from taurus_tools.slurm.watcher import JOB_POLL, LOST_AFTER, JobWatcher

#: Fast enough for tests, and the same shape as the real schedule.
FAST = (0.01, 1.5, 0.05)


class ScriptedSlurm:
    """A client whose squeue and scontrol answers are scripted, and which records its calls.

    ``listed[job]`` is the sequence of states squeue shows for a job, one per round (the
    last one repeats; a job without one is not listed); ``looked_up[job]`` the answers of
    ``job_state`` (scontrol/sacct), the last one repeating.  ``squeue_failures`` rounds
    fail first (the controller does not answer); ``no_squeue`` makes squeue unusable.
    """

    def __init__(self) -> None:
        self.listed: Dict[str, List[JobState]] = {}
        self.looked_up: Dict[str, List[Optional[JobState]]] = {}
        self.squeue_failures = 0
        self.no_squeue = False
        self.squeue_calls: List[List[str]] = []
        self.squeue_times: List[float] = []
        self.lookups: List[str] = []
        self._lock = threading.Lock()

    def job_states(self, job_ids: Sequence[str]) -> Optional[Dict[str, JobState]]:
        with self._lock:
            self.squeue_calls.append(list(job_ids))
            self.squeue_times.append(time.monotonic())
            if self.no_squeue:
                return None
            if self.squeue_failures:
                self.squeue_failures -= 1
                raise SlurmError("squeue failed (exit 1: slurm_load_jobs error: Unable to contact slurm controller)")
            out = {}
            for job in job_ids:
                states = self.listed.get(job)
                if states:
                    out[job] = states.pop(0) if len(states) > 1 else states[0]
            return out

    def job_state(self, job_id: str) -> Optional[JobState]:
        with self._lock:
            self.lookups.append(job_id)
            answers = self.looked_up.get(job_id, [None])
            return answers.pop(0) if len(answers) > 1 else answers[0]


@pytest.fixture
def slurm():
    return ScriptedSlurm()


@pytest.fixture
def watcher(slurm):
    w = JobWatcher(slurm, poll=FAST)
    yield w
    w.close()


def run(job: str, *states: str, code: str = "0:0") -> List[JobState]:
    """States squeue shows for ``job``, round by round; the last one with ``code``."""
    return [JobState(job, s) for s in states[:-1]] + [JobState(job, states[-1], code)]


# ---------------------------------------------------------------- the watcher's logic
class TestWatcher:
    def test_job_finishes_with_its_exit_code(self, slurm, watcher):
        slurm.listed["7"] = run("7", "PENDING", "RUNNING", "COMPLETING", "COMPLETED", code="3:0")
        wake = threading.Event()
        watch = watcher.watch("7", wake=wake)
        assert watch.wait(10)
        assert wake.is_set()
        assert watch.state == JobState("7", "COMPLETED", "3:0") and watch.state.returncode == 3
        assert not watch.lost and not watch.closed
        assert slurm.lookups == []  # squeue listed it all along: no scontrol/sacct
        assert len(slurm.squeue_calls) == 4
        wait_until(lambda: not watcher.running, 5, what="the thread to stop with no job left")

    def test_exit_codes_are_parse_exit_codes(self, slurm, watcher):
        cases = {"1": ("FAILED", "0:9", -9), "2": ("CANCELLED", "0:15", -15), "3": ("TIMEOUT", "0:0", 1)}
        for job, (state, code, _) in cases.items():
            slurm.listed[job] = [JobState(job, state, code)]
        watches = {job: watcher.watch(job) for job in cases}
        for job, (_, _, rc) in cases.items():
            assert watches[job].wait(10)
            assert watches[job].state.returncode == rc

    def test_one_squeue_call_per_round_for_all_jobs(self, slurm, watcher):
        jobs = [str(n) for n in range(100, 140)]
        for n, job in enumerate(jobs):
            slurm.listed[job] = [JobState(job, "RUNNING")] * (2 + n % 5) + [JobState(job, "COMPLETED", f"{n % 2}:0")]
        watches = [watcher.watch(job) for job in jobs]
        for n, watch in enumerate(watches):
            assert watch.wait(20), watch
            assert watch.state.returncode == n % 2
        assert slurm.lookups == []
        # Each round asks about every job still followed, in one call; the last ones
        # are asked about until they end (so at most one round per state change).
        assert max(len(call) for call in slurm.squeue_calls) == len(jobs)
        assert len(slurm.squeue_calls) <= 12  # 7 states, and a few rounds while they registered
        assert all(call == sorted(call, key=int) for call in slurm.squeue_calls)

    def test_job_that_left_squeue_is_looked_up(self, slurm, watcher):
        # squeue no longer lists it (the controller purged it): scontrol/sacct tell.
        slurm.looked_up["9"] = [JobState("9", "COMPLETED", "0:0")]
        watch = watcher.watch("9")
        assert watch.wait(10)
        assert watch.state.returncode == 0
        assert slurm.lookups == ["9"]  # once

    def test_job_unknown_everywhere_is_lost(self, slurm, watcher):
        watch = watcher.watch("5")
        assert watch.wait(10)
        assert watch.lost and watch.state is None
        assert slurm.lookups == ["5"] * LOST_AFTER

    def test_transient_squeue_failure_is_retried_not_a_failure(self, slurm, watcher):
        slurm.squeue_failures = LOST_AFTER + 2  # more failures than a lost job needs
        slurm.listed["11"] = [JobState("11", "COMPLETED", "0:0")]
        watch = watcher.watch("11")
        assert watch.wait(10)
        assert not watch.lost and watch.state.returncode == 0
        assert watcher.failures == LOST_AFTER + 2
        assert len(slurm.squeue_calls) == LOST_AFTER + 3
        assert slurm.lookups == []  # a failed squeue says nothing about the job

    def test_lookup_failure_is_retried(self, slurm, watcher):
        calls = []

        def flaky(job_id):
            calls.append(job_id)
            if len(calls) == 1:
                raise SlurmError("scontrol did not answer")
            return JobState(job_id, "COMPLETED", "4:0")

        slurm.job_state = flaky
        watch = watcher.watch("8")
        assert watch.wait(10) and watch.state.returncode == 4
        assert calls == ["8", "8"]

    def test_without_squeue_each_job_is_looked_up(self, slurm, watcher):
        slurm.no_squeue = True
        slurm.looked_up["3"] = [JobState("3", "RUNNING"), JobState("3", "COMPLETED", "2:0")]
        watch = watcher.watch("3")
        assert watch.wait(10) and watch.state.returncode == 2
        assert slurm.lookups == ["3", "3"]

    def test_two_watches_of_one_job_share_its_lookup(self, slurm, watcher):
        slurm.listed["4"] = run("4", "RUNNING", "RUNNING", "COMPLETED")
        a, b = watcher.watch("4"), watcher.watch("4")
        assert a.wait(10) and b.wait(10)
        assert a.state == b.state and a.state.state == "COMPLETED"
        assert all(call == ["4"] for call in slurm.squeue_calls)

    def test_forget_stops_following_and_the_thread(self, slurm, watcher):
        slurm.listed["6"] = [JobState("6", "RUNNING")]
        watch = watcher.watch("6")
        wait_until(lambda: slurm.squeue_calls, 5, what="a first round")
        watcher.forget(watch)
        wait_until(lambda: not watcher.running, 5, what="the thread to stop")
        assert not watch.done() and watcher.following() == []
        rounds = len(slurm.squeue_calls)
        time.sleep(0.2)
        assert len(slurm.squeue_calls) == rounds
        # A new job starts it again.
        slurm.listed["12"] = [JobState("12", "COMPLETED")]
        assert watcher.watch("12").wait(10)

    def test_close_ends_open_watches(self, slurm):
        slurm.listed["6"] = [JobState("6", "RUNNING")]
        watcher = JobWatcher(slurm, poll=FAST)
        wake = threading.Event()
        watch = watcher.watch("6", wake=wake)
        wait_until(lambda: slurm.squeue_calls, 5, what="a first round")
        watcher.close()
        assert watch.done() and watch.closed and watch.state is None and wake.is_set()
        assert not watcher.running
        with pytest.raises(SlurmError, match="closed"):
            watcher.watch("7")

    def test_a_lone_job_is_followed_on_the_old_schedule(self, slurm):
        first, factor, longest = 0.05, 2.0, 0.2
        watcher = JobWatcher(slurm, poll=(first, factor, longest))
        slurm.listed["1"] = [JobState("1", "RUNNING")] * 6 + [JobState("1", "COMPLETED")]
        try:
            assert watcher.watch("1").wait(10)
        finally:
            watcher.close()
        gaps = [b - a for a, b in zip(slurm.squeue_times, slurm.squeue_times[1:])]
        expected = [min(first * factor**k, longest) for k in range(len(gaps))]
        assert len(gaps) == 6
        assert all(gap >= want - 0.005 for gap, want in zip(gaps, expected)), (gaps, expected)
        assert sum(gaps) <= sum(expected) + 2.0, (gaps, expected)  # and not much slower

    def test_many_jobs_space_the_rounds(self, slurm):
        # Registering job after job restarts the schedule, but with n jobs two rounds
        # stay at least min(longest, n x first) apart.
        first, longest = 0.02, 0.3
        watcher = JobWatcher(slurm, poll=(first, 1.5, longest))
        jobs = [str(n) for n in range(1, 31)]
        for job in jobs:
            slurm.listed[job] = [JobState(job, "RUNNING")]
        try:
            for job in jobs:
                watcher.watch(job)
                time.sleep(0.01)
            wait_until(lambda: len(slurm.squeue_calls) >= 8, 10, what="rounds")
        finally:
            watcher.close()
        for (ids_a, t_a), t_b in zip(zip(slurm.squeue_calls, slurm.squeue_times), slurm.squeue_times[1:]):
            floor = min(longest, first * len(ids_a))
            assert t_b - t_a >= floor - 0.005, (len(ids_a), t_b - t_a)

    def test_rejects_a_bad_schedule(self, slurm):
        with pytest.raises(ValueError, match="poll"):
            JobWatcher(slurm, poll=(0, 1.5, 5))
        with pytest.raises(ValueError, match="lost_after"):
            JobWatcher(slurm, lost_after=0)

    def test_default_schedule_is_the_handles_old_one(self):
        assert JOB_POLL == (0.1, 1.5, 5.0) and LOST_AFTER == 5


# ---------------------------------------------------------------- SlurmClient.job_states
SQUEUE = [
    f"{FAKE_BIN}/squeue",
    "--noheader",
    "--states=all",
    "--jobs=5,6,7,8",
    "--Format=JobID:|,State:|,exit_code:",
]


class TestJobStates:
    def test_one_call_reads_state_and_exit_status(self, fp):
        fp.register(SQUEUE, stdout="5|RUNNING|0\n6|FAILED|768\n7|CANCELLED|15\n8|FAILED|9\n")
        client = FakeSlurmClient()
        states = client.job_states(["5", "6", "7", "8"])
        assert states == {
            "5": JobState("5", "RUNNING", "0:0"),
            "6": JobState("6", "FAILED", "3:0"),
            "7": JobState("7", "CANCELLED", "0:15"),
            "8": JobState("8", "FAILED", "0:9"),
        }
        assert [states[j].returncode for j in ("6", "7", "8")] == [3, -15, -9]
        assert client.calls == {"squeue": 1}

    def test_missing_jobs_are_left_out(self, fp):
        fp.register(SQUEUE, stdout="6|COMPLETED|0\n99|RUNNING|0\n")
        assert FakeSlurmClient().job_states(["5", "6", "7", "8"]) == {"6": JobState("6", "COMPLETED", "0:0")}

    def test_one_unknown_job_is_not_an_error(self, fp):
        fp.register(SQUEUE[:3] + ["--jobs=5"] + SQUEUE[4:], returncode=1,
                    stderr="slurm_load_jobs error: Invalid job id specified\n")
        assert FakeSlurmClient().job_states(["5"]) == {}

    def test_controller_down_raises(self, fp):
        fp.register(SQUEUE, returncode=1, stderr="slurm_load_jobs error: Unable to contact slurm controller\n")
        with pytest.raises(SlurmError, match="Unable to contact"):
            FakeSlurmClient().job_states(["5", "6", "7", "8"])

    def test_without_squeue_it_cannot_tell(self):
        assert FakeSlurmClient(missing=["squeue"]).job_states(["5"]) is None
        assert FakeSlurmClient().job_states([]) == {}

    def test_calls_are_counted_by_program(self, fp):
        fp.register([f"{FAKE_BIN}/sinfo", "-h", "-o", "%P"], stdout="debug*\n", occurrences=2)
        fp.register([f"{FAKE_BIN}/scontrol", "show", "job", "-o", "1"], stdout="JobId=1 JobState=RUNNING\n")
        client = FakeSlurmClient()
        client.partitions()
        client.partitions()
        client.job_state("1")
        assert client.calls == {"sinfo": 2, "scontrol": 1}

    def test_client_owns_one_watcher(self):
        client = SlurmClient()
        watcher = client.watcher
        assert client.watcher is watcher and SlurmClient().watcher is not watcher
        client.close()
        assert client.watcher is not watcher


# ---------------------------------------------------------------- handles follow through it
class ListingClient(FakeSlurmClient):
    """A FakeSlurmClient whose squeue and scontrol answers come from a :class:`ScriptedSlurm`."""

    def __init__(self) -> None:
        super().__init__()
        self.script = ScriptedSlurm()

    def job_states(self, job_ids):
        return self.script.job_states(job_ids)

    def job_state(self, job_id):
        return self.script.job_state(job_id)


def _submit(tmp_path, job):
    return write_stub(tmp_path, f"submit-{job}", f"echo 'Submitted batch job {job}'\n")


class TestHandles:
    def test_handles_of_one_client_share_squeue(self, tmp_path):
        client = ListingClient()
        ids = ["21", "22", "23"]
        codes = {"21": "0:0", "22": "3:0", "23": "0:0"}
        for job in ids:
            client.script.listed[job] = [JobState(job, "RUNNING")] * 3 + [JobState(job, "COMPLETED", codes[job])]
        handles = [Handle(Launch((str(_submit(tmp_path, job)),), submits=True), slurm=client) for job in ids]
        assert [h.wait(timeout=20) for h in handles] == [0, 3, 0]
        calls = client.script.squeue_calls
        assert max(len(call) for call in calls) == 3  # one call asked about all three
        assert len(calls) <= 6
        assert client.script.lookups == []  # no scontrol while squeue lists them

    def test_cancel_while_following_stops_at_once(self, tmp_path):
        client = FakeSlurmClient(states=[JobState("77", "RUNNING")])
        h = Handle(Launch((str(_submit(tmp_path, 77)),), submits=True, job_name="tt-x"), slurm=client)
        wait_until(lambda: client.watcher.following() == ["77"], 10, what="the job followed")
        started = time.monotonic()
        assert h.cancel(timeout=10) == -int(signal.SIGTERM)
        assert time.monotonic() - started < 5
        assert client.cancelled == [["77"]]
        wait_until(lambda: not client.watcher.running, 5, what="the watcher to stop")
        assert client.watcher.following() == []

    def test_closed_watcher_ends_the_handle(self, tmp_path):
        client = FakeSlurmClient(states=[JobState("78", "RUNNING")])
        h = Handle(Launch((str(_submit(tmp_path, 78)),), submits=True), slurm=client)
        wait_until(lambda: client.watcher.following() == ["78"], 10, what="the job followed")
        client.close()
        assert h.wait(timeout=10) == 255
        assert "stopped following Slurm job 78" in h.stderr_text


# ---------------------------------------------------------------- the real cluster
@pytest.mark.slurm
def test_thirty_jobs_share_one_squeue_per_interval(slurm_cluster, tmp_path):
    """30 non-blocking jobs (exit 0 and 3) followed with one squeue call per interval."""
    dm = Datamover("slurm", job_log_dir=tmp_path / "jobs")
    client = SlurmClient()
    dm._slurm = client  # the handles' client, whose calls are counted
    expected = [3 if n % 3 == 0 else 0 for n in range(30)]
    started = time.monotonic()
    handles = [
        dm.start(dm.backend.launch_program("sh", ("sh", "-c", f"sleep 1; exit {code}"), blocking=False))
        for code in expected
    ]
    assert waitfor(handles, timeout=180, progress=False, show_stderr=False) == expected
    elapsed = time.monotonic() - started
    calls = client.calls
    # Only squeue: every job was still listed (finished ones for MinJobAge), so none
    # needed scontrol; and never more than about one call a second, fewer than jobs.
    assert set(calls) == {"squeue"}, calls
    assert calls["squeue"] <= elapsed + 5, (calls, elapsed)
    assert calls["squeue"] < len(handles), (calls, elapsed)
    assert all(h.job_id for h in handles) and len({h.job_id for h in handles}) == len(handles)
    wait_for(lambda: client.watcher.running, lambda running: not running, timeout=10, what="the watcher to stop")
