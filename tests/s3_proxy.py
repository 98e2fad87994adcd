"""A proxy in front of a real S3 server that lets a test step into chosen requests.

The test S3 servers cannot deny one key and serve the next, fail a request once, or
stop in the middle of a multipart transfer on cue.  :class:`FaultProxy` forwards every
request to the real server unchanged (headers included, so the signature still
verifies: the Host header is the proxy's, as the client signed it) and calls
``on_request`` first, which may

* return None: forward it;
* return ``(status, code)``: answer with that S3 error instead (``(403, "AccessDenied")``);
* return ``"truncate"``: forward it, then send only half of the server's body and close
  the connection (a transfer cut short);
* return ``"no-content-range"``: forward it, leaving out the answer's Content-Range (a
  server that does not say an object's size when it answers a range);
* block (wait on an event): hold that one request, e.g. the second part of a multipart
  upload, while the test kills the process that sent it;
* change the server's state before the request reaches it (replace an object).

Every request is recorded in :attr:`FaultProxy.requests`, and those the real server failed
(a 5xx answer, or no answer) in :attr:`FaultProxy.server_errors` too.  It listens on 127.0.0.1 only,
on a free port, in daemon threads of the test process; :meth:`stop` ends it.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

#: Headers that belong to one connection, not to the request (never forwarded).
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "expect", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade")
)

Action = Union[None, str, Tuple[int, str]]


@dataclass(frozen=True)
class Request:
    """One request as the proxy saw it (path-style addressing: ``/bucket/key``)."""

    method: str
    bucket: str
    key: str
    query: Dict[str, str] = field(default_factory=dict)
    range: Optional[str] = None

    @property
    def is_part(self) -> bool:
        """An UploadPart of a multipart upload."""
        return self.method == "PUT" and "partNumber" in self.query

    @property
    def is_ranged_get(self) -> bool:
        return self.method == "GET" and self.range is not None


class FaultProxy:
    """Forward to ``upstream`` (``http://127.0.0.1:PORT``), letting ``on_request`` step in."""

    def __init__(self, upstream: str, on_request: Optional[Callable[[Request], Action]] = None) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.on_request = on_request
        self.requests: List[Request] = []
        #: The requests the real server answered with a 5xx status or not at all (its own
        #: failures, which clients retry: rclone serve s3 fails a PUT now and then under load).
        self.server_errors: List[Request] = []
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None

    @property
    def endpoint_url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FaultProxy":
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, name="s3-fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def seen(self, accept: Callable[[Request], bool]) -> List[Request]:
        """The requests so far that ``accept`` takes."""
        with self._lock:
            return [r for r in self.requests if accept(r)]

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _record_server_error(self, request: Request) -> None:
        with self._lock:
            self.server_errors.append(request)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: a client the test killed drops its connection mid-request."""


def _error_body(code: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{code} (injected by the test proxy)</Message></Error>"
    ).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and "100 Continue" for botocore's Expect header

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass

    def _forward(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise NotImplementedError("chunked request bodies are not forwarded by the test proxy")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        bucket, _, key = urllib.parse.unquote(path.lstrip("/")).partition("/")
        request = Request(
            self.command, bucket, key, dict(urllib.parse.parse_qsl(query, keep_blank_values=True)),
            self.headers.get("Range"),
        )
        proxy._record(request)
        action = proxy.on_request(request) if proxy.on_request is not None else None
        if isinstance(action, tuple):
            status, code = action
            data = b"" if self.command == "HEAD" else _error_body(code)
            self.send_response_only(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            data = response.read()
            headers = response.getheaders()
            status = response.status
        except BaseException:
            proxy._record_server_error(request)
            raise
        finally:
            upstream.close()
        if status >= 500:
            proxy._record_server_error(request)
        self.send_response_only(status)
        for name, value in headers:
            if action == "no-content-range" and name.lower() == "content-range":
                continue
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if self.command == "HEAD":  # no body: the size of the object it describes
            self.send_header("Content-Length", dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if action == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward
