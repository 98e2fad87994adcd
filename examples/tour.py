"""The README tour as a script: list, copy and remove with a Datamover.

Runs on whatever backend this machine offers (site dt* tools, Slurm, or local);
``TAURUS_TOOLS_BACKEND=local python examples/tour.py`` forces one.
"""

import tempfile
import time
from pathlib import Path

from taurus_tools import Datamover, waitfor


def main() -> None:
    dm = Datamover()
    print("backend:", dm.backend)

    with tempfile.TemporaryDirectory(dir=Path.home(), prefix="taurus-tour-") as tmp:
        data = Path(tmp, "data", "test")
        data.mkdir(parents=True)
        for i in range(3):
            (data / f"image {i}.tif").write_bytes(b"\0" * 1024 * (i + 1))
        project = Path(tmp, "project")
        project.mkdir()

        # Every command starts in the background and returns a handle at once.
        proc = dm.dtls("-lh", data)
        while proc.poll() is None:  # None while it runs, then the exit code
            time.sleep(0.05)
        out, err = proc.communicate()
        print(out)

        # waitfor waits, prints errors as they come, and returns the exit code.
        assert waitfor(dm.dtcp("-r", data, project)) == 0
        copied = sorted(p.name for p in (project / "test").iterdir())
        print("copied:", copied)
        assert copied == ["image 0.tif", "image 1.tif", "image 2.tif"]

        # Several commands at once: one waitfor, one exit code each.
        handles = [dm.dtls(project / "test" / name) for name in copied]
        print("exit codes:", waitfor(handles))

        assert waitfor(dm.dtrm("-r", project / "test")) == 0
        assert not (project / "test").exists()

        # A failure is an exit code, or an exception with check=True.
        assert waitfor(dm.dtls(project / "missing"), progress=False) != 0
        print("tour finished")


if __name__ == "__main__":
    main()
