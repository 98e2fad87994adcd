"""Pumping a process's pipes: stdin fed, stdout and stderr drained as they arrive, no deadlock.

One function, :func:`pump`, run by a handle's background thread: it feeds ``input`` to
stdin, hands each piece of stdout and stderr to a callback as it arrives (so a command that
prints 20 MB never blocks on a full pipe), and returns the exit code once the process is
gone.  A grandchild that keeps the pipes open after the process exited is given
:data:`ORPHAN_PIPE_GRACE_S`, then left behind.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from typing import IO, Callable, Optional

from .._log import get_logger

log = get_logger(__name__)

__all__ = ["pump", "devnull", "ORPHAN_PIPE_GRACE_S"]

READ_SIZE = 1 << 16
#: poll(2) needs no kernel object per handle (epoll costs a descriptor and two syscalls).
_Selector = getattr(selectors, "PollSelector", selectors.DefaultSelector)
PIPE_BUF = 4096
#: After the process exits, how long to keep reading pipes that a grandchild still holds open.
ORPHAN_PIPE_GRACE_S = 0.5

_DEVNULL_FD: Optional[int] = None


def devnull() -> int:
    """One read-only /dev/null descriptor shared by all handles (Popen opens one per call)."""
    global _DEVNULL_FD
    if _DEVNULL_FD is None:
        _DEVNULL_FD = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL_FD


def pump(
    popen: "subprocess.Popen[bytes]",
    input: Optional[bytes],
    on_stdout: Callable[[bytes], None],
    on_stderr: Callable[[bytes, bool], None],
    *,
    name: str = "",
) -> int:
    """Feed ``input`` and drain stdout/stderr until the process is gone; return its exit code.

    ``on_stdout(data)`` gets each piece of stdout, ``on_stderr(data, end)`` each piece of
    stderr and, once, ``(b"", True)`` when stderr has ended (or was given up on).
    """
    sel = _Selector()
    stdin_view = memoryview(input) if input is not None else None
    offset = 0
    assert popen.stdout is not None and popen.stderr is not None
    if popen.stdin is not None:
        if stdin_view is not None and len(stdin_view):
            sel.register(popen.stdin, selectors.EVENT_WRITE)
        else:
            popen.stdin.close()
    sel.register(popen.stdout, selectors.EVENT_READ, "out")
    sel.register(popen.stderr, selectors.EVENT_READ, "err")
    exited_at: Optional[float] = None
    try:
        while sel.get_map():
            ready = sel.select(timeout=0.2)
            for key, _ in ready:
                fobj: IO[bytes] = key.fileobj  # type: ignore[assignment]
                if key.data is None:  # stdin
                    assert stdin_view is not None
                    try:
                        offset += os.write(fobj.fileno(), stdin_view[offset : offset + PIPE_BUF])
                    except BrokenPipeError:
                        offset = len(stdin_view)
                    if offset >= len(stdin_view):
                        sel.unregister(fobj)
                        fobj.close()
                    continue
                data = os.read(fobj.fileno(), READ_SIZE)
                if not data:
                    sel.unregister(fobj)
                    fobj.close()
                    if key.data == "err":
                        on_stderr(b"", True)
                elif key.data == "out":
                    on_stdout(data)
                else:
                    on_stderr(data, False)
            if not ready and popen.poll() is not None:
                # The process is gone but something it started keeps our pipes open.
                now = time.monotonic()
                if exited_at is None:
                    exited_at = now
                elif now - exited_at > ORPHAN_PIPE_GRACE_S:
                    log.debug("%s: a child process still holds the output pipes", name)
                    break
    finally:
        for key in list(sel.get_map().values()):
            if key.data == "err":  # given up on (a grandchild holds it): what was held back
                on_stderr(b"", True)
            try:
                key.fileobj.close()  # type: ignore[union-attr]
            except OSError:
                pass
        sel.close()
    return popen.wait()
