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

With an exit ``policy`` (:class:`~taurus_tools.policy.ExitPolicy`, or its compact form
``"0=complete,1-255=retry,retries=2"``), the command's exit code (or signal) decides what
follows it:

* ``complete``, ``fail``: the final pass, and the command's status (as without a policy);
* ``retry``: a pass (saving what the failed run left), the policy's backoff, and the
  command runs again, at most ``retries`` times (default 2); then as ``fail``;
* ``retry_elsewhere``: in a Slurm batch job that Slurm may requeue (``Requeue=1`` in
  ``scontrol show job``: ``sbatch --requeue``, or the cluster's ``JobRequeue=1``), the final
  pass, then the job's node (``$SLURMD_NODENAME``) is added to its excluded nodes
  (``scontrol update ExcNodeList=``) and the job is requeued (``scontrol requeue``), at
  most ``retries`` times (Slurm's ``Restarts`` count), never excluding more than
  ``max_excluded`` nodes nor the partition's last usable one.  Outside such a job, or
  when the exclusion is refused, it says why and behaves as ``retry``.

A signal that ended the run (SIGTERM to this process, Slurm's warning) ends the retries:
the final pass runs and the status is the command's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .._log import get_logger
from ..errors import CheckpointError, ConfigurationError, SlurmError
from ..policy import Action, Decision, ExitPolicy
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
    argv: Sequence[str],
    checkpoint: Checkpoint,
    *,
    say: Callable[[str], None] = _stderr,
    quiet: bool = False,
    policy: Union[ExitPolicy, str, None] = None,
) -> int:
    """Run ``argv`` while ``checkpoint`` saves its folder (see the module's docstring).

    ``policy``: what the command's exit leads to (see the module's docstring); default
    none (the command runs once).  Raises what :meth:`Checkpoint.start` raises (a missing
    folder, an unreachable destination) and a :class:`ConfigurationError` for a bad
    policy, before the command starts.  Returns the exit status.
    """
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise ConfigurationError("no command given: taurus-tools checkpoint PATH DEST [options] -- COMMAND ARGS...")
    if isinstance(policy, str):
        policy = ExitPolicy(policy)
    elif policy is not None and not isinstance(policy, ExitPolicy):
        raise ConfigurationError(f"policy must be an ExitPolicy or its compact form (a str), got {policy!r}")
    checkpoint.start()
    process: List[Optional["subprocess.Popen[bytes]"]] = [None]
    received: List[int] = []
    final = [False, 0]  # the final pass under way; signals received before it
    woken = threading.Event()  # a signal came: a backoff between runs ends at once

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
        woken.set()
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
    requeue: Optional[Callable[[], None]] = None
    try:
        tries = 0
        while True:
            rc = _run_once(argv, process, received, send, say)
            decision = policy.decide(rc) if policy is not None else None
            if decision is None or received or not decision.action.retries:
                if decision is not None and decision.action is not Action.COMPLETE:
                    say(f"taurus-tools: checkpoint: the command: {decision.outcome}: {decision.action.value} "
                        f"(rule {decision.rule})")  # fmt: skip
                break
            assert policy is not None
            if not policy.retry_allowed(tries, tries):
                say(f"taurus-tools: checkpoint: the command: {decision.outcome}: no retry left (rule {decision.rule})")
                break
            if decision.action is Action.RETRY_ELSEWHERE:
                requeue, go_on = _requeue_plan(policy, decision, say)
                if requeue is not None or not go_on:
                    break
            checkpoint.run_pass()  # what the failed run left, saved before the next one
            delay = policy.backoff(tries)
            tries += 1
            say(f"taurus-tools: checkpoint: the command: {decision.outcome}: run {tries + 1} in {delay:.1f} s "
                f"(rule {decision.rule})")  # fmt: skip
            woken.wait(delay)
            if received:
                break
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
        if not quiet:
            say(
                f"taurus-tools: checkpoint: final pass done{why}: pass {report.newest} holds {report.files} file(s) "
                f"at {checkpoint.destination.describe()}"
            )
        if requeue is not None:
            if previous:
                # Slurm stops the job it requeues (SIGTERM, then SIGKILL after KillWait) while the
                # requeue's scontrol calls run: they, and this process, ignore it till they are done.
                for signum in FORWARDED:
                    signal.signal(signum, signal.SIG_IGN)
            try:
                requeue()
            except SlurmError as exc:
                say(f"taurus-tools: checkpoint: the job could not be requeued: {exc}")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    return rc


def _run_once(
    argv: List[str],
    process: List[Optional["subprocess.Popen[bytes]"]],
    received: List[int],
    send: Callable[[int], None],
    say: Callable[[str], None],
) -> int:
    """Run the command once (in a process group of its own); its status as a shell gives it."""
    try:
        proc = subprocess.Popen(argv, start_new_session=True)
    except OSError as exc:
        say(f"taurus-tools: checkpoint: cannot run {argv[0]!r}: {exc.strerror or exc}")
        return EXIT_CANNOT_RUN
    process[0] = proc
    for signum in received:  # came before the command existed
        send(signum)
    rc = proc.wait()
    return 128 - rc if rc < 0 else rc


def _requeue_plan(
    policy: ExitPolicy, decision: Decision, say: Callable[[str], None]
) -> Tuple[Optional[Callable[[], None]], bool]:
    """For ``retry_elsewhere``: what requeues this Slurm batch job with its node excluded
    (to call after the final pass), or None, said why, when it cannot be; and whether the
    command may still be retried (here, when there is no requeue): False when the job has
    been requeued as often as the policy's ``retries``."""
    from ..slurm.client import SlurmClient

    job = os.environ.get("SLURM_JOB_ID")
    node = os.environ.get("SLURMD_NODENAME")
    prefix = f"taurus-tools: checkpoint: the command: {decision.outcome}: retry_elsewhere (rule {decision.rule})"
    if not job:
        say(f"{prefix}: not in a Slurm job, so no node to leave: retried here")
        return None, True
    client = SlurmClient()
    try:
        fields = client.job_fields(job)
        if fields is None:
            say(f"{prefix}: Slurm does not know job {job}: retried here")
            return None, True
        if fields.get("Requeue") != "1":
            say(f"{prefix}: job {job} is not requeueable (sbatch --requeue, or JobRequeue=1 in slurm.conf): "
                "retried here")  # fmt: skip
            return None, True
        restarts = int(fields.get("Restarts", "0") or 0)
        if not policy.retry_allowed(restarts, restarts):
            say(f"{prefix}: job {job} was requeued {restarts} time(s) already: no retry left")
            return None, False
        excluded = client.hostnames(fields.get("ExcNodeList", ""))
        partition = fields.get("Partition") or None
        usable = client.usable_nodes(partition.split(",")[0] if partition else None)
    except SlurmError as exc:
        say(f"{prefix}: Slurm did not answer ({exc}): retried here")
        return None, True
    refused = policy.exclusion_refused(node, excluded=excluded, usable=usable)
    if refused is not None:
        say(f"{prefix}: node {node or '(unknown)'}: {refused}: retried here")
        return None, True
    assert node is not None
    more = [*excluded, node]
    say(f"{prefix}: the final pass, then job {job} is requeued without node(s) {', '.join(more)}")

    def requeue() -> None:
        client.requeue(job, exclude=more)

    return requeue, True
