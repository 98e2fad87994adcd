#!/usr/bin/env python3
"""ParallelCopy against cp -r, rsync -a, fpsync and rclone on a generated tree (run by hand, not in CI).

Requirement (issue "ParallelCopy", Performance): a generated tree of 20,000 small files with
heavy-tailed sizes plus 8 x 64 MiB files, on /dev/shm and on disk; ParallelCopy (local
backend, verify="size") against ``cp -r``, ``rsync -a``, ``fpsync -n 4`` and
``rclone copy --transfers 8``, in one run, alternating, median of >= 5 rounds.
Goal: ParallelCopy <= 1.15 x cp -r and <= 0.8 x the fastest of rsync, fpsync and rclone.

The tree (seeded, so every run copies the same bytes):

* ``--files`` small files (20,000) in nested folders (1 to 4 levels, fan-out 6), sizes
  lognormal with median ``--median-kib`` (4 KiB) and sigma ``--sigma`` (1.7), capped at
  ``--cap-mib`` (8 MiB); about 1 % are empty.  With the defaults: about 330 MiB, the
  largest few files 2 to 4 MiB.
* ``--big`` files (8) of ``--big-mib`` (64 MiB) each in ``big/``.

Contenders (each copies the contents of SRC into an empty, existing DST):

  cp        cp -r SRC/. DST
  rsync     rsync -a SRC/ DST/
  fpsync    fpsync -n 4 -t SCRATCH SRC/ DST/          (default rsync options, -lptgoD -v --numeric-ids)
  rclone    rclone copy --transfers 8 SRC DST
  pc-wN     ParallelCopy(SRC, DST, workers=N, datamover=Datamover("local"), verify="size",
            progress=False, work_dir=<fresh>).run()   in this process, for N in --workers
            (pc-wN-sS: the same with shards=S, from --workers N:S;
            pc-default: no workers or shards given, from --workers default;
            pc-atomic: the defaults with atomic=True, from --atomic)
  pc-cli    taurus-tools copy SRC DST --backend local --work-dir <fresh>, the command line with
            its defaults, stdout to /dev/null and stderr to a pipe (as in a script or a job)
  pc-cli-tty  the same with stderr on a pseudo-terminal, so the progress bar is drawn
  pc-cli@L, pc-cli-tty@L  the same with another installation's taurus-tools, from
            --other-cli L=PATH (e.g. an older release, for a before/after in one run)

One round runs every contender once; the order is reversed from one round to the next.
Every copy goes to a new, empty DST (and ParallelCopy gets a new work dir); ``sync`` runs
before it, outside the timing; ``--drop-caches`` also empties the page cache (root only),
so the source is read cold.  The time is the wall time of the copy alone (the kernel may
still be writing dirty pages back when it ends).  After each copy the script checks that
DST holds every file with the right size.  The copies are deleted, untimed, after each
copy (``--cleanup copy``, the default on tmpfs), after each round, or at the end (the
default elsewhere); see docs/BENCHMARKS.md for why this matters on a VM.

    python bench/copy_tree.py --base /dev/shm
    python bench/copy_tree.py --base /var/tmp --rounds 5
    python bench/copy_tree.py --base /dev/shm --json > shm.json
    python bench/copy_tree.py --base /dev/shm --only cp,pc-w2 --rounds 3 --keep

Only the standard library and taurus_tools are used.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import json
import math
import os
import platform
import pty
import random
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from typing import Callable, Dict, List, Optional, Tuple

from taurus_tools import CopyConfig, Datamover, ParallelCopy, __version__

#: The issue's goals: ParallelCopy / cp -r and ParallelCopy / fastest(rsync, fpsync, rclone).
GOAL_CP = 1.15
GOAL_PEERS = 0.8
#: Issue 13's goal for the command line: taurus-tools copy / cp -r.
GOAL_CLI = 1.0
CLI_CONTENDERS = ("pc-cli", "pc-cli-tty")
PEERS = ("rsync", "fpsync", "rclone")
MANIFEST = "tt-bench-manifest.json"


# ---------------------------------------------------------------------------- the tree
def plan_tree(files: int, median_kib: float, sigma: float, cap_mib: float, seed: int) -> List[Tuple[str, int]]:
    """(relative path, size) of the small files, seeded."""
    rng = random.Random(seed)
    mu = math.log(median_kib * 1024)
    cap = int(cap_mib * 2**20)
    out = []
    for i in range(files):
        depth = rng.randint(1, 4)
        folder = "/".join(f"d{rng.randrange(6)}" for _ in range(depth))
        size = 0 if rng.random() < 0.01 else min(cap, int(rng.lognormvariate(mu, sigma)))
        out.append((f"{folder}/f{i:05d}.dat", size))
    return out


def make_tree(src: str, params: Dict[str, object], quiet: bool) -> Dict[str, int]:
    """Write the tree under ``src`` (reused when a tree with the same parameters is there)."""
    manifest = os.path.join(src, MANIFEST)
    try:
        with open(manifest) as fh:
            old = json.load(fh)
        if old.get("params") == params:
            return old["totals"]
    except (OSError, ValueError):
        pass
    if os.path.exists(src):
        shutil.rmtree(src)
    t0 = time.perf_counter()
    rng = random.Random(params["seed"])
    block = rng.randbytes(8 << 20)  # sliced at random offsets: contents differ from file to file
    small = plan_tree(params["files"], params["median_kib"], params["sigma"], params["cap_mib"], params["seed"])
    made = set()
    total = 0
    for rel, size in small:
        folder = os.path.join(src, os.path.dirname(rel))
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        with open(os.path.join(src, rel), "wb") as fh:
            off = rng.randrange(len(block))
            left = size
            while left:
                piece = block[off : off + left]
                fh.write(piece)
                left -= len(piece)
                off = 0
        total += size
    os.makedirs(os.path.join(src, "big"), exist_ok=True)
    big_size = int(params["big_mib"] * 2**20)
    for i in range(params["big"]):
        with open(os.path.join(src, "big", f"big{i}.bin"), "wb") as fh:
            fh.write(i.to_bytes(8, "little"))
            left = big_size - 8
            while left:
                piece = block[: min(left, len(block))]
                fh.write(piece)
                left -= len(piece)
        total += big_size
    totals = {
        "files": len(small) + params["big"],
        "bytes": total,
        "dirs": len(made) + 1,
        "largest_small": max((s for _, s in small), default=0),
        "median_small": int(statistics.median(s for _, s in small)) if small else 0,
    }
    with open(manifest, "w") as fh:  # not counted: it is copied, but checks skip it
        json.dump({"params": params, "totals": totals}, fh)
    os.sync()
    if not quiet:
        print(f"generated {src}: {totals['files']} files, {totals['bytes'] / 2**20:.0f} MiB "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return totals


def check_copy(dst: str, totals: Dict[str, int]) -> Optional[str]:
    """None when DST holds the tree's files and bytes (the manifest aside); else what is wrong."""
    files = size = parts = 0
    for folder, _dirs, names in os.walk(dst):
        for name in names:
            if name == MANIFEST and folder == dst:
                continue
            if name.startswith(".tt-part-"):
                parts += 1
            files += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    if files != totals["files"] or size != totals["bytes"] or parts:
        return f"dst has {files} files, {size} bytes, {parts} .tt-part-*; want {totals['files']}, {totals['bytes']}"
    return None


# ---------------------------------------------------------------------------- contenders
def command_contenders(src: str, dst: str, scratch: str) -> Dict[str, List[str]]:
    return {
        "cp": ["cp", "-r", f"{src}/.", dst],
        "rsync": ["rsync", "-a", f"{src}/", f"{dst}/"],
        "fpsync": ["fpsync", "-n", "4", "-t", os.path.join(scratch, "fpsync"), f"{src}/", f"{dst}/"],
        "rclone": ["rclone", "copy", "--transfers", "8", "--config", os.devnull, src, dst],
    }


LABELS = {
    "cp": "cp -r SRC/. DST",
    "rsync": "rsync -a SRC/ DST/",
    "fpsync": "fpsync -n 4 SRC/ DST/",
    "rclone": "rclone copy --transfers 8 SRC DST",
}


def run_command(argv: List[str]) -> None:
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}")


def run_parallel_copy(
    src: str,
    dst: str,
    work_dir: str,
    workers: Optional[int],
    shards: Optional[int],
    atomic: bool,
    expected_files: int,
) -> None:
    options: Dict[str, object] = {} if shards is None else {"shards": shards}
    if workers is not None:
        options["workers"] = workers
    if atomic:
        options["atomic"] = True
    result = ParallelCopy(
        src, dst, datamover=Datamover("local"), verify="size", progress=False, work_dir=work_dir, **options
    ).run()
    if not result.ok or result.files_copied != expected_files:
        raise RuntimeError(f"ParallelCopy: {result.summary()}")


def cli_argv(src: str, dst: str, work_dir: str, exe: Optional[str] = None) -> List[str]:
    """``taurus-tools copy`` with its defaults: ``exe``, else the console script installed beside this Python."""
    exe = exe or shutil.which("taurus-tools", path=os.path.dirname(sys.executable)) or "taurus-tools"
    return [exe, "copy", src, dst, "--backend", "local", "--work-dir", work_dir]


def is_cli(name: str) -> bool:
    return name.split("@")[0] in CLI_CONTENDERS


def run_on_terminal(argv: List[str]) -> None:
    """Run ``argv`` with stderr on a 100-column pseudo-terminal (read here until it closes), stdout to /dev/null."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # else 0 columns: an empty bar
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=slave)
    finally:
        os.close(slave)
    tail = b""
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not data:
                break
            tail = (tail + data)[-2000:]
    finally:
        os.close(master)
    if proc.wait() != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {tail.decode(errors='replace')[-500:]}")


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")


def cpu_seconds() -> float:
    """CPU (user + system) of this process and its finished children so far."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def mount_of(base: str) -> Tuple[str, str, str, str]:
    """(device, mount point, type, options) of the file system holding ``base``."""
    found = ("?", "?", "?", "?")
    longest = -1
    real = os.path.realpath(base)
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                dev, mnt, kind, opts = line.split()[:4]
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= longest:  # the last of equal mount points is the visible one
                    found, longest = (dev, mnt, kind, opts), len(mnt)
    except OSError:
        pass
    return found


def fs_type(base: str) -> str:
    return mount_of(base)[2]


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes, /proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float, cores: float = 0.2, window: float = 2.0) -> float:
    """Wait (up to ``max_wait`` s) until other processes use less than ``cores`` CPUs; return the wait."""
    t0 = time.monotonic()
    while True:
        b0, c0 = busy_seconds(), cpu_seconds()
        time.sleep(window)
        foreign = (busy_seconds() - b0) - (cpu_seconds() - c0)
        waited = time.monotonic() - t0
        if foreign / window < cores or waited >= max_wait:
            return waited


def machine(base: str) -> Dict[str, str]:
    dev, mnt, kind, opts = mount_of(base)
    fs = f"{kind} ({dev} on {mnt}, {opts})"

    def version(argv: List[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0].strip()
        except (OSError, IndexError):
            return "missing"

    return {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "filesystem": fs,
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "taurus_tools": __version__,
        "cp": version(["cp", "--version"]),
        "rsync": version(["rsync", "--version"]),
        "fpsync": version(["fpsync", "-h"]),
        "rclone": version(["rclone", "version"]),
    }


# ---------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> Dict[str, object]:
    base = os.path.abspath(args.base)
    root = os.path.join(base, "tt-bench-copy")
    src = os.path.join(root, "src")
    os.makedirs(root, exist_ok=True)
    params = tree_params(args)
    totals = make_tree(src, params, quiet=args.json)
    # The copy workers run as "python -m taurus_tools.transfer.worker", which puts the current
    # folder first on sys.path: a checkout there must not shadow the taurus_tools under test.
    os.chdir(root)
    names = [n for n in ("cp", "rsync", "fpsync", "rclone") if shutil.which(n)]
    missing = [n for n in ("cp", "rsync", "fpsync", "rclone") if n not in names]
    labels = dict(LABELS)
    pc_config: Dict[str, Tuple[Optional[int], Optional[int], bool]] = {}
    for w, shards in args.workers:
        if w is None:  # the defaults
            name = "pc-default"
            used = CopyConfig().for_backend(Datamover("local").backend).workers
            labels[name] = f'ParallelCopy(verify="size"), the defaults (here workers={used})'
        else:
            name = f"pc-w{w}" if shards is None else f"pc-w{w}-s{shards}"
            labels[name] = f'ParallelCopy(workers={w}{"" if shards is None else f", shards={shards}"}, verify="size")'
        pc_config[name] = (w, shards, False)
        names.append(name)
    if args.atomic:
        used = CopyConfig().for_backend(Datamover("local").backend).workers
        labels["pc-atomic"] = f'ParallelCopy(verify="size", atomic=True), otherwise the defaults (workers={used})'
        pc_config["pc-atomic"] = (None, None, True)
        names.append("pc-atomic")
    labels["pc-cli"] = "taurus-tools copy SRC DST --backend local (defaults; stderr a pipe)"
    labels["pc-cli-tty"] = "taurus-tools copy SRC DST --backend local (defaults; stderr a terminal, bar drawn)"
    names += CLI_CONTENDERS
    for label, exe in args.other_cli:
        for kind in CLI_CONTENDERS:
            labels[f"{kind}@{label}"] = f"{labels[kind]}, {label}: {exe}"
            names.append(f"{kind}@{label}")
    if args.only:  # pc-cli also selects pc-cli@LABEL
        names = [n for n in names if n in args.only or n.split("@")[0] in args.only]

    tmpfs = fs_type(base) == "tmpfs"
    cleanup = args.cleanup or ("copy" if tmpfs else "end")
    settle = args.settle
    copies = {"copy": 1, "round": len(names), "end": len(names) * args.rounds}[cleanup] + args.warmup
    need = copies * totals["bytes"] * 1.05
    free = shutil.disk_usage(base).free
    if need > free:
        raise SystemExit(f"{base}: {free / 2**30:.1f} GiB free, the copies need {need / 2**30:.1f} GiB; "
                         "use --cleanup round (and --settle) or fewer --rounds")

    times: Dict[str, List[float]] = {n: [] for n in names}
    cpus: Dict[str, List[float]] = {n: [] for n in names}
    foreign: Dict[str, List[float]] = {n: [] for n in names}
    waited = 0.0
    made: List[str] = []
    counter = [0]

    def fresh(kind: str) -> str:
        counter[0] += 1
        path = os.path.join(root, f"{kind}-{counter[0]:03d}")
        made.append(path)
        return path

    def contender(name: str, dst: str) -> Callable[[], None]:
        if name in pc_config:
            work = os.path.join(args.work_base, f"tt-work-{counter[0]:03d}") if args.work_base else fresh("work")
            made.append(work)
            workers, shards, atomic = pc_config[name]
            # + 1: the manifest
            return lambda: run_parallel_copy(src, dst, work, workers, shards, atomic, totals["files"] + 1)
        if is_cli(name):
            work = os.path.join(args.work_base, f"tt-work-{counter[0]:03d}") if args.work_base else fresh("work")
            made.append(work)
            kind, _, label = name.partition("@")
            argv = cli_argv(src, dst, work, dict(args.other_cli).get(label))
            return (lambda: run_on_terminal(argv)) if kind == "pc-cli-tty" else (lambda: run_command(argv))
        argv = command_contenders(src, dst, fresh("scratch"))[name]
        return lambda: run_command(argv)

    def remove_copies() -> None:
        if made:
            subprocess.run(["rm", "-rf", *made], check=True)
            made.clear()
        os.sync()

    # untimed warm-up copies (page cache of the source, binaries, imports)
    for _ in range(args.warmup):
        dst = fresh("dst")
        os.makedirs(dst)
        contender(names[0], dst)()
        if cleanup == "copy":
            remove_copies()
    for r in range(args.rounds):
        if args.quiet_wait > 0:
            waited += wait_quiet(args.quiet_wait)
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            dst = fresh("dst")
            os.makedirs(dst)
            fn = contender(name, dst)
            os.sync()
            if args.drop_caches:
                drop_caches()
            b0, c0 = busy_seconds(), cpu_seconds()
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
            own = cpu_seconds() - c0
            cpus[name].append(own)
            foreign[name].append(max(0.0, busy_seconds() - b0 - own))
            times[name].append(elapsed)
            problem = check_copy(dst, totals)
            if problem:
                raise RuntimeError(f"{name}: {problem}")
            if cleanup == "copy":
                remove_copies()
                time.sleep(settle)
        if not args.json:
            done = ", ".join(f"{n}={times[n][-1]:.2f}" for n in names)
            print(f"round {r + 1}/{args.rounds}: {done} s", file=sys.stderr, flush=True)
        if cleanup == "round" and r + 1 < args.rounds:
            remove_copies()
            time.sleep(settle)
    remove_copies()
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)

    stats: Dict[str, Dict[str, object]] = {}
    for n in names:
        med = statistics.median(times[n])
        stats[n] = {
            "label": labels[n],
            "median_s": med,
            "min_s": min(times[n]),
            "max_s": max(times[n]),
            "cpu_median_s": statistics.median(cpus[n]),
            "other_cpu_max_s": max(foreign[n]),
            "other_cpu_s": foreign[n],
            "mb_per_s": totals["bytes"] / 1e6 / med,
            "files_per_s": totals["files"] / med,
            "rounds_s": times[n],
        }
    peers = [n for n in PEERS if n in stats]
    fastest_peer = min(peers, key=lambda n: stats[n]["median_s"]) if peers else None
    for n in names:
        if "cp" in stats:
            stats[n]["vs_cp"] = stats[n]["median_s"] / stats["cp"]["median_s"]
        if fastest_peer:
            stats[n]["vs_fastest_peer"] = stats[n]["median_s"] / stats[fastest_peer]["median_s"]
    pcs = [n for n in names if n in pc_config]
    best_pc = min(pcs, key=lambda n: stats[n]["median_s"]) if pcs else None
    goals = {}
    for n in pcs + [n for n in names if is_cli(n)]:
        s = stats[n]
        cp_max = GOAL_CLI if is_cli(n) else GOAL_CP
        goals[n] = {
            "vs_cp": s.get("vs_cp"), "cp_max": cp_max, "cp_ok": s.get("vs_cp", math.inf) <= cp_max,
            "vs_fastest_peer": s.get("vs_fastest_peer"),
            "peer_ok": s.get("vs_fastest_peer", math.inf) <= GOAL_PEERS,
        }
    return {
        "date": _dt.date.today().isoformat(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "base": base,
        "rounds": args.rounds,
        "drop_caches": args.drop_caches,
        "cleanup": cleanup,
        "settle_s": settle,
        "warmup": args.warmup,
        "quiet_wait_s": waited,
        "other_cpu_total_s": sum(sum(v) for v in foreign.values()),
        "tree": {"params": params, **totals},
        "machine": machine(base),
        "taurus_tools_path": os.path.dirname(sys.modules["taurus_tools"].__file__),
        "missing": missing,
        "contenders": stats,
        "fastest_peer": fastest_peer,
        "best_parallel_copy": best_pc,
        "goals": {"cp_max": GOAL_CP, "peer_max": GOAL_PEERS, "by_contender": goals},
    }


def markdown(result: Dict[str, object]) -> str:
    m = result["machine"]
    t = result["tree"]
    stats = result["contenders"]
    lines = [
        f"{result['date']}: `{result['command']}`",
        f"tree: {t['files']} files ({t['params']['files']} small, median {t['median_small']} B, largest "
        f"{t['largest_small'] / 2**20:.1f} MiB; {t['params']['big']} x {t['params']['big_mib']} MiB), "
        f"{t['bytes'] / 2**20:.0f} MiB, {t['dirs']} folders, on {m['filesystem']}",
        f"{result['rounds']} rounds, order alternating, {result['warmup']} warm-up copies, copies deleted "
        f"{ {'copy': 'after each copy', 'round': 'after each round', 'end': 'at the end'}[result['cleanup']] } "
        f"(settle {result['settle_s']:.0f} s), drop caches: {result['drop_caches']}; "
        f"machine: nproc {m['nproc']}, Python {m['python']}, kernel {m['kernel']}, load {m['loadavg']}; "
        f"taurus_tools {m['taurus_tools']} from {result['taurus_tools_path']}",
        "",
        "| contender | median s | min s | max s | CPU s | MB/s | × cp -r | × fastest peer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, s in stats.items():
        vs_cp = f"{s['vs_cp']:.2f}" if "vs_cp" in s else "–"
        vs_peer = f"{s['vs_fastest_peer']:.2f}" if "vs_fastest_peer" in s else "–"
        lines.append(
            f"| `{s['label']}` | {s['median_s']:.2f} | {s['min_s']:.2f} | {s['max_s']:.2f} | "
            f"{s['cpu_median_s']:.2f} | {s['mb_per_s']:.0f} | {vs_cp} | {vs_peer} |"
        )
    lines.append("")
    lines.append(f"other processes used {result['other_cpu_total_s']:.1f} CPU-s during the timed copies "
                 f"(most in one copy: {max(s['other_cpu_max_s'] for s in stats.values()):.2f} s); "
                 f"waited {result['quiet_wait_s']:.0f} s for a quiet machine")
    lines.append(f"fastest peer: {result['fastest_peer']}; best ParallelCopy: {result['best_parallel_copy']}")
    g = result["goals"]
    for n, v in g["by_contender"].items():
        cp = "–" if v["vs_cp"] is None else f"{v['vs_cp']:.2f} ({'met' if v['cp_ok'] else 'MISSED'})"
        if v["vs_fastest_peer"] is None:
            peer = "–"
        else:
            peer = f"{v['vs_fastest_peer']:.2f} ({'met' if v['peer_ok'] else 'MISSED'})"
        lines.append(f"{n}: × cp -r {cp}, goal ≤ {v['cp_max']}; × fastest peer {peer}, goal ≤ {g['peer_max']}")
    if result["missing"]:
        lines.append(f"not installed, left out: {', '.join(result['missing'])}")
    return "\n".join(lines)


def add_tree_options(p: argparse.ArgumentParser) -> None:
    """The options that shape the generated tree (shared with bench/slurm_fanout.py)."""
    p.add_argument("--files", type=int, default=20000, help="small files (20000)")
    p.add_argument("--median-kib", type=float, default=4.0, help="median small file size (4 KiB)")
    p.add_argument("--sigma", type=float, default=1.7, help="lognormal sigma of the small sizes (1.7)")
    p.add_argument("--cap-mib", type=float, default=8.0, help="largest small file (8 MiB)")
    p.add_argument("--big", type=int, default=8, help="big files (8)")
    p.add_argument("--big-mib", type=float, default=64.0, help="size of each big file (64 MiB)")
    p.add_argument("--seed", type=int, default=4, help="random seed of the tree (4)")


def tree_params(args: argparse.Namespace) -> Dict[str, object]:
    """The tree's parameters for :func:`make_tree`, from the options of :func:`add_tree_options`."""
    return {
        "files": args.files, "median_kib": args.median_kib, "sigma": args.sigma, "cap_mib": args.cap_mib,
        "big": args.big, "big_mib": args.big_mib, "seed": args.seed,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=tempfile.gettempdir(),
                   help="where the tree and the copies go (e.g. /dev/shm, /var/tmp); default %(default)s")
    p.add_argument("--rounds", type=int, default=5, help="rounds, order alternating (5)")
    p.add_argument("--workers", default="default,2,8",
                   help="ParallelCopy worker counts to try, W or W:SHARDS, or 'default' for no options "
                        "(default: default,2,8; shards default to workers)")
    p.add_argument("--atomic", action="store_true", help="also ParallelCopy(atomic=True) with the defaults")
    p.add_argument("--only", help="comma-separated contenders to run (cp,rsync,fpsync,rclone,pc-w2,pc-cli,"
                                  "pc-cli-tty,...)")
    p.add_argument("--other-cli", action="append", default=[], metavar="LABEL=PATH",
                   help="also time this taurus-tools executable through the command line, as pc-cli@LABEL and "
                        "pc-cli-tty@LABEL (repeatable)")
    add_tree_options(p)
    p.add_argument("--work-base", help="where ParallelCopy's fresh work dirs go (default: under --base)")
    p.add_argument("--cleanup", choices=("copy", "round", "end"),
                   help="when the copies are deleted (untimed): after each copy (default on tmpfs), after each "
                        "round, or at the end (default elsewhere: on an ext4 without journal, deleting makes "
                        "the next file creations slower for a while, see docs/BENCHMARKS.md)")
    p.add_argument("--settle", type=float, default=0.0,
                   help="seconds to wait after each deletion (0)")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="before each round wait up to this many seconds until other processes use < 0.2 CPUs "
                        "(120; 0: don't wait)")
    p.add_argument("--drop-caches", action="store_true", help="drop the page cache before each copy (root)")
    p.add_argument("--warmup", type=int, default=1, help="untimed copies by the first contender first (1)")
    p.add_argument("--keep", action="store_true", help="keep the generated tree for the next run")
    p.add_argument("--json", action="store_true", help="print machine-readable results only")
    args = p.parse_args(argv)
    try:
        args.workers = [
            (None, None) if w == "default" else (int(w.split(":")[0]), int(w.split(":")[1]) if ":" in w else None)
            for w in args.workers.split(",")
            if w
        ]
    except ValueError:
        p.error("--workers takes comma-separated W or W:SHARDS")
    args.only = set(args.only.split(",")) if args.only else None
    if any("=" not in item for item in args.other_cli):
        p.error("--other-cli takes LABEL=PATH")
    args.other_cli = [tuple(item.split("=", 1)) for item in args.other_cli]
    if args.rounds < 1 or any((w is not None and w < 1) or (s is not None and s < 1) for w, s in args.workers):
        p.error("--rounds and --workers must be >= 1")
    if not os.path.isdir(args.base):
        p.error(f"--base {args.base!r} is not a folder")
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    from installed import compile_ours  # (bench/ is on sys.path: run as a script)

    compile_ours()
    sys.exit(main())
