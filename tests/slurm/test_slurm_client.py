"""The Slurm client: parsing sbatch/srun/squeue/scontrol answers, exit codes, following jobs
(answers from pytest-subprocess or a scripted fake client; no Slurm needed)."""

from __future__ import annotations

import getpass
import signal

import pytest

from helpers import FAKE_BIN, FakeSlurmClient, NOISE, register_sinfo, wait_until, write_stub

from taurus_tools import (
    Datamover,
    Handle,
    Launch,
    SlurmError,
    waitfor,
)
from taurus_tools.slurm.client import JobState, parse_exit_code, parse_job_id
from taurus_tools.datamover.wait import is_noise

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_slurm_env")]


# =============================================================================== parsing
class TestParsing:
    @pytest.mark.parametrize(
        "text, expected",
        [
            ("srun: job 27549105 queued and waiting for resources\n", "27549105"),
            ("srun: job 27549105 has been allocated resources\n", "27549105"),
            ("noise\nsrun: job 7 queued and waiting for resources\nsrun: job 7 has been allocated resources\n", "7"),
            ("Submitted batch job 27549105\n", "27549105"),
            ("Submitted batch job 42", "42"),
            ("cp: cannot stat 'x'\n", None),
            ("", None),
            ("123;cluster\n", None),  # bare ids only with parsable=True
        ],
    )
    def test_parse_job_id(self, text, expected):
        assert parse_job_id(text) == expected

    @pytest.mark.parametrize(
        "text, expected",
        [("123\n", "123"), ("123;cluster\n", "123"), ("  456 \n", "456"), ("error\n", None), ("12a\n", None)],
    )
    def test_parse_job_id_parsable(self, text, expected):
        assert parse_job_id(text, parsable=True) == expected

    @pytest.mark.parametrize(
        "state, code, expected",
        [
            ("COMPLETED", "0:0", 0),
            ("COMPLETED", "3:0", 3),
            ("FAILED", "1:0", 1),
            ("FAILED", "2:0", 2),
            ("FAILED", "0:9", -9),
            ("CANCELLED", "0:15", -15),
            ("CANCELLED", "0:9", -9),
            ("CANCELLED", "143:0", -15),
            ("FAILED", "143:0", 143),
            ("TIMEOUT", "0:15", -15),
            ("OUT_OF_MEMORY", "0:125", -125),
        ],
    )
    def test_parse_exit_code(self, state, code, expected):
        assert parse_exit_code(state, code) == expected

    def test_cancelled_with_zero_code_is_negative(self):
        assert parse_exit_code("CANCELLED", "0:0") < 0
        assert parse_exit_code("CANCELLED", "0:0") == -int(signal.SIGTERM)

    @pytest.mark.parametrize("state", ["FAILED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "PREEMPTED"])
    def test_unsuccessful_zero_code_is_not_success(self, state):
        assert parse_exit_code(state, "0:0") != 0

    def test_garbage_exit_code(self):
        assert parse_exit_code("FAILED", "x:y") != 0

    def test_job_state(self):
        assert JobState("1", "RUNNING").finished is False
        assert JobState("1", "PENDING").finished is False
        done = JobState("1", "COMPLETED", "3:0")
        assert done.finished and done.returncode == 3

    def test_is_noise(self):
        for line in NOISE:
            assert is_noise(line)
            assert is_noise(line + "\n")
            assert is_noise("  " + line + "  ")
        assert not is_noise("srun: job 5 queued and waiting for resources")
        assert not is_noise("srun: error: task 0: Exited with exit code 1")
        assert not is_noise("cp: cannot stat 'x': No such file or directory")
        assert not is_noise("")


class TestSlurmClient:
    def test_partitions(self, fp):
        register_sinfo(fp, "debug*\ndatamover\ndebug*\n")
        names, default = FakeSlurmClient().partitions()
        assert names == ["debug", "datamover"]
        assert default == "debug"

    def test_available(self, fp):
        fp.register([f"{FAKE_BIN}/sinfo", "-h", "-o", "%P"], returncode=1, stderr="sinfo: fatal: nope\n")
        ok, why = FakeSlurmClient().available()
        assert not ok and "nope" in why
        ok, why = FakeSlurmClient(missing=["srun"]).available()
        assert not ok and "not found" in why

    def test_job_state_from_scontrol(self, fp):
        fp.register(
            [f"{FAKE_BIN}/scontrol", "show", "job", "-o", "42"],
            stdout="JobId=42 JobName=tt-dtcp-1 UserId=me(1) JobState=FAILED Reason=NonZeroExitCode ExitCode=2:0 "
            "Command=/x/run-argv.sh\n",
        )
        st = FakeSlurmClient().job_state("42")
        assert st == JobState("42", "FAILED", "2:0")
        assert st.finished and st.returncode == 2

    def test_job_state_falls_back_to_sacct(self, fp):
        fp.register([f"{FAKE_BIN}/scontrol", "show", "job", "-o", "42"], returncode=1, stderr="Invalid job id\n")
        fp.register(
            [f"{FAKE_BIN}/sacct", "-n", "-X", "-P", "-j", "42", "-o", "State,ExitCode"],
            stdout="CANCELLED by 1000|0:0\n",
        )
        st = FakeSlurmClient().job_state("42")
        assert st is not None and st.state == "CANCELLED"
        assert st.returncode == -15

    def test_job_state_forgotten(self, fp):
        fp.register([f"{FAKE_BIN}/scontrol", "show", "job", "-o", "42"], returncode=1)
        assert FakeSlurmClient(missing=["sacct"]).job_state("42") is None

    def test_missing_client_is_slurm_error(self):
        with pytest.raises(SlurmError, match="scontrol not found"):
            FakeSlurmClient(missing=["scontrol"]).job_state("1")

    def test_ended_job_state_waits_for_a_completing_job(self):
        completing, failed = JobState("42", "COMPLETING", "4:0", "n1"), JobState("42", "FAILED", "4:0", "n1")
        client = FakeSlurmClient(states=[completing, completing, failed])
        assert client.ended_job_state("42") == failed and client.polls == 3
        client = FakeSlurmClient(states=[completing])  # never final: the last state, after the wait
        assert client.ended_job_state("42", timeout=0.3) == completing and client.polls > 1
        assert FakeSlurmClient(states=[None]).ended_job_state("42") is None

    def test_usable_nodes_from_sinfo(self, fp):
        out = "n1|idle|debug*\nn1|idle|dm\nn2|mix|dm\nn3|down*|dm\nn4|drain|dm\nn5|alloc*|dm\nn6|comp|dm\nn7|resv|dm\n"
        fp.register([f"{FAKE_BIN}/sinfo", "--noheader", "--Node", "--format=%N|%t|%P", "--partition=dm"], stdout=out)
        fp.register([f"{FAKE_BIN}/sinfo", "--noheader", "--Node", "--format=%N|%t|%P"], stdout=out)
        assert FakeSlurmClient().usable_nodes("dm") == ["n1", "n2", "n6"]
        assert FakeSlurmClient().usable_nodes() == ["n1"]  # the default partition's
        fp.register([f"{FAKE_BIN}/sinfo", "--noheader", "--Node", "--format=%N|%t|%P"], returncode=1, stderr="no\n")
        with pytest.raises(SlurmError, match="sinfo failed"):
            FakeSlurmClient().usable_nodes()

    def test_cancel_and_queued(self, fp):
        fp.register([f"{FAKE_BIN}/scancel", "5", "6"])
        fp.register([f"{FAKE_BIN}/scancel", "--user", getpass.getuser(), "--name", "tt-x"])
        fp.register([f"{FAKE_BIN}/squeue", "-h", "-o", "%i", "-j", "5,6"], stdout="6\n")
        c = FakeSlurmClient()
        c.cancel(["5", "6"])
        c.cancel(name="tt-x")
        c.cancel([])  # nothing to do: no call
        assert c.queued(["5", "6"]) == ["6"]
        assert fp.call_count([f"{FAKE_BIN}/scancel", "5", "6"]) == 1
        assert fp.call_count([f"{FAKE_BIN}/scancel", "--user", getpass.getuser(), "--name", "tt-x"]) == 1


# =============================================================================== job following
def _submit_script(tmp_path, stdout_line):
    return write_stub(tmp_path, "submit", f"echo '{stdout_line}'\n")


class TestJobFollowing:
    def test_follows_job_through_scontrol(self, fp, tmp_path):
        """fp answers scontrol PENDING, RUNNING, COMPLETED 3:0; the submission runs for real."""
        fp.allow_unregistered(True)
        scontrol = [f"{FAKE_BIN}/scontrol", "show", "job", "-o", "42"]
        for state, code in (("PENDING", "0:0"), ("RUNNING", "0:0"), ("COMPLETED", "3:0")):
            fp.register(scontrol, stdout=f"JobId=42 JobName=tt JobState={state} Reason=None ExitCode={code}\n")
        script = _submit_script(tmp_path, "Submitted batch job 42")
        h = Handle(Launch((str(script),), name="dtcp", submits=True), slurm=FakeSlurmClient())
        assert h.wait(timeout=20) == 3
        assert h.returncode == 3
        assert h.job_id == "42"
        assert fp.call_count(scontrol) == 3
        assert h.done()

    def test_site_non_blocking_follows_job(self, tmp_path):
        write_stub(tmp_path, "dtcp", 'echo "Submitted batch job 27549105"\n')
        client = FakeSlurmClient(
            states=[JobState("27549105", "PENDING"), JobState("27549105", "RUNNING"), JobState("27549105", "COMPLETED")]
        )
        dm = Datamover("site", tools_dir=tmp_path, blocking=False)
        dm._slurm = client
        h = dm.dtcp("a", "b")
        assert h.args == [str(tmp_path / "dtcp"), "a", "b"]
        assert waitfor(h, progress=False) == 0
        assert h.job_id == "27549105"
        assert client.polls == 3

    def test_parsable_submission_streams_job_output(self, tmp_path):
        out, err = tmp_path / "job.out", tmp_path / "job.err"
        out.write_text("copied 3 files\n")
        err.write_text("cp: warning\n")
        script = _submit_script(tmp_path, "4242;cluster")
        launch = Launch((str(script),), name="dtcp", submits=True, parsable=True, job_output=(out, err))
        client = FakeSlurmClient(states=[JobState("4242", "RUNNING"), JobState("4242", "FAILED", "1:0")])
        h = Handle(launch, slurm=client)
        assert h.wait(timeout=20) == 1
        stdout, stderr = h.communicate()
        assert stdout == "copied 3 files\n"  # the id itself is not the command's output
        assert "cp: warning" in stderr
        assert h.job_id == "4242"
        assert not out.exists() and not err.exists()

    def test_submission_without_job_id_fails(self, tmp_path):
        script = _submit_script(tmp_path, "hello")
        h = Handle(Launch((str(script),), submits=True), slurm=FakeSlurmClient(states=[None]))
        assert h.wait(timeout=10) == 1
        assert "no Slurm job id" in h.stderr_text

    def test_failed_submission_keeps_its_code(self, tmp_path):
        script = write_stub(tmp_path, "submit", "echo 'sbatch: error: invalid account' >&2\nexit 1\n")
        client = FakeSlurmClient(states=[JobState("1", "COMPLETED")])
        h = Handle(Launch((str(script),), submits=True), slurm=client)
        assert h.wait(timeout=10) == 1
        assert client.polls == 0
        assert "invalid account" in h.stderr_text

    def test_forgotten_job_is_an_error(self, tmp_path):
        script = _submit_script(tmp_path, "Submitted batch job 5")
        h = Handle(Launch((str(script),), submits=True), slurm=FakeSlurmClient(states=[None]))
        assert h.wait(timeout=20) == 255
        assert "no longer knows job 5" in h.stderr_text

    def test_cancel_submitted_job_scancels(self, tmp_path):
        script = _submit_script(tmp_path, "Submitted batch job 77")
        client = FakeSlurmClient(states=[JobState("77", "RUNNING")])
        h = Handle(Launch((str(script),), submits=True, job_name="tt-dtcp-x"), slurm=client)
        wait_until(lambda: client.polls >= 1, timeout=10, what="the first poll")
        assert h.poll() is None
        assert h.cancel(timeout=10) == -int(signal.SIGTERM)
        assert client.cancelled == [["77"]]
        assert h.returncode < 0

    def test_srun_job_id_from_stderr_and_cancel(self, tmp_path):
        script = write_stub(
            tmp_path,
            "fake-srun",
            'echo "srun: job 31 queued and waiting for resources" >&2\n'
            'echo "srun: job 31 has been allocated resources" >&2\n'
            "exec sleep 30\n",
        )
        client = FakeSlurmClient(states=[JobState("31", "RUNNING")])
        h = Handle(Launch((str(script),), name="dtcp", job_name="tt-dtcp-y"), slurm=client)
        wait_until(lambda: h.job_id == "31", timeout=10, what="the job id from stderr")
        assert h.cancel(timeout=10) < 0
        assert client.cancelled == [["31"]]

    def test_job_polling_error_does_not_lose_job(self, tmp_path, monkeypatch):
        script = _submit_script(tmp_path, "Submitted batch job 8")
        client = FakeSlurmClient(states=[JobState("8", "COMPLETED", "0:0")])
        calls = []
        original = client.job_state

        def flaky(job_id):
            calls.append(job_id)
            if len(calls) == 1:
                raise SlurmError("scontrol did not answer")
            return original(job_id)

        monkeypatch.setattr(client, "job_state", flaky)
        h = Handle(Launch((str(script),), submits=True), slurm=client)
        assert h.wait(timeout=10) == 0
        assert calls == ["8", "8"]
