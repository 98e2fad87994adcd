"""The command line without real work: argument splitting, usage errors, exit codes."""

from __future__ import annotations

import json
import signal

import pytest

from helpers import prepend_path, write_stub

import taurus_tools
from taurus_tools.cli.main import main, split_pass_through

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_slurm_env")]


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
