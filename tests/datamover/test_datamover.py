"""Datamover methods: bound per command, argument validation, readable errors for bad input."""

from __future__ import annotations

import datetime as dt
import threading

import pytest


from taurus_tools import (
    BackendUnavailableError,
    CommandNotFoundError,
    ConfigurationError,
    Datamover,
    Handle,
    Launch,
    waitfor,
)
from taurus_tools.datamover.backends import (
    TRANSFER_COMMANDS,
    slurm_time,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_slurm_env")]


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
