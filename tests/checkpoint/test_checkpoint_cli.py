"""``taurus-tools checkpoint PATH DEST -- COMMAND`` and ``checkpoint restore`` as real processes.

Against the real S3 test server (through :class:`s3_proxy.FaultProxy` where it must fail or
hold a request on cue), and on the real Slurm test cluster for the time-limit warning
(``sbatch --signal=B:USR1@N``).  The command is a small Python script that writes files.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import psutil
import pytest
from helpers import wait_for
from s3_proxy import FaultProxy, Request

from taurus_tools.checkpoint.command import EXIT_NOT_SAVED
from taurus_tools.cli.main import main, split_checkpoint

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("no_slurm_env")]

#: Writes N files NAME.bin (and NAME.txt beside each) into FOLDER, one every PAUSE seconds;
#: with a trigger file, waits for it (up to 60 s) after the first N and writes version 2.
WRITER = r"""
import os, sys, time
folder, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
trigger = sys.argv[4] if len(sys.argv) > 4 else None
def write(version):
    for i in range(count):
        with open(os.path.join(folder, "f%05d.bin" % i), "wb") as fh:
            fh.write(b"v%d-%d " % (version, i) * 100)
        with open(os.path.join(folder, "f%05d.txt" % i), "w") as fh:
            fh.write("never saved")
        time.sleep(pause)
write(1)
if trigger:
    deadline = time.monotonic() + 60
    while not os.path.exists(trigger) and time.monotonic() < deadline:
        time.sleep(0.05)
    write(2)
    time.sleep(120)
"""

_numbers = iter(range(10**6))


@pytest.fixture
def server(s3_server):
    return s3_server


@pytest.fixture
def bucket(server) -> str:
    return server.make_bucket(f"tt-ckcli-{os.getpid()}-{next(_numbers)}")


@pytest.fixture
def writer(tmp_path) -> Path:
    path = tmp_path / "writer.py"
    path.write_text(WRITER)
    return path


def checkpoint_argv(src: Path, dest: str, *options: str) -> List[str]:
    return [sys.executable, "-m", "taurus_tools", "checkpoint", str(src), dest, *options]


def manifests(client: Any, bucket: str, prefix: str) -> List[Dict[str, Any]]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}manifests/").get("Contents", [])
    keys = sorted(item["Key"] for item in listed)
    return [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]


def saved(manifest: Dict[str, Any]) -> Dict[str, int]:
    return {f["path"]: f["size"] for f in manifest["files"]}


def on_disk(folder: Path, suffix: str = ".bin") -> Dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.name.endswith(suffix)}


def end(proc: "subprocess.Popen[bytes]") -> None:
    """Kill what a failed test left: the wrapper and its command's process group."""
    if proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
    proc.wait(30)


# =============================================================================== the command line
class TestCommandLine:
    def test_the_command_is_everything_after_the_first_double_dash(self):
        argv = ["-v", "checkpoint", "p", "d", "--every", "1s", "--", "cmd", "--", "-x", "a b"]
        assert split_checkpoint(argv) == (argv[:6], ["cmd", "--", "-x", "a b"])
        assert split_checkpoint(["--backend", "local", "checkpoint", "p", "d", "--", "c"]) == (
            ["--backend", "local", "checkpoint", "p", "d"], ["c"]
        )

    @pytest.mark.parametrize("argv", [["copy", "--", "-src", "dst"], ["checkpoint", "restore", "d", "p"], []])
    def test_other_command_lines_are_left_alone(self, argv):
        assert split_checkpoint(argv) is None

    @pytest.mark.parametrize(
        "argv, message",
        [
            (["checkpoint", ".", "d"], "usage: taurus-tools checkpoint PATH DEST"),
            (["checkpoint", ".", "d", "--"], "usage: taurus-tools checkpoint PATH DEST"),
            (["checkpoint", "restore", "d"], "usage: taurus-tools checkpoint restore DEST PATH"),
            (["checkpoint", ".", ":bad backend:x", "--", "true"], "is not a backend name"),
        ],
    )
    def test_usage_errors(self, argv, message, capsys):
        assert main(argv) == 2
        assert message in capsys.readouterr().err

    def test_a_command_that_cannot_run(self, tmp_path, capsys):
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.bin").write_bytes(b"a")
        argv = ["checkpoint", str(src), str(tmp_path / "d"), "-q", "--", str(tmp_path / "no such program")]
        assert main(argv) == 127
        assert "cannot run" in capsys.readouterr().err
        assert (tmp_path / "d" / "data" / "000001" / "a.bin").read_bytes() == b"a"  # the final pass ran


# =============================================================================== passes while it runs
def test_thirty_files_over_five_seconds(tmp_path, server, bucket, writer):
    """--every 1s --regex '\\.bin$': passes land while the command runs, the final one has
    every .bin file, no .txt file is ever uploaded, and the secret is in no argv."""
    src = tmp_path / "src"
    src.mkdir()
    client = server.client()
    argv = checkpoint_argv(src, f"s3://{bucket}/run", "--every", "1s", "--regex", r"\.bin$")
    proc = subprocess.Popen(
        [*argv, "--", sys.executable, str(writer), str(src), "30", "0.17"], env=server.env(), stderr=subprocess.PIPE
    )
    try:
        seen = wait_for(
            lambda: (len(manifests(client, bucket, "run/")), proc.poll()),
            lambda state: state[0] >= 2 or state[1] is not None,
            timeout=60,
            what="two passes",
        )
        assert seen[1] is None, "two passes were seen while the command ran"
        for process in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
            assert server.secret not in " ".join(process.cmdline())
        _, err = proc.communicate(timeout=90)
    finally:
        end(proc)
    assert proc.returncode == 0, err.decode()
    newest = manifests(client, bucket, "run/")[-1]
    assert saved(newest) == on_disk(src) and len(on_disk(src)) == 30
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket, Prefix="run/").get("Contents", [])]
    assert not [k for k in keys if k.endswith(".txt")]


def test_sigterm_to_the_wrapper_ends_with_a_complete_final_pass(tmp_path, server, bucket, writer):
    src = tmp_path / "src"
    src.mkdir()
    client = server.client()
    argv = checkpoint_argv(src, f"s3://{bucket}/t", "--every", "0.5s", "--settle", "0.2s", "--regex", r"\.bin$")
    proc = subprocess.Popen(
        [*argv, "--", sys.executable, str(writer), str(src), "100000", "0.05"], env=server.env(), stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: manifests(client, bucket, "t/"), lambda m: len(m) >= 2, timeout=60, what="two passes")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        end(proc)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert "SIGTERM received" in err.decode()
    assert saved(manifests(client, bucket, "t/")[-1]) == on_disk(src)


def test_a_failing_final_pass_gives_the_documented_status(tmp_path, server, bucket, writer):
    src = tmp_path / "src"
    src.mkdir()
    trigger = tmp_path / "go"
    with FaultProxy(server.endpoint_url) as proxy:
        argv = checkpoint_argv(
            src, f"s3://{bucket}/f", "--every", "1h", "--final-timeout", "1s", "--endpoint-url", proxy.endpoint_url
        )
        script = "import os, sys, time\nopen(sys.argv[1] + '/lost.bin', 'w').write('x')\n" \
                 "while not os.path.exists(sys.argv[2]): time.sleep(0.05)\n"
        proc = subprocess.Popen(
            [*argv, "--", sys.executable, "-c", script, str(src), str(trigger)], env=server.env(),
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(lambda: (src / "lost.bin").exists(), timeout=60, what="the command's file")
            proxy.on_request = lambda request: (503, "ServiceUnavailable")
            trigger.write_text("")
            _, err = proc.communicate(timeout=90)
        finally:
            end(proc)
    assert proc.returncode == EXIT_NOT_SAVED
    assert "not saved: 'lost.bin'" in err.decode()


@pytest.mark.parametrize("signals", [1, 2])
def test_a_signal_during_the_final_pass_is_ignored_and_a_second_abandons_it(tmp_path, server, bucket, signals):
    """Slurm's SIGTERM at the limit must not cut the final pass short: one is logged and
    ignored; a second one abandons the pass (exit 128 + 15)."""
    src = tmp_path / "src"
    src.mkdir()
    release = threading.Event()

    def hold_the_manifest(request: Request) -> Optional[Any]:
        if request.method == "PUT" and "/manifests/" in request.key:
            release.wait(60)
        return None

    lines: List[str] = []
    with FaultProxy(server.endpoint_url, hold_the_manifest) as proxy:
        argv = checkpoint_argv(src, f"s3://{bucket}/g", "-v", "--every", "1h", "--endpoint-url", proxy.endpoint_url)
        script = "import sys; open(sys.argv[1] + '/a.bin', 'w').write('a')"
        proc = subprocess.Popen([*argv, "--", sys.executable, "-c", script, str(src)], env=server.env(),
                                stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        reader.start()
        try:
            wait_for(lambda: proxy.seen(lambda r: r.method == "PUT" and "/manifests/" in r.key), timeout=60,
                     what="the final pass writing its manifest")
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: [line for line in lines if "during the final pass" in line], timeout=30,
                     what="the signal logged")
            if signals == 2:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            release.set()
            proc.wait(60)
            reader.join(30)
        finally:
            release.set()
            end(proc)
    text = "".join(lines)
    if signals == 1:
        assert proc.returncode == 0, text
        assert saved(manifests(server.client(), bucket, "g/")[-1]) == {"a.bin": 1}
    else:
        assert proc.returncode == 128 + signal.SIGTERM, text
        assert "final pass abandoned (SIGTERM twice)" in text


def test_restore_after_a_crash_gives_the_newest_complete_pass(tmp_path, server, bucket, writer):
    """Pass 2 is held half way (its second upload never answers) and the wrapper is
    killed with SIGKILL: restore brings back pass 1, every file at version 1."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    trigger = tmp_path / "go"
    client = server.client()
    release = threading.Event()

    def hold_the_second_upload_of_pass_2(request: Request) -> Optional[Any]:
        if request.method == "PUT" and "/data/000002/" in request.key:
            if len(proxy.seen(lambda r: r.method == "PUT" and "/data/000002/" in r.key)) >= 2:
                release.wait(60)
        return None

    with FaultProxy(server.endpoint_url, hold_the_second_upload_of_pass_2) as proxy:
        argv = checkpoint_argv(
            src, f"s3://{bucket}/c", "--every", "0.3s", "--settle", "0", "--endpoint-url", proxy.endpoint_url,
            "--regex", r"\.bin$",
        )
        proc = subprocess.Popen(
            [*argv, "--", sys.executable, str(writer), str(src), "3", "0", str(trigger)], env=server.env(),
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(lambda: manifests(client, bucket, "c/"), lambda m: len(m) == 1 and len(m[0]["files"]) == 3,
                     timeout=60, what="pass 1 with three files")
            trigger.write_text("")
            wait_for(lambda: proxy.seen(lambda r: r.method == "PUT" and "/data/000002/" in r.key),
                     lambda held: len(held) >= 2, timeout=60, what="pass 2 held half way")
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait(30)
        finally:
            release.set()
            end(proc)
    assert len(manifests(client, bucket, "c/")) == 1
    done = subprocess.run(
        [sys.executable, "-m", "taurus_tools", "checkpoint", "restore", f"s3://{bucket}/c", str(out)],
        env=server.env(), capture_output=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert {p.name: p.read_bytes()[:3] for p in out.iterdir()} == {f"f{i:05d}.bin": b"v1-" for i in range(3)}


def test_errors_before_the_start_stop_the_command_from_running(tmp_path, server, bucket):
    marker = tmp_path / "ran"
    command = ["--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    cases = [
        (checkpoint_argv(tmp_path / "missing", f"s3://{bucket}/x", "--every", "1s"), "is not a folder"),
        (checkpoint_argv(tmp_path, f"s3://{bucket}/x", "--every", "10 minutes"), "30s, 10m, 2h, 1d"),
        (checkpoint_argv(tmp_path, "s3://no-such-bucket-here/x", "--every", "1s"), "does not exist"),
    ]
    for argv, message in cases:
        done = subprocess.run([*argv, *command], env=server.env(), capture_output=True, timeout=120)
        assert (done.returncode, marker.exists()) == (2, False), done.stderr.decode()
        assert message in done.stderr.decode()


# =============================================================================== Slurm's warning signal
@pytest.mark.timeout(300)
def test_slurm_time_limit_warning_ends_with_a_complete_final_pass(tmp_path, server, bucket, writer, slurm_cluster):
    """``sbatch --time=1 --signal=B:USR1@50`` and ``exec taurus-tools checkpoint ...``: the
    warning reaches the wrapper, the command is stopped, and the final pass saves
    everything before the limit."""
    src = tmp_path / "src"
    src.mkdir()
    client = server.client()
    checkpoint = checkpoint_argv(src, f"s3://{bucket}/s", "--every", "2s", "--regex", r"\.bin$")
    command = [sys.executable, str(writer), str(src), "100000", "0.1"]
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/sh\n#SBATCH --time=1\n#SBATCH --signal=B:USR1@50\n"
        f"exec {shlex.join(checkpoint)} -- {shlex.join(command)}\n"
    )
    log = tmp_path / "job.out"
    env = {**server.env(), **slurm_cluster.env}
    submitted = subprocess.run(
        ["sbatch", "--parsable", f"--output={log}", str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert submitted.returncode == 0, submitted.stderr
    job = int(submitted.stdout.strip().split(";")[0])
    wait_for(slurm_cluster.squeue_ids, lambda ids: job not in ids, timeout=200, interval=1, what=f"job {job} ended")
    text = log.read_text()
    assert "final pass done (SIGUSR1 received)" in text, text
    newest = manifests(client, bucket, "s/")[-1]
    assert saved(newest) == on_disk(src) and on_disk(src)


# =============================================================================== rclone remotes
def test_an_rclone_remote_of_the_s3_server(tmp_path, server, bucket, writer):
    """DEST as an rclone remote (configured by environment only): passes go through
    ``rclone copy --files-from-raw``, and restore brings the files back."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    env = server.env()
    env["RCLONE_CONFIG"] = os.devnull
    for key, value in dict(TYPE="s3", PROVIDER="Other", ENDPOINT=server.endpoint_url, ACCESS_KEY_ID=server.key,
                           SECRET_ACCESS_KEY=server.secret, FORCE_PATH_STYLE="true").items():
        env[f"RCLONE_CONFIG_S3T_{key}"] = value
    argv = checkpoint_argv(src, f"s3t:{bucket}/r", "--every", "0.5s", "--settle", "0.2s", "--regex", r"\.bin$")
    done = subprocess.run([*argv, "--", sys.executable, str(writer), str(src), "8", "0.1"], env=env,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert saved(manifests(server.client(), bucket, "r/")[-1]) == on_disk(src)
    done = subprocess.run([sys.executable, "-m", "taurus_tools", "checkpoint", "restore", f"s3t:{bucket}/r", str(out)],
                          env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        p.name: p.read_bytes() for p in src.iterdir() if p.name.endswith(".bin")
    }


@pytest.mark.parametrize("flag, expected", [((), ["a.bin", "b.bin"]), (("--propagate-deletions",), ["a.bin"])])
def test_deletions_from_the_command_line(tmp_path, flag, expected):
    """The command deletes a file once a pass has saved it: restored afterwards only
    without ``--propagate-deletions``."""
    src, dest, out = tmp_path / "src", tmp_path / "dst", tmp_path / "out"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a")
    (src / "b.bin").write_bytes(b"b")
    command = (
        "import glob, os, sys, time\n"
        "deadline = time.monotonic() + 60\n"
        "while not glob.glob(os.path.join(sys.argv[2], 'manifests', '*.json')) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "os.unlink(sys.argv[1])\n"
    )
    argv = checkpoint_argv(src, str(dest), "--every", "0.2s", "--settle", "0", *flag)
    done = subprocess.run([*argv, "--", sys.executable, "-c", command, str(src / "b.bin"), str(dest)],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    done = subprocess.run([sys.executable, "-m", "taurus_tools", "checkpoint", "restore", str(dest), str(out)],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(p.name for p in out.iterdir()) == expected
