"""The page of ``taurus-tools report --html`` in a real browser (Debian's headless chromium).

A real local copy, one of whose shard attempts fails and is retried, writes its report;
``taurus-tools report`` makes the page; chromium renders it with a probe script added (the
page itself has none) that writes each bar's rendered box (``getBBox``) and fill colour
into the DOM, which ``--dump-dom`` prints.  The bars must be where the report's times put
them, one per attempt, the failed one red, and the hostile names in the copy's locations
must not have become elements.
"""

from __future__ import annotations

import dataclasses
import html.parser
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from helpers import HOSTILE_NAMES

from taurus_tools import Datamover, ParallelCopy
from taurus_tools.cli.main import main
from taurus_tools.display import MIN_BAR, TIMELINE_LEFT, TIMELINE_WIDTH

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("no_slurm_env")]

#: A folder name that would be an element if the page did not escape it.
NASTY_FOLDER = "src <img src=x onerror=alert(1)> \"q' &amp;"

PROBE = """<script>
for (const r of document.querySelectorAll('svg rect')) {
  const box = r.getBBox();
  r.setAttribute('data-box', [box.x, box.y, box.width, box.height].join(' '));
  r.setAttribute('data-fill', getComputedStyle(r).fill);
}
document.body.setAttribute('data-probed', 'yes');
</script>"""


def chromium_dom(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after chromium has rendered it and run its scripts."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: scripts/test installs Debian's chromium and chromium-driver"
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


class Elements(html.parser.HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.found: List[tuple] = []
        self.texts: List[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.texts.append(data)

    def all(self, tag: str) -> List[Dict[str, str]]:
        return [attrs for t, attrs in self.found if t == tag]


def test_report_page_renders_one_bar_per_attempt_where_the_times_put_it(tmp_path):
    src = tmp_path / NASTY_FOLDER
    src.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):
        with open(os.path.join(os.fsencode(src), name), "wb") as fh:
            fh.write(os.urandom(20_000 * (i + 1)))
    pc = ParallelCopy(
        src,
        tmp_path / "dst",
        datamover=Datamover("local"),
        progress=False,
        work_dir=tmp_path / "work",
        workers=2,
        shards=4,
        retries=1,
        retry_delay_s=0.05,
    )
    real = pc._launch

    def launch(dm, queued):  # the first attempt at the second shard fails
        the_launch, status, failed = real(dm, queued)
        if queued.index == 1 and queued.attempt == 0:
            the_launch = dataclasses.replace(the_launch, argv=("sh", "-c", "sleep 0.2; exit 3"), executable=None)
        return the_launch, status, failed

    pc._launch = launch
    result = pc.run()
    assert result.ok and result.retries == 1
    report = json.loads(Path(result.report).read_text())
    attempts = report["benchmark_results"]
    assert len(attempts) == 5 and sum(a["exit_code"] != 0 for a in attempts) == 1

    page = tmp_path / "page.html"
    assert main(["report", str(result.report), "--html", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = Elements(chromium_dom(probe, tmp_path / "profile"))

    assert dom.all("body")[0].get("data-probed") == "yes", "the page did not render (the probe did not run)"
    assert dom.all("img") == [] and len(dom.all("script")) == 1, "a name became an element"
    assert NASTY_FOLDER in "".join(dom.texts)
    rects = dom.all("rect")
    assert len(rects) == len(attempts), "not one bar per attempt"
    t0 = min(a["start_time_ms"] for a in attempts)
    span = max(a["end_time_ms"] for a in attempts) - t0
    by_attempt = {(int(r["data-shard"]), int(r["data-attempt"])): r for r in rects}
    assert sorted(by_attempt) == sorted((a["chunk_number"], a["attempt"]) for a in attempts)
    for a in attempts:
        rect = by_attempt[a["chunk_number"], a["attempt"]]
        x, _y, width, height = (float(v) for v in rect["data-box"].split())
        assert height > 0
        assert x == pytest.approx(TIMELINE_LEFT + (a["start_time_ms"] - t0) * TIMELINE_WIDTH / span, abs=0.01)
        length = (a["end_time_ms"] - a["start_time_ms"]) * TIMELINE_WIDTH / span
        assert width == pytest.approx(max(MIN_BAR, length), abs=0.01)
        failed = a["exit_code"] != 0
        assert ("failed" in rect["class"].split()) is failed
        assert rect["data-fill"] == ("rgb(214, 39, 40)" if failed else "rgb(44, 160, 44)")
    # The hosts' rows: the workers ran on this machine; the failed attempt never started one.
    hosts = {a["host"] for a in attempts if a["exit_code"] == 0}
    assert len(hosts) == 1 and hosts.pop() in "".join(dom.texts)
    assert "(host unknown)" in "".join(dom.texts)
