"""Workspace backends: the automatic choice and its reason, and a backend of the user's own.

The site's tools are stub executables in a tmp folder (their search is the datamover's
``find_tools``); the local backend and a custom one run taurus-tools' real local tools.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pytest

from helpers import write_stub

from taurus_tools import (
    CacheWorkspace,
    Datamover,
    LocalBackend,
    LocalWorkspaceBackend,
    SiteBackend,
    SiteWorkspaceBackend,
    Workspace,
    WorkspaceBackend,
    select_workspace_backend,
    stage_out,
)
from taurus_tools.errors import BackendUnavailableError, CommandNotFoundError, ConfigurationError
from taurus_tools.workspace.backends import ROOT_ENV, WS_TOOLS

pytestmark = pytest.mark.timeout(60)

SYSTEM_WS = os.path.exists("/usr/bin/ws_allocate")
no_system_ws = pytest.mark.skipif(SYSTEM_WS, reason="this machine has /usr/bin/ws_allocate")


def site_tools(folder: Path, *names: str) -> Path:
    for name in names:
        write_stub(folder, name, "exit 0\n")
    return folder


# ----------------------------------------------------------------------------- the choice
class TestSelection:
    def test_site_tools_on_path(self, tmp_path):
        bin_dir = site_tools(tmp_path / "site bin", "ws_allocate", "ws_list")
        chosen = select_workspace_backend(env={"PATH": str(bin_dir)})
        assert isinstance(chosen, SiteWorkspaceBackend) and chosen.name == "site"
        assert chosen.reason == f"found ws_* tools in {bin_dir}: ws_allocate, ws_list"
        assert chosen.tools() == ("ws_allocate", "ws_list")
        assert chosen.argv("ws_list", ["-l", "-F x"]) == [str(bin_dir / "ws_list"), "-l", "-F x"]
        assert chosen.env() is None and chosen.root is None and chosen.is_cluster() is True
        assert str(chosen) == f"site ({chosen.reason})"

    def test_site_tools_in_tools_dir(self, tmp_path):
        bin_dir = site_tools(tmp_path / "bin", "ws_allocate", "ws_find", "ws_release")
        chosen = select_workspace_backend("site", tools_dir=bin_dir, env={"PATH": str(tmp_path)})
        assert chosen.name == "site"
        assert chosen.reason == f"found ws_* tools in {bin_dir}: ws_allocate, ws_find, ws_release"

    def test_site_tool_not_installed(self, tmp_path):
        chosen = select_workspace_backend(tools_dir=site_tools(tmp_path / "bin", "ws_allocate", "ws_list"))
        with pytest.raises(CommandNotFoundError, match="ws_restore") as err:
            chosen.argv("ws_restore", ["-l"])
        assert err.value.available == ("ws_allocate", "ws_list")

    @no_system_ws
    def test_no_site_tools_is_local_with_reason(self, tmp_path):
        site_tools(tmp_path / "bin", "ws_list")  # no ws_allocate: not enough
        root = tmp_path / "ws root"
        env = {"PATH": str(tmp_path / "bin"), "KEEP": "me"}
        chosen = select_workspace_backend("auto", root=root, env=env)
        assert isinstance(chosen, LocalWorkspaceBackend) and chosen.name == "local"
        assert chosen.reason == f"no ws_* tools found (searched PATH, /usr/bin); local workspaces under {root}"
        assert chosen.root == root and chosen.is_cluster() is False
        assert chosen.env() == {**env, ROOT_ENV: str(root)}
        assert chosen.tools() == WS_TOOLS
        module = "taurus_tools.workspace.local_tools"
        assert chosen.argv("ws_list", ["-l"]) == [sys.executable, "-m", module, "ws_list", "-l"]
        with pytest.raises(CommandNotFoundError, match="not a workspace tool"):
            chosen.argv("ls", [])

    def test_local_asked_for_searches_nothing(self, tmp_path):
        bin_dir = site_tools(tmp_path / "bin", "ws_allocate")
        chosen = select_workspace_backend("local", root=tmp_path / "r", env={"PATH": str(bin_dir)})
        assert chosen.name == "local"
        assert chosen.reason == f"asked for local workspaces under {tmp_path / 'r'}"

    def test_local_root_defaults_to_the_environment(self, tmp_path, monkeypatch):
        monkeypatch.setenv(ROOT_ENV, str(tmp_path / "from env"))
        assert LocalWorkspaceBackend().root == tmp_path / "from env"

    @no_system_ws
    def test_site_without_tools_is_unavailable(self, tmp_path):
        with pytest.raises(BackendUnavailableError, match=r"no ws_allocate found; searched PATH, /usr/bin"):
            select_workspace_backend("site", env={"PATH": str(tmp_path)})

    def test_root_with_site_tools(self, tmp_path):
        bin_dir = site_tools(tmp_path / "bin", "ws_allocate")
        with pytest.raises(ConfigurationError, match="root= applies to the local backend only"):
            select_workspace_backend(root=tmp_path, env={"PATH": str(bin_dir)})

    def test_tools_dir_without_ws_allocate(self, tmp_path):
        with pytest.raises(ConfigurationError, match="holds no ws_allocate"):
            select_workspace_backend(tools_dir=site_tools(tmp_path / "bin", "ws_list"))

    def test_unknown_name_lists_the_valid_ones(self):
        with pytest.raises(ConfigurationError, match="'slurm' is not one of: auto, site, local"):
            select_workspace_backend("slurm")

    def test_workspace_takes_the_choice(self, tmp_path, monkeypatch):
        bin_dir = site_tools(tmp_path / "bin", "ws_allocate", "ws_list")
        monkeypatch.setenv("PATH", str(bin_dir))
        ws = Workspace()
        assert isinstance(ws.workspace_backend, SiteWorkspaceBackend)
        assert (ws.backend, ws.reason, ws.root) == ("site", ws.workspace_backend.reason, None)


def test_backends_say_whether_they_reach_a_cluster():
    assert LocalBackend().is_cluster() is False
    assert SiteBackend({"dtcp": "/x/dtcp"}).is_cluster() is True
    assert SiteWorkspaceBackend({"ws_allocate": "/x/ws_allocate"}).is_cluster() is True


# ----------------------------------------------------------------------------- one's own
WRAPPER = """\
import json, os, sys
with open(os.environ["RECORD"], "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv(sys.argv[1], sys.argv[1:])
"""


class Recorded(WorkspaceBackend):
    """A user's own backend: the local tools, each call logged by a wrapper first."""

    name = "recorded"

    def __init__(self, root: Path, record: Path) -> None:
        super().__init__("through a wrapper that records argv")
        self.local = LocalWorkspaceBackend(root)
        self.record = record
        self.wrapper = root.parent / "wrapper.py"
        self.wrapper.write_text(WRAPPER)

    def tools(self) -> Tuple[str, ...]:
        return ("ws_allocate", "ws_list", "ws_release")

    def argv(self, tool: str, args: Sequence[str]) -> List[str]:
        if tool not in self.tools():
            raise CommandNotFoundError(tool, self.tools(), "not offered by the recorded backend")
        return [sys.executable, str(self.wrapper), *self.local.argv(tool, args)]

    def env(self) -> Optional[dict]:
        return {**(self.local.env() or {}), "RECORD": str(self.record)}


@pytest.fixture
def recorded(tmp_path) -> Recorded:
    return Recorded(tmp_path / "ws", tmp_path / "argv.jsonl")


def calls(backend: Recorded) -> List[List[str]]:
    lines = backend.record.read_text().splitlines() if backend.record.exists() else []
    return [json.loads(line)[3:] for line in lines]  # drop python -m taurus_tools.workspace.local_tools


class TestOwnBackend:
    def test_workspace_runs_through_it(self, recorded):
        ws = Workspace(recorded)
        assert ws.workspace_backend is recorded
        assert (ws.backend, ws.reason) == ("recorded", "through a wrapper that records argv")
        assert ws.tools() == ("ws_allocate", "ws_list", "ws_release")
        comment = "-rf it's \"quoted\" ünï $HOME"  # a leading dash stays the comment
        info = ws.allocate("data", 3, comment=comment)
        assert info.comment == comment
        assert info.path == recorded.local.root / "scratch" / f"{ws.user}-data" and info.path.is_dir()
        ws.release("data")
        assert not info.path.exists()
        made = calls(recorded)
        assert made[0] == ["ws_allocate", f"--comment={comment}", "data", "3"]
        assert [c[0] for c in made] == ["ws_allocate", "ws_list", "ws_release"]

    def test_tool_it_does_not_offer(self, recorded):
        with pytest.raises(CommandNotFoundError, match="not offered by the recorded backend"):
            Workspace(recorded).ws_find("data")
        assert calls(recorded) == []

    def test_cache_workspace_and_stage_out(self, recorded, tmp_path):
        ws = Workspace(recorded)
        with CacheWorkspace(workspace=ws) as cws:
            path = cws.path
            assert path.parent.parent == recorded.local.root and path.is_dir()
        assert not cws.allocated and not path.exists()
        target = tmp_path / "out" / "result.txt"
        target.parent.mkdir()
        with stage_out(target, datamover=Datamover("local"), workspace=ws, progress=False) as tmp:
            tmp.write_text("staged")
        assert target.read_text() == "staged"
        tools = [c[0] for c in calls(recorded)]
        assert tools.count("ws_allocate") == 2 and tools.count("ws_release") == 2

    def test_root_or_tools_dir_with_a_backend_object(self, recorded, tmp_path):
        for option in ({"root": tmp_path}, {"tools_dir": tmp_path}):
            with pytest.raises(ConfigurationError, match="a WorkspaceBackend has its own"):
                Workspace(recorded, **option)

    def test_not_a_backend(self):
        with pytest.raises(ConfigurationError, match="or a WorkspaceBackend, got 42"):
            Workspace(42)  # type: ignore[arg-type]

    def test_defaults_of_the_interface(self, recorded):
        assert recorded.root is None and recorded.is_cluster() is True
        assert repr(recorded) == "<Recorded reason='through a wrapper that records argv'>"
