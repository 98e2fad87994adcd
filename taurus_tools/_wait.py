"""``waitfor``: wait for one or many handles with progress, live stderr and a real timeout."""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, List, Optional, Sequence, Union, overload

from ._log import get_logger
from ._callbacks import Progress, as_progress
from ._errors import CommandError, CommandTimeoutError
from ._process import Handle, handles_of

log = get_logger(__name__)

__all__ = ["waitfor", "is_noise", "cancel_all"]

#: What srun prints when told ``--pty`` without a terminal: harmless, so never shown.
SRUN_PTY_NOISE = frozenset(
    {
        "srun: error: ioctl(TIOCGWINSZ): Inappropriate ioctl for device",
        "srun: error: Not using a pseudo-terminal, disregarding --pty option",
    }
)
#: A wait shorter than this shows no progress bar at all (no flicker for quick commands).
PROGRESS_DELAY_S = 1.0


def is_noise(line: str) -> bool:
    """True for stderr lines that carry no information (srun's ``--pty`` complaints)."""
    return line.strip() in SRUN_PTY_NOISE


def cancel_all(handles: Sequence[Handle]) -> None:
    """Cancel several handles at once (in parallel: each may wait for Slurm)."""
    running = [h for h in handles if not h.done()]
    if len(running) == 1:
        running[0].cancel()
        return
    threads = [threading.Thread(target=h.cancel, daemon=True) for h in running]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@overload
def waitfor(
    handles: Handle,
    timeout: Optional[float] = ...,
    *,
    poll_interval: float = ...,
    progress: Progress = ...,
    check: bool = ...,
    show_stderr: bool = ...,
    file: Optional[IO[str]] = ...,
) -> int: ...


@overload
def waitfor(
    handles: Sequence[Handle],
    timeout: Optional[float] = ...,
    *,
    poll_interval: float = ...,
    progress: Progress = ...,
    check: bool = ...,
    show_stderr: bool = ...,
    file: Optional[IO[str]] = ...,
) -> List[int]: ...


def waitfor(
    handles: Union[Handle, Sequence[Handle]],
    timeout: Optional[float] = None,
    *,
    poll_interval: float = 0.5,
    progress: Progress = True,
    check: bool = False,
    show_stderr: bool = True,
    file: Optional[IO[str]] = None,
) -> Union[int, List[int]]:
    """Wait for one handle or many; return the exit code (a list for a list).

    Parameters
    ----------
    handles : Handle or sequence of Handle
        What to wait for.
    timeout : float, optional
        Seconds to wait in all.  When it runs out every unfinished command is cancelled
        (process tree and Slurm job) and :class:`CommandTimeoutError` is raised.
    poll_interval : float
        Longest pause between progress updates, in seconds.  Finishing commands and new
        stderr lines wake the wait at once.
    progress : bool or ProgressCallback
        ``True``: a progress bar (commands done / total, elapsed time) once the wait has
        lasted a second, where one can be seen (a terminal, Jupyter); ``False`` or
        None: none; a
        :class:`ProgressCallback` gets the number of commands as the total (unit
        ``"cmd"``), one update per finished command, a tick per poll, and the stderr
        lines to print (:meth:`~ProgressCallback.write`).
    check : bool
        Raise :class:`CommandError` (argv, exit code, stderr tail) if any command failed.
    show_stderr : bool
        Print each command's stderr lines as they arrive (srun's ``--pty`` noise dropped).
    file : text stream, optional
        Where progress and stderr go; default ``sys.stderr``.

    Notes
    -----
    Ctrl-C (KeyboardInterrupt) while waiting cancels every unfinished command, then
    re-raises.
    """
    single = isinstance(handles, Handle)
    items = handles_of(handles)
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout}")
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
    out = file if file is not None else sys.stderr
    wake = threading.Event()
    for h in items:
        h.add_waker(wake)
    positions = [0] * len(items)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    labels = [_label(h, i, len(items)) for i, h in enumerate(items)]
    what = items[0].name if len(items) == 1 else f"{len(items)} commands"
    # Made before the first report, in this thread (Jupyter shows a bar where it is made).
    bar = as_progress(progress, file=out, desc=f"Waiting for {what}", leave=False, delay=PROGRESS_DELAY_S)
    bar.set_description(f"Waiting for {what}")
    bar.set_total(len(items), unit="cmd")
    reported = 0

    def echo(final: bool = False) -> None:
        if not show_stderr:
            return
        for i, h in enumerate(items):
            lines, positions[i] = h.read_stderr_lines(positions[i], final=final)
            for line in lines:
                if is_noise(line):
                    continue
                bar.write(labels[i] + line, out)

    try:
        while True:
            pending = [h for h in items if not h.done()]
            echo()
            finished = len(items) - len(pending)
            bar.update(finished - reported)  # 0: a tick, for the clock
            reported = finished
            if not pending:
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                cancel_all(pending)
                echo(final=True)
                raise CommandTimeoutError([h.args for h in pending], timeout or 0.0)
            pause = poll_interval if deadline is None else min(poll_interval, deadline - now)
            wake.wait(max(pause, 0.0))
            wake.clear()
    except KeyboardInterrupt:
        log.info("interrupted: cancelling %d command(s)", sum(not h.done() for h in items))
        cancel_all(items)
        raise
    finally:
        for h in items:
            h.remove_waker(wake)
        bar.close()
    echo(final=True)
    codes = [h.returncode for h in items]
    assert all(c is not None for c in codes)
    if check:
        failed = [h for h in items if h.returncode != 0]
        if failed:
            first = failed[0]
            if len(failed) > 1:
                log.error("%d of %d commands failed", len(failed), len(items))
            raise CommandError(
                first.returncode or 1,
                first.args,
                output=first.stdout_text if first.text else None,
                stderr=first.stderr_text if first.text else None,
                job_id=first.job_id,
            )
    return codes[0] if single else codes  # type: ignore[return-value]


def _label(handle: Handle, index: int, total: int) -> str:
    return "" if total == 1 else f"[{handle.name}#{index + 1}] "
