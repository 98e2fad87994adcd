"""The HTTP/1.1 of the direct S3 path: keep-alive connections in one pool, and nothing else.

For a 16 KiB GET, urllib3 on http.client spends about 0.5 ms of CPU (headers parsed by the
``email`` package, layered response objects); on the two cores of a data-mover node that
is most of a small-file download.  This client spends about 0.12 ms: a request is one
``sendall``, a response's head is split with ``bytes`` methods, the body is read exactly.

It speaks only what the direct path's requests need: a method, a path (already escaped),
headers and a body of bytes; responses with ``Content-Length``, chunked, or no body (HEAD,
1xx, 204, 304); keep-alive unless the server says ``Connection: close``; ``https`` through
:mod:`ssl`.  A connection that fails before any answer, after it served earlier requests
(the server closed an idle keep-alive), is replaced and the request sent once more (every
request of the direct path is idempotent); any other failure raises :class:`HTTPFailure`
and its connection is closed.  The caller (:class:`~taurus_tools.transfer.s3_direct.DirectRequests`)
then asks through botocore, which retries and reports: this module decides nothing.

A body can also go straight to a file (:meth:`Response.write_to`): on Linux, over plain
http, with ``splice(2)`` through a pipe, so the bytes never pass through Python (a large
download spends a quarter less system time and almost no user time); elsewhere in blocks
with ``pwrite``.  :meth:`Pool.interrupt` breaks off every request in flight (a cancelled
copy that runs in the driver's own threads cannot be killed as a process can).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import urllib.parse
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple, Union

if TYPE_CHECKING:
    import ssl

__all__ = ["HTTPFailure", "Pool", "Response"]

_HEAD_LIMIT = 64 << 10  # a response head longer than this is no S3 answer
_RECV = 256 << 10
_NO_BODY = frozenset((204, 304))
_PIPE = 1 << 20  # the pipe a spliced body passes through (Linux's default ceiling for pipes)


class HTTPFailure(Exception):
    """The request got no usable answer (connection, protocol or timeout)."""


class _Connection:
    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        sock = socket.create_connection((pool.host, pool.port), timeout=pool.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if pool.tls is not None:
                sock = pool.tls.wrap_socket(sock, server_hostname=pool.host)
            sock.settimeout(pool.read_timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.buffer = b""
        self.served = 0  # responses read whole on this connection
        self.pipe: Optional[Tuple[int, int]] = None  # for splice(2), made on first use
        self.broken_off = False  # by Pool.interrupt(): its request is not sent again

    def close(self) -> None:
        self.pool.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])

    def break_off(self) -> None:
        """Make a request in flight on this connection fail now (from another thread)."""
        self.broken_off = True
        try:  # (socket's own shutdown: an SSLSocket's would drop its TLS state under the reader)
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def splice_to(self, fd: int, at: int, size: int) -> None:
        """Move the next ``size`` bytes of the socket to ``fd`` at offset ``at`` without
        copying them through Python (splice through a pipe).  Raises :class:`HTTPFailure`
        for the socket's failures (a broken body, no splice for this socket: then splice is
        off for the pool), OSError for the file's (ENOSPC, ...)."""
        if self.pipe is None:
            self.pipe = os.pipe()
            try:
                import fcntl

                fcntl.fcntl(self.pipe[1], fcntl.F_SETPIPE_SZ, _PIPE)  # type: ignore[attr-defined]
            except (OSError, AttributeError):  # (a smaller pipe works too)
                pass
        out, into = self.pipe
        sock = self.sock.fileno()
        poller: Optional[select.poll] = None
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        while size:
            try:
                got = os.splice(sock, into, min(size, _PIPE), flags=flags)
            except BlockingIOError:  # (the socket has a timeout: it is non-blocking)
                if poller is None:
                    poller = select.poll()
                    poller.register(sock, select.POLLIN)
                if not poller.poll(self.pool.read_timeout * 1000):
                    raise HTTPFailure(f"no data within {self.pool.read_timeout:g} s in a body") from None
                continue
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    self.pool.splice = False
                raise HTTPFailure(f"{type(exc).__name__}: {exc}") from None
            if not got:
                raise HTTPFailure("the server closed the connection within a body")
            size -= got
            while got:
                if self.pool.splice:
                    try:
                        put = os.splice(out, fd, got, offset_dst=at)
                    except OSError as exc:
                        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                            raise  # (ENOSPC, EIO: the file's own failure)
                        # A file system that takes no splice: the rest of this body through
                        # Python, later ones in blocks.
                        self.pool.splice = False
                        continue
                else:
                    data = os.read(out, got)
                    os.pwrite(fd, data, at)
                    put = len(data)
                got -= put
                at += put

    def _fill(self) -> None:
        data = self.sock.recv(_RECV)
        if not data:
            raise HTTPFailure("the server closed the connection")
        self.buffer += data

    def read_until(self, marker: bytes) -> bytes:
        """The bytes up to ``marker`` (a head's blank line, a line's end), which is consumed."""
        while True:
            end = self.buffer.find(marker)
            if end >= 0:
                found, self.buffer = self.buffer[:end], self.buffer[end + len(marker):]
                return found
            if len(self.buffer) > _HEAD_LIMIT:
                raise HTTPFailure("no end of a response head or line within 64 KiB")
            self._fill()

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if len(self.buffer) >= _RECV:  # a large body: the rest straight from the socket
                rest = bytearray(size - len(self.buffer))
                view, got = memoryview(rest), 0
                while got < len(rest):
                    n = self.sock.recv_into(view[got:])
                    if not n:
                        raise HTTPFailure("the server closed the connection within a body")
                    got += n
                data, self.buffer = self.buffer + bytes(rest), b""
                return data
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_some(self, limit: int) -> bytes:
        if not self.buffer:
            self._fill()
        data, self.buffer = self.buffer[:limit], self.buffer[limit:]
        return data


#: Whether this system can splice a socket into a file (Linux, Python >= 3.10).
CAN_SPLICE = hasattr(os, "splice") and hasattr(select, "poll")


class Response:
    """A status, the headers (names in lower case) and a body to read once.

    Read the body with :meth:`read` or :meth:`blocks`, or give it up with :meth:`discard`;
    each gives the connection back to the pool (or closes it) when done.
    """

    def __init__(self, conn: _Connection, status: int, headers: Dict[str, str], method: str) -> None:
        self._conn: Optional[_Connection] = conn
        self.status = status
        self.headers = headers
        self._keep = headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in _NO_BODY or 100 <= status < 200:
            self._mode, self._left = "none", 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode, self._left = "chunked", 0
        elif "content-length" in headers:
            try:
                self._mode, self._left = "length", int(headers["content-length"])
            except ValueError:
                raise HTTPFailure("a Content-Length that is no number") from None
        else:
            self._mode, self._left, self._keep = "close", 0, False

    def _done(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.served += 1
            conn.pool.give_back(conn, keep=self._keep)

    def _fail(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def blocks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The body in blocks of at most ``size`` bytes; raises :class:`HTTPFailure` on a broken one."""
        conn = self._conn
        if conn is None:
            return
        finished = False
        try:
            if self._mode == "length":
                while self._left:
                    block = conn.read_some(min(size, self._left))
                    self._left -= len(block)
                    yield block
            elif self._mode == "chunked":
                while True:
                    line = conn.read_until(b"\r\n")
                    try:
                        length = int(line.split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        raise HTTPFailure("a chunk size that is no number") from None
                    if length == 0:
                        while conn.read_until(b"\r\n"):  # trailers, up to the empty line
                            pass
                        break
                    while length:
                        block = conn.read_some(min(size, length))
                        length -= len(block)
                        yield block
                    conn.read_until(b"\r\n")
            elif self._mode == "close":
                while True:
                    try:
                        block = conn.read_some(size)
                    except HTTPFailure:  # the end of the body
                        break
                    yield block
            finished = True
        except (OSError, ValueError) as exc:
            raise HTTPFailure(f"{type(exc).__name__}: {exc}") from None
        finally:
            if finished:
                self._done()
            else:  # failed, or abandoned half-read: the connection cannot serve another request
                self._fail()

    def write_to(self, fd: int, at: int, *, block: int = 1 << 20) -> int:
        """Write the body to the file ``fd`` from offset ``at`` on; return its length.

        Spliced where it can be (see the module's notes), else written in blocks; raises
        :class:`HTTPFailure` on a broken body (what arrived is written)."""
        conn = self._conn
        if conn is None or self._mode != "length" or conn.pool.tls is not None or not conn.pool.splice:
            n = 0
            for piece in self.blocks(block):
                os.pwrite(fd, piece, at + n)
                n += len(piece)
            return n
        n = 0
        try:
            if conn.buffer:  # the start of the body came with the head
                piece = conn.buffer[: self._left]
                conn.buffer = conn.buffer[len(piece):]
                os.pwrite(fd, piece, at)
                n, self._left = len(piece), self._left - len(piece)
            if self._left:
                conn.splice_to(fd, at + n, self._left)
                n, self._left = n + self._left, 0
        except BaseException:  # (the connection is mid-body: it serves no other request)
            self._fail()
            raise
        self._done()
        return n

    def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        if conn is not None and self._mode == "length":
            try:
                data = conn.read_exact(self._left)
            except OSError as exc:
                self._fail()
                raise HTTPFailure(f"{type(exc).__name__}: {exc}") from None
            except HTTPFailure:
                self._fail()
                raise
            self._left = 0
            self._done()
            return data
        return b"".join(self.blocks())

    def discard(self) -> None:
        """Give up the body: read a short one (the connection then serves again), close otherwise."""
        if self._conn is None:
            return
        if self._mode == "length" and self._left <= _HEAD_LIMIT or self._mode == "none":
            try:
                self.read()
            except HTTPFailure:
                pass
        else:
            self._fail()


class Pool:
    """Keep-alive connections to one ``http(s)://host:port``, at most ``maxsize`` kept idle.

    Thread-safe: each request takes an idle connection (or opens one) for itself.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        maxsize: int,
        connect_timeout: float,
        read_timeout: float,
        ca_certs: Optional[str] = None,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc
        self.maxsize = maxsize
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.tls: Optional[ssl.SSLContext] = None
        if parts.scheme == "https":
            import ssl as tls  # (here: most endpoints of a cluster are plain http, and it costs 5 ms)

            self.tls = tls.create_default_context(cafile=ca_certs)
        self._idle: List[_Connection] = []
        self._busy: "set[_Connection]" = set()  # connections a request is using
        self._lock = threading.Lock()
        #: Bodies go to files with splice(2) (:meth:`Response.write_to`); turned off for
        #: good once a socket or file refuses it.
        self.splice = CAN_SPLICE

    def give_back(self, conn: _Connection, *, keep: bool) -> None:
        if keep and not conn.buffer:
            with self._lock:
                self._busy.discard(conn)
                if len(self._idle) < self.maxsize:
                    self._idle.append(conn)
                    return
        conn.close()

    def forget(self, conn: _Connection) -> None:
        with self._lock:
            self._busy.discard(conn)

    def interrupt(self) -> None:
        """Break off every request in flight (each raises :class:`HTTPFailure` in its
        thread) and close the idle connections; later requests open new ones."""
        with self._lock:
            busy = list(self._busy)
        for conn in busy:
            conn.break_off()
        self.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def request(
        self, method: str, path: str, headers: Dict[str, str], body: "Union[bytes, memoryview]" = b""
    ) -> Response:
        """Send one request; the response with its head read (see :class:`Response`).

        ``headers`` must not hold Host; Content-Length is written here (from ``body``), whatever
        ``headers`` say (a signed request names it there).  Raises
        :class:`HTTPFailure` (or :class:`OSError` for a connection that cannot be made).
        """
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() != "content-length"]
        if body or method in ("PUT", "POST"):
            lines.append(f"Content-Length: {len(body)}")
        start = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # A small body in the same write; a large one (a part: 8 MiB) is not copied for it.
        pieces = [start + body] if len(body) < _RECV else [start, body]
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = _Connection(self)
            with self._lock:
                self._busy.add(conn)
            try:
                for piece in pieces:
                    conn.sock.sendall(piece)
                head = conn.read_until(b"\r\n\r\n")
            except (OSError, HTTPFailure) as exc:
                conn.close()
                if reused and not isinstance(exc, socket.timeout) and not conn.broken_off:
                    continue  # an idle connection the server had closed: once more on another
                raise HTTPFailure(f"{type(exc).__name__}: {exc}") from None
            try:
                return _response(conn, head, method)
            except HTTPFailure:
                conn.close()
                raise


def _response(conn: _Connection, head: bytes, method: str) -> Response:
    status_line, _, rest = head.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HTTPFailure(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers: Dict[str, str] = {}
    for line in rest.split(b"\r\n") if rest else ():
        name, sep, value = line.partition(b":")
        if not sep:
            raise HTTPFailure("a header line without ':'")
        key = name.strip().lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if parts[0] == b"HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers.setdefault("connection", "close")
    return Response(conn, int(parts[1]), headers, method)
