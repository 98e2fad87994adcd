"""Small shared helpers for the unit and local-process tests (no Slurm needed)."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence

import psutil

from taurus_tools._slurm import JobState, SlurmClient

FAKE_BIN = "/fake/slurm/bin"
#: File names a careless tool gets wrong: separators of line- and tab-based formats, shell
#: metacharacters, option look-alikes, non-ASCII, a name that is not UTF-8 at all, and
#: ": " (the separator of failure messages).
HOSTILE_NAMES = [
    b"new\nline.txt",
    b"tab\there.txt",
    b"  spaces  in name ",
    b"quotes ' and \" both",
    b"-leading-dash",
    b"--rf",
    "ünïcødé ✓ 文件".encode(),
    b"\xff.bin",
    b"back\\slash",
    b"star*and?[x]",
    b"colon: space",
]
#: The two lines srun prints for --pty without a terminal (REFERENCE §1).
NOISE = (
    "srun: error: ioctl(TIOCGWINSZ): Inappropriate ioctl for device",
    "srun: error: Not using a pseudo-terminal, disregarding --pty option",
)


def write_stub(folder: Path, name: str, body: str) -> Path:
    """Write an executable ``/bin/sh`` script ``folder/name`` with ``body``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body.lstrip("\n"))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def prepend_path(monkeypatch, folder: Path) -> None:
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def alive(pids: Iterable[int]) -> List[int]:
    """The pids that still exist and are not zombies."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def tree(pid: int) -> List[int]:
    """pid and all its descendants (empty if gone)."""
    try:
        top = psutil.Process(pid)
        return [pid, *(c.pid for c in top.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def kill_group(pgid: int) -> None:
    """Clean-up: SIGKILL a process group left behind by a test (the handle's session)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class FakeSlurmClient(SlurmClient):
    """A SlurmClient whose executables "exist" under /fake/slurm/bin.

    Commands it runs go through ``subprocess.run``, so pytest-subprocess's ``fp`` can
    answer them (register ``[FAKE_BIN + "/sinfo", "-h", "-o", "%P"]`` etc.).
    ``missing`` names executables that are not there.  With ``states`` the job state is
    scripted instead (one JobState, or None, per poll; the last one repeats) and
    ``cancel`` / ``wait_gone`` only record their calls.
    """

    def __init__(
        self,
        missing: Sequence[str] = (),
        states: Optional[Sequence[Optional[JobState]]] = None,
    ) -> None:
        super().__init__()
        self.missing = set(missing)
        self.states = list(states) if states is not None else None
        self.polls = 0
        self.cancelled: List[List[str]] = []
        self.cancelled_names: List[str] = []
        self._calls_lock = threading.Lock()

    def which(self, name: str) -> Optional[str]:
        return None if name in self.missing else f"{FAKE_BIN}/{name}"

    def job_state(self, job_id: str) -> Optional[JobState]:
        if self.states is None:
            return super().job_state(job_id)
        with self._calls_lock:
            index = min(self.polls, len(self.states) - 1)
            self.polls += 1
        return self.states[index]

    def cancel(self, job_ids: Iterable[str] = (), *, name: Optional[str] = None) -> None:
        if self.states is None:
            return super().cancel(job_ids, name=name)
        if name is not None:
            self.cancelled_names.append(name)
        else:
            self.cancelled.append([str(j) for j in job_ids])

    def wait_gone(self, job_ids: Iterable[str], timeout: float = 30.0) -> bool:
        if self.states is None:
            return super().wait_gone(job_ids, timeout)
        return True
