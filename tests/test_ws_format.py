"""The ws_* text formats: ``parse_ws_list`` / ``parse_filesystems`` on reference outputs.

The reference outputs in ``tests/data/ws_list/`` are written from the formats hpc-workspace
versions 1 and 2 print (see the README there); every field of every entry is checked.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from taurus_tools._ws_format import (
    WorkspaceInfo,
    format_ctime,
    format_remaining,
    format_ws_list_entry,
    parse_ctime,
    parse_filesystems,
    parse_remaining,
    parse_ws_list,
)

pytestmark = pytest.mark.timeout(30)

DATA = Path(__file__).resolve().parent / "data" / "ws_list"


def load(name: str) -> str:
    return (DATA / name).read_text()


def D(*args: int) -> dt.datetime:
    return dt.datetime(*args)


def H(days: int = 0, hours: int = 0) -> dt.timedelta:
    return dt.timedelta(days=days, hours=hours)


# ----------------------------------------------------------------------------- expected
V1_NORMAL = [
    WorkspaceInfo(
        id="simulation",
        path=Path("/scratch/ws/0/marie-simulation"),
        filesystem="scratch",
        created=D(2026, 7, 2, 10, 0, 0),
        expires=D(2026, 8, 1, 10, 0, 0),
        remaining=H(29, 23),
        extensions_left=10,
    ),
    WorkspaceInfo(
        id="input-data.v2",
        path=Path("/scratch/ws/1/marie-input-data.v2"),
        filesystem="scratch",
        created=D(2026, 6, 20, 8, 15, 42),
        expires=D(2026, 7, 7, 13, 45, 42),
        remaining=H(5, 3),
        extensions_left=2,
        comment="raw input for run 7: keep until the paper is accepted",
    ),
    WorkspaceInfo(
        id="old_run",
        path=Path("/lustre/ssd/ws/marie-old_run"),
        filesystem="ssd",
        created=D(2026, 6, 1, 9, 5, 7),
        expires=D(2026, 6, 8, 9, 5, 7),
        remaining=H(0),
        extensions_left=0,
        expired=True,
    ),
    WorkspaceInfo(
        id="tmp-job_4711",
        path=Path("/beegfs/global0/ws/marie-tmp-job_4711"),
        filesystem="beegfs",
        created=D(2026, 6, 25, 16, 0, 0),
        expires=D(2026, 7, 2, 17, 12, 0),
        remaining=H(0, 7),
        extensions_left=9,
    ),
]

V2_NORMAL = [
    WorkspaceInfo(
        id="analysis",
        path=Path("/data/horse/ws/marie-analysis"),
        filesystem="horse",
        created=D(2026, 7, 3, 10, 0, 0),
        expires=D(2026, 8, 2, 10, 0, 0),
        remaining=H(29, 23),
        extensions_left=3,
    ),
    WorkspaceInfo(
        id="shared-results",
        path=Path("/data/walrus/ws/marie-shared-results"),
        filesystem="walrus",
        created=D(2026, 6, 28, 12, 0, 0),
        expires=D(2026, 7, 9, 11, 20, 0),
        remaining=H(6, 1),
        extensions_left=1,
        comment="results for the p_lv group",
        group="p_lv_project",
    ),
    WorkspaceInfo(
        id="scratchpad",
        path=Path("/data/horse/ws/marie-scratchpad"),
        filesystem="horse",
        created=D(2026, 6, 25, 17, 0, 0),
        expires=D(2026, 6, 28, 17, 0, 0),
        remaining=H(0),
        extensions_left=0,
        expired=True,
    ),
]


def fields(info: WorkspaceInfo) -> dict:
    """Every field, ``extra`` included (it is left out of ``==``)."""
    d = dict(vars(info))
    d["extra"] = dict(info.extra)
    return d


# ----------------------------------------------------------------------------- version 1
class TestVersion1:
    def test_normal_every_field(self):
        got = parse_ws_list(load("v1_normal.txt"))
        assert [fields(w) for w in got] == [fields(w) for w in V1_NORMAL]

    def test_normal_types(self):
        got = parse_ws_list(load("v1_normal.txt"))
        for w in got:
            assert isinstance(w.path, Path) and w.path.is_absolute()
            assert isinstance(w.created, dt.datetime) and isinstance(w.expires, dt.datetime)
            assert isinstance(w.remaining, dt.timedelta)
            assert isinstance(w.extensions_left, int)

    def test_comment_with_colon_kept_whole(self):
        got = {w.id: w for w in parse_ws_list(load("v1_normal.txt"))}
        comment = "raw input for run 7: keep until the paper is accepted"
        assert got["input-data.v2"].comment == comment
        assert got["simulation"].comment is None

    def test_expired_entry(self):
        got = {w.id: w for w in parse_ws_list(load("v1_normal.txt"))}
        assert got["old_run"].expired is True
        assert got["old_run"].remaining == dt.timedelta(0)
        assert [w.id for w in got.values() if w.expired] == ["old_run"]

    def test_terse(self):
        got = parse_ws_list(load("v1_terse.txt"))
        assert [w.id for w in got] == [w.id for w in V1_NORMAL]
        assert [w.path for w in got] == [w.path for w in V1_NORMAL]
        assert [w.remaining for w in got] == [H(29, 23), H(5, 3), H(0), H(0, 7)]
        assert [w.extensions_left for w in got] == [10, 2, 0, 9]
        assert [w.expired for w in got] == [False, False, True, False]
        for w in got:
            assert (w.created, w.expires, w.filesystem, w.comment, w.group) == (None,) * 5
            assert w.extra == {}

    def test_verbose_extra_fields(self):
        got = parse_ws_list(load("v1_verbose.txt"))
        assert [fields(w) | {"extra": {}} for w in got] == [fields(w) for w in V1_NORMAL[:2]]
        assert got[0].extra == {
            "acctcode": "p_number_crunch",
            "reminder": "Sat Jul 25 10:00:00 2026",
            "mailaddress": "marie@tu-dresden.de",
        }
        assert got[1].extra == {
            "acctcode": "marie",
            "reminder": "Mon Jul  6 13:45:42 2026",
            "mailaddress": "marie.user@example.org",
        }
        assert parse_ctime(got[0].extra["reminder"]) == D(2026, 7, 25, 10, 0, 0)

    def test_short_names_only(self):
        got = parse_ws_list(load("v1_short.txt"))
        assert [w.id for w in got] == ["simulation", "input-data.v2", "old_run", "tmp-job_4711"]
        assert all(w.path == Path() and w.expires is None and not w.expired for w in got)

    def test_filesystems_default_marker(self):
        names, default = parse_filesystems(load("v1_filesystems.txt"))
        assert (names, default) == (["beegfs", "scratch", "ssd"], "scratch")

    def test_ws_find_list_has_no_default(self):
        # ws_find -l: same header, no marker, and (unlike v2) no priority order
        text = "available filesystems:\nscratch\nssd\n"
        assert parse_filesystems(text) == (["scratch", "ssd"], None)


# ----------------------------------------------------------------------------- version 2
class TestVersion2:
    def test_normal_every_field(self):
        got = parse_ws_list(load("v2_normal.txt"))
        assert [fields(w) for w in got] == [fields(w) for w in V2_NORMAL]

    def test_group_and_filesystem_after_it(self):
        got = {w.id: w for w in parse_ws_list(load("v2_normal.txt"))}
        assert got["shared-results"].group == "p_lv_project"
        assert got["shared-results"].filesystem == "walrus"
        assert got["analysis"].group is None

    def test_negative_remaining_is_expired(self):
        got = {w.id: w for w in parse_ws_list(load("v2_normal.txt"))}
        assert got["scratchpad"].expired is True
        assert got["scratchpad"].remaining == dt.timedelta(0)
        assert got["analysis"].expired is False

    def test_filesystems_priority_order_first_is_default(self):
        names, default = parse_filesystems(load("v2_filesystems.txt"))
        assert (names, default) == (["horse", "walrus", "beegfs"], "horse")

    def test_v1_and_v2_field_names_mean_the_same(self):
        v1 = (
            "id: a\n     workspace directory  : /x/u-a\n"
            "     expiration date      : Fri Jul  3 10:00:00 2026\n"
        )
        v2 = (
            "Id: a\n    workspace directory  : /x/u-a\n"
            "    expiration time      : Fri Jul  3 10:00:00 2026\n"
        )
        assert parse_ws_list(v1) == parse_ws_list(v2)
        assert parse_ws_list(v2)[0].expires == D(2026, 7, 3, 10, 0, 0)


# ----------------------------------------------------------------------------- pieces
@pytest.mark.parametrize(
    "text, expected",
    [
        ("29 days 23 hours", (H(29, 23), False)),
        ("29 days, 23 hours", (H(29, 23), False)),
        ("0 days 7 hours", (H(0, 7), False)),
        ("1 day 1 hour", (H(1, 1), False)),
        ("expired", (H(0), True)),
        ("Expired", (H(0), True)),
        ("-4 days, -17 hours", (H(0), True)),
        ("0 days, -5 hours", (H(0), True)),
        ("", (None, False)),
        ("soon", (None, False)),
        ("days hours", (None, False)),
    ],
)
def test_parse_remaining(text, expected):
    assert parse_remaining(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Thu Jul  2 10:00:00 2026", D(2026, 7, 2, 10, 0, 0)),
        ("Thu Jul 2 10:00:00 2026", D(2026, 7, 2, 10, 0, 0)),
        ("Wed Aug 10 13:16:25 2022", D(2022, 8, 10, 13, 16, 25)),
        ("  Sat Aug  1 10:00:00 2026\n", D(2026, 8, 1, 10, 0, 0)),
        ("2026-07-02 10:00:00", None),
        ("", None),
        ("Thu Jul 32 10:00:00 2026", None),
    ],
)
def test_parse_ctime(text, expected):
    assert parse_ctime(text) == expected


def test_format_ctime_pads_day_with_space():
    assert format_ctime(D(2026, 7, 3, 10, 0, 0)) == "Fri Jul  3 10:00:00 2026"
    assert format_ctime(D(2022, 8, 10, 13, 16, 25)) == "Wed Aug 10 13:16:25 2022"


@pytest.mark.parametrize(
    "remaining, text",
    [
        (dt.timedelta(days=29, hours=23, minutes=59, seconds=59), "29 days 23 hours"),
        (dt.timedelta(hours=7, minutes=30), "0 days 7 hours"),
        (dt.timedelta(0), "expired"),
        (dt.timedelta(seconds=-5), "expired"),
    ],
)
def test_format_remaining(remaining, text):
    assert format_remaining(remaining) == text


# ----------------------------------------------------------------------------- round trip
ROUND_TRIP = [
    V1_NORMAL[0],
    V1_NORMAL[1],
    V1_NORMAL[2],
    V2_NORMAL[1],  # with a group
    WorkspaceInfo(
        id="a",
        path=Path("/tmp/ws/u-a"),
        filesystem="scratch",
        created=D(2026, 12, 31, 23, 59, 59),
        expires=D(2027, 1, 1, 23, 59, 59),
        remaining=H(1, 0),
        extensions_left=0,
    ),
]


def test_round_trip_every_entry_alone():
    for info in ROUND_TRIP:
        text = format_ws_list_entry(info)
        assert parse_ws_list(text) == [info], text


def test_round_trip_concatenated():
    text = "".join(format_ws_list_entry(i) for i in ROUND_TRIP)
    assert parse_ws_list(text) == ROUND_TRIP


def test_round_trip_written_like_v1():
    # the local implementation writes exactly the version 1 layout of the reference file
    assert "".join(format_ws_list_entry(i) for i in V1_NORMAL) == load("v1_normal.txt")


def test_round_trip_verbose_keeps_extra():
    info = WorkspaceInfo(
        id="v",
        path=Path("/s/u-v"),
        filesystem="scratch",
        created=D(2026, 7, 2, 10, 0, 0),
        expires=D(2026, 7, 12, 10, 0, 0),
        remaining=H(9, 23),
        extensions_left=3,
        extra={"acctcode": "grp", "reminder": "Fri Jul 10 10:00:00 2026", "mailaddress": "u@x.org"},
    )
    text = format_ws_list_entry(info, verbose=True)
    assert text.splitlines()[-3:] == [
        "     acctcode             : grp",
        "     reminder             : Fri Jul 10 10:00:00 2026",
        "     mailaddress          : u@x.org",
    ]
    (back,) = parse_ws_list(text)
    assert fields(back) == fields(info)


def test_round_trip_terse_drops_dates():
    (back,) = parse_ws_list(format_ws_list_entry(V1_NORMAL[1], terse=True))
    assert (back.id, back.path, back.remaining, back.extensions_left) == (
        "input-data.v2",
        Path("/scratch/ws/1/marie-input-data.v2"),
        H(5, 3),
        2,
    )
    assert (back.created, back.expires, back.filesystem, back.comment) == (None, None, None, None)


def test_to_dict_is_json():
    d = json.loads(json.dumps(V2_NORMAL[1].to_dict()))
    assert d == {
        "id": "shared-results",
        "path": "/data/walrus/ws/marie-shared-results",
        "filesystem": "walrus",
        "created": "2026-06-28T12:00:00",
        "expires": "2026-07-09T11:20:00",
        "remaining_seconds": (6 * 24 + 1) * 3600,
        "extensions_left": 1,
        "comment": "results for the p_lv group",
        "group": "p_lv_project",
        "expired": False,
    }


# ----------------------------------------------------------------------------- no crash
@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n  \n",
        "bash: ws_list: command not found",
        "Error: no such filesystem.",
        "     workspace directory  : /scratch/ws/0/marie-x\n"
        "     remaining time       : 1 days 2 hours\n",
        "id:\n",
        ": : :\n:::\n",
        "\x00\x01\x02 \xff\ufffd garbage \x1b[31mred\x1b[0m",
        "available filesystems:\nscratch (default)\n",
        "Traceback (most recent call last):\n"
        '  File "ws_list", line 3, in <module>\n'
        "KeyError: 'x'\n",
    ],
)
def test_garbage_gives_empty_list(text):
    assert parse_ws_list(text) == []


def test_unparsable_values_do_not_raise():
    text = (
        "id: weird\n"
        "     workspace directory  : /s/u-weird\n"
        "     remaining time       : soon\n"
        "     creation time        : yesterday\n"
        "     expiration date      : 2026-07-03\n"
        "     available extensions : many\n"
        "     something new        : kept\n"
    )
    (w,) = parse_ws_list(text)
    assert (w.id, w.path) == ("weird", Path("/s/u-weird"))
    assert (w.remaining, w.created, w.expires, w.extensions_left) == (None, None, None, None)
    assert w.expired is False
    assert w.extra == {"something new": "kept"}


def test_noise_lines_around_entries_are_ignored():
    text = "info: listing workspaces\n" + load("v1_normal.txt") + "\nWarning: something\n"
    assert parse_ws_list(text) == V1_NORMAL


def test_parse_filesystems_empty():
    assert parse_filesystems("") == ([], None)
    assert parse_filesystems("available filesystems:\n") == ([], None)
