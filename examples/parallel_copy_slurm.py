"""A parallel copy through Slurm: one ``srun`` job per shard on the data-mover partition.

Needs a working Slurm (``sinfo`` answers).  Shards go to the ``datamover`` partition
(or the default partition, with a warning, where there is none), at most ``workers``
jobs at a time.  Prints each shard's result from the copy's report, ``result_all.json``.
"""

import json
import os
import tempfile
from pathlib import Path

from taurus_tools import Datamover, ParallelCopy


def make_demo_tree(root: Path) -> None:
    """Eight larger files and many small ones, in folders with awkward names."""
    for i in range(8):
        (root / "raw data").mkdir(parents=True, exist_ok=True)
        (root / "raw data" / f"stack {i}.h5").write_bytes(os.urandom((i + 1) << 20))
    for j in range(4):
        folder = root / "logs" / f"node-{j}"
        folder.mkdir(parents=True)
        for k in range(40):
            (folder / f"step {k}.log").write_text(f"node {j} step {k}\n" * (k + 1))


def most_at_once(chunks: list) -> int:
    """How many shards overlapped in time at most, from their start and end times."""
    starts = [(c["start_time_ms"], 1) for c in chunks]
    ends = [(c["end_time_ms"], -1) for c in chunks]  # at a tie, an end sorts before a start
    events = sorted(starts + ends)
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def main() -> None:
    dm = Datamover("slurm", time="00:30:00")
    print("backend:", dm.backend)

    with tempfile.TemporaryDirectory(dir=Path.home(), prefix="taurus-pcopy-slurm-") as tmp:
        src = Path(tmp, "experiment")
        dst = Path(tmp, "project", "experiment")
        make_demo_tree(src)

        result = ParallelCopy(
            src,
            dst,
            datamover=dm,
            workers=8,  # at most 8 Slurm jobs at a time
            shards=16,  # default: one per worker
            verify="checksum",  # each job hashes what it wrote
            progress=False,
            work_dir=Path(tmp, "copy-state"),  # default: ~/.cache/taurus-tools/copies/...
        ).run()
        print(result.summary())
        assert result.ok, result.failed_messages

        report = json.loads(result.report.read_text())
        chunks = sorted(report["benchmark_results"], key=lambda c: c["chunk_number"])
        print(f"report: {result.report} (backend {report['backend']}, {report['shards']} shards)")
        print(f"{'shard':>5} {'files':>6} {'bytes':>10} {'ms':>6} {'Mbit/s':>8} {'exit':>4}")
        for c in chunks:
            files, size = c["total_number_of_files"], c["total_bytes_transferred"]
            print(
                f"{c['chunk_number']:>5} {files:>6} {size:>10} "
                f"{c['duration_ms']:>6} {c['average_mbps']:>8.1f} {c['exit_code']:>4}"
            )
        print(f"shard jobs: {len(chunks)}, at most {most_at_once(chunks)} at once")
        assert report["backend"] == "slurm" and len(chunks) == 16
        assert sum(c["total_bytes_transferred"] for c in chunks) == result.bytes_planned
    print("parallel copy through Slurm finished")


if __name__ == "__main__":
    main()
