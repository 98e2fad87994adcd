"""A pipeline of background steps: stage in -> process -> stage out -> clean up.

Every step is started at once and runs when the steps it names in ``after=[...]`` have
succeeded; the clean-up says ``on="always"``, so it runs whatever happened before it.  If the
processing fails, the stage-out never runs (it fails with ``DependencyError``, whose
``__cause__`` is the processing step's ``CommandError``) and the scratch is cleaned all the
same.  Nothing here waits until the end.

    python examples/pipeline.py            # all steps succeed
    python examples/pipeline.py --fail     # the processing fails: no stage-out, clean-up runs

With ``TAURUS_TOOLS_BACKEND=slurm`` the processing runs as a Slurm job (``srun``) and so do the
copies; ``local`` runs them all on this machine.  The scratch folder is a workspace
(``ws_allocate``, or taurus-tools' local workspaces where the site has none).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import List, Optional

from taurus_tools import DependencyError, Datamover, ParallelCopy, Workspace, waitfor

#: The "analysis": counts the words of each input file; with "fail" it fails halfway.
PROCESS = r"""
import os, pathlib, sys
src, dst, mode = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
print("in Slurm job:", os.environ.get("SLURM_JOB_ID", "none"))
dst.mkdir()
for i, f in enumerate(sorted(src.glob("*.txt"))):
    if mode == "fail" and i == 2:
        sys.exit(f"analysis: cannot parse {f.name} (failing on purpose)")
    words = len(f.read_text().split())
    (dst / (f.stem + ".count")).write_text(f"{words}\n")
    print(f"{f.name}: {words} words")
"""


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fail", action="store_true", help="make the processing step fail")
    args = parser.parse_args(argv)

    dm = Datamover(time="00:10:00")
    ws = Workspace()
    print("backend:", dm.backend)
    with tempfile.TemporaryDirectory(dir=Path.home(), prefix="taurus-pipeline-") as tmp:
        inputs = Path(tmp, "inputs")  # stands for a project folder the job reads
        inputs.mkdir()
        for i in range(5):
            (inputs / f"sample {i}.txt").write_text("word " * (10 * (i + 1)) + "\n")
        results = Path(tmp, "project", "run 1")  # stands for /projects/p_yourgroup/run 1
        results.parent.mkdir()

        name = f"pipeline-{uuid.uuid4().hex[:8]}"
        scratch = ws.allocate(name, 1).path
        print("scratch:", scratch)
        try:
            # 1. stage in: a parallel copy into the scratch workspace
            staged = ParallelCopy(
                inputs, scratch / "in", datamover=dm, progress=False, work_dir=Path(tmp, "copy-in")
            ).start()
            # 2. process: a Slurm job (a local process on the local backend), after the stage-in
            mode = "fail" if args.fail else "ok"
            script = Path(tmp, "analyse.py")
            script.write_text(PROCESS)
            processed = dm.run(sys.executable, script, scratch / "in", scratch / "out", mode, after=[staged])
            # 3. stage out: only if the processing succeeded
            saved = dm.dtcp("-r", "--", scratch / "out", results, after=[processed])
            # 4. clean up the scratch, whatever happened
            cleaned = dm.dtrm("-rf", "--", scratch / "in", scratch / "out", after=[saved], on="always")
            print("steps started:", ", ".join(repr(h) for h in (processed, saved, cleaned)))

            waitfor(cleaned, timeout=600, progress=False)
            for label, step in (("stage in", staged), ("process", processed), ("stage out", saved),
                                ("clean up", cleaned)):
                error = step.exception()
                print(f"{label}: {'ok' if error is None else type(error).__name__}")
            print("processing job:", processed.job_id)
            print("processing output:", processed.communicate()[0].strip().replace("\n", "; "))
            if processed.exception() is not None:
                print("processing stderr:", processed.communicate()[1].strip())
                try:
                    saved.result()
                except DependencyError as exc:
                    cause = exc.__cause__
                    print(f"stage out not run; root cause: {type(cause).__name__}, exit code "
                          f"{getattr(cause, 'returncode', '?')}")
            else:
                counts = sorted(p.name for p in results.iterdir())
                print("results:", counts)
            print("scratch left:", sorted(os.listdir(scratch)))
        finally:
            ws.release(name)
        print("results exist:", results.exists())
    print("pipeline finished")
    return 1 if args.fail else 0


if __name__ == "__main__":
    sys.exit(main())
