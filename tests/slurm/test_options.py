"""One source of truth for options.

``SlurmOptions`` is validated once and shared by the backends, the Datamover and the command
line; ``taurus-tools copy`` builds its options from ``CopyConfig``'s fields, so the defaults,
ranges and help live with the fields.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from helpers import FAKE_BIN, FakeSlurmClient
from taurus_tools import (
    ConfigurationError,
    CopyConfig,
    Datamover,
    ExitPolicy,
    LocalBackend,
    SiteBackend,
    SlurmBackend,
    SlurmOptions,
    select_backend,
)
from taurus_tools.cli import main as _cli
from taurus_tools.transfer.config import cli_fields
from taurus_tools._names import MANAGEMENT_COMMANDS, TRANSFER_COMMANDS

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_slurm_env")]

ALL_TOOLS = {c: f"/site/bin/{c}" for c in (*TRANSFER_COMMANDS, *MANAGEMENT_COMMANDS)}


# ============================================================================ the value
class TestSlurmOptions:
    def test_defaults(self):
        assert SlurmOptions() == SlurmOptions(partition="datamover", account=None, time=None, exclude=())

    @pytest.mark.parametrize(
        "given, kept",
        [(90, "90"), ("1:00:00", "1:00:00"), (" 45 ", "45"), (dt.timedelta(hours=2), "0-02:00:00"), (None, None)],
    )
    def test_time_is_kept_as_slurm_text(self, given, kept):
        assert SlurmOptions(time=given).time == kept

    @pytest.mark.parametrize(
        "options, message",
        [
            (dict(partition=""), "partition must be a non-empty name or None"),
            (dict(partition="  "), "partition must be a non-empty name or None"),
            (dict(partition=5), "partition must be a non-empty name or None"),
            (dict(account="a b"), "account must be a Slurm account name"),
            (dict(account=""), "account must be a Slurm account name"),
            (dict(time="2 hours"), "is not a Slurm time limit"),
            (dict(time=0), "time in minutes must be positive"),
            (dict(time=True), "time must be a Slurm time limit"),
            (dict(exclude=[""]), "exclude must be a string or a sequence of non-empty strings (node names)"),
            (dict(exclude=5), "exclude must be a string or a sequence of non-empty strings"),
            (dict(exclude=["n1", "n 2"]), "exclude must name Slurm nodes (no spaces)"),
        ],
    )
    def test_bad_values_say_what_would_do(self, options, message):
        with pytest.raises(ConfigurationError) as info:
            SlurmOptions(**options)
        assert message in str(info.value)

    def test_nodes_one_or_many(self):
        assert SlurmOptions(exclude="n1").exclude == ("n1",)
        assert SlurmOptions(exclude=["n1", "n[3-4]"]).exclude == ("n1", "n[3-4]")
        assert SlurmOptions(exclude=None).exclude == ()

    def test_frozen_and_replace_validates(self):
        options = SlurmOptions(account="p_x")
        with pytest.raises(dataclasses.FrozenInstanceError):
            options.account = "p_y"  # type: ignore[misc]
        assert options.replace(time=30) == SlurmOptions(account="p_x", time="30")
        with pytest.raises(ConfigurationError, match="not a Slurm time limit"):
            options.replace(time="soon")
        with pytest.raises(ConfigurationError) as info:
            options.replace(nodes=2)
        assert "unknown Slurm option(s) nodes" in str(info.value)
        assert "partition='datamover', account=None, time=None, exclude=()" in str(info.value)

    def test_args_as_srun_and_sbatch_take_them(self):
        assert SlurmOptions(partition=None).args() == []
        assert SlurmOptions(account="p_x", time=dt.timedelta(minutes=5), exclude=["n1", "n2"]).args() == [
            "--partition=datamover",
            "--account=p_x",
            "--time=0-00:05:00",
            "--exclude=n1,n2",
        ]

    def test_excluding_adds_nodes_once(self):
        options = SlurmOptions(exclude="n1")
        assert options.excluding(["n2", "n1", "n2"]).exclude == ("n1", "n2")
        assert options.excluding(()) is options
        with pytest.raises(ConfigurationError):
            options.excluding(["bad node"])


# ============================================================================ shared by the backends
@pytest.fixture
def sinfo(fp):
    fp.register([f"{FAKE_BIN}/sinfo", "-h", "-o", "%P"], stdout="debug*\ndatamover\n")
    return fp


class TestSharedByTheBackends:
    def test_datamover_keeps_the_one_it_is_given(self):
        options = SlurmOptions(partition=None, account="p_x", time=dt.timedelta(hours=1))
        dm = Datamover("local", slurm=options)
        assert dm.slurm is options
        assert (dm.partition, dm.account, dm.time) == (None, "p_x", "0-01:00:00")
        assert Datamover("local").slurm == SlurmOptions()
        assert Datamover("local", account="p_y", time=90).slurm == SlurmOptions(account="p_y", time="90")

    @pytest.mark.parametrize("keyword", [dict(partition="debug"), dict(account="p_y"), dict(time=60)])
    def test_both_at_once_is_an_error(self, keyword):
        with pytest.raises(ConfigurationError, match="inside slurm=SlurmOptions.* or as keywords, not both"):
            Datamover("local", slurm=SlurmOptions(account="p_x"), **keyword)
        with pytest.raises(ConfigurationError, match="not both"):
            select_backend("local", slurm=SlurmOptions(), **keyword)

    def test_not_a_slurm_options(self):
        with pytest.raises(ConfigurationError, match="slurm must be a SlurmOptions or None"):
            Datamover("local", slurm={"account": "p_x"})  # type: ignore[arg-type]

    def test_site_tools_get_account_and_time_only(self):
        options = SlurmOptions(partition="other", account="p_x", time=dt.timedelta(hours=1), exclude="n1")
        backend = SiteBackend(ALL_TOOLS, slurm=options)
        assert backend.launch("dtcp", ["a", "b"], blocking=True).argv == (
            "/site/bin/dtcp", "--blocking", "--account=p_x", "--time=0-01:00:00", "a", "b"
        )
        assert (backend.account, backend.time) == ("p_x", "0-01:00:00")

    def test_slurm_jobs_get_every_option_and_the_copys_nodes_too(self, sinfo, tmp_path):
        options = SlurmOptions(account="p_a", time=90, exclude=("n1",))
        backend = SlurmBackend(slurm=options, client=FakeSlurmClient(), job_log_dir=tmp_path)
        assert backend.slurm == options and backend.requested_partition == "datamover"
        srun = backend.launch_program("shard", ["true"], blocking=True, exclude_nodes=("n2", "n1")).argv
        assert srun[1:4] == ("--partition=datamover", "--account=p_a", "--time=90")
        assert [a for a in srun if a.startswith("--exclude")] == ["--exclude=n1,n2"]
        sbatch = list(backend.launch_program("shard", ["true"], blocking=False, exclude_nodes=("n2",)).argv)
        assert sbatch[1:6] == ["--parsable", "--partition=datamover", "--account=p_a", "--time=90", "--exclude=n1,n2"]
        plain = backend.launch("dtcp", ["a", "b"], blocking=True).argv
        assert "--exclude=n1" in plain  # the Datamover's nodes, for every job

    def test_a_slurm_launch_is_made_again_off_more_nodes(self, sinfo, tmp_path):
        backend = SlurmBackend(slurm=SlurmOptions(exclude=("n1",)), client=FakeSlurmClient(), job_log_dir=tmp_path)
        for blocking in (True, False):
            launch = backend.launch_program("step", ["true", "x"], blocking=blocking, exclude_nodes=("n2",))
            assert launch.placement is not None
            again = launch.placement.excluding(("n3", "n2"))
            assert [a for a in again.argv if a.startswith("--exclude")] == ["--exclude=n1,n2,n3"]
            assert again.argv[-2:] == ("true", "x") and again.submits == launch.submits
            assert again.job_name != launch.job_name  # a new job, under a name of its own
        local = LocalBackend().launch_program("step", ["true"], blocking=True)
        assert local.placement is None  # a process here: no nodes to choose

    def test_a_slurm_job_never_runs_a_program_in_this_process(self, sinfo, tmp_path):
        backend = SlurmBackend(client=FakeSlurmClient(), job_log_dir=tmp_path)

        def make(argv):
            raise AssertionError("not called: nothing is started here")

        for blocking in (True, False):
            launch = backend.launch_program("shard", ["python", "w.py"], blocking=blocking, inline=make)
            assert launch.inline is None and launch.argv[-2:] == ("python", "w.py")
        assert LocalBackend().launch_program("shard", ["python", "w.py"], blocking=True, inline=make).inline is make

    def test_a_missing_partition_gives_way_in_the_backends_options_only(self, fp, tmp_path):
        fp.register([f"{FAKE_BIN}/sinfo", "-h", "-o", "%P"], stdout="debug*\n")
        options = SlurmOptions(account="p_a")
        backend = SlurmBackend(slurm=options, client=FakeSlurmClient(), job_log_dir=tmp_path)
        assert backend.partition is None and backend.slurm == options.replace(partition=None)
        assert options.partition == "datamover"  # the caller's value is untouched


# ============================================================================ the copy command
#: Every option of ``taurus-tools copy``: a non-default value on the command line and the
#: field value it must become.
COPY_OPTIONS: Dict[str, Tuple[List[str], Any]] = {
    "workers": (["--workers", "3"], 3),
    "shards": (["--shards", "5"], 5),
    "shard_by": (["--shard-by", "count"], "count"),
    "retries": (["--retries", "0"], 0),
    "exit_policy": (["--exit-policy", "1-10,SIGKILL=retry,*=fail"], ExitPolicy("1-10,SIGKILL=retry,*=fail")),
    "resume": (["--no-resume"], False),
    "verify": (["--verify", "checksum"], "checksum"),
    "atomic": (["--atomic"], True),
    "exclude": (["--exclude", "*.tmp", "--exclude", "-odd name"], ("*.tmp", "-odd name")),
    "exclude_nodes": (["--exclude-node", "n1", "--exclude-node", "n2"], ("n1", "n2")),
    "work_dir": (["--work-dir", "/w d"], Path("/w d")),
    "report": (["--report", "/r"], Path("/r")),
    "dry_run": (["--dry-run"], True),
    "check_space": (["--no-space-check"], False),
    "keep_work_dir": (["--keep-work-dir"], True),
    "files_from": (["--files-from", "/l.txt"], Path("/l.txt")),
    "threads": (["--threads", "3"], 3),
    "endpoint_url": (["--endpoint-url", "https://s3.example.org:9000"], "https://s3.example.org:9000"),
    "profile": (["--profile", "project-x"], "project-x"),
    "in_process": (["--in-process", "no"], "no"),
}


class TestCopyCommandFromTheConfig:
    def test_every_option_is_tested_here(self):
        assert sorted(f.name for f in cli_fields()) == sorted(COPY_OPTIONS)

    def test_without_options_the_config_is_the_default_one(self):
        opts = _cli.parse_args(["copy", "S", "D"])
        assert _cli.copy_config(opts) == CopyConfig()
        assert _cli.copy_config(_cli.parse_args(["copy", "S", "D", "-q"])) == CopyConfig(progress=False)

    @pytest.mark.parametrize("name", sorted(COPY_OPTIONS))
    def test_each_option_sets_its_field(self, name):
        words, value = COPY_OPTIONS[name]
        config = _cli.copy_config(_cli.parse_args(["copy", "S", "D", *words]))
        assert getattr(config, name) == value
        assert dataclasses.replace(config, **{name: getattr(CopyConfig(), name)}) == CopyConfig()

    def test_help_documents_every_option_with_its_field_text_and_default(self, capsys):
        with pytest.raises(SystemExit):
            _cli.main(["copy", "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for f in cli_fields():
            assert f.metadata["cli"] in text, f.name
            assert " ".join(f.metadata["help"].split()) in text, f.name
        assert "--retries RETRIES retries of failed entries, >= 0 (default: 2)" in text
        assert "--shard-by {bytes,count}" in text and "(default: bytes)" in text
        assert "--workers WORKERS shards copied at once, >= 1 (default: 8; locally at most one per CPU)" in text

    def test_global_slurm_options_take_their_defaults_and_help_from_the_fields(self, capsys):
        with pytest.raises(SystemExit):
            _cli.main(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        for f in dataclasses.fields(SlurmOptions):
            if "cli" in f.metadata:
                assert f"{f.metadata['cli']} {f.name.upper()} {f.metadata['help']}" in text
        assert "(default: datamover)" in text

    @pytest.mark.parametrize(
        "words, message",
        [
            (["--time", "2 hours"], "time='2 hours' is not a Slurm time limit"),
            (["--account", "a b"], "account must be a Slurm account name"),
            (["--partition", ""], "partition must be a non-empty name"),
            (["--exclude-node", "a b"], "exclude_nodes must name Slurm nodes"),
        ],
    )
    def test_a_bad_slurm_option_is_one_usage_error_before_anything_runs(self, words, message, tmp_path, capsys):
        (tmp_path / "src").mkdir()
        rc = _cli.main(["copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--backend", "local", *words])
        assert rc == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("taurus-tools: error: ") and message in err, err
        assert not (tmp_path / "dst").exists()
