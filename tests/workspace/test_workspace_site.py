"""The site backend against stub ``ws_*`` executables that print what hpc-workspace prints.

The stubs are tiny ``/bin/sh`` (and, for ``ws_restore``, Python) scripts in a tmp folder,
used through ``Workspace("site", tools_dir=...)`` or ``PATH``.  Their output and exit codes
follow REFERENCE.md §3 and the observed behaviour of hpc-workspace 1.x (and 2.x where noted).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import prepend_path, write_stub

from taurus_tools.cli.main import main
from taurus_tools.errors import (
    BackendUnavailableError,
    CommandNotFoundError,
    ConfigurationError,
    WorkspaceError,
)
from taurus_tools.workspace.workspace import CacheWorkspace, Workspace, _category_answer, _typed_word
from taurus_tools.workspace.format import (
    WorkspaceInfo,
    current_user,
    format_ws_list_entry,
    parse_ws_list,
)

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).resolve().parents[1] / "data" / "ws_list"
#: The stubs make ``<user>-<name>`` folders for the caller, as the real tools do.
USER = current_user()
SYSTEM_WS = os.path.exists("/usr/bin/ws_allocate")


class Site:
    """A folder of stub tools, a workspace space, and a log of the stubs' argv."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.space = tmp_path / "space"
        self.space.mkdir()
        self.log = tmp_path / "argv.log"
        self.list_file = tmp_path / "ws_list.out"
        self.list_file.write_text("")
        self.fs_file = tmp_path / "ws_list_l.out"
        self.fs_file.write_text("available filesystems:\nscratch (default)\nssd\n")
        self.details_file = tmp_path / "ws_list_L.out"  # version 2 only
        self.allocate()  # every site has ws_allocate
        self.stub(
            "ws_list",
            f"""
            echo "ws_list $*" >> '{self.log}'
            if [ "$1" = "-l" ]; then cat '{self.fs_file}'; exit; fi
            if [ "$1" = "-L" ]; then
                [ -f '{self.details_file}' ] || {{ echo "error: unknown option -L" >&2; exit 2; }}
                cat '{self.details_file}'; exit
            fi
            cat '{self.list_file}'
            if [ -f '{self.list_file}.stderr' ]; then cat '{self.list_file}.stderr' >&2; exit 1; fi
            """,
        )

    def stub(self, name: str, body: str) -> Path:
        return write_stub(self.bin, name, textwrap.dedent(body))

    def py_stub(self, name: str, body: str) -> Path:
        path = self.stub(name, "")
        path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
        return path

    def allocate(self, info: str = "Info", exit_code: int = 0) -> None:
        """A version 1 (``Info:``) or version 2 (``info:``) ws_allocate that works."""
        self.stub(
            "ws_allocate",
            f"""
            echo "ws_allocate $*" >> '{self.log}'
            eval name=\\${{$(($# - 1))}}
            eval days=\\${{$#}}
            dir='{self.space}'/{USER}-$name
            if [ -d "$dir" ]; then
                echo "{info}: reusing workspace." >&2
            else
                mkdir -p "$dir"
                echo "{info}: creating workspace." >&2
            fi
            echo "$dir"
            echo "remaining extensions  : 3" >&2
            echo "remaining time in days: $days" >&2
            exit {exit_code}
            """,
        )

    def path(self, name: str) -> Path:
        return self.space / f"{USER}-{name}"

    def replay(self, fixture: str, owner: str = "marie") -> str:
        """Make ws_list print a reference output, ``owner``'s folders turned into the caller's.

        A fixture with a ``.stderr.txt`` twin is a crashed run: that goes to stderr, exit 1.
        """
        text = re.sub(rf"(?<![\w-]){re.escape(owner)}-", f"{USER}-", (DATA / fixture).read_text())
        self.list_file.write_text(text)
        err = DATA / fixture.replace(".txt", ".stderr.txt")
        if err.exists():
            Path(f"{self.list_file}.stderr").write_text(err.read_text())
        return text

    def listed(self, *infos: WorkspaceInfo) -> None:
        self.list_file.write_text("".join(format_ws_list_entry(i) for i in infos))

    def calls(self) -> list:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def ws(self, **kwargs) -> Workspace:
        return Workspace("site", tools_dir=self.bin, **kwargs)


@pytest.fixture
def site(tmp_path) -> Site:
    return Site(tmp_path)


def entry(site: Site, name: str, days: int = 10, ext: int = 3) -> WorkspaceInfo:
    return WorkspaceInfo(
        id=name,
        path=site.path(name),
        filesystem="scratch",
        created=dt.datetime(2026, 7, 2, 10, 0, 0),
        expires=dt.datetime(2026, 7, 2, 10, 0, 0) + dt.timedelta(days=days),
        remaining=dt.timedelta(days=days - 1, hours=23),
        extensions_left=ext,
    )


# ----------------------------------------------------------------------------- choosing
class TestBackendChoice:
    def test_tools_dir(self, site):
        ws = site.ws()
        assert ws.tools() == ("ws_allocate", "ws_list")
        assert ws.backend == "site"
        assert "ws_allocate" in ws.reason
        assert ws.argv("ws_list", "-l") == [str(site.bin / "ws_list"), "-l"]

    def test_auto_picks_site_from_path(self, site, monkeypatch):
        prepend_path(monkeypatch, site.bin)
        ws = Workspace("auto")
        assert ws.backend == "site"
        assert ws.argv("ws_allocate", "x", "1") == [str(site.bin / "ws_allocate"), "x", "1"]

    @pytest.mark.skipif(SYSTEM_WS, reason="this machine has /usr/bin/ws_allocate")
    def test_auto_without_tools_is_local(self, tmp_path, monkeypatch):
        monkeypatch.setenv("PATH", str(tmp_path))
        ws = Workspace("auto", root=tmp_path / "root")
        assert ws.backend == "local"
        assert "no ws_* tools found" in ws.reason

    @pytest.mark.skipif(SYSTEM_WS, reason="this machine has /usr/bin/ws_allocate")
    def test_site_without_tools_is_unavailable(self, tmp_path, monkeypatch):
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(BackendUnavailableError, match="no ws_allocate found"):
            Workspace("site")

    def test_missing_tools_dir(self, tmp_path):
        with pytest.raises(ConfigurationError, match="not an existing folder"):
            Workspace("site", tools_dir=tmp_path / "nope")

    def test_tools_dir_without_ws_allocate(self, tmp_path):
        write_stub(tmp_path / "bin", "ws_list", "exit 0\n")
        with pytest.raises(ConfigurationError, match="holds no ws_allocate"):
            Workspace("site", tools_dir=tmp_path / "bin")

    def test_root_is_for_local_only(self, site, tmp_path):
        with pytest.raises(ConfigurationError, match="local backend only"):
            Workspace("site", tools_dir=site.bin, root=tmp_path)

    def test_bad_backend_name(self):
        with pytest.raises(ConfigurationError, match="auto, site, local"):
            Workspace("cloud")

    def test_tool_not_installed(self, site):
        with pytest.raises(CommandNotFoundError, match="ws_register"):
            site.ws().ws_register("/tmp/x")


# ----------------------------------------------------------------------------- allocate
class TestAllocate:
    def test_raw_handle_v1_output(self, site):
        h = site.ws().ws_allocate("data", "10")
        out, err = h.communicate(timeout=30)
        assert h.returncode == 0
        assert out == f"{site.path('data')}\n"
        assert err == (
            "Info: creating workspace.\nremaining extensions  : 3\nremaining time in days: 10\n"
        )
        assert site.path("data").is_dir()

    def test_success_with_listing(self, site):
        site.listed(entry(site, "other"), entry(site, "data"))
        info, created = site.ws().allocate_ex("data", 10, comment="c", filesystem="scratch")
        assert created is True
        assert info == entry(site, "data")
        assert site.calls() == ["ws_allocate -F scratch --comment=c data 10", "ws_list -F scratch data"]

    def test_success_not_listed_falls_back_to_path(self, site):
        info = site.ws(filesystem="ssd").allocate("data", 3)
        assert info == WorkspaceInfo(id="data", path=site.path("data"), filesystem="ssd")
        assert site.calls()[0] == "ws_allocate -F ssd data 3"

    @pytest.mark.parametrize("word", ["Info", "info"])
    def test_created_then_reused(self, site, word):
        site.allocate(info=word)
        ws = site.ws()
        assert ws.allocate_ex("data", 5)[1] is True
        info, created = ws.allocate_ex("data", 5)
        assert created is False
        assert info.path == site.path("data")

    def test_v2_lowercase_output_accepted(self, site):
        site.stub(
            "ws_allocate",
            f"""
            mkdir -p '{site.space}/{USER}-v2'
            echo "info: creating workspace." >&2
            echo '{site.space}/{USER}-v2'
            echo "remaining extensions  : 3" >&2
            echo "remaining time in days: 7" >&2
            """,
        )
        assert site.ws().allocate("v2", 7).path == site.path("v2")

    def test_error_lines_do_not_mean_failure(self, site):
        # over the maximum: an "Error:" line, yet exit 0 with a path = success
        site.stub(
            "ws_allocate",
            f"""
            echo "Error: Duration longer than allowed for this workspace" >&2
            echo "       setting to allowed maximum of 30" >&2
            mkdir -p '{site.space}/{USER}-big'
            echo "Info: creating workspace." >&2
            echo '{site.space}/{USER}-big'
            echo "remaining extensions  : 3" >&2
            echo "remaining time in days: 30" >&2
            """,
        )
        assert site.ws().allocate("big", 100).path == site.path("big")

    def test_path_that_does_not_exist(self, site):
        site.stub("ws_allocate", f"echo '{site.space}/{USER}-ghost'\n")
        with pytest.raises(WorkspaceError) as ei:
            site.ws().allocate("ghost", 1)
        assert "does not exist" in ei.value.problem
        assert ei.value.returncode == 0
        assert ei.value.output == f"{site.space}/{USER}-ghost\n"

    def test_relative_path(self, site):
        site.stub("ws_allocate", "mkdir -p rel; echo rel\n")
        with pytest.raises(WorkspaceError, match="not an absolute path"):
            site.ws().allocate("rel", 1)

    def test_exit_0_but_no_path(self, site):
        site.stub("ws_allocate", 'echo "Info: creating workspace." >&2\n')
        with pytest.raises(WorkspaceError) as ei:
            site.ws().allocate("x", 1)
        assert "printed no path" in ei.value.problem
        assert ei.value.returncode == 0
        assert ei.value.stderr == "Info: creating workspace.\n"

    def test_nonzero_exit(self, site):
        site.stub(
            "ws_allocate",
            """
            echo "Info: creating workspace." >&2
            echo "Error: could not create workspace directory!" >&2
            exit 255
            """,
        )
        with pytest.raises(WorkspaceError) as ei:
            site.ws().allocate("x", 1)
        exc = ei.value
        assert exc.returncode == 255
        error = "Error: could not create workspace directory!"
        assert exc.stderr == f"Info: creating workspace.\n{error}\n"
        assert exc.problem == f"allocating workspace 'x' failed: {error}"
        assert "exited with code 255" in str(exc) and "could not create" in str(exc)
        assert exc.cmd == [str(site.bin / "ws_allocate"), "x", "1"]

    def test_nonzero_exit_even_with_a_path(self, site):
        path = site.path("x")
        site.stub("ws_allocate", f"mkdir -p '{path}'; echo '{path}'; exit 1\n")
        with pytest.raises(WorkspaceError) as ei:
            site.ws().allocate("x", 1)
        assert ei.value.returncode == 1

    def test_acl_denied_is_a_workspace_error(self, site):
        site.fs_file.write_text("available filesystems:\nscratch (default)\nrestricted\n")
        site.stub(
            "ws_allocate",
            'echo "Error: You are not allowed to use the specified workspace!" >&2; exit 4\n',
        )
        with pytest.raises(WorkspaceError) as ei:
            site.ws().allocate("x", 1, filesystem="restricted")
        assert ei.value.returncode == 4
        assert "not allowed" in ei.value.problem

    def test_unknown_filesystem_is_a_configuration_error(self, site):
        site.stub(
            "ws_allocate",
            'echo "Error: please specify an existing filesystem with -F!" >&2; exit 1\n',
        )
        with pytest.raises(ConfigurationError) as ei:
            site.ws().allocate("x", 1, filesystem="nvme")
        assert "'nvme'" in str(ei.value) and "scratch, ssd" in str(ei.value)

    def test_validation_before_running(self, site):
        ws = site.ws()
        with pytest.raises(ConfigurationError):
            ws.allocate("bad name", 1)
        with pytest.raises(ConfigurationError):
            ws.allocate("ok", 0)
        assert site.calls() == []


# ----------------------------------------------------------------------------- identity (issue 11)
def v2_entry(path: Path, shown: str, fs: str = "scratch") -> str:
    """One entry as current hpc-workspace 2 prints it, ``Id:`` text as given."""
    return (
        f"Id: {shown}\n"
        f"    workspace directory  : {path}\n"
        "    remaining time       : 9 days, 23 hours\n"
        "    creation time        : Thu Jul  2 10:00:00 2026\n"
        "    expiration time      : Sun Jul 12 10:00:00 2026\n"
        f"    filesystem name      : {fs}\n"
        "    available extensions : 3\n"
    )


class TestIdentity:
    @pytest.mark.parametrize(
        "shown",
        ["data.v2", f"{USER}-input-data.v2", "input-data.v2"],
        ids=["v2-after-last-dash", "admin-or-root", "v1"],
    )
    def test_allocate_finds_its_entry_whatever_the_id_line_says(self, site, shown):
        site.list_file.write_text(
            v2_entry(site.path("other-data.v2"), "data.v2") + v2_entry(site.path("input-data.v2"), shown)
        )
        info = site.ws().allocate("input-data.v2", 10)
        assert (info.id, info.path, info.filesystem, info.extensions_left) == (
            "input-data.v2",
            site.path("input-data.v2"),
            "scratch",
            3,
        )
        assert info.expires == dt.datetime(2026, 7, 12, 10, 0, 0)
        assert (info.owner, info.listed_id) == (USER, shown)

    @pytest.mark.parametrize(
        "fixture, owner",
        [(f.name, "jean-luc" if "dash_user" in f.name else "marie") for f in sorted(DATA.glob("v[12]_*.txt"))
         if not f.name.endswith((".stderr.txt", "_filesystems.txt", "_short.txt"))],
    )
    def test_every_reference_output_through_the_tool(self, site, fixture, owner):
        text = site.replay(fixture, owner)
        ws = site.ws()
        if fixture.startswith("v1_crash"):
            with pytest.raises(WorkspaceError):
                ws.list()
            return
        got = ws.list()
        assert got and got == parse_ws_list(text, user=USER)
        mine = [w for w in got if w.owner == USER]
        assert mine and all(w.path.name == f"{USER}-{w.id}" for w in mine)
        assert all(w.owner is None and w.id == w.path.name for w in got if w.owner != USER)

    def test_list_pattern_matches_names_not_listed_ids(self, site):
        cache = "cache-node7-4711-0badcafe"
        site.list_file.write_text(
            v2_entry(site.path(cache), "0badcafe") + v2_entry(site.path("input-data"), "data")
        )
        ws = site.ws()
        assert [w.id for w in ws.list("cache-*")] == [cache]
        assert [w.id for w in ws.list("input-*")] == ["input-data"]
        assert ws.list("data") == []

    def test_listing_that_crashes_does_not_fail_allocate(self, site, caplog):
        site.replay("v1_crash_old_entry.txt")
        with caplog.at_level("WARNING", logger="taurus_tools.workspace.workspace"):
            info, created = site.ws().allocate_ex("fresh", 3)
        assert created is True
        assert info == WorkspaceInfo(id="fresh", path=site.path("fresh"))
        assert site.path("fresh").is_dir()
        assert "listing it failed" in caplog.text and "AttributeError" in caplog.text

    def test_listing_that_crashes_is_an_error_for_list(self, site):
        site.replay("v1_crash_old_entry.txt")
        with pytest.raises(WorkspaceError) as ei:
            site.ws().list()
        assert ei.value.returncode == 1
        assert "the tool crashed: AttributeError" in ei.value.problem

    def test_extend_reads_the_entry_by_path(self, site):
        site.path("input-data").mkdir()
        site.stub(
            "ws_extend",
            f"""
            echo "Info: extending workspace." >&2
            echo '{site.path("input-data")}'
            """,
        )
        site.list_file.write_text(v2_entry(site.path("input-data"), "data"))
        info = site.ws().extend("input-data", 10)
        assert (info.id, info.extensions_left) == ("input-data", 3)


# ----------------------------------------------------------------------------- CacheWorkspace
class TestCacheWorkspace:
    def release_stub(self, site: Site) -> None:
        site.stub(
            "ws_release",
            f"""
            echo "ws_release $*" >> '{site.log}'
            eval name=\\${{$#}}
            rm -rf '{site.space}'/{USER}-"$name"
            """,
        )

    def released(self, site: Site) -> list:
        return [c for c in site.calls() if c.startswith("ws_release")]

    def test_v2_listing_with_dashes(self, site):
        self.release_stub(site)
        ws = site.ws()
        # ws_list shows what current version 2 shows: the text after the last '-'
        site.stub("ws_list", f"""
            for d in '{site.space}'/{USER}-*; do
                [ -d "$d" ] || continue
                printf 'Id: %s\\n    workspace directory  : %s\\n' "${{d##*-}}" "$d"
                printf '    remaining time       : 0 days, 23 hours\\n    filesystem name      : ssd\\n'
            done
            """)
        with CacheWorkspace(workspace=ws) as cws:
            path = cws.path
            assert cws.info.filesystem == "ssd" and path.is_dir()
            assert [w.id for w in ws.list("cache-*")] == [cws.id]
        assert self.released(site) == [f"ws_release -F ssd {cws.id}"]
        assert not path.exists()

    def test_listing_fails_workspace_still_used_and_released(self, site):
        self.release_stub(site)
        site.replay("v1_crash_old_entry.txt")
        cws = CacheWorkspace(workspace=site.ws())
        assert cws.path == site.path(cws.id) and cws.path.is_dir()
        cws.cleanup()
        assert self.released(site) == [f"ws_release {cws.id}"]

    @pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
    def test_failure_after_allocating_releases(self, site, monkeypatch, error):
        self.release_stub(site)

        def broken(*args, **kwargs):
            raise error("while listing")

        monkeypatch.setattr(Workspace, "describe", broken)
        with pytest.raises(error):
            CacheWorkspace(workspace=site.ws())
        (allocated,) = [c.split()[-2] for c in site.calls() if c.startswith("ws_allocate")]
        assert self.released(site) == [f"ws_release {allocated}"]
        assert not site.path(allocated).exists()

    def test_failure_after_allocating_a_named_one_releases(self, site, monkeypatch):
        self.release_stub(site)
        monkeypatch.setattr(Workspace, "describe", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
        with pytest.raises(RuntimeError):
            CacheWorkspace("mycache", workspace=site.ws())
        assert self.released(site) == ["ws_release mycache"]

    def test_created_but_no_usable_path_releases(self, site):
        # exit 0 and "creating", but the printed folder is missing: the entry exists, so release it
        self.release_stub(site)
        site.stub(
            "ws_allocate",
            f"""
            echo "ws_allocate $*" >> '{site.log}'
            echo "Info: creating workspace." >&2
            echo '{site.space}/{USER}-gone'
            """,
        )
        with pytest.raises(WorkspaceError, match="does not exist"):
            CacheWorkspace("named", workspace=site.ws())
        assert self.released(site) == ["ws_release named"]

    def test_reused_workspace_is_never_released(self, site, monkeypatch):
        self.release_stub(site)
        site.path("shared").mkdir()
        monkeypatch.setattr(Workspace, "describe", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
        with pytest.raises(RuntimeError):
            CacheWorkspace("shared", workspace=site.ws())
        cws = None
        monkeypatch.undo()
        cws = CacheWorkspace("shared", workspace=site.ws())
        cws.cleanup()
        assert self.released(site) == []
        assert site.path("shared").is_dir()

    def test_failed_allocation_of_a_named_one_releases_nothing(self, site):
        self.release_stub(site)
        site.stub("ws_allocate", 'echo "Error: could not create workspace directory!" >&2; exit 255\n')
        with pytest.raises(WorkspaceError):
            CacheWorkspace("someone-elses", workspace=site.ws())
        assert self.released(site) == []


# ----------------------------------------------------------------------------- find
class TestFind:
    def find_stub(self, site: Site, *where: str) -> None:
        """ws_find as version 1: one line per filesystem holding the name, in config order."""
        for fs in where:
            (site.space / fs / f"{USER}-data").mkdir(parents=True)
        lines = "\n".join(
            f'[ -z "$fs" ] || [ "$fs" = {fs} ] && echo \'{site.space}/{fs}/{USER}-data\' && found=1'
            for fs in where
        )
        site.stub(
            "ws_find",
            f"""
            echo "ws_find $*" >> '{site.log}'
            fs=; found=
            if [ "$1" = -F ]; then fs=$2; shift 2; fi
            {lines}
            [ -n "$found" ] || {{ echo "Error: no such workspace" >&2; exit 255; }}
            """,
        )

    def test_several_filesystems_default_wins(self, site):
        self.find_stub(site, "ssd", "scratch")  # scratch is the default (ws_list -l)
        assert site.ws().find("data") == site.space / "scratch" / f"{USER}-data"
        assert site.calls() == ["ws_find data", "ws_list -l", "ws_find -F scratch data"]

    def test_several_filesystems_none_default_first_printed(self, site):
        self.find_stub(site, "ssd", "beegfs")
        assert site.ws().find("data") == site.space / "ssd" / f"{USER}-data"

    def test_filesystem_given(self, site):
        self.find_stub(site, "ssd", "scratch")
        assert site.ws().find("data", filesystem="ssd") == site.space / "ssd" / f"{USER}-data"
        assert site.calls() == ["ws_find -F ssd data"]

    def test_one_match_no_extra_calls(self, site):
        self.find_stub(site, "ssd")
        assert site.ws().find("data") == site.space / "ssd" / f"{USER}-data"
        assert site.calls() == ["ws_find data"]


# ----------------------------------------------------------------------------- list
class TestList:
    def test_v1(self, site):
        text = site.replay("v1_normal.txt")
        got = site.ws().list()
        assert got == parse_ws_list(text)
        assert [w.id for w in got] == ["simulation", "input-data.v2", "old_run", "tmp-job_4711"]
        assert [w.expired for w in got] == [False, False, True, False]
        assert got[1].comment.startswith("raw input")
        assert site.calls() == ["ws_list "]

    def test_v2(self, site):
        site.replay("v2_normal.txt")
        got = site.ws().list()
        assert [(w.id, w.filesystem, w.group, w.expired) for w in got] == [
            ("analysis", "horse", None, False),
            ("shared-results", "walrus", "p_lv_project", False),
            ("scratchpad", "horse", None, True),
        ]
        assert got[1].remaining == dt.timedelta(days=6, hours=1)

    def test_pattern_and_filesystem(self, site):
        site.replay("v1_normal.txt")
        got = site.ws().list("*_*", filesystem="ssd")
        assert [w.id for w in got] == ["old_run", "tmp-job_4711"]
        assert site.calls() == ["ws_list -F ssd"]

    def test_failure(self, site):
        site.stub("ws_list", 'echo "Error: no such filesystem." >&2; exit 255\n')
        with pytest.raises(WorkspaceError) as ei:
            site.ws().list(filesystem="nvme")
        assert ei.value.returncode == 255

    def test_empty(self, site):
        assert site.ws().list() == []

    def test_filesystems_v1(self, site):
        site.fs_file.write_text((DATA / "v1_filesystems.txt").read_text())
        ws = site.ws()
        assert ws.filesystems() == ["beegfs", "scratch", "ssd"]
        assert ws.default_filesystem() == "scratch"
        assert site.calls() == ["ws_list -l", "ws_list -l"]

    def test_filesystems_v2(self, site):
        site.fs_file.write_text((DATA / "v2_filesystems.txt").read_text())
        ws = site.ws()
        assert ws.filesystems() == ["horse", "walrus", "beegfs"]
        assert ws.default_filesystem() == "horse"


#: Version 2 ``ws_list -L``: horse is listed first (priority) but only listable for this user.
V2_DETAILS = """available filesystems (sorted according to priority):

      name maxduration  extensions  keeptime  releasekeeptime allocatable  extendable  restorable   comment
     horse          30           3         7                3       false       false        true   list only
    walrus          90           5         7                3        true        true        true   bulk data
    beegfs          30           2         1                1        true        true       false
"""


class TestDefaultFilesystem:
    def test_v2_first_listed_but_not_allocatable(self, site):
        site.fs_file.write_text((DATA / "v2_filesystems.txt").read_text())
        site.details_file.write_text(V2_DETAILS)
        assert site.ws().default_filesystem() == "walrus"
        assert site.calls() == ["ws_list -l", "ws_list -L"]

    def test_v2_without_details_first_listed(self, site):
        site.fs_file.write_text((DATA / "v2_filesystems.txt").read_text())
        assert site.ws().default_filesystem() == "horse"

    def test_v1_marker_needs_no_details(self, site):
        site.fs_file.write_text((DATA / "v1_filesystems.txt").read_text())
        assert site.ws().default_filesystem() == "scratch"
        assert site.calls() == ["ws_list -l"]


# ----------------------------------------------------------------------------- extend/release/find
class TestOthers:
    def test_extend(self, site):
        site.path("data").mkdir()
        site.stub(
            "ws_extend",
            f"""
            echo "ws_extend $*" >> '{site.log}'
            echo "Info: extending workspace." >&2
            echo '{site.path("data")}'
            echo "remaining extensions  : 2" >&2
            echo "remaining time in days: 20" >&2
            """,
        )
        site.listed(entry(site, "data", days=20, ext=2))
        info = site.ws().extend("data", 20, filesystem="scratch")
        assert (info.path, info.extensions_left) == (site.path("data"), 2)
        assert site.calls()[0] == "ws_extend -F scratch data 20"

    def test_extend_no_more_extensions(self, site):
        site.stub(
            "ws_extend",
            """
            echo "Info: extending workspace." >&2
            echo "Error: no more extensions." >&2
            exit 255
            """,
        )
        with pytest.raises(WorkspaceError) as ei:
            site.ws().extend("data", 20)
        assert ei.value.returncode == 255
        assert ei.value.problem == "extending workspace 'data' failed: Error: no more extensions."

    def test_release(self, site):
        site.stub("ws_release", f'echo "ws_release $*" >> \'{site.log}\'\n')
        site.ws().release("data", filesystem="ssd", delete_data=True)
        assert site.calls() == ["ws_release -F ssd --delete-data data"]

    def test_release_missing(self, site):
        site.stub("ws_release", 'echo "Error: workspace does not exist!" >&2; exit 255\n')
        with pytest.raises(WorkspaceError) as ei:
            site.ws().release("data")
        assert ei.value.returncode == 255
        error = "Error: workspace does not exist!"
        assert ei.value.problem == f"releasing workspace 'data' failed: {error}"

    def test_release_v2_error(self, site):
        site.stub("ws_release", 'echo "error: Non-existent workspace given." >&2; exit 255\n')
        with pytest.raises(WorkspaceError, match="Non-existent workspace given"):
            site.ws().release("data")

    def test_find(self, site):
        site.path("data").mkdir()
        site.stub(
            "ws_find",
            f"""
            if [ "$1" = data ]; then echo '{site.path("data")}'; exit 0; fi
            echo "Error: no such workspace" >&2; exit 255
            """,
        )
        ws = site.ws()
        assert ws.find("data") == site.path("data")
        assert ws.find("other") is None

    def test_released_list(self, site):
        site.stub(
            "ws_restore",
            f"""
            [ "$1" = -l ] || exit 1
            echo 'scratch:'
            echo '{USER}-old-1783072800'
            printf '\\tunavailable since Thu Jul  2 10:00:00 2026\\n'
            echo '{USER}-older-1782000000'
            printf '\\tunavailable since Sat Jun 20 00:00:00 2026\\n'
            echo 'ssd:'
            """,
        )
        assert site.ws().released() == [f"{USER}-old-1783072800", f"{USER}-older-1782000000"]


# ----------------------------------------------------------------------------- restore
#: ws_restore as hpc-workspace asks its question.  STUB_VERSION=1 (src/ruh.cpp): the syllables
#: are printed out of order and the terminal's cursor-left/right strings (terminfo cub1/cuf1)
#: make the word look right on screen; a refusal says "not sure if you are human".
#: STUB_VERSION=2 (since 2025-02, utils::new_ruh): a word and four numbered categories; a wrong
#: answer is only logged, nothing is printed, exit 0.  Both exit 0 whatever the answer and list
#: released workspaces with -l (version 2 adds "key : value" lines under each).
RESTORE_STUB = """
import curses, os, random, shutil, sys

SYL = ("a i u e o ka ki ku ke ko sa shi su se so ta chi tsu te to "
       "na ni nu ne no ha hi fu he ho ma mi mu me mo ya yu yo wa n").split()
WORDS = {"0": ["Dog", "Butterfly", "Squirrel"], "1": ["Bell pepper", "Apple", "Green beans"],
         "2": ["Lightbulb", "Rock", "Television"], "3": ["Martin Luther King Jr.", "Homer"]}
out = sys.stdout.buffer
args = sys.argv[1:]
space = os.environ["STUB_SPACE"]
removed = os.path.join(space, ".removed")
version = os.environ.get("STUB_VERSION", "1")
if args == ["-l"]:
    if version == "1":
        print("scratch:")
    for name in sorted(os.listdir(removed)) if os.path.isdir(removed) else []:
        print(name)
        if version == "1":
            print("\\tunavailable since Thu Jul  2 10:00:00 2026")
        else:
            print("\\tunavailable since : Thu Jul  2 10:00:00 2026")
            print("\\trestorable until  : Thu Jul 30 10:00:00 2026 (27 days, 23 hours)")
            print("\\tin filesystem     : scratch")
    sys.exit(0)
if len(args) != 2:
    print("Error: no target given."); sys.exit(1)
name, target = args
src = os.path.join(removed, name)
dst = os.path.join(space, "{user}-" + target)
if not os.path.isdir(dst):
    print("Error: target workspace does not exist!", file=sys.stderr); sys.exit(1)
if not os.path.isdir(src):
    print("Error: workspace does not exist.", file=sys.stderr); sys.exit(0)
if version == "2":
    number = os.environ.get("STUB_CATEGORY") or random.choice("012")
    word = os.environ.get("STUB_WORD") or random.choice(WORDS[number])
    print("Is '%s' an [0] Animal, [1] Fruit or Vegetable or [2] Object or [3] Person? "
          "<type 0/1/2/3 + enter> :" % word, end="", flush=True)
    line = sys.stdin.readline()
    if not line[:1] == number or os.environ.get("STUB_REFUSE"):
        sys.exit(0)
else:
    if not os.environ.get("TERM"):
        print("TERM environment variable not set.", file=sys.stderr); sys.exit(1)
    curses.setupterm()
    left, right = curses.tigetstr("cub1"), curses.tigetstr("cuf1")
    word = [random.choice(SYL) for _ in range(random.randint(3, 7))]
    w = [x.encode() for x in word]
    out.write(b"to verify that you are human, please type '")
    if os.environ.get("STUB_SCHEME", str(random.randint(1, 2))) == "1":
        out.write(w[0] + right * len(w[1]) + w[2] + left * (len(w[1]) + len(w[2])))
        out.write(w[1] + right * len(w[2]))
        out.write(b"".join(w[3:]))
    else:
        out.write(right * len(w[0]) + w[1] + left * (len(w[0]) + len(w[1])) + w[0] + right * len(w[1]))
        out.write(b"".join(w[2:]))
    out.write(b"': ")
    out.flush()
    line = sys.stdin.readline().rstrip("\\n")
    if line != "".join(word) or os.environ.get("STUB_REFUSE"):
        print("not sure if you are human")
        sys.exit(0)
    print("you are human")
if os.environ.get("STUB_SILENT_FAILURE"):
    sys.exit(0)
shutil.move(src, os.path.join(dst, name))
print("%s: restore successful, database entry removed." % ("Info" if version == "1" else "info"), file=sys.stderr)
""".replace("{user}", USER)


class TestRestore:
    NAME = f"{USER}-old-1783072800"

    @pytest.fixture
    def released(self, site, monkeypatch):
        site.py_stub("ws_restore", RESTORE_STUB)
        monkeypatch.setenv("STUB_SPACE", str(site.space))
        data = site.space / ".removed" / self.NAME
        data.mkdir(parents=True)
        (data / "result.txt").write_text("precious")
        site.path("target").mkdir()
        return data

    @pytest.mark.parametrize("scheme, term", [("1", None), ("2", "dumb"), ("1", "xterm-256color")])
    def test_answers_the_question(self, site, released, monkeypatch, scheme, term):
        monkeypatch.setenv("STUB_SCHEME", scheme)
        if term is None:
            monkeypatch.delenv("TERM", raising=False)
        else:
            monkeypatch.setenv("TERM", term)
        site.ws().restore(self.NAME, "target")
        assert (site.path("target") / self.NAME / "result.txt").read_text() == "precious"
        assert not released.exists()

    def test_many_random_words(self, site, released, monkeypatch):
        ws = site.ws()
        for _ in range(3):
            ws.restore(self.NAME, "target")
            moved = site.path("target") / self.NAME
            assert moved.is_dir()
            moved.rename(released)

    def test_refusal_raises(self, site, released, monkeypatch):
        monkeypatch.setenv("STUB_REFUSE", "1")
        with pytest.raises(WorkspaceError) as ei:
            site.ws().restore(self.NAME, "target")
        assert "not sure if you are human" in ei.value.problem
        assert (released / "result.txt").read_text() == "precious"
        assert list(site.path("target").iterdir()) == []

    def test_unknown_source_raises_although_exit_0(self, site, released):
        with pytest.raises(WorkspaceError) as ei:
            site.ws().restore(f"{USER}-nothere-1", "target")
        assert ei.value.returncode == 0
        assert "Error: workspace does not exist." in ei.value.problem

    def test_missing_target_raises(self, site, released):
        with pytest.raises(WorkspaceError) as ei:
            site.ws().restore(self.NAME, "nosuch")
        assert ei.value.returncode == 1
        assert "target workspace does not exist" in ei.value.problem

    def test_hanging_tool_times_out(self, site):
        site.stub("ws_restore", "sleep 30\n")
        with pytest.raises(WorkspaceError, match="did not finish"):
            site.ws().restore(self.NAME, "target", timeout=1)

    def test_bad_target_name(self, site):
        with pytest.raises(ConfigurationError):
            site.ws().restore(self.NAME, "../etc")

    @pytest.mark.parametrize(
        "number, word", [("0", "Dog"), ("1", "Bell pepper"), ("2", "Lightbulb"), ("3", "Martin Luther King Jr.")]
    )
    def test_answers_the_version_2_question(self, site, released, monkeypatch, number, word):
        monkeypatch.setenv("STUB_VERSION", "2")
        monkeypatch.setenv("STUB_CATEGORY", number)
        monkeypatch.setenv("STUB_WORD", word)
        site.ws().restore(self.NAME, "target")
        assert (site.path("target") / self.NAME / "result.txt").read_text() == "precious"

    def test_version_2_random_questions(self, site, released, monkeypatch):
        monkeypatch.setenv("STUB_VERSION", "2")
        ws = site.ws()
        for _ in range(4):
            ws.restore(self.NAME, "target")
            (site.path("target") / self.NAME).rename(released)

    def test_version_2_silent_refusal_is_detected(self, site, released, monkeypatch):
        # version 2 prints nothing and exits 0 after a wrong answer: only the listing tells
        monkeypatch.setenv("STUB_VERSION", "2")
        monkeypatch.setenv("STUB_REFUSE", "1")
        with pytest.raises(WorkspaceError) as ei:
            site.ws().restore(self.NAME, "target")
        assert ei.value.returncode == 0
        assert "still listed as released" in ei.value.problem
        assert (released / "result.txt").read_text() == "precious"

    @pytest.mark.parametrize("version", ["1", "2"])
    def test_silent_failure_after_the_answer_is_detected(self, site, released, monkeypatch, version):
        monkeypatch.setenv("STUB_VERSION", version)
        monkeypatch.setenv("STUB_SILENT_FAILURE", "1")
        with pytest.raises(WorkspaceError, match="still listed as released"):
            site.ws().restore(self.NAME, "target")

    def test_version_2_unknown_word_is_not_guessed(self, site, released, monkeypatch):
        monkeypatch.setenv("STUB_VERSION", "2")
        monkeypatch.setenv("STUB_CATEGORY", "0")
        monkeypatch.setenv("STUB_WORD", "Platypus")
        with pytest.raises(WorkspaceError) as ei:
            site.ws().restore(self.NAME, "target")
        assert "'Platypus'" in ei.value.problem and "run ws_restore in a terminal" in ei.value.problem
        assert (released / "result.txt").read_text() == "precious"
        assert list(site.path("target").iterdir()) == []


@pytest.mark.parametrize(
    "word, choices, answer",
    [
        ("Dog", "[0] Animal, [1] Fruit or Vegetable or [2] Object or [3] Person", "0"),
        ("Green beans", "[0] Animal, [1] Fruit or Vegetable or [2] Object or [3] Person", "1"),
        ("clock", "[0] Animal, [1] Fruit or Vegetable or [2] Object or [3] Person", "2"),
        ("Homer", "[0] Animal, [1] Fruit or Vegetable or [2] Object or [3] Person", "3"),
        # the numbers are read from the question, not assumed
        ("Dog", "[0] Person, [1] Object or [2] Animal or [3] Fruit or Vegetable", "2"),
        ("Carrot", "[0] Person, [1] Object or [2] Animal or [3] Fruit or Vegetable", "3"),
        ("Platypus", "[0] Animal, [1] Fruit or Vegetable or [2] Object or [3] Person", None),
        ("Dog", "[0] Mineral, [1] Planet", None),
    ],
)
def test_category_answer(word, choices, answer):
    assert _category_answer(word, choices) == answer


@pytest.mark.parametrize(
    "shown, word",
    [
        ("kamiso", "kamiso"),
        ("ka\x1b[C\x1b[C\x1b[Cta\x08\x08\x08\x08\x08shi\x1b[C\x1b[Cn", "kashitan"),
        ("\x1b[C\x1b[Cshi\x08\x08\x08\x08\x08ka\x1b[C\x1b[C\x1b[Ctaro", "kashitaro"),
        ("a\x1b[Cu\x08\x08i\x1b[C", "aiu"),
        ("a\x1b[1Cu\x1b[2Dn\x1b[1Ce", "anue"),  # parameterised moves
        ("a\x1b[2Cu\x1b[3Dn\x1b[1Ce", "an e"),  # a cell never written stays blank
        ("ka$<2>\x1b[C$<2>u\x08\x08i\x1b[Co", "kaiuo"),  # vt100-style padding
    ],
)
def test_typed_word(shown, word):
    assert _typed_word(shown) == word


# ----------------------------------------------------------------------------- CLI
def test_cli_list_with_site_tools(site, monkeypatch, capsys):
    prepend_path(monkeypatch, site.bin)
    site.replay("v2_normal.txt")
    assert main(["ws", "--ws-backend", "site", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["id"] for d in data] == ["analysis", "shared-results", "scratchpad"]
    assert data[1]["group"] == "p_lv_project" and data[2]["expired"] is True


def test_cli_list_says_released_and_expired(site, monkeypatch, capsys):
    prepend_path(monkeypatch, site.bin)
    text = site.replay("v2_expired_released.txt")
    assert main(["ws", "--ws-backend", "site", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    expected = parse_ws_list(text, user=USER)
    assert len(rows) == len(expected)
    for row, info in zip(rows, expected):
        assert row.split()[0] == info.id
        assert info.released or info.expired
        assert row.split()[4] == ("released" if info.released else "expired")
    assert {i.released for i in expected} == {True, False}


def test_cli_site_unavailable_exits_2(tmp_path, monkeypatch, capsys):
    if SYSTEM_WS:
        pytest.skip("this machine has /usr/bin/ws_allocate")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["ws", "--ws-backend", "site", "list"]) == 2
    assert "no ws_allocate found" in capsys.readouterr().err
