"""ParallelCopy's exit policy on the local backend: exit codes and signals of real shard
processes mapped to each action, retries bounded per shard and per run, the policy in
CopyConfig and on ``taurus-tools copy --exit-policy``, and the report's record of it.

Through Slurm (node failures, exclusion, its cap, the last usable node) see
``tests/slurm/test_multinode.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import shard_exits

import taurus_tools.transfer.parallel_copy as pc_mod
from taurus_tools import ConfigurationError, CopyConfig, Datamover, ExitPolicy, ParallelCopy
from taurus_tools.cli.main import main

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_slurm_env")]

POLICY = "3=retry,4=retry_elsewhere,5=complete,6=fail,SIGKILL=retry,*=fail"


@pytest.fixture
def dm():
    return Datamover("local")


def tree(src: Path, files: int = 4) -> None:
    src.mkdir(parents=True)
    for i in range(files):
        (src / f"f{i}").write_bytes(b"x" * (i + 1))


def pcopy(src, dst, work, dm, **options) -> ParallelCopy:
    options.setdefault("retry_delay_s", 0.05)
    options.setdefault("workers", 2)
    return ParallelCopy(src, dst, datamover=dm, progress=False, work_dir=work, keep_work_dir=True, **options)


def rows(result) -> list:
    return json.loads(result.report.read_text())["benchmark_results"]


@pytest.mark.parametrize(
    "script, code, action, rule, retried",
    [
        ("exit 3", 3, "retry", "3=retry", True),
        ("kill -9 $$", -9, "retry", "SIGKILL=retry", True),
        ("exit 4", 4, "retry_elsewhere", "4=retry_elsewhere", True),  # no node here: a plain retry
        ("exit 5", 5, "complete", "5=complete", False),
        ("exit 6", 6, "fail", "6=fail", False),
        ("exit 7", 7, "fail", "*=fail", False),
    ],
)
def test_each_action_of_a_shards_exit(tmp_path, dm, script, code, action, rule, retried):
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    copy = pcopy(src, dst, tmp_path / "work", dm, shards=1, exit_policy=POLICY)
    shard_exits(copy, {0: [script]})
    result = copy.run()
    first = rows(result)[0]
    assert (first["exit_code"], first["attempt"]) == (code, 0)
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    recorded = state["results"][0]
    assert (recorded["action"], recorded["rule"]) == (action, rule)
    if retried:
        assert result.ok and result.retries == 1, result.failed_messages
        assert sorted(p.name for p in dst.iterdir()) == ["f0", "f1", "f2", "f3"]
    else:
        # complete ends the shard as fail does: what it did not copy still counts as failed.
        assert not result.ok and result.retries == 0 and len(rows(result)) == 1
        assert result.files_failed == 4
    report = json.loads(result.report.read_text())
    assert report["exit_policy"] == str(ExitPolicy(POLICY).with_defaults(retries=2, backoff_s=0.05))
    assert report["excluded_nodes"] == []
    if action == "retry_elsewhere":
        [kept] = report["nodes_not_excluded"]
        assert kept["rule"] == rule and "no Slurm node known" in kept["reason"]


def test_retries_are_bounded_per_shard_by_the_policy(tmp_path, dm):
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    # The policy's retries=3 replaces the copy's retries=0.
    copy = pcopy(src, dst, tmp_path / "work", dm, shards=1, retries=0, exit_policy="*=retry,retries=3")
    shard_exits(copy, {0: ["exit 9"] * 10})
    result = copy.run()
    assert not result.ok and result.retries == 3
    assert [r["attempt"] for r in rows(result)] == [0, 1, 2, 3]


def test_retries_are_bounded_per_run(tmp_path, dm):
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    copy = pcopy(src, dst, tmp_path / "work", dm, shards=2, retries=5, exit_policy="*=retry,run_retries=3")
    shard_exits(copy, {0: ["exit 9"] * 10, 1: ["exit 9"] * 10})
    result = copy.run()
    assert not result.ok and result.retries == 3
    assert len(rows(result)) == 2 + 3


def test_retry_on_keeps_its_meaning_as_a_policy(tmp_path, dm):
    config = CopyConfig(retry_on=[75, -9])
    assert config.policy().decide(75).action.value == "retry"
    assert config.policy().decide(3).action.value == "fail"
    assert config.policy().decide(3, "NODE_FAIL").action.value == "retry_elsewhere"
    assert CopyConfig().policy() == ExitPolicy().with_defaults(retries=2, backoff_s=1.0)


def test_config_takes_a_policy_or_its_compact_form(tmp_path):
    assert CopyConfig(exit_policy="1-3=retry").exit_policy == ExitPolicy({"1-3": "retry"})
    assert CopyConfig(exit_policy=ExitPolicy("1=fail")).policy().retries == 2
    with pytest.raises(ConfigurationError, match="give retry_on or exit_policy, not both"):
        CopyConfig(retry_on=[1], exit_policy="1=retry")
    with pytest.raises(ConfigurationError, match="exit_policy must be an ExitPolicy or its compact form"):
        CopyConfig(exit_policy=3)
    with pytest.raises(ConfigurationError, match="unknown exit-policy action 'again'"):
        CopyConfig(exit_policy="1=again")


def test_cli_exit_policy_reaches_the_copy(tmp_path, monkeypatch, capsys):
    src, dst, report = tmp_path / "src", tmp_path / "dst", tmp_path / "r.json"
    tree(src)
    real_init = pc_mod.ParallelCopy.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        shard_exits(self, {0: ["exit 3"]})

    monkeypatch.setattr(pc_mod.ParallelCopy, "__init__", init)
    argv = ["-q", "--backend", "local", "copy", str(src), str(dst), "--shards", "1", "--work-dir", str(tmp_path / "w")]
    rc = main([*argv, "--report", str(report), "--exit-policy", "1-10=fail,retries=4"])
    assert rc != 0
    data = json.loads(report.read_text())
    assert data["exit_policy"] == "1-10=fail,*=fail,retries=4,backoff=1"
    assert data["total_retries"] == 0 and len(data["benchmark_results"]) == 1
    capsys.readouterr()
    assert main([*argv, "--report", str(report), "--exit-policy", "1-10=fail,5=retry"]) == 2
    err = capsys.readouterr().err
    assert "exit-policy rules 1-10=fail and 5=retry overlap: both match exit code 5" in err, err
    assert "--exit-policy RULES" in _help(capsys)


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["copy", "--help"])
    return capsys.readouterr().out
