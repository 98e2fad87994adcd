"""HTML for Jupyter and for reports: escaped text, small tables, and a copy's shards as a timeline.

The objects that show themselves in a notebook (``CopyResult``, a running ``ParallelCopy``,
``WorkspaceInfo`` and lists of them, command handles) get their ``_repr_html_`` from here,
and ``taurus-tools report --html`` writes a page from the same pieces.  Standard library
only: importing this costs nothing the package does not load already.

Every value is escaped when it becomes HTML, unless it is :class:`Markup` (HTML built
here).  File names are hostile input: besides ``<``, ``&`` and quotes they may hold line
breaks, control and bidirectional-override characters, and bytes that are not UTF-8
(surrogate escapes); those are shown as visible escapes (``\\n``, ``\\x1b``, ``\\udcff``),
so a name reads as what it is and the markup around it stays intact.
"""

from __future__ import annotations

import datetime as _dt
import html
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "Markup",
    "text",
    "human_bytes",
    "human_duration",
    "table",
    "fields",
    "details",
    "box",
    "timeline_svg",
    "page",
    "copy_result_html",
    "copy_status_html",
    "report_page",
    "workspace_html",
    "workspaces_html",
    "handle_html",
    "TIMELINE_LEFT",
    "TIMELINE_WIDTH",
    "TIMELINE_ROW",
]


class Markup(str):
    """HTML made here: put into other HTML as it is (everything else is escaped)."""


#: Characters shown as escapes: C0/C1 controls, DEL, line and paragraph separators and the
#: bidirectional controls (which would make a name read as another).
_INVISIBLE = frozenset(
    (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(value: str) -> str:
    """``value`` with invisible characters and surrogates as backslash escapes."""
    if value.isprintable() and value.isascii():
        return value
    out = []
    for ch in value:
        code = ord(ch)
        if code in _INVISIBLE:
            out.append(_NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        elif 0xD800 <= code <= 0xDFFF:  # a byte that was not UTF-8 (surrogateescape), or worse
            out.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def text(value: Any) -> Markup:
    """``value`` as HTML text: :class:`Markup` as it is, anything else ``str()``-ed, made
    visible (see the module) and escaped, quotes included (safe in attributes too)."""
    if isinstance(value, Markup):
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    return Markup(html.escape(_visible(str(value)), quote=True))


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB`` (bytes as whole numbers, then one decimal)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def human_duration(seconds: Optional[float]) -> str:
    """``75.2`` -> ``1 min 15 s``; ``3.25`` -> ``3.2 s``; None -> ``-``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def when(value: Optional[_dt.datetime]) -> str:
    """A local time to the minute (``2026-12-03 14:10``), ``-`` for None."""
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


# ---------------------------------------------------------------------- building blocks
_CELL = "padding:1px 8px;text-align:left;vertical-align:top"
_NUM = "padding:1px 8px;text-align:right;vertical-align:top"


def table(head: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[int] = ()) -> Markup:
    """A table; every cell escaped (but :class:`Markup`); columns in ``numeric`` right-aligned."""
    right = set(numeric)
    parts = ["<table style='border-collapse:collapse'><thead><tr>"]
    parts += [f"<th style='{_NUM if i in right else _CELL}'>{text(h)}</th>" for i, h in enumerate(head)]
    parts.append("</tr></thead><tbody>")
    for row in rows:
        cells = (f"<td style='{_NUM if i in right else _CELL}'>{text(c)}</td>" for i, c in enumerate(row))
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return Markup("".join(parts))


def fields(pairs: Iterable[Tuple[str, Any]]) -> Markup:
    """A two-column table of names and values (pairs whose value is None are left out)."""
    rows = "".join(
        f"<tr><th style='{_CELL};font-weight:normal;color:#555'>{text(k)}</th><td style='{_CELL}'>{text(v)}</td></tr>"
        for k, v in pairs
        if v is not None
    )
    return Markup(f"<table style='border-collapse:collapse'>{rows}</table>")


def details(summary: Any, body: Any, *, open: bool = False) -> Markup:
    """A collapsible block (``<details>``), closed unless ``open``."""
    return Markup(f"<details{' open' if open else ''}><summary>{text(summary)}</summary>{text(body)}</details>")


#: Colours of what went well, what failed, what runs, and of nothing to say.
COLOURS = {"ok": "#2ca02c", "failed": "#d62728", "running": "#1f77b4", "neutral": "#7f7f7f"}


def badge(word: str, kind: str) -> Markup:
    """A word on a coloured background (``kind``: a key of :data:`COLOURS`)."""
    colour = COLOURS.get(kind, COLOURS["neutral"])
    return Markup(
        f"<span style='background:{colour};color:white;border-radius:3px;padding:0 5px'>{text(word)}</span>"
    )


def box(title: Any, *parts: Any, kind: str = "neutral") -> Markup:
    """One object's display: a title line, then ``parts``, framed in the colour of ``kind``."""
    colour = COLOURS.get(kind, COLOURS["neutral"])
    body = "".join(f"<div style='margin-top:4px'>{text(p)}</div>" for p in parts if p)
    return Markup(
        f"<div class='taurus-tools' style='border-left:4px solid {colour};padding:2px 8px;margin:2px 0'>"
        f"<div>{text(title)}</div>{body}</div>"
    )


def code(value: Any) -> Markup:
    return Markup(f"<code>{text(value)}</code>")


def listing(items: Sequence[Any], *, limit: int = 10, rest: str = "more") -> Markup:
    """A bullet list of the first ``limit`` items and a line counting the rest."""
    shown = "".join(f"<li><code>{text(i)}</code></li>" for i in items[:limit])
    more = f"<li>... and {len(items) - limit} {text(rest)}</li>" if len(items) > limit else ""
    return Markup(f"<ul style='margin:2px 0'>{shown}{more}</ul>")


def progress_bar(fraction: Optional[float], *, width: int = 240) -> Markup:
    """A static bar (``<progress>`` draws nothing in some sanitised outputs)."""
    if fraction is None:
        return Markup("")
    done = max(0.0, min(1.0, fraction))
    return Markup(
        f"<div style='width:{width}px;height:10px;background:#ddd;display:inline-block;vertical-align:middle'>"
        f"<div style='width:{done * width:.1f}px;height:10px;background:{COLOURS['running']}'></div></div>"
        f" {done * 100:.1f} %"
    )


# ---------------------------------------------------------------------- the timeline
#: Geometry of :func:`timeline_svg`, in pixels: where the time axis starts (after the host
#: labels), its length, and the height of a row.  A bar starts at
#: ``TIMELINE_LEFT + (start - first start) / (last end - first start) * TIMELINE_WIDTH``.
TIMELINE_LEFT = 140
TIMELINE_WIDTH = 560
TIMELINE_ROW = 14
_AXIS = 18  # room for the time labels under the bars
#: The narrowest bar drawn, so that an attempt of a millisecond still shows.
MIN_BAR = 1.0


def _lanes(attempts: Sequence[Mapping[str, Any]], end_of: Any) -> List[int]:
    """A lane (0 first) for each attempt, so that attempts on one host that overlap in
    time sit on separate rows: each goes onto the first lane free at its start."""
    lane_of = [0] * len(attempts)
    free_at: List[int] = []
    for i in sorted(range(len(attempts)), key=lambda i: (attempts[i]["start_time_ms"], end_of(attempts[i]))):
        start = attempts[i]["start_time_ms"]
        for lane, free in enumerate(free_at):
            if free <= start:
                break
        else:
            lane = len(free_at)
            free_at.append(0)
        free_at[lane] = end_of(attempts[i])
        lane_of[i] = lane
    return lane_of


def attempt_kind(attempt: Mapping[str, Any]) -> str:
    """``running``, ``ok`` or ``failed`` (exit code other than 0)."""
    if attempt.get("end_time_ms") is None:
        return "running"
    return "ok" if attempt.get("exit_code") == 0 else "failed"


def timeline_svg(attempts: Sequence[Mapping[str, Any]], *, now_ms: Optional[int] = None) -> Markup:
    """The attempts at a copy's shards as bars from start to end, one row group per host.

    Parameters
    ----------
    attempts : sequence of mappings
        Rows as in the report's ``benchmark_results``: ``start_time_ms``, ``end_time_ms``
        (None for an attempt still running), ``chunk_number``, ``attempt``, ``exit_code``,
        ``host``, and optionally ``total_bytes_transferred``, ``job_id``.
    now_ms : int, optional
        Where running attempts end (default: the latest end of the others).

    Every attempt is one ``<rect>`` (class ``attempt`` and ``ok``, ``failed`` or
    ``running``; failed ones red and outlined), with its times in ``data-start-ms`` and
    ``data-end-ms`` and a tooltip; nothing else in the picture is a ``<rect>``.
    """
    if not attempts:
        return Markup("")
    ends = [a["end_time_ms"] for a in attempts if a.get("end_time_ms") is not None]
    latest = max(ends) if ends else max(a["start_time_ms"] for a in attempts)
    now = now_ms if now_ms is not None else latest

    def end_of(a: Mapping[str, Any]) -> int:
        return a["end_time_ms"] if a.get("end_time_ms") is not None else max(now, a["start_time_ms"])

    t0 = min(a["start_time_ms"] for a in attempts)
    t1 = max(end_of(a) for a in attempts)
    span = max(1, t1 - t0)
    scale = TIMELINE_WIDTH / span
    hosts: Dict[str, List[Mapping[str, Any]]] = {}
    for a in attempts:  # a running attempt's host is known once its worker has begun
        unknown = "(starting)" if attempt_kind(a) == "running" else "(host unknown)"
        hosts.setdefault(str(a.get("host") or unknown), []).append(a)
    rows: List[str] = []
    y = 0
    for host in sorted(hosts):
        group = hosts[host]
        lanes = _lanes(group, end_of)
        height = (max(lanes) + 1) * TIMELINE_ROW
        short = host if len(host) <= 20 else host[:19] + "\u2026"
        rows.append(
            f"<text x='{TIMELINE_LEFT - 6}' y='{y + TIMELINE_ROW - 3}' text-anchor='end' font-size='11'>"
            f"<title>{text(host)}</title>{text(short)}</text>"
            f"<line x1='0' x2='{TIMELINE_LEFT + TIMELINE_WIDTH}' y1='{y + height + 1}' y2='{y + height + 1}' "
            "stroke='#eee'/>"
        )
        for a, lane in zip(group, lanes):
            kind = attempt_kind(a)
            start, end = a["start_time_ms"], end_of(a)
            x = TIMELINE_LEFT + (start - t0) * scale
            width = max(MIN_BAR, (end - start) * scale)
            tip = (
                f"shard {a.get('chunk_number')}, attempt {a.get('attempt')} on {host}: "
                f"{human_duration((end - start) / 1000)}"
                + (", running" if kind == "running" else f", exit {a.get('exit_code')}")
                + (f", {human_bytes(a['total_bytes_transferred'])}" if a.get("total_bytes_transferred") else "")
                + (f", job {a['job_id']}" if a.get("job_id") else "")
            )
            # A failed attempt is outlined dark red; the others white, so that bars one
            # after another on a lane stay apart.
            outline = " stroke='#7f0000' stroke-width='1'" if kind == "failed" else " stroke='#fff' stroke-width='1'"
            rows.append(
                f"<rect class='attempt {kind}' x='{x:.3f}' y='{y + lane * TIMELINE_ROW + 2}' width='{width:.3f}' "
                f"height='{TIMELINE_ROW - 4}' fill='{COLOURS[kind]}'{outline} "
                f"data-shard='{text(a.get('chunk_number'))}' data-attempt='{text(a.get('attempt'))}' "
                f"data-start-ms='{start}' data-end-ms='{text(a.get('end_time_ms'))}'><title>{text(tip)}</title></rect>"
            )
        y += height + 2
    ticks = []
    for i in range(5):
        x = TIMELINE_LEFT + i * TIMELINE_WIDTH / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        ticks.append(
            f"<line x1='{x:.1f}' x2='{x:.1f}' y1='0' y2='{y}' stroke='#ccc' stroke-dasharray='2,2'/>"
            f"<text x='{x:.1f}' y='{y + 13}' text-anchor='{anchor}' font-size='10' fill='#555'>"
            f"{text(human_duration(span * i / 4 / 1000))}</text>"
        )
    legend = " ".join(
        f"<span style='color:{COLOURS[k]}'>&#9632;</span> {k}" for k in ("ok", "failed", "running")
    )
    return Markup(
        f"<svg class='taurus-tools-timeline' xmlns='http://www.w3.org/2000/svg' "
        f"width='{TIMELINE_LEFT + TIMELINE_WIDTH + 10}' height='{y + _AXIS}' data-t0-ms='{t0}' data-t1-ms='{t1}' "
        f"font-family='sans-serif'>{''.join(ticks)}{''.join(rows)}</svg>"
        f"<div style='font-size:smaller;color:#555'>shard attempts by host, from the first start; {legend}</div>"
    )


def page(title: Any, body: Any) -> str:
    """A whole HTML document (UTF-8) around ``body``."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{text(title)}</title></head>"
        f"<body style='font-family:sans-serif;font-size:14px'>{text(body)}</body></html>\n"
    )


# ---------------------------------------------------------------------- the objects
#: How many failure lines a display lists before it counts the rest.
FAILURES_SHOWN = 10
#: How many attempts the shard table lists (the timeline draws them all; the report has all).
ATTEMPTS_LISTED = 1000


def _copy_title(word: str, kind: str, src: Any, dst: Any) -> Markup:
    return Markup(f"{badge(word, kind)} <b>copy</b> {code(src)} &rarr; {code(dst)}")


def attempts_table(attempts: Sequence[Mapping[str, Any]]) -> Markup:
    """The shard attempts as a table, by shard and attempt (the first :data:`ATTEMPTS_LISTED`)."""
    rows: List[Sequence[Any]] = []
    ordered = sorted(attempts, key=lambda a: (a.get("chunk_number") or 0, a.get("attempt") or 0))
    for a in ordered[:ATTEMPTS_LISTED]:
        end = a.get("end_time_ms")
        seconds = (end - a["start_time_ms"]) / 1000 if end is not None else None
        moved = a.get("total_bytes_transferred") or 0
        rows.append(
            (
                a.get("chunk_number"),
                a.get("attempt"),
                a.get("host") or "-",
                a.get("job_id") or "-",
                "running" if end is None else a.get("exit_code"),
                a.get("total_number_of_files") or 0,
                human_bytes(moved),
                human_duration(seconds),
                f"{moved / 1e6 / seconds:.1f}" if seconds else "-",
            )
        )
    if len(ordered) > ATTEMPTS_LISTED:
        rows.append((f"... and {len(ordered) - ATTEMPTS_LISTED} more attempts (see the report)",))
    head = ("shard", "attempt", "host", "job", "exit", "files", "bytes", "time", "MB/s")
    return table(head, rows, numeric=(0, 1, 4, 5, 6, 7, 8))


def _shards_block(attempts: Sequence[Mapping[str, Any]], now_ms: Optional[int] = None) -> Markup:
    if not attempts:
        return Markup("")
    failed = sum(1 for a in attempts if attempt_kind(a) == "failed")
    shards = len({a.get("chunk_number") for a in attempts})
    summary = f"{len(attempts)} attempts at {shards} shards" + (f", {failed} failed" if failed else "")
    return Markup(timeline_svg(attempts, now_ms=now_ms) + details(summary, attempts_table(attempts)))


def copy_result_html(result: Any) -> Markup:
    """A ``CopyResult``: state, counts, time and rate, failures (the first
    :data:`FAILURES_SHOWN`, and how many more), the report's path, the shards' timeline and
    (collapsed) their table."""
    word, kind = ("dry run", "neutral") if result.dry_run else ("ok", "ok") if result.ok else ("FAILED", "failed")
    verified = f"{result.files_verified} files, {result.mismatches} mismatches" if result.files_verified else None
    left_out = [
        f"{result.files_excluded} excluded" if result.files_excluded else "",
        f"{result.special_skipped} special files (not data)" if result.special_skipped else "",
    ]
    facts = fields(
        [
            ("copied", f"{result.files_copied} files, {human_bytes(result.bytes_copied)}"),
            (
                "by an earlier run",
                f"{result.files_copied_before} files, {human_bytes(result.bytes_copied_before)} (resumed)"
                if result.files_copied_before or result.bytes_copied_before
                else None,
            ),
            ("already there", f"{result.files_skipped} files, {human_bytes(result.bytes_skipped)}"),
            ("failed", f"{result.files_failed} files" if result.files_failed or not result.ok else None),
            ("planned", f"{result.files_planned} files, {human_bytes(result.bytes_planned)}"),
            ("verified", verified),
            ("left out", ", ".join(p for p in left_out if p) or None),
            ("failed nodes", ", ".join(result.failed_nodes) or None),
            ("time", f"{human_duration(result.duration_s)}, {result.throughput_mb_s:.1f} MB/s (this run)"),
            ("retries", result.retries),
            ("report", result.report),
        ]
    )
    failures = Markup("")
    if result.failed_messages:
        failures = Markup(
            f"<div>{len(result.failed_messages)} failure(s):</div>"
            + listing(result.failed_messages, limit=FAILURES_SHOWN, rest="more (see the report)")
        )
    return box(
        _copy_title(word, kind, result.src, result.dst), facts, failures, _shards_block(result.attempts), kind=kind
    )


def report_page(result: Any) -> str:
    """The page ``taurus-tools report --html`` writes: a finished copy's display."""
    return page(f"copy {result.src} -> {result.dst}", copy_result_html(result))


def copy_status_html(status: Any) -> Markup:
    """A ``CopyStatus`` (a copy not started, running or ended): state, progress, shards,
    elapsed time and ETA, the timeline so far; once ended, the result's display too."""
    kind = {"done": "ok", "failed": "failed", "cancelled": "failed"}.get(status.state, "running")
    if status.state in ("not started", "waiting"):
        kind = "neutral"
    bar = Markup("")
    if status.bytes_planned is not None and status.state not in ("done", "failed", "cancelled"):
        bar = Markup(
            progress_bar(status.fraction)
            + text(
                f": {human_bytes(status.bytes_done)} of {human_bytes(status.bytes_planned)}, "
                f"{status.files_done} of {status.files_planned} files"
            )
        )
    shards = None
    if status.shards:
        shards = (
            f"{status.shards_done} done, {status.shards_running} running, {status.shards_pending} pending"
            + (f", {status.shards_failed} failed" if status.shards_failed else "")
            + f" (of {status.shards})"
        )
    facts = fields(
        [
            ("shards", shards),
            ("elapsed", human_duration(status.elapsed_s) if status.elapsed_s is not None else None),
            ("rate", f"{status.rate_mb_s:.1f} MB/s (this run)" if status.rate_mb_s is not None else None),
            ("ETA", human_duration(status.eta_s) if status.eta_s is not None else None),
            ("retries", status.retries or None),
            ("error", status.error),
            ("work dir", status.work_dir),
        ]
    )
    title = _copy_title(status.state, kind, status.src, status.dst)
    if status.result is not None:
        return box(title, facts, copy_result_html(status.result), kind=kind)
    return box(title, bar, facts, _shards_block(status.attempts, now_ms=status.now_ms), kind=kind)


def _remaining(info: Any) -> str:
    if info.released:
        return "released"
    if info.expired:
        return "expired"
    return human_duration(info.remaining.total_seconds()) if info.remaining is not None else "-"


def workspace_html(info: Any) -> Markup:
    """One ``WorkspaceInfo``: every field it has."""
    kind = "failed" if info.expired or info.released else "ok"
    title = Markup(f"{badge('workspace', kind)} <b>{text(info.id)}</b> {code(info.path)}")
    facts = fields(
        [
            ("filesystem", info.filesystem),
            ("created", when(info.created) if info.created else None),
            ("expires", when(info.expires) if info.expires else None),
            ("remaining", _remaining(info)),
            ("extensions left", info.extensions_left),
            ("comment", info.comment),
            ("group", info.group),
            ("owner", info.owner),
            *sorted(info.extra.items()),
        ]
    )
    return box(title, facts, kind=kind)


def workspaces_html(infos: Sequence[Any]) -> Markup:
    """Workspaces as one table: id, path, filesystem, expires, remaining, extensions, comment."""
    if not infos:
        return box("no workspaces")
    rows = [
        (
            i.id,
            Markup(code(i.path)),
            i.filesystem or "-",
            when(i.expires),
            _remaining(i),
            "-" if i.extensions_left is None else i.extensions_left,
            i.comment or "",
        )
        for i in infos
    ]
    head = ("id", "path", "filesystem", "expires", "remaining", "extensions", "comment")
    return box(f"{len(infos)} workspace(s)", table(head, rows, numeric=(5,)))


def handle_html(handle: Any) -> Markup:
    """A command handle: the command, backend, job id, state, exit code, times, stderr's tail."""
    state = handle.state
    kind = {"done": "ok", "failed": "failed", "cancelled": "failed", "not run": "failed"}.get(state, "running")
    if state == "waiting":
        kind = "neutral"
    ended = handle.ended
    elapsed = None
    if handle.started is not None:
        elapsed = (ended if ended is not None else time.time()) - handle.started
    err = handle.stderr_text if handle.text else handle.stderr_text.decode("utf-8", "surrogateescape")
    tail = err.strip().splitlines()[-5:]
    facts = fields(
        [
            ("command", Markup(code(handle.command_line))),
            ("backend", handle.backend),
            ("pid", handle.pid),
            ("job id", handle.job_id),
            ("exit code", handle.returncode),
            ("elapsed", human_duration(elapsed) if elapsed is not None else None),
        ]
    )
    lines = "\n".join(text(line) for line in tail)  # each line escaped; the breaks kept
    stderr = details(f"stderr (last {len(tail)} lines)", Markup(f"<pre>{lines}</pre>")) if tail else ""
    return box(Markup(f"{badge(state, kind)} <b>{text(handle.name)}</b>"), facts, stderr, kind=kind)
