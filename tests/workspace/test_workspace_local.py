"""The local workspace backend for real: ``python -m taurus_tools.workspace.local_tools`` in a tmp root.

Every tool runs as a subprocess with ``$TAURUS_TOOLS_WS_NOW`` as its clock.  ``Workspace``
copies ``os.environ`` when it is constructed, so the clock is set (monkeypatch) *before*
each ``Workspace(...)``; advancing the clock means building a new one (``env.ws(now=...)``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import sys
from pathlib import Path

import pytest


from taurus_tools.workspace import workspace as _workspace
from taurus_tools.cli.main import main
from taurus_tools.errors import ConfigurationError, WorkspaceError
from taurus_tools.process.handle import Handle
from taurus_tools.workspace.workspace import ROOT_ENV, Workspace
from taurus_tools.workspace.format import current_user, format_ctime, parse_ws_list
from taurus_tools.workspace.local_tools import NOW_ENV

pytestmark = pytest.mark.timeout(60)

DAY = 86400
NOW = int(dt.datetime(2026, 7, 2, 10, 0, 0, tzinfo=dt.timezone.utc).timestamp())
USER = current_user()
ILLEGAL_NAME = "Error: Illegal workspace name, use characters and numbers, -,. and _ only!"
CONFIG = {
    "default": "scratch",
    "filesystems": {
        "scratch": {"duration": 30, "maxextensions": 3},
        "ssd": {"duration": 7, "maxextensions": 1},
    },
}


def local(epoch: float) -> dt.datetime:
    """A time as the tools print it (local time, whole seconds)."""
    return dt.datetime.fromtimestamp(epoch).replace(microsecond=0)


class Env:
    """A tmp workspace root with ws.json, and a clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.mp = monkeypatch
        self.root = root
        self.config(CONFIG)

    def config(self, config: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "ws.json").write_text(json.dumps(config))

    def ws(self, now: float = NOW, **kwargs) -> Workspace:
        self.mp.setenv(NOW_ENV, str(int(now)))
        return Workspace("local", root=self.root, **kwargs)

    def path(self, name: str, fs: str = "scratch") -> Path:
        return self.root / fs / f"{USER}-{name}"

    def removed(self, released: str, fs: str = "scratch") -> Path:
        return self.root / fs / ".removed" / released


@pytest.fixture
def env(tmp_path, monkeypatch) -> Env:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    return Env(monkeypatch, tmp_path / "wsroot")


def run(handle: Handle):
    assert isinstance(handle, Handle)
    out, err = handle.communicate(timeout=30)
    return handle.returncode, out, err


def test_user_with_a_dash_sees_v1_ids_and_gets_names(tmp_path, monkeypatch, capsys):
    """hpc-workspace 1.6 shows user ``jean-luc`` the id ``luc-data``; the parser still says ``data``."""
    from taurus_tools.workspace import local_tools as _ws_local

    monkeypatch.setenv(NOW_ENV, str(int(NOW)))
    store = _ws_local.Store(tmp_path, user="jean-luc")
    assert _ws_local.ws_allocate(["my-data", "3"], store) == 0
    capsys.readouterr()
    assert _ws_local.ws_list([], store) == 0
    out = capsys.readouterr().out
    assert out.startswith("id: luc-my-data\n")
    assert _ws_local.ws_list(["-s"], store) == 0
    assert capsys.readouterr().out == "luc-my-data\n"
    (info,) = parse_ws_list(out, user="jean-luc")
    assert (info.id, info.owner, info.listed_id) == ("my-data", "jean-luc", "luc-my-data")
    assert info.path == tmp_path / "scratch" / "jean-luc-my-data"


def test_raw_methods_take_text_on_output_and_input(env):
    ws = env.ws()
    assert ws.tools() == _workspace.WS_TOOLS
    seen = []
    h = ws.ws_allocate("raw", "3", text=False, on_output=lambda stream, data: seen.append(stream))
    out, err = h.communicate(timeout=30)
    assert out == f"{env.path('raw')}\n".encode() and isinstance(err, bytes)
    assert {"stdout", "stderr"} <= set(seen)
    assert isinstance(ws.ws_list(text=False).communicate(timeout=30)[0], bytes)
    rc, out, _ = run(ws.ws_restore("-l", input="ignored\n"))
    assert rc == 0 and isinstance(out, str)


# ----------------------------------------------------------------------------- allocate
class TestAllocate:
    def test_creates_directory_and_returns_info(self, env):
        info = env.ws().allocate("data", 10)
        assert info.path == env.path("data")
        assert info.path.is_dir()
        assert stat.S_IMODE(info.path.stat().st_mode) == 0o700
        assert (info.id, info.filesystem, info.extensions_left) == ("data", "scratch", 3)
        assert info.expired is False
        assert info.created == local(NOW)
        assert info.expires == local(NOW + 10 * DAY)
        assert info.remaining == dt.timedelta(days=10)
        assert info.comment is None and info.group is None

    def test_reuse_keeps_path_data_and_expiry(self, env):
        first, created = env.ws().allocate_ex("data", 10)
        assert created is True
        (first.path / "result.txt").write_text("42")
        later, created = env.ws(now=NOW + 2 * DAY).allocate_ex("data", 25)
        assert created is False
        assert later.path == first.path
        assert later.expires == local(NOW + 10 * DAY)  # NOT reset to now + 25 days
        assert later.remaining == dt.timedelta(days=8)
        assert later.extensions_left == 3
        assert (later.path / "result.txt").read_text() == "42"

    def test_raw_create_then_reuse_output(self, env):
        rc, out, err = run(env.ws().ws_allocate("data", "10"))
        assert (rc, out) == (0, f"{env.path('data')}\n")
        assert err == (
            "Info: creating workspace.\nremaining extensions  : 3\nremaining time in days: 10\n"
        )
        rc, out, err = run(env.ws(now=NOW + 2 * DAY + 3600).ws_allocate("data", "10"))
        assert (rc, out) == (0, f"{env.path('data')}\n")
        assert err == (
            "Info: reusing workspace.\nremaining extensions  : 3\nremaining time in days: 7\n"
        )

    def test_raw_over_maximum_is_capped_and_succeeds(self, env):
        ws = env.ws()
        rc, out, err = run(ws.ws_allocate("big", "100"))
        assert rc == 0
        assert out == f"{env.path('big')}\n"
        assert err == (
            "Error: Duration longer than allowed for this workspace\n"
            "       setting to allowed maximum of 30\n"
            "Info: creating workspace.\n"
            "remaining extensions  : 3\n"
            "remaining time in days: 30\n"
        )
        (info,) = ws.list()
        assert info.expires == local(NOW + 30 * DAY)

    def test_typed_over_maximum_is_capped_per_filesystem(self, env):
        info = env.ws().allocate("fast", 30, filesystem="ssd")
        assert info.path == env.path("fast", "ssd")
        assert info.expires == local(NOW + 7 * DAY)
        assert (info.filesystem, info.extensions_left) == ("ssd", 1)

    def test_comment_group_reminder_mail(self, env):
        ws = env.ws()
        grp = _workspace_group()
        info = ws.allocate(
            "c", 10, comment="for run 7: inputs", reminder=2, mail="u@example.org", group=grp
        )
        assert info.comment == "for run 7: inputs"
        assert info.group == grp
        assert stat.S_IMODE(info.path.stat().st_mode) == 0o770
        rc, out, _ = run(ws.ws_list("-v"))
        (verbose,) = parse_ws_list(out)
        assert verbose.extra["mailaddress"] == "u@example.org"
        assert verbose.extra["reminder"] == format_ctime(local(NOW + 8 * DAY))

    def test_default_filesystem_from_constructor(self, env):
        info = env.ws(filesystem="ssd").allocate("x", 2)
        assert info.path == env.path("x", "ssd")


def _workspace_group() -> str:
    import grp

    try:
        return grp.getgrgid(os.getegid()).gr_name
    except KeyError:  # pragma: no cover
        pytest.skip("no group name for the current gid")


# ----------------------------------------------------------------------------- extend
class TestExtend:
    def test_sets_new_duration_from_now_and_uses_one_extension(self, env):
        env.ws().allocate("data", 10)
        ws = env.ws(now=NOW + 3 * DAY)
        info = ws.extend("data", 9)
        assert info.expires == local(NOW + 12 * DAY)  # now + 9, not old expiry + 9
        assert info.remaining == dt.timedelta(days=9)
        assert info.extensions_left == 2
        info = ws.extend("data", 20)
        assert info.expires == local(NOW + 23 * DAY)
        assert info.extensions_left == 1

    def test_shortening_is_free(self, env):
        env.ws().allocate("data", 10)
        info = env.ws(now=NOW + DAY).extend("data", 2)
        assert info.expires == local(NOW + 3 * DAY)
        assert info.extensions_left == 3

    def test_raw_extend_output(self, env):
        env.ws().allocate("data", 10)
        rc, out, err = run(env.ws(now=NOW + DAY).ws_extend("data", "20"))
        assert (rc, out) == (0, f"{env.path('data')}\n")
        assert err == (
            "Info: extending workspace.\nremaining extensions  : 2\nremaining time in days: 20\n"
        )

    def test_no_extensions_left_raises_with_255_and_stderr(self, env):
        ws = env.ws()
        ws.allocate("fast", 2, filesystem="ssd")
        assert ws.extend("fast", 5, filesystem="ssd").extensions_left == 0
        with pytest.raises(WorkspaceError) as ei:
            ws.extend("fast", 6, filesystem="ssd")
        exc = ei.value
        assert exc.returncode == 255
        assert exc.stderr == "Info: extending workspace.\nError: no more extensions.\n"
        assert "no more extensions" in exc.problem
        assert exc.output == ""
        (info,) = ws.list(filesystem="ssd")
        assert info.expires == local(NOW + 5 * DAY)  # unchanged

    def test_missing_workspace_raises(self, env):
        with pytest.raises(WorkspaceError) as ei:
            env.ws().extend("nothere", 5)
        assert ei.value.returncode == 255
        assert "Error: workspace does not exist, can not be extended!" in ei.value.stderr


# ----------------------------------------------------------------------------- release
class TestRelease:
    def test_moves_data_aside(self, env):
        ws = env.ws()
        info = ws.allocate("data", 10)
        (info.path / "sub").mkdir()
        (info.path / "sub" / "f.txt").write_text("keep me")
        rc, out, err = run(ws.ws_release("data"))
        assert (rc, out, err) == (0, "", "")  # silent on success
        assert not info.path.exists()
        released = f"{USER}-data-{NOW}"
        assert ws.released() == [released]
        assert (env.removed(released) / "sub" / "f.txt").read_text() == "keep me"
        assert ws.list() == []
        assert ws.find("data") is None

    def test_typed_release_and_reuse_of_the_id(self, env):
        ws = env.ws()
        ws.allocate("data", 10)
        ws.release("data")
        again = ws.allocate("data", 3)
        assert again.path == env.path("data") and again.path.is_dir()
        assert again.expires == local(NOW + 3 * DAY)
        ws.release("data")
        assert sorted(ws.released()) == [f"{USER}-data-{NOW}", f"{USER}-data-{NOW + 1}"]

    def test_delete_data(self, env):
        ws = env.ws()
        info = ws.allocate("data", 10)
        (info.path / "f.txt").write_text("x")
        ws.release("data", delete_data=True)
        assert not info.path.exists()
        assert ws.released() == []
        assert list((env.root / "scratch" / ".removed").iterdir()) == []

    @pytest.mark.parametrize("twice", [False, True])
    def test_unknown_or_already_released_raises(self, env, twice):
        ws = env.ws()
        if twice:
            ws.allocate("data", 1)
            ws.release("data")
        with pytest.raises(WorkspaceError) as ei:
            ws.release("data")
        assert ei.value.returncode == 255
        assert ei.value.stderr == "Error: workspace does not exist!\n"
        assert "Error: workspace does not exist!" in ei.value.problem

    def test_release_on_other_filesystem_needs_it(self, env):
        ws = env.ws()
        info = ws.allocate("fast", 2, filesystem="ssd")
        with pytest.raises(WorkspaceError):
            ws.release("fast")  # only the default filesystem is searched (v1)
        ws.release("fast", filesystem="ssd")
        assert not info.path.exists()
        assert ws.released(filesystem="ssd") == [f"{USER}-fast-{NOW}"]


# ----------------------------------------------------------------------------- expiry
class TestExpiry:
    def test_before_and_after_expiry(self, env):
        env.ws().allocate("short", 1)
        (info,) = env.ws(now=NOW + 12 * 3600).list()
        assert (info.expired, info.remaining) == (False, dt.timedelta(hours=12))
        ws = env.ws(now=NOW + 2 * DAY)
        (info,) = ws.list()
        assert info.expired is True
        assert info.remaining == dt.timedelta(0)
        assert info.expires == local(NOW + DAY)
        rc, out, _ = run(ws.ws_list())
        assert rc == 0
        assert "     remaining time       : expired\n" in out
        assert info.path.is_dir()  # expired is not deleted (that is the expirer's job)

    def test_list_pattern_and_sorting(self, env):
        ws = env.ws()
        for name, days in (("b-run", 5), ("a-run", 9), ("other", 1)):
            ws.allocate(name, days)
        assert sorted(w.id for w in ws.list("*-run")) == ["a-run", "b-run"]
        rc, out, _ = run(ws.ws_list("-s", "-R"))
        assert out.split() == ["other", "b-run", "a-run"]
        rc, out, _ = run(ws.ws_list("-t"))
        terse = parse_ws_list(out)
        assert {w.id for w in terse} == {"a-run", "b-run", "other"}
        assert all(w.created is None and w.expires is None for w in terse)
        assert all(w.remaining is not None for w in terse)


# ----------------------------------------------------------------------------- filesystems
class TestFilesystems:
    def test_filesystems_and_default(self, env):
        ws = env.ws()
        assert ws.filesystems() == ["scratch", "ssd"]
        assert ws.default_filesystem() == "scratch"
        rc, out, _ = run(ws.ws_list("-l"))
        assert out == "available filesystems:\nscratch (default)\nssd\n"

    def test_configured_default(self, env):
        env.config({**CONFIG, "default": "ssd"})
        ws = env.ws()
        assert ws.default_filesystem() == "ssd"
        assert ws.allocate("x", 1).path == env.path("x", "ssd")

    def test_allocate_on_ssd_and_list_filter(self, env):
        ws = env.ws()
        ws.allocate("slow", 10)
        fast = ws.allocate("fast", 3, filesystem="ssd")
        assert fast.path == env.path("fast", "ssd") and fast.path.is_dir()
        assert [w.id for w in ws.list(filesystem="ssd")] == ["fast"]
        assert [w.id for w in ws.list(filesystem="scratch")] == ["slow"]
        assert {(w.id, w.filesystem) for w in ws.list()} == {("slow", "scratch"), ("fast", "ssd")}
        assert ws.find("fast") == fast.path
        assert ws.find("fast", filesystem="scratch") is None

    def test_same_name_on_two_filesystems(self, env):
        # hpc-workspace 1.6: ws_find prints both (configuration order), ws_allocate without -F
        # reuses the default filesystem's, and find() returns that one too.
        env.config({**CONFIG, "default": "ssd"})
        ws = env.ws()
        on_scratch = ws.allocate("dup", 3, filesystem="scratch").path
        on_ssd = ws.allocate("dup", 3, filesystem="ssd").path
        rc, out, _ = run(ws.ws_find("dup"))
        assert (rc, out) == (0, f"{on_scratch}\n{on_ssd}\n")
        assert ws.find("dup") == on_ssd
        assert ws.allocate_ex("dup", 3)[0].path == on_ssd
        ws.release("dup", filesystem="ssd")
        assert ws.find("dup") == on_scratch
        # with no copy on the default, ws_allocate reuses the other one instead of making a new one
        info, created = ws.allocate_ex("dup", 3)
        assert (info.path, info.filesystem, created) == (on_scratch, "scratch", False)

    def test_unknown_filesystem_is_a_configuration_error(self, env):
        ws = env.ws()
        with pytest.raises(ConfigurationError) as ei:
            ws.allocate("x", 1, filesystem="nvme")
        msg = str(ei.value)
        assert "nvme" in msg and "scratch" in msg and "ssd" in msg
        assert not (env.root / "nvme").exists()


# ----------------------------------------------------------------------------- validation
BAD_NAMES = ["", "-x", ".hidden", "_x", "a b", "a/b", "x;rm", "ä", "name\n", None, 5]
BAD_DAYS = [0, -1, "0", "abc", "1.5", 1.5, "", None, True]


class TestValidation:
    @pytest.fixture
    def ws(self, env, monkeypatch):
        ws = env.ws()
        calls = []

        def run(self, *args, **kwargs):
            calls.append(args)
            pytest.fail(f"a tool ran: {args}")

        monkeypatch.setattr(Workspace, "run", run)
        yield ws
        assert calls == []
        assert not (env.root / ".ws-db").exists()

    @pytest.mark.parametrize("name", BAD_NAMES)
    def test_bad_names(self, ws, name):
        for call in (
            lambda: ws.allocate(name, 1),
            lambda: ws.extend(name, 1),
            lambda: ws.release(name),
            lambda: ws.find(name),
        ):
            with pytest.raises(ConfigurationError, match="not valid"):
                call()

    @pytest.mark.parametrize("days", BAD_DAYS)
    def test_bad_days(self, ws, days):
        with pytest.raises(ConfigurationError, match="days"):
            ws.allocate("ok", days)
        with pytest.raises(ConfigurationError, match="days"):
            ws.extend("ok", days)

    def test_bad_reminder(self, ws):
        with pytest.raises(ConfigurationError, match="reminder"):
            ws.allocate("ok", 3, reminder=0)

    def test_good_names_pass_the_check(self):
        for name in ("a", "A1", "1a", "a.b-c_d", "x" * 100):
            assert _workspace.check_name(name) == name


# ----------------------------------------------------------------------------- restore
class TestRestore:
    def released(self, env):
        ws = env.ws()
        old = ws.allocate("old", 5)
        (old.path / "result.txt").write_text("precious")
        ws.release("old")
        target = ws.allocate("target", 5)
        (name,) = ws.released()
        return ws, name, target

    def test_restore_brings_data_into_target(self, env):
        ws, name, target = self.released(env)
        assert name == f"{USER}-old-{NOW}"
        ws.restore(name, "target")
        assert (target.path / name / "result.txt").read_text() == "precious"
        assert ws.released() == []
        assert not env.removed(name).exists()

    def test_raw_wrong_answer_is_refused_with_exit_0(self, env):
        ws, name, target = self.released(env)
        rc, out, err = run(ws.ws_restore(name, "target", input="wrong\n"))
        assert rc == 0
        assert out.startswith("to verify that you are human, please type '")
        assert out.endswith("': not sure if you are human\n")
        assert ws.released() == [name]
        assert (env.removed(name) / "result.txt").read_text() == "precious"
        assert list(target.path.iterdir()) == []

    def test_restore_raises_when_refused(self, env, monkeypatch):
        ws, name, target = self.released(env)
        monkeypatch.setattr(_workspace, "_typed_word", lambda shown: "wrong")
        with pytest.raises(WorkspaceError) as ei:
            ws.restore(name, "target")
        assert "not sure if you are human" in ei.value.problem
        assert ws.released() == [name]
        assert list(target.path.iterdir()) == []

    def test_restore_of_unknown_released_name_raises(self, env):
        ws, name, target = self.released(env)
        with pytest.raises(WorkspaceError) as ei:
            ws.restore(f"{USER}-nothere-{NOW}", "target")
        assert "Error: workspace does not exist." in ei.value.problem
        assert ws.released() == [name]

    def test_restore_into_missing_target_raises(self, env):
        ws, name, _ = self.released(env)
        with pytest.raises(WorkspaceError) as ei:
            ws.restore(name, "nosuchtarget")
        assert ei.value.returncode == 1
        assert "Error: target workspace does not exist!" in ei.value.problem

    def test_raw_restore_list(self, env):
        ws, name, _ = self.released(env)
        rc, out, _ = run(ws.ws_restore("-l"))
        assert rc == 0
        when = format_ctime(local(NOW))
        assert out == f"scratch:\n{name}\n\tunavailable since {when}\nssd:\n"


# ----------------------------------------------------------------------------- register
def test_ws_register_keeps_symlinks(env, tmp_path):
    ws = env.ws()
    a = ws.allocate("a", 3)
    b = ws.allocate("b", 3, filesystem="ssd")
    links = tmp_path / "links"
    rc, out, err = run(ws.ws_register(links))
    assert rc == 0
    la, lb = links / "scratch" / f"{USER}-a", links / "ssd" / f"{USER}-b"
    assert la.is_symlink() and Path(os.readlink(la)) == a.path
    assert lb.is_symlink() and Path(os.readlink(lb)) == b.path
    assert out.splitlines() == [f"keep {la}", f"keep {lb}"]
    ws.release("a")
    rc, out, _ = run(ws.ws_register(links))
    assert rc == 0
    assert not la.is_symlink() and lb.is_symlink()
    assert out.splitlines() == [f"keep {lb}"]


# ----------------------------------------------------------------------------- raw exit codes
class TestRawExitCodes:
    def test_find(self, env):
        ws = env.ws()
        assert run(ws.ws_find("nothere")) == (255, "", "Error: no such workspace\n")
        info = ws.allocate("here", 1)
        assert run(ws.ws_find("here")) == (0, f"{info.path}\n", "")
        assert run(ws.ws_find("-F", "nvme", "here")) == (255, "", "Error: no such filesystem.\n")
        assert run(ws.ws_find("-l")) == (0, "available filesystems:\nscratch\nssd\n", "")

    def test_allocate_illegal_name_is_1(self, env):
        ws = env.ws()
        for bad in ("a/b", ".x", "a b", "a\n"):
            assert run(ws.ws_allocate(bad, "1")) == (1, "", ILLEGAL_NAME + "\n")
        assert run(ws.ws_release("a/b")) == (1, "", ILLEGAL_NAME + "\n")
        assert not (env.root / "scratch").exists()

    def test_allocate_unknown_filesystem_is_1(self, env):
        rc, out, err = run(env.ws().ws_allocate("-F", "nvme", "x", "1"))
        assert (rc, out, err) == (1, "", "Error: please specify an existing filesystem with -F!\n")

    def test_release_missing_is_255(self, env):
        assert run(env.ws().ws_release("x")) == (255, "", "Error: workspace does not exist!\n")

    def test_list_unknown_filesystem_is_255(self, env):
        ws = env.ws()
        assert run(ws.ws_list("-F", "nvme")) == (255, "", "Error: no such filesystem.\n")
        with pytest.raises(WorkspaceError) as ei:
            ws.list(filesystem="nvme")
        assert ei.value.returncode == 255

    def test_extend_usage_exits_0(self, env):
        rc, out, _ = run(env.ws().ws_extend("onlyname"))
        assert (rc, out) == (0, "Usage: ws_extend [-F filesystem] workspace days\n")

    def test_argv_runs_the_local_module(self, env):
        argv = env.ws().argv("ws_list", "-l")
        assert argv == [sys.executable, "-m", "taurus_tools.workspace.local_tools", "ws_list", "-l"]


# ----------------------------------------------------------------------------- CLI
class TestCli:
    @pytest.fixture
    def cli(self, env, monkeypatch, capsys):
        monkeypatch.setenv(ROOT_ENV, str(env.root))
        monkeypatch.setenv(NOW_ENV, str(NOW))

        def call(*args):
            capsys.readouterr()
            rc = main(["ws", "--ws-backend", "local", *args])
            out, err = capsys.readouterr()
            return rc, out, err

        return call

    def test_allocate_prints_path(self, cli, env):
        rc, out, err = cli("allocate", "data", "10")
        assert rc == 0
        assert out == f"{env.path('data')}\n"
        assert env.path("data").is_dir()
        assert "data: expires" in err and "3 extensions left" in err

    def test_allocate_json(self, cli, env):
        rc, out, _ = cli("allocate", "--json", "-F", "ssd", "-c", "note", "fast", "3")
        assert rc == 0
        d = json.loads(out)
        assert d["id"] == "fast" and d["path"] == str(env.path("fast", "ssd"))
        assert (d["filesystem"], d["comment"], d["extensions_left"]) == ("ssd", "note", 1)
        assert d["remaining_seconds"] == 3 * DAY and d["expired"] is False

    def test_list_table_and_json(self, cli, env):
        cli("allocate", "alpha", "10")
        cli("allocate", "-F", "ssd", "beta", "2")
        rc, out, _ = cli("list")
        assert rc == 0
        lines = out.splitlines()
        assert lines[0].split() == ["ID", "FILESYSTEM", "EXPIRES", "LEFT", "EXT", "PATH"]
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        assert rows["alpha"][1] == "scratch" and rows["alpha"][-1] == str(env.path("alpha"))
        assert rows["alpha"][4:6] == ["10d", "0h"] and rows["alpha"][6] == "3"
        assert rows["beta"][1] == "ssd"
        rc, out, _ = cli("list", "--json")
        data = json.loads(out)
        assert {d["id"] for d in data} == {"alpha", "beta"}
        for d in data:
            assert set(d) >= {"id", "path", "filesystem", "created", "expires", "remaining_seconds",
                              "extensions_left", "comment", "group", "expired"}
        rc, out, _ = cli("list", "--json", "-F", "ssd")
        assert [d["id"] for d in json.loads(out)] == ["beta"]
        rc, out, _ = cli("list", "--json", "al*")
        assert [d["id"] for d in json.loads(out)] == ["alpha"]

    def test_empty_list(self, cli):
        rc, out, err = cli("list")
        assert rc == 0
        assert out.split() == ["ID", "FILESYSTEM", "EXPIRES", "LEFT", "EXT", "PATH"]
        assert "(no workspaces)" in err

    def test_extend_release_find(self, cli, env):
        cli("allocate", "data", "10")
        rc, out, _ = cli("extend", "--json", "data", "20")
        assert rc == 0
        d = json.loads(out)
        assert (d["extensions_left"], d["remaining_seconds"]) == (2, 20 * DAY)
        rc, out, _ = cli("find", "data")
        assert (rc, out) == (0, f"{env.path('data')}\n")
        rc, out, _ = cli("find", "--json", "data")
        assert json.loads(out) == {"id": "data", "path": str(env.path("data"))}
        rc, out, err = cli("release", "data")
        assert (rc, out) == (0, "") and "released data" in err
        assert not env.path("data").exists()
        rc, out, err = cli("find", "data")
        assert (rc, out) == (1, "")
        assert "no workspace named 'data'" in err

    def test_release_missing_exits_1(self, cli):
        rc, _, err = cli("release", "nothere")
        assert rc == 1
        assert "workspace does not exist" in err

    def test_extend_without_extensions_exits_1(self, cli):
        cli("allocate", "-F", "ssd", "fast", "2")
        assert cli("extend", "-F", "ssd", "fast", "5")[0] == 0
        rc, _, err = cli("extend", "-F", "ssd", "fast", "6")
        assert rc == 1
        assert "no more extensions" in err

    @pytest.mark.parametrize(
        "args",
        [("allocate", "bad/name", "1"), ("allocate", "ok", "0"), ("allocate", "ok", "x"),
         ("find", ".x"), ("allocate", "-F", "nvme", "ok", "1")],
    )
    def test_usage_errors_exit_2(self, cli, env, args):
        rc, out, err = cli(*args)
        assert rc == 2
        assert out == ""
        assert err.startswith("taurus-tools: error:")
        assert not (env.root / "scratch").exists()
