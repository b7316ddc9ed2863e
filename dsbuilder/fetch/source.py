"""Fetching the sources of a recipe entry, without the stage's cache: list an entry (a local file or
folder, a photo URL or page, a video URL, playlist or search) into :class:`Entry` s, and fetch one
entry (download, hash, check the content, move it into the workspace's ``raw/``) into an item
record: the ``sources`` row values, or a rejection.

:class:`SourceFetcher` holds what that needs: the HTTP client and yt-dlp (created on first use), the
per-host rate limit, the licence allow-list and the index of content fetched before (a parameter
change re-decides without downloading again). The scrape stage (:mod:`dsbuilder.stages.scrape`) keys
its cache records on recipe entries and listed entries, and assembles the ``sources`` table.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dsbuilder.errors import Rejected as ItemRejected
from dsbuilder.errors import StageError
from dsbuilder.fetch.common import (FetchFailed, HostRateLimiter, copy_hashing, file_matches,
                                    place_file, remove_tree, safe_ext, tool_versions, with_retries)
from dsbuilder.fetch.licence import normalise_licence
from dsbuilder.items import now_utc
from dsbuilder.recipe import SourceSpec
from dsbuilder.workspace import Workspace, atomic_write_json, item_key, sha256_file

log = logging.getLogger(__name__)

#: Cache folder of the scrape stage (the fetched-content index, yt-dlp's archive and cache).
STAGE = "scrape"

#: Columns of a ``sources`` row that come from fetching (the rest: status, person_ids, request_ids,
#: request, are decided when the table is assembled).
SOURCE_FIELDS = ("source_id", "kind", "url", "webpage_url", "extractor", "media_id", "title",
                 "uploader", "channel", "licence", "licence_raw", "upload_date", "fetched_at",
                 "sha256", "bytes", "duration", "width", "height", "fps", "n_frames", "video_codec",
                 "has_audio", "local_path", "info_json_path", "tool_versions")

#: Files a local folder contributes, by extension.
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                        ".flv", ".wmv", ".3gp", ".ogv"})

#: Pillow format name -> our file extension.
_PIL_EXT = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
            "TIFF": "tif"}
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_META_CHARSET_RE = re.compile(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_-]+)", re.I)


def source_id_for(sha256: str) -> str:
    """The id of a piece of content: ``"src-"`` + the first 16 hex digits of its sha256."""
    return "src-" + sha256[:16]


def _sha16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _upload_date(value: Any) -> str | None:
    """yt-dlp's ``YYYYMMDD`` as ``YYYY-MM-DD``."""
    s = str(value or "")
    if re.fullmatch(r"\d{8}", s):
        return f"{s[:4]}-{s[4:6]}-{s[6:]}"
    return s if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s) else None


def _new_source(**values: Any) -> dict[str, Any]:
    src = dict.fromkeys(SOURCE_FIELDS)
    src.update(values)
    return src


def _metadata_only(meta: dict[str, Any], licence: str, licence_raw: str | None) -> dict[str, Any]:
    """A source known by its metadata only (rejected before download): its id hashes its URL."""
    return dict(meta, source_id="src-" + _sha16(meta["url"]), licence=licence,
                licence_raw=licence_raw, sha256=None, bytes=None, fetched_at=None,
                local_path=None, info_json_path=None)


def folder_files(folder: Path, exts: frozenset
                  ) -> tuple[list[Path], list[tuple[Path, str, str]]]:
    """The media files of a listed folder, and what is skipped there with why (a rejection row
    each): hidden files, files of other kinds, folders named like media, dangling symlinks, and
    symlinks that lead out of the folder (a recipe folder must not expose the rest of the disk)."""
    root = folder.resolve()
    files, skipped = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            skipped.append((p, "unsupported_media", "hidden file in a listed folder: skipped"))
            continue
        if p.is_symlink():
            target = p.resolve()
            if not target.exists():
                skipped.append((p, "not_found", f"dangling symlink to {target}"))
                continue
            if not target.is_relative_to(root):
                skipped.append((p, "outside_folder", "symlink leading out of the listed folder "
                                f"(to {target}): not read"))
                continue
        if p.is_dir():
            if p.suffix.lower() in exts:
                skipped.append((p, "unsupported_media", "a folder named like a media file"))
            continue  # sub-folders are not listed
        if p.suffix.lower() not in exts:
            skipped.append((p, "unsupported_media", "not a media file of this kind (extension "
                            f"{p.suffix or 'none'})"))
            continue
        files.append(p)
    return files, skipped

@dataclass
class Entry:
    """One thing to fetch, found by listing a recipe entry.

    ``ref`` is a URL or an absolute local path; ``context`` holds row values the listing knows
    (``webpage_url``, ``title``, ``licence_raw`` of an HTML page); ``flat`` is yt-dlp's flat entry.
    """

    ref: str
    local: bool = False
    stat: tuple[int, int] | None = None  # local files: (size, mtime_ns), part of the identity
    context: dict[str, Any] = field(default_factory=dict)
    flat: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "local": self.local,
                "stat": list(self.stat) if self.stat else None, "context": self.context,
                "flat": self.flat}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Entry":
        return cls(d["ref"], d.get("local", False), tuple(d["stat"]) if d.get("stat") else None,
                   d.get("context") or {}, d.get("flat"))


def _image_info(path: Path, src: dict[str, Any], what: str, max_megapixels: float
                ) -> tuple[str, int, int]:
    """Decode an image fully; return (Pillow format, width, height) as displayed (EXIF rotation).
    An image whose header declares more than ``max_megapixels`` is refused (``too_large``) before
    its pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            fmt = im.format or ""
            width, height = im.size
            if width * height > max_megapixels * 1e6:
                raise ItemRejected("too_large", f"{what}: {width}x{height} px "
                                   f"({width * height / 1e6:.0f} MP) is over max_megapixels="
                                   f"{max_megapixels:g}; not decoded", source=src)
            orientation = im.getexif().get(0x0112)
            im.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as exc:
        why = str(exc).replace(repr(str(path)), "").replace(str(path), "").strip(" :") \
            or type(exc).__name__
        raise ItemRejected("unsupported_media", f"{what}: not a readable image ({why})",
                           source=src) from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return fmt, width, height


def item_errors() -> tuple[type[BaseException], ...]:
    """What one item may raise without stopping the run (anything else is a bug and propagates)."""
    import requests
    from yt_dlp.utils import YoutubeDLError

    from dsbuilder.media import MediaError

    return (requests.RequestException, YoutubeDLError, MediaError, OSError)


def as_rejection(exc: BaseException, what: str) -> ItemRejected:
    """An unexpected but per-item error as a rejection (or a stage error, for a full disk)."""
    import requests
    from yt_dlp.utils import YoutubeDLError

    from dsbuilder.media import MediaError

    if isinstance(exc, MediaError):
        return ItemRejected(exc.reason, f"{what}: {exc.detail}")
    if isinstance(exc, requests.RequestException):
        return FetchFailed("http_error", f"{what}: {exc}", transient=True)
    if isinstance(exc, YoutubeDLError):
        from dsbuilder.fetch.ytdlp import failure

        return failure(exc, what)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise StageError(f"disk full while fetching {what}: {exc}",
                         "free some space, then run again: finished items are kept") from exc
    if isinstance(exc, FileNotFoundError):
        return ItemRejected("not_found", f"{what}: {exc.strerror or exc}")
    return ItemRejected("io_error", f"{what}: {exc}", transient=True)




@dataclass
class Listing:
    """What listing a recipe entry found: its entries, whether it expanded (a folder, a page, a
    playlist: entries get ids of their own) and, for a playlist, what yt-dlp said of it."""

    entries: list[Entry]
    expanded: bool
    playlist: dict[str, Any] | None = None
    at: str = field(default_factory=now_utc)

    def to_json(self) -> dict[str, Any]:
        """The cache record (``status`` "listed"; a failed listing is a :func:`rejected` record)."""
        d = {"status": "listed", "expanded": self.expanded,
             "entries": [e.to_json() for e in self.entries], "at": self.at}
        if self.playlist is not None:
            d["playlist"] = self.playlist
        return d


def rejected(exc: ItemRejected) -> dict[str, Any]:
    """An item or listing record for a rejection."""
    return {"status": "rejected", "reason": exc.reason, "detail": exc.detail,
            "transient": bool(exc.transient), "at": now_utc(),
            "source": exc.extra.get("source")}


class SourceFetcher:
    """Lists recipe entries and fetches listed entries for one run (see the module docstring)."""

    def __init__(self, ws: Workspace, params: Mapping[str, Any], limits: Mapping[str, Any],
                 licences: Mapping[str, Any], *, trusted_hosts: set[str], force: bool = False,
                 code_version: str = "1"):
        self.ws = ws
        self.p = params
        self.force = force
        self.limits = limits
        self.max_bytes = int(float(limits["max_filesize_mb"]) * 1024 * 1024)
        self.default_licence = licences["default"]
        allow = licences["allow"]
        self.allow = None if allow is None else {normalise_licence(a, a) for a in allow}
        self.trusted_hosts = trusted_hosts
        self.code_version = code_version
        self.limiter = HostRateLimiter(self.p["min_interval_s"])
        self.tool_versions = tool_versions()
        self.archive = ws.cache / STAGE / "ytdlp-archive.txt"
        self._archive_lines: set[str] | None = None
        self._http = None
        self._ytdlp = None
        self.prefetched: dict[tuple[str, str], Any] = {}  # (kind, ref) -> Download or yt-dlp info
        self._verified: set[tuple[str, str]] = set()  # raw files whose sha256 was checked

    # --- fetchers, created on first use -----------------------------------------------------
    @property
    def http(self):
        if self._http is None:
            from dsbuilder.fetch.http import HttpClient

            self._http = HttpClient(
                user_agent=self.p["user_agent"], timeout_s=self.p["timeout_s"],
                retries=self.p["retries"], backoff_s=self.p["backoff_s"], max_bytes=self.max_bytes,
                limiter=self.limiter, respect_robots=self.p["respect_robots"],
                # the recipe's own hosts may be local (a curator's intranet, the tests' loopback
                # server); a redirect or a page must not lead anywhere else that is
                trusted_hosts=self.trusted_hosts)
        return self._http

    @property
    def ytdlp(self):
        if self._ytdlp is None:
            from dsbuilder.fetch.ytdlp import YtDlp

            self._ytdlp = YtDlp(
                fmt=self.p["video_format"], user_agent=self.p["user_agent"],
                timeout_s=self.p["timeout_s"], retries=self.p["retries"],
                backoff_s=self.p["backoff_s"], min_interval_s=self.p["min_interval_s"],
                max_items=self.limits["max_items_per_query"], max_bytes=self.max_bytes,
                cache_dir=self.ws.cache / STAGE / "ytdlp-cache", limiter=self.limiter)
        return self._ytdlp

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def retrying(self, attempt, what: str):
        return with_retries(attempt, retries=self.p["retries"], backoff_s=self.p["backoff_s"],
                            what=what)

    # --- listing ----------------------------------------------------------------------------
    def list_local(self, spec: SourceSpec) -> "Listing":
        """A local file, or the media files of a local folder (and what is skipped there)."""
        if spec.licence:
            self._licence(spec.licence, spec.ref)
        path = Path(spec.ref)
        exts = IMAGE_EXTS if spec.kind == "photo" else VIDEO_EXTS
        try:
            skipped: list[tuple[Path, str, str]] = []
            if path.is_dir():
                files, skipped = folder_files(path, exts)
                expanded = True
            elif path.is_file():
                files, expanded = [path], False
            else:
                raise FileNotFoundError(errno.ENOENT, "no such file or folder", str(path))
            entries = []
            for f in files:
                st = f.stat()
                entries.append(Entry(str(f), local=True, stat=(st.st_size, st.st_mtime_ns),
                                      context={"title": f.name}))
            for f, reason, detail in skipped:  # a rejection row each (ItemRejected in item())
                entries.append(Entry(str(f), local=True,
                                      context={"title": f.name, "skip": [reason, detail]}))
        except OSError as exc:
            raise ItemRejected("not_found", f"{path}: {exc.strerror or exc}") from None
        return Listing(entries, expanded)

    def list_photo_url(self, spec: SourceSpec, tmpdir: Path) -> "Listing":
        """A photo URL: the photo itself, or the images of an HTML page."""
        from dsbuilder.fetch.webpage import extract_images

        if spec.licence:  # every entry would carry it: decide before any request
            self._licence(spec.licence, spec.ref)
        single = Listing([Entry(spec.ref)], expanded=False)
        if self._reuse_fetched("photo", spec.ref):
            return single  # this URL gave an image before, and we still have it: no request
        dl = self.http.download(spec.ref, tmpdir)
        if dl.content_type not in _HTML_TYPES:
            # The URL is the photo itself: keep the body for the item, no second request.
            self.prefetched[("photo", spec.ref)] = dl
            return single
        body = dl.path.read_bytes()
        m = _META_CHARSET_RE.search(body[:4096])
        charset = dl.charset or (m.group(1).decode() if m else "utf-8")
        try:
            text = body.decode(charset, errors="replace")
        except LookupError:
            text = body.decode("utf-8", errors="replace")
        page = extract_images(text, dl.final_url)
        images = page.images
        cap = self.limits["max_items_per_query"]
        if len(images) > cap:
            log.info("%s: %d images, taking the first %d (limits.max_items_per_query)",
                     spec.ref, len(images), cap)
            images = images[:cap]
        entries = [Entry(im.url, context={"webpage_url": spec.ref, "title": im.alt or None,
                                           "licence_raw": page.licence_url})
                   for im in images]
        return Listing(entries, expanded=True)

    def list_videos(self, spec: SourceSpec) -> "Listing":
        """A video URL, playlist, channel or search, flat-extracted by yt-dlp."""
        from dsbuilder.fetch.ytdlp import unsmuggle

        if spec.licence:  # every entry would carry it: decide before any request
            self._licence(spec.licence, spec.ref)
        listing = self.retrying(lambda: self.ytdlp.list(spec.ref), spec.ref)
        if not listing.is_playlist:
            info = listing.info
            ref = unsmuggle(info.get("webpage_url")) or spec.ref
            self.prefetched[("video", ref)] = info
            flat = {"_type": "url", "url": info.get("webpage_url") or spec.ref,
                    "ie_key": info.get("extractor_key")}
            return Listing([Entry(ref, flat=flat)], expanded=False)
        page = unsmuggle(listing.info.get("webpage_url")) or spec.ref
        entries = []
        for i, e in enumerate(listing.entries, 1):
            if e.get("_type") in ("url", "url_transparent"):
                ref = unsmuggle(e.get("url"))
            else:  # already resolved (e.g. <video> tags of a page): name it by page and id
                ref = unsmuggle(e.get("webpage_url"))
                if not ref or ref in (page, spec.ref):
                    ref = f"{page}#{e.get('id') or i}"
            if not ref:
                continue
            entries.append(Entry(ref, context={"title": e.get("title")}, flat=e))
        return Listing(entries, expanded=True,
                       playlist={k: listing.info.get(k) for k in ("id", "title", "extractor",
                                                                  "webpage_url")})

    # --- fetching ---------------------------------------------------------------------------
    def record_archive(self, line: str) -> None:
        from dsbuilder.fetch.ytdlp import record_in_archive

        if self._archive_lines is None:
            try:
                self._archive_lines = set(self.archive.read_text(encoding="utf-8").splitlines())
            except FileNotFoundError:
                self._archive_lines = set()
        if line not in self._archive_lines:
            record_in_archive(self.archive, line)
            self._archive_lines.add(line)

    def _licence(self, raw: str | None, what: str,
                 meta: dict[str, Any] | None = None) -> tuple[str, str | None]:
        """The licence code for ``raw`` (or the default); rejects codes outside the allow-list.

        ``meta``: what is known of the item so far, kept as a rejected ``sources`` row.
        """
        raw = raw if raw and str(raw).strip() else None
        code = normalise_licence(raw, self.default_licence)
        if self.allow is not None and code not in self.allow:
            shown = f" (stated as {raw!r})" if raw and raw != code else ""
            raise ItemRejected("licence_not_allowed",
                               f"{what}: licence {code!r}{shown} is not in licences.allow "
                               f"{sorted(self.allow)}",
                               **({"source": _metadata_only(meta, code, raw)} if meta else {}))
        return code, raw

    # --- fetched-content index --------------------------------------------------------------
    def _fetched_key(self, kind: str, ref: str) -> str:
        fmt = self.p["video_format"] if kind == "video" else ""
        return item_key(f"fetched\0{kind}\0{ref}\0{fmt}", "fetched", self.code_version)

    def _reuse_fetched(self, kind: str, ref: str) -> dict[str, Any] | None:
        """A previous download of ``ref`` whose raw file is still intact, or None."""
        if self.force:
            return None
        rec = self.ws.get_record(STAGE, self._fetched_key(kind, ref))
        if rec is None:
            return None
        checked = (rec["local_path"], rec["sha256"])
        if checked not in self._verified:
            if not file_matches(self.ws.abspath(rec["local_path"]), rec["sha256"], rec["bytes"]):
                return None
            self._verified.add(checked)
        log.debug("%s: reusing %s", ref, rec["local_path"])
        return rec

    def _remember_fetched(self, kind: str, ref: str, src: dict[str, Any],
                          extra: dict[str, Any] | None = None) -> None:
        rec = {k: src[k] for k in ("sha256", "bytes", "local_path", "fetched_at", "tool_versions",
                                   "info_json_path")}
        rec.update(extra or {})
        self.ws.put_record(STAGE, self._fetched_key(kind, ref), rec)

    # --- photos -----------------------------------------------------------------------------
    def photo(self, spec: SourceSpec, entry: Entry, claim: str | None,
               tmpdir: Path) -> dict[str, Any]:
        extractor = "local" if entry.local else "http"
        url = Path(entry.ref).as_uri() if entry.local else entry.ref
        meta = _new_source(kind="photo", url=url, extractor=extractor,
                           webpage_url=entry.context.get("webpage_url"),
                           title=entry.context.get("title"), tool_versions=self.tool_versions)
        licence, licence_raw = self._licence(claim, entry.ref, meta)  # decided before fetching
        reused = None if entry.local else self._reuse_fetched("photo", entry.ref)
        if reused:
            path = self.ws.abspath(reused["local_path"])
            sha, size = reused["sha256"], reused["bytes"]
            fetched_at, versions = reused["fetched_at"], reused["tool_versions"]
        elif entry.local:
            path = Path(tempfile.mkdtemp(prefix="p", dir=tmpdir)) / "local.part"
            sha, size = copy_hashing(entry.ref, path)
            fetched_at, versions = now_utc(), self.tool_versions
        else:
            dl = self.prefetched.pop(("photo", entry.ref), None) \
                or self.http.download(entry.ref, tmpdir)
            if dl.content_type in _HTML_TYPES:
                raise ItemRejected("unsupported_media",
                                   f"{entry.ref} is an HTML page, not an image")
            path, sha, size = dl.path, dl.sha256, dl.size
            fetched_at, versions = now_utc(), self.tool_versions
        src = dict(meta, source_id=source_id_for(sha), sha256=sha, bytes=size, licence=licence,
                   licence_raw=licence_raw, fetched_at=fetched_at, tool_versions=versions)
        fmt, width, height = _image_info(path, src, entry.ref, float(self.p["max_megapixels"]))
        src.update(width=width, height=height)
        if min(width, height) < self.p["min_photo_px"]:
            raise ItemRejected("too_small", f"{entry.ref}: {width}x{height} px, shorter side under "
                               f"min_photo_px={self.p['min_photo_px']}", source=src)
        if not reused:
            ext = _PIL_EXT.get(fmt) or safe_ext(fmt)
            target = self.ws.raw / "photos" / f"{src['source_id']}.{ext}"
            place_file(path, target, sha)
            src["local_path"] = self.ws.relpath(target)
            if not entry.local:
                self._remember_fetched("photo", entry.ref, src)
        else:
            src["local_path"] = reused["local_path"]
        return {"status": "ok", "at": now_utc(), "source": src}

    # --- videos -----------------------------------------------------------------------------
    def _check_direct_video(self, info: dict[str, Any], ref: str) -> None:
        """A video found by yt-dlp's generic extractor (a media URL, or a page's <video>) is a plain
        HTTP fetch: robots.txt and the address policy apply as for photos. Known sites' extractors
        are left to yt-dlp (their pages are not crawled, their APIs are what the site offers)."""
        if (info.get("extractor_key") or info.get("extractor") or "").lower() != "generic":
            return
        for u in dict.fromkeys((ref, info.get("url"))):
            if u and u.startswith(("http://", "https://")):
                self.http.check_address(u)
                if self.p["respect_robots"]:
                    self.http.check_robots(u)

    def video(self, spec: SourceSpec, entry: Entry, tmpdir: Path) -> dict[str, Any]:
        if entry.local:
            return self._local_video(spec, entry, tmpdir)
        from dsbuilder.fetch.ytdlp import archive_id, unsmuggle

        flat = entry.flat or {"_type": "url", "url": entry.ref}
        # The row's url: what was asked for (a watch URL), or for entries a page resolved itself
        # (its <video> tags), the media URL.
        url = flat.get("url") if flat.get("_type") in ("url", "url_transparent") else None

        def metadata(d: dict[str, Any]) -> dict[str, Any]:
            """Row values from yt-dlp's info (or flat entry)."""
            return _new_source(
                kind="video", url=unsmuggle(url or d.get("url")) or entry.ref,
                webpage_url=unsmuggle(d.get("webpage_url")),
                extractor=d.get("extractor") or (d.get("ie_key") or "").lower() or None,
                media_id=d.get("id"), title=d.get("title"), uploader=d.get("uploader"),
                channel=d.get("channel"), upload_date=_upload_date(d.get("upload_date")),
                duration=d.get("duration"), tool_versions=self.tool_versions)

        # Cheap checks on what the listing already knows: no request at all.
        self._check_video_metadata(flat, spec, entry.ref, metadata(flat), partial=True)

        reused = self._reuse_fetched("video", entry.ref)
        if reused and reused.get("info") is not None:
            info = reused["info"]
            licence, licence_raw = self._check_video_metadata(info, spec, entry.ref,
                                                              metadata(info))
            path = self.ws.abspath(reused["local_path"])
            sha, size = reused["sha256"], reused["bytes"]
            fetched_at, versions = reused["fetched_at"], reused["tool_versions"]
        else:
            reused = None
            info = self.prefetched.pop(("video", entry.ref), None) or self.retrying(
                lambda: self.ytdlp.resolve(flat, entry.ref), entry.ref)
            self._check_direct_video(info, entry.ref)
            licence, licence_raw = self._check_video_metadata(info, spec, entry.ref,
                                                              metadata(info))

            def attempt() -> Path:
                d = Path(tempfile.mkdtemp(prefix="v", dir=tmpdir))
                try:
                    return self.ytdlp.download(info, d, entry.ref)
                except BaseException:
                    remove_tree(d)
                    raise

            path = self.retrying(attempt, entry.ref)
            sha, size = sha256_file(path), path.stat().st_size
            fetched_at, versions = now_utc(), self.tool_versions
        src = dict(metadata(info), source_id=source_id_for(sha), sha256=sha, bytes=size,
                   licence=licence, licence_raw=licence_raw, fetched_at=fetched_at,
                   tool_versions=versions)
        self._check_video_content(path, src, entry.ref)
        if reused:
            src.update(local_path=reused["local_path"], info_json_path=reused["info_json_path"])
        else:
            sid = src["source_id"]
            target = self.ws.raw / "videos" / f"{sid}.{safe_ext(path.suffix, 'mp4')}"
            place_file(path, target, sha)
            info_json = self.ws.raw / "videos" / f"{sid}.info.json"
            sanitized = self.ytdlp.sanitize(info)
            if not info_json.exists():  # the same content from another URL may have written it
                atomic_write_json(info_json, sanitized)
            src.update(local_path=self.ws.relpath(target),
                       info_json_path=self.ws.relpath(info_json))
            self._remember_fetched("video", entry.ref, src, {"info": sanitized})
        return {"status": "ok", "at": now_utc(), "source": src, "archive_id": archive_id(info),
                "fetched_key": self._fetched_key("video", entry.ref)}

    def _check_video_metadata(self, info: dict[str, Any], spec: SourceSpec, what: str,
                              meta: dict[str, Any],
                              partial: bool = False) -> tuple[str, str | None]:
        """Decide from yt-dlp's metadata, before downloading: licence, live, duration, size.

        ``partial``: ``info`` is a flat playlist entry, whose missing licence does not mean none.
        A rejection keeps ``meta`` as a rejected ``sources`` row.
        """
        raw = spec.licence or info.get("license")
        if partial and not raw:
            licence = normalise_licence(None, self.default_licence)
        else:
            licence, raw = self._licence(raw, what, meta)
        known = {"source": _metadata_only(meta, licence, raw)}
        if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
            raise ItemRejected("unsupported_media", f"{what} is a live stream", **known)
        max_s = float(self.limits["max_duration_s"])
        duration = info.get("duration")
        if isinstance(duration, (int, float)) and duration > max_s:
            raise ItemRejected("too_long", f"{what}: {duration:g} s is over max_duration_s="
                               f"{max_s:g}", **known)
        size = info.get("filesize") or info.get("filesize_approx")
        if isinstance(size, (int, float)) and size > self.max_bytes:
            raise ItemRejected("too_large", f"{what}: about {int(size)} bytes is over the limit "
                               f"of {self.max_bytes} bytes", **known)
        return licence, raw

    def _check_video_content(self, path: Path, src: dict[str, Any], what: str) -> None:
        """Probe the file and fill ``src``; reject audio-only, too long, or silent (if required)."""
        from dsbuilder.media import MediaError, probe

        try:
            mi = probe(path)
        except MediaError as exc:
            raise ItemRejected(exc.reason, f"{what}: {exc.detail}", source=src) from None
        src.update(duration=mi.duration if mi.duration is not None else src["duration"],
                   width=mi.width, height=mi.height, fps=mi.fps, n_frames=mi.n_frames,
                   video_codec=mi.video_codec, has_audio=mi.has_audio)
        if not mi.has_video:
            raise ItemRejected("unsupported_media", f"{what}: no video stream", source=src)
        mp = float(self.p["max_megapixels"])
        if (mi.width or 0) * (mi.height or 0) > mp * 1e6:
            raise ItemRejected("too_large", f"{what}: {mi.width}x{mi.height} frames are over "
                               f"max_megapixels={mp:g}", source=src)
        max_s = float(self.limits["max_duration_s"])
        if src["duration"] is not None and src["duration"] > max_s:
            raise ItemRejected("too_long", f"{what}: {src['duration']:.2f} s is over "
                               f"max_duration_s={max_s:g}", source=src)
        if self.p["require_audio"] and not mi.has_audio:
            raise ItemRejected("no_audio", f"{what}: no audio stream (require_audio is on)",
                               source=src)

    def _local_video(self, spec: SourceSpec, entry: Entry, tmpdir: Path) -> dict[str, Any]:
        meta = _new_source(kind="video", url=Path(entry.ref).as_uri(), extractor="local",
                           title=Path(entry.ref).name, tool_versions=self.tool_versions)
        licence, licence_raw = self._licence(spec.licence, entry.ref, meta)
        tmp = Path(tempfile.mkdtemp(prefix="v", dir=tmpdir)) / "local.part"
        sha, size = copy_hashing(entry.ref, tmp)
        src = dict(meta, source_id=source_id_for(sha), sha256=sha, bytes=size, licence=licence,
                   licence_raw=licence_raw, fetched_at=now_utc())
        self._check_video_content(tmp, src, entry.ref)
        ext = safe_ext(Path(entry.ref).suffix, "mp4")
        target = self.ws.raw / "videos" / f"{src['source_id']}.{ext}"
        place_file(tmp, target, sha)
        src["local_path"] = self.ws.relpath(target)
        return {"status": "ok", "at": now_utc(), "source": src}

