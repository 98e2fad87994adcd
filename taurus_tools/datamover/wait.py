"""``waitfor``: wait for one or many handles (or any futures) with progress, live stderr, a
real timeout, and retries as an exit policy says."""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, overload

from .._log import get_logger
from ..callbacks import Progress, as_progress
from ..errors import CommandError, CommandTimeoutError, ConfigurationError
from ..policy import Action, Decision, ExitPolicy
from ..process.handle import Handle

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


def futures_of(obj: Any) -> List["concurrent.futures.Future[Any]"]:
    """A list of futures from one future (a handle, a started copy, ...) or a sequence of them."""
    if isinstance(obj, concurrent.futures.Future):
        return [obj]
    if isinstance(obj, (str, bytes)) or not isinstance(obj, Sequence):
        raise ConfigurationError(
            f"waitfor takes a handle, a started copy or another future, or a list of them; got {obj!r}"
        )
    items = list(obj)
    for i, item in enumerate(items):
        if not isinstance(item, concurrent.futures.Future):
            raise ConfigurationError(
                f"item {i} is {type(item).__name__} ({item!r}); waitfor takes handles, started "
                "copies and other futures"
            )
    return items


def _argv_of(item: Any) -> List[str]:
    args = getattr(item, "args", None)
    if isinstance(item, Handle) and args:
        return list(args)
    return [_name(item)]


def _name(item: Any) -> str:
    name = getattr(item, "name", None)
    return name if isinstance(name, str) and name else type(item).__name__


def _code(item: "concurrent.futures.Future[Any]") -> int:
    """The exit code of a finished command; for other futures (and commands that never ran)
    0 if it succeeded, 1 if not."""
    if isinstance(item, Handle) and item.returncode is not None:
        return item.returncode
    if item.cancelled():
        return 1
    return 0 if item.exception(timeout=0) is None else 1


def cancel_all(handles: Sequence["concurrent.futures.Future[Any]"]) -> None:
    """Cancel several handles (or other futures) at once (in parallel: each may wait for Slurm)."""
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
    handles: "concurrent.futures.Future[Any]",
    timeout: Optional[float] = ...,
    *,
    poll_interval: float = ...,
    progress: Progress = ...,
    check: bool = ...,
    show_stderr: bool = ...,
    file: Optional[IO[str]] = ...,
    policy: Union[ExitPolicy, str, None] = ...,
) -> int: ...


@overload
def waitfor(
    handles: Sequence["concurrent.futures.Future[Any]"],
    timeout: Optional[float] = ...,
    *,
    poll_interval: float = ...,
    progress: Progress = ...,
    check: bool = ...,
    show_stderr: bool = ...,
    file: Optional[IO[str]] = ...,
    policy: Union[ExitPolicy, str, None] = ...,
) -> List[int]: ...


def waitfor(
    handles: Union["concurrent.futures.Future[Any]", Sequence["concurrent.futures.Future[Any]"]],
    timeout: Optional[float] = None,
    *,
    poll_interval: float = 0.5,
    progress: Progress = True,
    check: bool = False,
    show_stderr: bool = True,
    file: Optional[IO[str]] = None,
    policy: Union[ExitPolicy, str, None] = None,
) -> Union[int, List[int]]:
    """Wait for one handle or many; return the exit code (a list for a list).

    Parameters
    ----------
    handles : Handle, future, or a sequence of them
        What to wait for: command handles, and any other future (a started
        :class:`ParallelCopy`, a ``then()`` future, ...).  A future that is not a command
        counts as exit code 0 if it succeeded and 1 if not (its ``result()`` has the
        details); so does a command that never ran (what it ran ``after`` failed).
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
        Raise :class:`CommandError` (argv, exit code, stderr tail) if any command failed;
        for another future (or a command that never ran), its own error.
    show_stderr : bool
        Print each command's stderr lines as they arrive (srun's ``--pty`` noise dropped).
    file : text stream, optional
        Where progress and stderr go; default ``sys.stderr``.
    policy : ExitPolicy or str, optional
        Run commands again as this :class:`~taurus_tools.policy.ExitPolicy` (or its
        compact form) says for their exit code, signal and Slurm job state: ``retry``
        starts the command anew (:meth:`Handle.again`) after the backoff,
        ``retry_elsewhere`` also keeps that and every later attempt of this wait off the
        node the job ran on (within ``max_excluded``, never the last usable node; only
        for jobs whose nodes the backend chooses, not a site tool's), within the
        policy's ``retries`` per command (default 2) and ``run_retries`` in all.  The
        codes returned are the last attempts'; ``check`` raises only for commands whose
        last attempt the policy did not call ``complete``.  The handles given stay those
        of the first attempts.  Other futures are waited for as they are.

    Notes
    -----
    Ctrl-C (KeyboardInterrupt) while waiting cancels every unfinished command, then
    re-raises.
    """
    single = isinstance(handles, concurrent.futures.Future)
    items = futures_of(handles)
    if isinstance(policy, str):
        policy = ExitPolicy(policy)
    elif policy is not None and not isinstance(policy, ExitPolicy):
        raise ConfigurationError(f"policy must be an ExitPolicy or its compact form (a str), got {policy!r}")
    retrier = _Retrier(policy, items) if policy is not None else None
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout}")
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
    out = file if file is not None else sys.stderr
    wake = threading.Event()

    def ended(_: Any) -> None:
        wake.set()

    for h in items:
        if isinstance(h, Handle):
            h.add_waker(wake, stdout=False)
        else:
            h.add_done_callback(ended)
    commands = [h for h in items if isinstance(h, Handle)]
    positions = [0] * len(items)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    labels = [_label(h, i, len(items)) for i, h in enumerate(items)]
    what = _name(items[0]) if len(items) == 1 else f"{len(items)} commands"
    # Made before the first report, in this thread (Jupyter shows a bar where it is made).
    bar = as_progress(progress, file=out, desc=f"Waiting for {what}", leave=False, delay=PROGRESS_DELAY_S)
    bar.set_description(f"Waiting for {what}")
    bar.set_total(len(items), unit="cmd")
    reported = 0

    def echo(final: bool = False, only: Optional[int] = None) -> None:
        if not show_stderr:
            return
        for i, h in enumerate(items):
            if not isinstance(h, Handle) or (only is not None and i != only):
                continue
            lines, positions[i] = h.read_stderr_lines(positions[i], final=final)
            for line in lines:
                if is_noise(line):
                    continue
                bar.write(labels[i] + line, out)

    def say(i: int, message: str) -> None:
        log.info("%s%s", labels[i], message)
        if show_stderr:
            bar.write(f"{labels[i]}{_name(items[i])}: {message}", out)

    def again(i: int, exclude: Tuple[str, ...]) -> None:
        echo(final=True, only=i)  # the ended attempt's last lines
        old = items[i]
        assert isinstance(old, Handle)
        old.remove_waker(wake)
        new = old.again(exclude_nodes=exclude)
        new.add_waker(wake, stdout=False)
        items[i] = new
        commands.append(new)
        positions[i] = 0

    try:
        while True:
            if retrier is not None:
                retrier.step(items, say, again)
            pending = [h for i, h in enumerate(items) if not h.done() or (retrier and not retrier.final[i])]
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
                raise CommandTimeoutError([_argv_of(h) for h in pending], timeout or 0.0)
            pause = poll_interval if deadline is None else min(poll_interval, deadline - now)
            if retrier is not None and retrier.due:
                pause = min(pause, min(retrier.due.values()) - now)
            wake.wait(max(pause, 0.0))
            wake.clear()
    except KeyboardInterrupt:
        log.info("interrupted: cancelling %d command(s)", sum(not h.done() for h in items))
        cancel_all(items)
        raise
    finally:
        for h in commands:
            h.remove_waker(wake)
        bar.close()
    echo(final=True)
    codes = [_code(h) for h in items]
    if check:
        completed = retrier.completed if retrier is not None else set()
        failed = [h for i, (h, code) in enumerate(zip(items, codes)) if code != 0 and i not in completed]
        if failed:
            first = failed[0]
            if len(failed) > 1:
                log.error("%d of %d commands failed", len(failed), len(items))
            if not isinstance(first, Handle) or first.returncode is None:
                if first.cancelled():
                    raise concurrent.futures.CancelledError(f"{_name(first)} was cancelled")
                error = first.exception(timeout=0)
                assert error is not None
                raise error
            raise CommandError(
                first.returncode or 1,
                first.args,
                output=first.stdout_text if first.text else None,
                stderr=first.stderr_text if first.text else None,
                job_id=first.job_id,
            )
    return codes[0] if single else codes  # type: ignore[return-value]


class _Retrier:
    """What an exit policy makes of the commands of one ``waitfor`` as they end.

    Attributes
    ----------
    final : list of bool
        Per item: its outcome is final (not a command, or the policy retries it no more).
    due : dict
        Item -> when (``time.monotonic()``) its next attempt starts.
    completed : set of int
        Items whose last attempt the policy called ``complete``.
    """

    def __init__(self, policy: ExitPolicy, items: Sequence["concurrent.futures.Future[Any]"]) -> None:
        self.policy = policy
        self.final = [not isinstance(h, Handle) for h in items]
        self.due: Dict[int, float] = {}
        self.completed: set = set()
        self._tries = [0] * len(items)
        self._run_retries = 0
        self._excluded: List[str] = []  # nodes retry_elsewhere excluded in this wait

    def step(
        self,
        items: List["concurrent.futures.Future[Any]"],
        say: Callable[[int, str], None],
        again: Callable[[int, Tuple[str, ...]], None],
    ) -> None:
        """Decide on the commands that ended; start the retries that are due."""
        now = time.monotonic()
        for i, when in list(self.due.items()):
            if when <= now:
                del self.due[i]
                again(i, tuple(self._excluded))
        for i, h in enumerate(items):
            if not self.final[i] and i not in self.due and h.done():
                assert isinstance(h, Handle)
                self._ended(i, h, say)

    def _ended(self, i: int, h: Handle, say: Callable[[int, str], None]) -> None:
        rc = h.returncode
        if rc is None:  # never ran (what it ran after failed), or cancelled before it started
            self.final[i] = True
            return
        job = h.ended_job() if h.job_id else None
        decision = self.policy.decide(rc, job.state if job is not None else None)
        if decision.action is Action.RETRY_ELSEWHERE:
            self._exclude(i, h, job.nodes if job is not None else None, decision, say)
        if decision.action.retries and self.policy.retry_allowed(self._tries[i], self._run_retries):
            delay = self.policy.backoff(self._tries[i])
            self._tries[i] += 1
            self._run_retries += 1
            self.due[i] = time.monotonic() + delay
            say(i, f"{decision.outcome}: retry {self._tries[i]} in {delay:.1f} s (rule {decision.rule})")
            return
        self.final[i] = True
        if decision.action is Action.COMPLETE:
            self.completed.add(i)
        elif decision.action.retries:
            say(i, f"{decision.outcome}: no retry left (rule {decision.rule})")
        else:
            say(i, f"{decision.outcome}: {decision.action.value} (rule {decision.rule})")

    def _exclude(
        self, i: int, h: Handle, node: Optional[str], decision: Decision, say: Callable[[int, str], None]
    ) -> None:
        placement = h.launch.placement
        if placement is None:
            say(i, f"{decision.outcome}: its nodes are not ours to choose; retried without excluding any")
            return
        usable = placement.usable_nodes() if node and node not in self._excluded else None
        refused = self.policy.exclusion_refused(node, excluded=self._excluded, usable=usable)
        if refused is not None:
            say(i, f"node {node}: {refused}")
            return
        assert node is not None
        self._excluded.append(node)
        say(i, f"node {node} excluded from later attempts ({decision.outcome}, rule {decision.rule})")


def _label(handle: Any, index: int, total: int) -> str:
    return "" if total == 1 else f"[{_name(handle)}#{index + 1}] "
