"""``examples/notebook.ipynb`` executed by nbclient on a real kernel, as a batch run (or
papermill) executes it: what a reader of the saved notebook sees.

The notebook runs in a temporary folder (it writes only below ``./taurus-tour``).  The test
environment has no ipywidgets: the progress of ``start()`` is then one line of text; one
test puts ipywidgets (installed into a folder of its own) on the kernel's path for the
widget bar.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import nbclient
import nbformat
import pytest

pytestmark = pytest.mark.timeout(300)

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb"
#: What the executed notebook may hold at most: a cell's outputs, and lines of text in all.
MOST_OUTPUTS_PER_CELL = 3
MOST_LINES = 60


def execute(folder: Path) -> Any:
    """The notebook, executed in ``folder``, as nbclient saves it."""
    shutil.copy(NOTEBOOK, folder / NOTEBOOK.name)
    nb = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute()
    nbformat.write(nb, folder / "executed.ipynb")  # as a batch run leaves it (and valid)
    return nbformat.read(folder / "executed.ipynb", as_version=4)


def cell(nb: Any, starts: str) -> Any:
    """The code cell whose source is ``starts``, else the one that starts with it."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    found = [c for c in code if c.source == starts] or [c for c in code if c.source.startswith(starts)]
    assert len(found) == 1, [c.source for c in found]
    return found[0]


def html(c: Any) -> str:
    shown = [o["data"]["text/html"] for o in c.outputs if "text/html" in o.get("data", {})]
    assert len(shown) == 1, c.outputs
    return str(shown[0])


def texts(nb: Any) -> List[str]:
    """Every output's text: streams, and the text/plain of results and displays."""
    found = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            found.append(o["text"] if o["output_type"] == "stream" else o.get("data", {}).get("text/plain", ""))
    return found


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> Any:
    if importlib.util.find_spec("ipywidgets") is not None:
        pytest.fail("these tests are about Jupyter without ipywidgets, which this environment has")
    return execute(tmp_path_factory.mktemp("notebook"))


def test_the_repository_holds_the_notebook_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_every_cell_ran_without_an_error_or_anything_on_stderr(executed):
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"], "stderr output"
    assert all(c.execution_count for c in executed.cells if c.cell_type == "code")
    assert "local" in cell(executed, "from pathlib import Path").outputs[0]["text"]


def test_the_results_show_as_html(executed):
    assert "dtls" in html(cell(executed, "proc"))
    info = html(cell(executed, "ws = Workspace"))
    assert "my-workspace" in info and "run 7" in info
    assert "my-workspace" in html(cell(executed, 'ws.list("my-*")'))
    running = html(cell(executed, "pc"))
    assert "run1" in running and "run1 copy" in running
    result = html(cell(executed, "result = pc.wait()"))
    assert "ok" in result and "200 files" in result and "12.5 MiB" in result and "<svg" in result
    summary = cell(executed, "print(result.summary())").outputs[0]["text"]
    assert summary.startswith("ok: 200 files (12.5 MiB) copied")


def test_the_progress_of_start_is_one_line_in_its_own_cell(executed):
    start = cell(executed, "pc = ParallelCopy(")
    assert len(start.outputs) == 1, start.outputs
    shown: Dict[str, Any] = start.outputs[0]
    assert shown["output_type"] == "display_data" and set(shown["data"]) == {"text/plain"}
    line = shown["data"]["text/plain"]
    assert "\n" not in line and "\r" not in line
    # wait() refreshed it after the copy ended: the final state.
    assert line.startswith("Copying: [####################] 100 %, 12.5 MiB of 12.5 MiB, 200 of 200 files"), line
    # Nowhere else: the cells run while the copy ran show only their own results.
    lines = [t for t in texts(executed) if t.startswith(("Listing", "Copying"))]
    assert lines == [line]


def test_the_saved_output_is_short(executed):
    for c in executed.cells:
        assert len(c.get("outputs", [])) <= MOST_OUTPUTS_PER_CELL, c
    assert sum(t.count("\n") + 1 for t in texts(executed)) <= MOST_LINES


def test_with_ipywidgets_start_shows_the_widget_bar_in_its_cell(tmp_path, monkeypatch):
    """ipywidgets (into a folder of its own: the test environment has none) on the kernel's
    path: ``start()`` makes the widget bar in its cell, and nothing goes to stderr."""
    widgets = tmp_path / "widgets"
    # (From the registry the suite's own packages come from; a failure to install is a
    # failure of the test, never a skip: the widget path would then go untested in CI.)
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(widgets), "ipywidgets==8.1.9"],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, f"pip could not install ipywidgets: {pip.stderr.strip()[-500:]}"
    monkeypatch.setenv("PYTHONPATH", str(widgets))  # the kernel's environment is this one's
    run = tmp_path / "run"
    run.mkdir()
    nb = execute(run)
    start = cell(nb, "pc = ParallelCopy(")
    assert len(start.outputs) == 1, start.outputs
    assert "application/vnd.jupyter.widget-view+json" in start.outputs[0]["data"]
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] in ("error", "stream") and o.get("name") != "stdout"]
    assert "200 files" in html(cell(nb, "result = pc.wait()"))
