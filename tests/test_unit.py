"""Fast tests: argv building, parsing, errors, validation, job following and the CLI.

Nothing here needs Slurm: Slurm client commands are answered by pytest-subprocess
(``fp``) or by a scripted :class:`FakeSlurmClient`; the few real processes are tiny
shell scripts.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import pickle
import signal
import subprocess
import threading

import pytest

from helpers import NOISE, FAKE_BIN, FakeSlurmClient, prepend_path, write_stub

import taurus_tools
from taurus_tools import (
    BackendUnavailableError,
    CommandError,
    CommandNotFoundError,
    CommandTimeoutError,
    ConfigurationError,
    Datamover,
    Handle,
    Launch,
    LocalBackend,
    SiteBackend,
    SlurmBackend,
    SlurmError,
    TaurusToolsError,
    select_backend,
    waitfor,
)
from taurus_tools._backends import (
    MANAGEMENT_COMMANDS,
    SITE_LS_AS_IN_A_PIPE,
    TRANSFER_COMMANDS,
    find_site_tools,
    find_tools,
    slurm_time,
    srun_argv,
)
from taurus_tools._cli import main, split_pass_through
from taurus_tools._slurm import JobState, parse_exit_code, parse_job_id
from taurus_tools._wait import is_noise

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_slurm_env")]

ALL_TOOLS = {c: f"/site/bin/{c}" for c in (*TRANSFER_COMMANDS, *MANAGEMENT_COMMANDS)}


# =============================================================================== site backend
class TestSiteBackend:
    def test_blocking_transfer_gets_blocking_flag(self):
        b = SiteBackend(ALL_TOOLS)
        launch = b.launch("dtcp", ["-r", "a", "b"], blocking=True)
        assert launch.argv == ("/site/bin/dtcp", "--blocking", "-r", "a", "b")
        assert launch.submits is False
        assert launch.name == "dtcp"

    @pytest.mark.parametrize("command", ["dtcp", "dtls"])
    def test_blocking_last_like_taurus_datamover(self, command):
        b = SiteBackend(ALL_TOOLS, account="p_proj", blocking_last=True)
        ls = SITE_LS_AS_IN_A_PIPE if command == "dtls" else ()
        launch = b.launch(command, ["-r", "--", "-a", "b"], blocking=True)
        assert launch.argv == (f"/site/bin/{command}", "--account=p_proj", *ls, "-r", "--", "-a", "b", "--blocking")
        assert launch.submits is False
        launch = b.launch(command, ["a", "b"], blocking=False)
        assert launch.argv == (f"/site/bin/{command}", "--account=p_proj", *ls, "a", "b")
        assert launch.submits is (command != "dtls")

    def test_non_blocking_transfer_submits_without_flag(self):
        b = SiteBackend(ALL_TOOLS)
        launch = b.launch("dtcp", ["a", "b"], blocking=False)
        assert launch.argv == ("/site/bin/dtcp", "a", "b")
        assert "--blocking" not in launch.argv
        assert launch.submits is True

    @pytest.mark.parametrize("blocking", [True, False])
    def test_dtls_never_gets_blocking_and_never_submits(self, blocking):
        launch = SiteBackend(ALL_TOOLS).launch("dtls", ["-l", "/x"], blocking=blocking)
        assert launch.argv == ("/site/bin/dtls", *SITE_LS_AS_IN_A_PIPE, "-l", "/x")  # the caller's -l wins
        assert launch.submits is False

    def test_account_and_time_before_tool_arguments(self):
        b = SiteBackend(ALL_TOOLS, account="p_proj", time="1-00:00:00")
        launch = b.launch("dtrsync", ["-av", "src/", "dst"], blocking=True)
        assert launch.argv == (
            "/site/bin/dtrsync",
            "--blocking",
            "--account=p_proj",
            "--time=1-00:00:00",
            "-av",
            "src/",
            "dst",
        )
        launch = b.launch("dtls", ["/x"], blocking=False)
        assert launch.argv == ("/site/bin/dtls", "--account=p_proj", "--time=1-00:00:00", *SITE_LS_AS_IN_A_PIPE, "/x")

    @pytest.mark.parametrize("command", MANAGEMENT_COMMANDS)
    @pytest.mark.parametrize("blocking", [True, False])
    def test_management_commands_pass_through(self, command, blocking):
        b = SiteBackend(ALL_TOOLS, account="p_proj", time="90")
        launch = b.launch(command, ["123", "--long"], blocking=blocking)
        assert launch.argv == (f"/site/bin/{command}", "123", "--long")
        assert launch.submits is False

    def test_missing_tool_names_available_ones(self):
        b = SiteBackend({"dtcp": "/s/dtcp", "dtls": "/s/dtls"})
        assert b.commands() == ("dtcp", "dtls")
        with pytest.raises(CommandNotFoundError) as info:
            b.launch("dtrsync", ["a", "b"], blocking=True)
        assert info.value.command == "dtrsync"
        assert info.value.available == ("dtcp", "dtls")
        assert "dtcp, dtls" in str(info.value)

    def test_programs_run_where_we_are(self):
        launch = SiteBackend(ALL_TOOLS).launch_program("rclone", ["rclone", "ls", "r:"], blocking=False)
        assert launch.argv == ("rclone", "ls", "r:")
        assert launch.submits is False

    def test_datamover_launch_with_site_backend_object(self):
        dm = Datamover(SiteBackend(ALL_TOOLS), blocking=False)
        assert dm.launch("dtmv", "a", "b").argv == ("/site/bin/dtmv", "a", "b")
        assert dm.launch("dtmv", "a", "b").submits
        blocking = dm.launch("dtmv", "a", "b", blocking=True)
        assert blocking.argv == ("/site/bin/dtmv", "--blocking", "a", "b")
        assert not blocking.submits

    def test_datamover_site_from_tools_dir(self, tmp_path):
        for cmd in ("dtcp", "dtls", "dtinfo"):
            write_stub(tmp_path, cmd, "exit 0\n")
        (tmp_path / "dtmv").write_text("not executable")
        dm = Datamover("site", tools_dir=tmp_path, account="p_x", time=90)
        assert dm.backend.name == "site"
        assert str(tmp_path) in dm.backend.reason
        assert dm.commands() == ("dtcp", "dtls", "dtinfo")
        assert dm.launch("dtcp", "a", "b").argv == (
            str(tmp_path / "dtcp"),
            "--blocking",
            "--account=p_x",
            "--time=90",
            "a",
            "b",
        )
        with pytest.raises(CommandNotFoundError):
            dm.launch("dtmv", "a", "b")

    def test_auto_prefers_site_tools_on_path(self, tmp_path, monkeypatch):
        write_stub(tmp_path, "dtcp", "exit 0\n")
        monkeypatch.setenv("PATH", str(tmp_path))
        assert Datamover().backend.name == "site"

    def test_find_site_tools_order_and_errors(self, tmp_path):
        env_dir = tmp_path / "env"
        write_stub(env_dir, "dtls", "exit 0\n")
        path_dir = tmp_path / "path"
        write_stub(path_dir, "dtcp", "exit 0\n")
        tools, searched = find_site_tools(None, {"TAURUS_TOOLS_DT_DIR": str(env_dir), "PATH": str(path_dir)})
        assert tools == {"dtls": str(env_dir / "dtls")}
        assert searched == [str(env_dir)]
        tools, searched = find_site_tools(None, {"PATH": str(path_dir)})
        assert tools == {"dtcp": str(path_dir / "dtcp")}
        with pytest.raises(ConfigurationError, match=r"\$TAURUS_TOOLS_DT_DIR"):
            find_site_tools(None, {"TAURUS_TOOLS_DT_DIR": str(tmp_path / "nope")})
        empty = tmp_path / "empty"
        empty.mkdir()
        with pytest.raises(ConfigurationError, match="none of the datamover tools"):
            find_site_tools(empty, {})

    def test_find_tools_skips_places_that_are_not_enough(self, tmp_path):
        # one helper finds the dt* and the ws_* tools: an implicit place without enough of
        # them is passed over (PATH with ws_list but no ws_allocate), a named one is an error
        on_path, usr = tmp_path / "path", tmp_path / "usr"
        write_stub(on_path, "ws_list", "exit 0\n")
        write_stub(usr, "ws_allocate", "exit 0\n")
        write_stub(usr, "ws_list", "exit 0\n")
        places = [(None, "PATH", False), (usr, "usr", False)]
        enough = lambda tools: "ws_allocate" in tools  # noqa: E731
        found, searched = find_tools(["ws_allocate", "ws_list"], places, enough=enough, lacking="x",
                                     env={"PATH": str(on_path)})
        assert found == {"ws_allocate": str(usr / "ws_allocate"), "ws_list": str(usr / "ws_list")}
        assert searched == ["PATH", "usr"]
        assert find_tools(["ws_allocate"], places[:1], enough=enough, lacking="x", env={"PATH": str(on_path)}) == (
            {},
            ["PATH"],
        )
        with pytest.raises(ConfigurationError, match="tools_dir=.* holds no ws_allocate"):
            find_tools(["ws_allocate"], [(on_path, "tools_dir", True)], enough=enough, lacking="no ws_allocate")


# =============================================================================== slurm backend
def _register_sinfo(fp, stdout="debug*\ndatamover\n"):
    fp.register([f"{FAKE_BIN}/sinfo", "-h", "-o", "%P"], stdout=stdout)


@pytest.fixture
def slurm_backend(fp, tmp_path):
    _register_sinfo(fp)
    return SlurmBackend(client=FakeSlurmClient(), job_log_dir=tmp_path / "jobs", account="p_a", time="90")


class TestSlurmBackend:
    def test_partition_found(self, slurm_backend, fp):
        assert slurm_backend.partition == "datamover"
        assert fp.call_count([f"{FAKE_BIN}/sinfo", "-h", "-o", "%P"]) == 1

    def test_blocking_uses_srun(self, slurm_backend):
        launch = slurm_backend.launch("dtcp", ["-r", "a b", "c"], blocking=True)
        argv = list(launch.argv)
        assert argv[0] == f"{FAKE_BIN}/srun"
        job_name = launch.job_name
        assert job_name and job_name.startswith("tt-dtcp-")
        assert argv == [
            f"{FAKE_BIN}/srun",
            "--partition=datamover",
            "--account=p_a",
            "--time=90",
            f"--job-name={job_name}",
            "--nodes=1",
            "--ntasks=1",
            "cp",
            "-r",
            "a b",
            "c",
        ]
        assert launch.submits is False
        # job names are unique per call (they are used to cancel)
        assert slurm_backend.launch("dtcp", ["a", "b"], blocking=True).job_name != job_name

    def test_non_blocking_uses_sbatch_parsable_wrapper(self, slurm_backend, tmp_path, fp):
        fp.allow_unregistered(True)  # the wrapper script is run for real below
        launch = slurm_backend.launch("dtmv", ["a", "-weird name"], blocking=False)
        jobs = tmp_path / "jobs"
        name = launch.job_name
        wrapper = jobs / "run-argv.sh"
        assert list(launch.argv) == [
            f"{FAKE_BIN}/sbatch",
            "--parsable",
            "--partition=datamover",
            "--account=p_a",
            "--time=90",
            f"--job-name={name}",
            "--nodes=1",
            "--ntasks=1",
            f"--output={jobs / (name + '.out')}",
            f"--error={jobs / (name + '.err')}",
            str(wrapper),
            "mv",
            "a",
            "-weird name",
        ]
        assert launch.submits and launch.parsable
        assert launch.job_output == (jobs / f"{name}.out", jobs / f"{name}.err")
        assert os.access(wrapper, os.X_OK)
        # the wrapper runs its arguments untouched
        res = subprocess.run([str(wrapper), "printf", "<%s>", "a b", "$HOME", "*"], capture_output=True, text=True)
        assert res.stdout == "<a b><$HOME><*>"

    def test_missing_partition_falls_back_with_warning(self, fp, tmp_path, caplog):
        _register_sinfo(fp, "debug*\nbatch\n")
        with caplog.at_level(logging.WARNING, logger="taurus_tools"):
            b = SlurmBackend(partition="datamover", client=FakeSlurmClient(), job_log_dir=tmp_path)
        assert b.partition is None
        assert b.requested_partition == "datamover"
        warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert "'datamover' does not exist" in warning and "debug" in warning
        argv = b.launch("dtcp", ["a", "b"], blocking=True).argv
        assert not any(a.startswith("--partition") for a in argv)
        argv = b.launch("dtcp", ["a", "b"], blocking=False).argv
        assert not any(a.startswith("--partition") for a in argv)

    def test_partition_none_asks_nothing(self, fp, tmp_path):
        b = SlurmBackend(partition=None, client=FakeSlurmClient(), job_log_dir=tmp_path)
        assert b.partition is None
        assert fp.call_count([f"{FAKE_BIN}/sinfo", "-h", "-o", "%P"]) == 0

    def test_sinfo_failure_is_slurm_error(self, fp, tmp_path):
        fp.register([f"{FAKE_BIN}/sinfo", "-h", "-o", "%P"], returncode=1, stderr="sinfo: fatal: no config\n")
        with pytest.raises(SlurmError, match="no config"):
            SlurmBackend(client=FakeSlurmClient(), job_log_dir=tmp_path)

    def test_management_commands(self, slurm_backend):
        assert slurm_backend.launch("dtinfo", ["-N"], blocking=True).argv == (
            f"{FAKE_BIN}/sinfo",
            "--partition=datamover",
            "-N",
        )
        assert slurm_backend.launch("dtqueue", [], blocking=False).argv == (
            f"{FAKE_BIN}/squeue",
            f"--user={getpass.getuser()}",
            "--partition=datamover",
        )
        launch = slurm_backend.launch("dtcancel", ["123", "124"], blocking=False)
        assert launch.argv == (f"{FAKE_BIN}/scancel", "123", "124")
        assert not launch.submits
        with pytest.raises(CommandNotFoundError):
            slurm_backend.launch("dtnope", [], blocking=True)

    def test_missing_srun_raises(self, fp, tmp_path):
        _register_sinfo(fp)
        b = SlurmBackend(client=FakeSlurmClient(missing=["srun"]), job_log_dir=tmp_path)
        with pytest.raises(CommandNotFoundError, match="srun"):
            b.launch("dtcp", ["a", "b"], blocking=True)

    def test_datamover_launch_with_slurm_backend(self, slurm_backend):
        dm = Datamover(slurm_backend, blocking=False)
        launch = dm.launch("dtrsync", "-a", "x/", "y")
        assert launch.argv[0] == f"{FAKE_BIN}/sbatch"
        assert launch.argv[-3:] == ("rsync", "-a", "x/", "y")[-3:]
        assert launch.argv[-4] == "rsync"
        assert dm.launch("dtrsync", "x", "y", blocking=True).argv[0] == f"{FAKE_BIN}/srun"

    def test_srun_argv(self):
        assert srun_argv(["hostname"]) == ["srun", "hostname"]
        assert srun_argv(
            ["a", "b"], srun="/x/srun", partition="p", nodes=2, ntasks=4, exclude=["n1", "n2"], extra=["--exclusive"]
        ) == ["/x/srun", "--partition=p", "--nodes=2", "--ntasks=4", "--exclude=n1,n2", "--exclusive", "a", "b"]
        assert srun_argv(["x"], exclude="n3") == ["srun", "--exclude=n3", "x"]


# =============================================================================== local backend
class TestLocalBackend:
    def test_bare_tool_name(self):
        b = LocalBackend()
        launch = b.launch("dtcp", ["-r", "a", "b"], blocking=True)
        assert launch.argv == ("cp", "-r", "a", "b")
        assert launch.submits is False and launch.job_name is None
        assert b.launch("dtls", [], blocking=False).argv == ("ls",)
        assert "dtcp" in b.commands() and "dtls" in b.commands()
        assert not set(MANAGEMENT_COMMANDS) & set(b.commands())

    def test_datamover_launch_local(self):
        dm = Datamover("local")
        assert dm.backend.name == "local"
        assert dm.launch("dtrm", "-rf", "x").argv == ("rm", "-rf", "x")
        assert dm.launch("dtmv", "a", "b", blocking=False).argv == ("mv", "a", "b")

    def test_missing_tool_names_available_commands(self, tmp_path):
        write_stub(tmp_path, "cp", "exit 0\n")
        write_stub(tmp_path, "ls", "exit 0\n")
        b = LocalBackend(env={"PATH": str(tmp_path)})
        assert b.commands() == ("dtcp", "dtls")
        with pytest.raises(CommandNotFoundError) as info:
            b.launch("dtrsync", ["a", "b"], blocking=True)
        msg = str(info.value)
        assert "dtrsync" in msg and "'rsync' is not installed" in msg and "dtcp, dtls" in msg
        assert info.value.available == ("dtcp", "dtls")

    def test_management_commands_unavailable(self):
        with pytest.raises(CommandNotFoundError) as info:
            LocalBackend().launch("dtinfo", [], blocking=True)
        assert "dtcp" in str(info.value) and "dtinfo" in str(info.value)


# =============================================================================== select_backend
class TestSelectBackend:
    def test_auto_without_tools_or_slurm_is_local(self, tmp_path):
        b = select_backend("auto", env={"PATH": str(tmp_path)})
        assert isinstance(b, LocalBackend)
        assert "no Slurm" in b.reason and "no dt* tools" in b.reason

    def test_env_override(self, tmp_path):
        b = select_backend("auto", env={"PATH": str(tmp_path), "TAURUS_TOOLS_BACKEND": "local"})
        assert b.name == "local" and "TAURUS_TOOLS_BACKEND" in b.reason
        with pytest.raises(ConfigurationError, match=r"TAURUS_TOOLS_BACKEND"):
            select_backend("auto", env={"TAURUS_TOOLS_BACKEND": "cloud"})

    def test_slurm_unavailable(self, tmp_path):
        with pytest.raises(BackendUnavailableError, match="Slurm is not usable"):
            select_backend("slurm", env={"PATH": str(tmp_path)})

    def test_slurm_when_sinfo_answers(self, fp, tmp_path):
        # select_backend builds its own client; make srun/sinfo "exist" and answer.
        for name in ("srun", "sinfo"):
            write_stub(tmp_path, name, "exit 99\n")
        sinfo = [str(tmp_path / "sinfo"), "-h", "-o", "%P"]
        fp.register(sinfo, stdout="debug*\ndatamover\n", occurrences=2)
        b = select_backend("auto", env={"PATH": str(tmp_path)}, job_log_dir=tmp_path / "jobs")
        assert isinstance(b, SlurmBackend)
        assert b.partition == "datamover"
        assert "partition datamover" in b.reason
        assert fp.call_count(sinfo) == 1, "choosing the backend asked sinfo twice"
        assert b.client.partitions() == (["debug", "datamover"], "debug")
        assert fp.call_count(sinfo) == 2, "later calls ask sinfo again"


# =============================================================================== defect 1
class TestBoundMethods:
    def test_launch_does_not_keep_state(self):
        dm = Datamover("local")
        f = dm.launch
        assert dm.launch("dtls", "x").argv == ("ls", "x")
        assert f("dtcp", "a", "b").argv == ("cp", "a", "b")

    def test_saved_method_runs_its_own_command(self, tmp_path):
        src = tmp_path / "a"
        src.write_text("data")
        dst = tmp_path / "b"
        dm = Datamover("local")
        f = dm.dtcp
        ls = dm.dtls(str(tmp_path))
        h = f(str(src), str(dst))
        assert waitfor([ls, h], progress=False) == [0, 0]
        assert h.args == ["cp", str(src), str(dst)]
        assert ls.args == ["ls", str(tmp_path)]
        assert dst.read_text() == "data"

    def test_threads_do_not_mix_commands(self):
        dm = Datamover("local")
        methods = {"dtcp": dm.dtcp, "dtls": dm.dtls, "dtmv": dm.dtmv, "dtrm": dm.dtrm}
        results = {}
        barrier = threading.Barrier(16)

        def work(i):
            command = list(methods)[i % 4]
            barrier.wait()
            results[i] = (command, dm.launch(command, f"arg{i}").argv)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, (command, argv) in results.items():
            assert argv == (TRANSFER_COMMANDS[command], f"arg{i}")
        assert len(results) == 16


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
        _register_sinfo(fp, "debug*\ndatamover\ndebug*\n")
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


# =============================================================================== errors
def _error_samples():
    return [
        (TaurusToolsError("base"), Exception, ()),
        (ConfigurationError("bad value"), ValueError, ()),
        (BackendUnavailableError("no tools"), RuntimeError, ()),
        (SlurmError("sinfo failed"), RuntimeError, ()),
        (
            CommandNotFoundError("dtx", ["dtcp", "dtls"], "detail"),
            FileNotFoundError,
            ("command", "available", "detail"),
        ),
        (
            CommandError(3, ["cp", "a b", "c"], "out", "err line\n", job_id="77"),
            subprocess.CalledProcessError,
            ("returncode", "cmd", "output", "stderr", "job_id"),
        ),
        (CommandTimeoutError([["sleep", "60"], ["ls"]], 2.5), TimeoutError, ("commands", "timeout")),
    ]


class TestErrors:
    @pytest.mark.parametrize("exc, builtin, attrs", _error_samples(), ids=lambda v: type(v).__name__)
    def test_hierarchy_and_pickle(self, exc, builtin, attrs):
        assert isinstance(exc, TaurusToolsError)
        assert isinstance(exc, builtin)
        clone = pickle.loads(pickle.dumps(exc))
        assert type(clone) is type(exc)
        assert str(clone) == str(exc)
        for attr in attrs:
            assert getattr(clone, attr) == getattr(exc, attr), attr

    def test_exported_from_package(self):
        for exc, _, _ in _error_samples():
            assert getattr(taurus_tools, type(exc).__name__) is type(exc)

    def test_command_error_message(self):
        stderr = "".join(f"line {i}\n" for i in range(1, 31))
        exc = CommandError(3, ["cp", "-r", "a b", "c"], stderr=stderr, job_id="99")
        msg = str(exc)
        assert "cp -r 'a b' c" in msg
        assert "exited with code 3" in msg
        assert "Slurm job 99" in msg
        assert "line 30" in msg and "line 11" in msg
        assert "line 10\n" not in msg  # only the tail
        assert exc.returncode == 3 and exc.cmd == ["cp", "-r", "a b", "c"]

    def test_command_error_signal(self):
        msg = str(CommandError(-9, ["sleep", "60"]))
        assert "killed by signal 9" in msg and "sleep 60" in msg

    def test_timeout_error_message(self):
        msg = str(CommandTimeoutError([["sleep", "60"]], 1.5))
        assert "1.5 s" in msg and "sleep 60" in msg

    def test_not_found_message(self):
        exc = CommandNotFoundError("dtx", ["dtcp"])
        assert "'dtx'" in str(exc) and "available commands: dtcp" in str(exc)
        assert "none" in str(CommandNotFoundError("dtx"))


# =============================================================================== validation
class TestValidation:
    @pytest.mark.parametrize(
        "value, expected",
        [
            ("90", "90"),
            ("10:30", "10:30"),
            ("1:00:00", "1:00:00"),
            ("2-12", "2-12"),
            ("2-12:30", "2-12:30"),
            ("2-00:00:00", "2-00:00:00"),
            (" 45 ", "45"),
            ("UNLIMITED", "UNLIMITED"),
            ("infinite", "infinite"),
            (90, "90"),
            (dt.timedelta(hours=1, minutes=30), "0-01:30:00"),
            (dt.timedelta(days=2, seconds=5), "2-00:00:05"),
            (None, None),
        ],
    )
    def test_slurm_time_valid(self, value, expected):
        assert slurm_time(value) == expected

    @pytest.mark.parametrize("value", ["1h", "abc", "", "1:2:3:4", "-5", "1-", "12:345", "1.5"])
    def test_slurm_time_bad_strings(self, value):
        with pytest.raises(ConfigurationError) as info:
            slurm_time(value)
        msg = str(info.value)
        assert repr(value) in msg
        for form in ("HH:MM:SS", "D-HH:MM:SS", "timedelta"):
            assert form in msg

    @pytest.mark.parametrize("value", [0, -5, True, dt.timedelta(0), dt.timedelta(seconds=-1)])
    def test_slurm_time_bad_values(self, value):
        with pytest.raises(ConfigurationError):
            slurm_time(value)

    def test_datamover_time_validated(self):
        with pytest.raises(ConfigurationError, match="HH:MM:SS"):
            Datamover("local", time="2 hours")
        assert Datamover("local", time=dt.timedelta(minutes=5)).time == "0-00:05:00"

    def test_unknown_backend_lists_valid(self):
        with pytest.raises(ConfigurationError) as info:
            Datamover("cloud")
        for name in ("auto", "site", "slurm", "local"):
            assert name in str(info.value)
        with pytest.raises(ConfigurationError):
            Datamover(42)  # type: ignore[arg-type]

    @pytest.mark.parametrize("backend", ["auto", "site"])
    def test_tools_dir_missing(self, tmp_path, backend):
        missing = tmp_path / "does-not-exist"
        with pytest.raises(ConfigurationError, match="does-not-exist.* is not an existing folder"):
            Datamover(backend, tools_dir=missing)

    def test_site_without_tools(self, tmp_path, monkeypatch):
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(BackendUnavailableError, match="no datamover"):
            Datamover("site")

    def test_other_options(self):
        with pytest.raises(ConfigurationError):
            Datamover("local", partition="")
        with pytest.raises(ConfigurationError):
            Datamover("local", account="a b")
        with pytest.raises(ConfigurationError):
            Datamover("local", blocking="yes")  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", [5, 1.5, None, ["a"]])
    def test_non_str_argument(self, bad):
        dm = Datamover("local")
        with pytest.raises(TypeError, match="argument 2"):
            dm.dtls("-l", bad)

    def test_path_and_bytes_arguments(self, tmp_path):
        from pathlib import Path

        dm = Datamover("local")
        assert dm.launch("dtcp", Path("/a b"), b"/c").argv == ("cp", "/a b", "/c")

    def test_unknown_command(self):
        dm = Datamover("local")
        with pytest.raises(CommandNotFoundError) as info:
            dm.call("dtfrobnicate", "x")
        assert info.value.command == "dtfrobnicate"
        assert "dtcp" in info.value.available
        assert "dtcp" in str(info.value) and "dtls" in str(info.value)
        with pytest.raises(CommandNotFoundError, match="dtcp"):
            dm.dtinfo()

    def test_bad_cwd(self, tmp_path):
        with pytest.raises(ConfigurationError, match="cwd"):
            Datamover("local").dtls(cwd=tmp_path / "nope")

    def test_missing_executable(self):
        with pytest.raises(CommandNotFoundError) as info:
            Handle(Launch(("taurus-tools-no-such-program-xyz",)))
        assert isinstance(info.value, FileNotFoundError)

    def test_communicate_input_rejected(self):
        h = Handle(Launch(("true",)))
        with pytest.raises(ValueError, match="input="):
            h.communicate(input="x")
        assert h.wait(5) == 0

    def test_srun_validation(self):
        dm = Datamover("local")
        with pytest.raises(ConfigurationError):
            dm.srun()
        with pytest.raises(ConfigurationError):
            dm.srun("hostname", nodes=0)


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
        assert _wait_for(lambda: client.polls >= 1)
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
        assert _wait_for(lambda: h.job_id == "31")
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


def _wait_for(predicate, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# =============================================================================== CLI
class TestCli:
    @pytest.mark.parametrize(
        "argv, expected",
        [
            (["--backend", "local", "dtcp", "-r", "a", "b"], (["--backend", "local"], "dtcp", ["-r", "a", "b"])),
            (["dtls"], ([], "dtls", [])),
            (["-q", "--timeout", "5", "dtls", "--", "-x"], (["-q", "--timeout", "5"], "dtls", ["--", "-x"])),
            (["--partition", "dtcp", "dtls", "x"], (["--partition", "dtcp"], "dtls", ["x"])),
            (["--backend=local", "dtrm", "-f", "x"], (["--backend=local"], "dtrm", ["-f", "x"])),
            (["rclone", "copy", "a", "b"], ([], "rclone", ["copy", "a", "b"])),
            (["dtls", "info"], ([], "dtls", ["info"])),
            (["info", "--json"], None),
            (["info", "dtls"], None),
            (["--", "dtls"], None),
            (["-v"], None),
            ([], None),
        ],
    )
    def test_split_pass_through(self, argv, expected):
        assert split_pass_through(argv) == expected

    def test_version(self, capsys):
        assert main(["--version"]) == 0  # answered before the parser is built
        assert capsys.readouterr().out == f"taurus-tools {taurus_tools.__version__}\n"
        with pytest.raises(SystemExit) as info:  # elsewhere among the options: argparse's answer
            main(["-q", "--version"])
        assert info.value.code == 0
        assert capsys.readouterr().out == f"taurus-tools {taurus_tools.__version__}\n"

    def test_no_command_is_usage(self, capsys):
        assert main([]) == 2
        assert "usage" in capsys.readouterr().err

    def test_info_json(self, capsys):
        assert main(["info", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["backend"] in ("site", "slurm", "local")
        assert data["version"] == taurus_tools.__version__
        assert isinstance(data["commands"], list) and data["reason"]
        assert set(data["slurm"]) >= {"available", "detail", "partitions"}

    def test_info_json_local(self, capsys):
        assert main(["--backend", "local", "info", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["backend"] == "local"
        assert "dtcp" in data["commands"]

    def test_info_text(self, capsys):
        assert main(["--backend", "local", "info"]) == 0
        out = capsys.readouterr().out
        assert "backend:    local" in out and "commands:" in out

    def test_pass_through_listing(self, tmp_path, capfd):
        (tmp_path / "alpha.txt").write_text("a")
        (tmp_path / "beta dir").mkdir()
        assert main(["--backend", "local", "-q", "dtls", str(tmp_path)]) == 0
        out = capfd.readouterr().out
        assert out.splitlines() == ["alpha.txt", "beta dir"]

    def test_pass_through_copy(self, tmp_path, capfd):
        src = tmp_path / "src"
        src.write_bytes(b"\x00\xffpayload")
        assert main(["--backend", "local", "-q", "dtcp", str(src), str(tmp_path / "dst")]) == 0
        assert (tmp_path / "dst").read_bytes() == b"\x00\xffpayload"

    def test_failing_command_exit_code(self, tmp_path, capfd):
        assert main(["--backend", "local", "-q", "dtrm", str(tmp_path / "missing")]) == 1
        assert "missing" in capfd.readouterr().err

    def test_exit_code_propagated_from_stub(self, tmp_path, monkeypatch, capfd):
        stubs = tmp_path / "bin"
        write_stub(stubs, "ls", "echo listing; echo 'ls: broken' >&2; exit 7\n")
        write_stub(stubs, "rm", "kill -TERM $$\n")
        prepend_path(monkeypatch, stubs)
        assert main(["--backend", "local", "-q", "dtls", "x"]) == 7
        out, err = capfd.readouterr()
        assert "listing" in out and "ls: broken" in err
        assert main(["--backend", "local", "-q", "dtrm", "x"]) == 128 + int(signal.SIGTERM)

    def test_timeout_exit_code(self, tmp_path, monkeypatch, capfd):
        stubs = tmp_path / "bin"
        write_stub(stubs, "ls", "exec sleep 30\n")
        prepend_path(monkeypatch, stubs)
        assert main(["--backend", "local", "-q", "--timeout", "0.3", "dtls"]) == 124
        assert "timed out" in capfd.readouterr().err

    def test_management_command_on_local_backend(self, capfd):
        assert main(["--backend", "local", "dtinfo"]) == 2
        err = capfd.readouterr().err
        assert "dtinfo" in err and "available commands" in err and "dtcp" in err

    def test_bad_option_value(self, capfd):
        assert main(["--backend", "local", "--time", "soon", "dtls"]) == 2
        assert "HH:MM:SS" in capfd.readouterr().err
