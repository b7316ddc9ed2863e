"""Videos through the yt-dlp Python API (``yt_dlp.YoutubeDL``; never the command line).

Three steps, each its own call so the scrape stage can record and resume between them:

1. :meth:`YtDlp.list` - a *flat* extraction of what the curator wrote: a single video, or the entries
   of a playlist, channel, feed, page with ``<video>`` tags, or ``ytsearchN:`` query (at most
   ``max_items`` of them), without resolving the entries;
2. :meth:`YtDlp.resolve` - one entry's full metadata (formats, licence, duration), no download;
3. :meth:`YtDlp.download` - the chosen format into a folder we give, as ``media.<ext>``.

Only single-file formats are selected (the machine has no ffmpeg binary to merge streams). Timeouts,
retries and backoff are passed to yt-dlp (``socket_timeout``, ``retries``, ``retry_sleep_functions``)
and the whole item is also bounded by a deadline checked from a progress hook; on top of that the
caller retries transient failures (:func:`dsbuilder.fetch.common.with_retries`).

yt-dlp's download archive is *not* given to yt-dlp: if yt-dlp wrote it, a crash between its write
and our cache record would make the next run skip a video we never recorded. Instead the scrape stage
calls :func:`record_in_archive` after the record is committed, so the archive (same format as
yt-dlp's ``--download-archive``) lists exactly the videos we have.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from dsbuilder.fetch.common import Deadline, FetchFailed, HostRateLimiter

log = logging.getLogger(__name__)

T = TypeVar("T")

_HTTP_STATUS_RE = re.compile(r"HTTP Error (\d{3})")
_SHORT_RE = re.compile(r"bytes read, \d+ more expected")
_archive_lock = threading.Lock()


class _Logger:
    """Receives yt-dlp's messages: forwards them to :mod:`logging` and keeps them for diagnosis."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def debug(self, msg: str) -> None:
        if msg.startswith("[debug] "):
            return
        self.messages.append(msg)
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        self.messages.append(msg)
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        self.messages.append(msg)
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        self.messages.append(msg)
        log.info("yt-dlp: %s", msg)


@dataclass
class Listing:
    """What a flat extraction found: one video (``info`` resolved) or playlist ``entries``."""

    is_playlist: bool
    info: dict[str, Any]  # the video's full info, or the playlist's info without its entries
    entries: list[dict[str, Any]]  # flat entries (JSON-safe); empty for a single video


def unsmuggle(url: str | None) -> str | None:
    """``url`` without yt-dlp's ``#__youtubedl_smuggle=`` fragment (for display and ids)."""
    if not url:
        return url
    from yt_dlp.utils import unsmuggle_url

    return unsmuggle_url(url)[0]


def failure(exc: BaseException, what: str) -> FetchFailed:
    """Turn a yt-dlp error into a :class:`FetchFailed` with a rejection code.

    yt-dlp reports errors as ``DownloadError`` whose ``exc_info`` holds the original exception (an
    ``HTTPError`` with a status, a ``TransportError`` for network trouble) - or, for some download
    errors, only a message, which is then matched.
    """
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import ContentTooShortError, UnsupportedError

    cause = exc
    exc_info = getattr(exc, "exc_info", None)
    if exc_info and exc_info[1] is not None:
        cause = exc_info[1]
    msg = str(exc).removeprefix("ERROR: ").strip()
    if isinstance(cause, HTTPError):
        status = cause.status
        return FetchFailed("http_error", f"HTTP {status} for {what}: {msg}",
                           transient=status >= 500 or status == 429)
    if isinstance(cause, ContentTooShortError) or _SHORT_RE.search(msg):
        return FetchFailed("truncated", f"{what}: {msg}", transient=True)
    low = msg.lower()
    if "timed out" in low or "timeout" in type(cause.__cause__ or cause).__name__.lower():
        return FetchFailed("timeout", f"{what}: {msg}", transient=True)
    if isinstance(cause, TransportError):
        return FetchFailed("http_error", f"{what}: connection failed: {msg}", transient=True)
    m = _HTTP_STATUS_RE.search(msg)
    if m:
        status = int(m.group(1))
        return FetchFailed("http_error", f"HTTP {status} for {what}: {msg}",
                           transient=status >= 500 or status == 429)
    if isinstance(cause, UnsupportedError):
        return FetchFailed("extract_error", f"no video found at {what}: {msg}")
    return FetchFailed("extract_error", f"{what}: {msg}")


def within(seconds: float, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, given at most ``seconds`` in all (a ``timeout`` otherwise).

    yt-dlp's extraction has only a per-read socket timeout: a server that trickles a page a few
    bytes a second would hold it without end. The call runs in a daemon thread; past the deadline
    the item fails and the thread is left to end on its own (its socket times out or closes)."""
    import threading

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, name="ytdlp-extract", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise FetchFailed("timeout", f"{what}: extraction took longer than the per-item timeout "
                          f"of {seconds:g} s", transient=True)
    if "error" in box:
        raise box["error"]
    return box["value"]


class YtDlp:
    """yt-dlp with the stage's limits. Creates one ``YoutubeDL`` per call (options differ per call).

    ``max_items`` caps the entries of a playlist/search (``playlistend``), ``max_bytes`` the file size
    (``max_filesize`` plus a check in the progress hook for streams without a Content-Length).
    """

    def __init__(self, *, fmt: str, user_agent: str, timeout_s: float, retries: int,
                 backoff_s: float, min_interval_s: float, max_items: int, max_bytes: int,
                 cache_dir: Path, limiter: HostRateLimiter):
        self.fmt = fmt
        self.user_agent = user_agent
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.min_interval_s = float(min_interval_s)
        self.max_items = int(max_items)
        self.max_bytes = int(max_bytes)
        self.cache_dir = cache_dir
        self.limiter = limiter

    def _options(self, logger: _Logger, **extra: Any) -> dict[str, Any]:
        backoff = self.backoff_s

        def sleep(n: int) -> float:  # yt-dlp passes the retry number, starting at 0
            return backoff * (2 ** n)

        opts: dict[str, Any] = {
            "logger": logger,
            "quiet": True,
            "noprogress": True,
            "color": "no_color",
            "format": self.fmt,
            "noplaylist": True,  # a watch URL that also names a playlist means the video
            "playlistend": self.max_items,
            "socket_timeout": self.timeout_s,
            "retries": self.retries,
            "fragment_retries": self.retries,
            "extractor_retries": self.retries,
            "retry_sleep_functions": {"http": sleep, "fragment": sleep, "extractor": sleep},
            "http_headers": {"User-Agent": self.user_agent},
            "cachedir": str(self.cache_dir),
            "overwrites": True,
            "continuedl": False,
            "updatetime": False,
            "ignoreerrors": False,
        }
        if self.min_interval_s > 0:
            opts["sleep_interval_requests"] = self.min_interval_s
        opts.update(extra)
        return opts

    # --- 1. list ------------------------------------------------------------------------------
    def list(self, ref: str) -> Listing:
        """Flat-extract ``ref`` (a URL or ``ytsearchN:query``)."""
        import yt_dlp
        from yt_dlp.utils import YoutubeDLError

        self.limiter.wait(ref)
        logger = _Logger()
        with yt_dlp.YoutubeDL(self._options(logger, extract_flat="in_playlist")) as ydl:
            try:
                info = within(self.timeout_s, ref, ydl.extract_info, ref, download=False)
            except YoutubeDLError as exc:
                raise failure(exc, ref) from None
            if info is None:
                raise FetchFailed("extract_error", f"yt-dlp found nothing at {ref}")
            if info.get("_type") in ("playlist", "multi_video"):
                entries = [ydl.sanitize_info(e) for e in (info.get("entries") or []) if e]
                head = ydl.sanitize_info({k: v for k, v in info.items() if k != "entries"},
                                         remove_private_keys=True)
                return Listing(True, head, entries)
            return Listing(False, info, [])

    # --- 2. resolve ---------------------------------------------------------------------------
    def resolve(self, entry: dict[str, Any], what: str) -> dict[str, Any]:
        """Full metadata of one entry (a flat ``url`` entry, or an already resolved video dict)."""
        import yt_dlp
        from yt_dlp.utils import YoutubeDLError

        self.limiter.wait(entry.get("url") or entry.get("webpage_url") or what)
        logger = _Logger()
        with yt_dlp.YoutubeDL(self._options(logger)) as ydl:
            try:
                info = within(self.timeout_s, what, ydl.process_ie_result, dict(entry),
                              download=False)
            except YoutubeDLError as exc:
                raise failure(exc, what) from None
        if info is None:
            raise FetchFailed("extract_error", f"yt-dlp found nothing at {what}")
        if info.get("_type") in ("playlist", "multi_video"):
            raise FetchFailed("extract_error", f"{what} is itself a playlist; list its URL in the "
                              "recipe to take its videos")
        return info

    # --- 3. download --------------------------------------------------------------------------
    def download(self, info: dict[str, Any], dest_dir: Path, what: str) -> Path:
        """Download the selected format of ``info`` to ``dest_dir/media.<ext>``; return its path."""
        import yt_dlp
        from yt_dlp.utils import YoutubeDLError

        from dsbuilder.progress import media_bar

        deadline = Deadline.after(self.timeout_s)
        max_bytes = self.max_bytes
        bar = None  # the bytes bar, once the download starts

        def hook(d: dict[str, Any]) -> None:
            # Raised exceptions leave yt-dlp and abort the download; the caller cleans dest_dir.
            if d.get("status") != "downloading":
                return
            deadline.check(what, self.timeout_s)
            total = d.get("total_bytes") or d.get("total_bytes_estimate") or 0
            if bar is not None:
                bar.transfer(float(d.get("downloaded_bytes") or 0), float(total) or None)
            if max(total, d.get("downloaded_bytes") or 0) > max_bytes:
                raise FetchFailed("too_large", f"{what}: over the limit of {max_bytes} bytes")

        self.limiter.wait(info.get("url") or info.get("webpage_url") or what)
        logger = _Logger()
        opts = self._options(logger, outtmpl={"default": str(dest_dir / "media.%(ext)s")},
                             progress_hooks=[hook], max_filesize=max_bytes)
        with yt_dlp.YoutubeDL(opts) as ydl, \
                media_bar("download", 0, unit="B", leave=False) as bar:
            try:
                result = ydl.process_ie_result(dict(info), download=True)
            except YoutubeDLError as exc:
                raise failure(exc, what) from None
        paths = [Path(d["filepath"]) for d in (result or {}).get("requested_downloads") or []
                 if d.get("filepath")]
        paths = [p for p in paths if p.is_file()] or sorted(
            p for p in dest_dir.glob("media.*") if p.suffix not in (".part", ".ytdl", ".json"))
        if paths:
            return paths[0]
        if any("max-filesize" in m for m in logger.messages):
            raise FetchFailed("too_large", f"{what}: over the limit of {max_bytes} bytes")
        raise FetchFailed("extract_error", f"{what}: yt-dlp finished without a file "
                          f"({'; '.join(logger.messages[-2:])})")

    @staticmethod
    def sanitize(info: dict[str, Any]) -> dict[str, Any]:
        """``info`` as yt-dlp's ``--dump-json`` writes it (JSON-safe, private keys removed)."""
        import yt_dlp

        return yt_dlp.YoutubeDL.sanitize_info(info, remove_private_keys=True)


def archive_id(info: dict[str, Any]) -> str | None:
    """The line yt-dlp's download archive uses for this video (``"youtube dQw4w9WgXcQ"``)."""
    if not info.get("extractor_key") or not info.get("id"):
        return None
    from yt_dlp.utils import make_archive_id

    return make_archive_id(info["extractor_key"], info["id"])


def record_in_archive(archive: Path, line: str) -> None:
    """Append ``line`` to the download archive unless it is already there (fsynced; thread-safe)."""
    with _archive_lock:
        archive.parent.mkdir(parents=True, exist_ok=True)
        try:
            existing = set(archive.read_text(encoding="utf-8").splitlines())
        except FileNotFoundError:
            existing = set()
        if line in existing:
            return
        with open(archive, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
