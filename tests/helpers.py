"""Small shared helpers for the unit and local-process tests (no Slurm needed)."""

from __future__ import annotations

import hashlib
import inspect
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

import psutil

from taurus_tools.slurm.client import JobState, SlurmClient

T = TypeVar("T")

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


class WaitTimeout(AssertionError):
    """A state a test waited for did not come in time (see :func:`wait_for`)."""


def wait_for(
    observe: Callable[[], T],
    accept: Callable[[T], object] = bool,
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: Optional[str] = None,
) -> T:
    """Observe a state again and again until it is acceptable; return the accepted value.

    For any check of process, job, file or cluster state that another process changes:
    such a state is reached some time after the action that causes it (a job stays
    COMPLETING after its processes ended, a child process is forked a little later),
    so one sample after a fixed sleep passes or fails by chance.

    ``observe()`` is called at once and then every ``interval`` seconds until
    ``accept(value)`` is true or ``timeout`` seconds have passed; the last observation is
    made after the deadline, so a slow machine gets a last chance.  On timeout
    :class:`WaitTimeout` (an AssertionError, so the test fails) says what was awaited
    and shows the last value observed.  Exceptions of ``observe`` propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = observe()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    name = what or _describe(accept)
    raise WaitTimeout(f"timed out after {timeout:g} s waiting for {name}; last observed: {value!r}")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    interval: float = 0.02,
    *,
    step: Optional[float] = None,
    what: Optional[str] = None,
) -> T:
    """Call ``predicate()`` until it returns something true; return that value.

    On timeout raise :class:`WaitTimeout` naming ``what`` (default: the predicate's
    name) and the last value returned.  A predicate that returns the observed state
    itself when it is acceptable (and a false value otherwise) gives a clearer message
    with :func:`wait_for`.  ``step`` is the old name of ``interval``.  Old callers write
    ``assert wait_until(...)``: that still works (the value returned is true).
    """
    if step is not None:
        interval = step
    return wait_for(predicate, bool, timeout=timeout, interval=interval, what=what or _describe(predicate))


def interrupt_main_thread_inside(code, *, what: str, timeout: float = 20.0) -> threading.Thread:
    """SIGINT the main thread from another thread once it is blocked inside ``code``.

    "Blocked inside": its innermost frame is in threading's ``Event.wait`` or
    ``Condition.wait`` and ``code`` (a function's ``__code__``) is on its stack.  A timer
    fired after a fixed delay could hit the main thread before it got there (on a loaded
    machine).  If it is not seen there within ``timeout`` s no signal is sent (it could hit
    pytest itself) and the thread's ``failure`` list holds the reason.  Use it with the
    ``sigint_raises`` fixture: started in the background of a shell, pytest ignores SIGINT.
    Returns the thread, to join.
    """
    main = threading.main_thread()
    failure: List[BaseException] = []

    def blocked_inside() -> bool:
        frame = sys._current_frames().get(main.ident)  # type: ignore[arg-type]
        codes = []
        while frame is not None:
            codes.append(frame.f_code)
            frame = frame.f_back
        return bool(codes) and codes[0].co_filename == threading.__file__ and code in codes

    def interrupt() -> None:
        try:
            wait_until(blocked_inside, timeout, interval=0.01, what=f"the main thread to wait in {what}")
        except AssertionError as exc:
            failure.append(exc)
            return
        signal.pthread_kill(main.ident, signal.SIGINT)  # type: ignore[arg-type]

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.failure = failure  # type: ignore[attr-defined]
    thread.start()
    return thread


def _describe(function: Callable) -> str:
    """A function's name, or for a lambda its source line (for timeout messages)."""
    name = getattr(function, "__qualname__", None) or repr(function)
    if name.endswith("<lambda>"):
        try:
            source = " ".join(inspect.getsource(function).split())
        except (OSError, TypeError):
            return name
        return source if len(source) <= 200 else source[:197] + "..."
    return name


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


def scripts_below(pid: int, script: str) -> List[psutil.Process]:
    """The processes below ``pid`` running a Python script whose path ends in ``script``
    (``"transfer/worker.py"``: a parallel copy's shard workers)."""
    found: List[psutil.Process] = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for child in children:
        try:
            if any(part.endswith(script) for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


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


def register_sinfo(fp, stdout: str = "debug*\ndatamover\n") -> None:
    """Answer the fake ``sinfo -h -o %P`` (partitions; ``*`` marks the default) through ``fp``."""
    fp.register([f"{FAKE_BIN}/sinfo", "-h", "-o", "%P"], stdout=stdout)


#: Names that need care on every backend (used by the copy tests through Slurm and the contract suite).
HOSTILE = ["with space", "quote'\"s", "new\nline", "-leading-dash", "ünïcødé-名前"]
MiB = 1 << 20


# ---------------------------------------------------------------- trees of hostile names
def make_tree(root: Path, big_files: int = 0, big_mib: int = 0) -> None:
    """Hostile names, a nested copy of them, links (relative, absolute, dangling, to a
    folder), empty folders, a zero-byte file; plus ``big_files`` files of ``big_mib`` MiB."""
    root.mkdir(parents=True)
    nested = root / "sub dir" / "-x ü"
    nested.mkdir(parents=True)
    for i, name in enumerate(HOSTILE):
        (root / name).write_bytes(os.urandom(1000 + i))
        (nested / name).write_bytes(os.urandom(3000 + i))
    (root / "zero").write_bytes(b"")
    (root / "empty dir").mkdir()
    (root / "a" / "b" / "empty").mkdir(parents=True)
    os.symlink("with space", root / "link to file")
    os.symlink("sub dir", root / "link to dir")
    os.symlink("/etc/hostname", root / "absolute link")  # copied as a link, never followed
    os.symlink("no such target", root / "dangling\nlink")
    os.symlink("../../new\nline", nested / "up-link")
    for i in range(big_files):
        block = os.urandom(MiB)
        with open(root / f"big {i}.bin", "wb") as fh:
            for _ in range(big_mib):
                fh.write(block)


def snapshot(root: Path) -> Dict[str, Tuple]:
    """Every entry below ``root``: kind plus link target or mode and content digest."""
    out: Dict[str, Tuple] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.fsdecode(os.path.relpath(path, base))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                digest = hashlib.blake2b(digest_size=16)
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(MiB), b""):
                        digest.update(chunk)
                out[rel] = ("file", st.st_size, stat.S_IMODE(st.st_mode), digest.hexdigest())
    return out


def assert_identical(src: Path, dst: Path) -> Dict[str, Tuple]:
    want, got = snapshot(src), snapshot(dst)
    assert sorted(got) == sorted(want), (sorted(set(want) - set(got)), sorted(set(got) - set(want)))
    for rel in want:
        assert got[rel] == want[rel], rel
    assert "empty dir" in got and "a/b/empty" in got and "new\nline" in got
    return want


def counts(snap: Dict[str, Tuple]) -> Tuple[int, int]:
    """(files + links, bytes) of a snapshot: what a copy plans."""
    entries = [v for v in snap.values() if v[0] != "dir"]
    return len(entries), sum(v[1] for v in entries if v[0] == "file")


#: Object keys / remote file names that need care on every object store (the S3 and rclone tests).
HOSTILE_OBJECT_NAMES = [
    "with space.txt", "quote'\"s", "new\nline", "-leading-dash", "ünïcødé-名前", "#hash;semi", "d/e/f.bin",
]


def shard_exits(copy, scripts: Dict[int, Sequence[str]]) -> None:
    """Make attempts of a ParallelCopy's shards run a shell script instead of the worker.

    ``scripts[shard][attempt]`` is the script (``"exit 3"``, ``"kill -9 $$"``) of that
    attempt of that shard; attempts past the list run the real worker.  The script runs
    where the backend runs a shard (a process here, a Slurm job on a node, with the
    nodes the copy excludes excluded), so its exit code and job state are real.
    """
    real = copy._launch

    def launch(dm, queued):
        launched, status, failed = real(dm, queued)
        todo = scripts.get(queued.index, ())
        if queued.attempt < len(todo):
            argv = ("sh", "-c", todo[queued.attempt])
            exclude = copy._attempt(queued).exclude_nodes
            launched = dm.backend.launch_program(launched.name, argv, blocking=True, exclude_nodes=exclude)
        return launched, status, failed

    copy._launch = launch
