#!/usr/bin/env python3
"""Checkpoint passes against ``rclone copy`` (issue 16): 100,000 files, 100 changed, one pass.

Run by hand, never in CI.  A folder of ``--files`` small files (1 KiB, in 100 folders) is
saved once to the S3 test server (``rclone serve s3`` on 127.0.0.1, started here with the
test suite's server class) by both tools, untimed: a checkpoint to ``s3://BUCKET/ckpt`` and
``rclone copy`` to ``bench:BUCKET/rclone``.  Then, each round, ``--changed`` files are
rewritten (new content and time) and both tools bring their copy up to date, in turns (the
order alternating each round):

``ours``
    one pass of the running checkpointer (``Checkpoint.run_pass()``, the index in memory): what
    every interval of ``taurus-tools checkpoint`` costs;
``ours, restarted``
    a new ``Checkpoint`` (reads the newest manifest back from the bucket) and its first
    pass: what a restarted job's first pass costs;
``rclone``
    ``rclone copy DIR bench:BUCKET/rclone --transfers 16 --checkers 16 --fast-list
    --s3-no-check-bucket`` (``bench/s3_peers.py``'s command without ``--no-check-dest``:
    rclone must list the destination to skip the unchanged files), a process of its own.
    By default rclone compares size and modification time, and on S3 the time is metadata:
    one HEAD per object;
``rclone --checksum``
    the same with ``--checksum`` (size and MD5, both in the listing: no HEAD), on a change
    set of its own into the same prefix (the checkpoint then catches up, untimed).

Then the checkpointer's CPU while idle between passes (``every=1h``, ``--idle`` seconds of
``time.process_time()`` in this process, whose main thread sleeps meanwhile), and the CPU of
one pass that finds nothing new (the scan of ``--files`` files).  Credentials in the
environment only.

    .venv/bin/python bench/checkpoint.py --base /dev/shm/tt-ckpt-bench --rounds 5
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import s3_peers  # noqa: E402
from s3_copy import make_bucket, start_server  # noqa: E402


def make_folder(folder: Path, files: int) -> List[Path]:
    paths = [folder / f"d{i % 100:02d}" / f"f{i:07d}.dat" for i in range(files)]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1024))
    return paths


def rclone_copy(server, folder: Path, bucket: str, *extra: str) -> float:
    argv, env = s3_peers.rclone_command(server.endpoint_url, server.env(), str(folder), f"s3://{bucket}/rclone")
    argv = [a for a in argv if a != "--no-check-dest"] + list(extra)
    start = time.monotonic()
    subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="/dev/shm/tt-ckpt-bench")
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--changed", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--idle", type=float, default=30.0)
    args = p.parse_args()

    from taurus_tools import Checkpoint
    from taurus_tools.transfer.s3 import S3Config

    base = Path(args.base)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    server = start_server("rclone", base)
    try:
        os.environ.update(server.env())
        bucket = "tt-ckpt-bench"
        make_bucket(server.env(), server.endpoint_url, bucket)
        folder = base / "data"
        paths = make_folder(folder, args.files)
        config = S3Config(threads=args.threads)
        dest = f"s3://{bucket}/ckpt"

        def checkpoint() -> Checkpoint:
            return Checkpoint(folder, dest, every="1h", settle=0, s3=config).start()

        ck = checkpoint()
        start = time.monotonic()
        first = ck.run_pass()
        print(f"first pass (untimed setup): {first.sent} files in {time.monotonic() - start:.1f} s", flush=True)
        print(f"rclone's first copy (untimed setup): {rclone_copy(server, folder, bucket):.1f} s", flush=True)

        times: Dict[str, List[float]] = {"ours": [], "ours, restarted": [], "rclone": [], "rclone --checksum": []}
        rng = random.Random(16)
        for round_ in range(args.rounds):
            for path in rng.sample(paths, args.changed):
                path.write_bytes(os.urandom(1024))
            order = ["ours", "rclone"] if round_ % 2 == 0 else ["rclone", "ours"]
            for tool in order:
                if tool == "rclone":
                    times["rclone"].append(rclone_copy(server, folder, bucket))
                    continue
                start = time.monotonic()
                report = ck.run_pass()
                times["ours"].append(time.monotonic() - start)
                assert report.sent == args.changed and report.ok, report
                # A restarted job: a new checkpointer reads the manifest back, and finds nothing new.
                start = time.monotonic()
                again = checkpoint()
                report = again.run_pass()
                times["ours, restarted"].append(time.monotonic() - start)
                assert report.sent == 0 and report.ok, report
                again.cancel()
            # rclone --checksum (sizes and MD5s from the listing: no HEAD per object for its
            # time) on a change set of its own, into the same prefix; then ours catches up, untimed.
            for path in rng.sample(paths, args.changed):
                path.write_bytes(os.urandom(1024))
            times["rclone --checksum"].append(rclone_copy(server, folder, bucket, "--checksum"))
            assert ck.run_pass().sent == args.changed
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)

        cpu0 = time.process_time()
        start = time.monotonic()
        ck.run_pass()
        scan_cpu, scan_wall = time.process_time() - cpu0, time.monotonic() - start

        cpu0, wall0 = time.process_time(), time.monotonic()
        threading.Event().wait(args.idle)
        idle = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        ck.cancel()

        print()
        print(f"| {args.files:,} files, {args.changed} changed | median of {args.rounds} | runs |")
        print("|---|---|---|")
        for tool, values in times.items():
            print(f"| {tool} | {statistics.median(values):.2f} s | {', '.join(f'{v:.2f}' for v in values)} |")
        ratio = statistics.median(times["ours"]) / statistics.median(times["rclone"])
        ratio_cold = statistics.median(times["ours, restarted"]) / statistics.median(times["rclone"])
        ratio_sum = statistics.median(times["ours"]) / statistics.median(times["rclone --checksum"])
        print(f"\nours / rclone: {ratio:.2f} x (restarted: {ratio_cold:.2f} x; against rclone --checksum: "
              f"{ratio_sum:.2f} x; goal <= 0.5 x)")
        print(f"a pass that finds nothing new: {scan_wall:.2f} s, {scan_cpu:.2f} s CPU")
        print(f"idle between passes: {100 * idle:.3f} % of a core over {args.idle:g} s (goal < 1 %)")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
