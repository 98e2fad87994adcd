"""The one future type: what every taurus-tools call that runs in the background returns.

:class:`BackgroundFuture` is a :class:`concurrent.futures.Future`, so
``concurrent.futures.wait``/``as_completed`` and ``asyncio.wrap_future`` work on command
handles and started copies alike.  ``result()`` returns the value (an exit code, a
``CopyResult``) or raises the typed error (``CommandError``, ``CopyError``): a failure never
reads as success.  ``cancel()`` stops the work (process tree, Slurm job), and ``cancelled()``
then says so.

Completion is recorded in two steps, in this order: the object's own outcome (exit code,
output, result) and then the future's state, which wakes ``wait()``/``result()`` and runs the
done callbacks.  A callback may therefore call ``wait()`` or ``communicate()``.

Chaining: :func:`run_after` starts a step once the futures it depends on have ended (all
succeeded, or ``on="always"``) and fails it with :class:`DependencyError` (``__cause__``: the
root error) otherwise; handles and copies take ``after=``/``on=`` through it, and
:meth:`BackgroundFuture.then` shares its idea of the root cause.  :func:`in_background` runs
the handles' pipe readers on reused daemon threads.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from typing import Any, Callable, Deque, Iterable, List

from .errors import ConfigurationError, DependencyError
from ._log import get_logger

log = get_logger(__name__)

__all__ = ["BackgroundFuture", "run_after", "root_cause", "ON_CHOICES", "in_background"]

#: Seconds an idle background thread waits for more work before it ends.
IDLE_THREAD_S = 30.0


class _Threads:
    """Daemon threads that run one function after another: a new thread only when none is idle.

    Each handle needs a thread for as long as its command runs (it pumps the pipes and
    follows the job), so a bounded pool would not do; but starting a thread per call is
    a measurable part of a short command's cost.  A thread that finished its function
    waits :data:`IDLE_THREAD_S` for the next one, then ends.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tasks: Deque[Callable[[], None]] = collections.deque()
        self._idle = 0

    def submit(self, fn: Callable[[], None], name: str) -> None:
        def task() -> None:
            threading.current_thread().name = name
            fn()

        with self._cond:
            if self._idle > len(self._tasks):  # an idle thread takes it
                self._tasks.append(task)
                self._cond.notify()
                return
        threading.Thread(target=self._loop, args=(task,), name=name, daemon=True).start()

    def _loop(self, task: Callable[[], None]) -> None:
        while True:
            try:
                task()
            except BaseException:  # the function's own business; the thread goes on
                log.exception("background task failed")
            with self._cond:
                self._idle += 1
                deadline = time.monotonic() + IDLE_THREAD_S
                while not self._tasks:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._idle -= 1
                        return
                    self._cond.wait(left)
                task = self._tasks.popleft()
                self._idle -= 1
            threading.current_thread().name = "taurus-tools:idle"


_THREADS = _Threads()


def in_background(fn: Callable[[], None], name: str) -> None:
    """Run ``fn()`` in a daemon thread (a reused idle one when there is one)."""
    _THREADS.submit(fn, name)


#: When a step with ``after=`` runs: only if every one succeeded, or whatever happened.
ON_CHOICES = ("success", "always")


def root_cause(error: BaseException) -> BaseException:
    """The error a chain of :class:`DependencyError` started from (``error`` itself otherwise)."""
    seen = set()
    while isinstance(error, DependencyError) and error.__cause__ is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__
    return error


def _failure(future: "concurrent.futures.Future[Any]") -> BaseException | None:
    """What a finished future failed with (a ``CancelledError`` if cancelled), or None."""
    try:
        return future.exception(timeout=0)
    except concurrent.futures.CancelledError as exc:
        return exc


def dependency_error(future: "concurrent.futures.Future[Any]", error: BaseException) -> DependencyError:
    """A :class:`DependencyError` for a step not run because ``future`` failed with ``error``."""
    root = root_cause(error)
    what = f"{root}" or type(root).__name__
    if isinstance(root, concurrent.futures.CancelledError) and not str(root):
        what = "it was cancelled"
    result = DependencyError(f"not run: a step it depends on ({_describe(future)}) failed: {what}")
    result.__cause__ = root
    return result


def _describe(future: Any) -> str:
    name = getattr(future, "name", None)
    return str(name) if name else type(future).__name__


def check_after(after: Iterable[Any], on: str) -> List["concurrent.futures.Future[Any]"]:
    """Validate ``after=``/``on=`` arguments; return the futures as a list."""
    if on not in ON_CHOICES:
        raise ConfigurationError(f"on must be one of {ON_CHOICES}, got {on!r}")
    if isinstance(after, concurrent.futures.Future):
        after = [after]
    try:
        futures = list(after)
    except TypeError:
        raise ConfigurationError(
            f"after must be a list of futures (handles, started copies, ...), got {after!r}"
        ) from None
    for i, item in enumerate(futures):
        if not isinstance(item, concurrent.futures.Future):
            raise ConfigurationError(
                f"after[{i}] is {type(item).__name__} ({item!r}); pass what a taurus-tools call "
                "returned (a handle, a started copy, a future from then()), or any "
                "concurrent.futures.Future"
            )
    return futures


def run_after(
    after: Iterable[Any],
    on: str,
    start: Callable[[], None],
    fail: Callable[[BaseException], None],
) -> None:
    """Call ``start()`` once every future of ``after`` has ended, or ``fail(error)``.

    With ``on="success"`` a failed or cancelled future means ``fail`` with a
    :class:`DependencyError` whose ``__cause__`` is the root error (the first failed
    future in ``after``'s order); ``on="always"`` starts regardless.  What ``start``
    raises goes to ``fail`` too: nothing is only logged.  Both run in the thread that
    completes the last future (at once, in this thread, if all have ended already).
    """
    futures = check_after(after, on)
    lock = threading.Lock()
    remaining = [len(futures)]

    def go() -> None:
        if on == "success":
            for future in futures:
                error = _failure(future)
                if error is not None:
                    fail(dependency_error(future, error))
                    return
        try:
            start()
        except BaseException as exc:
            fail(exc)

    def one_ended(_: Any) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            go()

    if not futures:
        go()
        return
    for future in futures:
        future.add_done_callback(one_ended)


class BackgroundFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """A :class:`concurrent.futures.Future` for work that taurus-tools runs itself.

    Subclasses call :meth:`_settle` once, when the work has ended.
    """

    def _settle(self, value: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome (first call only) and run the done callbacks."""
        if concurrent.futures.Future.done(self):  # settled already, or cancelled before it ran
            return
        if not self.running():
            self.set_running_or_notify_cancel()
        if error is not None:
            self.set_exception(error)
        else:
            self.set_result(value)

    def cancelled(self) -> bool:
        """True if it was cancelled: before it started, or stopped by ``cancel()`` since."""
        if super().cancelled():
            return True
        if not concurrent.futures.Future.done(self):
            return False
        return isinstance(super().exception(timeout=0), concurrent.futures.CancelledError)

    def then(self, fn: Callable[[Any], Any]) -> "BackgroundFuture":
        """A new future for ``fn(self.result())``, run once this one has succeeded.

        If this one fails (or is cancelled), the new one fails with :class:`DependencyError`
        whose ``__cause__`` is that error, and ``fn`` is not called.  What ``fn`` raises
        lands on the new future (``result()`` raises it); nothing is swallowed.  ``fn`` runs
        in the thread that completes this future (at once if it is done already): keep it
        short, or start background work from it.
        """
        child = BackgroundFuture()
        child.set_running_or_notify_cancel()

        def run(done: concurrent.futures.Future) -> None:  # type: ignore[type-arg]
            error = _failure(done)
            if error is not None:
                child._settle(error=dependency_error(done, error))
                return
            value = done.result()
            try:
                child._settle(fn(value))
            except BaseException as exc:
                child._settle(error=exc)

        self.add_done_callback(run)
        return child
