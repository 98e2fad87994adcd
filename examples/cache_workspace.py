"""Temporary files of an analysis in a cache workspace of its own, released afterwards.

Uses the site's hpc-workspace tools (``ws_allocate``, ...) when installed, else taurus-tools'
local implementation (workspaces under ``$TAURUS_TOOLS_WS_ROOT``, default a per-user folder
in the system's temporary directory).  ``python examples/cache_workspace.py``
"""

import random
import statistics

from taurus_tools import CacheWorkspace, Workspace


def analyse_chunk(seed: int) -> list:
    rng = random.Random(seed)
    return [rng.gauss(10.0, 2.0) for _ in range(10_000)]


def main() -> None:
    ws = Workspace()
    print("workspace backend:", ws.backend, f"({ws.reason})")

    # A fresh workspace with a unique id (never a shared "cache"): two jobs running this
    # script at once each get their own, and neither releases the other's.
    with CacheWorkspace(days=1, workspace=ws) as cws:
        print("cache workspace:", cws.id)
        print("temporary files in:", cws.name)  # .name is the path as a str, .path a Path

        # Intermediate results: one file per chunk, too big to keep in memory in real life.
        for i in range(4):
            values = analyse_chunk(i)
            (cws.path / f"chunk-{i}.txt").write_text("\n".join(f"{v:.6f}" for v in values))
        files = sorted(cws.path.glob("chunk-*.txt"))
        print("intermediate files:", [f.name for f in files])

        merged = [float(x) for f in files for x in f.read_text().split()]
        print(f"mean of {len(merged)} values: {statistics.fmean(merged):.2f}")
        assert cws.id in [w.id for w in ws.list()]

    # The with block released it (also when the block raises).
    assert not cws.allocated
    assert cws.id not in [w.id for w in ws.list()]
    print("released:", cws.id, "is no longer listed")

    # Without a with block: cleanup() releases, and calling it twice is harmless.
    cws = CacheWorkspace(workspace=ws)
    try:
        (cws.path / "scratch.bin").write_bytes(b"\0" * 1024)
    finally:
        cws.cleanup()
        cws.cleanup()
    assert cws.id not in [w.id for w in ws.list()]
    print("cache workspace example finished")


if __name__ == "__main__":
    main()
