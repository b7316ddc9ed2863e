"""Polite HTTP downloads with ``requests``: robots.txt, an honest User-Agent, rate limits, caps.

:class:`HttpClient` downloads one URL to a file in a folder you give it and returns a
:class:`Download` (path, sha256, size, content type). Failures raise
:class:`~dsbuilder.fetch.common.FetchFailed` with a rejection code:

==================== ===================================================== =========
reason               when                                                  transient
==================== ===================================================== =========
robots_disallowed    the host's robots.txt disallows the path for our UA   no
http_error           HTTP status >= 400 (detail names it), broken          5xx, 429,
                     connection, too many redirects, bad URL               connection
timeout              connect/read timeout, or the whole item took longer   yes
                     than ``timeout_s`` (a watchdog closes a connection
                     that trickles on past it)
connection_refused   nothing listens at the host's port                    yes
blocked_address      the URL's host is a loopback, private, link-local or  no
                     reserved address that the recipe does not name
                     itself (a redirect or a page may not steer a fetch
                     into the curator's own network)
dns_error            the host name does not resolve                        yes
too_large            Content-Length, or the bytes received, exceed the cap no
truncated            the body ended before its Content-Length              yes
==================== ===================================================== =========

Transient failures are retried with exponential backoff (``retries``, ``backoff_s``). Redirects are
followed by hand (up to 10) so every hop is checked against robots.txt and the rate limit.

robots.txt is fetched once per origin with the same User-Agent and cached for the client's lifetime.
Its status decides as Python's :mod:`urllib.robotparser` does: 401/403 disallow everything, any other
4xx (e.g. 404) allows everything; a 5xx or no answer fails the item as a transient ``http_error`` (RFC
9309 says to assume a complete disallow while a server errs).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from dsbuilder.fetch.common import Deadline, FetchFailed, HostRateLimiter, with_retries

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309: parse at least 500 KiB
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Download:
    """A body saved to ``path`` (a temporary file the caller moves or deletes)."""

    path: Path
    url: str  # as requested
    final_url: str  # after redirects
    content_type: str  # media type, lower case, without parameters ("image/jpeg")
    charset: str | None
    sha256: str
    size: int


def _media_type(header: str | None) -> tuple[str, str | None]:
    """``"text/html; charset=UTF-8"`` -> ``("text/html", "utf-8")``."""
    if not header:
        return "", None
    media, _, params = header.partition(";")
    charset = None
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "charset" and v:
            charset = v.strip().strip('"').lower()
    return media.strip().lower(), charset


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps (causes, contexts, arguments, ``reason``)."""
    seen: set[int] = set()
    out: list[BaseException] = []
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        todo.extend([e.__cause__, e.__context__, *e.args, getattr(e, "reason", None)])
    return out


def _connect_failure(exc: BaseException) -> str | None:
    """``connection_refused`` or ``dns_error`` when that is what ``exc`` comes down to (urllib3's
    ``NewConnectionError`` is a subclass of its timeout error, so this is asked first)."""
    import urllib3

    for e in _causes(exc):
        if isinstance(e, ConnectionRefusedError):
            return "connection_refused"
        if isinstance(e, (socket.gaierror, urllib3.exceptions.NameResolutionError)):
            return "dns_error"
    return None


def _is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything it wraps) is a timeout; requests hides read timeouts in
    ``ConnectionError`` while streaming."""
    import requests
    import urllib3

    return any(isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError, socket.timeout,
                              TimeoutError)) for e in _causes(exc))


def _shutdown(resp: Any) -> None:
    """Shut the response's socket down (from the watchdog thread): a blocked read returns."""
    try:
        conn = getattr(resp.raw, "connection", None)
        sock = getattr(conn, "sock", None)
        if sock is None:  # the socket under http.client's buffered reader
            sock = resp.raw._fp.fp.raw._sock
        sock.shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        try:
            resp.close()
        except Exception:  # noqa: BLE001 - best effort from another thread
            pass


class HttpClient:
    """Downloads over HTTP(S), honouring robots.txt, a per-host rate limit and per-item limits.

    One client is meant to serve a whole stage run (it keeps a connection pool and the robots.txt
    cache). It is safe to share between threads.
    """

    def __init__(self, *, user_agent: str, timeout_s: float, retries: int, backoff_s: float,
                 max_bytes: int, limiter: HostRateLimiter, respect_robots: bool = True,
                 trusted_hosts: set[str] | None = None):
        self.trusted_hosts = {h.lower() for h in (trusted_hosts or set()) if h}
        self.user_agent = user_agent
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_bytes = int(max_bytes)
        self.limiter = limiter
        self.respect_robots = respect_robots
        self.requests_made = 0
        self._session = None
        self._robots: dict[str, Any] = {}  # origin -> RobotFileParser, or the FetchFailed it gave
        self._lock = threading.Lock()

    # --- session ----------------------------------------------------------------------------
    def _get(self, url: str, timeout: float, **kw):
        """One GET through the shared session (after waiting for the host's rate limit)."""
        import requests

        with self._lock:
            if self._session is None:
                self._session = requests.Session()
                self._session.headers.update({"User-Agent": self.user_agent,
                                              "Accept-Encoding": "identity"})
            session = self._session
        self.limiter.wait(url)
        with self._lock:
            self.requests_made += 1
        return session.get(url, timeout=(timeout, timeout), **kw)

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    # --- robots.txt -------------------------------------------------------------------------
    def _robots_for(self, origin: str):
        with self._lock:
            cached = self._robots.get(origin)
        if cached is None:
            try:
                cached = with_retries(lambda: self._fetch_robots(origin), retries=self.retries,
                                      backoff_s=self.backoff_s, what=f"{origin}/robots.txt")
            except FetchFailed as exc:
                cached = exc
            with self._lock:
                self._robots[origin] = cached
        if isinstance(cached, FetchFailed):
            raise FetchFailed(cached.reason, cached.detail, transient=cached.transient)
        return cached

    def _fetch_robots(self, origin: str):
        import requests
        from urllib.robotparser import RobotFileParser

        url = origin + "/robots.txt"
        rp = RobotFileParser(url)
        try:
            with self._get(url, self.timeout_s, stream=True, allow_redirects=True) as resp:
                if resp.status_code in (401, 403):
                    rp.disallow_all = True
                elif 400 <= resp.status_code < 500:
                    rp.allow_all = True
                elif resp.status_code >= 500:
                    raise FetchFailed("http_error", f"robots.txt of {origin} answered HTTP "
                                      f"{resp.status_code}; not fetching from it", transient=True)
                else:
                    body = resp.raw.read(ROBOTS_MAX_BYTES, decode_content=True) or b""
                    rp.parse(body.decode("utf-8", errors="replace").splitlines())
        except requests.RequestException as exc:
            why = _connect_failure(exc)
            if why is not None:
                failed = self._request_failure(origin, exc)
                raise FetchFailed(why, f"robots.txt of {failed.detail}", transient=True) from None
            if _is_timeout(exc):
                raise FetchFailed("timeout", f"robots.txt of {origin}: {exc}", transient=True) \
                    from None
            raise FetchFailed("http_error", f"robots.txt of {origin}: connection failed: {exc}",
                              transient=True) from None
        log.debug("robots.txt of %s loaded", origin)
        return rp

    def check_robots(self, url: str) -> None:
        """Raise ``robots_disallowed`` if robots.txt forbids ``url`` for our User-Agent."""
        if not self.respect_robots:
            return
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return
        rp = self._robots_for(f"{parts.scheme}://{parts.netloc}")
        if not rp.can_fetch(self.user_agent, url):
            raise FetchFailed("robots_disallowed",
                              f"robots.txt of {parts.netloc} disallows {parts.path or '/'} for "
                              f"our User-Agent")

    # --- downloads --------------------------------------------------------------------------
    def download(self, url: str, dest_dir: str | Path) -> Download:
        """Download ``url`` into a new file in ``dest_dir``, retrying transient failures."""
        return with_retries(lambda: self._download_once(url, Path(dest_dir)),
                            retries=self.retries, backoff_s=self.backoff_s, what=url)

    def _download_once(self, url: str, dest_dir: Path) -> Download:
        import requests

        deadline = Deadline.after(self.timeout_s)
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            self.check_address(current)
            self.check_robots(current)
            deadline.check(url, self.timeout_s)
            timeout = max(0.01, min(self.timeout_s, deadline.remaining()))
            try:
                resp = self._get(current, timeout, stream=True, allow_redirects=False)
            except requests.RequestException as exc:
                raise self._request_failure(url, exc) from None
            with resp:
                if resp.is_redirect:
                    current = urljoin(current, resp.headers["Location"])
                    log.debug("%s redirects to %s", url, current)
                    continue
                return self._save(url, resp, dest_dir, deadline)
        raise FetchFailed("http_error", f"more than {MAX_REDIRECTS} redirects from {url}")

    def check_address(self, url: str) -> None:
        """Refuse a host that resolves to a loopback, private, link-local or reserved address,
        unless the recipe names the host itself (``trusted_hosts``)."""
        import ipaddress

        host = (urlsplit(url).hostname or "").lower()
        if not host or host in self.trusted_hosts:
            return
        try:
            infos = socket.getaddrinfo(host, None)
        except socket.gaierror:
            return  # the request itself reports dns_error
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved \
                    or ip.is_multicast or ip.is_unspecified:
                raise FetchFailed("blocked_address", f"{url}: {host} is {ip}, a local or private "
                                  "address the recipe does not name; not fetched")

    def _request_failure(self, url: str, exc: Exception) -> FetchFailed:
        import requests

        why = _connect_failure(exc)
        if why == "connection_refused":
            return FetchFailed(why, f"{url}: connection refused (nothing listens there)",
                               transient=True)
        if why == "dns_error":
            return FetchFailed(why, f"{url}: the host name does not resolve", transient=True)
        if _is_timeout(exc):
            return FetchFailed("timeout", f"{url}: no answer within {self.timeout_s:g} s",
                               transient=True)
        if isinstance(exc, requests.ConnectionError):
            return FetchFailed("http_error", f"{url}: connection failed: {exc}", transient=True)
        return FetchFailed("http_error", f"{url}: {exc}")

    def _save(self, url: str, resp, dest_dir: Path, deadline: Deadline) -> Download:
        """Check the status and size, then stream the body to a file while hashing it."""
        import hashlib

        import requests
        import urllib3

        status = resp.status_code
        if status >= 400:
            raise FetchFailed("http_error", f"HTTP {status} {resp.reason or ''} for {url}".strip()
                              .replace("  ", " "), transient=status >= 500 or status == 429)
        content_type, charset = _media_type(resp.headers.get("Content-Type"))
        declared = resp.headers.get("Content-Length")
        declared = int(declared) if declared and declared.strip().isdigit() else None
        if declared is not None and declared > self.max_bytes:
            raise FetchFailed("too_large", f"{url}: Content-Length {declared} bytes is over the "
                              f"limit of {self.max_bytes} bytes", content_type=content_type)
        fd, tmp = tempfile.mkstemp(prefix="http-", suffix=".part", dir=dest_dir)
        h = hashlib.sha256()
        size = 0
        # a server may trickle bytes for ever: each read returns within the read timeout, and a chunk
        # takes hours to fill. At the item's deadline a watchdog shuts the socket down.
        watchdog = threading.Timer(max(0.0, deadline.remaining()), _shutdown, (resp,))
        watchdog.daemon = True
        watchdog.start()
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in resp.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchFailed("too_large", f"{url}: body is over the limit of "
                                          f"{self.max_bytes} bytes", content_type=content_type)
                    deadline.check(url, self.timeout_s)
                    h.update(chunk)
                    fh.write(chunk)
        except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
                requests.RequestException, OSError) as exc:
            Path(tmp).unlink(missing_ok=True)
            if deadline.remaining() <= 0:
                raise FetchFailed("timeout", f"{url}: took longer than the per-item timeout of "
                                  f"{self.timeout_s:g} s ({size} bytes received)",
                                  transient=True, content_type=content_type) from None
            if not isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                                    urllib3.exceptions.ProtocolError)):
                if isinstance(exc, requests.RequestException):
                    raise self._request_failure(url, exc) from None
                raise
            expected = f"all {declared} bytes" if declared is not None else "the end"
            raise FetchFailed("truncated", f"{url}: connection closed before {expected} arrived "
                              f"({type(exc).__name__})", transient=True,
                              content_type=content_type) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            watchdog.cancel()
        deadline.check(url, self.timeout_s)
        encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        if declared is not None and not encoded and size < declared:
            Path(tmp).unlink(missing_ok=True)
            raise FetchFailed("truncated", f"{url}: got {size} of {declared} bytes",
                              transient=True, content_type=content_type)
        return Download(Path(tmp), url, resp.url, content_type, charset, h.hexdigest(), size)
