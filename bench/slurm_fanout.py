#!/usr/bin/env python3
"""ParallelCopy through the slurm backend against the local backend (run by hand, not in CI).

Requirement (issue "ParallelCopy", Slurm fan-out): the copy through the slurm backend with
8 shards takes at most 1.5 x the time of the same copy on the local backend.  Both in one
process, order alternating from round to round, median of >= 5 rounds.

The tree is bench/copy_tree.py's (imported from there, seeded): ``--files`` small files
(20,000, lognormal sizes, median 4 KiB) in nested folders plus ``--big`` files (8) of
``--big-mib`` (64 MiB) each, about 840 MiB with the defaults, under ``--base`` (default
/dev/shm).  A bigger ``--big-mib`` (e.g. 256) shows how the fixed cost of starting Slurm
jobs amortises over more bytes.

Contenders (each copies the contents of SRC into a new, empty DST, with a new work dir):

  local   ParallelCopy(SRC, DST, workers=8, shards=8, datamover=Datamover("local"),
          verify="size", progress=False, work_dir=<fresh>).run()
  slurm   the same with datamover=Datamover("slurm"): every shard is an ``srun`` job on
          the ``datamover`` partition

The time is the wall time of that whole expression, in this process (constructing the
Datamover included: the slurm backend asks ``sinfo`` twice).  ``sync`` runs before each
copy, outside the timing; after it (untimed) the script checks the result and that DST
holds every file with the right size, then deletes the copy and its work dir, so only one
copy exists at a time (fresh memory is slow on this VM, see docs/BENCHMARKS.md, "Noise").
One untimed warm-up copy per backend comes first; before each timed copy the script waits
(up to ``--quiet-wait`` s) until other processes are quiet.  CPU s is what the whole machine
was busy during the copy (/proc/stat): the slurm backend's workers run under slurmstepd,
not as children of this process, so this process's rusage would miss them.

Where the slurm overhead goes, from the copies themselves:

* phases of each copy: Datamover() construction, listing + sharding (until the first shard
  starts, from result_all.json's ``benchmark_results``), the fan-out (first shard start to
  last shard end), and the rest (the driver's verify pass, where it has one, and the report);
* per shard: the report's start/end times against the Slurm daemons' logs (millisecond
  timestamps; available for the cluster this script starts, or when the running
  cluster's log files are readable here): srun started -> resources allocated
  (slurmctld) -> task launch request (slurmd) -> step done (slurmd) -> the driver saw the
  shard end;

and, after the rounds, untimed, a probe of the fixed cost of one job: ``srun true`` and
``srun python -S -c pass`` one after another and 8 at once, against ``python -S -c pass``.

Unless ``--use-running-slurm`` is given, a throw-away single-node cluster
(tests/slurm_cluster.py: slurmctld + slurmd, partitions ``debug`` and ``datamover``; with
``--multinode`` the four nodes n1..n4 of the tests' ``slurm_multinode``, one slurmd each) is
started under /tmp and stopped at the end (also on Ctrl-C or SIGTERM); its SLURM_CONF is
set in this process's environment and inherited SLURM_* variables are removed.

    python bench/slurm_fanout.py
    python bench/slurm_fanout.py --big-mib 256 --rounds 5
    python bench/slurm_fanout.py --files 2000 --big 0 --rounds 3 --keep
    python bench/slurm_fanout.py --use-running-slurm --base /scratch/me --json > fanout.json

Only the standard library and taurus_tools are used (plus tests/slurm_cluster.py, which
needs psutil, a dependency of taurus_tools, for the throw-away cluster).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import copy_tree  # noqa: E402  (bench/copy_tree.py: the tree, the copy check, machine info)

from taurus_tools import Datamover, ParallelCopy, __version__  # noqa: E402

#: The issue's goal: median(slurm) / median(local) <= GOAL.
GOAL = 1.5
BACKENDS = ("local", "slurm")
ROOT_NAME = "tt-bench-fanout"
#: Shard job names are unique_job_name(f"copy-shard-{index}"): tt-copy-shard-3-0123456789.
JOB_NAME = re.compile(r"^tt-copy-shard-(\d+)-[0-9a-f]+$")
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\] (.*)$")
CTLD_ALLOC = re.compile(r"_slurm_rpc_allocate_resources:? JobId=(\d+)")
SLURMD_LAUNCH = re.compile(r"launch task (?:StepId=)?(\d+)\.0 request")
SLURMD_DONE = re.compile(r"^\[(\d+)\.0\] done with job")
#: Slurm variables that would point the clients elsewhere (as tests/conftest.py removes them).
SLURM_ENV_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCANCEL_")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")


def log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def med(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def spread(values: List[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# ---------------------------------------------------------------------------- Slurm
class SlurmLogs:
    """Millisecond timestamps of job events from slurmctld's and slurmd's logs, read as they grow."""

    def __init__(self, ctld_log: Optional[str], slurmd_log: Optional[str]) -> None:
        self.paths = {"ctld": ctld_log, "slurmd": slurmd_log}
        self.offsets = {"ctld": 0, "slurmd": 0}
        self.alloc: Dict[str, float] = {}
        self.launch: Dict[str, float] = {}
        self.done: Dict[str, float] = {}

    @property
    def usable(self) -> bool:
        return bool(self.paths["slurmd"]) and os.access(self.paths["slurmd"], os.R_OK)

    def read(self) -> None:
        for which, path in self.paths.items():
            if not path:
                continue
            try:
                with open(path, "rb") as fh:
                    fh.seek(self.offsets[which])
                    data = fh.read()
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1  # a line being written stays for the next read
            self.offsets[which] += cut
            for line in data[:cut].decode(errors="replace").splitlines():
                m = LOG_TIME.match(line)
                if not m:
                    continue
                try:
                    t = _dt.datetime.fromisoformat(m.group(1)).timestamp()  # local time, as time.time()
                except ValueError:
                    continue
                text = m.group(2)
                if which == "ctld":
                    a = CTLD_ALLOC.search(text)
                    if a:
                        self.alloc.setdefault(a.group(1), t)
                    continue
                a = SLURMD_LAUNCH.search(text)
                if a:
                    self.launch.setdefault(a.group(1), t)
                d = SLURMD_DONE.match(text)
                if d:
                    self.done.setdefault(d.group(1), t)


def shard_jobs(seen: set) -> Dict[int, List[str]]:
    """Shard index -> ids of the shard jobs scontrol still shows that are not in ``seen`` (which is updated)."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    jobs: Dict[int, List[str]] = {}
    for line in out.splitlines():
        fields: Dict[str, str] = {}
        for tok in line.split():
            key, sep, value = tok.partition("=")
            if sep:
                fields.setdefault(key, value)
        job, name = fields.get("JobId"), fields.get("JobName", "")
        m = JOB_NAME.match(name)
        if job and m and job not in seen:
            seen.add(job)
            jobs.setdefault(int(m.group(1)), []).append(job)
    for ids in jobs.values():
        ids.sort(key=int)
    return jobs


def job_timeline(chunks: List[Dict[str, Any]], jobs: Dict[int, List[str]], logs: SlurmLogs) -> List[Dict[str, Any]]:
    """Per shard attempt of a slurm copy: seconds from srun's start to each job event and back to the driver."""
    out = []
    for c in sorted(chunks, key=lambda c: (c["chunk_number"], c.get("attempt", 0))):
        ids = jobs.get(c["chunk_number"] - 1, [])
        attempt = c.get("attempt", 0)
        if attempt >= len(ids):
            continue
        job = ids[attempt]
        start, end = c["start_time_ms"] / 1000, c["end_time_ms"] / 1000
        row: Dict[str, Any] = {"shard": c["chunk_number"] - 1, "job": job, "duration_s": end - start}
        if job in logs.alloc:
            row["allocated_s"] = logs.alloc[job] - start
        if job in logs.launch:
            row["launched_s"] = logs.launch[job] - start
        if job in logs.launch and job in logs.done:
            row["step_run_s"] = logs.done[job] - logs.launch[job]
        if job in logs.done:
            row["noticed_after_done_s"] = end - logs.done[job]
        out.append(row)
    return out


def running_cluster_logs() -> Tuple[Optional[str], Optional[str]]:
    """The log files of the Slurm the environment points at, from ``scontrol show config``."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    found: Dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = value.strip()
    return found.get("SlurmctldLogFile"), found.get("SlurmdLogFile")


def probe(partition: str, repeat: int) -> Dict[str, Dict[str, Optional[float]]]:
    """Fixed cost of one job: srun of a no-op, one after another and 8 at once, against a local start."""
    srun = ["srun", f"--partition={partition}", "--nodes=1", "--ntasks=1", "--job-name=tt-bench-probe"]
    py = [sys.executable, "-S", "-c", "pass"]
    cases = {
        "python -S -c pass": (py, 1),
        "srun true": ([*srun, "true"], 1),
        "srun python -S -c pass": ([*srun, *py], 1),
        "8 x python -S -c pass, at once": (py, 8),
        "8 x srun python -S -c pass, at once": ([*srun, *py], 8),
    }
    out: Dict[str, Dict[str, Any]] = {}
    for name, (argv, n) in cases.items():
        times = []
        # CPU over all repeats: /proc/stat counts in clock ticks (10 ms), too coarse for one repeat
        b0, c0 = copy_tree.busy_seconds(), copy_tree.cpu_seconds()
        for _ in range(repeat):
            t0 = time.perf_counter()
            procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE) for _ in range(n)]
            errs = [p.communicate()[1] for p in procs]
            times.append(time.perf_counter() - t0)
            bad = [(p.returncode, e) for p, e in zip(procs, errs) if p.returncode]
            if bad:
                raise RuntimeError(f"{name}: exit {bad[0][0]}: {bad[0][1].decode(errors='replace')[-300:]}")
        count = repeat * n
        out[name] = {**spread(times), "children_cpu_per_process_s": (copy_tree.cpu_seconds() - c0) / count,
                     "machine_cpu_per_process_s": (copy_tree.busy_seconds() - b0) / count}
    return out


def version(argv: List[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "missing"


def git_commit() -> str:
    """The commit of the taurus_tools under test, and how many of its files differ from it."""
    pkg = os.path.dirname(sys.modules["taurus_tools"].__file__)
    try:
        head = subprocess.run(["git", "-C", pkg, "log", "-1", "--oneline"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", pkg, "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "?"
    if not head:
        return "? (not a git checkout)"
    if not dirty:
        return head
    try:  # which uncommitted state: a hash of the diff, to tell runs apart
        diff = subprocess.run(["git", "-C", pkg, "diff", "HEAD", "--", "."], capture_output=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        diff = b""
    digest = hashlib.sha1(diff).hexdigest()[:10]
    return f"{head} (+ {len(dirty)} uncommitted file(s) in taurus_tools, diff sha1 {digest})"


# ---------------------------------------------------------------------------- one copy
def timed_copy(backend: str, src: str, dst: str, work: str, args: argparse.Namespace,
               totals: Dict[str, int]) -> Dict[str, Any]:
    os.makedirs(dst)
    os.sync()
    b0 = copy_tree.busy_seconds()
    w0 = time.time()
    t0 = time.perf_counter()
    dm = Datamover(backend, partition=args.partition)
    t1 = time.perf_counter()
    w1 = time.time()
    result = ParallelCopy(
        src, dst, workers=args.workers, shards=args.shards, datamover=dm, verify="size", progress=False,
        work_dir=work,
    ).run()
    elapsed = time.perf_counter() - t0
    w2 = time.time()
    busy = copy_tree.busy_seconds() - b0
    # untimed checks
    if dm.backend.name != backend:
        raise RuntimeError(f"asked for the {backend} backend, got {dm.backend}")
    if not result.ok or result.files_copied != totals["files"] + 1:  # + the manifest
        raise RuntimeError(f"{backend}: {result.summary()}")
    problem = copy_tree.check_copy(dst, totals)
    if problem:
        raise RuntimeError(f"{backend}: {problem}")
    with open(result.report) as fh:
        report = json.load(fh)
    chunks = report.get("benchmark_results", [])
    row: Dict[str, Any] = {"s": elapsed, "cpu_s": busy, "datamover_s": t1 - t0, "retries": report.get("total_retries"),
                           "chunks": chunks}
    if chunks:
        first = min(c["start_time_ms"] for c in chunks) / 1000
        last = max(c["end_time_ms"] for c in chunks) / 1000
        row["plan_s"] = first - w1  # listing + sharding (+ state files)
        row["fanout_s"] = last - first
        row["after_s"] = w2 - last  # the driver's verify (if any) + report + cleaning the work dir
        row["shard_s"] = [c["duration_ms"] / 1000 for c in chunks]
    row["wall_start"] = w0
    return row


# ---------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> Dict[str, Any]:
    quiet = args.json
    base = os.path.abspath(args.base)
    root = os.path.join(base, ROOT_NAME)
    src = os.path.join(root, "src")
    os.makedirs(root, exist_ok=True)
    params = copy_tree.tree_params(args)
    cwd = os.getcwd()
    cluster = None
    made: List[str] = []
    counter = [0]

    def fresh(kind: str) -> str:
        counter[0] += 1
        path = os.path.join(root, f"{kind}-{counter[0]:03d}")
        made.append(path)
        return path

    def remove_copies() -> None:
        if made:
            subprocess.run(["rm", "-rf", *made], check=True)
            made.clear()
        os.sync()

    try:
        totals = copy_tree.make_tree(src, params, quiet=quiet)
        need = totals["bytes"] * 1.05
        free = shutil.disk_usage(base).free
        if need > free:
            raise SystemExit(f"{base}: {free / 2**30:.1f} GiB free, one copy needs {need / 2**30:.1f} GiB")
        # The shard workers run from the current folder (srun keeps it): not a checkout that
        # could shadow the taurus_tools under test.
        os.chdir(root)

        if args.use_running_slurm:
            mode = "the environment's Slurm (--use-running-slurm)"
            logs = SlurmLogs(*running_cluster_logs())
        else:
            sys.path.insert(0, os.path.join(REPO, "tests"))
            from slurm_cluster import SlurmCluster, multinode_cluster  # noqa: E402  (tests/slurm_cluster.py)

            for name in list(os.environ):
                if name.startswith(SLURM_ENV_PREFIXES):
                    del os.environ[name]
            cluster_dir = tempfile.mkdtemp(prefix="ttfan-", dir="/tmp")  # short: spool socket paths
            cluster = multinode_cluster(cluster_dir) if args.multinode else SlurmCluster(cluster_dir)
            t0 = time.perf_counter()
            cluster.start()
            os.environ.update(cluster.env)
            mode = f"throw-away cluster of {len(cluster.nodes)} node(s) in {cluster_dir} " \
                   f"(tests/slurm_cluster.py, started in {time.perf_counter() - t0:.2f} s)"
            # Several nodes: several slurmd logs; the job timeline reads the first node's only.
            logs = SlurmLogs(str(cluster.log_dir / "slurmctld.log"), str(cluster.slurmd_log(cluster.nodes[0])))
        log(f"Slurm: {mode}", quiet)
        seen: set = set()
        shard_jobs(seen)  # jobs from before this run are not ours

        copies: Dict[str, List[Dict[str, Any]]] = {b: [] for b in BACKENDS}
        timelines: List[Dict[str, Any]] = []
        waited = 0.0

        def one(backend: str) -> Dict[str, Any]:
            dst, work = fresh("dst"), fresh("work")
            row = timed_copy(backend, src, dst, work, args, totals)
            if backend == "slurm":
                logs.read()
                row["jobs"] = job_timeline(row["chunks"], shard_jobs(seen), logs)
            remove_copies()
            return row

        for _ in range(args.warmup):
            for backend in BACKENDS:
                one(backend)
        for r in range(args.rounds):
            order = BACKENDS if r % 2 == 0 else BACKENDS[::-1]
            for backend in order:
                if args.quiet_wait > 0:
                    waited += copy_tree.wait_quiet(args.quiet_wait, window=1.0)
                row = one(backend)
                copies[backend].append(row)
                timelines.extend(row.get("jobs", []))
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{b}={copies[b][-1]['s']:.2f}" for b in BACKENDS)
                + " s", quiet)

        probed = None
        if args.probe > 0:
            log("probing srun ...", quiet)
            probed = probe(args.partition, args.probe)
            shard_jobs(seen)
        slurm_info = {
            "mode": mode,
            "srun": version(["srun", "--version"]),
            "logs_usable": logs.usable,
        }
        return summarise(args, base, params, totals, copies, timelines, probed, waited, slurm_info)
    finally:
        # A second Ctrl-C must not leave the daemons running: cleaning up takes seconds at most.
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        os.chdir(cwd)
        try:
            remove_copies()
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        finally:
            if cluster is not None:
                log("stopping the Slurm cluster ...", quiet)
                cluster.stop()
                if not args.keep_cluster_dir:
                    shutil.rmtree(cluster.base_dir, ignore_errors=True)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def summarise(args: argparse.Namespace, base: str, params: Dict[str, Any], totals: Dict[str, int],
              copies: Dict[str, List[Dict[str, Any]]], timelines: List[Dict[str, Any]],
              probed: Optional[Dict[str, Any]], waited: float, slurm_info: Dict[str, Any]) -> Dict[str, Any]:
    stats: Dict[str, Dict[str, Any]] = {}
    for b in BACKENDS:
        rows = copies[b]
        times = [r["s"] for r in rows]
        stats[b] = {
            "label": f'ParallelCopy(workers={args.workers}, shards={args.shards}, datamover=Datamover("{b}"), '
                     'verify="size")',
            "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "cpu_median_s": statistics.median(r["cpu_s"] for r in rows),
            "mb_per_s": totals["bytes"] / 1e6 / statistics.median(times),
            "phases_median_s": {k: med([r[k] for r in rows if k in r])
                                for k in ("datamover_s", "plan_s", "fanout_s", "after_s")},
            "shard_s": spread([s for r in rows for s in r.get("shard_s", [])]),
            "retries": sum(r.get("retries") or 0 for r in rows),
            "rounds_s": times,
            "rounds": [{k: v for k, v in r.items() if k not in ("chunks",)} for r in rows],
        }
    ratio = stats["slurm"]["median_s"] / stats["local"]["median_s"]
    per_job = {k: spread([t[k] for t in timelines if k in t])
               for k in ("allocated_s", "launched_s", "step_run_s", "noticed_after_done_s", "duration_s")}
    m = copy_tree.machine(base)
    for k in ("cp", "rsync", "fpsync", "rclone"):
        m.pop(k, None)
    m["commit"] = git_commit()
    return {
        "date": _dt.date.today().isoformat(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "base": base,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "workers": args.workers,
        "shards": args.shards,
        "partition": args.partition,
        "quiet_wait_s": waited,
        "tree": {"params": params, **totals},
        "machine": m,
        "taurus_tools": __version__,
        "taurus_tools_path": os.path.dirname(sys.modules["taurus_tools"].__file__),
        "slurm": slurm_info,
        "contenders": stats,
        "ratio_slurm_local": ratio,
        "overhead_s": stats["slurm"]["median_s"] - stats["local"]["median_s"],
        "goal": {"max": GOAL, "ok": ratio <= GOAL},
        "shard_jobs": per_job,
        "shard_job_timelines": timelines,
        "probe": probed,
    }


def _f(x: Optional[float], digits: int = 2, scale: float = 1.0) -> str:
    return "–" if x is None else f"{x * scale:.{digits}f}"


def markdown(res: Dict[str, Any]) -> str:
    m, t, s = res["machine"], res["tree"], res["contenders"]
    phases = ("datamover_s", "plan_s", "fanout_s", "after_s")
    lines = [
        f"{res['date']}: `{res['command']}`",
        f"tree: {t['files']} files ({t['params']['files']} small, median {t['median_small']} B, largest "
        f"{t['largest_small'] / 2**20:.1f} MiB; {t['params']['big']} x {t['params']['big_mib']:g} MiB), "
        f"{t['bytes'] / 2**20:.0f} MiB, {t['dirs']} folders, on {m['filesystem']}",
        f"{res['rounds']} rounds, order alternating, {res['warmup']} warm-up copy per backend, each copy deleted "
        f"after its check; workers={res['workers']}, shards={res['shards']}, partition {res['partition']}",
        f"machine: nproc {m['nproc']}, Python {m['python']}, kernel {m['kernel']}, load {m['loadavg']}; "
        f"taurus_tools {res['taurus_tools']} from {res['taurus_tools_path']}, commit {m['commit']}",
        f"Slurm: {res['slurm']['srun']}, {res['slurm']['mode']}",
        "",
        "| backend | median s | min–max s | CPU s (machine) | MB/s | Datamover() s | list+shard s | fan-out s "
        "| after last shard s | shard s (median, min–max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b, st in s.items():
        p = st["phases_median_s"]
        sh = st["shard_s"]
        lines.append(
            f"| `{st['label']}` | {st['median_s']:.2f} | {st['min_s']:.2f}–{st['max_s']:.2f} | "
            f"{st['cpu_median_s']:.2f} | {st['mb_per_s']:.0f} | "
            + " | ".join(_f(p[k], 3) for k in phases)
            + f" | {_f(sh['median'], 3)} ({_f(sh['min'], 3)}–{_f(sh['max'], 3)}) |"
        )
    ok = "met" if res["goal"]["ok"] else "MISSED"
    lines += [
        "",
        f"slurm / local = **{res['ratio_slurm_local']:.2f}** (goal ≤ {res['goal']['max']}: **{ok}**); "
        f"slurm − local = {res['overhead_s']:+.3f} s per copy; retries: "
        + ", ".join(f"{b} {st['retries']}" for b, st in s.items()),
    ]
    j = res["shard_jobs"]
    if j["duration_s"]["n"]:
        labels = {
            "allocated_s": "srun started (driver's record) → resources allocated (slurmctld log)",
            "launched_s": "srun started → task launch request at slurmd (**job start latency**)",
            "step_run_s": "task launch request → step's last log line (slurmstepd: done with job)",
            "noticed_after_done_s": "step's last log line → the driver saw the shard end",
            "duration_s": "shard in the report (srun started → seen ended)",
        }
        lines += ["", f"per shard job of the slurm copies ({j['duration_s']['n']} jobs; the report's times against the "
                  "daemons' log lines, ms resolution; the driver records a shard's start only after starting srun, "
                  "so a few values come out negative):", "",
                  "| interval | median ms | min ms | max ms |", "|---|---:|---:|---:|"]
        for k, label in labels.items():
            v = j[k]
            if v["n"]:
                lines.append(f"| {label} | {_f(v['median'], 1, 1e3)} | {_f(v['min'], 1, 1e3)} | "
                             f"{_f(v['max'], 1, 1e3)} |")
        loc = s["local"]["shard_s"]
        lines.append(f"| local shard for comparison (process started → seen ended) | {_f(loc['median'], 1, 1e3)} | "
                     f"{_f(loc['min'], 1, 1e3)} | {_f(loc['max'], 1, 1e3)} |")
    elif not res["slurm"]["logs_usable"]:
        lines += ["", "per-shard job start latency: the Slurm daemons' logs are not readable here"]
    if res["probe"]:
        lines += ["", "fixed cost of one job (untimed probe after the rounds; wall time until all have exited; CPU "
                  "per process: of this process's children (srun, or python), and of the whole machine "
                  "(+ slurmctld, slurmd, slurmstepd)):", "",
                  "| command | median ms | min ms | max ms | children CPU ms / process | machine CPU ms / process |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, v in res["probe"].items():
            lines.append(f"| `{name}` | {_f(v['median'], 1, 1e3)} | {_f(v['min'], 1, 1e3)} | "
                         f"{_f(v['max'], 1, 1e3)} | {_f(v['children_cpu_per_process_s'], 1, 1e3)} | "
                         f"{_f(v['machine_cpu_per_process_s'], 1, 1e3)} |")
    lines += ["", f"waited {res['quiet_wait_s']:.0f} s for a quiet machine"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="/dev/shm", help="where the tree and the copies go; default %(default)s")
    p.add_argument("--rounds", type=int, default=5, help="rounds, order alternating (5)")
    p.add_argument("--workers", type=int, default=8, help="ParallelCopy workers (8)")
    p.add_argument("--shards", type=int, default=8, help="ParallelCopy shards (8)")
    p.add_argument("--partition", default="datamover", help="Slurm partition of the shard jobs (datamover)")
    copy_tree.add_tree_options(p)
    p.add_argument("--keep", action="store_true", help="keep the generated tree for the next run")
    p.add_argument("--use-running-slurm", action="store_true",
                   help="use the Slurm the environment points at instead of starting a throw-away cluster")
    p.add_argument("--multinode", action="store_true",
                   help="the throw-away cluster has four nodes n1..n4, one slurmd each (tests' slurm_multinode)")
    p.add_argument("--keep-cluster-dir", action="store_true",
                   help="keep the throw-away cluster's folder (config and daemon logs) under /tmp")
    p.add_argument("--warmup", type=int, default=1, help="untimed copies per backend first (1)")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="before each timed copy wait up to this many seconds until other processes use < 0.2 CPUs "
                        "(120; 0: don't wait)")
    p.add_argument("--probe", type=int, default=20, help="repeats of each srun probe after the rounds (20; 0: none)")
    p.add_argument("--json", action="store_true", help="print machine-readable results only")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.workers < 1 or args.shards < 1 or args.warmup < 0:
        p.error("--rounds, --workers and --shards must be >= 1, --warmup >= 0")
    if not os.path.isdir(args.base):
        p.error(f"--base {args.base!r} is not a folder")
    signal.signal(signal.SIGTERM, _on_sigterm)  # clean up (cluster, copies) as on Ctrl-C
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted; the cluster and the copies were cleaned up", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    from installed import compile_ours  # (bench/ is on sys.path: run as a script)

    compile_ours()
    sys.exit(main())
