"""Start-up time of the ``taurus-tools`` command and of ``import taurus_tools``.

Each command is run as a whole process, the commands taking turns (A B C A B C ...), and
the median wall time of each is printed with its ratio to a bare ``python -c pass``.  Run
by hand, never in CI:

    python bench/startup.py --rounds 21
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=21)
    opts = ap.parse_args()
    cli = shutil.which("taurus-tools", path=os.path.dirname(sys.executable)) or "taurus-tools"
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "taurus-tools --version": [cli, "--version"],
        "python -c 'import taurus_tools'": [sys.executable, "-c", "import taurus_tools"],
        "python -c 'from taurus_tools import Datamover'": [sys.executable, "-c", "from taurus_tools import Datamover"],
    }
    times = {name: [] for name in commands}
    for _ in range(2):  # warm the page cache
        for argv in commands.values():
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    for _ in range(opts.rounds):
        for name, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    print(f"{opts.rounds} rounds, median wall time:")
    print("| command | median s | ratio to bare python |")
    print("|---|---|---|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| `{name}` | {med:.3f} | {med / base:.2f} x |")


if __name__ == "__main__":
    from installed import compile_ours  # (bench/ is on sys.path: run as a script)

    compile_ours()
    main()
