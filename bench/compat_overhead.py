"""taurus_datamover 0.4.0 against taurus_tools.compat on the same code: ``waitfor(dm.dtls(p))``.

Both get one folder of site-style ``dt*`` stubs (``dtls`` runs ``ls`` on this machine; a
trailing ``--blocking`` is dropped), so only the wrappers differ.  Rounds alternate between
the two (and the modern API), each round timing ``--calls`` calls in one process; medians
and ratios are printed.  Run by hand (needs ``pip install taurus-datamover==0.4.0`` for
the peer); never a CI test.

    python bench/compat_overhead.py --rounds 7 --calls 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path


PROGRAMS = {
    "taurus_datamover 0.4.0": """
        from taurus_datamover import Datamover, waitfor
        dm = Datamover(path_to_exe=TOOLS)
        run = lambda: waitfor(dm.dtls("-1", TARGET))
    """,
    "taurus_tools.compat": """
        from taurus_tools.compat import Datamover, waitfor
        dm = Datamover(path_to_exe=TOOLS)
        run = lambda: waitfor(dm.dtls("-1", TARGET))
    """,
    "taurus_tools (modern)": """
        from taurus_tools import Datamover, waitfor
        dm = Datamover("site", tools_dir=TOOLS)
        run = lambda: waitfor(dm.dtls("-1", TARGET), progress=False)
    """,
}

TIMER = """
import sys, time
TOOLS, TARGET, CALLS = sys.argv[1], sys.argv[2], int(sys.argv[3])
{setup}
run()  # warm-up: imports, first process
start = time.perf_counter()
for _ in range(CALLS):
    assert run() == 0
print((time.perf_counter() - start) / CALLS)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=20)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tools = Path(tmp) / "bin"
        tools.mkdir()
        stub = tools / "dtls"
        # dtls: drop a trailing --blocking (0.4.0 and compat append it), then run ls
        stub.write_text(
            '#!/bin/bash\nargs=("$@")\n[[ ${args[-1]} == --blocking ]] && unset "args[-1]"\nexec ls "${args[@]}"\n'
        )
        stub.chmod(0o755)
        target = Path(tmp) / "data"
        target.mkdir()
        for i in range(100):
            (target / f"f{i}").write_text("x")
        times = {name: [] for name in PROGRAMS}
        env = {**os.environ, "TAURUS_TOOLS_BACKEND": ""}
        for _ in range(opts.rounds):
            for name, setup in PROGRAMS.items():
                code = TIMER.format(setup=textwrap.dedent(setup))
                out = subprocess.run(
                    [sys.executable, "-c", code, str(tools), str(target), str(opts.calls)],
                    capture_output=True, text=True, env=env, check=True,
                ).stdout
                times[name].append(float(out))
        base = statistics.median(times["taurus_tools.compat"])
        print(f"waitfor(dm.dtls(p)), {opts.calls} calls per round, {opts.rounds} rounds, median per call:")
        print("| code | median ms/call | ratio to compat |")
        print("|---|---|---|")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"| {name} | {med * 1000:.1f} | {med / base:.2f} x |")


if __name__ == "__main__":
    from installed import compile_ours  # (bench/ is on sys.path: run as a script)

    compile_ours()
    main()
