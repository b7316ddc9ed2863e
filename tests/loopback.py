"""A small HTTP server on 127.0.0.1 for tests that fetch over the network without leaving the machine.

It serves *routes*: a path mapped to a :class:`Route` (body, content type, status, and misbehaviours:
a delay before answering, a body cut short of its Content-Length). Routes may be changed while the
server runs, e.g. to make a failing URL succeed for a retry test. Every request is counted, so a test
can assert that a rerun made no requests at all.

Usage::

    with LoopbackServer() as srv:
        srv.add("/a.jpg", Route(data, "image/jpeg"))
        srv.add("/slow", Route(b"...", "image/jpeg", delay_s=3))
        url = srv.url("/a.jpg")
        ...
        assert srv.count() == 0

The server only ever binds 127.0.0.1 on an ephemeral port. Delays wait on the server's stop event, so
stopping it never hangs on a sleeping handler.
"""

from __future__ import annotations

import mimetypes
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["LoopbackServer", "Route"]


@dataclass
class Route:
    """What one path answers.

    ``delay_s`` waits before sending anything (to trigger client read timeouts); ``truncate`` sends the
    headers with the full Content-Length but only half of the body, then closes the connection;
    ``send_length=False`` omits Content-Length (the body then ends when the connection closes);
    ``drip_bps`` sends the body that many bytes a second (a server that never stops trickling).
    """

    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    delay_s: float = 0.0
    truncate: bool = False
    send_length: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    drip_bps: int = 0

    @classmethod
    def file(cls, path: str | Path, content_type: str | None = None, **kw) -> "Route":
        """A route serving a file's bytes, with the content type guessed from its name."""
        path = Path(path)
        ctype = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return cls(path.read_bytes(), ctype, **kw)

    @classmethod
    def html(cls, text: str, **kw) -> "Route":
        return cls(text.encode(), "text/html; charset=utf-8", **kw)

    @classmethod
    def text(cls, text: str, **kw) -> "Route":
        return cls(text.encode(), "text/plain; charset=utf-8", **kw)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.0"  # one request per connection: a truncated body ends at close

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # keep test output clean

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(send_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        route = owner._request(self.command, path, dict(self.headers))
        if route is None:
            route = Route(b"not found\n", "text/plain", status=404)
        if route.delay_s and owner._stop.wait(route.delay_s):
            return  # the server is stopping: drop the connection
        try:
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            if route.send_length:
                self.send_header("Content-Length", str(len(route.body)))
            for k, v in route.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if send_body:
                body = route.body[: len(route.body) // 2] if route.truncate else route.body
                if route.drip_bps:
                    for i in range(0, len(body), route.drip_bps):
                        self.wfile.write(body[i:i + route.drip_bps])
                        self.wfile.flush()
                        if owner._stop.wait(1.0):
                            return
                else:
                    self.wfile.write(body)
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired first)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: "LoopbackServer"


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with mutable routes and a request log."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.user_agents: set[str] = set()  # every User-Agent header seen
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "LoopbackServer":
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="loopback-http",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- routes and URLs ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def add(self, path: str, route: Route) -> Route:
        with self._lock:
            self._routes[path] = route
        return route

    def route(self, path: str) -> Route:
        with self._lock:
            return self._routes[path]

    # --- the request log ------------------------------------------------------------------------
    def _request(self, method: str, path: str, headers: dict[str, str]) -> Route | None:
        with self._lock:
            self.requests.append((method, path))
            self.user_agents.add(headers.get("User-Agent", ""))
            return self._routes.get(path)

    def count(self, path: str | None = None) -> int:
        """Requests received so far (to ``path`` only, if given)."""
        with self._lock:
            if path is None:
                return len(self.requests)
            return sum(1 for _, p in self.requests if p == path)

    def counts(self) -> Counter:
        with self._lock:
            return Counter(p for _, p in self.requests)

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.user_agents.clear()
