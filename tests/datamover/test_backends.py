"""The backends as values: the argv each builds (site, slurm, local) and how one is chosen."""

from __future__ import annotations

import getpass
import logging
import os
import subprocess

import pytest

from helpers import FAKE_BIN, FakeSlurmClient, register_sinfo, write_stub

from taurus_tools import (
    BackendUnavailableError,
    CommandNotFoundError,
    ConfigurationError,
    Datamover,
    LocalBackend,
    SiteBackend,
    SlurmBackend,
    SlurmError,
    select_backend,
)
from taurus_tools.datamover.backends import (
    MANAGEMENT_COMMANDS,
    SITE_LS_AS_IN_A_PIPE,
    TRANSFER_COMMANDS,
    find_site_tools,
    find_tools,
    srun_argv,
)

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
@pytest.fixture
def slurm_backend(fp, tmp_path):
    register_sinfo(fp)
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
        register_sinfo(fp, "debug*\nbatch\n")
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
        register_sinfo(fp)
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
