"""``ExitPolicy``: parsing (compact form and mappings), overlaps and unknown names refused
with what is valid, decisions for codes, signals and Slurm states, retry bounds and backoff."""

from __future__ import annotations

import pickle
import signal

import pytest

from taurus_tools import ConfigurationError, ExitPolicy
from taurus_tools.policy import SLURM_STATES, Action

EXAMPLE = "0=complete,1-10,16=retry,NODE_FAIL,SIGKILL=retry_elsewhere,*=fail"


class TestParsing:
    def test_compact_form_names_before_an_action_join_its_rule(self):
        policy = ExitPolicy(EXAMPLE)
        assert [str(r) for r in policy.rules] == ["0=complete", "1-10,16=retry", "SIGKILL,NODE_FAIL=retry_elsewhere"]
        assert policy.default is Action.FAIL
        assert policy.rules[1].codes == ((1, 10), (16, 16))
        assert policy.rules[2].signals == (signal.SIGKILL,) and policy.rules[2].states == ("NODE_FAIL",)

    def test_str_round_trips_and_repr_reads_as_the_compact_form(self):
        policy = ExitPolicy(EXAMPLE + ",retries=3,run_retries=10,backoff=0.5s,max_excluded=2")
        assert ExitPolicy(str(policy)) == policy
        assert repr(policy) == (
            "ExitPolicy('0=complete,1-10,16=retry,SIGKILL,NODE_FAIL=retry_elsewhere,*=fail,"
            "retries=3,run_retries=10,backoff=0.5,max_excluded=2')"
        )
        assert (policy.retries, policy.run_retries, policy.backoff_s, policy.max_excluded_nodes) == (3, 10, 0.5, 2)
        assert pickle.loads(pickle.dumps(policy)) == policy

    def test_mapping_form_and_keywords(self):
        policy = ExitPolicy({"1-10, 16": "retry", "node_fail": Action.RETRY_ELSEWHERE}, default="complete", retries=4)
        assert str(policy) == "1-10,16=retry,NODE_FAIL=retry_elsewhere,*=complete,retries=4"
        assert ExitPolicy({"*": "retry"}).default is Action.RETRY

    def test_no_rules_is_the_default_policy_also_with_bounds(self):
        assert str(ExitPolicy()) == "NODE_FAIL,BOOT_FAIL=retry_elsewhere,*=retry"
        assert ExitPolicy() == ExitPolicy.default_policy() == ExitPolicy({}) == ExitPolicy("")
        bounded = ExitPolicy("max_excluded=2,run_retries=4")
        assert str(bounded) == "NODE_FAIL,BOOT_FAIL=retry_elsewhere,*=retry,run_retries=4,max_excluded=2"
        assert str(ExitPolicy("*=fail")) == "*=fail"

    def test_signal_spellings(self):
        for name in ("SIGTERM", "sigterm", "TERM", "128+15"):
            assert ExitPolicy(f"{name}=retry").rules[0].signals == (signal.SIGTERM,)

    @pytest.mark.parametrize(
        "text, message",
        [
            ("1-10=retry,5=fail", "1-10=retry and 5=fail overlap: both match exit code 5"),
            ("3-9=retry,1-4=fail", "overlap: both match exit code 3"),
            ("128-255=retry,SIGKILL=fail", r"exit code 137 \(a shell's 128\+9: SIGKILL\)"),
            ("SIGKILL=retry,128+9=fail", "both match SIGKILL"),
            ("NODE_FAIL=retry,TIMEOUT,NODE_FAIL=fail", "both match NODE_FAIL"),
            ("FOO=retry", r"unknown exit-policy name 'FOO'; valid: exit codes .*signals .*NODE_FAIL.*\*"),
            ("COMPLETED=retry", "unknown exit-policy name 'COMPLETED'"),
            ("1=explode", "unknown exit-policy action 'explode'; valid: complete, retry, retry_elsewhere, fail"),
            ("1-10", "1-10 has no action; write NAMES=ACTION"),
            ("1,,2=retry", "has an empty item"),
            ("*=retry,*=fail", "two catch-all rules"),
            ("1,*=retry", r"\* stands alone"),
            ("256=retry", "not within 0-255"),
            ("9-3=retry", "not within 0-255"),
            ("128+200=retry", "a signal number is 1 to 127"),
            ("retries=-1", "retries must be a whole number >= 0, got '-1'"),
            ("backoff=soon", "backoff must be seconds >= 0"),
            ("1=retry,retries=2,retries=3", "sets retries twice"),
            ("1,retries=2", "1 has no action before 'retries=2'"),
        ],
    )
    def test_bad_policies_say_what_is_wrong(self, text, message):
        with pytest.raises(ConfigurationError, match=message):
            ExitPolicy(text)

    def test_a_bound_given_twice_and_a_wrong_type_are_refused(self):
        with pytest.raises(ConfigurationError, match="retries is given twice"):
            ExitPolicy("retries=2", retries=3)
        with pytest.raises(ConfigurationError, match="catch-all is given twice"):
            ExitPolicy("*=retry", default="fail")
        with pytest.raises(ConfigurationError, match="a string or a mapping"):
            ExitPolicy([("1", "retry")])  # type: ignore[arg-type]

    def test_states_are_slurm_terminal_states(self):
        from taurus_tools.slurm.client import NODE_FAILURE_STATES, TERMINAL_STATES

        assert set(SLURM_STATES) <= TERMINAL_STATES and NODE_FAILURE_STATES <= set(SLURM_STATES)


class TestDecisions:
    policy = ExitPolicy(EXAMPLE)

    @pytest.mark.parametrize(
        "code, state, action, rule, outcome",
        [
            (0, None, Action.COMPLETE, "0=complete", "exit 0"),
            (3, None, Action.RETRY, "1-10,16=retry", "exit 3"),
            (16, None, Action.RETRY, "1-10,16=retry", "exit 16"),
            (11, None, Action.FAIL, "*=fail", "exit 11"),
            (-9, None, Action.RETRY_ELSEWHERE, "SIGKILL,NODE_FAIL=retry_elsewhere", "SIGKILL"),
            (137, None, Action.RETRY_ELSEWHERE, "SIGKILL,NODE_FAIL=retry_elsewhere", "exit 137"),
            (-15, None, Action.FAIL, "*=fail", "SIGTERM"),
            # The state decides before the code: a node failure whatever srun's exit code.
            (0, "NODE_FAIL", Action.RETRY_ELSEWHERE, "SIGKILL,NODE_FAIL=retry_elsewhere", "Slurm NODE_FAIL (exit 0)"),
            (3, "TIMEOUT", Action.RETRY, "1-10,16=retry", "Slurm TIMEOUT (exit 3)"),
            (None, "PREEMPTED", Action.FAIL, "*=fail", "Slurm PREEMPTED (exit status unknown)"),
            (1, "CANCELLED by 1000", Action.RETRY, "1-10,16=retry", "Slurm CANCELLED (exit 1)"),
        ],
    )
    def test_decide(self, code, state, action, rule, outcome):
        decision = self.policy.decide(code, state)
        assert (decision.action, decision.rule, decision.outcome) == (action, rule, outcome)

    def test_exit_0_completes_unless_a_rule_names_it(self):
        assert ExitPolicy("*=retry").decide(0).action is Action.COMPLETE
        assert ExitPolicy("*=retry").decide(0).rule is None
        assert ExitPolicy("0=retry,*=fail").decide(0).action is Action.RETRY

    def test_a_state_rule_decides_before_code_rules(self):
        policy = ExitPolicy("1=fail,OUT_OF_MEMORY=retry")
        assert policy.decide(1).action is Action.FAIL
        assert policy.decide(1, "OUT_OF_MEMORY").action is Action.RETRY

    def test_shell_signal_code_is_an_exit_code_when_no_rule_names_the_signal(self):
        assert ExitPolicy("130-140=retry").decide(137).action is Action.RETRY
        assert ExitPolicy("130-140=retry").decide(-9).action is Action.FAIL  # a signal is no exit code

    def test_retry_on_translates_to_a_policy(self):
        policy = ExitPolicy.from_retry_on([75, -9])
        assert str(policy) == "NODE_FAIL,BOOT_FAIL=retry_elsewhere,75,SIGKILL=retry,*=fail"
        assert policy.decide(75).action is Action.RETRY
        assert policy.decide(-9).action is Action.RETRY
        assert policy.decide(3).action is Action.FAIL
        assert policy.decide(3, "NODE_FAIL").action is Action.RETRY_ELSEWHERE
        default = ExitPolicy.from_retry_on(None)
        assert default == ExitPolicy.default_policy()
        assert default.decide(3).action is Action.RETRY and default.decide(1, "BOOT_FAIL").action.retries


class TestBounds:
    def test_retries_per_task_and_per_run(self):
        policy = ExitPolicy("*=retry", retries=2, run_retries=3)
        assert policy.retry_allowed(0, 0) and policy.retry_allowed(1, 2)
        assert not policy.retry_allowed(2, 0)  # this task has had its retries
        assert not policy.retry_allowed(0, 3)  # the run has had its retries
        assert ExitPolicy("*=retry").retry_allowed(ExitPolicy.DEFAULT_RETRIES - 1, 10**6)
        assert not ExitPolicy("*=retry").retry_allowed(ExitPolicy.DEFAULT_RETRIES, 0)

    def test_backoff_doubles_up_to_a_limit(self):
        policy = ExitPolicy("*=retry", backoff_s=0.5)
        assert [policy.backoff(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
        assert policy.backoff(40) == ExitPolicy.MAX_BACKOFF_S
        assert ExitPolicy().backoff(0) == ExitPolicy.DEFAULT_BACKOFF_S

    def test_with_defaults_fills_only_what_the_policy_leaves_open(self):
        filled = ExitPolicy("1=retry,retries=5").with_defaults(retries=2, backoff_s=0.25)
        assert (filled.retries, filled.backoff_s) == (5, 0.25)
        assert filled.decide(1).action is Action.RETRY


class TestExclusion:
    def test_a_node_is_excluded_within_the_cap_and_never_the_last_usable_one(self):
        policy = ExitPolicy("NODE_FAIL=retry_elsewhere,max_excluded=2")
        usable = ["n1", "n2", "n3", "n4"]
        assert policy.exclusion_refused("n1", excluded=[], usable=usable) is None
        assert policy.exclusion_refused("n1", excluded=[], usable=None) is None  # sinfo did not say: the cap only
        assert "excluded already" in policy.exclusion_refused("n1", excluded=["n1"], usable=usable)
        assert "max_excluded_nodes=2 reached (n1, n2)" in policy.exclusion_refused(
            "n3", excluded=["n1", "n2"], usable=usable
        )
        last = ExitPolicy().exclusion_refused("n4", excluded=["n3"], usable=usable, avoided=["n1", "n2"])
        assert "the last usable node (sinfo lists n1, n2, n3, n4 as usable)" in last
        assert "no Slurm node known" in ExitPolicy().exclusion_refused(None, excluded=[], usable=usable)
        assert "the last usable node" in ExitPolicy().exclusion_refused("n1", excluded=[], usable=[])
