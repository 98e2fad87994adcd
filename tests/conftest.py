"""Shared fixtures: a real single-node Slurm cluster and the datamover emulation.

Fixtures
--------
slurm_cluster
    Session-scoped :class:`slurm_cluster.SlurmCluster`, started once in a
    temporary directory.  While it is up, ``os.environ["SLURM_CONF"]`` points
    at it (and inherited ``SLURM_*``/``SBATCH_*``/... variables are hidden), so
    plain ``subprocess.run(["srun", ...])`` uses it.  Skipped when Slurm is
    not installed, but a failure when the environment variable ``CI`` is set.
    Tests that request it are marked ``slurm`` automatically.
site_tools_dir
    :class:`pathlib.Path` of ``tests/site_tools``, the ``dt*`` emulation of the
    ZIH datamover tools (see ``tests/site_tools/_dtcommon.sh``).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS_DIR = Path(__file__).resolve().parent
if str(_TESTS_DIR) not in sys.path:  # e.g. with --import-mode=importlib
    sys.path.insert(0, str(_TESTS_DIR))

from slurm_cluster import (  # noqa: E402
    SLURM_ENV_PREFIXES,
    SlurmCluster,
    missing_slurm_binaries,
)

SITE_TOOLS_DIR = _TESTS_DIR / "site_tools"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slurm: needs the real Slurm test cluster (fixture slurm_cluster); "
        "deselect with -m 'not slurm'",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Start a real single-node Slurm cluster for the whole test session.

    Yields
    ------
    SlurmCluster
        The running cluster; partitions ``debug`` (default) and ``datamover``.
    """
    missing = missing_slurm_binaries()
    if missing:
        msg = (
            f"Slurm is not installed (missing: {', '.join(missing)}); "
            "on Debian: apt-get install slurm-wlm"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{msg}. CI is set, so the Slurm tests must not be skipped.", pytrace=False)
        pytest.skip(msg)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()  # SlurmClusterError (with the daemon logs) makes the tests error
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in list(os.environ):
                if name.startswith(SLURM_ENV_PREFIXES):
                    mp.delenv(name)
            mp.setenv("SLURM_CONF", str(cluster.conf_path))
            yield cluster
    finally:
        cluster.stop()


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
