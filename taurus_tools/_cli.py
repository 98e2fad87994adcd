"""The ``taurus-tools`` command line.

``taurus-tools info`` says which backend runs commands and why;
``taurus-tools ws allocate|list|extend|release|find`` manages workspaces;
``taurus-tools copy SRC DST`` is a parallel, resumable, verified copy;
``taurus-tools [OPTIONS] dtcp -r A B`` (and every other datamover command, and ``rclone``)
runs the command through that backend, waits with progress and live errors, prints its
output and exits with its exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._backends import BACKENDS, find_site_tools
from ._datamover import COMMANDS, Datamover
from ._errors import (
    BackendUnavailableError,
    CommandNotFoundError,
    CommandTimeoutError,
    ConfigurationError,
    SourceNotFoundError,
    TaurusToolsError,
)
from ._slurm import SlurmClient
from ._version import __version__
from ._wait import waitfor
from ._workspace import Workspace
from ._ws_format import WorkspaceInfo

__all__ = ["main"]

PASS_THROUGH = (*COMMANDS, "rclone")
#: Global options that take a value (so the value is not mistaken for a command).
_VALUED = ("--backend", "--partition", "--account", "--time", "--timeout", "--tools-dir")
#: Exit code for a command that ran out of time (as GNU timeout).
EXIT_TIMEOUT = 124
#: Exit code for bad usage or a library error before anything ran.
EXIT_USAGE = 2
#: Exit code for an operation that was tried and failed.
EXIT_FAILED = 1


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"taurus-tools {__version__}")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="where commands run (default: auto)"
    )
    parser.add_argument("--tools-dir", help="folder with the site's dt* tools")
    parser.add_argument(
        "--partition", default="datamover", help="Slurm partition for the slurm backend"
    )
    parser.add_argument("--account", help="Slurm account (--account)")
    parser.add_argument("--time", help="job time limit, e.g. 90 or 1-00:00:00")
    parser.add_argument(
        "--no-blocking",
        dest="blocking",
        action="store_false",
        help="submit batch jobs instead of keeping srun attached (the wait is the same)",
    )
    parser.add_argument("--timeout", type=float, help="cancel the command after this many seconds")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taurus-tools",
        description="Move data on HPC clusters. Datamover commands ("
        + ", ".join(PASS_THROUGH)
        + ") run through the chosen backend: taurus-tools [OPTIONS] dtcp -r SRC DST",
    )
    _global_options(parser)
    sub = parser.add_subparsers(
        dest="subcommand", metavar="{copy,info,ws," + ",".join(PASS_THROUGH) + "}"
    )
    info = sub.add_parser("info", help="backend chosen and why, tools found, Slurm partitions")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    _ws_parser(sub)
    _copy_parser(sub)
    return parser


def _copy_parser(sub: Any) -> None:
    p = sub.add_parser(
        "copy",
        help="parallel copy of a folder's contents (list once, shard by bytes, retry, resume, verify)",
    )
    p.add_argument("src", help="folder to copy (its contents)")
    p.add_argument("dst", help="folder to copy into (created if missing)")
    p.add_argument(
        "--workers", type=int, default=None, help="shards copied at once (default 8; locally at most one per CPU)"
    )
    p.add_argument("--shards", type=int, help="number of shards (default: one per worker)")
    p.add_argument("--shard-by", choices=("bytes", "count"), default="bytes")
    p.add_argument("--verify", choices=("size", "checksum", "none"), default="size")
    p.add_argument(
        "--atomic",
        action="store_true",
        help="write every file under a temporary name and rename it (default: only files that exist already)",
    )
    p.add_argument("--retries", type=int, default=2, help="retries of failed entries (default 2)")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="start over")
    p.add_argument("--report", help="where to write result_all.json")
    p.add_argument("--work-dir", help="listing, shards and state (default ~/.cache/taurus-tools/copies/...)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="leave out matches (repeatable)")
    p.add_argument("--exclude-node", action="append", default=[], dest="exclude_nodes", metavar="NODE")
    p.add_argument("--files-from", help="copy only these paths (one per line, relative to SRC)")
    p.add_argument("--dry-run", action="store_true", help="list and shard, copy nothing")
    p.add_argument("--no-space-check", dest="check_space", action="store_false")
    p.add_argument("--keep-work-dir", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar")


def copy_command(opts: argparse.Namespace) -> int:
    from ._parallel_copy import ParallelCopy

    pc = ParallelCopy(
        opts.src,
        opts.dst,
        datamover=_datamover(opts),
        workers=opts.workers,
        shards=opts.shards,
        shard_by=opts.shard_by,
        verify=opts.verify,
        atomic=opts.atomic,
        retries=opts.retries,
        resume=opts.resume,
        report=opts.report,
        work_dir=opts.work_dir,
        exclude=tuple(opts.exclude),
        exclude_nodes=tuple(opts.exclude_nodes),
        files_from=opts.files_from,
        dry_run=opts.dry_run,
        check_space=opts.check_space,
        keep_work_dir=opts.keep_work_dir,
        progress=not opts.quiet,
    )
    result = pc.run()
    print(result.summary())
    for message in result.failed_messages[:20]:
        print(f"  failed: {message}", file=sys.stderr)
    if len(result.failed_messages) > 20:
        print(f"  ... and {len(result.failed_messages) - 20} more (see the report)", file=sys.stderr)
    return 0 if result.ok else EXIT_FAILED


def _ws_parser(sub: Any) -> None:
    ws = sub.add_parser("ws", help="workspaces: allocate, list, extend, release, find")
    ws.add_argument(
        "--ws-backend", choices=("auto", "site", "local"), default="auto", help="ws_* tools to use"
    )
    ws_sub = ws.add_subparsers(dest="ws_command", metavar="{allocate,list,extend,release,find}")
    ws_sub.required = True

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = ws_sub.add_parser(name, help=help)
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
    if info.expired:
        return "expired"
    if info.remaining is None:
        return "-"
    hours = int(info.remaining.total_seconds()) // 3600
    return f"{hours // 24}d {hours % 24}h"


def ws_command(opts: argparse.Namespace) -> int:
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
        if token.startswith("-"):
            if token in _VALUED:
                i += 1  # skip its value
            i += 1
            continue
        if token in PASS_THROUGH:
            return list(argv[:i]), token, list(argv[i + 1 :])
        return None
    return None


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="taurus-tools: %(levelname)s: %(message)s")


def _datamover(opts: argparse.Namespace) -> Datamover:
    return Datamover(
        opts.backend,
        tools_dir=opts.tools_dir,
        partition=opts.partition,
        account=opts.account,
        time=opts.time,
        blocking=opts.blocking,
    )


def info(opts: argparse.Namespace) -> int:
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
    dm = _datamover(opts)
    if command == "rclone":
        handle = dm.rclone(*args, text=False)
    else:
        handle = dm.call(command, *args, text=False)
    try:
        rc = waitfor(handle, timeout=opts.timeout, progress=not opts.quiet)
    except CommandTimeoutError as exc:
        print(f"taurus-tools: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    sys.stdout.buffer.write(handle.stdout_text)
    sys.stdout.flush()
    return rc if rc >= 0 else 128 - rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``taurus-tools`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    split = split_pass_through(argv)
    try:
        if split is not None:
            globals_, command, args = split
            opts = parser.parse_args(globals_)
            _setup_logging(opts.verbose)
            return run_command(opts, command, args)
        opts = parser.parse_args(argv)
        _setup_logging(opts.verbose)
        if opts.subcommand == "info":
            return info(opts)
        if opts.subcommand == "ws":
            return ws_command(opts)
        if opts.subcommand == "copy":
            return copy_command(opts)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    except (ConfigurationError, CommandNotFoundError, BackendUnavailableError, SourceNotFoundError) as exc:
        print(f"taurus-tools: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TaurusToolsError as exc:
        print(f"taurus-tools: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("taurus-tools: interrupted; running commands were cancelled", file=sys.stderr)
        return 128 + int(signal.SIGINT)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
