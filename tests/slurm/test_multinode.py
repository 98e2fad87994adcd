"""The copy engine and the Datamover on a real multi-node Slurm cluster (``slurm_multinode``).

* the fixture itself: four nodes, each with its own slurmd, spool, log and host name;
  starting and stopping a second such cluster leaves no process and no mount behind;
* ParallelCopy through the slurm backend spreads its shards over the nodes;
* ``exclude_nodes`` keeps every shard off a node (the report and Slurm's job records);
* ``Datamover.srun(nodes=2, ntasks=4)`` and a non-blocking ``dtcp`` land where asked;
* a node that dies mid-copy: its shards end NODE_FAIL, are retried on other nodes, the
  copy completes, and the report names the node and the retried shards;
* a node that lacks the package: the shard fails with a message naming the missing path.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import psutil
import pytest
from helpers import assert_identical, make_tree, wait_for
from slurm_cluster import ELSEWHERE_NODE, ELSEWHERE_PARTITION, MULTINODE_NAMES, SlurmCluster, multinode_cluster

import taurus_tools
from taurus_tools import CopyResult, Datamover, ParallelCopy, SlurmOptions

pytestmark = pytest.mark.slurm


def report_of(result: CopyResult) -> dict:
    assert result.report is not None and result.report.is_file()
    return json.loads(result.report.read_text())


def job_nodes(cluster: SlurmCluster, job_id: str) -> str:
    """The node list of a job, from Slurm's own record (no accounting here: scontrol keeps
    finished jobs for MinJobAge, 300 s)."""
    out = cluster.run(["scontrol", "show", "job", "-o", str(job_id)]).stdout
    fields = dict(tok.partition("=")[::2] for tok in out.split() if "=" in tok)
    return fields["NodeList"]


def running_shards(cluster: SlurmCluster) -> Dict[str, List[str]]:
    """Node -> ids of the copy-shard jobs RUNNING there."""
    out = cluster.run(["squeue", "--noheader", "--states=RUNNING", "--format=%i|%N|%j"]).stdout
    found: Dict[str, List[str]] = {}
    for line in out.splitlines():
        job, node, name = line.split("|", 2)
        if name.startswith("tt-copy-shard-"):
            found.setdefault(node, []).append(job)
    return found


@pytest.fixture
def dm(multinode, tmp_path):
    return Datamover("slurm", job_log_dir=tmp_path / "jobs")


# ---------------------------------------------------------------- the fixture
def test_each_node_is_its_own_host(multinode):
    res = multinode.run(
        ["srun", "--partition=datamover", "--nodes=4", "--ntasks=4", "sh", "-c", 'echo "$SLURMD_NODENAME $(hostname)"']
    )
    lines = sorted(res.stdout.split("\n")[:-1])
    assert lines == [f"{n} {n}" for n in MULTINODE_NAMES], res.stdout
    # One slurmd per node, each with its own spool folder and log.
    for node in (*MULTINODE_NAMES, ELSEWHERE_NODE):
        assert (multinode.spool_dir / node).is_dir()
        assert "slurmd version" in multinode.slurmd_log(node).read_text()
    daemons = [p for p in multinode.node_processes("n1") if p.name() == "slurmd"]
    assert len(daemons) == 1
    assert multinode.node_states() == {n: "idle" for n in (*MULTINODE_NAMES, ELSEWHERE_NODE)}


def _hidden_mounts() -> List[str]:
    with open("/proc/self/mountinfo") as fh:
        return [line for line in fh if " tt-hidden " in line]


def test_second_multinode_cluster_leaves_nothing(multinode, tmp_path):
    cluster = multinode_cluster(tmp_path / "second", hide=[str(Path(taurus_tools.__file__).resolve().parent)])
    cluster.start()
    try:
        env = {**os.environ, **cluster.env}
        subprocess.run(
            ["sbatch", "-p", "datamover", "-N4", "-n4", "-o", "/dev/null", "--wrap", "srun sleep 300"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        wait_for(
            lambda: sum(len(cluster.node_processes(n)) for n in MULTINODE_NAMES),
            lambda count: count >= 4 + 4 * 2,  # slurmd, and a stepd and sleep on each node
            timeout=30,
            what="a job step on all four nodes (processes of n1..n4)",
        )
        cluster._slurmds["n3"].kill()  # a daemon that died on its own
    finally:
        cluster.stop()
    assert not cluster.running
    left = [p for p in psutil.process_iter() if p.status() != psutil.STATUS_ZOMBIE and cluster._belongs_here(p)]
    assert left == []
    assert _hidden_mounts() == []  # the hidden paths were mounted only inside n5's namespace
    assert multinode.running and multinode.node_states()["n1"] == "idle"


# ---------------------------------------------------------------- the copy across nodes
def _copy(src: Path, dst: Path, dm: Datamover, tmp_path: Path, **options) -> ParallelCopy:
    return ParallelCopy(
        src,
        dst,
        datamover=dm,
        workers=8,
        shards=8,
        progress=False,
        work_dir=tmp_path / "work",
        keep_work_dir=True,
        **options,
    )


def test_copy_spreads_shards_over_nodes(multinode, dm, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, big_files=8, big_mib=8)
    result = _copy(src, dst, dm, tmp_path).run()
    assert result.ok, result.failed_messages
    assert_identical(src, dst)
    rows = report_of(result)["benchmark_results"]
    assert len(rows) == 8 and {r["chunk_number"] for r in rows} == set(range(1, 9))
    hosts = {r["host"] for r in rows}
    assert len(hosts) >= 3 and hosts <= set(MULTINODE_NAMES), hosts
    # The worker's host name is the node Slurm ran the job on.
    for row in rows:
        assert job_nodes(multinode, row["job_id"]) == row["host"]


def test_exclude_nodes_keeps_every_shard_off_the_node(multinode, dm, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, big_files=8, big_mib=4)
    result = _copy(src, dst, dm, tmp_path, exclude_nodes=["n2"]).run()
    assert result.ok, result.failed_messages
    assert_identical(src, dst)
    rows = report_of(result)["benchmark_results"]
    assert len(rows) == 8
    assert "n2" not in {r["host"] for r in rows}
    assert len({r["host"] for r in rows}) == 3  # the other three nodes all took shards
    assert {job_nodes(multinode, r["job_id"]) for r in rows} <= {"n1", "n3", "n4"}


# ---------------------------------------------------------------- Datamover calls
def test_srun_two_nodes_four_tasks(multinode, dm):
    handle = dm.srun("sh", "-c", 'echo "$SLURMD_NODENAME $(hostname)"', nodes=2, ntasks=4, partition="datamover")
    assert handle.wait(60) == 0, handle.stderr_text
    lines = handle.stdout_text.split("\n")[:-1]
    assert len(lines) == 4, lines
    nodes = {line.split()[0] for line in lines}
    assert len(nodes) == 2 and nodes <= set(MULTINODE_NAMES)
    assert all(line.split()[0] == line.split()[1] for line in lines)
    listed = multinode.run(["scontrol", "show", "hostnames", job_nodes(multinode, handle.job_id)]).stdout
    assert set(listed.split()) == nodes  # Slurm's record of the job agrees


def test_dtcp_as_batch_job_lands_on_the_node_asked_for(multinode, tmp_path):
    dm = Datamover(
        "slurm", slurm=SlurmOptions(partition="datamover", exclude=("n1", "n2", "n3")), job_log_dir=tmp_path / "jobs"
    )
    src = tmp_path / "a file"
    src.write_bytes(os.urandom(1000))
    handle = dm.dtcp(src, tmp_path / "copied", blocking=False)
    assert handle.wait(60) == 0, handle.stderr_text
    assert handle.job_id is not None
    assert job_nodes(multinode, handle.job_id) == "n4"
    assert (tmp_path / "copied").read_bytes() == src.read_bytes()


# ---------------------------------------------------------------- a node fails mid-copy
def test_node_failure_mid_copy_is_retried_elsewhere(multinode, dm, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    # Eight 96 MiB files, checksummed: every shard's job runs for seconds on two cores.
    make_tree(src, big_files=8, big_mib=96)
    copy = _copy(src, dst, dm, tmp_path, verify="checksum", retry_delay_s=0.2).start()
    victim = None
    try:
        busy = wait_for(
            lambda: running_shards(multinode),
            lambda nodes: any(n in nodes for n in ("n2", "n3")),
            timeout=60,
            interval=0.05,
            what="a shard job running on n2 or n3",
        )
        victim = "n2" if "n2" in busy else "n3"
        # The node fails as Slurm sees it (what a site's health check does), then it is gone:
        # slurmd, step daemons and workers killed.  In this order the jobs on it end
        # NODE_FAIL at once; killed first, srun may end before Slurm knows (exit 141, the job
        # COMPLETING on the dead node until SlurmdTimeout): retried too, but not named a node failure.
        multinode.run(["scontrol", "update", f"nodename={victim}", "state=down", "reason=test: node failed"])
        assert multinode.kill_node(victim)
        result = copy.wait(timeout=300)
    finally:
        if not copy.done():
            copy.cancel()
            copy.exception(60)
        if victim is not None:
            multinode.restart_node(victim)
    assert result.ok, result.failed_messages
    assert_identical(src, dst)
    report = report_of(result)
    assert result.failed_nodes == [victim], json.dumps(report["benchmark_results"], indent=1)
    assert victim in result.summary()
    assert report["failed_nodes"] == [victim]
    failures = report["node_failures"]
    assert failures and all(f["node"] == victim and f["slurm_state"] == "NODE_FAIL" for f in failures)
    assert all(f["retried"] for f in failures)
    rows = report["benchmark_results"]
    for failure in failures:
        shard = [r for r in rows if r["chunk_number"] == failure["chunk_number"]]
        failed = [r for r in shard if r["attempt"] == failure["attempt"]]
        assert failed[0]["exit_code"] != 0 and failed[0]["slurm_state"] == "NODE_FAIL"
        later = [r for r in shard if r["attempt"] > failure["attempt"]]
        assert later and later[-1]["exit_code"] == 0
        assert all(r["host"] != victim for r in later)  # retried on another node
    assert report["total_retries"] >= len(failures)


# ---------------------------------------------------------------- a node without the package
def test_node_without_the_package_names_the_missing_path(multinode, tmp_path):
    dm = Datamover("slurm", partition=ELSEWHERE_PARTITION, job_log_dir=tmp_path / "jobs")
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    started = time.monotonic()
    copy = ParallelCopy(
        src, dst, datamover=dm, shards=2, retries=1, retry_delay_s=0, progress=False, work_dir=tmp_path / "work"
    ).start()
    try:
        result = copy.wait(timeout=120)  # an answer, not a hang
    finally:
        if not copy.done():
            copy.cancel()
    assert time.monotonic() - started < 120
    assert not result.ok and result.files_failed == result.files_planned
    worker = Path(taurus_tools.__file__).resolve().parent / "transfer" / "worker.py"
    message = result.failed_messages[0]
    assert f"could not start on node {ELSEWHERE_NODE}: {worker} does not exist there" in message, message
    assert "the driver's Python" in message
