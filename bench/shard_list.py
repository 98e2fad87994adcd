#!/usr/bin/env python3
"""Sharding a 1,000,000-file list: taurus_tools.transfer.plan.shard against fpart and split (run by hand, not in CI).

Requirement (issue "ParallelCopy", Performance): a 1,000,000-line "size path" list into 64
shards: time within 2 x of ``fpart -n 64 -a -i LIST`` (the C peer), peak memory <= 250 MB,
and max shard bytes <= 1.02 x max(mean shard bytes, largest file) -- the best any partition
can do; fpart's and ``split -n l/64``'s balance reported beside it.

The list (seeded) imitates a real tree: files come folder by folder; a folder holds a
lognormal number of files (median ``--folder-median`` 50) whose sizes are lognormal around
a scale of their own (the folder scales are lognormal with median 4 KiB and sigma
``--scale-sigma`` 1.5; files scatter around it with sigma ``--file-sigma`` 1.2).  Sizes
are heavy-tailed and clustered -- folders of checkpoints next to folders of small logs --
which is what makes cutting the list into consecutive runs (``split``) unbalanced.

Contenders, each run as a separate process (wall time from start to exit; peak memory is
that process's maximum resident set, measured by GNU ``/usr/bin/time`` when installed,
else by a small ``python -S`` runner whose own few MB are then included):

  ours        python -c '... _plan.shard(LISTING, OUT, 64, by="bytes")'   (interpreter start and
              import included; the time inside shard() alone is reported too)
  ours-count  the same with by="count" (the ``split -n l/N`` equivalent), for reference
  fpart       fpart -n 64 -a -i LIST -o OUT/part
  split       split -n l/64 LIST OUT/x

The listing in our record format (``f\\tSIZE\\t0\\tPATH\\0``, see taurus_tools.transfer.plan) and the
"size path" list are written before anything is timed.  Every contender's output is then
read back (not timed): each of the 1,000,000 paths must be in exactly one shard; balance =
max shard bytes / max(mean shard bytes, largest file).

    python bench/shard_list.py
    python bench/shard_list.py --rounds 5 --json
    python bench/shard_list.py --lines 200000 --shards 16 --dir /dev/shm

Only the standard library and taurus_tools are used.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import taurus_tools

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from copy_tree import busy_seconds  # noqa: E402  (bench/copy_tree.py)

#: The issue's goals.
GOAL_TIME_VS_FPART = 2.0
GOAL_PEAK_MB = 250.0
GOAL_BALANCE = 1.02

OURS_SNIPPET = r"""
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from taurus_tools.transfer.plan import shard
t1 = time.perf_counter()
plan = shard(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), by=sys.argv[4])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "shard_s": t2 - t1, "plan_file": sys.modules[shard.__module__].__file__}))
"""


# ---------------------------------------------------------------------------- the list
def make_sizes(lines: int, seed: int, folder_median: float, scale_sigma: float, file_sigma: float) -> List[int]:
    rng = random.Random(seed)
    sizes: List[int] = []
    mu = math.log(4096)
    while len(sizes) < lines:
        count = max(1, int(math.exp(rng.gauss(math.log(folder_median), 1.0))))
        scale = math.exp(rng.gauss(mu, scale_sigma))
        sizes.extend(int(scale * math.exp(rng.gauss(0.0, file_sigma))) for _ in range(count))
    del sizes[lines:]
    return sizes


def path_of(i: int) -> bytes:
    """Path of list entry ``i``; the index can be read back from the name (see index_of)."""
    return b"proj%02d/run%05d/file_%07d.dat" % (i % 37, i // 50, i)


def index_of(path: bytes) -> int:
    return int(path[-11:-4])


def write_inputs(folder: str, sizes: List[int]) -> Tuple[str, str]:
    """The "size path" list and our listing, both for the same entries."""
    text = os.path.join(folder, "list.txt")
    listing = os.path.join(folder, "listing")
    with open(text, "wb") as t, open(listing, "wb") as out:
        for i, size in enumerate(sizes):
            p = path_of(i)
            t.write(b"%d %s\n" % (size, p))
            out.write(b"f\t%d\t0\t%s\0" % (size, p))
    return text, listing


# ---------------------------------------------------------------------------- running
#: Runs a command in a small fresh process and reports that command's own rusage.  Needed
#: because a child forked (or vforked) from this big Python process starts with this
#: process's memory counted in its peak RSS, which ``exec`` keeps.
RUNNER = r"""
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_pid, status, ru = os.wait4(pid, 0)
usage = [os.waitstatus_to_exitcode(status), ru.ru_maxrss, ru.ru_utime + ru.ru_stime]
sys.stderr.write("\nTT-RUSAGE " + json.dumps(usage) + "\n")
"""


def run_measured(argv: List[str], capture: bool = False) -> Dict[str, object]:
    """Run ``argv``: wall time, and peak RSS (MB) and CPU of that command alone.

    The command runs under GNU ``/usr/bin/time`` when installed, else under a small
    Python runner (``python -S``; its own few MB are then part of the peak).
    """
    with tempfile.NamedTemporaryFile("r", prefix="tt-time-") as report:
        if os.access("/usr/bin/time", os.X_OK):
            wrapped = ["/usr/bin/time", "-o", report.name, "-f", "%x %M %U %S", *argv]
        else:
            wrapped = [sys.executable, "-S", "-c", RUNNER, *argv]
        t0 = time.perf_counter()
        # cwd: python -c puts the current folder first on sys.path; a checkout there must not
        # shadow the taurus_tools under test (PYTHONPATH or installed).
        proc = subprocess.run(wrapped, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, cwd=tempfile.gettempdir())
        wall = time.perf_counter() - t0
        err = proc.stderr.decode(errors="replace")
        if wrapped[0] == "/usr/bin/time":
            fields = report.read().split()[-4:]
            code, rss_kib, cpu = int(fields[0]), int(fields[1]), float(fields[2]) + float(fields[3])
        else:
            head, _, tail = err.rpartition("\nTT-RUSAGE ")
            code, rss_kib, cpu = json.loads(tail)
            err = head
    if code != 0 or proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {code}: {err[-500:]}")
    return {
        "wall_s": wall,
        "peak_mb": rss_kib * 1024 / 1e6,  # Linux reports KiB
        "cpu_s": cpu,
        "stdout": proc.stdout.decode(errors="replace") if capture else "",
        "measured_by": os.path.basename(wrapped[0]) if wrapped[0] == "/usr/bin/time" else "python runner",
    }


def commands(name: str, text: str, listing: str, out: str, shards: int) -> List[str]:
    if name == "ours":
        return [sys.executable, "-c", OURS_SNIPPET, listing, out, str(shards), "bytes"]
    if name == "ours-count":
        return [sys.executable, "-c", OURS_SNIPPET, listing, out, str(shards), "count"]
    if name == "fpart":
        return ["fpart", "-n", str(shards), "-a", "-i", text, "-o", os.path.join(out, "part")]
    if name == "split":
        return ["split", "-n", f"l/{shards}", text, os.path.join(out, "x")]
    raise ValueError(name)


LABELS = {
    "ours": 'taurus_tools.transfer.plan.shard(listing, out, 64, by="bytes")',
    "ours-count": 'taurus_tools.transfer.plan.shard(listing, out, 64, by="count")',
    "fpart": "fpart -n 64 -a -i LIST -o OUT/part",
    "split": "split -n l/64 LIST OUT/x",
}


def shard_bytes(name: str, out: str, sizes: List[int]) -> List[int]:
    """Bytes per shard, read back from the output; checks every entry is there exactly once."""
    seen = bytearray(len(sizes))
    loads: List[int] = []
    for path in sorted(glob.glob(os.path.join(out, "*"))):
        total = 0
        with open(path, "rb") as fh:
            data = fh.read()
        if name.startswith("ours"):
            for rec in data.split(b"\0")[:-1]:
                kind, size, _mtime, rel = rec.split(b"\t", 3)
                i = index_of(rel)
                if int(size) != sizes[i]:
                    raise RuntimeError(f"{name}: {rel!r} has size {size} in {path}, want {sizes[i]}")
                seen[i] += 1
                total += sizes[i]
        else:
            for line in data.splitlines():
                rel = line.split(b" ", 1)[1] if name == "split" else line
                i = index_of(rel)
                seen[i] += 1
                total += sizes[i]
        loads.append(total)
    missing = seen.count(0)
    doubled = len(seen) - missing - seen.count(1)
    if missing or doubled:
        raise RuntimeError(f"{name}: {missing} entries missing, {doubled} in more than one shard")
    return loads


def machine(folder: str) -> Dict[str, str]:
    def version(argv: List[str]) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True)
            return (proc.stdout or proc.stderr).splitlines()[0].strip()
        except (OSError, IndexError):
            return "missing"

    return {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "taurus_tools": taurus_tools.__version__,
        "taurus_tools_path": os.path.dirname(taurus_tools.__file__),
        "fpart": version(["fpart", "-V"]),
        "split": version(["split", "--version"]),
        "dir": folder,
    }


def wait_quiet(max_wait: float, cores: float = 0.2, window: float = 2.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine uses less than ``cores`` CPUs; return the wait."""
    t0 = time.monotonic()
    while True:
        b0 = busy_seconds()
        time.sleep(window)
        waited = time.monotonic() - t0
        if (busy_seconds() - b0) / window < cores or waited >= max_wait:
            return waited


def run(args: argparse.Namespace) -> Dict[str, object]:
    names = [n for n in ("ours", "ours-count", "fpart", "split") if n in args.only]
    missing = [n for n in names if n in ("fpart", "split") and not shutil.which(n)]
    names = [n for n in names if n not in missing]
    base = tempfile.mkdtemp(prefix="tt-bench-shard-", dir=args.dir)
    try:
        t0 = time.perf_counter()
        sizes = make_sizes(args.lines, args.seed, args.folder_median, args.scale_sigma, args.file_sigma)
        text, listing = write_inputs(base, sizes)
        if not args.json:
            print(f"wrote {args.lines} entries ({sum(sizes) / 2**30:.1f} GiB) in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)
        samples: Dict[str, List[Dict[str, object]]] = {n: [] for n in names}
        loads: Dict[str, List[int]] = {}
        waited = foreign = 0.0
        for r in range(args.rounds):
            if args.quiet_wait > 0:
                waited += wait_quiet(args.quiet_wait)
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                out = os.path.join(base, f"out-{name}")
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                b0 = busy_seconds()
                m = run_measured(commands(name, text, listing, out, args.shards), capture=name.startswith("ours"))
                foreign += max(0.0, busy_seconds() - b0 - m["cpu_s"])
                if name.startswith("ours"):
                    m.update(json.loads(m.pop("stdout").splitlines()[-1]))
                else:
                    m.pop("stdout")
                samples[name].append(m)
                if r == 0:
                    loads[name] = shard_bytes(name, out, sizes)
            if not args.json:
                last = {n: samples[n][-1] for n in names}
                done = ", ".join(f"{n}={last[n]['wall_s']:.2f} s/{last[n]['peak_mb']:.0f} MB" for n in names)
                print(f"round {r + 1}/{args.rounds}: {done}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    total = sum(sizes)
    largest = max(sizes)
    bound = max(total / args.shards, largest)
    stats: Dict[str, Dict[str, object]] = {}
    for n in names:
        walls = [s["wall_s"] for s in samples[n]]
        stats[n] = {
            "label": LABELS[n].replace("64", str(args.shards)),
            "median_s": statistics.median(walls),
            "min_s": min(walls),
            "max_s": max(walls),
            "peak_mb": max(s["peak_mb"] for s in samples[n]),
            "cpu_median_s": statistics.median(s["cpu_s"] for s in samples[n]),
            "rounds_s": walls,
            "shards": len(loads[n]),
            "max_shard_bytes": max(loads[n]),
            "min_shard_bytes": min(loads[n]),
            "balance": max(loads[n]) / bound,
        }
        if n.startswith("ours"):
            stats[n]["shard_call_median_s"] = statistics.median(s["shard_s"] for s in samples[n])
            stats[n]["import_median_s"] = statistics.median(s["import_s"] for s in samples[n])
            stats[n]["plan_file"] = samples[n][0]["plan_file"]
    goals = {}
    if "ours" in stats:
        o = stats["ours"]
        goals = {
            "peak_mb": {"value": o["peak_mb"], "max": GOAL_PEAK_MB, "ok": o["peak_mb"] <= GOAL_PEAK_MB},
            "balance": {"value": o["balance"], "max": GOAL_BALANCE, "ok": o["balance"] <= GOAL_BALANCE},
        }
        if "fpart" in stats:
            ratio = o["median_s"] / stats["fpart"]["median_s"]
            goals["time_vs_fpart"] = {"value": ratio, "max": GOAL_TIME_VS_FPART, "ok": ratio <= GOAL_TIME_VS_FPART}
    return {
        "date": _dt.date.today().isoformat(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "lines": args.lines,
        "shards": args.shards,
        "rounds": args.rounds,
        "list": {
            "seed": args.seed, "folder_median": args.folder_median, "scale_sigma": args.scale_sigma,
            "file_sigma": args.file_sigma, "total_bytes": total, "largest": largest,
            "median": int(statistics.median(sizes)), "mean_shard_bytes": total / args.shards, "bound": bound,
        },
        "machine": machine(args.dir or tempfile.gettempdir()),
        "missing": missing,
        "peak_measured_by": samples[names[0]][0]["measured_by"] if names else None,
        "quiet_wait_s": waited,
        "other_cpu_total_s": foreign,
        "contenders": stats,
        "goals": goals,
    }


def markdown(result: Dict[str, object]) -> str:
    m, lst, stats = result["machine"], result["list"], result["contenders"]
    lines = [
        f"{result['date']}: `{result['command']}`",
        f"{result['lines']} entries, {lst['total_bytes'] / 2**30:.1f} GiB (median {lst['median']} B, largest "
        f"{lst['largest'] / 2**20:.0f} MiB), {result['shards']} shards: "
        f"mean {lst['mean_shard_bytes'] / 2**20:.0f} MiB, "
        f"bound max(mean, largest) {lst['bound'] / 2**20:.0f} MiB",
        f"{result['rounds']} rounds, order alternating; machine: nproc {m['nproc']}, Python {m['python']}, "
        f"kernel {m['kernel']}, {m['fpart']}, files in {m['dir']}; peak memory by {result['peak_measured_by']}",
        "",
        "| contender | median s | min s | max s | CPU s | peak MB | max shard / bound | min shard / mean |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, s in stats.items():
        lines.append(
            f"| `{s['label']}` | {s['median_s']:.2f} | {s['min_s']:.2f} | {s['max_s']:.2f} | {s['cpu_median_s']:.2f} | "
            f"{s['peak_mb']:.0f} | {s['balance']:.4f} | {s['min_shard_bytes'] / lst['mean_shard_bytes']:.3f} |"
        )
    lines.append("")
    for n, s in stats.items():
        if "shard_call_median_s" in s:
            lines.append(f"{n}: shard() itself {s['shard_call_median_s']:.2f} s, interpreter start and import "
                         f"{s['median_s'] - s['shard_call_median_s']:.2f} s (import {s['import_median_s']:.2f} s); "
                         f"code: {s['plan_file']}")
    lines.append(f"other processes used {result['other_cpu_total_s']:.1f} CPU-s during the timed runs; "
                 f"waited {result['quiet_wait_s']:.0f} s for a quiet machine")
    for key, g in result["goals"].items():
        lines.append(f"goal {key}: {g['value']:.3f} (≤ {g['max']}) {'met' if g['ok'] else 'MISSED'}")
    if result["missing"]:
        lines.append(f"not installed, left out: {', '.join(result['missing'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=1_000_000, help="entries in the list (1000000)")
    p.add_argument("--shards", type=int, default=64, help="shards (64)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, order alternating (3)")
    p.add_argument("--only", default="ours,ours-count,fpart,split", help="contenders (ours,ours-count,fpart,split)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the list (1)")
    p.add_argument("--folder-median", type=float, default=50.0, help="median files per folder (50)")
    p.add_argument("--scale-sigma", type=float, default=1.5, help="lognormal sigma of the folder scales (1.5)")
    p.add_argument("--file-sigma", type=float, default=1.2, help="lognormal sigma of files around their folder (1.2)")
    p.add_argument("--dir", help="where the list and the shards go (default: the temp dir)")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="before each round wait up to this many seconds until the machine uses < 0.2 CPUs (120)")
    p.add_argument("--json", action="store_true", help="print machine-readable results only")
    args = p.parse_args(argv)
    args.only = set(args.only.split(","))
    if args.lines < 1 or args.shards < 1 or args.rounds < 1:
        p.error("--lines, --shards and --rounds must be >= 1")
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    from installed import compile_ours  # (bench/ is on sys.path: run as a script)

    compile_ours()
    sys.exit(main())
