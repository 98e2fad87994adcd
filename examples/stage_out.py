"""Write results where only the datamover may write: ``stage_out`` (and ``stage_in``).

Jobs on ZIH-style clusters cannot write ``/projects``; they write to a scratch workspace and
the datamover copies the result over.  ``stage_out`` is that one ``with`` block.  Here the
"project" folder is a temporary folder in your home.  Runs on whatever datamover backend this
machine offers; ``TAURUS_TOOLS_BACKEND=slurm python examples/stage_out.py`` copies with
Slurm jobs, ``TAURUS_TOOLS_BACKEND=local`` with plain ``cp``.
"""

import tempfile
from pathlib import Path

from taurus_tools import Datamover, StageError, Workspace, stage_in, stage_out, waitfor


def main() -> None:
    dm = Datamover(time="00:10:00")
    ws = Workspace()
    print("backend:", dm.backend)
    print("workspace backend:", ws.backend)

    with tempfile.TemporaryDirectory(dir=Path.home(), prefix="taurus-stage-") as tmp:
        project = Path(tmp, "project")  # stands for /projects/p_yourgroup
        project.mkdir()

        # A folder of results: written in scratch, copied (and verified) when the block ends.
        target = project / "run 1"
        with stage_out(target, datamover=dm, workspace=ws, timeout=600) as out:
            print("writing to:", out)
            out.mkdir()
            for i in range(3):
                lines = "".join(f"{j},{j * i}\n" for j in range(100))
                (out / f"table {i}.csv").write_text("x,y\n" + lines)
            (out / "plots").mkdir()
            (out / "plots" / "fig.svg").write_text("<svg/>\n")
        arrived = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
        print("arrived:", arrived)
        assert arrived == ["plots", "plots/fig.svg", "table 0.csv", "table 1.csv", "table 2.csv"]
        assert not out.exists()  # the scratch workspace was released

        # A single file works the same way.
        with stage_out(project / "summary.txt", datamover=dm, workspace=ws, timeout=600) as out:
            out.write_text("3 tables, 1 plot\n")
        assert (project / "summary.txt").read_text() == "3 tables, 1 plot\n"

        # If the block raises, nothing is copied.
        try:
            with stage_out(project / "broken.txt", datamover=dm, workspace=ws) as out:
                out.write_text("half a result")
                raise RuntimeError("the analysis failed")
        except RuntimeError as exc:
            print("block raised:", exc)
        assert not (project / "broken.txt").exists()

        # If the copy fails, the data is kept and StageError says where; copy it yourself
        # later and release the workspace that holds it.
        late = project / "later" / "result.txt"  # its folder does not exist yet
        try:
            with stage_out(late, datamover=dm, workspace=ws, timeout=600, progress=False) as out:
                out.write_text("worth keeping\n")
        except StageError as exc:
            print("copy failed; data kept at:", exc.staged)
            late.parent.mkdir()
            assert waitfor(dm.dtcp(exc.staged, late), timeout=600) == 0
            holder = next(w for w in ws.list() if w.path == Path(exc.staged).parent)
            ws.release(holder.id)
        else:
            raise AssertionError("the copy should have failed")
        assert late.read_text() == "worth keeping\n"

        # The reverse: read through a scratch copy, released after the block.
        with stage_in(project / "run 1", datamover=dm, workspace=ws, timeout=600) as local:
            print("reading a copy at:", local)
            rows = sum(len(f.read_text().splitlines()) - 1 for f in local.glob("*.csv"))
        print("rows read:", rows)
        assert rows == 300
    print("stage_out finished")


if __name__ == "__main__":
    main()
