"""The ``taurus-tools`` command line.

``taurus-tools info`` says which backend runs commands and why;
``taurus-tools ws allocate|list|extend|release|find`` manages workspaces;
``taurus-tools copy SRC DST`` is a parallel, resumable, verified copy;
``taurus-tools checkpoint PATH DEST --every 10m -- COMMAND ARGS...`` runs a command and saves
PATH to DEST while it runs and when it ends; ``taurus-tools checkpoint restore DEST PATH``
brings back the newest complete pass;
``taurus-tools report result_all.json [--html FILE]`` summarises a copy's report, or writes its page;
``taurus-tools [OPTIONS] dtcp -r A B`` (and every other datamover command, and ``rclone``)
runs the command through that backend, waits with progress and live errors, prints its
output and exits with its exit code.

Global options (``--backend``, ``-v``, ...) go anywhere for ``copy``, ``ws``, ``info`` and ``report``;
for the pass-through commands they must come before the command's name, since
everything after it belongs to the wrapped tool.  Options are never abbreviated
(``--back`` is an error, not ``--backend``): the pass-through split must know, without
argparse, which option takes a value.  SIGTERM and SIGHUP cancel like Ctrl-C:
running processes and Slurm jobs are stopped, and the exit status is 128 + the signal,
also when the terminal is gone (what cannot be written is dropped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from .._log import get_logger
from ..callbacks import Progress, progress_for_log
from ..transfer.config import CopyConfig, cli_fields
from ..errors import (
    BackendUnavailableError,
    CommandNotFoundError,
    CommandTimeoutError,
    ConfigurationError,
    DestinationUnreachableError,
    SourceNotFoundError,
    TaurusToolsError,
)
from .._names import BACKENDS, COMMANDS, WS_BACKENDS
from ..slurm.options import SlurmOptions
from .._version import VERSION_LINE, __version__

# The machinery (psutil, Slurm, threads) is imported by the subcommand that needs it, so
# that --version, --help and usage errors answer at once.
if TYPE_CHECKING:
    from ..datamover.datamover import Datamover
    from ..process.handle import Handle
    from ..workspace.format import WorkspaceInfo

__all__ = ["main"]

log = get_logger(__name__)

PASS_THROUGH = (*COMMANDS, "rclone")
#: Exit code for a command that ran out of time (as GNU timeout).
EXIT_TIMEOUT = 124
#: Exit code for bad usage or a library error before anything ran.
EXIT_USAGE = 2
#: Exit code for an operation that was tried and failed.
EXIT_FAILED = 1
#: Signals that cancel like Ctrl-C (SIGINT is Python's KeyboardInterrupt already).
CANCEL_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


# ---------------------------------------------------------------------- option values
def _number(text: str, convert: Callable[[str], Any], what: str) -> Any:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    value = _number(text, float, "a number of seconds > 0")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return float(value)


def whole_number(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum``."""
    what = f"a whole number >= {minimum}"

    def convert(text: str) -> int:
        value = _number(text, int, what)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return int(value)

    convert.__name__ = f"whole_number_{minimum}"
    return convert


positive_int = whole_number(1)
non_negative_int = whole_number(0)


# ---------------------------------------------------------------------- global options
#: The global options: names and argparse keywords.  Each parser (the top one, and every
#: subcommand's) gets them from :func:`_global_parent`.
_GLOBALS: Tuple[Tuple[Tuple[str, ...], Dict[str, Any]], ...] = (
    (("--backend",), dict(choices=BACKENDS, default="auto", help="where commands run (default: auto)")),
    (("--tools-dir",), dict(default=None, metavar="DIR", help="folder with the site's dt* tools")),
    # Default and help from SlurmOptions' fields (see _global_parent).
    (("--partition",), dict(slurm_option="partition")),
    (("--account",), dict(slurm_option="account")),
    (("--time",), dict(slurm_option="time")),
    (
        ("--no-blocking",),
        dict(
            dest="blocking",
            action="store_false",
            default=True,
            help="submit batch jobs instead of keeping srun attached (the wait is the same)",
        ),
    ),
    (
        ("--timeout",),
        dict(
            type=positive_seconds,
            default=None,
            metavar="SECONDS",
            help="cancel a pass-through command after this many seconds (> 0); exit code 124",
        ),
    ),
    (("-q", "--quiet"), dict(action="store_true", default=False, help="no progress bar")),
    (("-v", "--verbose"), dict(action="count", default=0, help="log more (-vv: debug)")),
)
#: Global options that take a value (so the value is not mistaken for a command).
_VALUED = tuple(name for names, kw in _GLOBALS if "action" not in kw for name in names)
#: Options of the top-level parser that take no value.
_TOP_FLAGS = (*(name for names, kw in _GLOBALS if "action" in kw for name in names), "-h", "--help", "--version")
#: Every parser is built with this: no abbreviations (``--back`` for ``--backend``).
_NO_ABBREV: Dict[str, Any] = dict(allow_abbrev=False)


def _global_parent(tag: Optional[str] = None) -> argparse.ArgumentParser:
    """The global options in a parent parser (``parents=[...]``).

    ``tag=None`` is the top-level copy, with the real defaults.  A subcommand's copy
    (``tag`` names the subcommand) has ``argparse.SUPPRESS`` for every default: argparse
    parses a subcommand into a namespace of its own and copies what is set there over
    the top-level one, so an option absent after the command keeps the value given
    before it (or the default), and one given after it wins.  ``-v`` counts into a
    ``verbose_<tag>`` of its own, summed by :func:`_merge_verbose`: ``-v copy -v`` is ``-vv``.
    """
    parent = argparse.ArgumentParser(add_help=False, **_NO_ABBREV)
    if tag is None:
        group = parent.add_argument_group("global options")
    else:
        group = parent.add_argument_group(
            "global options", "also accepted before the command (taurus-tools [global options] COMMAND ...)"
        )
    slurm_fields = {f.name: f for f in dataclasses.fields(SlurmOptions)}
    for names, keywords in _GLOBALS:
        kw = dict(keywords)
        if "slurm_option" in kw:
            kw = _option_keywords(slurm_fields[kw.pop("slurm_option")])
        if tag is not None:
            kw["default"] = argparse.SUPPRESS
            if kw.get("action") == "count":
                kw["dest"] = f"verbose_{tag}"
        group.add_argument(*names, **kw)
    return parent


def _option_keywords(f: dataclasses.Field[Any]) -> Dict[str, Any]:
    """argparse's keywords for an option made from a config field and its metadata.

    A bool becomes a flag (``--no-X`` when its default is True); ``min`` makes a whole
    number with that minimum, ``choices`` a choice; a tuple, a repeatable option; anything
    else a string.  The range and the default (``"default_text"`` when the default is
    worked out later) are added to the help text.
    """
    meta = f.metadata
    kw: Dict[str, Any] = {"dest": f.name, "help": meta["help"], "default": f.default}
    if "metavar" in meta:
        kw["metavar"] = meta["metavar"]
    if isinstance(f.default, bool):
        kw["action"] = "store_false" if f.default else "store_true"
        return kw
    if isinstance(f.default, tuple):
        kw.update(action="append", default=list(f.default))  # argparse appends to a list
        return kw
    if "min" in meta:
        kw["type"] = whole_number(meta["min"])
        kw["help"] += f", >= {meta['min']}"
    if "choices" in meta:
        kw["choices"] = meta["choices"]
    shown = meta.get("default_text", f.default)
    if shown is not None:
        kw["help"] += f" (default: {shown})"
    return kw


def _merge_verbose(opts: argparse.Namespace) -> argparse.Namespace:
    extra = [name for name in vars(opts) if name.startswith("verbose_")]
    for name in extra:
        opts.verbose += getattr(opts, name)
        delattr(opts, name)
    return opts


def parse_args(argv: Sequence[str], parser: Optional[argparse.ArgumentParser] = None) -> argparse.Namespace:
    """Parse a ``copy``/``ws``/``info`` command line (or a pass-through's global options).

    Usage errors exit 2 (argparse's ``SystemExit``), before anything runs.
    """
    return _merge_verbose((parser or build_parser()).parse_args(list(argv)))


_EPILOG = """Global options go anywhere for copy, ws, info and report: before or after the command, e.g.
  taurus-tools copy SRC DST --workers 4 --backend local
For the pass-through commands (dt*, rclone) they must come before the command's name,
since everything after it goes to the tool:
  taurus-tools --backend local --timeout 60 dtcp -r SRC DST
SIGTERM and SIGHUP cancel like Ctrl-C (processes and Slurm jobs are stopped; exit 128+N).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taurus-tools",
        description="Move data on HPC clusters. Datamover commands ("
        + ", ".join(PASS_THROUGH)
        + ") run through the chosen backend: taurus-tools [OPTIONS] dtcp -r SRC DST",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_parent()],
        **_NO_ABBREV,
    )
    parser.add_argument("--version", action="version", version=VERSION_LINE)
    sub = parser.add_subparsers(
        dest="subcommand", metavar="{copy,checkpoint,info,report,ws," + ",".join(PASS_THROUGH) + "}"
    )
    info = sub.add_parser(
        "info",
        help="backend chosen and why, tools found, Slurm partitions",
        description="Which backend runs commands and why, the site tools found, Slurm's partitions.",
        parents=[_global_parent("info")],
        **_NO_ABBREV,
    )
    info.add_argument("--json", action="store_true", help="machine-readable output")
    _ws_parser(sub)
    _copy_parser(sub)
    _checkpoint_parser(sub)
    _report_parser(sub)
    return parser


def _copy_parser(sub: Any) -> None:
    p = sub.add_parser(
        "copy",
        help="parallel copy of a folder's contents (list once, shard by bytes, retry, resume, verify)",
        description="Parallel copy of SRC's contents into DST: list once, shard by bytes, retry, "
        "resume, verify. Run the same command again after a crash, Ctrl-C or SIGTERM to resume.",
        parents=[_global_parent("copy")],
        **_NO_ABBREV,
    )
    p.add_argument(
        "src", help="folder to copy (its contents), or one file or object: a path, s3://BUCKET/PREFIX or REMOTE:PATH"
    )
    p.add_argument("dst", help="folder to copy into (created if missing)")
    group = p.add_argument_group("copy options")
    for f in cli_fields():  # CopyConfig's fields: their defaults, ranges and help are written there
        group.add_argument(f.metadata["cli"], **_option_keywords(f))


def copy_config(opts: argparse.Namespace) -> CopyConfig:
    """The :class:`CopyConfig` a ``copy`` command line asks for (``-q``: no progress bar)."""
    return CopyConfig(**{f.name: getattr(opts, f.name) for f in cli_fields()}, progress=not opts.quiet)


def _progress(opts: argparse.Namespace) -> Progress:
    """Progress as the command line shows it: none with ``-q``; a bar on a terminal; where
    stderr is a file or a pipe (a batch job's log), a line at a few milestones and at the
    end of work that lasts a second or more, instead of one line per update."""
    from ..datamover.wait import PROGRESS_DELAY_S

    return False if opts.quiet else progress_for_log(delay=PROGRESS_DELAY_S)


def copy_command(opts: argparse.Namespace) -> int:
    from ..transfer.parallel_copy import ParallelCopy

    # Before the Datamover: a wrong value stops before any Slurm call.  Into a log, progress
    # is milestone lines (the config itself says only whether to show progress).
    config = copy_config(opts).replace(progress=_progress(opts))
    pc = ParallelCopy(opts.src, opts.dst, config, datamover=_datamover(opts))
    try:
        result = pc.run()
    except KeyboardInterrupt as exc:
        _say(
            f"taurus-tools: copy stopped by {_signal_name(exc)}; its shards were cancelled. "
            f"Run the same command again to resume it (work dir: {os.path.abspath(pc.work_dir)})"
        )
        return _signal_exit(exc)
    print(result.summary())
    for message in result.failed_messages[:20]:
        print(f"  failed: {message}", file=sys.stderr)
    if len(result.failed_messages) > 20:
        print(f"  ... and {len(result.failed_messages) - 20} more (see the report)", file=sys.stderr)
    return 0 if result.ok else EXIT_FAILED


def _report_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="a finished copy's report (result_all.json): its summary, or a page with its shards' timeline",
        description="Read a copy's report (result_all.json). Prints its summary; with --html, writes "
        "the page a notebook shows for the copy: counts, failures, a timeline of the shard attempts "
        "by host, and their table.",
        parents=[_global_parent("report")],
        **_NO_ABBREV,
    )
    p.add_argument("report", help="the report, result_all.json")
    p.add_argument("--html", metavar="FILE", help="write the page to FILE (HTML, one file, no scripts)")


def report_command(opts: argparse.Namespace) -> int:
    """``taurus-tools report REPORT [--html FILE]``: bad input (missing, not JSON, not a
    report) exits 2 with one line saying what is wrong; a page that cannot be written, 1."""
    from pathlib import Path

    from ..display import report_page
    from ..transfer.parallel_copy import CopyResult

    path = Path(opts.report)
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        _say(f"taurus-tools: error: cannot read the report: {_os_error(exc)}")
        return EXIT_USAGE
    except ValueError as exc:  # json's error, or bytes that are no UTF-8
        _say(f"taurus-tools: error: {str(path)!r} is not a copy report: it is not JSON ({exc})")
        return EXIT_USAGE
    try:
        result = CopyResult.from_report(data, path)
    except ConfigurationError as exc:
        _say(f"taurus-tools: error: {str(path)!r} is {exc}")
        return EXIT_USAGE
    if opts.html is None:
        print(result.summary())
        return 0
    out = Path(opts.html)
    out.write_text(report_page(result), encoding="utf-8")
    print(f"wrote {out}")
    return 0


def _checkpoint_parser(sub: Any) -> None:
    p = sub.add_parser(
        "checkpoint",
        help="run a command and save a folder to s3:// or a folder while it runs and when it ends",
        description="taurus-tools checkpoint PATH DEST [options] -- COMMAND ARGS...: run COMMAND (no shell), "
        "save the files of PATH to DEST (s3://BUCKET/PREFIX, REMOTE:PATH of rclone, or a folder) "
        "every --every, and once more when "
        "COMMAND ends, fails, or this process gets SIGTERM/SIGINT (passed on to COMMAND) or SIGUSR1 (COMMAND "
        "gets SIGTERM; for sbatch --signal=B:USR1@120). Exit status: COMMAND's, or 74 when the final pass "
        "did not save everything.  taurus-tools checkpoint restore DEST PATH: write the newest complete "
        "pass into PATH.",
        parents=[_global_parent("checkpoint")],
        **_NO_ABBREV,
    )
    p.add_argument("where", nargs="+", metavar="PATH DEST | restore DEST PATH")
    group = p.add_argument_group("checkpoint options")
    group.add_argument("--every", default="10m", help="time between passes: 30s, 10m, 2h, 1d or seconds (default: 10m)")
    group.add_argument(
        "--regex", default=None, help="save only files whose path relative to PATH (/ separators) matches (re.search)"
    )
    group.add_argument(
        "--settle", default="2s", help="files modified more recently wait for a later pass (default: 2s)"
    )
    group.add_argument(
        "--final-timeout",
        default="60s",
        help="how long the final pass keeps trying files still changing or a failing DEST (default: 60s)",
    )
    group.add_argument(
        "--start-unreachable", action="store_true", help="start the command even if DEST cannot be reached now"
    )
    group.add_argument(
        "--propagate-deletions",
        action="store_true",
        help="leave files deleted from PATH out of the next pass, so a restore does not bring them back "
        "(default: never; a restore gives every file ever saved)",
    )
    group.add_argument("--endpoint-url", metavar="URL", default=None, help="S3 server for s3:// (default: boto3's)")
    group.add_argument("--profile", metavar="NAME", default=None, help="AWS profile for s3:// (default: boto3's)")
    group.add_argument(
        "--datamover",
        action="store_true",
        help="write a folder DEST through the datamover that --backend (and --tools-dir, --partition, --account, "
        "--time, --no-blocking) choose: dtrsync, one call per pass, e.g. into /projects where jobs cannot write",
    )
    group.add_argument(
        "--pass-policy",
        metavar="RULES",
        default=None,
        help="what a pass's process (rclone copy, dtrsync) is retried on within the pass, by exit code, signal "
        "or Slurm state, e.g. 5=retry,*=fail,retries=1 (default: the tool's temporary errors, once)",
    )
    group.add_argument(
        "--exit-policy",
        metavar="RULES",
        default=None,
        help="what COMMAND's exit leads to, e.g. 0=complete,1-255=retry,retries=2: retry runs it again after a "
        "pass (bounded, with backoff); retry_elsewhere in a requeueable Slurm batch job requeues the job with "
        "this node excluded; complete and fail end with COMMAND's status (default: no retry)",
    )


def split_checkpoint(argv: Sequence[str]) -> Optional[Tuple[List[str], List[str]]]:
    """``[global options] checkpoint ... -- COMMAND ARGS`` as (before ``--``, the command);
    None when the subcommand is not ``checkpoint`` or there is no ``--``."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-", "--"):
        i += 2 if argv[i] in _VALUED else 1
    if i >= len(argv) or argv[i] != "checkpoint" or "--" not in argv[i:]:
        return None
    cut = argv.index("--", i)
    return list(argv[:cut]), list(argv[cut + 1 :])


def checkpoint_command(opts: argparse.Namespace, command: Optional[List[str]]) -> int:
    from ..checkpoint.checkpoint import Checkpoint
    from ..checkpoint.command import run_checkpointed
    from ..checkpoint.restore import restore
    from ..transfer.s3 import S3Config

    s3 = S3Config(endpoint_url=opts.endpoint_url, profile=opts.profile)
    where = opts.where
    if where[0] == "restore" and command is None:
        if len(where) != 3:
            raise ConfigurationError("usage: taurus-tools checkpoint restore DEST PATH")
        manifest = restore(where[1], where[2], s3=s3)
        if not opts.quiet:
            files = len(manifest.files)
            _say(f"taurus-tools: checkpoint: restored pass {manifest.number} ({files} files) into {where[2]}")
        return 0
    if len(where) != 2 or not command:
        raise ConfigurationError(
            "usage: taurus-tools checkpoint PATH DEST [options] -- COMMAND ARGS... "
            "(or: taurus-tools checkpoint restore DEST PATH)"
        )
    checkpoint = Checkpoint(
        where[0],
        where[1],
        every=opts.every,
        regex=opts.regex,
        settle=opts.settle,
        final_timeout=opts.final_timeout,
        start_unreachable=opts.start_unreachable,
        propagate_deletions=opts.propagate_deletions,
        s3=s3,
        datamover=_datamover(opts) if opts.datamover else None,
        policy=opts.pass_policy,
    )
    return run_checkpointed(command, checkpoint, say=_say, quiet=opts.quiet, policy=opts.exit_policy)


def _ws_parser(sub: Any) -> None:
    ws = sub.add_parser(
        "ws",
        help="workspaces: allocate, list, extend, release, find",
        parents=[_global_parent("ws")],
        **_NO_ABBREV,
    )
    ws.add_argument(
        "--ws-backend", choices=WS_BACKENDS, default="auto", help="ws_* tools to use"
    )
    ws_sub = ws.add_subparsers(dest="ws_command", metavar="{allocate,list,extend,release,find}")
    ws_sub.required = True

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = ws_sub.add_parser(
            name, help=help, description=help, parents=[_global_parent(f"ws_{name}")], **_NO_ABBREV
        )
        p.add_argument("-F", "--filesystem", help="workspace filesystem (ws_list -l shows them)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = add("allocate", "allocate (or reuse) a workspace; prints its path")
    p.add_argument("name")
    p.add_argument("days")
    p.add_argument("-c", "--comment")
    p = add("list", "your workspaces")
    p.add_argument("pattern", nargs="?", help="glob on the workspace id")
    p = add("extend", "set a new lifetime, using up one extension")
    p.add_argument("name")
    p.add_argument("days")
    p = add("release", "release a workspace (data moved aside, restorable)")
    p.add_argument("name")
    p.add_argument("--delete-data", action="store_true", help="delete the data at once")
    p = add("find", "print a workspace's path")
    p.add_argument("name")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _remaining(info: WorkspaceInfo) -> str:
    if info.released:
        return "released"
    if info.expired:
        return "expired"
    if info.remaining is None:
        return "-"
    hours = int(info.remaining.total_seconds()) // 3600
    return f"{hours // 24}d {hours % 24}h"


def ws_command(opts: argparse.Namespace) -> int:
    from ..workspace.workspace import Workspace

    ws = Workspace(opts.ws_backend)
    cmd = opts.ws_command
    fs = opts.filesystem
    if cmd in ("allocate", "extend"):
        if cmd == "allocate":
            info = ws.allocate(opts.name, opts.days, filesystem=fs, comment=opts.comment)
        else:
            info = ws.extend(opts.name, opts.days, filesystem=fs)
        if opts.json:
            print(json.dumps(info.to_dict(), indent=2))
        else:
            print(info.path)
            print(
                f"{info.id}: expires {_when(info.expires)} ({_remaining(info)} left), "
                f"{info.extensions_left if info.extensions_left is not None else '?'} extensions left",
                file=sys.stderr,
            )
        return 0
    if cmd == "list":
        infos = ws.list(opts.pattern, filesystem=fs)
        if opts.json:
            print(json.dumps([i.to_dict() for i in infos], indent=2))
            return 0
        rows = [("ID", "FILESYSTEM", "EXPIRES", "LEFT", "EXT", "PATH")]
        for i in infos:
            ext = str(i.extensions_left) if i.extensions_left is not None else "-"
            rows.append((i.id, i.filesystem or "-", _when(i.expires), _remaining(i), ext, str(i.path)))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
        if not infos:
            print("(no workspaces)", file=sys.stderr)
        return 0
    if cmd == "release":
        ws.release(opts.name, filesystem=fs, delete_data=opts.delete_data)
        if opts.json:
            print(json.dumps({"released": opts.name}))
        else:
            print(f"released {opts.name}" + (" (data deleted)" if opts.delete_data else ""), file=sys.stderr)
        return 0
    path = ws.find(opts.name, filesystem=fs)
    if path is None:
        print(f"taurus-tools: no workspace named {opts.name!r}", file=sys.stderr)
        return 1
    print(json.dumps({"id": opts.name, "path": str(path)}) if opts.json else path)
    return 0


def split_pass_through(argv: Sequence[str]) -> Optional[Tuple[List[str], str, List[str]]]:
    """Split ``[global options] COMMAND args...``; None when no pass-through command is named."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return None
        if token.startswith("-") and token != "-":
            if token in _VALUED:
                i += 1  # skip its value
            i += 1
            continue
        if token in PASS_THROUGH:
            return list(argv[:i]), token, list(argv[i + 1 :])
        return None
    return None


def _is_top_option(token: str) -> bool:
    """Whether the top-level parser knows ``token`` as it is written (never as a prefix)."""
    if token in _VALUED or token in _TOP_FLAGS:
        return True
    if token.startswith("--"):
        return token.partition("=")[0] in _VALUED  # --backend=local
    flags = {name[1] for name in _TOP_FLAGS if len(name) == 2}
    valued = {name[1] for name in _VALUED if len(name) == 2}
    letters = token[1:]
    # -vq, -vv; a short option with a value may end the group and hold it (-x5).
    for letter in letters:
        if letter in valued:
            return True
        if letter not in flags:
            return False
    return bool(letters)


def unknown_global_option(argv: Sequence[str]) -> Optional[str]:
    """The first option before the command's name that the top level does not know, or None.

    Without this, ``taurus-tools --back local dtls`` would read ``local`` as the command
    (argparse: "invalid choice: 'local'"), since ``--back`` is unknown and nobody can
    tell that it was meant to take a value.
    """
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--" or not token.startswith("-") or token == "-":
            return None
        if not _is_top_option(token):
            return token
        i += 2 if token in _VALUED else 1
    return None


def _unknown_option_message(token: str) -> str:
    name = token.partition("=")[0]
    known = sorted({*_VALUED, *_TOP_FLAGS})
    hints = [k for k in known if k.startswith(name) and name.startswith("--")]
    import difflib

    hints = hints or difflib.get_close_matches(name, known, n=2)
    hint = f" (did you mean {' or '.join(hints)}?)" if hints else ""
    return (
        f"unrecognized option {token!r} before the command{hint}; options are never "
        "abbreviated, and a command's own options go after its name"
    )


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="taurus-tools: %(levelname)s: %(message)s")


def _datamover(opts: argparse.Namespace) -> Datamover:
    from ..datamover.datamover import Datamover

    slurm = SlurmOptions(partition=opts.partition, account=opts.account, time=opts.time)
    return Datamover(opts.backend, tools_dir=opts.tools_dir, slurm=slurm, blocking=opts.blocking)


def info(opts: argparse.Namespace) -> int:
    from ..datamover.backends import find_site_tools
    from ..slurm.client import SlurmClient

    dm = _datamover(opts)
    data: Dict[str, Any] = {
        "version": __version__,
        "backend": dm.backend.name,
        "reason": dm.backend.reason,
        "commands": list(dm.commands()),
    }
    try:
        tools, searched = find_site_tools(opts.tools_dir)
    except TaurusToolsError as exc:
        tools, searched = {}, [str(exc)]
    data["site_tools"] = tools
    data["site_tools_searched"] = searched
    client = SlurmClient()
    ok, why = client.available()
    data["slurm"] = {"available": ok, "detail": why, "partitions": [], "default_partition": None}
    if ok:
        names, default = client.partitions()
        data["slurm"].update(partitions=names, default_partition=default)
    if opts.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"taurus-tools {__version__}")
    print(f"backend:    {data['backend']}")
    print(f"why:        {data['reason']}")
    print(f"commands:   {' '.join(data['commands']) or 'none'}")
    if tools:
        print("site tools: " + ", ".join(f"{k}={v}" for k, v in sorted(tools.items())))
    else:
        print(f"site tools: none found (searched {', '.join(searched)})")
    slurm = data["slurm"]
    if slurm["available"]:
        parts = [p + (" (default)" if p == slurm["default_partition"] else "") for p in slurm["partitions"]]
        print(f"slurm:      answers; partitions: {', '.join(parts) or 'none'}")
    else:
        print(f"slurm:      not usable ({slurm['detail']})")
    return 0


def run_command(opts: argparse.Namespace, command: str, args: List[str]) -> int:
    from ..process.tree import signals_deferred
    from ..datamover.wait import waitfor

    dm = _datamover(opts)
    handle: Optional[Handle] = None
    try:
        # A signal between the start and `handle = ...` would leave a process that
        # nobody cancels: it is held back until the handle has its name, and then
        # raised here, inside the try.
        with signals_deferred():
            if command == "rclone":
                handle = dm.rclone(*args, text=False)
            else:
                handle = dm.call(command, *args, text=False)
        rc = waitfor(handle, timeout=opts.timeout, progress=_progress(opts))
    except CommandTimeoutError as exc:
        _say(f"taurus-tools: {exc}")
        return EXIT_TIMEOUT
    except KeyboardInterrupt as exc:
        if handle is not None and not handle.done():  # waitfor cancels; not before it ran
            handle.cancel()
        _say(f"taurus-tools: {command} cancelled by {_signal_name(exc)} (its processes and any Slurm job stopped)")
        return _signal_exit(exc)
    except BaseException:
        # E.g. waitfor could not write a line of stderr (the terminal is gone): the
        # command must not outlive us.
        if handle is not None and not handle.done():
            handle.cancel()
        raise
    sys.stdout.buffer.write(handle.stdout_text)
    sys.stdout.flush()
    return rc if rc >= 0 else 128 - rc


# ---------------------------------------------------------------------- signals
class Cancelled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so that it takes Ctrl-C's path.

    ``waitfor`` and ``ParallelCopy.run`` catch KeyboardInterrupt, cancel what runs (local
    process trees and Slurm jobs), and re-raise; :func:`main` then exits 128 + ``signum``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _signum(exc: BaseException) -> int:
    return exc.signum if isinstance(exc, Cancelled) else int(signal.SIGINT)


def _signal_name(exc: BaseException) -> str:
    return signal.Signals(_signum(exc)).name


def _signal_exit(exc: BaseException) -> int:
    return 128 + _signum(exc)


class _CancelOnSignals:
    """Turn SIGTERM and SIGHUP into :class:`Cancelled` while :func:`main` runs.

    Installed only in the main thread (Python runs signal handlers there and nowhere
    else) and never over a signal that is ignored (``nohup`` keeps working).  Only the
    first signal raises: later ones, while the cancellation runs, are logged and
    dropped, so that they do not cut the clean-up short (SIGKILL still ends everything).
    Armed before the first handler is in place, so a signal that arrives while they are
    being installed raises too; ``__enter__`` then puts the old handlers back itself.
    """

    def __init__(self) -> None:
        self._previous: Dict[int, Any] = {}
        self._armed = False
        self._fired = False

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._fired:
            log.warning("%s received while cancelling: ignored, the cancellation goes on", name)
            return
        if not self._armed:
            log.warning("%s received while exiting: ignored", name)
            return
        self._fired = True
        raise Cancelled(signum)

    def __enter__(self) -> "_CancelOnSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        self._armed = True
        try:
            for sig in CANCEL_SIGNALS:
                previous = signal.getsignal(sig)
                if previous == signal.SIG_IGN:
                    continue
                self._previous[sig] = previous  # noted first: the handler may raise at once
                signal.signal(sig, self._handler)
        except BaseException:  # Cancelled: `with` does not call __exit__ for us
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._armed = False  # from here a signal only logs: nothing is left to cancel
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


# ---------------------------------------------------------------------- errors
def _os_error(exc: OSError) -> str:
    """An OSError as one line: ``Permission denied: '/projects/x'``."""
    if not exc.strerror:
        return " ".join(str(exc).split()) or type(exc).__name__

    def quoted(name: Any) -> str:  # repr: quotes, and a newline in a name stays on the line
        return repr(os.fsdecode(name) if isinstance(name, (str, bytes)) else name)

    text = exc.strerror
    if exc.filename is not None:
        text += f": {quoted(exc.filename)}"
        if exc.filename2 is not None:
            text += f" -> {quoted(exc.filename2)}"
    return text


# ---------------------------------------------------------------------- output
def _say(text: str) -> None:
    """Print a line on stderr; if it cannot be written (SIGHUP: the terminal is gone, EIO
    or EPIPE), drop it: the exit status must stay what it is."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        _to_devnull(sys.stderr)


def _to_devnull(stream: Any) -> None:
    """Point a standard stream that can no longer be written at /dev/null.

    What it still buffers then goes there, so that Python's flush at exit succeeds (a
    failed one turns any exit status into 120).
    """
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        stream.flush()
    except (OSError, ValueError):
        pass


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            _to_devnull(stream)


# ---------------------------------------------------------------------- entry point
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``taurus-tools`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with _CancelOnSignals():
            try:
                rc = _main(args)
            except KeyboardInterrupt as exc:
                rc = _stopped(exc)
    except KeyboardInterrupt as exc:  # as the handlers were being installed
        rc = _stopped(exc)
    _flush_std_streams()
    return rc


def _stopped(exc: BaseException) -> int:
    _say(f"taurus-tools: stopped by {_signal_name(exc)}")
    return _signal_exit(exc)


def _main(argv: List[str]) -> int:
    if argv == ["--version"]:  # what argparse's version action prints, without building the parser
        print(VERSION_LINE)
        return 0
    parser = build_parser()
    unknown = unknown_global_option(argv)
    if unknown is not None:
        parser.error(_unknown_option_message(unknown))  # exits 2
    split = split_pass_through(argv)
    checkpointed = split_checkpoint(argv) if split is None else None
    try:
        if checkpointed is not None:
            opts = parse_args(checkpointed[0], parser)
            _setup_logging(opts.verbose)
            return checkpoint_command(opts, checkpointed[1])
        if split is not None:
            globals_, command, args = split
            opts = parse_args(globals_, parser)
            _setup_logging(opts.verbose)
            return run_command(opts, command, args)
        opts = parse_args(argv, parser)
        _setup_logging(opts.verbose)
        if opts.subcommand == "info":
            return info(opts)
        if opts.subcommand == "ws":
            return ws_command(opts)
        if opts.subcommand == "copy":
            return copy_command(opts)
        if opts.subcommand == "checkpoint":
            return checkpoint_command(opts, None)
        if opts.subcommand == "report":
            return report_command(opts)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    except (
        ConfigurationError,
        CommandNotFoundError,
        BackendUnavailableError,
        SourceNotFoundError,
        DestinationUnreachableError,
    ) as exc:
        _say(f"taurus-tools: error: {exc}")
        return EXIT_USAGE
    except TaurusToolsError as exc:
        _say(f"taurus-tools: error: {exc}")
        return EXIT_FAILED
    except OSError as exc:
        log.debug("%s", type(exc).__name__, exc_info=True)
        _say(f"taurus-tools: error: {_os_error(exc)}")
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
