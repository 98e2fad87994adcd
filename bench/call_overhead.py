#!/usr/bin/env python3
"""Call overhead of taurus-tools against a bare ``subprocess.run`` (run by hand, not in CI).

Requirement (issue "foundation"): ``waitfor(dm.dtls(path))`` on the local backend against a
bare ``subprocess.run(["ls", path])``, 200 calls each, same run: ratio of medians <= 1.25.

Contenders, each timed as N sequential calls (default 200) per repeat:

  a  bare      subprocess.run(["ls", path], stdout=devnull, stderr=devnull)
  b  capture   subprocess.run(["ls", path], capture_output=True)
  c  waitfor   waitfor(dm.dtls(path))            with dm = Datamover("local")
  d  handle    dm.dtls(path).communicate()

The order of the contenders alternates from one repeat to the next (forward, reversed, ...)
so that drift of the machine (frequency scaling, caches, other load) does not favour one of
them.  Per contender the script reports the median over the repeats of the mean time per
call, plus the fastest and slowest repeat (machine noise), and the ratios of medians c/a,
c/b, d/a and d/b.

    python bench/call_overhead.py                 # markdown table
    python bench/call_overhead.py --json          # machine-readable
    python bench/call_overhead.py --calls 500 --repeats 11 --path /some/folder

Only the standard library and taurus_tools are used.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

from taurus_tools import Datamover, __version__, waitfor

#: The issue's limit for the ratio of medians c/a.
LIMIT = 1.25
#: Calls per contender before timing starts (process caches, imports, the dm's which()).
WARMUP_CALLS = 20
#: How many files the default temporary folder holds.
N_FILES = 20

LABELS: Dict[str, str] = {
    "a": 'subprocess.run(["ls", path]) -> /dev/null (bare)',
    "b": 'subprocess.run(["ls", path], capture_output=True)',
    "c": "waitfor(dm.dtls(path))",
    "d": "dm.dtls(path).communicate()",
}
RATIOS: Tuple[Tuple[str, str], ...] = (("c", "a"), ("c", "b"), ("d", "a"), ("d", "b"))


def make_contenders(path: str, devnull, dm: Datamover) -> Dict[str, Callable[[], None]]:
    argv = ["ls", path]

    def bare() -> None:
        subprocess.run(argv, stdout=devnull, stderr=devnull, check=True)

    def capture() -> None:
        subprocess.run(argv, capture_output=True, check=True)

    def with_waitfor() -> None:
        if waitfor(dm.dtls(path)) != 0:
            raise RuntimeError(f"dtls {path} failed")

    def with_communicate() -> None:
        h = dm.dtls(path)
        h.communicate()
        if h.returncode != 0:
            raise RuntimeError(f"dtls {path} failed")

    return {"a": bare, "b": capture, "c": with_waitfor, "d": with_communicate}


def time_calls(fn: Callable[[], None], calls: int) -> float:
    """Seconds per call: mean over ``calls`` sequential calls."""
    perf = time.perf_counter
    t0 = perf()
    for _ in range(calls):
        fn()
    return (perf() - t0) / calls


def machine() -> Dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "affinity": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "?",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "taurus_tools": __version__,
    }


def run(path: str, calls: int, repeats: int, progress: bool) -> Dict[str, object]:
    dm = Datamover("local")
    samples: Dict[str, List[float]] = {k: [] for k in LABELS}
    with open(os.devnull, "wb") as devnull:
        contenders = make_contenders(path, devnull, dm)
        for fn in contenders.values():  # warm-up
            for _ in range(WARMUP_CALLS):
                fn()
        order = list(contenders)
        for r in range(repeats):
            this_order = order if r % 2 == 0 else order[::-1]
            for key in this_order:
                samples[key].append(time_calls(contenders[key], calls))
            if progress:
                done = ", ".join(f"{k}={samples[k][-1] * 1e6:.0f}" for k in order)
                print(f"repeat {r + 1}/{repeats} ({''.join(this_order)}): {done} us/call",
                      file=sys.stderr, flush=True)

    stats = {}
    for key, values in samples.items():
        stats[key] = {
            "label": LABELS[key],
            "median_us": statistics.median(values) * 1e6,
            "min_us": min(values) * 1e6,
            "max_us": max(values) * 1e6,
            "spread_pct": (max(values) - min(values)) / statistics.median(values) * 100,
            "repeats_us": [v * 1e6 for v in values],
        }
    ratios = {f"{x}/{y}": stats[x]["median_us"] / stats[y]["median_us"] for x, y in RATIOS}
    return {
        "date": _dt.date.today().isoformat(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "calls": calls,
        "repeats": repeats,
        "path": path,
        "machine": machine(),
        "contenders": stats,
        "ratios": ratios,
        "limit": {"ratio": "c/a", "max": LIMIT, "ok": ratios["c/a"] <= LIMIT},
    }


def markdown(result: Dict[str, object]) -> str:
    stats = result["contenders"]
    m = result["machine"]
    lines = [
        f"{result['date']}: `{result['command']}`",
        f"{result['calls']} calls x {result['repeats']} repeats, path {result['path']}",
        f"machine: nproc {m['nproc']}, Python {m['python']}, kernel {m['kernel']}, "
        f"load {m['loadavg']}",
        "",
        "| | contender | median µs/call | min µs | max µs | spread |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, s in stats.items():
        lines.append(
            f"| {key} | `{s['label']}` | {s['median_us']:.0f} | {s['min_us']:.0f} | "
            f"{s['max_us']:.0f} | {s['spread_pct']:.0f} % |"
        )
    lines += ["", "| ratio of medians | value |", "|---|---:|"]
    for name, value in result["ratios"].items():
        lines.append(f"| {name} | {value:.3f} |")
    lim = result["limit"]
    verdict = "OK" if lim["ok"] else "EXCEEDED"
    lines += ["", f"requirement {lim['ratio']} <= {lim['max']}: {verdict}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="sequential calls per contender and repeat (200)")
    parser.add_argument("--repeats", type=int, default=7, help="repeats; contender order alternates (7)")
    parser.add_argument("--path", help=f"folder to list (default: a temporary folder with {N_FILES} files)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results only")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.repeats < 1:
        parser.error("--calls and --repeats must be >= 1")

    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        path = args.path
        if path is None:
            path = tmp
            for i in range(N_FILES):
                with open(os.path.join(tmp, f"file_{i:02d}.txt"), "w") as fh:
                    fh.write(f"file {i}\n")
        elif not os.path.isdir(path):
            parser.error(f"--path {path!r} is not a folder")
        result = run(path, args.calls, args.repeats, progress=not args.json)

    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    from installed import compile_ours  # (bench/ is on sys.path: run as a script)

    compile_ours()
    sys.exit(main())
