"""The displays: ``__repr__`` and ``_repr_html_`` of results, copies, workspaces and handles,
``ParallelCopy.status()`` in every state (a real local copy), the shards' timeline, and
``taurus-tools report``.

Names are hostile: every display is rendered twice, once with plain names and once with
names that would break HTML if they were not escaped, and the two must have the same
markup (the same elements and attributes, in the same order), with every name readable
in the text.  ``test_the_markup_check_catches_unescaped_names`` shows that check fails
when escaping is switched off.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html.parser
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Tuple

import pytest

from helpers import HOSTILE_NAMES, wait_for

import taurus_tools.display as display
from taurus_tools import CopyResult, Datamover, ParallelCopy
from taurus_tools.cli.main import main
from taurus_tools.transfer.status import STATES, CopyStatus
from taurus_tools.workspace.format import WorkspaceInfo, WorkspaceList

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_slurm_env")]

#: Names that break markup unless escaped, and the suite's hostile file names.
NASTY = [
    "</code></td></tr></table><script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "a' data-x='1",
    "&amp; &lt;b&gt; <!-- comment",
    "right-to-left \u202eexe.txt",
    "escape \x1b[31m red",
] + [os.fsdecode(n) for n in HOSTILE_NAMES]
PLAIN = [f"name{i}" for i in range(len(NASTY))]


class Markup(html.parser.HTMLParser):
    """The structure of an HTML fragment (elements and attribute names) and its text."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: List[Tuple[str, ...]] = []
        self.texts: List[str] = []
        self.attributes: List[str] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Any]]) -> None:
        self.tags.append(("<", tag, *sorted(name for name, _ in attrs)))
        self.attributes += [value or "" for _, value in attrs]

    def handle_startendtag(self, tag: str, attrs: List[Tuple[str, Any]]) -> None:
        self.handle_starttag(tag, attrs)
        self.tags.append(("/", tag))

    def handle_endtag(self, tag: str) -> None:
        self.tags.append(("/", tag))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def handle_comment(self, data: str) -> None:
        self.tags.append(("!--", data))

    @property
    def text(self) -> str:
        return "".join(self.texts)


def visible(name: str) -> str:
    """How a display shows a name (control characters and surrogates as escapes)."""
    return display._visible(name)


def assert_names_safe(render: Callable[[List[str]], str], names: List[str] = NASTY, shown: int = 0) -> str:
    """``render(names)`` has the markup of ``render(PLAIN)``, and (the first ``shown`` of)
    the names can be read in its text or its attributes."""
    plain = Markup(render(PLAIN[: len(names)]))
    page = render(names)
    nasty = Markup(page)
    assert nasty.tags == plain.tags, "a name changed the markup"
    for name in names[:shown]:
        where = nasty.text + "\n".join(nasty.attributes)
        assert visible(name) in where, f"{name!r} is not shown"
    return page


# =============================================================================== escaping
class TestText:
    @pytest.mark.parametrize("name", NASTY)
    def test_text_has_no_markup_or_invisible_characters(self, name):
        out = display.text(name)
        assert not set("<>\"'\n\r\t\x1b\u202e") & set(out)
        assert html.unescape(out) == visible(name)

    def test_invisible_characters_and_bytes_that_are_not_utf8(self):
        assert display.text("a\nb\tc\x1b") == "a\\nb\\tc\\x1b"
        assert display.text(os.fsdecode(b"\xff.bin")) == "\\xff.bin"
        assert display.text(b"raw \xfe") == "raw \\xfe"
        assert display.text("\u202etxt.exe") == "\\u202etxt.exe"
        assert display.text("ünïcødé ✓ 文件") == "ünïcødé ✓ 文件"  # printable: as it is

    def test_markup_passes_and_everything_else_is_escaped(self):
        cell = display.table(["a", "<b>"], [[display.Markup("<i>x</i>"), "<i>y</i>"]])
        assert "<i>x</i>" in cell and "&lt;i&gt;y&lt;/i&gt;" in cell and "&lt;b&gt;" in cell

    def test_the_markup_check_catches_unescaped_names(self, monkeypatch):
        """Without escaping, the check of every display below fails."""
        monkeypatch.setattr(display.html, "escape", lambda s, quote=True: s)
        with pytest.raises(AssertionError, match="changed the markup"):
            assert_names_safe(lambda names: copy_result(names)._repr_html_())
        with pytest.raises(AssertionError, match="changed the markup"):
            assert_names_safe(lambda names: WorkspaceList(workspace(n) for n in names)._repr_html_())

    def test_human_units(self):
        assert display.human_bytes(0) == "0 B" and display.human_bytes(1536) == "1.5 KiB"
        assert display.human_duration(3.25) == "3.2 s"
        assert display.human_duration(75.2) == "1 min 15 s"
        assert display.human_duration(3 * 3600 + 120) == "3 h 02 min"
        assert display.human_duration(2 * 86400 + 7200) == "2 d 2 h"
        assert display.human_duration(None) == "-"


# =============================================================================== results
T0 = 1_764_770_000_000  # epoch ms


def row(shard, attempt, start, end, host="n1", exit_code=0, nbytes=1000):
    return {
        "start_time_ms": T0 + start,
        "end_time_ms": None if end is None else T0 + end,
        "duration_ms": None if end is None else max(1, end - start),
        "total_bytes_transferred": nbytes,
        "total_number_of_files": 2,
        "chunk_number": shard,
        "attempt": attempt,
        "exit_code": exit_code,
        "host": host,
        "job_id": None,
    }


def copy_result(names: List[str], *, failures: int = 3) -> CopyResult:
    return CopyResult(
        ok=False,
        src=names[0],
        dst=names[1],
        files_planned=10,
        bytes_planned=5 << 20,
        files_copied=7,
        bytes_copied=4 << 20,
        files_failed=failures,
        failed_messages=[f"{names[2 + i % (len(names) - 2)]}: Permission denied" for i in range(failures)],
        duration_s=2.0,
        report=Path("/tmp") / names[2],
        attempts=[
            row(1, 0, 0, 1000, host=names[3]),
            row(2, 0, 0, 500, host=names[4], exit_code=3),
            row(2, 1, 600, 2000, host=names[4]),
        ],
    )


class TestCopyResult:
    def test_repr_is_one_short_line(self):
        result = copy_result(PLAIN)
        text = repr(result)
        assert text.startswith("<CopyResult FAILED: 7 files (4.0 MiB) copied") and "\n" not in text
        assert len(text) < 200 and "report='/tmp/name2'" in text
        ok = CopyResult(ok=True, src="a", dst="b", files_copied=1, bytes_copied=10, duration_s=1.0)
        assert repr(ok).startswith("<CopyResult ok: 1 files (10 B) copied")

    def test_html_names_are_escaped(self):
        page = assert_names_safe(lambda names: copy_result(names)._repr_html_(), shown=5)
        assert "<script>alert" not in page and "<img" not in page

    def test_html_content(self):
        page = copy_result(PLAIN)._repr_html_()
        parsed = Markup(page)
        assert "FAILED" in parsed.text and "7 files, 4.0 MiB" in parsed.text and "2.1 MB/s" in parsed.text
        assert "/tmp/name2" in parsed.text  # the report
        assert "3 failure(s)" in parsed.text
        assert page.count("<rect") == 3
        assert "<details><summary>3 attempts at 2 shards, 1 failed</summary>" in page  # collapsed

    def test_failures_are_capped_with_a_count_of_the_rest(self):
        parsed = Markup(copy_result(PLAIN, failures=25)._repr_html_())
        listed = [t for t in parsed.texts if t.endswith(": Permission denied")]
        assert len(listed) == display.FAILURES_SHOWN
        assert f"... and {25 - display.FAILURES_SHOWN} more (see the report)" in parsed.text

    def test_the_shard_table_is_capped(self, monkeypatch):
        monkeypatch.setattr(display, "ATTEMPTS_LISTED", 2)
        page = copy_result(PLAIN)._repr_html_()
        table = Markup(page[page.index("<details>"):])
        assert "... and 1 more attempts (see the report)" in table.text
        assert len([t for t in table.tags if t[:2] == ("<", "tr")]) == 4  # head, 2 attempts, the count
        assert page.count("<rect") == 3  # the timeline has them all

    def test_from_report_reads_what_the_report_holds(self, tmp_path):
        result = copy_result(PLAIN)
        report = {
            "ok": False,
            "src": "a",
            "dst": "b",
            "benchmark_results": result.attempts,
            "failed_messages": result.failed_messages,
            "files_copied": 7,
            "bytes_copied": 9,
            "total_retries": 1,
            "duration_s": 2.5,
        }
        back = CopyResult.from_report(report, tmp_path / "r.json")
        assert (back.ok, back.src, back.files_copied, back.bytes_copied, back.retries) == (False, "a", 7, 9, 1)
        assert back.attempts == result.attempts and back.failed_messages == result.failed_messages
        assert back.report == tmp_path / "r.json" and back.duration_s == 2.5


# =============================================================================== timeline
class TestTimeline:
    def rects(self, svg: str) -> List[dict]:
        found = []

        class Rects(html.parser.HTMLParser):
            def handle_starttag(self, tag, attrs):
                if tag == "rect":
                    found.append(dict(attrs))

        Rects().feed(svg)
        return found

    def test_one_bar_per_attempt_placed_by_its_times(self):
        attempts = [row(1, 0, 0, 1000), row(2, 0, 250, 750, exit_code=1), row(2, 1, 800, 4000, host="n2")]
        rects = self.rects(display.timeline_svg(attempts))
        assert len(rects) == 3
        scale = display.TIMELINE_WIDTH / 4000
        for r, a in zip(sorted(rects, key=lambda r: float(r["x"])), attempts):
            assert float(r["x"]) == pytest.approx(display.TIMELINE_LEFT + (a["start_time_ms"] - T0) * scale, abs=1e-3)
            length = (a["end_time_ms"] - a["start_time_ms"]) * scale
            assert float(r["width"]) == pytest.approx(length, abs=1e-3)
            assert r["class"] == ("attempt ok" if a["exit_code"] == 0 else "attempt failed")

    def test_overlapping_attempts_on_a_host_get_rows_of_their_own(self):
        attempts = [row(1, 0, 0, 1000), row(2, 0, 500, 1500), row(3, 0, 1000, 2000), row(4, 0, 0, 2000, host="n2")]
        rects = self.rects(display.timeline_svg(attempts))
        y = {r["data-shard"]: float(r["y"]) for r in rects}
        assert y["1"] == y["3"] != y["2"]  # shard 3 starts as shard 1 ends: its lane is free
        assert y["4"] > max(y["1"], y["2"])  # the next host below

    def test_running_attempts_end_now_and_short_ones_stay_visible(self):
        attempts = [row(1, 0, 0, 1000), row(2, 0, 500, None), row(3, 0, 999, 999)]
        rects = self.rects(display.timeline_svg(attempts, now_ms=T0 + 2000))
        by_shard = {r["data-shard"]: r for r in rects}
        assert by_shard["2"]["class"] == "attempt running"
        assert float(by_shard["2"]["width"]) == pytest.approx(1500 * display.TIMELINE_WIDTH / 2000)
        assert float(by_shard["3"]["width"]) == display.MIN_BAR

    def test_no_attempts_no_picture(self):
        assert display.timeline_svg([]) == ""


# =============================================================================== workspaces
def workspace(name: str, **changes: Any) -> WorkspaceInfo:
    info = WorkspaceInfo(
        id=name,
        path=Path("/scratch/ws/0") / f"me-{name}",
        filesystem="scratch",
        created=dt.datetime(2026, 12, 1, 9, 0),
        expires=dt.datetime(2026, 12, 31, 9, 0),
        remaining=dt.timedelta(days=27, hours=18),
        extensions_left=3,
        comment=f"about {name}",
    )
    return dataclasses.replace(info, **changes)


class TestWorkspaces:
    def test_repr(self):
        assert repr(workspace("data")) == (
            "<WorkspaceInfo 'data' at '/scratch/ws/0/me-data': 27 days 18 hours left, "
            "expires 2026-12-31 09:00, 3 extensions left>"
        )
        assert "expired" in repr(workspace("old", expired=True, remaining=dt.timedelta(0)))

    def test_one_workspace_html(self):
        page = assert_names_safe(lambda names: workspace(names[0], comment=names[1])._repr_html_(), NASTY[:2], 2)
        parsed = Markup(page)
        assert "2026-12-31 09:00" in parsed.text and "27 d 18 h" in parsed.text and "scratch" in parsed.text

    def test_a_list_is_a_table_and_still_a_list(self):
        infos = WorkspaceList(workspace(n) for n in PLAIN[:3])
        assert infos == [workspace(n) for n in PLAIN[:3]] and isinstance(infos, list)
        parsed = Markup(infos._repr_html_())
        assert len([t for t in parsed.tags if t[:2] == ("<", "tr")]) == 4  # head and 3 rows
        for name in ("id", "path", "expires", "remaining", "extensions", "/scratch/ws/0/me-name1", "27 d 18 h"):
            assert name in parsed.text
        assert_names_safe(lambda names: WorkspaceList(workspace(n) for n in names)._repr_html_(), shown=len(NASTY))

    def test_workspace_list_returns_a_workspace_list(self, tmp_path):
        from taurus_tools import Workspace

        ws = Workspace("local", root=tmp_path / "ws")
        ws.allocate("display-test", 3)
        listed = ws.list()
        assert isinstance(listed, WorkspaceList) and [i.id for i in listed] == ["display-test"]
        assert "display-test" in Markup(listed._repr_html_()).text
        assert "display-test" in Markup(listed[0]._repr_html_()).text


# =============================================================================== handles
class TestHandles:
    def test_a_finished_command(self):
        dm = Datamover("local")
        nasty = NASTY[:3]
        code = "import sys; sys.stderr.write(sys.argv[1] + '\\n'); sys.exit(3)"
        handle = dm.run(sys.executable, "-c", code, *nasty)
        handle.wait(30)
        assert handle.state == "failed" and handle.backend == "local"
        page = handle._repr_html_()
        parsed = Markup(page)
        assert "failed" in parsed.text and "local" in parsed.text and "3" in parsed.text
        assert visible(handle.command_line) in parsed.text
        assert visible(nasty[0]) in parsed.text  # stderr's tail
        assert "<script>" not in page and "<img" not in page
        plain = dm.run(sys.executable, "-c", code, *PLAIN[:3])
        plain.wait(30)
        assert Markup(plain._repr_html_()).tags == parsed.tags

    def test_states(self, tmp_path):
        dm = Datamover("local")
        gate = tmp_path / "gate"
        wait_code = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)"
        waiting_for = dm.run(sys.executable, "-c", wait_code)
        pending = dm.run(sys.executable, "-c", "pass", after=[waiting_for])
        assert waiting_for.state == "running" and pending.state == "waiting"
        assert "waiting" in Markup(pending._repr_html_()).text
        gate.touch()
        assert pending.wait(30) == 0 and pending.state == "done"
        failing = dm.run(sys.executable, "-c", "import sys; sys.exit(2)")
        never = dm.run(sys.executable, "-c", "pass", after=[failing])
        failing.wait(30)
        wait_for(lambda: never.state, lambda s: s == "not run", timeout=10)
        sleeper = dm.run(sys.executable, "-c", "import time; time.sleep(60)")
        sleeper.cancel()
        assert sleeper.state == "cancelled"


# =============================================================================== status()
def gated(pc: ParallelCopy, gate: Path, fail_first: bool = False) -> None:
    """Every shard of ``pc`` waits before it starts until ``gate`` exists, or its own gate
    ``gate.N`` (N: the shard's index); with ``fail_first`` the first attempt at each shard
    fails with exit 3 instead."""
    real = pc._launch
    script = 'while [ ! -e "$0" ] && [ ! -e "$1" ]; do sleep 0.02; done; shift; exec "$@"'

    def launch(dm, queued):
        the_launch, status, failed = real(dm, queued)
        argv = ("sh", "-c", "exit 3") if fail_first and queued.attempt == 0 else the_launch.argv
        gate_argv = ("sh", "-c", script, str(gate), f"{gate}.{queued.index}", *argv)
        return dataclasses.replace(the_launch, argv=gate_argv, executable=None), status, failed

    pc._launch = launch


def make_source(root: Path, files: int = 6) -> None:
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"{NASTY[i % 4].replace('/', '_')} {i}").write_bytes(os.urandom(1000 + i))


def test_status_html_names_are_escaped():
    def render(names: List[str]) -> str:
        return CopyStatus(
            "copying",
            names[0],
            names[1],
            names[2],
            files_planned=3,
            bytes_planned=3000,
            files_done=1,
            bytes_done=1000,
            shards=2,
            shards_running=1,
            shards_pending=1,
            elapsed_s=3.0,
            rate_mb_s=0.5,
            eta_s=4.0,
            attempts=(row(1, 0, 0, None, host=names[3]),),
            now_ms=T0 + 3000,
            error=names[4],
        )._repr_html_()

    page = assert_names_safe(render, shown=5)
    parsed = Markup(page)
    assert "1 running, 1 pending (of 2)" in parsed.text and "33.3 %" in parsed.text and "4.0 s" in parsed.text
    assert page.count("attempt running") == 1


class TestStatus:
    def copy(self, tmp_path: Path, **options: Any) -> ParallelCopy:
        options.setdefault("workers", 2)
        options.setdefault("shards", 3)
        return ParallelCopy(
            tmp_path / "src",
            tmp_path / "dst",
            datamover=Datamover("local"),
            progress=False,
            work_dir=tmp_path / "work",
            retry_delay_s=0.05,
            **options,
        )

    def test_not_started_running_and_done(self, tmp_path):
        make_source(tmp_path / "src")
        pc = self.copy(tmp_path)
        gate = tmp_path / "gate"
        gated(pc, gate)
        status = pc.status()
        assert isinstance(status, CopyStatus) and status.state == "not started" and not status.ended
        assert status.bytes_planned is None and status.shards == 0 and status.attempts == ()
        assert "not started" in repr(pc) and "not started" in Markup(pc._repr_html_()).text
        pc.start()
        running = wait_for(pc.status, lambda s: s.shards_running == 2, timeout=30, what="two shards running")
        assert running.state == "copying"
        assert (running.shards, running.shards_done, running.shards_pending, running.shards_failed) == (3, 0, 1, 0)
        assert running.files_planned == 6 and running.bytes_planned == sum(1000 + i for i in range(6))
        assert running.files_done == 0 and running.elapsed_s > 0 and running.eta_s is None
        assert [a["end_time_ms"] for a in running.attempts] == [None, None]
        with pytest.raises(dataclasses.FrozenInstanceError):
            running.state = "done"  # type: ignore[misc]
        page = pc._repr_html_()  # taken anew: the same data as status()
        assert page.count("attempt running") == 2 and "2 running, 1 pending (of 3)" in Markup(page).text
        assert "(starting)" in Markup(page).text  # gated: no worker has begun, so no host yet
        gate.touch()
        result = pc.wait(60)
        done = pc.status()
        assert result.ok and done.state == "done" and done.ended and done.result is result
        assert (done.shards_done, done.shards_running, done.shards_pending) == (3, 0, 0)
        assert done.files_done == 6 and done.bytes_done == done.bytes_planned == done.bytes_this_run
        assert len(done.attempts) == 3 and all(a["exit_code"] == 0 for a in done.attempts)
        assert done.rate_mb_s is None and done.eta_s is None
        elapsed = done.elapsed_s
        assert pc.status().elapsed_s == elapsed  # stopped with the copy
        assert "done" in repr(pc) and done.state in STATES

    def test_waiting_then_cancelled(self, tmp_path):
        make_source(tmp_path / "src")
        dm = Datamover("local")
        first = dm.run(sys.executable, "-c", "import time; time.sleep(60)")
        pc = self.copy(tmp_path).start(after=[first])
        assert pc.status().state == "waiting"
        assert pc.cancel()
        assert pc.status().state == "cancelled"
        first.cancel()

    def test_cancelled_while_copying(self, tmp_path):
        make_source(tmp_path / "src")
        pc = self.copy(tmp_path)
        gated(pc, tmp_path / "gate")
        pc.start()
        wait_for(pc.status, lambda s: s.shards_running == 2, timeout=30, what="two shards running")
        assert pc.cancel()
        status = pc.status()
        assert status.state == "cancelled" and "resume" in (status.error or "")
        assert status.shards_running == 0 and status.shards_pending == 3

    def test_a_resumed_copy_counts_only_its_own_bytes_as_this_runs(self, tmp_path):
        make_source(tmp_path / "src", files=9)
        gate = tmp_path / "gate"
        first = self.copy(tmp_path)
        gated(first, gate)
        Path(f"{gate}.0").touch()  # shard 0 may run; 1 and 2 wait
        first.start()
        wait_for(first.status, lambda s: s.shards_done == 1 and s.shards_running == 2, timeout=30, what="shard 0 done")
        assert first.cancel()
        earlier = first.status()
        assert earlier.state == "cancelled" and 0 < earlier.bytes_done < earlier.bytes_planned
        assert earlier.bytes_this_run == earlier.bytes_done
        again = self.copy(tmp_path)  # not gated
        assert again.status().state == "not started"
        result = again.run()
        status = again.status()
        assert result.ok and status.state == "done" and status.bytes_done == status.bytes_planned
        assert status.bytes_this_run == status.bytes_planned - earlier.bytes_done
        assert status.files_done == 9

    def test_failed_with_an_error(self, tmp_path, monkeypatch):
        import psutil

        make_source(tmp_path / "src")
        usage = type("usage", (), {"free": 0, "total": 1, "used": 1, "percent": 100.0})
        monkeypatch.setattr(psutil, "disk_usage", lambda path: usage)
        pc = self.copy(tmp_path).start()
        with pytest.raises(OSError):
            pc.wait(30)
        status = pc.status()
        assert status.state == "failed" and status.result is None
        assert (status.error or "").startswith("InsufficientSpaceError: ")
        assert "InsufficientSpaceError" in Markup(pc._repr_html_()).text

    def run_failing_first_attempts(self, tmp_path: Path, retries: int) -> Tuple[ParallelCopy, CopyResult]:
        """A copy of two shards whose first attempts fail (exit 3)."""
        make_source(tmp_path / "src")
        pc = self.copy(tmp_path, retries=retries, shards=2)
        gate = tmp_path / "gate"
        gate.touch()
        gated(pc, gate, fail_first=True)
        return pc, pc.run()

    def test_failed(self, tmp_path):
        pc, result = self.run_failing_first_attempts(tmp_path, retries=0)
        status = pc.status()
        assert not result.ok and status.state == "failed" and status.result is result
        assert status.shards_failed == 2 and status.files_done == 0
        page = pc._repr_html_()
        assert page.count("attempt failed") == 2 and "FAILED" in Markup(page).text

    def test_a_retry_shows_as_a_failed_bar_and_an_ok_one(self, tmp_path):
        pc, result = self.run_failing_first_attempts(tmp_path, retries=1)
        assert result.ok and result.retries == 2
        assert [(a["chunk_number"], a["attempt"], a["exit_code"]) for a in sorted(
            result.attempts, key=lambda a: (a["chunk_number"], a["attempt"])
        )] == [(1, 0, 3), (1, 1, 0), (2, 0, 3), (2, 1, 0)]
        report = json.loads(Path(result.report).read_text())
        assert report["benchmark_results"] == result.attempts
        page = result._repr_html_()
        assert page.count("attempt failed") == 2 and page.count("attempt ok") == 2


# =============================================================================== taurus-tools report
class TestReportCommand:
    def report(self, tmp_path: Path) -> Path:
        result = copy_result(NASTY)
        path = tmp_path / "result_all.json"
        path.write_text(
            json.dumps(
                {
                    "ok": result.ok,
                    "src": result.src,
                    "dst": result.dst,
                    "benchmark_results": result.attempts,
                    "failed_messages": result.failed_messages,
                    "files_copied": result.files_copied,
                }
            )
        )
        return path

    def test_summary_and_page(self, tmp_path, capsys):
        path = self.report(tmp_path)
        assert main(["report", str(path)]) == 0
        assert capsys.readouterr().out.startswith("FAILED: 7 files")
        out = tmp_path / "page.html"
        assert main(["report", str(path), "--html", str(out)]) == 0
        page = out.read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>") and page.count("<rect") == 3
        assert "<script" not in page and "<img" not in page
        assert visible(NASTY[0]) in Markup(page).text

    @pytest.mark.parametrize(
        "content, message",
        [
            (None, "cannot read the report: No such file or directory"),
            (b"\xff\xfe not json", "is not a copy report: it is not JSON"),
            (b"{\"ok\": true", "is not a copy report: it is not JSON"),
            (b"[1, 2]", "is not a copy report: it holds a JSON array, not an object"),
            (b"{\"version\": 2, \"shards\": []}", "is not a copy report: it has no ok, src, dst, benchmark_results"),
            (
                b"{\"ok\": true, \"src\": \"a\", \"dst\": \"b\", \"benchmark_results\": [{\"start_time_ms\": \"x\"}]}",
                "benchmark_results must be a list of objects with whole-number start_time_ms and end_time_ms",
            ),
        ],
    )
    def test_bad_input_exits_2_with_one_line(self, tmp_path, capsys, content, message):
        path = tmp_path / "r.json"
        if content is not None:
            path.write_bytes(content)
        out = tmp_path / "page.html"
        assert main(["report", str(path), "--html", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert not out.exists()

    def test_a_folder_is_not_a_report(self, tmp_path, capsys):
        assert main(["report", str(tmp_path)]) == 2
        assert "cannot read the report: Is a directory" in capsys.readouterr().err
