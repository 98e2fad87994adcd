"""Process trees and signals: stop a command with everything it started; start one without a gap.

:func:`terminate_tree` stops a process and all its descendants (SIGTERM, SIGCONT, then
SIGKILL after a grace period) without reaping what belongs to a Popen.
:func:`signals_deferred` holds back Ctrl-C, SIGTERM and SIGHUP while a process is started
and recorded, so that no signal falls between the two.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence

if TYPE_CHECKING:
    import psutil

__all__ = ["DEFERRED_SIGNALS", "signals_deferred", "terminate_tree", "terminate_trees"]

#: Signals that :func:`signals_deferred` holds back.
DEFERRED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def signals_deferred(signums: Sequence[int] = DEFERRED_SIGNALS) -> Iterator[None]:
    """Hold back Python's handlers of ``signums`` (Ctrl-C, SIGTERM, SIGHUP) for the block.

    A signal that arrives inside the block is recorded and handed to its handler when the
    block ends, so a handler that raises (``KeyboardInterrupt``) raises there, not in
    the middle of the block.  Start a process and record its handle inside the block,
    and end the block inside the ``try`` that cancels the handle::

        handle = None
        try:
            with signals_deferred():
                handle = Handle(launch)   # no signal between the start and this name
            handle.wait()
        except KeyboardInterrupt:
            if handle is not None:
                handle.cancel()

    The process mask is not touched (a child would inherit blocked signals): only Python
    handlers are swapped, in the main thread (elsewhere the block just runs, as Python
    runs handlers only there); a signal that is ignored or left to the system's default
    action stays so.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: List[int] = []
    previous: Dict[int, Any] = {}

    def record(signum: int, frame: Any) -> None:
        pending.append(signum)

    try:
        for sig in signums:
            handler = signal.getsignal(sig)
            if callable(handler):
                previous[sig] = signal.signal(sig, record)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in pending:  # in order; a handler that raises ends the block with it
            previous[signum](signum, None)


def terminate_tree(pid: int, *, grace: float = 5.0) -> Optional[int]:
    """SIGTERM a process and all its descendants, SIGKILL what is left after ``grace`` s.

    Returns the signal that ended the top process last (``SIGTERM`` or ``SIGKILL``), or
    None if it was already gone.
    """
    return terminate_trees([pid], grace=grace)


def terminate_trees(pids: Sequence[int], *, grace: float = 5.0) -> Optional[int]:
    """:func:`terminate_tree` for several processes at once: one ``grace`` for all.

    Stopped processes (SIGSTOP, a suspended job) get SIGCONT after the SIGTERM, so they
    can act on it.  Returns the strongest signal needed, None when all were gone.
    """
    import psutil  # (here: 30 ms to import, for a copy that never stops a process)

    procs: List[psutil.Process] = []
    for pid in pids:
        try:
            top = psutil.Process(pid)
            procs += [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    if not procs:
        return None
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
            p.send_signal(signal.SIGCONT)
        except psutil.NoSuchProcess:
            pass
    alive = _wait_dead(procs, grace)
    if not alive:
        return int(signal.SIGTERM)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_dead(alive, grace)
    return int(signal.SIGKILL)


def _wait_dead(procs: Sequence[psutil.Process], timeout: float) -> List[psutil.Process]:
    """Wait until the processes have exited; return those still running after ``timeout``.

    A zombie counts as dead.  Unlike :func:`psutil.wait_procs` this never reaps: the
    exit status of our own child belongs to its Popen (reaping it here made Popen report
    0 for a killed process), and orphaned zombies are init's to collect, however slowly.
    """
    import psutil

    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
