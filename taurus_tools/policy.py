"""``ExitPolicy``: what to do when a task ends, from its exit code, signal or Slurm job state.

A policy is a list of rules, each naming outcomes and one action:

* exit codes, single or as ranges: ``0``, ``1-10``, ``16`` (0 to 255);
* signals by name, ``SIGKILL`` (``KILL`` and ``sigkill`` too), or as a shell reports
  them, ``128+9``.  A signal rule matches a process killed by that signal (return code
  ``-9``, as Popen and the Slurm client give it) and the exit code a shell reports for
  it (``137`` = 128 + 9);
* Slurm job states: ``NODE_FAIL``, ``BOOT_FAIL``, ``PREEMPTED``, ``TIMEOUT``,
  ``OUT_OF_MEMORY``, ``DEADLINE``, ``CANCELLED``, ``SPECIAL_EXIT`` (see :data:`SLURM_STATES`);
* ``*``: the catch-all, for every outcome no other rule names (default: ``fail``).

A policy without any rule is the default one: ``NODE_FAIL,BOOT_FAIL=retry_elsewhere,*=retry``.

The actions (:class:`Action`) are ``complete`` (the task is done), ``retry`` (run it
again after a backoff), ``retry_elsewhere`` (the same, with the Slurm node it ran on
excluded) and ``fail`` (it failed for good).

Which rule decides: a rule naming the job's Slurm state, when it ended in one; else the
rule naming the signal or the exit code; else exit code 0 is ``complete`` (unless a rule
names 0); else the catch-all.  Two rules that could both match one exit code or signal
(``1-10`` and ``5``; ``128-255`` and ``SIGKILL``) or name one state are a
:class:`~taurus_tools.errors.ConfigurationError`, as is an unknown name or action.

The compact form, for the command line and for ``str()``, is a comma-separated list:
``NAME=ACTION`` ends a rule; names without ``=`` before it belong to the same rule, so
``0=complete,1-10,16=retry,NODE_FAIL,SIGKILL=retry_elsewhere,*=fail`` is four rules.
The bounds go in the same list: ``retries=N`` (retries per task), ``run_retries=N``
(retries of all tasks of one run together), ``backoff=S`` (seconds before the first
retry, doubling for each further one), ``max_excluded=N`` (nodes excluded at most).

Only the standard library: :class:`~taurus_tools.transfer.config.CopyConfig` and the
command line parse policies before any machinery is imported.
"""

from __future__ import annotations

import enum
import re
import signal
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import ConfigurationError

__all__ = ["Action", "Decision", "ExitPolicy", "ExitRule", "SLURM_STATES"]

#: The Slurm job states a rule may name: those that say more than the exit code does
#: (COMPLETED and FAILED only restate it).
SLURM_STATES = (
    "BOOT_FAIL",
    "CANCELLED",
    "DEADLINE",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "SPECIAL_EXIT",
    "TIMEOUT",
)

#: The states of a job whose node failed (or never came up): the default policy retries them elsewhere.
NODE_FAILURE_STATES = ("NODE_FAIL", "BOOT_FAIL")

#: The highest exit code a process can have.
MAX_EXIT_CODE = 255
#: What a shell adds to a signal's number in the exit code of a killed child.
SHELL_SIGNAL_BASE = 128

#: The bounds the compact form may set, and the attribute each sets.
_SETTINGS = {
    "retries": "retries",
    "run_retries": "run_retries",
    "backoff": "backoff_s",
    "max_excluded": "max_excluded_nodes",
}

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_SHELL_SIGNAL = re.compile(r"^128\+(\d+)$")


class Action(enum.Enum):
    """What a policy says to do with a task that ended."""

    COMPLETE = "complete"
    RETRY = "retry"
    RETRY_ELSEWHERE = "retry_elsewhere"
    FAIL = "fail"

    @classmethod
    def of(cls, value: Union[str, "Action"]) -> "Action":
        """The action named ``value`` (its lower-case name); else a ConfigurationError listing them."""
        if isinstance(value, Action):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ConfigurationError(
                f"unknown exit-policy action {value!r}; valid: {', '.join(a.value for a in cls)}"
            ) from None

    @property
    def retries(self) -> bool:
        """The task runs again (``retry`` or ``retry_elsewhere``)."""
        return self in (Action.RETRY, Action.RETRY_ELSEWHERE)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _signal_of(token: str) -> Optional[int]:
    """The signal ``token`` names (``SIGKILL``, ``KILL``, ``128+9``), None if it names none."""
    shell = _SHELL_SIGNAL.match(token)
    if shell:
        number = int(shell.group(1))
        if not 1 <= number <= MAX_EXIT_CODE - SHELL_SIGNAL_BASE:
            raise ConfigurationError(
                f"{token!r}: a signal number is 1 to {MAX_EXIT_CODE - SHELL_SIGNAL_BASE}, got {number}"
            )
        return number
    name = token.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    member = getattr(signal.Signals, name, None) if name.isidentifier() else None
    return int(member) if isinstance(member, signal.Signals) else None


@dataclass(frozen=True)
class ExitRule:
    """One rule of an :class:`ExitPolicy`: the outcomes it names and its action.

    Attributes
    ----------
    codes : tuple of (int, int)
        Inclusive ranges of exit codes (0 to 255).
    signals : tuple of int
        Signal numbers: a process killed by one, or a shell's exit code 128 + it.
    states : tuple of str
        Slurm job states.
    action : Action
    """

    codes: Tuple[Tuple[int, int], ...]
    signals: Tuple[int, ...]
    states: Tuple[str, ...]
    action: Action

    @classmethod
    def parse(cls, names: Union[str, Iterable[str]], action: Union[str, Action]) -> "ExitRule":
        """A rule from names (``"1-10,16"``, ``["SIGKILL", "NODE_FAIL"]``) and an action."""
        tokens = [t.strip() for t in (names.split(",") if isinstance(names, str) else names)]
        codes: List[Tuple[int, int]] = []
        signals: List[int] = []
        states: List[str] = []
        for token in tokens:
            if not token:
                raise ConfigurationError(f"an exit-policy rule has an empty name (in {names!r})")
            found = _RANGE.match(token)
            if found:
                low = int(found.group(1))
                high = int(found.group(2)) if found.group(2) is not None else low
                if high > MAX_EXIT_CODE or low > high:
                    raise ConfigurationError(
                        f"exit code range {token!r} is not within 0-{MAX_EXIT_CODE} (low-high, low first)"
                    )
                codes.append((low, high))
            elif token.upper() in SLURM_STATES:
                states.append(token.upper())
            else:
                signum = _signal_of(token)
                if signum is None:
                    raise ConfigurationError(
                        f"unknown exit-policy name {token!r}; valid: exit codes (0, 1-10), signals "
                        f"(SIGKILL, SIGTERM, ..., or 128+N), Slurm job states ({', '.join(SLURM_STATES)}), "
                        "and * for every other outcome"
                    )
                signals.append(signum)
        return cls(tuple(codes), tuple(signals), tuple(states), Action.of(action))

    @property
    def names(self) -> str:
        """The names of the rule in the compact form: ``1-10,16,SIGKILL,NODE_FAIL``."""
        parts = [f"{low}" if low == high else f"{low}-{high}" for low, high in self.codes]
        parts += [_signal_name(s) for s in self.signals]
        parts += list(self.states)
        return ",".join(parts)

    def __str__(self) -> str:
        return f"{self.names}={self.action.value}"

    def has_code(self, code: int) -> bool:
        return any(low <= code <= high for low, high in self.codes)


@dataclass(frozen=True)
class Decision:
    """What :meth:`ExitPolicy.decide` found.

    Attributes
    ----------
    action : Action
    rule : str or None
        The rule that matched, in the compact form (``"1-10=retry"``, ``"*=fail"``); None
        for exit code 0 that no rule names (``complete``).
    outcome : str
        The outcome decided on, for messages: ``"exit 3"``, ``"SIGKILL"``,
        ``"Slurm NODE_FAIL (exit 1)"``.
    """

    action: Action
    rule: Optional[str]
    outcome: str


class ExitPolicy:
    """Rules from exit codes, signals and Slurm job states to actions, with bounded retries.

    See the module's description for the rules, the order in which they decide and the
    compact form.

    Parameters
    ----------
    rules : str or mapping, optional
        The compact form (``"0=complete,1-10,16=retry,NODE_FAIL=retry_elsewhere,*=fail"``),
        or a mapping of names to actions (``{"1-10,16": "retry", "NODE_FAIL":
        "retry_elsewhere", "*": "fail"}``).  The compact form may also set the bounds below.
        No rule at all (None, or only bounds: ``"max_excluded=2"``): the default policy,
        ``NODE_FAIL,BOOT_FAIL=retry_elsewhere,*=retry``.
    default : str or Action, optional
        The catch-all's action (``"*"`` in ``rules`` sets it too; not both).  Default ``fail``.
    retries : int, optional
        How often one task is retried at most; None: the caller's default (a copy's
        ``retries``; 2 elsewhere, :data:`DEFAULT_RETRIES`).
    run_retries : int, optional
        How many retries all tasks of one run (a copy, a ``waitfor``) may make together;
        None: no bound beyond ``retries`` per task.
    backoff_s : float, optional
        Seconds before a task's first retry, doubling for each further one (at most
        :data:`MAX_BACKOFF_S`); None: the caller's default (a copy's ``retry_delay_s``;
        1 s elsewhere).
    max_excluded_nodes : int, optional
        How many nodes ``retry_elsewhere`` may exclude in one run; None: no bound of its
        own (a node is never excluded when it is the last usable one).

    Examples
    --------
    >>> policy = ExitPolicy("0=complete,1-10,16=retry,NODE_FAIL=retry_elsewhere,*=fail")
    >>> policy.decide(3)
    Decision(action=<Action.RETRY: 'retry'>, rule='1-10,16=retry', outcome='exit 3')
    >>> policy.decide(1, "NODE_FAIL").action
    <Action.RETRY_ELSEWHERE: 'retry_elsewhere'>
    """

    #: Retries per task when neither the policy nor its user says.
    DEFAULT_RETRIES = 2
    #: Seconds before the first retry when neither the policy nor its user says.
    DEFAULT_BACKOFF_S = 1.0
    #: The longest backoff, in seconds.
    MAX_BACKOFF_S = 600.0

    def __init__(
        self,
        rules: Union[str, Mapping[str, Union[str, Action]], None] = None,
        *,
        default: Union[str, Action, None] = None,
        retries: Optional[int] = None,
        run_retries: Optional[int] = None,
        backoff_s: Optional[float] = None,
        max_excluded_nodes: Optional[int] = None,
    ) -> None:
        settings: Dict[str, object] = {}
        pairs: List[Tuple[List[str], Union[str, Action]]] = []
        if isinstance(rules, str):
            compact, settings = _parse_compact(rules)
            pairs = list(compact)
        elif isinstance(rules, Mapping):
            pairs = [([n.strip() for n in str(names).split(",")], action) for names, action in rules.items()]
        elif rules is not None:
            raise ConfigurationError(
                f"exit-policy rules must be a string or a mapping of names to actions, got {type(rules).__name__}"
            )
        parsed: List[ExitRule] = []
        catch_all: Optional[Action] = None
        for names, action in pairs:
            if names == ["*"]:
                if catch_all is not None:
                    raise ConfigurationError("the exit policy has two catch-all rules (*); give one")
                catch_all = Action.of(action)
            elif "*" in names:
                raise ConfigurationError(f"* stands alone in its rule (*=ACTION), got {','.join(names)}")
            else:
                parsed.append(ExitRule.parse(names, action))
        if default is not None:
            if catch_all is not None and Action.of(default) is not catch_all:
                raise ConfigurationError("the exit policy's catch-all is given twice (* and default=); give one")
            catch_all = Action.of(default)
        if not parsed and catch_all is None:  # bounds only: the default rules with them
            parsed = [ExitRule.parse(list(NODE_FAILURE_STATES), Action.RETRY_ELSEWHERE)]
            catch_all = Action.RETRY
        _check_overlaps(parsed)
        #: The rules, in the order given.
        self.rules: Tuple[ExitRule, ...] = tuple(parsed)
        #: The catch-all's action.
        self.default: Action = catch_all or Action.FAIL
        bounds = (("retries", retries), ("run_retries", run_retries), ("max_excluded_nodes", max_excluded_nodes))
        for name, value in bounds:
            if value is not None:
                if name in settings:
                    raise ConfigurationError(f"the exit policy's {name} is given twice (in the rules and as {name}=)")
                settings[name] = value
        if backoff_s is not None:
            if "backoff_s" in settings:
                raise ConfigurationError("the exit policy's backoff is given twice (in the rules and as backoff_s=)")
            settings["backoff_s"] = backoff_s
        self.retries: Optional[int] = _count("retries", settings.get("retries"))
        self.run_retries: Optional[int] = _count("run_retries", settings.get("run_retries"))
        self.max_excluded_nodes: Optional[int] = _count("max_excluded_nodes", settings.get("max_excluded_nodes"))
        self.backoff_s: Optional[float] = _seconds(settings.get("backoff_s"))

    # ------------------------------------------------------------------ building
    @classmethod
    def parse(cls, text: str) -> "ExitPolicy":
        """The policy in the compact form ``text`` (see the module's description)."""
        return cls(text)

    @classmethod
    def from_retry_on(cls, retry_on: Optional[Iterable[int]]) -> "ExitPolicy":
        """The policy a copy's ``retry_on`` meant: those codes (negative: killed by that
        signal) retry, a node failure retries elsewhere, everything else fails; None:
        every failure retries (the default policy)."""
        if retry_on is None:
            return cls.default_policy()
        codes = sorted({int(c) for c in retry_on})
        names = [str(c) for c in codes if c > 0] + [f"{_signal_name(-c)}" for c in codes if c < 0]
        rules: Dict[str, str] = {",".join(NODE_FAILURE_STATES): Action.RETRY_ELSEWHERE.value}
        if names:
            rules[",".join(names)] = Action.RETRY.value
        return cls(rules, default=Action.FAIL)

    @classmethod
    def default_policy(cls) -> "ExitPolicy":
        """What tasks do when no policy is given: a node failure retries elsewhere, every
        other failure retries (``NODE_FAIL,BOOT_FAIL=retry_elsewhere,*=retry``); also a
        policy that gives no rule at all (only bounds, or nothing)."""
        return cls()

    def with_defaults(self, *, retries: int, backoff_s: float) -> "ExitPolicy":
        """This policy with the bounds it leaves open (None) set to the caller's defaults."""
        return ExitPolicy(
            {r.names: r.action for r in self.rules},
            default=self.default,
            retries=self.retries if self.retries is not None else retries,
            run_retries=self.run_retries,
            backoff_s=self.backoff_s if self.backoff_s is not None else backoff_s,
            max_excluded_nodes=self.max_excluded_nodes,
        )

    # ------------------------------------------------------------------ deciding
    def decide(self, returncode: Optional[int], slurm_state: Optional[str] = None) -> Decision:
        """The action for a task that ended with ``returncode`` (negative: killed by that
        signal; None: not known) and, for a Slurm job, ``slurm_state`` (``NODE_FAIL``...).

        Returns
        -------
        Decision
            The action, the rule that matched (its compact form) and the outcome.
        """
        state = slurm_state.split()[0].upper() if slurm_state and slurm_state.strip() else None
        outcome = _outcome(returncode, state)
        if state is not None:
            for rule in self.rules:
                if state in rule.states:
                    return Decision(rule.action, str(rule), outcome)
        if returncode is not None:
            signum = -returncode if returncode < 0 else None
            if signum is None and SHELL_SIGNAL_BASE < returncode <= MAX_EXIT_CODE:
                signum = returncode - SHELL_SIGNAL_BASE  # a shell's 128+N, when a rule names N
            for rule in self.rules:
                if signum is not None and signum in rule.signals:
                    return Decision(rule.action, str(rule), outcome)
                if returncode >= 0 and rule.has_code(returncode):
                    return Decision(rule.action, str(rule), outcome)
            if returncode == 0:
                return Decision(Action.COMPLETE, None, outcome)
        return Decision(self.default, f"*={self.default.value}", outcome)

    def retry_allowed(self, task_retries: int, run_retries: int) -> bool:
        """Whether a task retried ``task_retries`` times may retry once more, in a run
        that has retried ``run_retries`` times in all."""
        per_task = self.retries if self.retries is not None else self.DEFAULT_RETRIES
        if task_retries >= per_task:
            return False
        return self.run_retries is None or run_retries < self.run_retries

    def backoff(self, task_retries: int) -> float:
        """Seconds to wait before retry number ``task_retries + 1`` of a task."""
        first = self.backoff_s if self.backoff_s is not None else self.DEFAULT_BACKOFF_S
        return min(first * (2**task_retries), self.MAX_BACKOFF_S)

    def exclusion_refused(
        self,
        node: Optional[str],
        *,
        excluded: Sequence[str],
        usable: Optional[Sequence[str]],
        avoided: Iterable[str] = (),
    ) -> Optional[str]:
        """Why ``node`` may not be excluded after a ``retry_elsewhere``; None when it may.

        Parameters
        ----------
        node : str or None
            The Slurm node the task ran on (None: not known).
        excluded : sequence of str
            The nodes this run has excluded so far (counted against ``max_excluded_nodes``).
        usable : sequence of str, optional
            The nodes of the partition that take jobs (``sinfo``); None: not known, then
            only the cap applies.
        avoided : iterable of str
            Nodes the tasks keep off anyway (the user's exclusions).
        """
        if not node:
            return "not excluded: no Slurm node known (not a Slurm job, or Slurm forgot it)"
        if node in excluded:
            return "not excluded again: excluded already"
        cap = self.max_excluded_nodes
        if cap is not None and len(excluded) >= cap:
            return f"not excluded: max_excluded_nodes={cap} reached ({', '.join(excluded) or 'none'})"
        if usable is not None:
            off = {*avoided, *excluded, node}
            if not [n for n in usable if n not in off]:
                return f"not excluded: the last usable node (sinfo lists {', '.join(usable) or 'none'} as usable)"
        return None

    # ------------------------------------------------------------------ forms
    def __str__(self) -> str:
        parts = [str(rule) for rule in self.rules] + [f"*={self.default.value}"]
        for key, attr in _SETTINGS.items():
            value = getattr(self, attr)
            if value is not None:
                parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"ExitPolicy({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExitPolicy) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def _parse_compact(text: str) -> Tuple[List[Tuple[List[str], str]], Dict[str, object]]:
    """``"0=complete,1-10,16=retry,retries=3"`` as ``([(["0"], "complete"), (["1-10", "16"], "retry")],
    {"retries": "3"})``."""
    pairs: List[Tuple[List[str], str]] = []
    settings: Dict[str, object] = {}
    pending: List[str] = []
    if not text.strip():
        return pairs, settings
    for token in (t.strip() for t in text.split(",")):
        if not token:
            raise ConfigurationError(f"exit policy {text!r} has an empty item (two commas, or one at an end)")
        name, sep, value = (part.strip() for part in token.partition("="))
        if not sep:
            pending.append(name)
            continue
        if name.lower() in _SETTINGS:
            if pending:
                raise ConfigurationError(f"in exit policy {text!r}: {','.join(pending)} has no action before {token!r}")
            attr = _SETTINGS[name.lower()]
            if attr in settings:
                raise ConfigurationError(f"exit policy {text!r} sets {name} twice")
            settings[attr] = value
            continue
        pairs.append(([*pending, name], value))
        pending = []
    if pending:
        raise ConfigurationError(
            f"in exit policy {text!r}: {','.join(pending)} has no action; write NAMES=ACTION, "
            f"ACTION one of {', '.join(a.value for a in Action)}"
        )
    return pairs, settings


def _check_overlaps(rules: Sequence[ExitRule]) -> None:
    """Raise ConfigurationError when two rules could match one outcome."""
    for i, first in enumerate(rules):
        for second in rules[i + 1:]:
            clash = _clash(first, second) or _clash(second, first)
            if clash:
                raise ConfigurationError(
                    f"exit-policy rules {first} and {second} overlap: both match {clash}; "
                    "give every exit code, signal and Slurm state to one rule"
                )


def _clash(first: ExitRule, second: ExitRule) -> Optional[str]:
    """What ``first`` and ``second`` both match (looking at ``first``'s codes and names), or None."""
    for state in first.states:
        if state in second.states:
            return state
    for signum in first.signals:
        if signum in second.signals:
            return _signal_name(signum)
        code = SHELL_SIGNAL_BASE + signum
        if second.has_code(code):
            return f"exit code {code} (a shell's {SHELL_SIGNAL_BASE}+{signum}: {_signal_name(signum)})"
    for low, high in first.codes:
        for other_low, other_high in second.codes:
            if low <= other_high and other_low <= high:
                return f"exit code {max(low, other_low)}"
    return None


def _outcome(returncode: Optional[int], state: Optional[str]) -> str:
    if returncode is None:
        code = "exit status unknown"
    elif returncode < 0:
        code = _signal_name(-returncode)
    else:
        code = f"exit {returncode}"
    return f"Slurm {state} ({code})" if state else code


def _count(name: str, value: object) -> Optional[int]:
    if value is None:
        return None
    try:
        number = int(str(value)) if not isinstance(value, int) else value
    except ValueError:
        number = -1
    if isinstance(value, bool) or number < 0:
        raise ConfigurationError(f"the exit policy's {name} must be a whole number >= 0, got {value!r}")
    return number


def _seconds(value: object) -> Optional[float]:
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text[:-1] if text.endswith("s") else text) if not isinstance(value, (int, float)) else value
    except ValueError:
        seconds = -1.0
    if isinstance(value, bool) or not seconds >= 0:
        raise ConfigurationError(f"the exit policy's backoff must be seconds >= 0 (2, 0.5, 10s), got {value!r}")
    return float(seconds)
