#!/usr/bin/env python3
"""Slurm client calls while handles follow many non-blocking jobs (run by hand, not in CI).

Issue 13, item 5: handles that follow Slurm jobs share one watcher, one ``squeue`` call per
interval for all of them.  Goal: at most 1 Slurm client call per second while following
200 concurrent non-blocking jobs.

What runs, per round: ``Datamover("slurm")`` whose handles share one ``SlurmClient``;
``--jobs`` non-blocking jobs (``sbatch``, through ``dm.start(dm.backend.launch_program(
"sh", ("sh", "-c", SCRIPT), blocking=False))``), all started at once, each sleeping
``--sleep`` seconds and exiting 3 (every third job) or 0; then ``waitfor`` on all of them,
and a check that every handle has its job's exit code.  Each job prints its start and end
time, from which the script reads how many had started when the first one ended.

What is counted: every call the handles' ``SlurmClient`` makes (``squeue``, ``scontrol``,
``sacct``, ...), with its time, by wrapping the client's ``_run``; where the client counts
its calls itself (``client.calls``, since the shared watcher) the two counts must agree.
The submissions (``sbatch``) are the handles' own processes, not client calls.  Windows:
*following* runs from the moment the last submission returned (every handle has its job
id) to the end of the last handle; *whole* from the first start to that end.  *Peak* is
the most calls within any one second of the whole run.

BEFORE/AFTER: run the same script with an older taurus_tools first on ``PYTHONPATH``, e.g.
the commit before the watcher (the script prints which taurus_tools it imported)::

    git archive a3c891b | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before python bench/slurm_watch.py      # before
    python bench/slurm_watch.py                             # after

Unless ``--use-running-slurm`` is given, a throw-away single-node cluster
(tests/slurm_cluster.py, always from this checkout) is started under /tmp with
``OverSubscribe=FORCE:<n>`` so that all jobs fit on its CPUs at once, and stopped at the
end (also on Ctrl-C or SIGTERM).

    python bench/slurm_watch.py
    python bench/slurm_watch.py --jobs 30 --sleep 2 --rounds 1
    python bench/slurm_watch.py --json > watch.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from slurm_cluster import SLURM_ENV_PREFIXES, SlurmCluster  # noqa: E402  (tests/slurm_cluster.py)

import taurus_tools  # noqa: E402
from taurus_tools import Datamover, waitfor  # noqa: E402
from taurus_tools.slurm.client import SlurmClient  # noqa: E402


def say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


class CallLog:
    """Records every call a SlurmClient makes: (monotonic time, program)."""

    def __init__(self, client: SlurmClient) -> None:
        self.calls: List[Tuple[float, str]] = []
        self._lock = threading.Lock()
        inner: Callable[..., Any] = client._run

        def run(argv: List[str], *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls.append((time.monotonic(), argv[0]))
            return inner(argv, *args, **kwargs)

        client._run = run  # type: ignore[method-assign]

    def between(self, start: float, end: float) -> Dict[str, int]:
        out: Dict[str, int] = {}
        with self._lock:
            for t, prog in self.calls:
                if start <= t <= end:
                    out[prog] = out.get(prog, 0) + 1
        return out

    def peak_per_second(self) -> int:
        with self._lock:
            times = sorted(t for t, _ in self.calls)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] < t - 1.0:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


def at_first_end(spans: List[Tuple[float, float]]) -> int:
    """How many jobs had started when the first one ended (all of them: they ran at once)."""
    if not spans:
        return 0
    first_end = min(end for _, end in spans)
    return sum(start <= first_end for start, _ in spans)


def one_round(dm: Datamover, args: argparse.Namespace) -> Dict[str, Any]:
    client = SlurmClient()
    dm._slurm = client  # the handles' client: its calls are what is counted
    calls = CallLog(client)
    expected = [3 if n % 3 == 0 else 0 for n in range(args.jobs)]
    t0 = time.monotonic()
    handles = []
    for code in expected:
        script = f'date +%s.%N; sleep {args.sleep}; date +%s.%N; exit {code}'
        launch = dm.backend.launch_program("sh", ("sh", "-c", script), blocking=False)
        handles.append(dm.start(launch))
    while not all(h.job_id is not None or h.done() for h in handles):
        time.sleep(0.01)
    t_submitted = time.monotonic()
    codes = waitfor(handles, timeout=args.timeout, progress=False, show_stderr=False)
    t_end = time.monotonic()
    spans = []
    for h in handles:
        words = h.communicate()[0].split()
        if len(words) == 2:
            spans.append((float(words[0]), float(words[1])))
    following = calls.between(t_submitted, t_end)
    whole = calls.between(t0, t_end)
    counted = getattr(client, "calls", None)  # the client's own counter, where it has one
    if counted is not None and counted != calls.between(0.0, math.inf):
        raise SystemExit(f"the client counted {counted}, the bench {calls.between(0.0, math.inf)}")
    follow_s, whole_s = t_end - t_submitted, t_end - t0
    return {
        "jobs": args.jobs,
        "codes_ok": codes == expected,
        "wrong_codes": sum(c != e for c, e in zip(codes, expected)),
        "running_at_first_end": at_first_end(spans),
        "submit_s": t_submitted - t0,
        "follow_s": follow_s,
        "whole_s": whole_s,
        "calls_following": following,
        "calls_whole": whole,
        "per_s_following": sum(following.values()) / follow_s if follow_s > 0 else math.nan,
        "per_s_whole": sum(whole.values()) / whole_s if whole_s > 0 else math.nan,
        "peak_in_1s": calls.peak_per_second(),
        "client_counter": counted is not None,
    }


def wait_queue_empty(timeout: float = 120.0) -> None:
    """Until squeue (outside the counted client) lists no job of this user."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = subprocess.run(["squeue", "--noheader", "--me", "--format=%i"], capture_output=True, text=True)
        if res.returncode == 0 and not res.stdout.split():
            return
        time.sleep(0.5)
    raise SystemExit("jobs still queued after the round")


def run(args: argparse.Namespace) -> Dict[str, Any]:
    quiet = args.json
    cluster: Optional[SlurmCluster] = None
    logs = tempfile.mkdtemp(prefix="ttwatch-jobs-")
    try:
        if args.use_running_slurm:
            mode = "the environment's Slurm (--use-running-slurm)"
        else:
            for name in list(os.environ):
                if name.startswith(SLURM_ENV_PREFIXES):
                    del os.environ[name]
            cluster_dir = tempfile.mkdtemp(prefix="ttwatch-", dir="/tmp")  # short: spool socket paths
            per_cpu = max(8, math.ceil(args.jobs / max(1, min(2, len(os.sched_getaffinity(0))))))
            cluster = SlurmCluster(cluster_dir, oversubscribe=per_cpu).start()
            os.environ.update(cluster.env)
            mode = f"throw-away cluster in {cluster_dir}, {cluster.cpus} CPUs, OverSubscribe=FORCE:{per_cpu}"
        say(f"taurus_tools from {os.path.dirname(taurus_tools.__file__)}; Slurm: {mode}", quiet)
        dm = Datamover("slurm", job_log_dir=logs)
        rounds = []
        for r in range(args.rounds):
            row = one_round(dm, args)
            rounds.append(row)
            say(f"round {r + 1}/{args.rounds}: following {row['follow_s']:.1f} s, calls {row['calls_following']}, "
                f"{row['per_s_following']:.2f}/s; whole run {row['per_s_whole']:.2f}/s, peak {row['peak_in_1s']} "
                f"in 1 s; {row['running_at_first_end']} jobs started before the first ended; "
                f"codes ok: {row['codes_ok']}", quiet)
            wait_queue_empty()
        return {
            "taurus_tools": os.path.dirname(taurus_tools.__file__),
            "watcher": os.path.exists(os.path.join(os.path.dirname(taurus_tools.__file__), "_slurm_watch.py")),
            "slurm": mode,
            "args": vars(args),
            "rounds": rounds,
            "median_per_s_following": statistics.median(r["per_s_following"] for r in rounds),
            "median_per_s_whole": statistics.median(r["per_s_whole"] for r in rounds),
        }
    finally:
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            shutil.rmtree(logs, ignore_errors=True)
            if cluster is not None:
                say("stopping the Slurm cluster ...", quiet)
                cluster.stop()
                shutil.rmtree(cluster.base_dir, ignore_errors=True)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def markdown(res: Dict[str, Any]) -> str:
    lines = [
        f"taurus_tools: `{res['taurus_tools']}` (shared watcher: {'yes' if res['watcher'] else 'no'})",
        f"Slurm: {res['slurm']}",
        "",
        "| round | jobs | running at first end | codes right | submit s | follow s | calls while following | per s "
        "| calls whole run | per s | peak in 1 s |",
        "|---:|---:|---:|---|---:|---:|---|---:|---|---:|---:|",
    ]

    def show(calls: Dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(calls.items())) or "none"

    for n, r in enumerate(res["rounds"], 1):
        lines.append(
            f"| {n} | {r['jobs']} | {r['running_at_first_end']} | {'yes' if r['codes_ok'] else 'NO'} "
            f"| {r['submit_s']:.1f} | {r['follow_s']:.1f} | {show(r['calls_following'])} "
            f"| {r['per_s_following']:.2f} | {show(r['calls_whole'])} | {r['per_s_whole']:.2f} | {r['peak_in_1s']} |"
        )
    lines += ["", f"median calls per second: following {res['median_per_s_following']:.2f}, "
                  f"whole run {res['median_per_s_whole']:.2f} (goal <= 1 while following)"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=200, help="non-blocking jobs per round (200)")
    p.add_argument("--sleep", type=float, default=5.0, help="seconds each job sleeps (5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a round may take (600)")
    p.add_argument("--use-running-slurm", action="store_true",
                   help="use the Slurm the environment points at instead of starting a throw-away cluster")
    p.add_argument("--json", action="store_true", help="print machine-readable results only")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.rounds < 1 or args.sleep < 0:
        p.error("--jobs and --rounds must be >= 1, --sleep >= 0")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the cluster as on Ctrl-C
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    from installed import compile_ours  # (bench/ is on sys.path: run as a script)

    compile_ours()
    sys.exit(main())
