"""Progress as callbacks: what waits and copies report, and which bar ``progress=True`` draws where.

The choice of bar depends on modules (IPython, ipywidgets, tqdm.notebook) that a test machine
may not have: those are replaced in ``sys.modules`` for each test.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import taurus_tools.callbacks as callbacks
import taurus_tools.transfer.parallel_copy as pc_mod
from taurus_tools import (
    CommandTimeoutError,
    ConfigurationError,
    CopyConfig,
    CopyResult,
    Datamover,
    NoProgress,
    ParallelCopy,
    ProgressCallback,
    TqdmProgress,
    waitfor,
)

pytestmark = pytest.mark.timeout(120)


class Recorder(ProgressCallback):
    """Keeps every call, and the thread it came from."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, Any]] = []
        self.threads: set = set()
        self.lock = threading.Lock()

    def _note(self, name: str, value: Any) -> None:
        with self.lock:
            self.calls.append((name, value))
            self.threads.add(threading.current_thread().name)

    def set_total(self, total, *, files=None, unit="B"):
        self._note("total", (total, files, unit))

    def update(self, amount=0, files=0):
        self._note("update", (amount, files))

    def set_description(self, text):
        self._note("description", text)

    def write(self, text, file=None):
        self._note("write", text)

    def close(self):
        self._note("close", None)

    def of(self, name: str) -> List[Any]:
        return [value for what, value in self.calls if what == name]


def make_tree(root: Path, files: int = 40) -> int:
    """``files`` files of different sizes in a few folders; returns their bytes."""
    total = 0
    for i in range(files):
        path = root / f"d{i % 4}" / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(1000 + 997 * i)
        path.write_bytes(data)
        total += len(data)
    return total


def half_done_copy(tmp_path: Path, dm: Datamover) -> Tuple[dict, List[str], dict]:
    """A copy of six files of which the first run copied four (shard 1 failed): the
    sizes by name, the names at the destination, and the options that resume it."""
    src = tmp_path / "src"
    sizes = {}
    for i in range(6):
        data = os.urandom(1000 + 100 * i)
        (src / f"f{i}").parent.mkdir(parents=True, exist_ok=True)
        (src / f"f{i}").write_bytes(data)
        sizes[f"f{i}"] = len(data)
    options = dict(datamover=dm, retries=0, shards=3, work_dir=tmp_path / "w")
    first = ParallelCopy(src, tmp_path / "dst", **options)
    real_launch = first._launch

    def launch(dm_, task):  # shard 1 fails in the first run
        launch_, status, failed = real_launch(dm_, task)
        if task.index == 1:
            return type(launch_)(("sh", "-c", "exit 3"), name=launch_.name), status, failed
        return launch_, status, failed

    first._launch = launch
    assert not first.run().ok
    there = [p.name for p in (tmp_path / "dst").iterdir()]
    assert len(there) == 4
    return sizes, there, options


@pytest.fixture
def dm() -> Datamover:
    return Datamover("local")


# ============================================================================ copies
class TestCopyReports:
    def test_totals_then_monotone_updates_that_add_up_to_the_bytes_copied(self, tmp_path, dm):
        size = make_tree(tmp_path / "src")
        rec = Recorder()
        result = ParallelCopy(
            tmp_path / "src", tmp_path / "dst", datamover=dm, workers=2, work_dir=tmp_path / "w", progress=rec
        ).run()
        assert result.ok and result.bytes_copied == size and result.files_copied == 40
        assert rec.of("total") == [(size, 40, "B")]
        updates = rec.of("update")
        assert updates and all(amount >= 0 and files >= 0 for amount, files in updates)
        assert sum(a for a, _ in updates) == result.bytes_copied
        assert sum(f for _, f in updates) == result.files_copied
        names = [what for what, _ in rec.calls]
        assert names.index("total") < names.index("update")
        assert names[-1] == "close" and names.count("close") == 1
        assert rec.of("description")[:2] == ["Listing", "Copying"]

    def test_a_resumed_copy_reports_the_earlier_runs_work_apart(self, tmp_path, dm):
        """What an earlier run copied is shown (already_done) but is no update of this run:
        a resumed copy's rate is not the earlier run's bytes over this run's seconds."""
        sizes, there, options = half_done_copy(tmp_path, dm)
        rec = Recorder()
        rec.already_done = lambda amount, files=0: rec._note("already", (amount, files))  # type: ignore[method-assign]
        again = ParallelCopy(tmp_path / "src", tmp_path / "dst", progress=rec, **options).run()
        assert again.ok and again.files_copied == 6  # (the copy's, both runs)
        assert rec.of("already") == [(sum(sizes[n] for n in there), 4)]
        names = [what for what, _ in rec.calls]
        assert names.index("total") < names.index("already") < names.index("update")
        updates = rec.of("update")
        assert sum(a for a, _ in updates) == sum(sizes.values()) - rec.of("already")[0][0]
        assert sum(f for _, f in updates) == 2

    def test_a_resumed_copys_result_rates_only_this_runs_bytes(self, tmp_path, dm):
        """The result's throughput is this run's bytes over this run's time; what the
        earlier run copied is said apart (summary, repr, display, report)."""
        sizes, there, options = half_done_copy(tmp_path, dm)
        earlier = sum(sizes[n] for n in there)
        again = ParallelCopy(tmp_path / "src", tmp_path / "dst", progress=False, **options).run()
        assert again.ok and (again.files_copied, again.bytes_copied) == (6, sum(sizes.values()))
        assert (again.files_copied_before, again.bytes_copied_before) == (4, earlier)
        assert again.bytes_copied_this_run == sum(sizes.values()) - earlier > 0
        assert again.duration_s > 0
        assert again.throughput_mb_s == pytest.approx(again.bytes_copied_this_run / 1e6 / again.duration_s)
        assert again.throughput_mb_s < again.bytes_copied / 1e6 / again.duration_s
        assert "4 files" in again.summary() and "by an earlier run" in again.summary()
        assert "by an earlier run" in repr(again) and "by an earlier run" in again._repr_html_()
        report = json.loads(again.report.read_text())
        assert (report["files_copied_before"], report["bytes_copied_before"]) == (4, earlier)
        back = CopyResult.from_report(report, again.report)
        assert back.bytes_copied_before == earlier
        assert back.throughput_mb_s == pytest.approx(back.bytes_copied_this_run / 1e6 / back.duration_s)
        assert back.bytes_copied_this_run == again.bytes_copied_this_run
        options["work_dir"] = tmp_path / "w2"
        fresh = ParallelCopy(tmp_path / "src", tmp_path / "dst2", progress=False, **options)
        first = fresh.run()
        assert first.ok and (first.files_copied_before, first.bytes_copied_before) == (0, 0)
        assert "earlier" not in first.summary()

    def test_ctrl_c_in_run_says_how_to_resume(self, tmp_path, dm):
        """The KeyboardInterrupt out of run() carries a note (shown under its traceback, in
        Jupyter too) saying that running it again resumes, and where its state is."""
        make_tree(tmp_path / "src", files=12)

        class CtrlC(Recorder):
            def update(self, amount=0, files=0):
                if files:
                    raise KeyboardInterrupt

        work = tmp_path / "w"
        pc = ParallelCopy(tmp_path / "src", tmp_path / "dst", datamover=dm, work_dir=work, progress=CtrlC())
        with pytest.raises(KeyboardInterrupt) as info:
            pc.run()
        notes = getattr(info.value, "__notes__", [])
        assert len(notes) == 1 and "run it again" in notes[0] and repr(str(work)) in notes[0]
        again = ParallelCopy(tmp_path / "src", tmp_path / "dst", datamover=dm, work_dir=work).run()
        assert again.ok and again.files_copied + again.files_skipped == 12

    def test_a_started_copy_reports_from_its_thread_and_closes(self, tmp_path, dm):
        size = make_tree(tmp_path / "src", files=12)
        rec = Recorder()
        pc = ParallelCopy(
            tmp_path / "src", tmp_path / "dst", datamover=dm, workers=2, work_dir=tmp_path / "w", progress=rec
        ).start()
        result = pc.result(timeout=60)
        assert sum(a for a, _ in rec.of("update")) == result.bytes_copied == size
        assert rec.calls[-1] == ("close", None)
        assert rec.threads == {"taurus-tools:copy"}

    def test_wait_draws_the_final_state_again_from_its_thread(self, tmp_path, dm):
        """A notebook run in batch keeps a display's updates only while a cell runs: wait()
        refreshes start()'s progress, from the waiting cell, once the copy has ended."""
        make_tree(tmp_path / "src", files=6)
        rec = Recorder()
        rec.refresh = lambda: rec._note("refresh", threading.current_thread())  # type: ignore[method-assign]
        pc = ParallelCopy(
            tmp_path / "src", tmp_path / "dst", datamover=dm, workers=2, work_dir=tmp_path / "w", progress=rec
        ).start()
        assert pc.wait(60).ok
        assert rec.calls[-2:] == [("close", None), ("refresh", threading.current_thread())]

    def test_start_makes_the_bar_in_the_calling_thread(self, tmp_path, dm, monkeypatch):
        """In Jupyter a bar shows in the cell that is running when it is made: start()'s."""
        make_tree(tmp_path / "src", files=4)
        made_in = []
        real = pc_mod.as_progress

        def as_progress(progress, **options):
            made_in.append(threading.current_thread())
            return real(progress, **options)

        monkeypatch.setattr(pc_mod, "as_progress", as_progress)
        pc = ParallelCopy(
            tmp_path / "src", tmp_path / "dst", datamover=dm, workers=1, work_dir=tmp_path / "w", progress=True
        )
        assert made_in == []
        pc.start()
        assert made_in == [threading.current_thread()]
        assert pc.result(timeout=60).ok
        assert made_in == [threading.current_thread()]

    def test_a_copy_that_cannot_start_still_closes(self, tmp_path, dm):
        make_tree(tmp_path / "src", files=3)
        (tmp_path / "w").write_text("a file where the work dir goes")
        rec = Recorder()
        pc = ParallelCopy(tmp_path / "src", tmp_path / "dst", datamover=dm, work_dir=tmp_path / "w", progress=rec)
        with pytest.raises(ConfigurationError, match="work dir"):
            pc.run()
        assert rec.calls == [("close", None)]

    def test_dry_run_draws_no_bar(self, tmp_path, dm, monkeypatch):
        make_tree(tmp_path / "src", files=3)
        monkeypatch.setattr(callbacks, "_is_terminal", lambda file: True)
        pc = ParallelCopy(tmp_path / "src", tmp_path / "dst", datamover=dm, work_dir=tmp_path / "w", dry_run=True)
        assert isinstance(pc._open_progress(), NoProgress)

    @pytest.mark.parametrize("bad", ["yes", 1, object()])
    def test_progress_must_be_a_bool_none_or_callback(self, bad):
        with pytest.raises(ConfigurationError, match="progress must be True, False, None or a ProgressCallback"):
            CopyConfig(progress=bad)

    @pytest.mark.parametrize("value", [True, False, None])
    def test_progress_values_that_are_fine(self, value):
        assert CopyConfig(progress=value).progress is value


# ============================================================================ waits
class TestWaitReports:
    def test_commands_as_the_total_one_update_each_and_lines_through_write(self, tmp_path, dm):
        rec = Recorder()
        handles = [dm.dtls(str(tmp_path)), dm.dtls(str(tmp_path / "missing"))]
        codes = waitfor(handles, timeout=60, progress=rec)
        assert codes[0] == 0 and codes[1] != 0
        assert rec.of("total") == [(2, None, "cmd")]
        assert sum(a for a, _ in rec.of("update")) == 2
        assert all(a >= 0 for a, _ in rec.of("update"))
        assert any("missing" in line for line in rec.of("write"))  # ls's complaint, labelled
        assert rec.of("description") == ["Waiting for 2 commands"]
        assert rec.calls[-1] == ("close", None)

    def test_a_timeout_closes_the_callback(self, dm):
        rec = Recorder()
        handle = dm.call("dtcp", "/dev/zero", "/dev/null")  # never ends by itself
        with pytest.raises(CommandTimeoutError):
            waitfor(handle, timeout=0.3, progress=rec)
        assert rec.calls[-1] == ("close", None)
        assert sum(a for a, _ in rec.of("update")) == 0

    def test_progress_true_into_a_file_draws_nothing(self, tmp_path, dm):
        out = io.StringIO()
        handle = dm.call("dtcp", "/dev/zero", "/dev/null")
        with pytest.raises(CommandTimeoutError):
            waitfor(handle, timeout=1.5, progress=True, file=out)  # past the 1 s delay of a bar
        assert out.getvalue() == ""


# ============================================================================ the interface
class TestInterface:
    def test_update_to_reports_only_increases(self):
        rec = Recorder()
        for amount, files in [(10, 1), (5, 1), (5, 0), (25, 3), (25, 3)]:
            rec.update_to(amount, files)
        assert rec.of("update") == [(10, 1), (0, 0), (0, 0), (15, 2), (0, 0)]

    def test_already_done_is_one_update_by_default(self):
        rec = Recorder()
        rec.already_done(100, 4)
        rec.update_to(30, 1)  # this run's totals, from zero
        assert rec.of("update") == [(100, 4), (30, 1)]

    def test_tqdm_progress_shows_already_done_but_leaves_it_out_of_the_rate(self):
        from tqdm.std import tqdm

        out = io.StringIO()
        bar = TqdmProgress(desc="Copying", file=out, tqdm_class=tqdm)
        bar.set_total(2 << 30, files=10, unit="B")
        bar.already_done(1 << 30, 5)
        bar.bar.start_t -= 2.0  # this run has taken 2 s
        bar.update_to(4 << 20, 1)  # and moved 4 MiB
        state = bar.bar.format_dict
        assert state["n"] == (1 << 30) + (4 << 20) and state["initial"] == 1 << 30
        text = tqdm.format_meter(**state)
        assert "50%" in text and "6/10 files" in text
        rate = (state["n"] - state["initial"]) / state["elapsed"]
        assert 1 << 20 < rate < 3 << 20, text  # about 2 MiB/s, not 512 MiB/s
        assert "MB/s" in text and "GB/s" not in text, text
        bar.close()

    def test_calling_it_is_an_update_in_bytes(self):
        rec = Recorder()
        rec(4096)  # boto3's Callback=
        assert rec.of("update") == [(4096, 0)]

    def test_the_base_class_does_nothing_and_prints_lines(self, capsys):
        with ProgressCallback() as cb:
            cb.set_total(5)
            cb.update(3, 1)
            cb.set_description("x")
            cb.write("a line")
        assert capsys.readouterr().err == "a line\n"

    @pytest.mark.parametrize("value", [False, None])
    def test_false_and_none_mean_no_progress(self, value):
        assert isinstance(callbacks.as_progress(value), NoProgress)

    def test_a_callback_is_used_as_it_is(self):
        rec = Recorder()
        assert callbacks.as_progress(rec) is rec

    def test_tqdm_progress_draws_totals_and_files(self):
        from tqdm.std import tqdm

        out = io.StringIO()
        bar = TqdmProgress(desc="Listing", file=out, tqdm_class=tqdm)
        bar.set_total(2048, files=2, unit="B")
        bar.set_description("Copying")
        bar.update(1024, 1)
        bar.update(1024, 1)
        bar.close()
        text = out.getvalue().split("\r")[-1]
        assert "Copying" in text and "100%" in text and "2.00k/2.00k" in text and "2/2 files" in text

    def test_tqdm_progress_with_a_delay_appears_only_after_it(self, monkeypatch):
        from tqdm.std import tqdm

        now = [1000.0]
        monkeypatch.setattr(callbacks, "_clock", lambda: now[0])
        out = io.StringIO()
        bar = TqdmProgress(file=out, tqdm_class=tqdm, delay=1.0, leave=False)
        bar.set_total(3, unit="cmd")
        bar.update(1)
        bar.write("early line", out)
        assert bar.bar is None and out.getvalue() == "early line\n"
        now[0] += 1.5
        bar.update(1)
        assert bar.bar is not None and bar.bar.n == 2 and bar.bar.total == 3
        bar.close()


# ============================================================================ which bar, where
@pytest.fixture
def modules(monkeypatch):
    """Stand-ins for IPython (a Jupyter kernel or not), ipywidgets and tqdm.notebook."""

    class Fake:
        def kernel(self, running: bool = True) -> None:
            shell = types.SimpleNamespace(config={"IPKernelApp": {}} if running else {})
            module = types.ModuleType("IPython")
            module.get_ipython = lambda: shell  # type: ignore[attr-defined]
            monkeypatch.setitem(sys.modules, "IPython", module)

        def widgets(self, present: bool) -> None:
            if present:
                module = types.ModuleType("ipywidgets")
                module.FloatProgress = object  # type: ignore[attr-defined]
                monkeypatch.setitem(sys.modules, "ipywidgets", module)
            else:
                monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import raises ImportError

        def notebook_tqdm(self, works: bool = True) -> Optional[type]:
            if not works:
                monkeypatch.setitem(sys.modules, "tqdm.notebook", None)
                return None
            made: List[Any] = []

            class NotebookBar:
                def __init__(self, **options: Any) -> None:
                    self.options, self.n, self.start_t = options, 0, 0.0
                    made.append(threading.current_thread())

                def __getattr__(self, name: str) -> Any:
                    return lambda *args, **kwargs: None

            NotebookBar.made = made  # type: ignore[attr-defined]
            module = types.ModuleType("tqdm.notebook")
            module.tqdm = NotebookBar  # type: ignore[attr-defined]
            monkeypatch.setitem(sys.modules, "tqdm.notebook", module)
            return NotebookBar

        def displays(self) -> List[Any]:
            """IPython.display.display, recording each display made and its lines."""
            shown: List[Any] = []

            class Handle:
                def __init__(self, bundle: Dict[str, str]) -> None:
                    self.lines = [bundle["text/plain"]]
                    self.made_in = threading.current_thread()

                def update(self, bundle: Dict[str, str], raw: bool = False) -> None:
                    assert raw
                    self.lines.append(bundle["text/plain"])

            def display(bundle: Dict[str, str], raw: bool = False, display_id: bool = False) -> Handle:
                assert raw and display_id is True and set(bundle) == {"text/plain"}
                shown.append(Handle(bundle))
                return shown[-1]

            module = types.ModuleType("IPython.display")
            module.display = display  # type: ignore[attr-defined]
            monkeypatch.setitem(sys.modules, "IPython.display", module)
            return shown

    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    return Fake()


class TestChoice:
    def test_a_pipe_or_file_gets_no_bar(self, modules):
        assert callbacks.choose_bar(io.StringIO()) == (None, {})
        assert isinstance(callbacks.auto_progress(file=io.StringIO()), NoProgress)
        modules.kernel(running=False)  # IPython imported, but a terminal IPython, not Jupyter
        assert isinstance(callbacks.as_progress(True, file=io.StringIO()), NoProgress)

    def test_a_terminal_gets_a_text_bar(self, modules):
        from tqdm.std import tqdm

        master, slave = os.openpty()
        try:
            with open(slave, "w", closefd=False) as terminal:
                cls, options = callbacks.choose_bar(terminal)
                assert cls is tqdm and options == {"dynamic_ncols": True}
                bar = callbacks.auto_progress(file=terminal, desc="Copying")
                assert isinstance(bar, TqdmProgress) and isinstance(bar.bar, tqdm)
                bar.close()
        finally:
            os.close(master)
            os.close(slave)

    def test_jupyter_with_ipywidgets_gets_the_widget_bar_made_at_once(self, modules):
        modules.kernel()
        modules.widgets(present=True)
        notebook_bar = modules.notebook_tqdm()
        cls, options = callbacks.choose_bar(io.StringIO())
        assert cls is notebook_bar and options == {}
        bar = callbacks.auto_progress(file=sys.stderr, desc="Listing")
        assert isinstance(bar, TqdmProgress) and isinstance(bar.bar, notebook_bar)
        assert notebook_bar.made == [threading.current_thread()]
        assert bar.bar.options["desc"] == "Listing"

    @pytest.mark.parametrize("why", ["no ipywidgets", "tqdm.notebook fails"])
    def test_jupyter_without_widgets_gets_one_updating_line_and_no_warning(self, modules, why, monkeypatch, capsys):
        """No tqdm text bar (a TqdmWarning, red redraws on stderr, one saved output per
        redraw): one display, made at once in the calling thread, updated in place at most
        every NOTEBOOK_LINE_INTERVAL_S, and once more with the final state."""
        modules.kernel()
        modules.widgets(present=why != "no ipywidgets")
        modules.notebook_tqdm(works=why != "tqdm.notebook fails")
        shown = modules.displays()
        now = [0.0]
        monkeypatch.setattr(callbacks, "_clock", lambda: now[0])
        out = io.StringIO()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert callbacks.display_kind(out) == callbacks.NOTEBOOK_TEXT
            bar = callbacks.auto_progress(file=out, desc="Listing")
            assert isinstance(bar, callbacks.NotebookLine)
            assert len(shown) == 1 and shown[0].made_in is threading.current_thread()
            assert shown[0].lines == ["Listing: 0 B, 0.0 s"]
            bar.set_description("Copying")
            bar.set_total(200 << 20, files=200)
            for _ in range(200):  # one update a second for 200 s
                now[0] += 1.0
                bar.update(1 << 20, 1)
            bar.close()
        assert caught == [] and out.getvalue() == "" and capsys.readouterr() == ("", "")
        assert len(shown) == 1  # one display, updated in place
        assert len(shown[0].lines) <= 2 + 200 / callbacks.NOTEBOOK_LINE_INTERVAL_S + 1
        final = shown[0].lines[-1]
        assert final.startswith("Copying: [####################] 100 %, 200.0 MiB of 200.0 MiB, 200 of 200 files")
        assert "3 min 20 s" in final and "1.0 MB/s" in final and "ETA" not in final, final

    def test_a_forced_tqdm_bar_in_jupyter_without_widgets_is_slow(self, modules):
        """TqdmProgress() forces a tqdm bar: without widgets the text bar, redrawn rarely."""
        from tqdm.std import tqdm

        modules.kernel()
        modules.widgets(present=False)
        cls, options = callbacks.choose_bar(io.StringIO())
        assert cls is tqdm and options["mininterval"] == callbacks.NOTEBOOK_TEXT_INTERVAL_S >= 5

    def test_the_kinds_of_display(self, modules):
        assert callbacks.display_kind(io.StringIO()) == callbacks.NON_INTERACTIVE
        master, slave = os.openpty()
        try:
            with open(slave, "w", closefd=False) as terminal:
                assert callbacks.display_kind(terminal) == callbacks.TERMINAL
        finally:
            os.close(master)
            os.close(slave)
        modules.kernel()
        modules.widgets(present=True)
        modules.notebook_tqdm()
        assert callbacks.display_kind(io.StringIO()) == callbacks.NOTEBOOK_WIDGET

    def test_a_line_with_a_delay_is_drawn_only_after_it(self, modules, monkeypatch):
        modules.kernel()
        modules.widgets(present=False)
        shown = modules.displays()
        now = [0.0]
        monkeypatch.setattr(callbacks, "_clock", lambda: now[0])
        line = callbacks.NotebookLine(desc="Waiting for dtcp", delay=1.0, leave=False)
        line.set_total(2, unit="cmd")
        line.update(1)
        assert shown == []
        now[0] += 1.5
        line.update(1)
        assert len(shown) == 1
        assert shown[0].lines == ["Waiting for dtcp: [####################] 100 %, 2 of 2 cmd, 1.5 s"]
        line.close()
        assert shown[0].lines[-1] == ""  # leave=False: cleared
        quick = callbacks.NotebookLine(desc="quick", delay=1.0)
        quick.close()
        quick.refresh()
        assert len(shown) == 1  # shorter than its delay: never shown

    def test_refresh_sends_the_line_again(self, modules):
        modules.kernel()
        modules.widgets(present=False)
        shown = modules.displays()
        line = callbacks.NotebookLine(desc="Copying")
        line.set_total(10, unit="cmd")
        line.close()
        line.refresh()
        assert len(shown) == 1 and len(set(shown[0].lines[-2:])) == 1 and "10 cmd" in shown[0].lines[-1]

    def test_a_broken_ipython_is_not_a_kernel(self, monkeypatch):
        module = types.ModuleType("IPython")

        def get_ipython():
            raise RuntimeError("half imported")

        module.get_ipython = get_ipython  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "IPython", module)
        assert callbacks.choose_bar(io.StringIO()) == (None, {})


# ============================================================================ milestones
class TestMilestones:
    @pytest.fixture
    def clock(self, monkeypatch):
        now = [0.0]
        monkeypatch.setattr(callbacks, "_clock", lambda: now[0])
        return now

    def report(self, clock, progress: ProgressCallback, seconds: int, total: int = 10 << 30) -> None:
        progress.set_description("Copying")
        progress.set_total(total, files=1000)
        for i in range(seconds):  # an update a second, evenly
            clock[0] += 1
            progress.update_to((i + 1) * total / seconds, (i + 1) * 1000 // seconds)
        progress.close()

    def test_a_long_copy_writes_a_line_per_tenth_then_the_end(self, clock):
        out = io.StringIO()
        self.report(clock, callbacks.MilestoneProgress(file=out, desc="Listing"), 600)
        lines = out.getvalue().splitlines()
        assert len(lines) == 10, lines  # 10 %, ..., 90 %, then the end
        assert [line.split("] ")[1].split(" %")[0] for line in lines[:-1]] == [str(10 * i) for i in range(1, 10)]
        assert lines[-1].startswith("Copying: [####################] 100 %, 10.0 GiB of 10.0 GiB, 1000 of 1000 files")
        assert "10 min 00 s" in lines[-1] and "17.9 MB/s" in lines[-1] and "ETA" not in lines[-1]
        assert "ETA 9 min 00 s" in lines[0]

    def test_the_rarer_of_a_tenth_and_a_minute(self, clock):
        out = io.StringIO()
        self.report(clock, callbacks.MilestoneProgress(file=out, every_s=60), 150)  # a tenth every 15 s
        assert len(out.getvalue().splitlines()) == 3  # at 60 s, 120 s, and the end
        out = io.StringIO()
        self.report(clock, callbacks.MilestoneProgress(file=out), 10)  # 10 s: the end only
        assert len(out.getvalue().splitlines()) == 1 and "100 %" in out.getvalue()

    def test_work_of_unknown_size_writes_every_interval(self, clock):
        out = io.StringIO()
        milestones = callbacks.MilestoneProgress(file=out, desc="Waiting", every_s=60)
        for _ in range(300):
            clock[0] += 1
            milestones.update(1)
        milestones.close()
        lines = out.getvalue().splitlines()
        assert len(lines) == 5, lines  # the end said by the last milestone: not twice
        assert lines[0].startswith("Waiting: 60 B, 1 min 00 s") and lines[-1].startswith("Waiting: 300 B, 5 min 00 s")

    def test_work_shorter_than_the_delay_writes_nothing(self, clock):
        out = io.StringIO()
        quick = callbacks.MilestoneProgress(file=out, delay=1.0)
        quick.set_total(3, unit="cmd")
        clock[0] += 0.5
        quick.update(3)
        quick.close()
        assert out.getvalue() == ""
        slow = callbacks.MilestoneProgress(file=out, delay=1.0, desc="Waiting for rsync")
        slow.set_total(1, unit="cmd")
        clock[0] += 2.0
        slow.update(1)
        slow.close()
        assert out.getvalue() == "Waiting for rsync: [####################] 100 %, 1 of 1 cmd, 2.0 s\n"

    def test_a_resumed_copy_counts_milestones_from_where_it_resumes(self, clock):
        out = io.StringIO()
        milestones = callbacks.MilestoneProgress(file=out, every_s=1)
        milestones.set_total(100)
        milestones.already_done(65)
        for _ in range(35):
            clock[0] += 1
            milestones.update(1)
        milestones.close()
        shares = [line.split("] ")[1].split(" %")[0] for line in out.getvalue().splitlines()]
        assert shares == ["75", "85", "95", "100"]
        assert "1.0 B/s" not in out.getvalue() and "MB/s" in out.getvalue()

    def test_lines_of_its_own_go_to_its_file(self):
        out = io.StringIO()
        callbacks.MilestoneProgress(file=out).write("taurus-tools: a notice")
        assert out.getvalue() == "taurus-tools: a notice\n"

    def test_what_the_command_line_asks_for(self, modules):
        assert isinstance(callbacks.progress_for_log(io.StringIO()), callbacks.MilestoneProgress)
        master, slave = os.openpty()
        try:
            with open(slave, "w", closefd=False) as terminal:
                assert callbacks.progress_for_log(terminal) is True
        finally:
            os.close(master)
            os.close(slave)

    def test_a_copy_from_the_command_line_into_a_pipe_writes_the_end(self, tmp_path, monkeypatch, capsys):
        from taurus_tools.cli.main import main
        import taurus_tools.datamover.wait as wait_mod

        make_tree(tmp_path / "src", files=12)
        argv = ["copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--backend", "local", "--work-dir"]
        assert main([*argv, str(tmp_path / "w1")]) == 0  # shorter than a second: the summary only
        out, err = capsys.readouterr()
        assert out.startswith("ok:") and "Copying" not in err, err
        monkeypatch.setattr(wait_mod, "PROGRESS_DELAY_S", 0.0)
        assert main([*argv, str(tmp_path / "w2")]) == 0
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.startswith("Copying")]
        assert len(lines) == 1 and "] 100 %," in lines[0] and "12 of 12 files" in lines[0], err
        assert "\r" not in err
        assert main([*argv, str(tmp_path / "w3"), "-q"]) == 0
        assert "Copying" not in capsys.readouterr().err
