"""Progress as callbacks: one interface for waits, copies and transfers.

:class:`ProgressCallback` is what :func:`~taurus_tools.waitfor` and
:class:`~taurus_tools.ParallelCopy` (and S3 byte callbacks, rclone's stats) report to; its
methods do nothing, so code that reports never checks for None (fsspec's ``Callback`` is
the model).  :class:`NoProgress` is the explicit "nothing", :class:`TqdmProgress` draws a
tqdm bar, :class:`NotebookLine` one line of text that a Jupyter display updates in place,
:class:`MilestoneProgress` a line now and then into a log.

Which one ``progress=True`` gets (:func:`auto_progress`) follows :func:`display_kind`, the
one place that tells where progress is seen: a terminal gets a text bar; Jupyter the
widget bar (when ipywidgets imports) or else the updating line; output into a file or a
pipe nothing (the command line asks for milestone lines there: :func:`progress_for_log`).

Why the line without ipywidgets: tqdm's text bar writes redraws joined by ``"\r"`` to
stderr, which a notebook shows red and a notebook executed in batch (nbclient, papermill)
saves as one output per redraw; nbclient saves a display updated by ``display_id`` as one
output holding its last state.

tqdm and IPython are imported only when a bar or line is drawn: ``import taurus_tools``
stays light.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any, Callable, Dict, Optional, Tuple, Union

from .display import human_bytes, human_duration
from .errors import ConfigurationError

__all__ = [
    "MilestoneProgress",
    "NoProgress",
    "NotebookLine",
    "Progress",
    "ProgressCallback",
    "TqdmProgress",
    "as_progress",
    "auto_progress",
    "display_kind",
    "progress_for_log",
]

#: Jupyter without ipywidgets: a forced tqdm text bar (``TqdmProgress()``) redraws at most
#: this often (seconds).  Each redraw is more output in the cell, which a saved notebook keeps.
NOTEBOOK_TEXT_INTERVAL_S = 10.0
#: :class:`NotebookLine` redraws at most this often (seconds): a message to the notebook
#: each time, replacing the line (a saved notebook keeps only the last).
NOTEBOOK_LINE_INTERVAL_S = 1.0
#: :class:`MilestoneProgress` writes a line when at least this share more is done *and* at
#: least :data:`MILESTONE_INTERVAL_S` seconds have passed since its last line (the rarer of
#: the two), and one at the end.
MILESTONE_FRACTION = 0.1
MILESTONE_INTERVAL_S = 60.0
#: The kinds of display :func:`display_kind` tells apart.
TERMINAL, NOTEBOOK_WIDGET, NOTEBOOK_TEXT, NON_INTERACTIVE = "terminal", "notebook widget", "notebook text", "none"
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

    def refresh(self) -> None:
        """Draw the last state again, from the calling thread (also after :meth:`close`).

        For a display another thread updated: a notebook executed in batch (nbclient)
        keeps only the updates sent while a cell runs, and ``ParallelCopy.wait()`` calls
        this once the copy has ended.  This default does nothing.
        """

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
    """Whether ipywidgets imports with the progress widget tqdm.notebook needs, and
    tqdm.notebook imports."""
    try:
        from ipywidgets import FloatProgress  # noqa: F401
    except ImportError:
        return False
    return _notebook_tqdm() is not None


def _notebook_tqdm() -> Optional[Callable[..., Any]]:
    try:
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:
        return None
    return notebook_tqdm  # type: ignore[no-any-return]


def _is_terminal(file: Any) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (OSError, ValueError):  # closed
        return False


def display_kind(file: Optional[IO[str]] = None) -> str:
    """Where progress reported into ``file`` (default stderr) would be seen; one of:

    * :data:`NOTEBOOK_WIDGET` (``"notebook widget"``): a Jupyter kernel where ipywidgets
      and ``tqdm.notebook`` import;
    * :data:`NOTEBOOK_TEXT` (``"notebook text"``): a Jupyter kernel without them;
    * :data:`TERMINAL` (``"terminal"``): ``file`` is a terminal;
    * :data:`NON_INTERACTIVE` (``"none"``): ``file`` is a file or a pipe (a batch job's log).
    """
    if _in_notebook():
        return NOTEBOOK_WIDGET if _widgets() else NOTEBOOK_TEXT
    return TERMINAL if _is_terminal(file if file is not None else sys.stderr) else NON_INTERACTIVE


def choose_bar(file: Optional[IO[str]], *, always: bool = False) -> Tuple[Optional[Callable[..., Any]], Dict[str, Any]]:
    """The tqdm class that draws a bar into ``file`` here, with its options; None: no bar.

    In Jupyter: ``tqdm.notebook`` when ipywidgets imports, else the text bar redrawn at
    most every :data:`NOTEBOOK_TEXT_INTERVAL_S` (``tqdm.auto`` would warn and redraw ten
    times a second, each redraw saved with the notebook; ``progress=True`` draws a
    :class:`NotebookLine` there instead).  Elsewhere: the text bar on a terminal; nothing
    when ``file`` is a file or a pipe, unless ``always``.
    """
    kind = display_kind(file)
    if kind == NOTEBOOK_WIDGET:
        return _notebook_tqdm(), {}
    if kind == NOTEBOOK_TEXT:
        from tqdm.std import tqdm as text_tqdm

        return text_tqdm, {"mininterval": NOTEBOOK_TEXT_INTERVAL_S, "ncols": NOTEBOOK_TEXT_COLUMNS}
    if always or kind == TERMINAL:
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


class LineProgress(ProgressCallback):
    """Progress as one line of text, which a subclass draws (:meth:`_changed`).

    The line reads ``Copying: [#####...] 45 %, 3.4 MiB of 7.6 MiB, 12 of 30 files,
    12.0 s, 2.3 MB/s, ETA 15.0 s``: what is done (a resumed copy's earlier work included),
    the time since this object was made, and this run's rate and the time left at it
    (earlier work left out, see :meth:`ProgressCallback.already_done`).  Thread-safe.

    Parameters
    ----------
    desc : str
        Text before the line; :meth:`set_description` changes it.
    delay : float
        Seconds before anything is drawn (nothing at all for shorter work).
    leave : bool
        Keep the last line when closed (else it is cleared, where a subclass can).
    """

    #: Characters of the bar in the line.
    BAR_WIDTH = 20

    def __init__(self, *, desc: str = "", delay: float = 0.0, leave: bool = True) -> None:
        self._lock = threading.RLock()
        self._desc = desc
        self._unit = "B"
        self._total: Optional[float] = None
        self._n = 0.0
        self._initial = 0.0
        self._files = 0
        self._files_total: Optional[int] = None
        self._made = _clock()
        self._delay = delay
        self._leave = leave
        self._closed = False

    def line(self) -> str:
        """The progress now, as one line."""
        with self._lock:
            elapsed = _clock() - self._made
            parts = []
            if self._total:
                share = min(1.0, self._n / self._total)
                filled = int(share * self.BAR_WIDTH)
                parts.append(f"[{'#' * filled}{'.' * (self.BAR_WIDTH - filled)}] {share * 100:.0f} %")
            parts.append(self._amounts())
            if self._files_total is not None:
                parts.append(f"{self._files} of {self._files_total} files")
            elif self._files:
                parts.append(f"{self._files} files")
            parts.append(human_duration(elapsed))
            rate = (self._n - self._initial) / elapsed if elapsed > 0 else 0.0
            if self._unit == "B" and rate > 0:
                parts.append(f"{rate / 1e6:.1f} MB/s")
            if rate > 0 and self._total is not None and self._n < self._total and not self._closed:
                parts.append(f"ETA {human_duration((self._total - self._n) / rate)}")
            return f"{self._desc or 'Progress'}: {', '.join(parts)}"

    def _amounts(self) -> str:
        """``3.4 MiB of 7.6 MiB``, ``2 of 5 cmd``, ``3 cmd``."""
        if self._unit == "B":
            return human_bytes(self._n) + (f" of {human_bytes(self._total)}" if self._total is not None else "")
        of = f" of {self._total:g}" if self._total is not None else ""
        return f"{self._n:g}{of} {self._unit}"

    def _changed(self, *, final: bool = False) -> None:
        """The progress changed (``final``: it was closed); called under the lock."""

    def _due(self) -> bool:
        """Whether the delay before anything is drawn has passed."""
        return _clock() - self._made >= self._delay

    def set_total(self, total: Optional[float], *, files: Optional[int] = None, unit: str = "B") -> None:
        with self._lock:
            self._total, self._files_total, self._unit = total, files, unit
            self._changed()

    def update(self, amount: float = 0, files: int = 0) -> None:
        with self._lock:
            self._n += amount
            self._files += files
            self._changed()

    def already_done(self, amount: float, files: int = 0) -> None:
        with self._lock:
            self._n += amount
            self._initial = self._n
            self._files += files
            self._changed()

    def set_description(self, text: str) -> None:
        with self._lock:
            self._desc = text
            self._changed()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._changed(final=True)


class NotebookLine(LineProgress):
    """Progress in Jupyter without ipywidgets: one line of text, displayed in the cell that
    is running when it is first drawn and updated in place (a display with a
    ``display_id``), at most every ``interval`` seconds and once more when closed.

    Nothing goes to stderr (no red block) and a notebook executed in batch (nbclient,
    papermill) saves the display once, in its last state.  ``progress=True`` makes one
    in a kernel where ipywidgets does not import; :meth:`ParallelCopy.start` makes it in
    the caller's cell.

    Parameters
    ----------
    interval : float
        Shortest time between redraws, in seconds.
    **options
        ``desc``, ``delay``, ``leave``: see :class:`LineProgress`.
    """

    def __init__(self, *, interval: float = NOTEBOOK_LINE_INTERVAL_S, **options: Any) -> None:
        super().__init__(**options)
        self._interval = interval
        self._drawn: Optional[float] = None
        self._display: Any = None  #: IPython's DisplayHandle, once drawn
        with self._lock:
            self._changed()

    def _changed(self, *, final: bool = False) -> None:
        if not self._due():
            return
        now = _clock()
        if not final and self._drawn is not None and now - self._drawn < self._interval:
            return
        self._drawn = now
        self._draw()

    def refresh(self) -> None:
        with self._lock:
            if self._display is not None:
                self._draw()

    def _draw(self) -> None:
        bundle = {"text/plain": self.line() if self._leave or not self._closed else ""}
        if self._display is None:
            from IPython.display import display

            self._display = display(bundle, raw=True, display_id=True)
        else:
            self._display.update(bundle, raw=True)


class MilestoneProgress(LineProgress):
    """Progress for a log: a line now and then, each on its own, not a bar redrawn.

    A line is written when at least ``every_fraction`` more of the work is done *and* at
    least ``every_s`` seconds have passed since the last one (whichever is rarer: a
    10-second copy writes no milestone, a 10-hour one about ten), and one when closed
    (the end).  Work shorter than ``delay`` writes nothing.  What the command line shows
    where its output is not a terminal (see :func:`progress_for_log`); pass one as
    ``progress=`` for the same in a batch job's log.

    Parameters
    ----------
    file : text stream, optional
        Where lines go; default stderr (at the time of writing).
    every_fraction, every_s : float
        The milestones, see above.  Work of unknown size writes every ``every_s``.
    **options
        ``desc``, ``delay``: see :class:`LineProgress`.
    """

    def __init__(
        self,
        *,
        file: Optional[IO[str]] = None,
        every_fraction: float = MILESTONE_FRACTION,
        every_s: float = MILESTONE_INTERVAL_S,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._file = file
        self._every_fraction = every_fraction
        self._every_s = every_s
        self._written_at = self._made
        self._written_share = 0.0
        self._written = ""

    def _share(self) -> Optional[float]:
        return min(1.0, self._n / self._total) if self._total else None

    def already_done(self, amount: float, files: int = 0) -> None:
        with self._lock:
            super().already_done(amount, files)
            self._written_share = self._share() or 0.0  # milestones count from there

    def _changed(self, *, final: bool = False) -> None:
        if not self._due():
            return
        now = _clock()
        share = self._share()
        if not final:
            if now - self._written_at < self._every_s:
                return
            if share is not None and share - self._written_share < self._every_fraction - 1e-9:  # (0.75 - 0.65)
                return
        line = self.line()
        if line == self._written:  # the end, as the last milestone said it
            return
        self._written_at, self._written_share, self._written = now, share or 0.0, line
        print(line, file=self._file if self._file is not None else sys.stderr, flush=True)

    def write(self, text: str, file: Optional[IO[str]] = None) -> None:
        super().write(text, file if file is not None else self._file)


def auto_progress(*, file: Optional[IO[str]] = None, **options: Any) -> ProgressCallback:
    """What ``progress=True`` shows here (see :func:`display_kind`): a :class:`TqdmProgress`
    on a terminal or with Jupyter's widgets, a :class:`NotebookLine` in Jupyter without
    them, and :class:`NoProgress` into a file or pipe.  ``options`` (``desc``, ``delay``,
    ``leave``, and tqdm's for a bar) go to the callback made."""
    kind = display_kind(file)
    if kind == NON_INTERACTIVE:
        return NoProgress()
    if kind == NOTEBOOK_TEXT:
        return NotebookLine(**{k: v for k, v in options.items() if k in _LINE_OPTIONS})
    tqdm_class, chosen = choose_bar(file)
    return TqdmProgress(file=file, tqdm_class=tqdm_class, **{**chosen, **options})


#: The options of ``progress=True`` that a :class:`LineProgress` takes (tqdm's others not).
_LINE_OPTIONS = ("desc", "delay", "leave")


def progress_for_log(file: Optional[IO[str]] = None, **options: Any) -> Progress:
    """What the command line asks for: ``True`` (a bar, see :func:`auto_progress`) where
    progress can be seen, and where ``file`` (default stderr) is a file or a pipe a
    :class:`MilestoneProgress` (``options``: ``desc``, ``delay``) instead of nothing."""
    if display_kind(file) != NON_INTERACTIVE:
        return True
    return MilestoneProgress(file=file, **options)


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
