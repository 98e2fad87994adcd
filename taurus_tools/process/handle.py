"""Process handles: what every Datamover method returns.

The handle is the Popen emulation and the future; it delegates the rest: :mod:`.pipes`
pumps the pipes, :mod:`taurus_tools.slurm.watcher` follows Slurm jobs (one watcher for all
handles of a client), :mod:`.job_output` reads a batch job's output files back, :mod:`.tree`
stops process trees, and :mod:`.launch` describes what to run.

A :class:`Handle` starts a command at once and behaves like :class:`subprocess.Popen`
(``poll``, ``wait``, ``communicate``, ``returncode``, ``pid``, ``args``, ``terminate``,
``kill``, context manager), with three differences that matter on a cluster:

* one background thread drains stdout and stderr as they arrive, so a command that prints
  20 MB never blocks on a full pipe while the caller only polls;
* when the process only *submits* a Slurm job (``sbatch``, a site ``dt*`` tool without
  ``--blocking``) the handle keeps running until the job has ended, and its return code is
  the job's, not sbatch's;
* :meth:`Handle.cancel` stops everything: the local process tree and the Slurm job.

The handle makes ``srun`` verbose: verbose srun names its job as soon as the job has its
nodes (``srun: jobid 12: nodes(1):...``), which a plain srun does only for a job that had
to wait.  The handle takes the id from there and drops the lines the verbosity added, so
the stderr users see is a plain srun's.  When the handle runs srun itself (``argv[0]``
is srun: the slurm backend, ``dm.srun``) it adds ``--verbose`` to srun's command line;
the job's environment stays as it was.  A site's ``dt*`` tool runs srun with a command
line we cannot change: it gets ``SLURM_DEBUG=1``, which srun hands on to the job (every
``SLURM_*`` variable is, whatever ``--export`` says), so an srun inside such a job is
verbose too (its lines are dropped the same way) and one there with ``-Q`` refuses to
run; its error line stays in stderr.  A caller's own ``SLURM_DEBUG`` (``env=``, or the
environment) is left as it is, and srun is then not made verbose.
"""

from __future__ import annotations

import concurrent.futures
import os
import shlex
import signal
import subprocess
import threading
import time
import traceback
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union


from .._log import get_logger
from ..errors import CommandCancelledError, CommandError, CommandNotFoundError
from ..futures import BackgroundFuture, in_background, run_after
from .job_output import JobOutput
from .launch import InlineProgram, Launch
from .pipes import devnull, pump
from .tree import terminate_tree
from ..slurm.client import (
    SRUN_VERBOSE_ENV,
    SRUN_VERBOSE_OPTION,
    JobState,
    SlurmClient,
    SrunVerboseFilter,
    parse_job_id,
)
from ..slurm.watcher import JOB_POLL

log = get_logger(__name__)

__all__ = ["Handle", "OutputReader"]

#: How much of stderr to search for srun's job id.
_JOB_ID_SEARCH_LIMIT = 1 << 16
#: How long cancel() lets the output thread read srun's last lines (a job id among them)
#: after the process tree is gone, before it falls back to cancelling by job name.
_LAST_WORDS_S = 2.0
#: Programs whose srun refused SLURM_DEBUG=1 (a site tool whose srun has -Q): run plainly.
_QUIET_SRUNS: Set[str] = set()


#: Signals that end a process by default: they stop a program run inline (``send_signal``).
_ENDING_SIGNALS = frozenset((signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGHUP, signal.SIGQUIT))


def _crash_text(exc: BaseException) -> bytes:
    """What a process that ended with ``exc`` would have printed."""
    if isinstance(exc, SystemExit):
        return f"{exc.code}\n".encode("utf-8", "replace") if isinstance(exc.code, str) else b""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).encode("utf-8", "replace")


def _exit_code(exc: BaseException) -> int:
    """The exit code a process ending with ``exc`` would have (SystemExit's own, else 1)."""
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 1


class Handle(BackgroundFuture):
    """A command running in the background; Popen-compatible, and a future.

    Parameters
    ----------
    launch : Launch
        What to run.
    cwd : path-like, optional
        Working directory of the process (and so of a Slurm job it submits).
    env : mapping, optional
        Full environment of the process; default: inherit.
    input : str or bytes, optional
        Data written to the command's stdin, which is then closed.  Without it stdin
        is ``/dev/null``, so nothing ever waits for a terminal.
    text : bool
        Return str (default) or bytes from :meth:`communicate`.
    encoding, errors : str
        How output bytes become str.  ``surrogateescape`` keeps odd file names intact.
    slurm : SlurmClient, optional
        Client used to follow and cancel Slurm jobs; handles that share one share its
        watcher (one squeue call per interval for all their jobs).
    on_output : callable, optional
        Called as ``on_output("stdout" or "stderr", data)`` with each piece of output as it
        arrives (from the output thread), e.g. to show it live; it is captured all the same.
    after : iterable of futures
        Start only once all of these have ended (handles, started copies, ``then()``
        futures, any :class:`concurrent.futures.Future`).  Until then the handle is
        pending: ``running()`` is False, ``pid`` None, ``poll()`` None, ``cancel()``
        makes sure it never starts.
    on : {"success", "always"}
        With ``"success"`` (default) a failed or cancelled one of ``after`` means this
        command never runs: it fails at once with :class:`DependencyError`, whose
        ``__cause__`` is the root error; ``"always"`` runs it regardless (clean-up steps).
    backend : str, optional
        The name of the backend that made the launch (``"slurm"``, ...), for displays.
    """

    def __init__(
        self,
        launch: Launch,
        *,
        cwd: Union[str, "os.PathLike[str]", None] = None,
        env: Optional[Mapping[str, str]] = None,
        input: Union[str, bytes, None] = None,
        text: bool = True,
        encoding: str = "utf-8",
        errors: str = "surrogateescape",
        slurm: Optional[SlurmClient] = None,
        on_output: Optional[Callable[[str, bytes], None]] = None,
        after: Iterable["concurrent.futures.Future[Any]"] = (),
        on: str = "success",
        backend: Optional[str] = None,
    ) -> None:
        BackgroundFuture.__init__(self)
        self.launch = launch
        self.backend = backend
        self._on_output = on_output
        self.args: List[str] = list(launch.argv)
        self.name = launch.name or os.path.basename(self.args[0])
        self.text = text
        self.encoding = encoding
        self.errors = errors
        self._slurm = slurm if slurm is not None else SlurmClient(env)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._cancel_requested = threading.Event()
        self._submitted = threading.Event()  # the job id is known, or will never be
        self._follow_wake = threading.Event()  # the followed job ended, or cancel()
        self._interrupted = False
        self._wakers: Set[threading.Event] = set()  # set on any output and at the end
        self._err_wakers: Set[threading.Event] = set()  # set on stderr and at the end
        self._out = bytearray()
        self._err = bytearray()
        self._returncode: Optional[int] = None
        self.job_id: Optional[str] = None
        self.started: Optional[float] = None
        self.ended: Optional[float] = None
        self._popen: Optional["subprocess.Popen[bytes]"] = None
        self._program: Optional[InlineProgram] = None  # a launch run inline, once started
        self._stop_signal = 0  # the signal send_signal() or cancel() stood for, inline
        self._started_or_not = threading.Event()  # _popen is set, or it will never be
        self._not_run: Optional[BaseException] = None  # why it never started
        if isinstance(input, str):
            input = input.encode(encoding, errors)
        self._input = input
        self._cwd = cwd
        self._env = env
        self._pump_done = threading.Event()  # the pipes are read to their end
        self._srun_filter: Optional[SrunVerboseFilter] = None
        if after == ():
            self._begin()
        else:
            run_after(after, on, self._begin, self._fail_before_start)

    def again(self, *, exclude_nodes: Sequence[str] = ()) -> "Handle":
        """The same command started anew, now, as a new handle (same working directory,
        environment, input and output options).

        ``exclude_nodes`` keeps its Slurm job off those nodes, when the backend chooses
        its nodes (the launch has a :attr:`~taurus_tools.process.launch.Launch.placement`);
        else it is ignored.
        """
        launch = self.launch
        if exclude_nodes and launch.placement is not None:
            launch = launch.placement.excluding(tuple(exclude_nodes))
        return Handle(
            launch,
            cwd=self._cwd,
            env=self._env,
            input=self._input,
            text=self.text,
            encoding=self.encoding,
            errors=self.errors,
            slurm=self._slurm,
            on_output=self._on_output,
        )

    def ended_job(self) -> Optional[JobState]:
        """How Slurm saw this command's job end (state, exit code, nodes); None when it
        ran no job (or Slurm forgot it).  Asks Slurm (scontrol, else sacct) each time,
        waiting a little for a job that is still completing
        (:meth:`~taurus_tools.slurm.client.SlurmClient.ended_job_state`)."""
        if self.job_id is None:
            return None
        return self._slurm.ended_job_state(self.job_id)

    def _begin(self) -> None:
        """Start the process (now, or once what it runs ``after`` has ended)."""
        if not self.set_running_or_notify_cancel():
            return  # cancelled while it waited
        if self.launch.inline is not None:
            self._begin_inline(self.launch.inline)
            return
        env = self._env
        # srun names an idle cluster's job only when verbose: ask srun itself on its
        # command line (the job's environment stays clean), a site tool's srun through
        # the environment, unless the caller set SLURM_DEBUG (then they see srun as
        # they asked) or this tool's srun refuses it.
        launch = self.launch
        run_env, run_args = env, self.args
        if (
            launch.uses_srun
            and SRUN_VERBOSE_ENV not in (os.environ if env is None else env)
            and self.args[0] not in _QUIET_SRUNS
        ):
            if launch.is_srun:
                run_args = [self.args[0], SRUN_VERBOSE_OPTION, *self.args[1:]]
            else:
                run_env = dict(os.environ if env is None else env)
                run_env[SRUN_VERBOSE_ENV] = "1"
            self._srun_filter = SrunVerboseFilter()
        log.debug("start %s: %s", self.name, run_args)
        self.started = time.time()
        popen = self._spawn(run_env, run_args)
        with self._lock:
            self._popen = popen
        self._started_or_not.set()
        in_background(self._run, f"taurus-tools:{self.name}:{popen.pid}")

    def _begin_inline(self, make: Callable[[Tuple[str, ...]], InlineProgram]) -> None:
        """Run the launch's program on a thread of this process (see ``Launch.inline``)."""
        log.debug("run %s in this process: %s", self.name, self.args)
        self.started = time.time()
        try:
            program = make(tuple(self.args))
        except BaseException as exc:  # (as a process that could not begin its work)
            self._started_or_not.set()
            self._append_err(_crash_text(exc))
            self._finish(_exit_code(exc))
            return
        with self._lock:
            self._program = program
        self._started_or_not.set()
        in_background(lambda: self._run_inline(program), f"taurus-tools:{self.name}:inline")

    def _run_inline(self, program: InlineProgram) -> None:
        try:
            rc = program.run()
        except BaseException as exc:  # a crash: its traceback where a process would print it
            self._append_err(_crash_text(exc))
            rc = _exit_code(exc)
        if self._stop_signal and rc != 0:
            rc = -self._stop_signal  # as a process ended by the signal
        self._pump_done.set()
        self._finish(rc)

    def _stop_inline(self, sig: int) -> bool:
        """Stop a program run inline (any signal that ends a process ends it); False if none runs."""
        with self._lock:
            program = self._program
        if program is None:
            return False
        if sig in _ENDING_SIGNALS and self._returncode is None:
            self._stop_signal = self._stop_signal or sig
            program.stop()
        return True

    def _fail_before_start(self, error: BaseException) -> None:
        """It will never run: a step it depends on failed (or starting it failed)."""
        with self._lock:
            if self._returncode is not None or self._not_run is not None:
                return
            self._not_run = error
            self.ended = time.time()
            self._started_or_not.set()
            self._submitted.set()
            self._pump_done.set()
        log.info("%s not run: %s", self.name, error)
        if self._popen is None and not self.running():
            # still PENDING: the future machinery wants RUNNING before an outcome
            if not self.set_running_or_notify_cancel():
                self._done.set()
                self._notify()
                return
        self._settle(error=error)
        self._done.set()
        self._notify()

    def _proc(self) -> "subprocess.Popen[bytes]":
        """The local process; only called once it has started."""
        popen = self._popen
        assert popen is not None, "the command has not started"
        return popen

    def _spawn(self, env: Optional[Mapping[str, str]], args: Sequence[str]) -> "subprocess.Popen[bytes]":
        try:
            return subprocess.Popen(
                list(args),
                stdin=subprocess.PIPE if self._input is not None else devnull(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self._cwd,
                env=env,
                # The caller's own environment may have another PATH; ours is os.environ's.
                executable=self.launch.executable if self._env is None else None,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            if self._cwd is not None and not os.path.isdir(self._cwd):
                raise
            raise CommandNotFoundError(self.args[0], (), "executable not found") from exc

    # ------------------------------------------------------------------ Popen API
    @property
    def pid(self) -> Optional[int]:
        """Process id of the local process (srun, sbatch, the tool itself); None until it
        starts (a handle with ``after=`` waits for those first), and for a program run on
        a thread of this process (``Launch.inline``)."""
        popen = self._popen
        return None if popen is None else popen.pid

    @property
    def returncode(self) -> Optional[int]:
        """Exit code once finished, None before (and for a command that never ran);
        negative for a signal (-15 for one cancelled before it started)."""
        if not self.done():
            return None
        if self._returncode is None and concurrent.futures.Future.cancelled(self):
            return -int(signal.SIGTERM)  # cancelled before it started; _returncode follows
        return self._returncode

    def poll(self) -> Optional[int]:
        """Return the exit code if the command has finished, else None.

        A command that never ran (what it ran ``after`` failed) has no exit code: its
        :class:`DependencyError` is raised, so a polling loop ends.
        """
        if self.done() and self._returncode is None and self._not_run is not None:
            raise self._not_run
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the command (and its Slurm job) to end; return the exit code.

        Raises :class:`subprocess.TimeoutExpired` like Popen; the command keeps running.
        A command that never ran raises why (:class:`DependencyError`).
        """
        try:
            self.exception(timeout)  # waits for the end; the command's error is result()'s
        except concurrent.futures.TimeoutError:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0) from None
        except concurrent.futures.CancelledError:  # cancelled before it started
            return -int(signal.SIGTERM)
        if self._returncode is None:
            assert self._not_run is not None
            raise self._not_run
        return self._returncode

    def communicate(
        self, input: Union[str, bytes, None] = None, timeout: Optional[float] = None
    ) -> Tuple[Any, Any]:
        """Wait for the end and return ``(stdout, stderr)`` as str (bytes with ``text=False``)."""
        if input is not None:
            raise ValueError(
                "taurus-tools handles take their stdin when started: pass input=... to the "
                "Datamover method instead of communicate()"
            )
        self.wait(timeout)
        return self.stdout_text, self.stderr_text

    def send_signal(self, sig: int) -> None:
        """Send a signal to the local process and its children (not the Slurm job); a
        program run inline is stopped by any signal that would end a process."""
        if self._stop_inline(sig):
            return
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return
        try:
            import psutil  # (here: 30 ms to import, and most handles are never signalled)

            top = psutil.Process(popen.pid)
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass

    def terminate(self) -> None:
        """SIGTERM the local process tree (Popen semantics; see :meth:`cancel` for jobs)."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the local process tree (Popen semantics; see :meth:`cancel` for jobs)."""
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.wait()
        else:
            self.cancel()

    def __repr__(self) -> str:
        if self._returncode is not None:
            state = f"returncode={self._returncode}"
        elif self._not_run is not None:
            state = "not run"
        elif self._popen is None and self._program is None:
            state = "waiting"
        else:
            state = "running"
        job = f" job_id={self.job_id}" if self.job_id else ""
        where = "in this process" if self.launch.inline is not None else f"pid={self.pid}"
        return f"<Handle {self.name} {where}{job} {state}>"

    def _repr_html_(self) -> str:
        """Jupyter's display: command, backend, job id, state, exit code, elapsed time."""
        from ..display import handle_html

        return handle_html(self)

    @property
    def state(self) -> str:
        """Where the command stands, in one word: ``waiting`` (for what it runs
        ``after``), ``running``, ``done`` (exit code 0), ``failed``, ``cancelled`` or
        ``not run`` (what it runs after failed)."""
        if not self.done():
            return "running" if self._popen is not None or self._program is not None else "waiting"
        if self._returncode is None and self._not_run is not None:
            return "not run"
        if self._cancel_requested.is_set() or concurrent.futures.Future.cancelled(self):
            return "cancelled"
        return "done" if self._returncode == 0 else "failed"

    @property
    def command_line(self) -> str:
        """The command as a shell would read it (``shlex.join``), for showing only."""
        return shlex.join(self.args)

    @property
    def stdout(self) -> "OutputReader":
        """The command's stdout as a file to read, like ``Popen.stdout`` with ``PIPE``.

        ``read()`` waits for the end; ``readline()`` and iteration return lines as they
        arrive.  Each access gives a reader that starts at the beginning: the output is
        kept, so ``communicate()`` still returns all of it.
        """
        return OutputReader(self, "stdout")

    @property
    def stderr(self) -> "OutputReader":
        """The command's stderr as a file to read (see :attr:`stdout`)."""
        return OutputReader(self, "stderr")

    # ------------------------------------------------------------------ extras
    @property
    def stdout_text(self) -> Any:
        """Everything the command printed on stdout so far (str, or bytes with ``text=False``)."""
        with self._lock:
            data = bytes(self._out)
        return data.decode(self.encoding, self.errors) if self.text else data

    @property
    def stderr_text(self) -> Any:
        """Everything the command printed on stderr so far (str, or bytes with ``text=False``)."""
        with self._lock:
            data = bytes(self._err)
        return data.decode(self.encoding, self.errors) if self.text else data

    # ------------------------------------------------------------------ future
    # done(), running(), result(), exception(), add_done_callback() are concurrent.futures';
    # result() is the exit code 0 or raises CommandError (CommandCancelledError if cancelled).
    def _error(self, rc: int) -> CommandError:
        kind = CommandCancelledError if self._cancel_requested.is_set() else CommandError
        return kind(rc, self.args, self.stdout_text, self.stderr_text, self.job_id)

    def read_stderr_lines(self, pos: int, *, final: bool = False) -> Tuple[List[str], int]:
        """Complete stderr lines from byte offset ``pos`` on, and the new offset.

        With ``final=True`` an unterminated last line is returned too.
        """
        with self._lock:
            chunk = bytes(self._err[pos:])
        if not final:
            cut = chunk.rfind(b"\n") + 1
            chunk = chunk[:cut]
        text = chunk.decode(self.encoding, "replace")
        return text.splitlines(), pos + len(chunk)

    def add_waker(self, event: threading.Event, *, stdout: bool = True) -> None:
        """Set ``event`` whenever output arrives or the command ends; with ``stdout=False``
        only for stderr and the end (``waitfor``, which shows stderr live: a command that
        prints much on stdout then costs it no wake-ups)."""
        with self._lock:
            (self._wakers if stdout else self._err_wakers).add(event)
        if self.done():
            event.set()

    def remove_waker(self, event: threading.Event) -> None:
        with self._lock:
            self._wakers.discard(event)
            self._err_wakers.discard(event)

    def cancel(self, *, grace: float = 5.0, timeout: float = 30.0) -> Optional[int]:  # type: ignore[override]
        """Stop the command for good and return its (negative) exit code.

        Terminates the whole local process tree (SIGTERM, then SIGKILL after ``grace``
        seconds), cancels the Slurm job (``scancel``) and waits until Slurm no longer
        lists it (at most ``timeout`` seconds), then reaps.  Calling it on a finished
        command does nothing and returns its exit code (None for one that never ran: what
        it ran ``after`` failed); a command still waiting for those never starts.  A step
        that never ran is no error here, so a ``with`` block's own error is the one that
        surfaces.
        """
        if not self.done() and concurrent.futures.Future.cancel(self):
            # It had not started (it waits for what it runs after): it never will.  (Until
            # _returncode is set below, the future's CANCELLED state stands for -SIGTERM.)
            with self._lock:
                self._returncode = -int(signal.SIGTERM)
                self.ended = time.time()
                self._submitted.set()
                self._pump_done.set()
                self._started_or_not.set()
            log.info("cancelled %s before it started", self.name)
            self._done.set()
            self._notify()
            return -int(signal.SIGTERM)
        if self.done():
            # None for a command that never ran (what it ran after failed): nothing to stop
            return self.returncode
        self._interrupted = True
        self._cancel_requested.set()
        self._follow_wake.set()
        with self._lock:  # the process, not one the output thread is replacing
            popen = self._popen
        if popen is None:  # starting this very moment, in another thread: wait for it
            self._started_or_not.wait(timeout)
            if self._not_run is not None:
                return None
            with self._lock:
                popen = self._popen
        if popen is None and self._stop_inline(signal.SIGTERM):
            log.info("cancelling %s (run in this process)", self.name)
            if not self._done.wait(timeout):
                # A thread cannot be killed: said, and reported as ended.
                log.warning("%s: still running %g s after it was asked to stop", self.name, timeout)
                self._finish(-int(signal.SIGTERM))
            assert self._returncode is not None
            return self._returncode
        if popen is None:
            raise RuntimeError(f"{self.name}: neither started nor settled within {timeout} s")
        log.info("cancelling %s (pid %s, job %s)", self.name, popen.pid, self.job_id)
        if popen.poll() is None:
            terminate_tree(popen.pid, grace=grace)
        self._cancel_job(timeout)
        if not self._done.wait(timeout):
            log.warning("%s: output thread did not end within %g s", self.name, timeout)
            polled = popen.poll()
            self._finish(polled if polled is not None else -signal.SIGKILL)
        assert self._returncode is not None
        return self._returncode

    def _cancel_job(self, timeout: float) -> None:
        launch = self.launch
        if self.job_id is None and launch.job_name is None and not launch.submits and not launch.uses_srun:
            return
        if self._slurm.which("scancel") is None:
            return
        if self.job_id is None and launch.submits:
            # The submission may still be printing its id.
            self._submitted.wait(min(timeout, 10.0))
        elif self.job_id is None:
            # srun is gone; its last lines may still name the job (a verbose srun names
            # it once the job has nodes: before that there is no job to cancel by name
            # either, unless the controller's answer crossed our SIGTERM).
            self._pump_done.wait(min(timeout, _LAST_WORDS_S))
        if self.job_id is not None:
            self._slurm.cancel([self.job_id])
            if not self._slurm.wait_gone([self.job_id], timeout):
                log.warning("Slurm job %s still listed %g s after scancel", self.job_id, timeout)
        elif self.launch.job_name is not None:
            self._slurm.cancel(name=self.launch.job_name)

    # ------------------------------------------------------------------ internals
    def _notify(self, *, stdout_only: bool = False) -> None:
        for event in list(self._wakers):
            event.set()
        if not stdout_only:
            for event in list(self._err_wakers):
                event.set()

    def _finish(self, rc: int) -> None:
        with self._lock:
            if self._returncode is not None:
                return
            if self._interrupted and rc >= 0:
                # It was stopped by cancel(); never report that as success or as an
                # ordinary failure.
                rc = -int(signal.SIGTERM)
            self._returncode = rc
            self.ended = time.time()
            self._submitted.set()
            self._pump_done.set()
        log.debug("end %s: returncode %s", self.name, rc)
        # The future's state is the end everyone sees (done(), poll(), wait()); the done
        # callbacks run here, after it, so they may call wait() or communicate().
        if rc == 0:
            self._settle(0)
        else:
            self._settle(error=self._error(rc))
        self._done.set()
        self._notify()

    def _append_out(self, data: bytes) -> None:
        with self._lock:
            self._out += data
        self._echo("stdout", data)
        self._notify(stdout_only=True)

    def _echo(self, stream: str, data: bytes) -> None:
        if self._on_output is not None:
            try:
                self._on_output(stream, data)
            except Exception:  # showing output must never stop the capture
                log.exception("%s: on_output failed", self.name)

    def _append_err(self, data: bytes) -> None:
        self._echo("stderr", data)
        with self._lock:
            self._err += data
            if (
                self.job_id is None
                and not self.launch.submits
                and self._srun_filter is None
                and len(self._err) < _JOB_ID_SEARCH_LIMIT
            ):
                job = parse_job_id(self._err.decode("utf-8", "replace"))
                if job is not None:
                    self.job_id = job
        self._notify()

    def _stderr_piece(self, data: bytes, end: bool) -> None:
        self._stderr_in(data, end=end)

    def _stderr_in(self, data: bytes, *, end: bool = False) -> None:
        """The process's own stderr (srun's and the job's): filtered, then appended."""
        filt = self._srun_filter
        if filt is not None:
            data = filt.feed(data) if not end else filt.flush()
            if self.job_id is None and filt.job_id is not None:
                self.job_id = filt.job_id
                log.debug("%s: Slurm job %s", self.name, self.job_id)
        if data:
            self._append_err(data)

    def _run(self) -> None:
        try:
            rc = self._pump()
            filt = self._srun_filter
            if filt is not None and filt.refused:
                rc = self._after_refusal(filt, rc)
            if self.launch.submits and rc == 0:
                rc = self._follow_job()
        except Exception as exc:  # never leave a waiter hanging
            log.exception("%s: output thread failed", self.name)
            self._append_err(f"taurus-tools: internal error while running: {exc}\n".encode())
            polled = self._proc().poll()
            rc = 1 if polled is None or polled == 0 else polled
        self._finish(rc)

    def _after_refusal(self, filt: SrunVerboseFilter, rc: int) -> int:
        """srun refused the verbosity (its command line has -Q): run it plainly, or say so.

        The command runs again, without the verbosity, only when the refusal was the
        first thing it printed (on stderr; stdout empty): srun checks its options
        before it asks Slurm for anything, so nothing of the command has run.  A tool
        that printed something first may have done more: it is not run twice, its
        output and srun's error stay as they were, with a note.  A site tool is
        remembered either way: later handles run its srun plainly at once.  (srun itself
        is not: the -Q is in that call's argv, not in the program.)
        """
        if not self.launch.is_srun:
            _QUIET_SRUNS.add(self.args[0])
        with self._lock:
            rerun = (
                filt.refused_at_start
                and rc != 0
                and self.job_id is None
                and not self._out
                and not self._cancel_requested.is_set()
            )
            if rerun:
                # Nothing of the first run reaches the user: the filter held srun's
                # error and all after it, and stdout is empty; cleared all the same.
                self._out.clear()
                self._err.clear()
                self._srun_filter = None
                self._pump_done.clear()
                self._popen = self._spawn(self._env, self.args)
        how = SRUN_VERBOSE_OPTION if self.launch.is_srun else f"{SRUN_VERBOSE_ENV}=1"
        if rerun:
            log.info(
                "%s: its srun runs with -Q and refuses %s; running it again without (the job id "
                "is then known only for a job that waits)",
                self.name,
                how,
            )
            return self._pump()
        if filt.held:
            self._append_err(filt.held)  # srun's error line and what came after it, untouched
        if not self._cancel_requested.is_set():
            why = "it exited 0" if rc == 0 else "it had printed output"
            later = "" if self.launch.is_srun else "; later calls run it without"
            self._append_err(
                f"taurus-tools: {self.name}: its srun runs with -Q and refused {how}, which "
                f"taurus-tools sets to learn the Slurm job id; not run again, as {why}{later}\n".encode()
            )
        return rc

    def _pump(self) -> int:
        """Drain stdout/stderr (and feed stdin) until the process is gone; return its code."""
        rc = pump(self._proc(), self._input, self._append_out, self._stderr_piece, name=self.name)
        self._pump_done.set()
        return rc

    def _follow_job(self) -> int:
        """After a submission: find the job id, follow the job to its end, return its code."""
        with self._lock:
            out = self._out.decode("utf-8", "replace")
        job = parse_job_id(out, parsable=self.launch.parsable)
        if job is None:
            self._append_err(
                b"taurus-tools: the submission exited 0 but printed no Slurm job id\n"
            )
            return 1
        self.job_id = job
        self._submitted.set()
        if self.launch.parsable:
            # The id was ours to read; what the job prints is the command's output.
            with self._lock:
                self._out.clear()
        if self._cancel_requested.is_set():
            return -int(signal.SIGTERM)
        log.debug("%s: following Slurm job %s", self.name, job)
        # The client's watcher asks Slurm for all jobs at once; this thread only waits
        # for it, streaming the job's stderr file meanwhile (no Slurm call for that).
        watcher = self._slurm.watcher
        watch = watcher.watch(job, wake=self._follow_wake)
        first, factor, longest = JOB_POLL
        delay = first
        output = JobOutput(self.launch.job_output or ())
        try:
            while True:
                self._take_job_output(output, stderr_only=True)
                if watch.done():
                    break
                if self._cancel_requested.is_set():
                    return -int(signal.SIGTERM)
                self._follow_wake.wait(delay)
                self._follow_wake.clear()
                delay = min(delay * factor, longest)
            if watch.state is not None:
                self._take_job_output(output)
                return watch.state.returncode
            if watch.lost:
                self._append_err(
                    f"taurus-tools: Slurm no longer knows job {job}; its exit code "
                    "is lost (enable accounting, or raise MinJobAge)\n".encode()
                )
            else:
                self._append_err(
                    f"taurus-tools: stopped following Slurm job {job}: its watcher was closed\n".encode()
                )
            return 255
        finally:
            watcher.forget(watch)
            output.remove()

    def _take_job_output(self, output: JobOutput, *, stderr_only: bool = False) -> None:
        for index, data in output.read_new(stderr_only=stderr_only):
            if index == 0:
                self._append_out(data)
            else:
                self._append_err(data)


class OutputReader:
    """One of a :class:`Handle`'s output streams, read like a pipe (``Handle.stdout``).

    Lines come as they arrive; the end of the stream is the end of the command (and of
    its Slurm job).  str or bytes as the handle's ``text``.
    """

    def __init__(self, handle: Handle, stream: str) -> None:
        self._handle = handle
        self._buffer = handle._out if stream == "stdout" else handle._err
        self._pos = 0
        self._wake = threading.Event()
        self.name = stream
        self.closed = False

    def _take(self, end: int) -> Any:
        with self._handle._lock:
            data = bytes(self._buffer[self._pos : end])
        self._pos = end
        h = self._handle
        return data.decode(h.encoding, h.errors) if h.text else data

    def _wait_for(self, ready: Callable[[], Optional[int]]) -> int:
        """Block until ``ready()`` gives an end offset (it is asked again after each wake)."""
        self._handle.add_waker(self._wake)
        try:
            while True:
                self._wake.clear()
                end = ready()
                if end is not None:
                    return end
                self._wake.wait(0.5)
        finally:
            self._handle.remove_waker(self._wake)

    def read(self, size: int = -1) -> Any:
        """Up to ``size`` bytes (all that is left when negative), waiting for them or the end."""

        def ready() -> Optional[int]:
            with self._handle._lock:
                have = len(self._buffer)
            if size is not None and 0 <= size <= have - self._pos:
                return self._pos + size
            return have if self._handle.done() else None

        return self._take(self._wait_for(ready))

    def readline(self) -> Any:
        """The next line with its newline, waiting for it; empty at the end."""

        def ready() -> Optional[int]:
            with self._handle._lock:
                cut = self._buffer.find(b"\n", self._pos)
                have = len(self._buffer)
            if cut >= 0:
                return cut + 1
            return have if self._handle.done() else None

        return self._take(self._wait_for(ready))

    def readlines(self) -> List[Any]:
        return list(self)

    def __iter__(self) -> Iterator[Any]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "OutputReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<OutputReader {self._handle.name} {self.name}>"
