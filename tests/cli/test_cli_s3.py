"""``taurus-tools copy`` with an ``s3://`` side: ``--endpoint-url``, ``--profile``, ``--threads``.

Parsing is checked in-process; the options' way to the shard workers is checked with a
real copy against the S3 test server (``main()`` in this process, so that every argv it
starts can be recorded).  Credentials come from the environment or a profile of the
shared files, never from an option: the workers' argv never holds the secret.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import List

import pytest

from taurus_tools.cli.main import copy_config, main, parse_args
from taurus_tools.transfer.s3 import S3Config, make_client

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_slurm_env")]

WORKER = "transfer/s3_worker.py"


@pytest.fixture
def server(s3_server):
    """The S3 server under test (the parametrized ``s3_servers`` would run these on each)."""
    return s3_server


def clear_aws_env(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def workers_argv(monkeypatch) -> List[List[str]]:
    """The argv of every shard worker this process starts."""
    started: List[List[str]] = []
    real_init = subprocess.Popen.__init__

    def recording(popen, args, *more, **options):
        if not isinstance(args, (str, bytes)) and any(str(a).endswith(WORKER) for a in args):
            started.append([str(a) for a in args])
        real_init(popen, args, *more, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording)
    return started


class TestParsing:
    def test_the_options_reach_the_copy_config(self):
        opts = parse_args(["copy", "/data", "s3://bucket/p", "--endpoint-url", "https://s3.example.org:9000",
                           "--profile", "project-x", "--threads", "3"])
        config = copy_config(opts)
        assert (config.endpoint_url, config.profile, config.threads) == ("https://s3.example.org:9000", "project-x", 3)
        assert config.s3() == S3Config(endpoint_url="https://s3.example.org:9000", profile="project-x", threads=3)

    def test_defaults(self):
        config = copy_config(parse_args(["copy", "/data", "s3://bucket/p"]))
        assert (config.endpoint_url, config.profile, config.threads) == (None, None, 8)

    def test_help_lists_them(self, capsys):
        with pytest.raises(SystemExit):
            main(["copy", "--help"])
        out = capsys.readouterr().out
        for option in ("--endpoint-url URL", "--profile NAME", "--threads"):
            assert option in out

    @pytest.mark.parametrize(
        "extra, message",
        [
            (["--threads", "0"], "argument --threads: expected a whole number >= 1, got '0'"),
            (["--threads", "300"], "threads must be an int from 1 to 256, got 300"),
            (["--endpoint-url", "127.0.0.1:9000"], "endpoint_url must be http(s)://HOST[:PORT], got '127.0.0.1:9000'"),
            (["--endpoint-url", "ftp://host"], "endpoint_url must be http(s)://HOST[:PORT]"),
            (["--in-process", "maybe"], "argument --in-process: invalid choice: 'maybe' (choose from"),
        ],
    )
    def test_bad_values_are_usage_errors(self, extra, message, tmp_path, capsys):
        argv = ["-q", "--backend", "local", "copy", str(tmp_path / "src"), "s3://bucket/p", *extra,
                "--work-dir", str(tmp_path / "work")]
        try:
            rc = main(argv)
        except SystemExit as stop:
            rc = stop.code
        assert rc == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "work").exists()


class TestRealCopies:
    @pytest.mark.parametrize("in_process", ["no", "yes"])
    def test_a_profile_gives_credentials_and_endpoint_and_threads_reach_each_worker(
        self, tmp_path, server, monkeypatch, workers_argv, capsys, in_process
    ):
        clear_aws_env(monkeypatch)
        config, credentials = tmp_path / "aws config", tmp_path / "aws credentials"
        config.write_text(f"[profile tt-profile]\nregion = us-east-1\nendpoint_url = {server.endpoint_url}\n")
        credentials.write_text(
            f"[tt-profile]\naws_access_key_id = {server.key}\naws_secret_access_key = {server.secret}\n"
        )
        monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
        client, endpoint = make_client(S3Config(profile="tt-profile"))
        assert endpoint == server.endpoint_url
        client.create_bucket(Bucket=f"tt-cli-profile-{in_process}")
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.mkdir()
        for i in range(6):
            (src / f"-f {i}").write_bytes(os.urandom(100 + i))
        common = ["--profile", "tt-profile", "--threads", "3", "--workers", "2", f"--in-process={in_process}"]
        up = ["-q", "--backend", "local", "copy", str(src), f"s3://tt-cli-profile-{in_process}/p", *common,
              "--work-dir", str(tmp_path / "w1")]
        assert main(up) == 0, capsys.readouterr().err
        down = ["-q", "--backend", "local", "copy", f"s3://tt-cli-profile-{in_process}/p", str(dst), *common,
                "--work-dir", str(tmp_path / "w2")]
        assert main(down) == 0, capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in dst.iterdir()} == {p.name: p.read_bytes() for p in src.iterdir()}
        # In the driver, the workers are the same programs with the same arguments, not processes.
        assert len(workers_argv) == (4 if in_process == "no" else 0)
        for argv in workers_argv:
            assert "--threads=3" in argv and "--profile=tt-profile" in argv
            # The server the profile names, as the driver resolved it (a URL: no secret).
            assert f"--endpoint-url={server.endpoint_url}" in argv
            assert not any(server.secret in a or server.key in a for a in argv)
        out = capsys.readouterr()
        assert server.secret not in out.out + out.err

    @pytest.mark.parametrize("in_process", ["no", "yes"])
    def test_endpoint_url_wins_over_the_environment(
        self, tmp_path, server, monkeypatch, workers_argv, capsys, in_process
    ):
        from slurm_cluster import _free_tcp_ports

        clear_aws_env(monkeypatch)
        for name, value in server.env({}).items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
        client, _ = make_client(S3Config())
        client.create_bucket(Bucket=f"tt-cli-endpoint-{in_process}")
        client.put_object(Bucket=f"tt-cli-endpoint-{in_process}", Key="p/x", Body=b"x")
        (port,) = _free_tcp_ports(1)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")  # nothing there
        argv = ["-q", "--backend", "local", "copy", f"s3://tt-cli-endpoint-{in_process}/p", str(tmp_path / "dst"),
                "--endpoint-url", server.endpoint_url, "--work-dir", str(tmp_path / "w"), f"--in-process={in_process}"]
        assert main(argv) == 0, capsys.readouterr().err
        assert (tmp_path / "dst" / "x").read_bytes() == b"x"
        assert all(f"--endpoint-url={server.endpoint_url}" in a for a in workers_argv)
        assert bool(workers_argv) is (in_process == "no")

    def test_a_profile_that_is_not_there_names_the_files_and_the_profiles(self, tmp_path, monkeypatch, capsys):
        clear_aws_env(monkeypatch)
        config = tmp_path / "config"
        config.write_text("[profile one]\nregion = us-east-1\n[default]\nregion = us-east-1\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        dst = tmp_path / "dst"
        rc = main(["-q", "--backend", "local", "copy", "s3://bucket/p", str(dst), "--profile", "two"])
        assert rc == 2
        err = capsys.readouterr().err
        assert f"the AWS profile 'two' is in neither {config} nor {os.devnull}" in err
        assert "profiles there: default, one" in err
        assert not dst.exists() and not Path(tmp_path / "work").exists()
