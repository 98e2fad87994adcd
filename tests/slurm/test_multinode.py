"""The copy engine and the Datamover on a real multi-node Slurm cluster (``slurm_multinode``).

* the fixture itself: four nodes, each with its own slurmd, spool, log and host name;
  starting and stopping a second such cluster leaves no process and no mount behind;
* ParallelCopy through the slurm backend spreads its shards over the nodes;
* ``exclude_nodes`` keeps every shard off a node (the report and Slurm's job records);
* ``Datamover.srun(nodes=2, ntasks=4)`` and a non-blocking ``dtcp`` land where asked;
* a node that dies mid-copy: its shards end NODE_FAIL, are retried on other nodes, the
  copy completes, and the report names the node and the retried shards, and the node as
  excluded by the exit policy's rule;
* exit policies through Slurm: shard jobs exiting with chosen codes get each action
  (``retry_elsewhere`` excludes the job's node), ``max_excluded`` caps the exclusion, and
  the partition's last usable node (``sinfo``) is never excluded; ``waitfor(policy=)``
  runs a command's job again on another node;
* a node that lacks the package: the shard fails with a message naming the missing path.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest
from helpers import assert_identical, make_tree, shard_exits, wait_for
from slurm_cluster import ELSEWHERE_NODE, ELSEWHERE_PARTITION, MULTINODE_NAMES, SlurmCluster, multinode_cluster

import taurus_tools
from taurus_tools import CopyResult, Datamover, ExitPolicy, ParallelCopy, SlurmOptions, waitfor
from taurus_tools.slurm.client import SlurmClient

pytestmark = pytest.mark.slurm


def report_of(result: CopyResult) -> dict:
    assert result.report is not None and result.report.is_file()
    return json.loads(result.report.read_text())


def job_nodes(cluster: SlurmCluster, job_id: str) -> str:
    """The node list of a job, from Slurm's own record (no accounting here: scontrol keeps
    finished jobs for MinJobAge, 300 s), once the job has left COMPLETING: while it
    completes, the list holds only the nodes still completing it."""

    def record() -> Dict[str, str]:
        out = cluster.run(["scontrol", "show", "job", "-o", str(job_id)]).stdout
        return dict(tok.partition("=")[::2] for tok in out.split() if "=" in tok)

    fields = wait_for(record, lambda f: f.get("JobState") != "COMPLETING", timeout=30, what=f"job {job_id} completed")
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
    assert cluster.live_processes() == []
    assert _hidden_mounts() == []  # the hidden paths were mounted only inside n5's namespace
    assert multinode.running and multinode.node_states()["n1"] == "idle"


# ---------------------------------------------------------------- the copy across nodes
def _copy(src: Path, dst: Path, dm: Datamover, tmp_path: Path, **options) -> ParallelCopy:
    return ParallelCopy(
        src,
        dst,
        datamover=dm,
        progress=False,
        work_dir=tmp_path / "work",
        keep_work_dir=True,
        **{"workers": 8, "shards": 8, **options},
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
    # The default exit policy excluded the node, and the report says by which rule.
    assert result.excluded_nodes == [victim]
    [excluded] = report["excluded_nodes"]
    assert excluded["node"] == victim and excluded["slurm_state"] == "NODE_FAIL"
    assert excluded["rule"] == "NODE_FAIL,BOOT_FAIL=retry_elsewhere" and excluded["action"] == "retry_elsewhere"


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


# ---------------------------------------------------------------- exit policies through Slurm
def _rows_of(result: CopyResult, shard: int) -> List[dict]:
    return [r for r in report_of(result)["benchmark_results"] if r["chunk_number"] == shard + 1]


def test_usable_nodes_follow_sinfo(multinode):
    client = SlurmClient()
    assert client.usable_nodes("datamover") == list(MULTINODE_NAMES)
    assert client.usable_nodes() == list(MULTINODE_NAMES)  # debug, the default partition
    multinode.run(["scontrol", "update", "nodename=n3", "state=drain", "reason=test: drained"])
    try:
        wait_for(
            lambda: client.usable_nodes("datamover"),
            lambda nodes: nodes == ["n1", "n2", "n4"],
            timeout=30,
            what="n3 drained (not usable)",
        )
    finally:
        multinode.run(["scontrol", "update", "nodename=n3", "state=resume"])
    wait_for(lambda: multinode.node_states()["n3"], lambda state: state == "idle", timeout=30, what="n3 idle again")


def test_exit_codes_of_shard_jobs_get_each_action(multinode, dm, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, big_files=4, big_mib=1)
    policy = "3=retry,4=retry_elsewhere,5=fail,6=complete,*=fail"
    copy = _copy(src, dst, dm, tmp_path, workers=4, shards=4, retry_delay_s=0.1, exit_policy=policy)
    shard_exits(copy, {0: ["exit 3"], 1: ["exit 4"], 2: ["exit 5"], 3: ["exit 6"]})
    result = copy.run()
    assert not result.ok
    report = report_of(result)
    # 3=retry: a second attempt, which copied.
    first, second = _rows_of(result, 0)
    assert (first["exit_code"], first["slurm_state"], second["exit_code"]) == (3, "FAILED", 0)
    # 4=retry_elsewhere: the job's node excluded, the retry ran elsewhere and copied.
    failed, retried = _rows_of(result, 1)
    node = job_nodes(multinode, failed["job_id"])
    assert failed["exit_code"] == 4 and failed["nodes"] == node
    assert retried["exit_code"] == 0 and job_nodes(multinode, retried["job_id"]) != node
    assert result.excluded_nodes == [node]
    assert report["excluded_nodes"] == [
        {
            "node": node,
            "rule": "4=retry_elsewhere",
            "action": "retry_elsewhere",
            "exit_code": 4,
            "slurm_state": "FAILED",
            "chunk_number": 2,
            "attempt": 0,
            "job_id": failed["job_id"],
        }
    ]
    # 5=fail and 6=complete: one attempt each, no retry; their entries count as failed.
    assert [r["exit_code"] for r in _rows_of(result, 2)] == [5]
    assert [r["exit_code"] for r in _rows_of(result, 3)] == [6]
    assert report["total_retries"] == 2
    assert result.files_failed > 0
    assert report["exit_policy"] == str(ExitPolicy(policy).with_defaults(retries=2, backoff_s=0.1))


def test_exclusion_is_capped(multinode, dm, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    policy = "1-10=retry_elsewhere,retries=3,max_excluded=1"
    copy = _copy(src, dst, dm, tmp_path, workers=1, shards=1, retry_delay_s=0.1, exit_policy=policy)
    shard_exits(copy, {0: ["exit 7", "exit 7", "exit 7"]})
    result = copy.run()
    assert result.ok, result.failed_messages
    assert_identical(src, dst)
    rows = _rows_of(result, 0)
    nodes = [job_nodes(multinode, r["job_id"]) for r in rows]
    assert [r["exit_code"] for r in rows] == [7, 7, 7, 0]
    assert result.excluded_nodes == [nodes[0]]  # the first failure's node only: the cap is 1
    report = report_of(result)
    assert [e["node"] for e in report["excluded_nodes"]] == [nodes[0]]
    kept = report["nodes_not_excluded"]
    assert [k["node"] for k in kept] == nodes[1:3]
    assert all(k["reason"].startswith("not excluded: max_excluded_nodes=1 reached") for k in kept)
    assert nodes[0] not in nodes[1:]


def test_the_last_usable_node_is_never_excluded(multinode, dm, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    # n1 and n2 excluded by the user: n3 and n4 are left, and one of them must stay.
    copy = _copy(
        src, dst, dm, tmp_path, workers=1, shards=1, retry_delay_s=0.1, exclude_nodes=["n1", "n2"],
        exit_policy="1-10=retry_elsewhere,retries=3",
    )  # fmt: skip
    shard_exits(copy, {0: ["exit 7", "exit 7", "exit 7"]})
    result = copy.run()
    assert result.ok, result.failed_messages
    rows = _rows_of(result, 0)
    nodes = [job_nodes(multinode, r["job_id"]) for r in rows]
    assert set(nodes) == {"n3", "n4"} and nodes[0] not in nodes[1:]
    assert result.excluded_nodes == [nodes[0]]
    kept = report_of(result)["nodes_not_excluded"]
    assert [k["node"] for k in kept] == nodes[1:3]
    assert all("the last usable node" in k["reason"] for k in kept), kept


@pytest.mark.parametrize("blocking", [True, False], ids=["srun", "sbatch"])
def test_waitfor_retries_a_command_elsewhere(multinode, tmp_path, blocking):
    dm = Datamover("slurm", job_log_dir=tmp_path / "jobs", blocking=blocking)
    marker, nodes = tmp_path / "ran once", tmp_path / "nodes"
    # The first run exits 4, the second 0; each notes the node it ran on.
    script = 'echo "$SLURMD_NODENAME" >> "$2"; if [ -e "$1" ]; then exit 0; fi; touch "$1"; exit 4'
    handle = dm.run("sh", "-c", script, "sh", str(marker), str(nodes))
    err = io.StringIO()
    assert waitfor(handle, timeout=120, policy="4=retry_elsewhere,backoff=0.1", progress=False, file=err) == 0
    first, second = nodes.read_text().split()
    assert first != second, err.getvalue()
    assert handle.returncode == 4 and job_nodes(multinode, handle.job_id) == first
    said = err.getvalue()
    assert f"node {first} excluded from later attempts (Slurm FAILED (exit 4), rule 4=retry_elsewhere)" in said
