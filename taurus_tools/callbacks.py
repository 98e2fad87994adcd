"""Progress as callbacks: one interface for waits, copies and transfers.

:class:`ProgressCallback` is what :func:`~taurus_tools.waitfor` and
:class:`~taurus_tools.ParallelCopy` (and S3 byte callbacks, rclone's stats) report to; its
methods do nothing, so code that reports never checks for None (fsspec's ``Callback`` is
the model).  :class:`NoProgress` is the explicit "nothing", :class:`TqdmProgress` draws a
tqdm bar.  ``progress=True`` asks for :func:`auto_progress`: a widget bar in Jupyter (when
ipywidgets imports), a slow text bar in Jupyter without it, a text bar on a terminal, and
nothing where output goes to a file or pipe (a job's log stays free of bar updates).

tqdm is imported only when a bar is drawn: ``import taurus_tools`` stays light.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any, Callable, Dict, Optional, Tuple, Union

from .errors import ConfigurationError

__all__ = [
    "NoProgress",
    "Progress",
    "ProgressCallback",
    "TqdmProgress",
    "as_progress",
    "auto_progress",
]

#: Jupyter without ipywidgets: a text bar redraws at most this often (seconds).  Each
#: redraw is more output in the cell, which a saved notebook keeps.
NOTEBOOK_TEXT_INTERVAL_S = 10.0
#: Width of the text bar in Jupyter, which has no terminal to ask.
NOTEBOOK_TEXT_COLUMNS = 100
#: The clock of delays and redraws (a name of its own, for tests).
_clock = time.monotonic


class ProgressCallback:
    """Where progress goes; every method here does nothing.

    Subclass it and override what you need.  A producer (a wait, a copy, a transfer)
    calls, from one thread at a time:

    * :meth:`set_description` with what it is doing (any time);
    * :meth:`set_total` once the size of the work is known (again if it changes);
    * :meth:`already_done` with what an earlier, interrupted run did (a resumed copy);
    * :meth:`update` with the work done since the last call, never negative;
      ``update()`` with nothing done is a tick (a display may redraw its clock);
    * :meth:`write` for a line of text that must not break a display;
    * :meth:`close` once at the end, also after an error, a timeout or Ctrl-C.

    Calling an instance with a number of bytes is :meth:`update`, so one can be passed
    where boto3 and s3transfer take ``Callback=``; :meth:`update_to` turns running totals
    (rclone's stats, a copy's counters) into updates.
    """

    # Running totals already reported by update_to (a class default: subclasses need not
    # call __init__).
    _reached: Tuple[float, int] = (0, 0)

    def set_total(self, total: Optional[float], *, files: Optional[int] = None, unit: str = "B") -> None:
        """The size of the work in ``unit`` (``"B"`` bytes, ``"cmd"`` commands), and in files.

        None: not known (yet).
        """

    def update(self, amount: float = 0, files: int = 0) -> None:
        """``amount`` more units (and ``files`` more files) are done."""

    def already_done(self, amount: float, files: int = 0) -> None:
        """``amount`` units (and ``files`` files) were done before this work began, by an
        earlier run that this one resumes: part of the progress, not of this run's rate.

        A producer calls it after :meth:`set_total`, before any update, and reports only
        this run's work after it (updates, or :meth:`update_to` totals, count from zero).
        This default reports it as one :meth:`update`.
        """
        self.update(amount, files)

    def set_description(self, text: str) -> None:
        """What is being done (``"Copying"``, ``"Waiting for dtcp"``)."""

    def write(self, text: str, file: Optional[IO[str]] = None) -> None:
        """Print a line (to ``file``, default stderr) without breaking the display."""
        print(text, file=file if file is not None else sys.stderr, flush=True)

    def close(self) -> None:
        """The work has ended (successfully or not); nothing more is reported."""

    def update_to(self, amount: float, files: int = 0) -> None:
        """Report running totals: the increase since the highest totals seen, if any.

        Totals that fall back (a retried part counted again) report nothing until they
        pass their highest value, so the updates stay monotone and add up to that value.
        """
        seen_amount, seen_files = self._reached
        more_amount = max(0.0, amount - seen_amount)
        more_files = max(0, files - seen_files)
        self._reached = (max(seen_amount, amount), max(seen_files, files))
        if more_amount or more_files:
            self.update(more_amount, more_files)
        else:
            self.update()

    def __call__(self, amount: float) -> None:
        """``amount`` more bytes are done (boto3's and s3transfer's ``Callback``)."""
        self.update(amount)

    def __enter__(self) -> "ProgressCallback":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class NoProgress(ProgressCallback):
    """No progress shown: what ``progress=False`` (or None) means."""


#: What a ``progress=`` option takes: True (:func:`auto_progress`), False or None
#: (:class:`NoProgress`), or a callback.
Progress = Union[bool, None, ProgressCallback]


# ------------------------------------------------------------------------------- tqdm
def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython is then imported already)."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
    except Exception:  # a broken or half-imported IPython: not a kernel we can draw in
        return False
    config = getattr(shell, "config", None)
    return shell is not None and config is not None and "IPKernelApp" in config


def _widgets() -> bool:
    """Whether ipywidgets imports with the progress widget tqdm.notebook needs."""
    try:
        from ipywidgets import FloatProgress  # noqa: F401
    except ImportError:
        return False
    return True


def _is_terminal(file: Any) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (OSError, ValueError):  # closed
        return False


def choose_bar(file: Optional[IO[str]], *, always: bool = False) -> Tuple[Optional[Callable[..., Any]], Dict[str, Any]]:
    """The tqdm class that draws a bar into ``file`` here, with its options; None: no bar.

    In Jupyter: ``tqdm.notebook`` when ipywidgets imports, else the text bar redrawn at
    most every :data:`NOTEBOOK_TEXT_INTERVAL_S` (``tqdm.auto`` would warn and redraw ten
    times a second, each redraw saved with the notebook).  Elsewhere: the text bar on a
    terminal; nothing when ``file`` is a file or a pipe, unless ``always``.
    """
    if _in_notebook():
        if _widgets():
            try:
                from tqdm.notebook import tqdm as notebook_tqdm
            except ImportError:
                pass
            else:
                return notebook_tqdm, {}
        from tqdm.std import tqdm as text_tqdm

        return text_tqdm, {"mininterval": NOTEBOOK_TEXT_INTERVAL_S, "ncols": NOTEBOOK_TEXT_COLUMNS}
    if always or _is_terminal(file if file is not None else sys.stderr):
        from tqdm.std import tqdm as text_tqdm

        return text_tqdm, {"dynamic_ncols": True}
    return None, {}


class TqdmProgress(ProgressCallback):
    """A tqdm progress bar.

    The bar is made (and, in Jupyter, displayed in the cell that runs) when this object
    is made, or with ``delay`` at the first report after ``delay`` seconds; its clock
    counts from when this object was made.  Thread-safe: reports may come from a
    background thread.

    Parameters
    ----------
    desc : str
        Text before the bar; :meth:`set_description` changes it.
    file : text stream, optional
        Where a text bar goes; default stderr.
    leave : bool
        Keep the finished bar on screen.
    delay : float
        Seconds before the bar appears (none at all for shorter work).
    tqdm_class : callable, optional
        The tqdm class; default :func:`choose_bar`'s (the notebook widget in Jupyter).
    **tqdm_options
        More keywords for ``tqdm_class`` (``mininterval=``, ``ncols=``, ...).
    """

    def __init__(
        self,
        *,
        desc: str = "",
        file: Optional[IO[str]] = None,
        leave: bool = True,
        delay: float = 0.0,
        tqdm_class: Optional[Callable[..., Any]] = None,
        **tqdm_options: Any,
    ) -> None:
        if tqdm_class is None:
            chosen_class, chosen = choose_bar(file, always=True)
            assert chosen_class is not None, "always=True chooses a bar"
            tqdm_class, tqdm_options = chosen_class, {**chosen, **tqdm_options}
        self._tqdm_class: Callable[..., Any] = tqdm_class
        self._options = dict(tqdm_options, leave=leave)
        if file is not None:
            self._options["file"] = file
        self._lock = threading.RLock()
        self._desc = desc
        self._unit = "B"
        self._total: Optional[float] = None
        self._n = 0.0
        self._initial = 0.0  # what an earlier run did (already_done): not in the rate
        self._files = 0
        self._files_total: Optional[int] = None
        self._made = _clock()
        self._delay = delay
        self._interval = float(self._options.get("mininterval", 0.1))
        self._drawn = 0.0
        self._closed = False
        self.bar: Any = None  #: the tqdm object, once it is made
        if delay <= 0:
            self._open()

    def _open(self) -> Any:
        unit_options: Dict[str, Any] = (
            {"unit": "B", "unit_scale": True, "unit_divisor": 1024} if self._unit == "B" else {"unit": self._unit}
        )
        bar = self._tqdm_class(
            total=self._total, initial=self._initial, desc=self._desc, **unit_options, **self._options
        )
        bar.n = self._n  # (tqdm's rate counts from initial)
        bar.start_t -= _clock() - self._made  # the clock counts from our start
        self.bar = bar
        self._postfix()
        return bar

    def _ready(self) -> Any:
        """The bar, made now if its delay has passed; None before that and after close."""
        if self.bar is None and not self._closed and _clock() - self._made >= self._delay:
            self._open()
        return self.bar

    def _postfix(self) -> None:
        if self.bar is not None and (self._files or self._files_total):
            of = f"/{self._files_total}" if self._files_total is not None else ""
            self.bar.set_postfix_str(f"{self._files}{of} files", refresh=False)

    def set_total(self, total: Optional[float], *, files: Optional[int] = None, unit: str = "B") -> None:
        with self._lock:
            self._total, self._files_total, self._unit = total, files, unit
            bar = self._ready()
            if bar is None:
                return
            bar.unit = unit
            bar.unit_scale = unit == "B"
            start, n = bar.start_t, bar.n
            bar.reset(total=total)  # the notebook widget learns its new maximum here
            bar.n, bar.start_t = n, start
            self._postfix()
            bar.refresh()

    def update(self, amount: float = 0, files: int = 0) -> None:
        with self._lock:
            self._n += amount
            self._files += files
            bar = self._ready()
            if bar is None:
                return
            bar.n = self._n
            if files:
                self._postfix()
            now = _clock()
            if now - self._drawn >= self._interval:  # tqdm's own limit needs its update()
                self._drawn = now
                bar.refresh()

    def already_done(self, amount: float, files: int = 0) -> None:
        with self._lock:
            self._n += amount
            self._initial = self._n
            self._files += files
            bar = self._ready()
            if bar is None:
                return
            bar.n = bar.initial = self._n
            bar.last_print_n = self._n
            self._postfix()
            bar.refresh()

    def set_description(self, text: str) -> None:
        with self._lock:
            self._desc = text
            if self.bar is not None:
                self.bar.set_description_str(text, refresh=False)

    def write(self, text: str, file: Optional[IO[str]] = None) -> None:
        with self._lock:
            if self.bar is None or self._closed:
                super().write(text, file)
            else:
                self.bar.write(text, file=file if file is not None else self._options.get("file", sys.stderr))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.bar is not None:
                self.bar.n = self._n
                self.bar.close()


def auto_progress(*, file: Optional[IO[str]] = None, **options: Any) -> ProgressCallback:
    """What ``progress=True`` shows here: a :class:`TqdmProgress` where a bar can be seen
    (see :func:`choose_bar`), else :class:`NoProgress`.  ``options`` go to TqdmProgress."""
    tqdm_class, chosen = choose_bar(file)
    if tqdm_class is None:
        return NoProgress()
    return TqdmProgress(file=file, tqdm_class=tqdm_class, **{**chosen, **options})


def as_progress(progress: Progress, **options: Any) -> ProgressCallback:
    """The callback a ``progress=`` value asks for: the callback itself, :func:`auto_progress`
    for True (``options`` go to it), :class:`NoProgress` for False or None."""
    if isinstance(progress, ProgressCallback):
        return progress
    if progress is True:
        return auto_progress(**options)
    if progress is False or progress is None:
        return NoProgress()
    raise ConfigurationError(f"progress must be True, False, None or a ProgressCallback, got {progress!r}")


def check_progress(progress: Any) -> None:
    """Raise :class:`ConfigurationError` unless ``progress`` is a valid ``progress=`` value."""
    if not (progress is None or isinstance(progress, (bool, ProgressCallback))):
        raise ConfigurationError(f"progress must be True, False, None or a ProgressCallback, got {progress!r}")
