"""A parallel copy from Python, as one would run it in Jupyter: ``start()``, poll, ``wait()``.

Runs on whatever datamover backend this machine offers (site dt* tools, Slurm, or local
processes when there is no Slurm); ``TAURUS_TOOLS_BACKEND=slurm python
examples/parallel_copy.py`` forces Slurm jobs, ``TAURUS_TOOLS_BACKEND=local`` local
processes.
"""

import filecmp
import os
import tempfile
import time
from pathlib import Path

from taurus_tools import Datamover, ParallelCopy


def make_demo_tree(root: Path) -> None:
    """A few hundred files of mixed sizes, awkward names, a link and an empty folder."""
    for run in range(4):
        folder = root / f"run {run}" / "frames"
        folder.mkdir(parents=True)
        for i in range(50):
            (folder / f"frame-{i:03d}.dat").write_bytes(os.urandom(256 * (i % 7) + 17 * run))
        (root / f"run {run}" / "summary ü.txt").write_text(f"run {run}: 50 frames\n")
    (root / "big.bin").write_bytes(os.urandom(8 << 20))
    (root / "empty folder").mkdir()
    os.symlink("run 0/summary ü.txt", root / "latest summary")


def same_tree(a: Path, b: Path) -> bool:
    """Same names, same bytes, same link targets, all the way down."""
    for dirpath, dirnames, filenames in os.walk(a):
        other = b / Path(dirpath).relative_to(a)
        if sorted(os.listdir(dirpath)) != sorted(os.listdir(other)):
            return False
        for name in filenames + dirnames:
            x, y = Path(dirpath, name), other / name
            if x.is_symlink() or y.is_symlink():
                if not (x.is_symlink() and y.is_symlink() and os.readlink(x) == os.readlink(y)):
                    return False
            elif x.is_file() and not filecmp.cmp(x, y, shallow=False):
                return False
    return True


def main() -> None:
    dm = Datamover()
    print("backend:", dm.backend)

    with tempfile.TemporaryDirectory(dir=Path.home(), prefix="taurus-pcopy-") as tmp:
        src = Path(tmp, "results")
        dst = Path(tmp, "archive", "results")
        make_demo_tree(src)

        # start() returns at once; the copy runs in a background thread (the notebook
        # stays usable).  work_dir holds the listing, shards and state of the copy
        # (default: ~/.cache/taurus-tools/copies/...); progress=False because this script
        # prints its own progress (leave it on in a notebook for a progress bar).
        pc = ParallelCopy(
            src, dst, workers=4, datamover=dm, progress=False, work_dir=Path(tmp, "state")
        ).start()
        while not pc.done():
            arrived = sum(len(files) for _, _, files in os.walk(dst)) if dst.exists() else 0
            print(f"copying ... {arrived} entries at the destination so far")
            time.sleep(0.2)

        result = pc.wait()  # the CopyResult (or the copy's exception)
        print(result.summary())
        print("report:", result.report)
        assert result.ok, result.failed_messages
        assert result.files_copied == result.files_planned == 4 * 51 + 2
        assert same_tree(src, dst)
        print("identical: yes")
    print("parallel copy example finished")


if __name__ == "__main__":
    main()
