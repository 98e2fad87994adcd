"""A copy in a real Jupyter kernel (ipykernel, driven by jupyter_client): what a notebook
user does with it, interrupting a cell and restarting the kernel, behaves as issue 17 asks.

Each test starts its own kernel.  The copy's shard "workers" are ``sleep`` processes with
a number of seconds no other process uses, so that the test can find them; they would run
for minutes, so a test that sees them gone saw them stopped.
"""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path
from typing import Any, Dict, List

import jupyter_client.manager  # (and ipykernel: both in the test extra)
import psutil
import pytest
from helpers import alive, wait_until

pytestmark = pytest.mark.timeout(180)

#: The shard workers' stand-in: ``sleep SECONDS``.
SECONDS = "98.765"

SETUP = """
from taurus_tools import Datamover, ParallelCopy
def sleeping_copy(src, dst, work):
    pc = ParallelCopy(src, dst, work_dir=work, datamover=Datamover("local"), progress=False, shards=2, workers=2)
    real = pc._launch
    def launch(dm, task):  # each shard's worker sleeps until it is stopped
        launch_, status, failed = real(dm, task)
        return type(launch_)(("sleep", "{seconds}"), name=launch_.name), status, failed
    pc._launch = launch
    return pc
""".format(seconds=SECONDS)


class Kernel:
    """A kernel, its client, and cells run to their end with their output messages."""

    def __init__(self) -> None:
        self.manager, self.client = jupyter_client.manager.start_new_kernel(kernel_name="python3")

    def send(self, code: str) -> str:
        return self.client.execute(code)  # type: ignore[no-any-return]

    def outputs(self, msg_id: str, timeout: float = 60) -> List[Dict[str, Any]]:
        """The output messages of cell ``msg_id`` until the kernel is idle again."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the cell did not end within {timeout} s; so far: {out}")
            try:
                msg = self.client.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return out
            out.append(msg)

    def run(self, code: str, timeout: float = 60) -> str:
        """Run a cell that must succeed; return its stdout."""
        out = self.outputs(self.send(code), timeout)
        errors = [m["content"] for m in out if m["msg_type"] == "error"]
        assert not errors, "\n".join(line for e in errors for line in e["traceback"])
        streams = [m["content"] for m in out if m["msg_type"] == "stream"]
        return "".join(c["text"] for c in streams if c["name"] == "stdout")

    def stop(self) -> None:
        self.client.stop_channels()
        if self.manager.is_alive():
            self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel():
    k = Kernel()
    try:
        k.run(SETUP)
        yield k
    finally:
        k.stop()


def sleepers() -> List[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", SECONDS]:
            found.append(proc.pid)
    return found


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(bytes([i]) * 1000)
    yield src, tmp_path / "dst", tmp_path / "work"
    for pid in alive(sleepers()):
        psutil.Process(pid).kill()


def test_interrupting_run_stops_the_shards_and_says_how_to_resume(kernel, tree):
    src, dst, work = tree
    cell = kernel.send(f"sleeping_copy({str(src)!r}, {str(dst)!r}, {str(work)!r}).run()")
    running = wait_until(lambda: len(sleepers()) == 2 and sleepers(), 30, what="the copy's 2 shard processes")
    kernel.manager.interrupt_kernel()
    out = kernel.outputs(cell)
    errors = [m["content"] for m in out if m["msg_type"] == "error"]
    assert [e["ename"] for e in errors] == ["KeyboardInterrupt"]
    shown = "\n".join(errors[0]["traceback"])
    assert "run it again" in shown and str(work) in shown  # the note, under the traceback
    wait_until(lambda: not alive(running), 15, what="the interrupted copy's shard processes to be stopped")
    again = kernel.run(
        "r = ParallelCopy({!r}, {!r}, work_dir={!r}, progress=False).run()\nprint(r.ok, r.files_copied)".format(
            str(src), str(dst), str(work)
        )
    )
    assert again.split() == ["True", "4"]
    assert sorted(p.name for p in dst.iterdir()) == ["f0", "f1", "f2", "f3"]


def test_restarting_the_kernel_during_start_stops_the_shards_resumably(kernel, tree):
    src, dst, work = tree
    kernel.run(f"pc = sleeping_copy({str(src)!r}, {str(dst)!r}, {str(work)!r}).start()")
    running = wait_until(lambda: len(sleepers()) == 2 and sleepers(), 30, what="the copy's 2 shard processes")
    kernel.manager.restart_kernel(now=False)  # as the notebook's "Restart": a shutdown request first
    wait_until(lambda: not alive(running), 30, what="the shard processes of the restarted kernel's copy to stop")
    state = json.loads(Path(work, "state.json").read_text())
    assert not any(shard["state"] == "running" for shard in state["shards"])
