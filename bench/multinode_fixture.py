#!/usr/bin/env python3
"""Start and stop the tests' multi-node Slurm cluster again and again; count what is left.

Each round starts ``multinode_cluster`` of tests/slurm_cluster.py (nodes n1..n4 in
``debug`` and ``datamover``, n5 in ``elsewhere`` with the taurus_tools folder hidden),
submits a batch job whose step runs on all four nodes, waits until every node runs it,
and then, on odd rounds, leaves the cluster in a bad state: one slurmd killed (died),
another stopped with SIGSTOP (hung).  Then ``stop()``.  After each round it counts:

* processes of that cluster still alive (daemons, step daemons, job processes);
* processes in a UTS namespace other than this process's whose command is a Slurm daemon
  or the job's ``sleep`` (a node's namespace lives as long as a process in it);
* mounts named ``tt-hidden`` in this process's mount table (the hidden paths are mounted
  only inside n5's own mount namespace; one here would be a leak).

    python bench/multinode_fixture.py            # 10 rounds
    python bench/multinode_fixture.py --rounds 3

Needs root (the namespaces) and Debian's slurm-wlm; standard library, psutil and taurus_tools.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import taurus_tools  # noqa: E402
from slurm_cluster import MULTINODE_NAMES, SlurmCluster, multinode_cluster  # noqa: E402


def uts_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/uts")
    except OSError:
        return ""


def leftovers(cluster: SlurmCluster, marker: str) -> dict:
    ours = uts_of(os.getpid())
    procs, namespaced = [], []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if cluster._belongs_here(proc):
                procs.append(proc.pid)
            elif uts_of(proc.pid) not in ("", ours) and marker in " ".join(proc.cmdline()):
                namespaced.append(proc.pid)
        except psutil.Error:
            pass
    with open("/proc/self/mountinfo") as fh:
        mounts = sum(1 for line in fh if " tt-hidden " in line)
    return {"processes": len(procs), "namespaced": len(namespaced), "mounts": mounts}


def wait_step_everywhere(cluster: SlurmCluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(any(p.name() == "sleep" for p in cluster.node_processes(n)) for n in MULTINODE_NAMES):
            return
        time.sleep(0.1)
    raise SystemExit("the job step did not start on all four nodes in time")


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args(argv)
    package = os.path.dirname(os.path.abspath(taurus_tools.__file__))
    starts, stops, total = [], [], {"processes": 0, "namespaced": 0, "mounts": 0}
    for i in range(args.rounds):
        base = tempfile.mkdtemp(prefix="ttmn-", dir="/tmp")
        cluster = multinode_cluster(base, hide=[package])
        t0 = time.perf_counter()
        cluster.start()
        starts.append(time.perf_counter() - t0)
        marker = f"sleep {1000 + i}"  # this round's job, told apart from anything else
        bad = i % 2 == 1
        try:
            subprocess.run(
                ["sbatch", "-p", "datamover", "-N4", "-n4", "-o", "/dev/null", "--wrap", f"srun {marker}"],
                env=cluster.client_env(), check=True, capture_output=True,
            )  # fmt: skip
            wait_step_everywhere(cluster)
            if bad:
                cluster._slurmds["n2"].kill()  # died
                os.kill(cluster._slurmds["n3"].pid, signal.SIGSTOP)  # hung
        finally:
            t0 = time.perf_counter()
            cluster.stop()
            stops.append(time.perf_counter() - t0)
        left = leftovers(cluster, marker)
        for key, value in left.items():
            total[key] += value
        print(f"round {i + 1}: start {starts[-1]:.2f} s, stop {stops[-1]:.2f} s"
              f"{' (a slurmd killed, one hung)' if bad else ''}; left: {left}")
    print(f"{args.rounds} rounds: start median {statistics.median(starts):.2f} s "
          f"({min(starts):.2f}-{max(starts):.2f}), stop median {statistics.median(stops):.2f} s "
          f"({min(stops):.2f}-{max(stops):.2f}); leftovers in all rounds: {total}")
    return 0 if not any(total.values()) else 1


if __name__ == "__main__":
    from installed import compile_ours  # (bench/ is on sys.path: run as a script)

    compile_ours()
    sys.exit(main())
