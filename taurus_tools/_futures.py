"""The one future type: what every taurus-tools call that runs in the background returns.

:class:`BackgroundFuture` is a :class:`concurrent.futures.Future`, so
``concurrent.futures.wait``/``as_completed`` and ``asyncio.wrap_future`` work on command
handles and started copies alike.  ``result()`` returns the value (an exit code, a
``CopyResult``) or raises the typed error (``CommandError``, ``CopyError``): a failure never
reads as success.  ``cancel()`` stops the work (process tree, Slurm job), and ``cancelled()``
then says so.

Completion is recorded in two steps, in this order: the object's own end (its event, which
``wait()``/``communicate()`` wait for) and then the future's state, which runs the done
callbacks.  A callback may therefore call ``wait()`` or ``communicate()``.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable

from ._errors import DependencyError

__all__ = ["BackgroundFuture"]


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
            try:
                value = done.result()
            except BaseException as exc:
                error = DependencyError(f"not run: what it depends on failed: {exc}")
                error.__cause__ = exc
                child._settle(error=error)
                return
            try:
                child._settle(fn(value))
            except BaseException as exc:
                child._settle(error=exc)

        self.add_done_callback(run)
        return child
