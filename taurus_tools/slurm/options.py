"""``SlurmOptions``: where and how Slurm jobs run (partition, account, time limit, nodes to avoid).

One frozen, validated object that the backends, the copy engine and the command line
share, so that each option is checked, normalised and documented in one place.  Only the
standard library: the command line reads the fields' help texts and defaults before it
imports any machinery.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple, Union

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_PARTITION",
    "SlurmOptions",
    "WithSlurmOptions",
    "node_names",
    "slurm_options",
    "slurm_time",
    "string_tuple",
]

#: The partition of the data-transfer nodes on ZIH-style clusters.
DEFAULT_PARTITION = "datamover"

#: A job time limit as the caller may give it: Slurm's text, minutes, or a timedelta.
TimeLimit = Union[str, int, _dt.timedelta, None]

_TIME_FORMS = (
    r"\d+",  # minutes
    r"\d+:\d{1,2}",  # minutes:seconds
    r"\d+:\d{1,2}:\d{1,2}",  # hours:minutes:seconds
    r"\d+-\d+",  # days-hours
    r"\d+-\d+:\d{1,2}",  # days-hours:minutes
    r"\d+-\d+:\d{1,2}:\d{1,2}",  # days-hours:minutes:seconds
)
_TIME_RE = re.compile("^(?:" + "|".join(_TIME_FORMS) + "|UNLIMITED|INFINITE)$", re.I)


def slurm_time(value: TimeLimit) -> Optional[str]:
    """Validate a Slurm time limit; ints are minutes, timedeltas are converted.

    Raises
    ------
    ConfigurationError
        For anything Slurm would reject, naming the accepted forms.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"time must be a Slurm time limit, not {value!r}")
    if isinstance(value, _dt.timedelta):
        total = int(value.total_seconds())
        if total <= 0:
            raise ConfigurationError(f"time must be positive, got {value}")
        days, rest = divmod(total, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{days}-{hours:02d}:{minutes:02d}:{seconds:02d}"
    if isinstance(value, int):
        if value <= 0:
            raise ConfigurationError(f"time in minutes must be positive, got {value}")
        return str(value)
    text = str(value).strip()
    if not _TIME_RE.match(text):
        raise ConfigurationError(
            f"time={value!r} is not a Slurm time limit; use minutes (90), MM:SS, HH:MM:SS, "
            "D-HH, D-HH:MM, D-HH:MM:SS, an int of minutes or a datetime.timedelta"
        )
    return text


def string_tuple(name: str, value: Any, what: str) -> Tuple[str, ...]:
    """``value`` (None, one string or a sequence of strings) as a tuple of non-empty strings.

    Raises
    ------
    ConfigurationError
        Naming ``name`` and ``what`` the strings are (``"glob patterns"``, ...).
    """
    if value is None:
        items: Any = ()
    elif isinstance(value, str):
        items = (value,)
    else:
        try:
            items = tuple(value)
        except TypeError:
            items = (value,)
    if not all(isinstance(v, str) and v for v in items):
        raise ConfigurationError(f"{name} must be a string or a sequence of non-empty strings ({what}), got {value!r}")
    return tuple(items)


def node_names(name: str, value: Any) -> Tuple[str, ...]:
    """``value`` (None, a node name or a sequence of them) as a tuple of Slurm node names."""
    nodes = string_tuple(name, value, "node names")
    if any(any(c.isspace() for c in node) for node in nodes):
        raise ConfigurationError(f"{name} must name Slurm nodes (no spaces), got {value!r}")
    return nodes


@dataclass(frozen=True)
class SlurmOptions:
    """Where and how Slurm jobs run: one validated set of options for every job.

    The slurm backend gives them to ``srun`` and ``sbatch``; the site's ``dt*`` tools get
    ``account`` and ``time`` (they choose their own partition and nodes).  Validated when
    made (also by :meth:`replace`), so a wrong value fails before anything runs.

    Parameters
    ----------
    partition : str, optional
        Partition of the data-transfer nodes (``--partition``); None: Slurm's default.
        The slurm backend falls back to the default partition, with a warning, when
        this one does not exist.
    account : str, optional
        Account to charge (``--account``).
    time : str, int or timedelta, optional
        Job time limit (``--time``): minutes (``90``), ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
        ``D-HH:MM``, ``D-HH:MM:SS``, an int of minutes or a :class:`datetime.timedelta`;
        kept as Slurm's text (``timedelta(hours=2)`` becomes ``"0-02:00:00"``).
    exclude : str or sequence of str
        Nodes the jobs must avoid (``--exclude``); a copy may add its own
        (``CopyConfig.exclude_nodes``).

    Examples
    --------
    >>> slurm = SlurmOptions(partition="datamover", account="p_x", time=90)
    >>> dm = Datamover(slurm=slurm)
    >>> slurm.args()
    ['--partition=datamover', '--account=p_x', '--time=90']
    """

    partition: Optional[str] = field(
        default=DEFAULT_PARTITION,
        metadata={"help": "Slurm partition of the data-transfer nodes, for the slurm backend", "cli": "--partition"},
    )
    account: Optional[str] = field(
        default=None, metadata={"help": "Slurm account to charge", "cli": "--account"}
    )
    time: TimeLimit = field(
        default=None,
        metadata={"help": "job time limit: minutes (90), HH:MM:SS, D-HH:MM:SS, ...", "cli": "--time"},
    )
    exclude: Tuple[str, ...] = field(default=(), metadata={"help": "Slurm nodes the jobs must avoid"})

    def __post_init__(self) -> None:
        partition = self.partition
        if partition is not None and (not isinstance(partition, str) or not partition.strip()):
            raise ConfigurationError(f"partition must be a non-empty name or None, got {partition!r}")
        account = self.account
        if account is not None and (not isinstance(account, str) or not account.strip() or " " in account):
            raise ConfigurationError(f"account must be a Slurm account name, got {account!r}")
        object.__setattr__(self, "time", slurm_time(self.time))
        object.__setattr__(self, "exclude", node_names("exclude", self.exclude))

    def replace(self, **changes: Any) -> "SlurmOptions":
        """A copy with ``changes``, validated; an unknown name lists the valid ones."""
        valid = {f.name: f.default for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ConfigurationError(
                f"unknown Slurm option(s) {', '.join(unknown)}; valid: "
                + ", ".join(f"{name}={default!r}" for name, default in valid.items())
            )
        return dataclasses.replace(self, **changes)

    def excluding(self, nodes: Union[str, Tuple[str, ...], List[str], None]) -> "SlurmOptions":
        """These options with ``nodes`` avoided too (each node named once)."""
        more = node_names("exclude", nodes)
        if not more:
            return self
        return self.replace(exclude=tuple(dict.fromkeys((*self.exclude, *more))))

    def args(self) -> List[str]:
        """The options as ``srun`` and ``sbatch`` take them (``--opt=value``), unset ones left out."""
        argv = [
            f"{opt}={value}"
            for opt, value in (("--partition", self.partition), ("--account", self.account), ("--time", self.time))
            if value is not None
        ]
        if self.exclude:
            argv.append("--exclude=" + ",".join(self.exclude))
        return argv


class WithSlurmOptions:
    """``partition``, ``account`` and ``time`` as attributes, read from ``self.slurm``.

    For the classes that took them as keywords before :class:`SlurmOptions` existed.
    """

    slurm: SlurmOptions

    @property
    def partition(self) -> Optional[str]:
        return self.slurm.partition

    @property
    def account(self) -> Optional[str]:
        return self.slurm.account

    @property
    def time(self) -> TimeLimit:
        """The job time limit as Slurm's text (``"0-02:00:00"``), or None."""
        return self.slurm.time


def slurm_options(slurm: Optional[SlurmOptions], where: str, **keywords: Any) -> SlurmOptions:
    """The options of a call that takes ``slurm=`` as well as the older keywords.

    ``slurm`` when given, else :class:`SlurmOptions` made from ``keywords`` (``partition=``,
    ``account=``, ``time=``, ...).  Giving both, with a keyword changed from its default,
    is a :class:`ConfigurationError`: which of the two was meant cannot be known.
    """
    if slurm is None:
        return SlurmOptions(**keywords)
    if not isinstance(slurm, SlurmOptions):
        raise ConfigurationError(f"{where}: slurm must be a SlurmOptions or None, got {slurm!r}")
    defaults: Mapping[str, Any] = {f.name: f.default for f in dataclasses.fields(SlurmOptions)}
    clash = [name for name, value in keywords.items() if value != defaults[name]]
    if clash:
        raise ConfigurationError(
            f"{where}: give {', '.join(clash)} inside slurm=SlurmOptions(...) or as keywords, not both"
        )
    return slurm
