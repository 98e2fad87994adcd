"""Every handle that runs a Slurm job knows the job's id (issue 10, item 2).

A plain srun names its job only when the job has to wait ("srun: job N queued and waiting
for resources").  The handle therefore makes srun verbose (``--verbose`` on the command
line of the srun it runs itself, ``SLURM_DEBUG=1`` for the one a site ``dt*`` tool runs):
verbose srun prints "srun: jobid N: nodes(1):..." as soon as the job has its nodes, before
the task starts.  The handle takes the id from there and drops what the verbosity added
from the stderr users see.  srun's refusal of the verbosity (``-Q``) is told apart from
the same error of an ``srun -Q`` inside the job, which stays in stderr.

The first part checks the parsing and filtering against srun 22.05's real output (captured
on the test cluster) and the handle against stub programs; the second part runs real jobs
on the ``slurm_cluster`` fixture, on an idle and on a busy cluster, with both backends.
"""

from __future__ import annotations

import errno
import io
import os
import random
import re
import signal
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import psutil
import pytest

from taurus_tools import Datamover, Handle, SiteBackend, SlurmBackend, waitfor
from taurus_tools.process import handle as _process
from taurus_tools.process.launch import Launch
from taurus_tools.slurm.client import (
    SRUN_QUIET_CONFLICT,
    SRUN_VERBOSE_ENV,
    JobState,
    SlurmClient,
    SrunVerboseFilter,
    parse_job_id,
)

from helpers import FakeSlurmClient, wait_until, write_stub

# ============================================================================ srun's output
# What srun 22.05.8 (Debian 12) printed on the test cluster with SLURM_DEBUG=1 (stderr, in
# the order it arrived), and what the same call prints without it (the filter's goal).

IDLE_OK = b"""\
srun: defined options
srun: -------------------- --------------------
srun: job-name            : a
srun: partition           : datamover
srun: verbose             : 1
srun: -------------------- --------------------
srun: end of defined options
srun: jobid 30: nodes(1):`localhost', cpu counts: 1(x1)
srun: launch/slurm: launch_p_step_launch: CpuBindType=(null type)
srun: launching StepId=30.0 on host localhost, 1 tasks: 0
srun: route/default: init: route default plugin loaded
srun: launch/slurm: _task_start: Node localhost, 1 tasks started
err
srun: launch/slurm: _task_finish: Received task exit notification for 1 task of StepId=30.0 (status=0x0000).
srun: launch/slurm: _task_finish: localhost: task 0: Completed
"""
IDLE_OK_PLAIN = b"err\n"

IDLE_FAIL = b"""\
srun: defined options
srun: -------------------- --------------------
srun: job-name            : a
srun: partition           : datamover
srun: verbose             : 1
srun: -------------------- --------------------
srun: end of defined options
srun: jobid 32: nodes(1):`localhost', cpu counts: 1(x1)
srun: launch/slurm: launch_p_step_launch: CpuBindType=(null type)
srun: launching StepId=32.0 on host localhost, 1 tasks: 0
srun: route/default: init: route default plugin loaded
srun: launch/slurm: _task_start: Node localhost, 1 tasks started
/usr/bin/ls: cannot access '/nonexist': No such file or directory
srun: launch/slurm: _task_finish: Received task exit notification for 1 task of StepId=32.0 (status=0x0200).
srun: error: localhost: task 0: Exited with exit code 2
"""
IDLE_FAIL_PLAIN = b"""\
/usr/bin/ls: cannot access '/nonexist': No such file or directory
srun: error: localhost: task 0: Exited with exit code 2
"""

# A site tool's `srun --pty` on a busy cluster: the job waited.
PTY_QUEUED = b"""\
srun: defined options
srun: -------------------- --------------------
srun: job-name            : dtcp
srun: partition           : datamover
srun: pty                 : set
srun: verbose             : 1
srun: -------------------- --------------------
srun: end of defined options
srun: job 66 queued and waiting for resources
srun: job 66 has been allocated resources
srun: jobid 66: nodes(1):`localhost', cpu counts: 1(x1)
srun: error: ioctl(TIOCGWINSZ): Inappropriate ioctl for device
srun: error: Not using a pseudo-terminal, disregarding --pty option
srun: launch/slurm: launch_p_step_launch: CpuBindType=(null type)
srun: launching StepId=66.0 on host localhost, 1 tasks: 0
srun: route/default: init: route default plugin loaded
srun: launch/slurm: _task_start: Node localhost, 1 tasks started
hi
srun: launch/slurm: _task_finish: Received task exit notification for 1 task of StepId=66.0 (status=0x0000).
srun: launch/slurm: _task_finish: localhost: task 0: Completed
"""
PTY_QUEUED_PLAIN = b"""\
srun: job 66 queued and waiting for resources
srun: job 66 has been allocated resources
srun: error: ioctl(TIOCGWINSZ): Inappropriate ioctl for device
srun: error: Not using a pseudo-terminal, disregarding --pty option
hi
"""

TWO_TASKS = b"""\
srun: defined options
srun: -------------------- --------------------
srun: job-name            : a
srun: ntasks              : 2
srun: partition           : datamover
srun: verbose             : 1
srun: -------------------- --------------------
srun: end of defined options
srun: jobid 36: nodes(1):`localhost', cpu counts: 2(x1)
srun: launch/slurm: launch_p_step_launch: CpuBindType=(null type)
srun: launching StepId=36.0 on host localhost, 2 tasks: [0-1]
srun: route/default: init: route default plugin loaded
srun: launch/slurm: _task_start: Node localhost, 2 tasks started
err 0
err 1
srun: launch/slurm: _task_finish: Received task exit notification for 1 task of StepId=36.0 (status=0x0000).
srun: launch/slurm: _task_finish: localhost: task 0: Completed
srun: launch/slurm: _task_finish: Received task exit notification for 1 task of StepId=36.0 (status=0x0100).
srun: error: localhost: task 1: Exited with exit code 1
"""
TWO_TASKS_PLAIN = b"err 0\nerr 1\nsrun: error: localhost: task 1: Exited with exit code 1\n"

# srun got SIGTERM (what Handle.cancel sends first).
TERMINATED = b"""\
srun: defined options
srun: -------------------- --------------------
srun: job-name            : a
srun: partition           : datamover
srun: verbose             : 1
srun: -------------------- --------------------
srun: end of defined options
srun: jobid 38: nodes(1):`localhost', cpu counts: 1(x1)
srun: launch/slurm: launch_p_step_launch: CpuBindType=(null type)
srun: launching StepId=38.0 on host localhost, 1 tasks: 0
srun: route/default: init: route default plugin loaded
srun: launch/slurm: _task_start: Node localhost, 1 tasks started
srun: forcing job termination
srun: Job step aborted: Waiting up to 7 seconds for job step to finish.
srun: Complete StepId=38.0+0 received
slurmstepd-localhost: error: *** STEP 38.0 ON localhost CANCELLED AT 2026-12-02T16:35:16 ***
srun: launch/slurm: _task_finish: Received task exit notification for 1 task of StepId=38.0 (status=0x0009).
srun: error: localhost: task 0: Killed
"""
TERMINATED_PLAIN = b"""\
srun: forcing job termination
srun: Job step aborted: Waiting up to 7 seconds for job step to finish.
slurmstepd-localhost: error: *** STEP 38.0 ON localhost CANCELLED AT 2026-12-02T16:35:16 ***
srun: error: localhost: task 0: Killed
"""

# The controller refused the job: no id, the error lines stay.
BAD_PARTITION = b"""\
srun: defined options
srun: -------------------- --------------------
srun: partition           : nope
srun: verbose             : 1
srun: -------------------- --------------------
srun: end of defined options
srun: error: invalid partition specified: nope
srun: error: Unable to allocate resources: Invalid partition name specified
"""
BAD_PARTITION_PLAIN = b"""\
srun: error: invalid partition specified: nope
srun: error: Unable to allocate resources: Invalid partition name specified
"""

# srun writes its own messages and the task's output from different threads: here a
# verbose line landed between "/usr/bin/ls: " and the rest of ls's message (as seen with
# `srun --pty ls /nonexist`).  Dropping it makes ls's line whole again.
INTERLEAVED = b"""\
srun: jobid 4: nodes(1):`localhost', cpu counts: 1(x1)
srun: launch/slurm: _task_start: Node localhost, 1 tasks started
/usr/bin/ls: srun: launch/slurm: _task_finish: Received task exit notification for 1 task of StepId=4.0 \
(status=0x0200).
cannot access '/nonexist': No such file or directory
srun: error: localhost: task 0: Exited with exit code 2
"""
INTERLEAVED_PLAIN = b"""\
/usr/bin/ls: cannot access '/nonexist': No such file or directory
srun: error: localhost: task 0: Exited with exit code 2
"""

TRANSCRIPTS = {
    "idle-ok": (IDLE_OK, IDLE_OK_PLAIN, "30"),
    "idle-fail": (IDLE_FAIL, IDLE_FAIL_PLAIN, "32"),
    "pty-queued": (PTY_QUEUED, PTY_QUEUED_PLAIN, "66"),
    "two-tasks": (TWO_TASKS, TWO_TASKS_PLAIN, "36"),
    "terminated": (TERMINATED, TERMINATED_PLAIN, "38"),
    "bad-partition": (BAD_PARTITION, BAD_PARTITION_PLAIN, None),
    "interleaved": (INTERLEAVED, INTERLEAVED_PLAIN, "4"),
}

#: Pieces of lines that only verbose srun prints; users must never see them.
VERBOSE_MARKS = (
    "srun: jobid ",
    "defined options",
    "srun: -----",
    "launch/slurm:",
    "launching StepId",
    "plugin loaded",
    "tasks started",
    "task exit notification",
)


def filtered(data: bytes, sizes: Optional[List[int]] = None) -> Tuple[bytes, SrunVerboseFilter]:
    """Run ``data`` through a filter in pieces of the given sizes (cycled); whole by default."""
    filt = SrunVerboseFilter()
    out = []
    pos = 0
    turn = 0
    while pos < len(data):
        size = sizes[turn % len(sizes)] if sizes else len(data)
        out.append(filt.feed(data[pos : pos + size]))
        pos += size
        turn += 1
    out.append(filt.flush())
    return b"".join(out), filt


# ============================================================================ parsing
class TestParseJobId:
    @pytest.mark.parametrize(
        "text, expected",
        [
            ("srun: job 27549105 queued and waiting for resources\n", "27549105"),
            ("srun: job 27549105 has been allocated resources\n", "27549105"),
            ("srun: jobid 12: nodes(1):`n1', cpu counts: 1(x1)\n", "12"),
            ("srun: jobid 7: nodes(2):`n[1-2]', cpu counts: 4(x2)\n", "7"),
            ("srun: defined options\nsrun: jobid 66: nodes(1):`localhost', cpu counts: 1(x1)\n", "66"),
            ("Submitted batch job 27549105\n", "27549105"),
            ("cp: jobid 5: nodes(1)\n", None),  # only srun's own line
            ("srun: error: Unable to allocate resources: Invalid partition name specified\n", None),
        ],
        ids=["queued", "allocated", "verbose", "verbose-2-nodes", "after-options", "sbatch", "not-srun", "error"],
    )
    def test_formats(self, text, expected):
        assert parse_job_id(text) == expected

    @pytest.mark.parametrize("text, expected", [("27549105\n", "27549105"), ("42;cluster\n", "42")])
    def test_sbatch_parsable(self, text, expected):
        assert parse_job_id(text, parsable=True) == expected


class TestSrunVerboseFilter:
    @pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
    def test_real_transcripts(self, name):
        verbose, plain, job = TRANSCRIPTS[name]
        out, filt = filtered(verbose)
        assert out == plain
        assert filt.job_id == job
        assert filt.dropped == len(verbose.splitlines()) - len(plain.splitlines())

    @pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
    @pytest.mark.parametrize("sizes", [[1], [2, 7, 3], [64], None], ids=["bytes", "odd", "64", "random"])
    def test_any_cut_of_the_stream(self, name, sizes):
        verbose, plain, job = TRANSCRIPTS[name]
        if sizes is None:
            rng = random.Random(name)
            sizes = [rng.randint(1, 40) for _ in range(50)]
        out, filt = filtered(verbose, sizes)
        assert out == plain
        assert filt.job_id == job

    def test_job_id_known_as_soon_as_its_line_is_complete(self):
        filt = SrunVerboseFilter()
        assert filt.feed(b"srun: defined options\nsrun: verbose             : 1\n") == b""
        assert filt.feed(b"srun: end of defined options\nsrun: jobid 12: nodes(1):`n1', cpu co") == b""
        assert filt.job_id is None
        assert filt.feed(b"unts: 1(x1)\n") == b""
        assert filt.job_id == "12"

    def test_queued_line_names_the_job_and_stays(self):
        out, filt = filtered(b"srun: job 9 queued and waiting for resources\n")
        assert out == b"srun: job 9 queued and waiting for resources\n"
        assert filt.job_id == "9"

    def test_first_id_wins(self):
        # A job that itself runs srun (a nested step) prints the same lines later.
        out, filt = filtered(
            b"srun: jobid 5: nodes(1):`a', cpu counts: 1(x1)\nsrun: jobid 6: nodes(1):`a', cpu counts: 1(x1)\n"
        )
        assert out == b"" and filt.job_id == "5"

    @pytest.mark.parametrize(
        "line",
        [
            b"srun: error: localhost: task 0: Exited with exit code 2\n",
            b"srun: error: localhost: task 0: Killed\n",
            b"srun: Job step aborted: Waiting up to 7 seconds for job step to finish.\n",
            b"srun: Force Terminated JobId=28\n",
            b"srun: Job 5 step creation temporarily disabled, retrying (Requested nodes are busy)\n",
            b"srun: error: Unable to allocate resources: Requested node configuration is not available\n",
            b"srun: launch/slurm: _handle_openmpi_port_error: Terminating job step StepId=3.0\n",  # info
            b"cp: srun: jobid 5: nodes(1)\n",  # not a whole verbose message
            b"tool: Node localhost, 1 tasks started\n",
            b"srun: defined options for the tool\n",
        ],
    )
    def test_other_lines_pass(self, line):
        out, filt = filtered(line)
        assert out == line
        assert filt.dropped == 0

    def test_job_output_without_newline_is_not_held_back(self):
        filt = SrunVerboseFilter()
        assert filt.feed(b"copying 50%\r") == b"copying 50%\r"
        assert filt.feed(b"copying 100%") == b"copying 100%"
        assert filt.feed(b"\n") == b"\n"

    def test_only_a_possible_srun_message_is_held_back(self):
        filt = SrunVerboseFilter()
        assert filt.feed(b"ls: sr") == b"ls: "
        assert filt.feed(b"un: launch/slurm: _task_start: Node n1, 1 tasks started\n") == b""
        assert filt.feed(b"cannot access 'x'\n") == b"cannot access 'x'\n"
        assert filt.feed(b"srun: error: n1: task 0: Exited with exit code 2") == b""
        assert filt.flush() == b"srun: error: n1: task 0: Exited with exit code 2"

    def test_carriage_returns_stay_inside_their_line(self):
        progress = b"copy 50%\rcopy 100%\n"
        out, filt = filtered(IDLE_OK.replace(b"err\n", progress), [5])
        assert out == progress and filt.job_id == "30"

    def test_options_list_without_its_end_is_kept(self):
        text = b"srun: defined options\nsrun: -------------------- --------------------\n"
        out, filt = filtered(text)
        assert out == text and filt.dropped == 0

    def test_options_list_only_at_a_line_start(self):
        text = b"tool says srun: defined options\nsrun: end of defined options\n"
        out, _ = filtered(text)
        assert out == text

    def test_non_utf8_job_output_passes(self):
        text = b"cp: cannot stat '\xff\xfe': No such file or directory\n"
        out, _ = filtered(IDLE_OK[:400] + text)
        assert text in out

    @pytest.mark.parametrize("sizes", [[1], [7], None], ids=["bytes", "7", "whole"])
    def test_quiet_conflict_first_is_our_srun_refusing(self, sizes):
        """srun prints its refusal before anything else: held back, for the handle to drop or show."""
        text = SRUN_QUIET_CONFLICT + b"\n" + b"dtcp: srun failed\n"
        out, filt = filtered(text, sizes)
        assert out == b"" and filt.refused and filt.refused_at_start
        assert filt.held == text

    @pytest.mark.parametrize("sizes", [[1], [2, 7, 3], None], ids=["bytes", "odd", "whole"])
    @pytest.mark.parametrize("name", ["idle-ok", "idle-fail", "pty-queued"])
    def test_quiet_conflict_of_an_srun_inside_the_job_stays(self, name, sizes):
        """The job inherited SLURM_DEBUG and runs `srun -Q`: that error line is the job's, shown as is."""
        verbose, plain, job = TRANSCRIPTS[name]
        inner = SRUN_QUIET_CONFLICT + b"\n"
        after = {"idle-ok": b"err\n", "idle-fail": b"/usr/bin/ls: cannot", "pty-queued": b"hi\n"}[name]
        out, filt = filtered(verbose.replace(after, inner + after, 1), sizes)
        assert out == plain.replace(after, inner + after, 1)
        assert filt.job_id == job
        assert not filt.refused and not filt.refused_at_start and filt.held == b""

    def test_quiet_conflict_after_a_job_id_in_the_same_piece_stays(self):
        text = b"srun: job 9 queued and waiting for resources\n" + SRUN_QUIET_CONFLICT + b"\n"
        out, filt = filtered(text)
        assert out == text and filt.job_id == "9" and not filt.refused

    @pytest.mark.parametrize("sizes", [[1], None], ids=["bytes", "whole"])
    def test_quiet_conflict_after_other_output_is_a_refusal_but_stays(self, sizes):
        """A tool printed first, then its srun refused: noted (not run again), the line shown."""
        text = b"dtcp: checking the paths\n" + SRUN_QUIET_CONFLICT + b"\n"
        out, filt = filtered(text, sizes)
        assert out == text
        assert filt.refused and not filt.refused_at_start and filt.held == b""

    def test_quiet_conflict_inside_a_line_is_not_a_refusal(self):
        text = b"tool: " + SRUN_QUIET_CONFLICT + b"\n"
        out, filt = filtered(text)
        assert out == text and not filt.refused


# ============================================================================ handles (stubs)
#: A stand-in for srun: verbose (like srun 22.05) with --verbose or SLURM_DEBUG=1, else
#: plain; refuses verbose with -Q as srun does.  Each call is noted in "calls" next to it.
FAKE_SRUN = r"""
verbose=0
quiet=0
[ "${SLURM_DEBUG:-0}" = 1 ] && verbose=1
while [ $# -gt 0 ]; do
  case $1 in
    --verbose) verbose=1 ;;
    -Q) quiet=1 ;;
    *) break ;;
  esac
  shift
done
echo "verbose=$verbose quiet=$quiet" >> "$(dirname "$0")/calls"
if [ $verbose = 1 ] && [ $quiet = 1 ]; then
  echo "srun: error: don't specify both --verbose (-v) and --quiet (-Q)" >&2
  exit 1
fi
if [ $verbose = 1 ]; then
  printf 'srun: defined options\nsrun: verbose             : 1\nsrun: end of defined options\n' >&2
  printf "srun: jobid 4711: nodes(1):\`n1', cpu counts: 1(x1)\n" >&2
  printf 'srun: launch/slurm: _task_start: Node n1, 1 tasks started\n' >&2
fi
echo "SLURM_DEBUG=${SLURM_DEBUG-unset}"
echo "job says hello" >&2
exec sleep "${1:-0}"
"""


@pytest.fixture
def fake_srun(tmp_path):
    return write_stub(tmp_path / "bin", "srun", FAKE_SRUN)


@pytest.fixture
def no_srun_memory(monkeypatch):
    """Forget which sruns refused SLURM_DEBUG (a module-level memory of the handles)."""
    monkeypatch.setattr(_process, "_QUIET_SRUNS", set())
    monkeypatch.delenv(SRUN_VERBOSE_ENV, raising=False)


def _calls(folder: Path) -> List[str]:
    path = folder / "calls"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.usefixtures("no_srun_memory")
class TestHandleWithStubs:
    def test_srun_gets_verbose_option_and_users_see_plain_stderr(self, fake_srun):
        """srun itself: --verbose on its command line, so the job's environment has no SLURM_DEBUG."""
        h = Handle(Launch((str(fake_srun),), name="srun"), slurm=FakeSlurmClient(states=[None]))
        assert h.wait(10) == 0
        assert h.job_id == "4711"
        out, err = h.communicate()
        assert out == "SLURM_DEBUG=unset\n"
        assert err == "job says hello\n"
        assert h.args == [str(fake_srun)]  # what the caller gave; --verbose is the handle's
        assert _calls(fake_srun.parent) == ["verbose=1 quiet=0"]

    def test_srun_with_quiet_runs_again_without_verbose_and_says_things_once(self, fake_srun):
        """dm.srun(extra=["-Q"]): srun refuses --verbose first thing; the second run's output only."""
        stream = io.StringIO()
        h = Handle(Launch((str(fake_srun), "-Q", "0"), name="srun"), slurm=FakeSlurmClient(states=[None]))
        assert waitfor(h, timeout=10, progress=False, file=stream) == 0
        assert h.communicate() == ("SLURM_DEBUG=unset\n", "job says hello\n")
        assert stream.getvalue() == "job says hello\n"
        assert _calls(fake_srun.parent) == ["verbose=1 quiet=1", "verbose=0 quiet=1"]
        # Not remembered: the -Q was this call's, the next srun is made verbose again.
        again = Handle(Launch((str(fake_srun), "0"), name="srun"), slurm=FakeSlurmClient(states=[None]))
        assert again.wait(10) == 0 and again.job_id == "4711"
        assert _calls(fake_srun.parent)[-1] == "verbose=1 quiet=0"

    def test_callers_slurm_debug_is_left_alone(self, fake_srun):
        env = {**os.environ, SRUN_VERBOSE_ENV: "1"}
        h = Handle(Launch((str(fake_srun),), name="srun"), env=env, slurm=FakeSlurmClient(states=[None]))
        assert h.wait(10) == 0
        assert h.job_id == "4711"  # parsed from the line the caller asked to see
        assert "srun: jobid 4711" in h.stderr_text and "defined options" in h.stderr_text

    def test_only_processes_that_run_srun(self, tmp_path):
        tool = write_stub(tmp_path, "cp", 'echo "SLURM_DEBUG=${SLURM_DEBUG-unset}"\n')
        h = Handle(Launch((str(tool),), name="dtcp"))
        assert h.wait(10) == 0 and h.stdout_text == "SLURM_DEBUG=unset\n"
        site = Handle(Launch((str(tool),), name="dtcp", runs_srun=True))
        assert site.wait(10) == 0 and site.stdout_text == "SLURM_DEBUG=1\n"

    def test_srun_that_refuses_verbose_runs_again_plainly(self, tmp_path):
        calls = tmp_path / "calls"
        tool = write_stub(
            tmp_path,
            "dtcp",
            f'echo "${{SLURM_DEBUG-unset}}" >> "{calls}"\n'
            'if [ -n "${SLURM_DEBUG:-}" ]; then\n'
            f'  echo "{SRUN_QUIET_CONFLICT.decode()}" >&2\n'
            "  exit 1\n"
            "fi\n"
            "echo copied\n",
        )
        launch = Launch((str(tool), "--blocking", "a", "b"), name="dtcp", runs_srun=True)
        h = Handle(launch)
        assert h.wait(10) == 0
        assert h.communicate() == ("copied\n", "")
        assert calls.read_text().split() == ["1", "unset"]
        again = Handle(launch)  # remembered: no second refusal
        assert again.wait(10) == 0
        assert calls.read_text().split() == ["1", "unset", "unset"]

    def test_rerun_shows_only_the_second_runs_output(self, tmp_path):
        """What the tool says after its srun refused is the first run's: never shown, never twice."""
        calls = tmp_path / "calls"
        tool = write_stub(
            tmp_path,
            "dtcp",
            f'echo "${{SLURM_DEBUG-unset}}" >> "{calls}"\n'
            'if [ -n "${SLURM_DEBUG:-}" ]; then\n'
            f'  echo "{SRUN_QUIET_CONFLICT.decode()}" >&2\n'
            '  echo "dtcp: srun failed" >&2\n'
            "  exit 1\n"
            "fi\n"
            'echo "dtcp: copying" >&2\n'
            "echo copied\n",
        )
        stream = io.StringIO()
        h = Handle(Launch((str(tool), "--blocking", "a", "b"), name="dtcp", runs_srun=True))
        assert waitfor(h, timeout=10, progress=False, file=stream) == 0
        assert h.communicate() == ("copied\n", "dtcp: copying\n")
        assert stream.getvalue() == "dtcp: copying\n"
        assert calls.read_text().split() == ["1", "unset"]

    @pytest.mark.parametrize("before", ["stdout", "stderr"])
    def test_a_tool_that_printed_first_is_not_run_twice(self, tmp_path, before):
        """Output before the refusal: the tool may have done more, so it runs once; all it said stays."""
        calls = tmp_path / "calls"
        say = 'echo "dtcp: preparing"' + (" >&2" if before == "stderr" else "")
        tool = write_stub(
            tmp_path,
            "dtcp",
            f'echo "${{SLURM_DEBUG-unset}}" >> "{calls}"\n'
            f"{say}\n"
            'if [ -n "${SLURM_DEBUG:-}" ]; then\n'
            f'  echo "{SRUN_QUIET_CONFLICT.decode()}" >&2\n'
            "  exit 1\n"
            "fi\n"
            "echo copied\n",
        )
        launch = Launch((str(tool), "--blocking", "a", "b"), name="dtcp", runs_srun=True)
        stream = io.StringIO()
        h = Handle(launch)
        assert waitfor(h, timeout=10, progress=False, file=stream) == 1
        out, err = h.communicate()
        assert calls.read_text().split() == ["1"]
        said_out = "dtcp: preparing\n" if before == "stdout" else ""
        said_err = "dtcp: preparing\n" if before == "stderr" else ""
        assert out == said_out
        assert err.startswith(said_err + SRUN_QUIET_CONFLICT.decode() + "\n"), err
        assert err.count("dtcp: preparing") == len(said_err.splitlines())
        assert "not run again" in err and "later calls run it without" in err
        assert stream.getvalue() == err  # shown live, once
        again = Handle(launch)  # remembered: runs plainly at once
        assert again.wait(10) == 0 and again.stdout_text == said_out + "copied\n"
        assert calls.read_text().split() == ["1", "unset"]

    def test_cancel_uses_the_job_id(self, fake_srun):
        client = FakeSlurmClient(states=[JobState("4711", "RUNNING")])
        h = Handle(Launch((str(fake_srun), "30"), name="dtcp", job_name="tt-dtcp-x"), slurm=client)
        wait_until(lambda: h.job_id == "4711", 10, what="the job id")
        assert h.cancel(timeout=10) == -int(signal.SIGTERM)
        assert client.cancelled == [["4711"]]
        assert client.cancelled_names == []

    def test_cancel_by_name_only_before_the_id_is_known(self, tmp_path):
        silent = write_stub(tmp_path / "bin", "srun", "exec sleep 30\n")
        client = FakeSlurmClient(states=[None])
        h = Handle(Launch((str(silent),), name="dtcp", job_name="tt-dtcp-y"), slurm=client)
        time.sleep(0.2)
        started = time.monotonic()
        assert h.cancel(timeout=10) < 0
        assert time.monotonic() - started < 5
        assert client.cancelled == [] and client.cancelled_names == ["tt-dtcp-y"]

    def test_cancel_reads_srun_last_words_first(self, tmp_path):
        # The id arrives only as srun goes (it was between allocation and its message).
        words = tmp_path / "last-words"
        words.write_bytes(b"srun: jobid 99: nodes(1):`n1', cpu counts: 1(x1)\nsrun: forcing job termination\n")
        script = write_stub(tmp_path / "bin", "srun", f"trap 'cat \"{words}\" >&2; exit 143' TERM\nsleep 30 & wait\n")
        client = FakeSlurmClient(states=[JobState("99", "RUNNING")])
        h = Handle(Launch((str(script),), name="dtcp", job_name="tt-dtcp-z"), slurm=client)
        # Its trap is set once its `sleep 30` child exists: only then may it be cancelled.
        wait_until(lambda: len(psutil.Process(h.pid).children()) >= 1, 10, what="the stub's trap")
        assert h.job_id is None
        assert h.cancel(timeout=10) < 0
        assert h.job_id == "99"
        assert client.cancelled == [["99"]] and client.cancelled_names == []
        assert h.stderr_text == "srun: forcing job termination\n"


def test_backends_mark_the_launches_that_run_srun(tmp_path):
    site = SiteBackend({c: f"/x/{c}" for c in ("dtcp", "dtls", "dtinfo", "dtqueue", "dtcancel")})
    assert site.launch("dtcp", ["a", "b"], blocking=True).uses_srun
    assert not site.launch("dtcp", ["a", "b"], blocking=False).uses_srun
    assert site.launch("dtls", ["a"], blocking=False).uses_srun  # dtls always blocks
    assert not site.launch("dtinfo", [], blocking=True).uses_srun
    slurm = SlurmBackend(partition=None, client=FakeSlurmClient(), job_log_dir=tmp_path)
    assert slurm.launch("dtcp", ["a", "b"], blocking=True).uses_srun
    assert not slurm.launch("dtcp", ["a", "b"], blocking=False).uses_srun
    assert not slurm.launch("dtqueue", [], blocking=True).uses_srun
    assert Launch(("/usr/bin/srun", "hostname")).uses_srun  # dm.srun's launches
    assert not Launch(("cp", "a", "b")).uses_srun


# ============================================================================ real Slurm
def _wait_state(cluster, job_id: str, states, timeout: float = 30.0) -> Dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        job = cluster.job_fields(job_id, check=False)
        if job.get("JobState") in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} never reached {states}: {job}"
        time.sleep(0.05)


class _IdWatch:
    """Note when ``handle.job_id`` is first set (checked every 2 ms from the start)."""

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.at: Optional[float] = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while self.at is None and not self.handle.done():
            if self.handle.job_id is not None:
                self.at = time.monotonic()
                return
            time.sleep(0.002)
        if self.handle.job_id is not None and self.at is None:
            self.at = time.monotonic()

    def wait(self, deadline: float) -> Optional[float]:
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return self.at


def _open_writer(fifo: Path, timeout: float = 60.0) -> Tuple[int, float]:
    """Wait until the job's cp opens the FIFO to read (the task runs); return a writer fd and when."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.002)
            continue
        return fd, time.monotonic()


@pytest.fixture
def dm_slurm(slurm_cluster, tmp_path, no_srun_memory):
    return Datamover("slurm", job_log_dir=tmp_path / "jobs")


@pytest.fixture
def dm_site(slurm_cluster, site_tools_dir, tmp_path, monkeypatch, no_srun_memory):
    monkeypatch.setenv("TAURUS_TEST_DT_LOGDIR", str(tmp_path / "dt-logs"))
    return Datamover(tools_dir=site_tools_dir)


@pytest.fixture(params=["slurm", "site"])
def dm_any(request):
    return request.getfixturevalue(f"dm_{request.param}")


@pytest.fixture
def busy(slurm_cluster):
    """Fill every slot of the node (CPUs x OverSubscribe 8) with sleeping jobs; yield their id."""
    slots = slurm_cluster.cpus * 8
    res = slurm_cluster.run(
        ["sbatch", "--parsable", "-p", "datamover", f"--array=0-{slots - 1}", "-J", "tt-test-blocker",
         "-o", "/dev/null", "--wrap", "sleep 600"]
    )
    blocker = res.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 60
    try:
        while True:
            running = slurm_cluster.run(["squeue", "-h", "-j", blocker, "-t", "R", "-o", "%i"]).stdout.split()
            if len(running) == slots:
                break
            assert time.monotonic() < deadline, f"only {len(running)} of {slots} blockers run"
            time.sleep(0.1)
        yield blocker
    finally:
        _release(slurm_cluster, blocker)


def _release(cluster, blocker: str) -> None:
    cluster.run(["scancel", blocker], check=False)
    deadline = time.monotonic() + 30
    while cluster.run(["squeue", "-h", "-j", blocker, "-o", "%i"], check=False).stdout.split():
        assert time.monotonic() < deadline, "blocker jobs stay"
        time.sleep(0.1)


def _check_stderr(text: str) -> None:
    for mark in VERBOSE_MARKS:
        assert mark not in text, (mark, text)


def _expected_name(handle: Handle) -> str:
    return handle.launch.job_name or handle.name  # the site tools name their jobs "dtcp"


LATENCIES: List[Tuple[str, float]] = []


def _copy_and_check_id(cluster, dm, tmp_path, *, blocking: bool, blocker: Optional[str] = None) -> float:
    """Copy through a FIFO: the moment cp opens it is the job's start.  Returns id latency."""
    work = tmp_path / "work"
    work.mkdir()
    fifo = work / "fifo"
    os.mkfifo(fifo)
    handle = dm.call("dtcp", fifo, work / "out", blocking=blocking, cwd=work)
    watch = _IdWatch(handle)
    if blocker is not None:
        # Our job waits behind the blockers; the id is known while it waits.
        assert watch.wait(time.monotonic() + 30) is not None, handle.stderr_text
        job = _wait_state(cluster, handle.job_id, {"PENDING"})
        assert job["JobName"] == _expected_name(handle)
        _release(cluster, blocker)
    fd, started = _open_writer(fifo)
    try:
        at = watch.wait(started + 1.0)
        assert at is not None, f"job_id not set within 1 s of the job's start: {handle!r} {handle.stderr_text!r}"
        job = _wait_state(cluster, handle.job_id, {"RUNNING"})
        # The id is the job running our command: its name, its folder, its one running job.
        assert job["JobName"] == _expected_name(handle)
        assert job["WorkDir"] == str(work)
        os.set_blocking(fd, True)
        os.write(fd, b"payload")
    finally:
        os.close(fd)
    stream = io.StringIO()
    assert waitfor(handle, timeout=60, progress=False, file=stream) == 0
    assert (work / "out").read_bytes() == b"payload"
    _check_stderr(handle.stderr_text)
    _check_stderr(stream.getvalue())
    return at - started


CASES = [
    pytest.param(True, False, id="blocking-idle"),
    pytest.param(True, True, id="blocking-busy"),
    pytest.param(False, False, id="nonblocking-idle"),
    pytest.param(False, True, id="nonblocking-busy"),
]


@pytest.mark.parametrize("blocking, is_busy", CASES)
def test_job_id_set_by_job_start(dm_any, slurm_cluster, tmp_path, request, blocking, is_busy):
    blocker = request.getfixturevalue("busy") if is_busy else None
    latency = _copy_and_check_id(slurm_cluster, dm_any, tmp_path, blocking=blocking, blocker=blocker)
    LATENCIES.append((request.node.callspec.id, latency))
    print(f"job_id set {latency * 1000:+.0f} ms from the job's start ({request.node.callspec.id})")


def test_srun_job_id_on_idle_cluster(dm_slurm, slurm_cluster, tmp_path):
    """dm.srun: the job itself says which job it is; the handle knew it before it started."""
    stamp = tmp_path / "started"
    handle = dm_slurm.srun(
        "sh", "-c", f'echo "$SLURM_JOB_ID" > "{stamp}"; echo done >&2; exec sleep 2', partition="datamover"
    )
    watch = _IdWatch(handle)
    assert handle.wait(60) == 0
    assert watch.at is not None
    assert handle.job_id == stamp.read_text().strip()
    assert slurm_cluster.job_fields(handle.job_id, check=False)["JobName"] == handle.launch.job_name
    assert handle.stderr_text == "done\n"


def test_errors_still_reach_the_user(dm_any, tmp_path):
    stream = io.StringIO()
    handle = dm_any.call("dtcp", tmp_path / "missing", tmp_path / "x", blocking=True)
    assert waitfor(handle, timeout=60, progress=False, file=stream) == 1
    assert handle.job_id is not None and re.fullmatch(r"\d+", handle.job_id)
    for text in (handle.stderr_text, stream.getvalue()):
        assert "cannot stat" in text
        assert "srun: error:" in text and "Exited with exit code 1" in text
        _check_stderr(text)


def test_cancel_scancels_the_id(dm_any, slurm_cluster, tmp_path, monkeypatch):
    calls: List[Tuple[List[str], Optional[str]]] = []
    original = SlurmClient.cancel

    def record(self, job_ids=(), *, name=None):
        ids = [str(j) for j in job_ids]
        calls.append((ids, name))
        return original(self, ids, name=name)

    monkeypatch.setattr(SlurmClient, "cancel", record)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    handle = dm_any.call("dtcp", fifo, tmp_path / "never", blocking=True)
    fd, _ = _open_writer(fifo)  # the job runs; cp waits for data while we hold the FIFO open
    try:
        assert handle.job_id is not None
        job_id = handle.job_id
        assert handle.cancel() < 0
    finally:
        os.close(fd)
    assert calls == [([job_id], None)]
    deadline = time.monotonic() + 30
    while int(job_id) in slurm_cluster.squeue_ids():
        assert time.monotonic() < deadline, f"job {job_id} still in squeue"
        time.sleep(0.1)


# ============================================================================ srun -Q inside a job
def test_quiet_srun_inside_a_job_of_ours_runs(dm_slurm, tmp_path):
    """Our own srun is verbose by its command line: the job has no SLURM_DEBUG, its `srun -Q` runs."""
    handle = dm_slurm.srun(
        "sh", "-c", 'echo "SLURM_DEBUG=${SLURM_DEBUG-unset}"; srun --overlap -Q true && echo inner-ok',
        partition="datamover",
    )
    watch = _IdWatch(handle)
    stream = io.StringIO()
    assert waitfor(handle, timeout=60, progress=False, file=stream) == 0, handle.stderr_text
    assert handle.stdout_text == "SLURM_DEBUG=unset\ninner-ok\n"
    assert watch.wait(time.monotonic() + 5) is not None and re.fullmatch(r"\d+", handle.job_id or "")
    assert handle.stderr_text == "" and stream.getvalue() == ""


def test_quiet_srun_inside_a_site_tools_job_keeps_its_error(slurm_cluster, tmp_path, no_srun_memory):
    """A site tool's srun gets SLURM_DEBUG=1, which its job inherits; an `srun -Q` there refuses.

    That error line comes after our srun named its job: it is the job's own, shown as it
    is (the filter once dropped it, and the user saw a failed job with no message), and
    the tool is not run again.
    """
    calls = tmp_path / "calls"
    tool = write_stub(
        tmp_path / "bin",
        "dtjob",
        f'echo run >> "{calls}"\nexec srun -p datamover -J tt-test-quiet sh -c "srun --overlap -Q true"\n',
    )
    handle = Handle(Launch((str(tool),), name="dtjob", runs_srun=True))
    watch = _IdWatch(handle)
    stream = io.StringIO()
    assert waitfor(handle, timeout=60, progress=False, file=stream) == 1
    for text in (handle.stderr_text, stream.getvalue()):
        assert SRUN_QUIET_CONFLICT.decode() + "\n" in text, text
        assert "srun: error: localhost: task 0: Exited with exit code 1" in text, text
        assert "taurus-tools:" not in text, text  # not taken for our srun's refusal
        _check_stderr(text)
    assert calls.read_text() == "run\n"
    assert watch.wait(time.monotonic() + 5) is not None
    assert slurm_cluster.job_fields(handle.job_id, check=False)["JobName"] == "tt-test-quiet"
    assert str(tool) not in _process._QUIET_SRUNS
