"""Transfers as Slurm jobs: blocking (srun) and non-blocking (sbatch) copies, and srun.

Needs a working Slurm (``sinfo`` answers).  Without the site's dt* tools the slurm
backend runs ``cp`` on the ``datamover`` partition (or the default partition, with a
warning, where there is none).
"""

import tempfile
from pathlib import Path

from taurus_tools import Datamover, waitfor


def main() -> None:
    dm = Datamover("slurm", time="00:10:00")
    print("backend:", dm.backend)

    with tempfile.TemporaryDirectory(dir=Path.home(), prefix="taurus-slurm-") as tmp:
        src = Path(tmp, "results")
        src.mkdir()
        for i in range(4):
            (src / f"part {i}.csv").write_text(f"{i}\n" * 1000)
        dst = Path(tmp, "archive")
        dst.mkdir()

        # Blocking: srun stays attached; the handle knows the job once Slurm names it.
        first = dm.dtcp(src / "part 0.csv", dst)
        # Non-blocking: sbatch jobs that would outlive this script; the handles follow
        # them, and their exit codes are the jobs' own.
        rest = [dm.dtcp(src / f"part {i}.csv", dst, blocking=False) for i in (1, 2, 3)]
        codes = waitfor([first, *rest], timeout=300, check=True)
        print("exit codes:", codes, "jobs:", [h.job_id for h in rest])
        assert sorted(p.name for p in dst.iterdir()) == [f"part {i}.csv" for i in range(4)]

        # Any program through srun, e.g. where each task of a larger job would run.
        host = dm.srun("hostname", ntasks=1)
        waitfor(host, check=True)
        print("srun ran on:", host.communicate()[0].strip())


if __name__ == "__main__":
    main()
