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
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional

if TYPE_CHECKING:
    import ssl

__all__ = ["HTTPFailure", "Pool", "Response"]

_HEAD_LIMIT = 64 << 10  # a response head longer than this is no S3 answer
_RECV = 256 << 10
_NO_BODY = frozenset((204, 304))


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

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

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
        self._lock = threading.Lock()

    def give_back(self, conn: _Connection, *, keep: bool) -> None:
        if keep and not conn.buffer:
            with self._lock:
                if len(self._idle) < self.maxsize:
                    self._idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def request(self, method: str, path: str, headers: Dict[str, str], body: bytes = b"") -> Response:
        """Send one request; the response with its head read (see :class:`Response`).

        ``headers`` must not hold Host; Content-Length is written here (from ``body``), whatever
        ``headers`` say (a signed request names it there).  Raises
        :class:`HTTPFailure` (or :class:`OSError` for a connection that cannot be made).
        """
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() != "content-length"]
        if body or method in ("PUT", "POST"):
            lines.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = _Connection(self)
            try:
                conn.sock.sendall(message)
                head = conn.read_until(b"\r\n\r\n")
            except (OSError, HTTPFailure) as exc:
                conn.close()
                if reused and not isinstance(exc, socket.timeout):
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
