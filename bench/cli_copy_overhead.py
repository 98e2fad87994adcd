#!/usr/bin/env python3
"""The fixed cost of ``taurus-tools copy``: a 30-file tree, copied again and again (run by hand, not in CI).

What a command-line copy pays that the in-process API does not: the interpreter's start and
exit, the imports, the parser, and the progress bar.  The tree is tiny (30 files of 20 kB),
so the copy itself hardly counts.  Each installation given with ``--cli LABEL=PATH`` (default:
the ``taurus-tools`` beside this Python) copies it with stderr to a pipe (as in a script or a
batch job) and on a 100-column pseudo-terminal (the bar is drawn), the runs taking turns;
the median wall time and CPU time (the command and its workers) are printed.

    python bench/cli_copy_overhead.py --rounds 20 --cli before=/old/venv/bin/taurus-tools \\
        --cli after=.venv/bin/taurus-tools
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from typing import Dict, List, Tuple


def make_tree(src: str) -> None:
    os.makedirs(os.path.join(src, "sub"))
    for i in range(30):
        with open(os.path.join(src, "sub", f"f{i:02d}"), "wb") as fh:
            fh.write(os.urandom(20000))


def run_on_terminal(argv: List[str]) -> int:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=slave)
    finally:
        os.close(slave)
    try:
        while True:
            try:
                if not os.read(master, 65536):
                    break
            except OSError:  # EIO: every writer has closed the terminal
                break
    finally:
        os.close(master)
    return proc.wait()


def one_copy(exe: str, base: str, terminal: bool) -> Tuple[float, float]:
    """Wall and CPU seconds of one ``taurus-tools copy`` of the tree into a new destination."""
    dst, work = os.path.join(base, "dst"), os.path.join(base, "work")
    for path in (dst, work):
        shutil.rmtree(path, ignore_errors=True)
    argv = [exe, "copy", os.path.join(base, "src"), dst, "--backend", "local", "--work-dir", work]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if terminal:
        rc = run_on_terminal(argv)
    else:
        rc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise SystemExit(f"{exe} exited {rc}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cli", action="append", default=[], metavar="LABEL=PATH", help="an installation's taurus-tools")
    ap.add_argument("--base", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
    opts = ap.parse_args()
    here = shutil.which("taurus-tools", path=os.path.dirname(sys.executable)) or "taurus-tools"
    clis = dict(item.split("=", 1) for item in opts.cli) if opts.cli else {"this": here}
    base = tempfile.mkdtemp(prefix="tt-cli-overhead-", dir=opts.base)
    try:
        make_tree(os.path.join(base, "src"))
        times: Dict[Tuple[str, bool], List[Tuple[float, float]]] = {}
        for _ in range(2):  # warm the page cache and the interpreters
            for exe in clis.values():
                one_copy(exe, base, False)
        for _ in range(opts.rounds):
            for label, exe in clis.items():
                for terminal in (False, True):
                    times.setdefault((label, terminal), []).append(one_copy(exe, base, terminal))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{opts.rounds} rounds, medians:")
    print("| taurus-tools | stderr | wall ms | CPU ms |")
    print("|---|---|---:|---:|")
    for (label, terminal), values in times.items():
        wall = statistics.median(w for w, _ in values) * 1000
        cpu = statistics.median(c for _, c in values) * 1000
        print(f"| {label} | {'terminal' if terminal else 'pipe'} | {wall:.0f} | {cpu:.0f} |")
    return 0


if __name__ == "__main__":
    from installed import compile_ours  # (bench/ is on sys.path: run as a script)

    compile_ours()
    sys.exit(main())
