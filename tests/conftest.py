"""Shared fixtures: real Slurm clusters (one node, or several) and the datamover emulation.

Fixtures
--------
slurm_cluster
    Session-scoped :class:`slurm_cluster.SlurmCluster`, started once in a
    temporary directory.  While it is up, ``os.environ["SLURM_CONF"]`` points
    at it (and inherited ``SLURM_*``/``SBATCH_*``/... variables are hidden), so
    plain ``subprocess.run(["srun", ...])`` uses it.  Skipped when Slurm is
    not installed, but a failure when the environment variable ``CI`` is set.
    Tests that request it are marked ``slurm`` automatically.
slurm_multinode
    Session-scoped multi-node cluster: compute nodes ``n1`` to ``n4`` (one slurmd
    each, ``hostname`` in a job = the node) in the partitions ``debug`` and
    ``datamover``, and ``n5`` alone in ``elsewhere``, a node that cannot see the
    ``taurus_tools`` package (as a data-mover node without the driver's install).
    Started on first use; skipped or failed as ``slurm_cluster``.
multinode
    For one test: ``SLURM_CONF`` points at ``slurm_multinode`` (and back after).
site_tools_dir
    :class:`pathlib.Path` of ``tests/site_tools``, the ``dt*`` emulation of the
    ZIH datamover tools (see ``tests/site_tools/_dtcommon.sh``).
s3_server, seaweed_server, s3_servers
    Real S3 servers on 127.0.0.1 (``tests/s3_server.py``), one of each per session:
    ``rclone serve s3`` (quick, buckets are folders), SeaweedFS's ``weed mini`` (an
    AWS-like second implementation), and either of them (parametrized "rclone",
    "seaweedfs"), so that a test taking ``s3_servers`` runs against both.
local_remote
    ``"loc"``: an rclone remote of type local, configured by ``RCLONE_CONFIG_LOC_TYPE`` only.
sigint_raises
    SIGINT raises KeyboardInterrupt for this test, even if pytest was started with it
    ignored (a background job of a non-interactive shell, or ``nohup``: Python then
    installs no handler of its own).  For tests that interrupt the main thread.

After every test that used ``slurm_cluster``, the jobs it started must be gone and
the node idle again within :data:`JOBS_END_TIMEOUT` seconds (a job stays COMPLETING
for a moment after its processes ended).  So every Slurm test starts on a quiet
cluster, whatever ran before it, and a test that leaves a job running gets the error
(its leftovers are cancelled) instead of a later test that sees a busy node.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import WaitTimeout, wait_for  # tests/ is on sys.path: pythonpath in pyproject.toml
from slurm_cluster import (
    SLURM_ENV_PREFIXES,
    SlurmCluster,
    missing_slurm_binaries,
    multinode_cluster,
)

import taurus_tools

SITE_TOOLS_DIR = Path(__file__).resolve().parent / "site_tools"

#: Seconds a Slurm test's jobs get to end after the test (KillWait is 5 s).
JOBS_END_TIMEOUT = 60.0

#: The session's clusters while they are up (for the check after each test), by fixture name.
_session_clusters: dict[str, SlurmCluster] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slurm: needs the real Slurm test cluster (fixture slurm_cluster); "
        "deselect with -m 'not slurm'",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"slurm_cluster", "slurm_multinode"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slurm)


def _require_slurm() -> None:
    """Skip the test when Slurm is not installed; fail it when ``CI`` is set."""
    missing = missing_slurm_binaries()
    if missing:
        msg = (
            f"Slurm is not installed (missing: {', '.join(missing)}); "
            "on Debian: apt-get install slurm-wlm"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{msg}. CI is set, so the Slurm tests must not be skipped.", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Start a real single-node Slurm cluster for the whole test session.

    Yields
    ------
    SlurmCluster
        The running cluster; partitions ``debug`` (default) and ``datamover``.
    """
    _require_slurm()
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()  # SlurmClusterError (with the daemon logs) makes the tests error
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in list(os.environ):
                if name.startswith(SLURM_ENV_PREFIXES):
                    mp.delenv(name)
            mp.setenv("SLURM_CONF", str(cluster.conf_path))
            _session_clusters["slurm_cluster"] = cluster
            yield cluster
    finally:
        _session_clusters.pop("slurm_cluster", None)
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_multinode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Start the multi-node Slurm cluster for the whole test session (see the module's notes).

    Yields
    ------
    SlurmCluster
        The running cluster; ``SLURM_CONF`` is *not* pointed at it (use ``multinode``).
    """
    _require_slurm()
    package = str(Path(taurus_tools.__file__).resolve().parent)
    cluster = multinode_cluster(tmp_path_factory.mktemp("slurm-multinode"), hide=[package])
    cluster.start()
    try:
        _session_clusters["slurm_multinode"] = cluster
        yield cluster
    finally:
        _session_clusters.pop("slurm_multinode", None)
        cluster.stop()


@pytest.fixture
def multinode(slurm_multinode: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """``slurm_multinode``, with ``SLURM_CONF`` pointing at it for this test."""
    for name in list(os.environ):
        if name.startswith(SLURM_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLURM_CONF", str(slurm_multinode.conf_path))
    return slurm_multinode


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt during this test, whatever pytest was started with."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _quiet(observed: tuple[list[int], dict[str, str]]) -> bool:
    ids, states = observed
    return not ids and bool(states) and all(state == "idle" for state in states.values())


def _observe(cluster: SlurmCluster) -> tuple[list[int], dict[str, str]]:
    """Jobs in squeue, and the state of every node (every partition: the single node's)."""
    states = cluster.node_states() if cluster.multinode else cluster.partition_states()
    return cluster.squeue_ids(), states


@pytest.fixture(autouse=True)
def _slurm_jobs_end_with_their_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used a Slurm cluster: wait until no job is left and every node is idle.

    Fails the test (in teardown) if that does not happen within
    :data:`JOBS_END_TIMEOUT` seconds, after cancelling what is left, so that the
    next test starts on a quiet cluster.
    """
    yield
    for fixture, cluster in list(_session_clusters.items()):
        if fixture in request.fixturenames and cluster.running:
            _check_quiet(cluster)


def _check_quiet(cluster: SlurmCluster) -> None:
    def observe() -> tuple[list[int], dict[str, str]]:
        return _observe(cluster)

    try:
        wait_for(
            observe,
            _quiet,
            timeout=JOBS_END_TIMEOUT,
            interval=0.1,
            what="no job in squeue and every partition idle after the test (job ids, states)",
        )
        return
    except WaitTimeout as exc:
        problem = str(exc)
    leftover = cluster.run(["squeue", "--all"], check=False).stdout
    ids = cluster.squeue_ids()
    if ids:
        cluster.run(["scancel", *map(str, ids)], check=False)
        try:
            wait_for(observe, _quiet, timeout=JOBS_END_TIMEOUT, interval=0.2, what="the cancelled jobs to end")
        except WaitTimeout:
            pass  # the next Slurm test's own check reports it
    message = f"the test left Slurm busy (its jobs are cancelled now): {problem}\nsqueue --all:\n{leftover}"
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def site_tools_dir() -> Path:
    """Return the directory of the ``dt*`` datamover emulation scripts.

    The scripts are made executable (a checkout or an archive may have lost
    the mode bits).

    Returns
    -------
    pathlib.Path
        Absolute path of ``tests/site_tools``.
    """
    for script in SITE_TOOLS_DIR.iterdir():
        if script.is_file() and (script.name.startswith("dt") or script.name == "_dtexec.sh"):
            mode = script.stat().st_mode
            wanted = mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
            if mode != wanted:
                script.chmod(wanted)
    return SITE_TOOLS_DIR


@pytest.fixture
def no_slurm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never let the environment steer a test to Slurm or to site tools."""
    for var in ("SLURM_CONF", "TAURUS_TOOLS_BACKEND", "TAURUS_TOOLS_DT_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (``rclone serve s3``) on 127.0.0.1 for the session; buckets are folders."""
    from s3_server import RcloneS3Server

    server = RcloneS3Server(tmp_path_factory.mktemp("s3") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory):
    """A second real S3 server (SeaweedFS's ``weed mini``) on 127.0.0.1, one per session."""
    from s3_server import SeaweedS3Server

    server = SeaweedS3Server(tmp_path_factory.mktemp("seaweed") / "data").start()
    try:
        yield server
    finally:
        server.stop()


#: The S3 server fixtures by implementation, for ``s3_servers``.
S3_SERVER_FIXTURES = {"rclone": "s3_server", "seaweedfs": "seaweed_server"}


@pytest.fixture(scope="session", params=list(S3_SERVER_FIXTURES))
def s3_servers(request: pytest.FixtureRequest):
    """Each real S3 server in turn: a test that takes it runs once per implementation."""
    return request.getfixturevalue(S3_SERVER_FIXTURES[request.param])


@pytest.fixture
def local_remote(monkeypatch) -> str:
    """``loc``: an rclone remote of type local, configured by the environment only."""
    from taurus_tools.transfer.rclone import rclone_executable

    if rclone_executable() is None:
        pytest.fail("rclone is not installed: pip install 'taurus-tools[rclone]'")
    monkeypatch.setenv("RCLONE_CONFIG_LOC_TYPE", "local")
    monkeypatch.setenv("RCLONE_CONFIG", os.devnull)
    return "loc"
