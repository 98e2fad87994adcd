"""Copy one shard with one ``rclone copy``: the process a parallel copy starts per shard of an rclone copy.

``python -S .../taurus_tools/transfer/rclone_worker.py --src SRC --dst DST --shard FILE --status FILE
--failed FILE --list FILE [--names rclone|local] [--verify size|checksum|none] [--threads N]
[--rclone EXE] [--rclone-version X.Y.Z] [--new]``

SRC and DST are what rclone takes: ``remote:path``, ``:backend:path`` or a local folder (an
absolute path).  It keeps the protocol of the local worker (:mod:`taurus_tools.transfer.worker`,
whose reporting it reuses): counters as JSON in ``--status`` (rewritten as rclone's stats
arrive, ``"done": true`` at the end), failed records in ``--failed`` with one JSON line each
in ``FILE.messages`` (``FILE.permanent`` for those no retry heals), exit 0 when every record
is at the destination, 1 when some failed, 2 on bad usage.  Like :mod:`worker`, it needs only
the standard library (``python -S``).

The shard's records become ``--list``, one name per line in rclone's own encoding, for

    rclone copy --files-from-raw LIST --no-traverse --transfers N --checkers N --retries 1
        --use-json-log --stats 1s --stats-log-level NOTICE -v -- SRC DST

* ``--files-from-raw``, never ``--files-from``, which drops names starting with ``#`` or
  ``;`` and trims spaces.  A name rclone lists never holds a newline: rclone shows control
  characters as symbols (a newline as ``␊``, see :func:`rclone_name`), so one name per line
  is exact.  A remote's records are in that encoding already (they come from ``rclone
  lsjson``); a local folder's are file names, encoded here.
* ``--no-traverse``: one lookup per listed name, never a listing of the whole remote.
* ``--retries 1``: the parallel copy retries what failed, with backoff; rclone's own
  retries of the whole run would copy the shard's failures three times first.
* with ``--new`` (the destination was empty) ``--no-check-dest``: no lookup per name there;
  else with ``--verify checksum``, ``--checksum``: files are skipped by size and hash (not
  time), so a damaged copy that the check found is copied again by the retry.

rclone's JSON log is read as it comes: its stats give the live counters (``bytes``, files
copied, ``checks`` less the replaced files as skipped), ``Copied ...`` lines name what was
copied, and error lines with an object name become that record's message (a partial file
``NAME.1a2b3c4d.partial`` is matched back to ``NAME``).

Then the shard is checked, because rclone exits 0 when a listed name is missing at the
source: one ``rclone lsjson -R --files-from-raw LIST --no-traverse`` of the destination (with
MD5s for ``--verify checksum``) must show every record, with the listed size (or the size the
source has now, if it changed since it was listed).  What is missing or differs fails by
name, with rclone's error for it, or ``no longer at the source`` (for good) when a second
look at the source does not find it.  ``--verify checksum`` compares the MD5s of source and
destination (one ``lsjson --hash`` each); an object without a stored MD5 (a multipart upload
by a tool that stores none: its ETag is no MD5) is checked by size only, and said so on
stderr.  With ``--verify none`` the destination is listed only when rclone's counts do not
add up to the shard.

rclone's exit code says what a failure was: see :data:`EXIT_CODES` (rclone 1.69 swapped the
meanings of 1 and 2).  Entries that failed in a run that ended with a usage, "no retry" or
fatal error fail for good; others are retried by the parallel copy.

The rclone process dies with this one (``PR_SET_PDEATHSIG``): a worker killed with ``kill -9``
leaves no rclone copying on, racing the retry for the same files.  On SIGTERM it stops rclone
with SIGTERM (rclone then removes its partial files) and exits 143.  Credentials stay in
rclone's config file or ``RCLONE_CONFIG_*`` variables: nothing here takes or passes any.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the worker 2 ms
    from typing import Dict, List, NamedTuple, Optional, Tuple
else:
    from collections import namedtuple as _namedtuple

try:
    from .records import iter_records
    from .worker import Worker, run_program
except ImportError:  # run as a script (``python -S .../rclone_worker.py``): no package import
    from records import iter_records  # type: ignore[no-redef]
    from worker import Worker, run_program  # type: ignore[no-redef]

# ---------------------------------------------------------------------------- names
#: rclone's quote character: it marks a character that stands for itself, not for another.
QUOTE = "\u201b"  # SINGLE HIGH-REVERSED-9 QUOTATION MARK
_SYMBOL_NULL = 0x2400  # SYMBOL FOR NULL: control character c is shown as chr(0x2400 + c)
_SYMBOL_DEL = "\u2421"
_FULL_SLASH = "\uff0f"
_FULL_STOP = "\uff0e"


def _encode(name: str, ctl: bool) -> str:
    """rclone's ``Encode`` for the masks used here: the local backend's (``Slash,Dot``) or,
    with ``ctl``, the standard encoding rclone shows and takes names in (``Slash,Ctl,Del,Dot``)."""
    if name in (".", ".."):
        return _FULL_STOP * len(name)
    if name in (_FULL_STOP, _FULL_STOP * 2):
        return (QUOTE + _FULL_STOP) * len(name)
    out = []
    for ch in name:
        code = ord(ch)
        if code == 0:
            out.append(chr(_SYMBOL_NULL))
        elif ch in (QUOTE, chr(_SYMBOL_NULL), _FULL_SLASH):
            out.append(QUOTE + ch)
        elif ch == "/":
            out.append(_FULL_SLASH)
        elif ctl and code == 0x7F:
            out.append(_SYMBOL_DEL)
        elif ctl and 1 <= code <= 0x1F:
            out.append(chr(_SYMBOL_NULL + code))
        elif ctl and (ch == _SYMBOL_DEL or _SYMBOL_NULL < code <= _SYMBOL_NULL + 0x1F):
            out.append(QUOTE + ch)
        else:
            out.append(ch)
    return "".join(out)


def _decode(name: str, ctl: bool) -> str:
    """rclone's ``Decode`` for the same masks as :func:`_encode`."""
    if name in (_FULL_STOP, _FULL_STOP * 2):
        return "." * len(name)
    if name in (QUOTE + _FULL_STOP, (QUOTE + _FULL_STOP) * 2):
        return _FULL_STOP * (len(name) // 2)
    out = []
    quoted = False
    for ch in name:
        unquote, quoted = quoted, False
        code = ord(ch)
        if ch == QUOTE and not unquote:
            quoted = True
        elif ch in (QUOTE, chr(_SYMBOL_NULL), _FULL_SLASH) or (
            ctl and (ch == _SYMBOL_DEL or _SYMBOL_NULL < code <= _SYMBOL_NULL + 0x1F)
        ):
            if unquote or ch == QUOTE:
                out.append(ch)
            elif ch == _FULL_SLASH:
                out.append("/")
            elif ch == _SYMBOL_DEL:
                out.append("\x7f")
            else:
                out.append(chr(code - _SYMBOL_NULL))
        else:
            if unquote:
                out.append(QUOTE)
            out.append(ch)
    if quoted:
        out.append(QUOTE)
    return "".join(out)


def rclone_name(path: bytes) -> str:
    """A local relative path as rclone shows and takes it (its standard encoding).

    rclone reads a local name through its local backend (``Slash,Dot``) into its standard
    encoding, where control characters are symbols (``new\\nline`` is ``new␊line``) and
    the symbols themselves, quoted (``␊`` is ``‛␊``).  Raises :class:`ValueError` for a name
    that is not UTF-8 (rclone cannot name it: it lists it with U+FFFD in its place).
    """
    text = path.decode("utf-8")  # strict: UnicodeDecodeError is a ValueError
    return "/".join(_encode(_decode(part, False), True) for part in text.split("/"))


def local_name(name: str) -> bytes:
    """The local relative path rclone writes for a name in its standard encoding."""
    return "/".join(_encode(_decode(part, True), False) for part in name.split("/")).encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------- exit codes
if TYPE_CHECKING:

    class ExitMeaning(NamedTuple):
        name: str
        text: str
        permanent: bool

else:
    ExitMeaning = _namedtuple("ExitMeaning", "name text permanent")

#: rclone's exit codes (``lib/exitcode``), as rclone 1.69 and later use them.  Before 1.69
#: (the change was made in September 2024) 1 meant a usage error and 2 an uncategorised
#: one: :func:`exit_meaning` swaps them for older versions.
EXIT_CODES = {
    0: ExitMeaning("success", "success", False),
    1: ExitMeaning("error", "an error not otherwise categorised", False),
    2: ExitMeaning("usage", "a syntax or usage error", True),
    3: ExitMeaning("dir-not-found", "a source or destination folder not found", True),
    4: ExitMeaning("file-not-found", "a source or destination file not found", True),
    5: ExitMeaning("retry", "a temporary error (one that more retries might fix)", False),
    6: ExitMeaning("no-retry", "an error rclone does not retry", True),
    7: ExitMeaning("fatal", "a fatal error (one more retries will not fix)", True),
    8: ExitMeaning("transfer-limit", "the --max-transfer limit was reached", False),
    9: ExitMeaning("no-transfer", "success, but no files transferred", False),
    10: ExitMeaning("duration-limit", "the --max-duration limit was reached", False),
}
#: The first rclone release with 1 = uncategorised and 2 = usage error.
SWAPPED_SINCE = (1, 69)


def version_tuple(version: str) -> "Optional[Tuple[int, int]]":
    """``(1, 75)`` for ``1.75.2``, ``v1.70.0-DEV`` or ``rclone v1.68.1``; None when unknown."""
    m = re.search(r"(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def exit_meaning(code: int, version: str = "") -> ExitMeaning:
    """What rclone's exit ``code`` means for rclone ``version`` (``"1.75.2"``; "" when unknown).

    With an unknown version, 1 and 2 mean "an error" (retried): which one a usage error
    is cannot be told.  Negative codes are signals; unknown codes are errors.
    """
    if code < 0:
        return ExitMeaning("signal", f"killed by signal {-code}", False)
    known = version_tuple(version)
    if code in (1, 2) and known is None:
        return ExitMeaning("error", "an error (a usage error, or one not otherwise categorised)", False)
    if code in (1, 2) and known is not None and known < SWAPPED_SINCE:
        code = 3 - code
    return EXIT_CODES.get(code, ExitMeaning("error", f"exit code {code}", False))


# ---------------------------------------------------------------------------- the shard
_PARTIAL = re.compile(r"^(.*)\.[0-9a-f]{8}\.partial$", re.S)
_COPIED = ("Copied", "Multi-thread Copied")
_MAX_GENERAL = 5  # rclone's messages without an object name that are kept for the report


class Listed:
    """A record of the shard, by the name rclone gives it."""

    __slots__ = ("raw", "rel", "size")

    def __init__(self, raw: bytes, rel: bytes, size: int) -> None:
        self.raw, self.rel, self.size = raw, rel, size


class RcloneShard:
    """Copies the records of one shard with one rclone process; :meth:`run` returns the exit code."""

    def __init__(self, opts: "Dict[str, str]", failed, messages, permanent) -> None:
        self.src = opts["src"]
        self.dst = opts["dst"]
        self.shard = opts["shard"]
        self.list_path = opts["list"]
        self.local_source = opts["names"] == "local"
        self.verify = opts["verify"]
        self.threads = opts["threads"]
        self.rclone = opts["rclone"]
        self.version = opts["rclone-version"]
        self.new = bool(opts["new"])
        self.report = Worker(b"/", b"/", self.verify, opts["status"], failed, messages, permanent=permanent)
        self.counts = self.report.counts
        self.names: "Dict[str, Listed]" = {}
        self.copied: "Dict[str, int]" = {}  # name -> bytes, as rclone logged them
        self.errors: "Dict[str, str]" = {}
        self.general: "List[str]" = []
        self.replaced = 0
        self.checks = 0
        self.proc: "Optional[subprocess.Popen[bytes]]" = None
        self.stopping = False
        self.notes: "List[str]" = []

    # ------------------------------------------------------------------ the list
    def write_list(self) -> None:
        """The shard's names, one per line, in rclone's encoding; records rclone cannot copy fail here."""
        with open(self.list_path, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as out:
            for raw in iter_records(self.shard):
                kind, size, _mtime, rel = raw[:-1].split(b"\t", 3)
                if kind == b"d":
                    continue  # folders come with their files (an empty one is not copied)
                if self.local_source:
                    why = self._unreachable(kind, rel)
                    if why is not None:
                        self.report.fail(raw, rel, why, permanent=True)
                        continue
                    name = rclone_name(rel)
                else:
                    name = rel.decode("utf-8", "surrogateescape")
                if name in self.names:
                    continue  # (a listing never names a file twice)
                self.names[name] = Listed(raw, rel, int(size))
                out.write(name + "\n")

    def _unreachable(self, kind: bytes, rel: bytes) -> "Optional[str]":
        """Why rclone cannot copy a local entry, or None."""
        try:
            rel.decode("utf-8")
        except UnicodeDecodeError:
            return (
                "the name is not valid UTF-8, which rclone cannot name (it shows U+FFFD in its place): "
                "rename it (e.g. convmv -f latin1 -t utf8)"
            )
        if local_name(rclone_name(rel)) != rel:
            # rclone lists it, but opens another name for it: its local backend does not
            # undo its own quoting of a lone '‛' (U+201B) in a name ('q‛x' is listed 'q‛‛x').
            return f"rclone cannot open this name again by the name it lists ({rclone_name(rel)!r}): rename it"
        if kind == b"l":
            try:
                st = os.stat(os.path.join(os.fsencode(self.src), rel))
            except OSError:
                return "a dangling symbolic link: the other side has no links, and it points nowhere"
            if (st.st_mode & 0o170000) != 0o100000:
                return "a symbolic link to a folder: the other side has no links (copy the folder itself)"
        return None

    # ------------------------------------------------------------------ the copy
    def copy_argv(self) -> "List[str]":
        argv = [
            self.rclone,
            "copy",
            f"--files-from-raw={self.list_path}",
            "--no-traverse",
            f"--transfers={self.threads}",
            f"--checkers={self.threads}",
            "--retries=1",
            "--use-json-log",
            "--stats=1s",
            "--stats-log-level=NOTICE",
            "-v",
        ]
        if self.new:
            argv.append("--no-check-dest")  # the destination was empty: no lookup per name
        elif self.verify == "checksum":
            argv.append("--checksum")  # skip by size and hash, not time: a damaged copy is copied again
        if self.local_source:
            argv.append("--copy-links")  # a link to a file is copied as the file (checked above)
        return argv + ["--", self.src, self.dst]

    def copy(self) -> int:
        """Run rclone copy, reading its log as it comes; return its exit code."""
        proc = subprocess.Popen(
            self.copy_argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        self.proc = proc
        assert proc.stderr is not None
        for line in proc.stderr:
            self.take(line)
        return proc.wait()

    def take(self, line: bytes) -> None:
        """One line of rclone's log."""
        item = None
        if line.startswith(b"{"):
            try:
                item = json.loads(line)
            except ValueError:
                pass
        if not isinstance(item, dict):
            text = line.decode("utf-8", "replace").strip()
            if text:
                self._general(text)
            return
        stats = item.get("stats")
        if isinstance(stats, dict):
            self.checks = int(stats.get("checks") or 0)
            counts = self.counts
            counts["files"] = len(self.copied)
            counts["bytes"] = int(stats.get("bytes") or 0)
            counts["skipped"] = max(0, self.checks - self.replaced)
            self.report.status()
            return
        level = item.get("level")
        msg = str(item.get("msg", ""))
        obj = item.get("object")
        name = self._name(obj) if isinstance(obj, str) else None
        if level == "info" and name is not None and msg.startswith(_COPIED):
            size = item.get("size")
            self.copied[name] = int(size) if isinstance(size, int) else self.names[name].size
            if "replaced existing" in msg:
                self.replaced += 1
        elif level in ("error", "critical"):
            if name is not None:
                self.errors[name] = msg
            else:
                self._general(f"{obj}: {msg}" if obj else msg)

    def _name(self, obj: str) -> "Optional[str]":
        """The shard's name an object of rclone's log stands for (a partial file's too)."""
        if obj in self.names:
            return obj
        m = _PARTIAL.match(obj)
        if m and m.group(1) in self.names:
            return m.group(1)
        return None

    def _general(self, text: str) -> None:
        if len(self.general) >= _MAX_GENERAL:
            del self.general[0]
        self.general.append(text)

    # ------------------------------------------------------------------ the check
    def lsjson(self, where: str, names: "List[str]", hashes: bool = False) -> "Tuple[Dict[str, Tuple[int, str]], str]":
        """``name -> (size, md5)`` for those of ``names`` that ``where`` has, and rclone's error ("" if none)."""
        listing = self.list_path + (".src" if where == self.src else ".dst")
        if len(names) != len(self.names):
            with open(listing, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as out:
                out.writelines(n + "\n" for n in names)
        else:
            listing = self.list_path
        argv = [
            self.rclone,
            "lsjson",
            "-R",
            "--files-only",
            "--no-mimetype",
            f"--files-from-raw={listing}",
            "--no-traverse",
            f"--checkers={self.threads}",
        ]
        if hashes:
            argv += ["--hash", "--hash-type=md5"]
        if where == self.src and self.local_source:
            argv.append("--copy-links")  # as the copy read them
        proc = subprocess.Popen(
            argv + ["--", where],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        self.proc = proc
        found: "Dict[str, Tuple[int, str]]" = {}
        err: "List[bytes]" = []
        drain = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
        drain.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip().rstrip(b",")
            if line.startswith(b"{"):
                item = json.loads(line)
                md5 = (item.get("Hashes") or {}).get("md5") or ""
                found[str(item["Path"])] = (int(item["Size"]), str(md5))
        rc = proc.wait()
        drain.join()
        if listing != self.list_path:
            os.unlink(listing)
        if rc == 0:
            return found, ""
        lines = [x for x in b"".join(err).decode("utf-8", "replace").splitlines() if x.strip()]
        return found, f"{lines[-1] if lines else ''} (rclone lsjson exit {rc}: {exit_meaning(rc, self.version).text})"

    def check(self, rc: int, *, counted: bool = True) -> None:
        """Every record must be at the destination, whole; fail the others by name.

        rclone checks every file it copies (the size, and the hash where both sides have
        one, read back from the destination) before it logs ``Copied``, and compares every
        file it skips with the source: when it exits 0 and its counts add up to the shard,
        that is the check.  Otherwise the destination is listed for what it did not log as
        copied; with ``verify="checksum"`` (an independent pass: MD5s of both sides) for all.
        ``counted``: rclone's log said what it copied; without it (a tool that reports
        nothing), everything is looked at and what is there counts as copied.
        """
        names = list(self.names)
        checksum = self.verify == "checksum"
        accounted = len(self.copied) + self.checks - self.replaced
        if counted and not checksum and rc == 0 and accounted >= len(names):
            for name, entry in self.names.items():  # rclone's counts add up: all done
                self._ok(name, self.copied.get(name, entry.size), verified=self.verify != "none")
            return
        if counted and not checksum:
            for name in self.copied:  # checked by rclone as it copied them
                self._ok(name, self.copied[name], verified=self.verify != "none")
            names = [n for n in names if n not in self.copied]
        if not names:
            return
        meaning = exit_meaning(rc, self.version)
        there, problem = self.lsjson(self.dst, names, hashes=checksum)
        source: "Dict[str, Tuple[int, str]]" = {}
        if checksum:
            source, _ = self.lsjson(self.src, names, hashes=True)
        # A second look at the source, for what is missing or has another size: whether
        # the source changed since it was listed, or lost the file.
        doubtful = [n for n in names if n not in source and (n not in there or there[n][0] != self.names[n].size)]
        unknown = ""  # why the source could not be looked at
        if doubtful:
            found, unknown = self._look_at_source(doubtful)
            source.update(found)
        unhashed = 0
        for name in names:
            entry = self.names[name]
            got = there.get(name)
            now = source.get(name)
            if got is None:
                if now is None and not problem and not unknown:
                    self._fail(name, "no longer at the source (deleted since it was listed?); nothing copied", True)
                elif name in self.errors:
                    self._fail(name, self.errors[name], meaning.permanent)
                else:
                    why = problem and f"cannot check the destination: {problem}"
                    self._fail(name, why or self._not_copied(rc, meaning), meaning.permanent and not problem)
                continue
            want = now[0] if now is not None else entry.size
            if got[0] != want:
                self.counts["mismatches"] += 1
                self._fail(name, f"has {got[0]} bytes at the destination, {want} at the source (verify=size)", False)
                continue
            if checksum and now is not None:
                if not got[1] or not now[1]:
                    unhashed += 1
                elif got[1] != now[1]:
                    self.counts["mismatches"] += 1
                    self._fail(name, "the MD5 at the destination differs from the source's (verify=checksum)", False)
                    continue
            self._ok(name, got[0], verified=self.verify != "none", counted=counted)
        if unhashed:
            self.notes.append(
                f"{unhashed} files have no MD5 on one side (e.g. multipart objects uploaded without md5chksum "
                "metadata): checked by size only"
            )

    def _not_copied(self, rc: int, meaning: ExitMeaning) -> str:
        why = "rclone did not copy it"
        if rc != 0:
            why += f" (rclone exit {rc}: {meaning.text}"
            why += f"; {self.general[-1]})" if self.general else ")"
        return why

    def _look_at_source(self, names: "List[str]") -> "Tuple[Dict[str, Tuple[int, str]], str]":
        """Sizes of ``names`` at the source now, and why it could not be listed ("" if it could)."""
        if not self.local_source:
            return self.lsjson(self.src, names)
        found = {}
        root = os.fsencode(self.src)
        for name in names:
            try:
                found[name] = (os.stat(os.path.join(root, self.names[name].rel)).st_size, "")
            except OSError:
                pass
        return found, ""

    def _ok(self, name: str, size: int, *, verified: bool, counted: bool = True) -> None:
        counts = self.counts
        if name in self.copied or not counted:
            counts["files"] += 1
            counts["bytes"] += size
        else:
            counts["skipped"] += 1
            counts["skipped_bytes"] += size
        if verified:
            counts["verified"] += 1

    def _fail(self, name: str, why: str, permanent: bool) -> None:
        entry = self.names[name]
        self.report.fail(entry.raw, entry.rel, why, permanent)

    # ------------------------------------------------------------------ all of it
    def run(self) -> int:
        self.write_list()
        rc = self.copy() if self.names else 0
        if self.stopping:
            return 128 + signal.SIGTERM
        for name in ("files", "bytes", "skipped", "skipped_bytes"):
            self.counts[name] = 0  # counted exactly by the check
        if self.names:
            self.check(rc)
        if self.stopping:
            return 128 + signal.SIGTERM
        for note in self.notes + (self.general if rc else []):
            print(f"rclone_worker: {note}", file=sys.stderr)
        self.report.status(done=True)
        return 1 if self.counts["failed"] else 0

    def stop(self, signum: int, _frame: object) -> None:
        """SIGTERM: stop rclone the same way (it removes its partial files) and end."""
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills it when this worker dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        pass


# ---------------------------------------------------------------------------- the program
_USAGE = (
    "usage: python -S rclone_worker.py --src SRC --dst DST --shard FILE --status FILE --failed FILE "
    "--list FILE [--names rclone|local] [--verify size|checksum|none] [--threads N] [--rclone EXE] "
    "[--rclone-version X.Y.Z] [--new]"
)
_REQUIRED = ("src", "dst", "shard", "status", "failed", "list")
_OPTIONS = _REQUIRED + ("names", "verify", "threads", "rclone", "rclone-version")


def parse_args(argv: "List[str]") -> "Dict[str, str] | str":
    """The options as a dict, or the reason they are wrong (``--name=VALUE`` or ``--name VALUE``)."""
    opts = {"names": "rclone", "verify": "size", "threads": "8", "rclone": "rclone", "rclone-version": "", "new": ""}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--new":
            opts["new"] = "1"
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if not name.startswith("--") or name[2:] not in _OPTIONS:
            return f"unknown argument {arg!r}"
        if not eq:
            if i + 1 >= len(argv):
                return f"{name} needs a value"
            i += 1
            value = argv[i]
        opts[name[2:]] = value
        i += 1
    missing = [f"--{n}" for n in _REQUIRED if n not in opts]
    if missing:
        return "missing " + ", ".join(missing)
    if opts["verify"] not in ("size", "checksum", "none"):
        return f"--verify must be size, checksum or none, not {opts['verify']!r}"
    if opts["names"] not in ("rclone", "local"):
        return f"--names must be rclone or local, not {opts['names']!r}"
    if not opts["threads"].isdigit() or int(opts["threads"]) < 1:
        return f"--threads must be a whole number >= 1, not {opts['threads']!r}"
    return opts


def _copy_shard(opts: "Dict[str, str]", failed, messages, permanent) -> int:
    shard = RcloneShard(opts, failed, messages, permanent)
    signal.signal(signal.SIGTERM, shard.stop)
    return shard.run()


def main(argv: "Optional[List[str]]" = None) -> int:
    return run_program(argv, _USAGE, "rclone_worker.py", parse_args, _copy_shard)


if __name__ == "__main__":
    sys.exit(main())
