"""How ``workdir-a3c891b.*`` were made: a copy by release a3c891b, stopped half way (run by hand).

    git archive a3c891b taurus_tools | tar -x -C /tmp/engine-old
    PYTHONPATH=/tmp/engine-old python tests/data/capture_workdir_a3c891b.py /tmp/tt-a3c891b tests/data

It builds a small source (names with a space, a newline, non-ASCII and a byte that is not
UTF-8; a link; an empty folder), puts a folder at the destination where shard 1 has a file
(that entry fails for good: EISDIR), makes shard 2's process hang, and kills the driver
(SIGKILL) once shard 2 runs.  Left behind: shard 0 done, shard 1 failed, shard 2 "running"
(its process gone), shard 3 pending, as the old code wrote them.  The state goes to
``workdir-a3c891b.state.json`` (readable in review); the source, destination and the rest
of the work dir to ``workdir-a3c891b.tar.gz``.  ``tests/test_copy_state.py`` puts them back
under another root and resumes with the current code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

#: Whole seconds: a tar keeps them exactly.
MTIME = 1_600_000_000
#: name -> size; byte-balanced into 4 shards (largest first onto the lightest).
FILES = {
    b"big one": 800,
    b"sub/two\nlines": 700,
    b"sub/deep/x.bin": 600,
    "café".encode(): 500,
    b"a": 400,
    b"sub/\xff.bin": 300,
    b"c": 200,
    b"sub/deep/d": 100,
}

DRIVER = r"""
import sys
from taurus_tools import Datamover, ParallelCopy
from taurus_tools.process.handle import Launch

src, dst, work = sys.argv[1:4]
real = ParallelCopy._launch

def launch(self, dm, task):
    out = real(self, dm, task)
    if task.index == 2:  # hangs until the driver is killed
        return (Launch(("sleep", "600"), name=out[0].name),) + tuple(out[1:])
    return out

ParallelCopy._launch = launch
pc = ParallelCopy(src, dst, datamover=Datamover("local"), workers=1, shards=4, retries=0,
                  progress=False, work_dir=work)
pc.run()
"""


def build_source(src: Path) -> None:
    top = os.fsencode(src)
    for name, size in FILES.items():
        path = os.path.join(top, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(bytes(i % 251 for i in range(size)))
        os.utime(path, (MTIME, MTIME))
    os.makedirs(os.path.join(top, b"empty"))
    os.symlink(b"a", os.path.join(top, b"link to a"))


def main(root: Path, out: Path) -> None:
    import taurus_tools

    print("taurus_tools from", taurus_tools.__file__)
    shutil.rmtree(root, ignore_errors=True)
    src, dst, work = root / "src", root / "dst", root / "work"
    build_source(src)
    os.makedirs(os.fsencode(dst) + b"/sub/two\nlines/in the way")  # shard 1's file cannot go there
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(src), str(dst), str(work)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            state = json.loads((work / "state.json").read_text())
        except (OSError, ValueError):
            state = {}
        shards = state.get("shards") or []
        if len(shards) == 4 and shards[2]["state"] == "running":
            break
        time.sleep(0.05)
    else:
        raise SystemExit("shard 2 never ran")
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    os.kill(shards[2]["pid"], signal.SIGKILL)
    print(json.dumps([s["state"] for s in shards]))
    shutil.move(str(work / "state.json"), str(out / "workdir-a3c891b.state.json"))
    (work / ".lock").unlink()
    with tarfile.open(out / "workdir-a3c891b.tar.gz", "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for part in ("src", "dst", "work"):
            tar.add(str(root / part), arcname=part)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
