"""Run a command under a checkpoint: what ``taurus-tools checkpoint PATH DEST -- COMMAND`` does.

:func:`run_checkpointed` checks the checkpoint (folder, destination) before the command
starts, starts the command (an argv list, never a shell) in a process group of its own,
checkpoints while it runs, and makes the final pass when it ends, whatever the reason:

* it exits (success or failure);
* SIGTERM, SIGINT or SIGHUP reach this process: they are passed on to the command's process
  group, the command ends as it handles them, then the final pass runs;
* SIGUSR1 (Slurm's warning before the time limit, ``sbatch --signal=B:USR1@120``): the
  command's process group gets SIGTERM, then the final pass runs while the job still has
  time.

A signal during the final pass is logged and ignored (Slurm's SIGTERM at the limit must not
cut it short); a second one abandons it (exit 128 + N).

The exit status is the command's (128 + N when a signal N ended it, as a shell reports it),
or :data:`EXIT_NOT_SAVED` when the final pass did not save everything; the message then
names the files not saved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

from .._log import get_logger
from ..errors import CheckpointError
from .checkpoint import Checkpoint

__all__ = ["EXIT_NOT_SAVED", "EXIT_CANNOT_RUN", "run_checkpointed", "FORWARDED"]

log = get_logger(__name__)

#: Exit status when the final pass did not save every selected file (sysexits' EX_IOERR).
EXIT_NOT_SAVED = 74
#: Exit status when the command could not be started (as a shell: not found or not executable).
EXIT_CANNOT_RUN = 127
#: Signal received -> signal sent to the command's process group.
FORWARDED: Dict[int, int] = {
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGINT: signal.SIGINT,
    signal.SIGHUP: signal.SIGHUP,
    signal.SIGUSR1: signal.SIGTERM,
}


def _stderr(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def run_checkpointed(
    argv: Sequence[str], checkpoint: Checkpoint, *, say: Callable[[str], None] = _stderr, quiet: bool = False
) -> int:
    """Run ``argv`` while ``checkpoint`` saves its folder (see the module's docstring).

    Raises what :meth:`Checkpoint.start` raises (a missing folder, an unreachable
    destination) before the command starts.  Returns the exit status.
    """
    argv = [os.fspath(a) for a in argv]
    if not argv:
        from ..errors import ConfigurationError

        raise ConfigurationError("no command given: taurus-tools checkpoint PATH DEST [options] -- COMMAND ARGS...")
    checkpoint.start()
    process: List[Optional["subprocess.Popen[bytes]"]] = [None]
    received: List[int] = []
    final = [False, 0]  # the final pass under way; signals received before it

    def send(signum: int) -> None:
        proc = process[0]
        if proc is not None and proc.returncode is None:
            sent = FORWARDED[signum]
            log.info("%s received: %s sent to the command", signal.Signals(signum).name, signal.Signals(sent).name)
            try:
                os.killpg(proc.pid, sent)
            except ProcessLookupError:
                pass

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if final[0]:  # the command has ended: the final pass runs
            if len(received) - final[1] >= 2:
                raise KeyboardInterrupt(signum)  # asked twice: the final pass is abandoned
            log.warning("%s received during the final pass: a second one abandons it", signal.Signals(signum).name)
            return
        send(signum)

    previous: Dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in FORWARDED:
            if signal.getsignal(signum) == signal.SIG_IGN:
                continue  # nohup, a background job's SIGINT: kept as the caller set them
            previous[signum] = signal.signal(signum, forward)
    try:
        try:
            proc = subprocess.Popen(argv, start_new_session=True)
        except OSError as exc:
            say(f"taurus-tools: checkpoint: cannot run {argv[0]!r}: {exc.strerror or exc}")
            rc = EXIT_CANNOT_RUN
        else:
            process[0] = proc
            for signum in received:  # came before the command existed
                send(signum)
            rc = proc.wait()
            if rc < 0:
                rc = 128 - rc
        why = f" ({signal.Signals(received[0]).name} received)" if received else ""
        log.info("the command ended with %d%s: final pass", rc, why)
        final[:] = [True, len(received)]
        try:
            report = checkpoint.stop()
        except KeyboardInterrupt:
            say(f"taurus-tools: checkpoint: final pass abandoned ({signal.Signals(received[-1]).name} twice)")
            return 128 + received[-1]
        except CheckpointError as exc:
            say(f"taurus-tools: checkpoint: {exc}")
            for path, reason in sorted(exc.not_saved.items())[:50]:
                say(f"  not saved: {path!r}: {reason}")
            if len(exc.not_saved) > 50:
                say(f"  ... and {len(exc.not_saved) - 50} more")
            return EXIT_NOT_SAVED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if not quiet:
        say(
            f"taurus-tools: checkpoint: final pass done{why}: pass {report.newest} holds {report.files} file(s) "
            f"at {checkpoint.destination.describe()}"
        )
    return rc
