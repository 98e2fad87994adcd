"""The direct path's HTTP/1.1 client (taurus_tools/transfer/s3_http.py) against a real socket server.

The S3 servers of the other tests exercise the happy path (every direct request there goes
through this client); here a scripted server on 127.0.0.1 sends what they rarely do:
chunked bodies, ``Connection: close``, an idle keep-alive closed by the server, a body that
breaks off, silence, HTTP/1.0, garbage.  Every failure must be an HTTPFailure (the caller
then asks through botocore), never a hang or a wrong body.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from typing import Callable, List

import pytest

from taurus_tools.transfer.s3_http import CAN_SPLICE, HTTPFailure, Pool

Handler = Callable[[socket.socket, bytes, int], bool]


class ScriptedServer:
    """Accepts connections; for each request calls ``handler(conn, request_head, n)`` (``n``:
    the request's number, over all connections), which writes the answer and returns
    whether to keep the connection open."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: List[bytes] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._requests(conn)
        except OSError:  # the client went away (as some tests make it)
            pass

    def _requests(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                with self.lock:
                    self.requests.append(head + b"\r\n\r\n" + body)
                    number = len(self.requests)
                if not self.handler(conn, head, number):
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve():
    servers: List[ScriptedServer] = []

    def start(handler: Handler) -> ScriptedServer:
        server = ScriptedServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def pool_for(server: ScriptedServer, read_timeout: float = 5.0) -> Pool:
    return Pool(server.endpoint, maxsize=4, connect_timeout=2, read_timeout=read_timeout)


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nETag: \"e\"\r\n{extra}\r\n".encode() + body


def test_keep_alive_serves_many_requests_on_one_connection(serve):
    server = serve(lambda conn, head, n: conn.sendall(ok(b"body %d" % n)) or True)
    pool = pool_for(server)
    for i in range(1, 20):
        response = pool.request("GET", "/b/k", {"X-Test": "1"})
        assert response.status == 200 and response.headers["etag"] == '"e"'
        assert response.read() == b"body %d" % i
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"GET /b/k HTTP/1.1\r\n") and b"\r\nHost: 127.0.0.1:" in first and b"X-Test: 1" in first


def test_a_put_sends_its_body_and_its_length(serve):
    server = serve(lambda conn, head, n: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") or True)
    response = pool_for(server).request("PUT", "/b/k", {}, b"\x00data\r\n\r\n")
    response.discard()
    assert response.status == 200
    assert server.requests[0].endswith(b"Content-Length: 9\r\n\r\n\x00data\r\n\r\n")
    empty = pool_for(server).request("PUT", "/b/empty", {}, b"")
    empty.discard()
    assert b"Content-Length: 0\r\n" in server.requests[1]
    part = os.urandom(3 << 20)  # (a large body goes in a write of its own)
    pool_for(server).request("PUT", "/b/part", {}, part).discard()
    assert server.requests[2].endswith(b"Content-Length: %d\r\n\r\n" % len(part) + part)


def test_chunked_bodies_with_extensions_and_trailers(serve):
    def chunked(conn, head, n):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
        return True

    server = serve(chunked)
    pool = pool_for(server)
    assert pool.request("GET", "/", {}).read() == b"hello 0123456789"
    assert b"".join(pool.request("GET", "/", {}).blocks(3)) == b"hello 0123456789"
    assert server.connections == 1  # the connection served both


def test_a_connection_the_server_closes_is_not_reused(serve):
    server = serve(lambda conn, head, n: conn.sendall(ok(b"x", "Connection: close\r\n")) or False)
    pool = pool_for(server)
    for _ in range(3):
        assert pool.request("GET", "/", {}).read() == b"x"
    assert server.connections == 3


def test_an_idle_connection_closed_by_the_server_is_replaced_once(serve):
    """The server drops a keep-alive connection between requests: the next request goes
    on a new connection, once, without an error."""
    def once_per_connection(conn, head, n):
        conn.sendall(ok(b"answer %d" % n))
        return False  # closes after answering, without saying so

    server = serve(once_per_connection)
    pool = pool_for(server)
    assert pool.request("GET", "/", {}).read() == b"answer 1"
    time.sleep(0.2)  # the server's close has arrived
    assert pool.request("GET", "/", {}).read() == b"answer 2"
    assert server.connections == 2


def test_a_fresh_connection_that_fails_is_an_error_not_a_retry(serve):
    server = serve(lambda conn, head, n: False)  # closes without an answer
    with pytest.raises(HTTPFailure):
        pool_for(server).request("GET", "/", {})
    assert len(server.requests) == 1


def test_a_body_that_breaks_off_raises_and_the_connection_is_dropped(serve):
    def short(conn, head, n):
        if n <= 2:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly some")
            return False
        conn.sendall(ok(b"whole"))
        return True

    server = serve(short)
    pool = pool_for(server)
    with pytest.raises(HTTPFailure):
        pool.request("GET", "/", {}).read()
    with pytest.raises(HTTPFailure):
        b"".join(pool.request("GET", "/", {}).blocks())
    assert pool.request("GET", "/", {}).read() == b"whole"
    assert server.connections == 3


def test_a_large_body_in_blocks_arrives_whole(serve):
    payload = bytes(range(256)) * (12 << 10)  # 3 MiB
    server = serve(lambda conn, head, n: conn.sendall(ok(payload)) or True)
    pool = pool_for(server)
    blocks = list(pool.request("GET", "/", {}).blocks(1 << 20))
    assert b"".join(blocks) == payload and max(len(b) for b in blocks) <= 1 << 20
    assert pool.request("GET", "/", {}).read() == payload
    assert server.connections == 1


def test_an_abandoned_body_closes_its_connection(serve):
    payload = b"z" * (2 << 20)
    server = serve(lambda conn, head, n: conn.sendall(ok(payload)) or True)
    pool = pool_for(server)
    blocks = pool.request("GET", "/", {}).blocks(1 << 16)
    next(blocks)
    blocks.close()  # the rest of the body is still on the wire: not reusable
    assert pool.request("GET", "/", {}).read() == payload
    assert server.connections == 2


def test_head_and_no_content_have_no_body(serve):
    def answer(conn, head, n):
        if head.startswith(b"HEAD"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\nX-Amz-Meta-Mtime: 1.5\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        return True

    server = serve(answer)
    pool = pool_for(server)
    head = pool.request("HEAD", "/", {})
    assert head.headers["content-length"] == "12345" and head.headers["x-amz-meta-mtime"] == "1.5"
    assert head.read() == b""
    assert pool.request("DELETE", "/", {}).read() == b""
    assert pool.request("HEAD", "/", {}).status == 200
    assert server.connections == 1


def test_silence_times_out(serve):
    server = serve(lambda conn, head, n: (time.sleep(3), True)[1])
    started = time.monotonic()
    with pytest.raises(HTTPFailure):
        pool_for(server, read_timeout=0.5).request("GET", "/", {})
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    "answer", [b"garbage\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"]
)
def test_garbage_is_a_failure(serve, answer):
    server = serve(lambda conn, head, n: conn.sendall(answer) or True)
    with pytest.raises(HTTPFailure):
        pool_for(server).request("GET", "/", {})


def test_http_1_0_without_length_reads_to_the_close(serve):
    server = serve(lambda conn, head, n: conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nall of it") or False)
    pool = pool_for(server)
    assert pool.request("GET", "/", {}).read() == b"all of it"
    assert pool.request("GET", "/", {}).read() == b"all of it"
    assert server.connections == 2


def test_a_closed_port_fails_fast():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises((HTTPFailure, OSError)):
        Pool(f"http://127.0.0.1:{port}", maxsize=1, connect_timeout=1, read_timeout=1).request("GET", "/", {})


def test_threads_share_the_pool(serve):
    server = serve(lambda conn, head, n: conn.sendall(ok(head.split(b" ")[1])) or True)
    pool = pool_for(server)
    errors: List[BaseException] = []

    def run(i: int) -> None:
        try:
            for j in range(50):
                path = f"/t{i}/{j}"
                assert pool.request("GET", path, {}).read() == path.encode()
        except BaseException as exc:  # noqa: B902 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert server.connections <= 8 + 4


# ------------------------------------------------------------------ bodies straight to files
@pytest.fixture(params=["splice", "blocks"])
def to_file(request, tmp_path):
    """How write_to moves a body: spliced (where the system can) or in blocks through Python."""
    if request.param == "splice" and not CAN_SPLICE:
        pytest.fail("this Linux has no splice(2) for Python: the spliced path is untested")
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    yield request.param, fd
    os.close(fd)


def pool_writing(server: ScriptedServer, how: str, read_timeout: float = 5.0) -> Pool:
    pool = pool_for(server, read_timeout)
    pool.splice = how == "splice"
    return pool


def trickle(payload: bytes, pieces: int = 7, pause: float = 0.01) -> Handler:
    """Send the answer's head with the start of the body, then the rest in pieces with pauses
    (the reader finds the socket empty between them)."""
    def answer(conn: socket.socket, head: bytes, n: int) -> bool:
        whole = ok(payload)
        step = len(whole) // pieces + 1
        for i in range(0, len(whole), step):
            conn.sendall(whole[i : i + step])
            time.sleep(pause)
        return True

    return answer


def test_write_to_puts_a_body_at_its_offset_and_reuses_the_connection(serve, to_file):
    how, fd = to_file
    payload = os.urandom(3 << 20)
    server = serve(trickle(payload))
    pool = pool_writing(server, how)
    os.pwrite(fd, b"keep", 0)
    assert pool.request("GET", "/", {}).write_to(fd, 4) == len(payload)
    assert pool.request("GET", "/", {}).write_to(fd, 4 + len(payload)) == len(payload)
    assert os.pread(fd, 2 * len(payload) + 10, 0) == b"keep" + payload + payload
    assert server.connections == 1 and pool.splice is (how == "splice")


def test_write_to_of_a_small_body_that_came_with_the_head(serve, to_file):
    how, fd = to_file
    server = serve(lambda conn, head, n: conn.sendall(ok(b"tiny %d" % n)) or True)
    pool = pool_writing(server, how)
    assert pool.request("GET", "/", {}).write_to(fd, 0) == 6
    assert pool.request("GET", "/", {}).write_to(fd, 6) == 6
    assert os.pread(fd, 100, 0) == b"tiny 1tiny 2"
    assert server.connections == 1


def test_write_to_a_body_that_breaks_off_raises_and_drops_the_connection(serve, to_file):
    how, fd = to_file

    def short(conn, head, n):
        if n == 1:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n" + b"s" * 500_000)
            return False
        conn.sendall(ok(b"whole"))
        return True

    server = serve(short)
    pool = pool_writing(server, how)
    with pytest.raises(HTTPFailure):
        pool.request("GET", "/", {}).write_to(fd, 0)
    assert pool.request("GET", "/", {}).write_to(fd, 0) == 5
    assert server.connections == 2


def test_write_to_times_out_on_a_silent_body(serve, to_file):
    how, fd = to_file

    def stall(conn, head, n):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n" + b"s" * 300_000)
        time.sleep(3)
        return False

    server = serve(stall)
    started = time.monotonic()
    with pytest.raises(HTTPFailure):
        pool_writing(server, how, read_timeout=0.5).request("GET", "/", {}).write_to(fd, 0)
    assert time.monotonic() - started < 2.5


@pytest.mark.skipif(not CAN_SPLICE, reason="splice(2) only")
def test_a_file_that_takes_no_splice_gets_the_body_through_python(serve, tmp_path, monkeypatch):
    payload = os.urandom(2 << 20)
    server = serve(trickle(payload))
    pool = pool_writing(server, "splice")
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    real = os.splice
    refused: List[int] = []

    def splice(src, dst, count, *args, **kwargs):
        if dst == fd:  # as a file system without splice_write answers
            refused.append(count)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(src, dst, count, *args, **kwargs)

    monkeypatch.setattr(os, "splice", splice)
    try:
        assert pool.request("GET", "/", {}).write_to(fd, 0) == len(payload)
        assert pool.request("GET", "/", {}).write_to(fd, len(payload)) == len(payload)
        assert os.pread(fd, 3 * len(payload), 0) == payload + payload
    finally:
        os.close(fd)
    assert len(refused) == 1 and not pool.splice  # refused once, then in blocks


@pytest.mark.skipif(not CAN_SPLICE, reason="splice(2) only")
def test_a_full_disk_is_the_files_error_not_the_connections(serve, tmp_path, monkeypatch):
    server = serve(trickle(os.urandom(2 << 20)))
    pool = pool_writing(server, "splice")
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    real = os.splice

    def splice(src, dst, count, *args, **kwargs):
        if dst == fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, count, *args, **kwargs)

    monkeypatch.setattr(os, "splice", splice)
    try:
        with pytest.raises(OSError) as caught:
            pool.request("GET", "/", {}).write_to(fd, 0)
    finally:
        os.close(fd)
    assert caught.value.errno == errno.ENOSPC and not isinstance(caught.value, HTTPFailure)
    assert pool.splice  # the socket splices fine: later bodies too


@pytest.mark.parametrize("reading", ["write_to", "read", "head"])
def test_interrupt_breaks_off_requests_in_flight_at_once(serve, tmp_path, reading):
    def stall(conn, head, n):
        if n in (2, 3):  # the head and a bit of the body, then nothing for a long time
            if reading != "head":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n" + b"s" * 100_000)
            time.sleep(20)
            return False
        conn.sendall(ok(b"after"))
        return True

    server = serve(stall)
    pool = pool_for(server, read_timeout=30)
    assert pool.request("GET", "/", {}).read() == b"after"  # one of the two on a kept connection
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    outcomes: List[BaseException] = []

    def fetch() -> None:
        try:
            response = pool.request("GET", "/", {})
            if reading == "write_to":
                response.write_to(fd, 0)
            else:
                response.read()
        except BaseException as exc:  # noqa: B902 (checked below)
            outcomes.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(server.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.requests) == 3
    time.sleep(0.2)  # (inside their reads)
    started = time.monotonic()
    pool.interrupt()
    for t in threads:
        t.join(5)
    os.close(fd)
    assert time.monotonic() - started < 2, "the requests in flight were not broken off"
    assert len(outcomes) == 2 and all(isinstance(e, HTTPFailure) for e in outcomes), outcomes
    assert len(server.requests) == 3  # none sent again (as one whose kept connection had closed is)
    assert pool.request("GET", "/", {}).read() == b"after"  # later requests go on
