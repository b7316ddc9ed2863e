"""The scrape stage: fetch every photo and video a recipe asks for, with provenance.

For each recipe entry (a :class:`~dsbuilder.recipe.SourceSpec`), in recipe order:

1. **List** it. A local file is one entry; a local folder is all its images (or videos), sorted by
   name. A photo URL is fetched once: an HTML page gives the images on it (``<img src>`` / largest
   ``srcset`` candidate), anything else is the photo itself. A video URL or ``ytsearchN:`` query is
   flat-extracted by yt-dlp: a playlist, channel, feed or search gives up to
   ``limits.max_items_per_query`` entries, anything else is one video.
2. **Fetch** each entry (its own cache record, so a crash mid-playlist resumes at the next entry):
   check the licence before downloading, download into ``<ws>/raw/.dl-<random>/``, hash, check the
   content (decodable image of at least ``min_photo_px``; video with a video stream, not longer than
   ``max_duration_s``, with audio if ``require_audio``), and move it with ``os.replace`` to
   ``raw/photos/<source_id>.<ext>`` or ``raw/videos/<source_id>.<ext>`` (yt-dlp's info.json beside a
   video as ``<source_id>.info.json``). File names come from content hashes, never from titles.
3. **Assemble** the ``sources`` table in recipe order: content seen twice (same sha256) is kept
   once, by its first requester; later requesters get a ``duplicate`` rejection naming the kept
   source and are merged into the kept row's ``person_ids``/``request_ids``.

``source_id`` is ``"src-"`` plus the first 16 hex digits of the content's sha256. Sources that were
dropped but are known keep a row with ``status = "rejected"`` and no ``local_path``, for auditors:
content that failed a check (too small, no audio...), and videos or photos rejected from their
metadata before any download (licence, duration); the latter have no content, so their id hashes
their URL instead. Every dropped item, known or not, has a ``rejections`` row.

Cache records (``cache/scrape/``), keyed by :func:`dsbuilder.workspace.item_key` of an identity, the
stage parameters hash and the stage code version:

* ``list`` records: the entries of a remote recipe entry (or why listing failed);
* ``item`` records: one entry's outcome: the ``sources`` row values (``fetched_at`` included) and/or
  a rejection (reason, detail, time, whether it was *transient*);
* ``fetched`` records, independent of the stage parameters: which content a URL gave and where it is
  in ``raw/``. With them a parameter change (say ``licences.allow``) re-decides without downloading
  again, as long as the raw file is still there with the right sha256.

A rerun with nothing changed reads records only: no network request, identical manifests (times come
from the records). ``retry_failed=True`` redoes the records of transient failures (timeouts, 5xx,
broken connections, truncated bodies); ``force=True`` redoes everything.

yt-dlp's download archive (``cache/scrape/ytdlp-archive.txt``) is written by us, after an item's
record is committed; see :mod:`dsbuilder.fetch.ytdlp` for why.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, Iterable

from dsbuilder.config import USER_AGENT, Param
from dsbuilder.errors import StageError
from dsbuilder.fetch.common import (FetchFailed, HostRateLimiter, copy_hashing, file_matches,
                                    place_file, remove_tree, safe_ext, tool_versions, with_retries)
from dsbuilder.fetch.licence import normalise_licence
from dsbuilder.recipe import Recipe, SourceSpec, params_hash
from dsbuilder.stages.base import ItemRejected, Rejection, StageResult, now_utc, publish
from dsbuilder.takedown import Takedowns, delete_files
from dsbuilder.stages.spec import CliOption, StageSpec
from dsbuilder.workspace import Workspace, atomic_write_json, item_key, sha256_file

__all__ = ["run", "normalise_licence", "source_id_for", "SOURCE_FIELDS"]

log = logging.getLogger(__name__)

STAGE = "scrape"

#: The stage's contract (see :mod:`dsbuilder.stages.spec`).
SPEC = StageSpec(
    name=STAGE,
    help="Fetch the recipe's photos and videos, with provenance.",
    reads=(),
    writes=('sources',),
    code_version='1',
    params={
    "video_format": Param(
        str, "best[height<=?720][acodec!=none]/best[height<=?720]",
        "yt-dlp format selector (single-file formats: no ffmpeg merge is needed)"),
    "require_audio": Param(bool, True, "reject videos without an audio stream"),
    "timeout_s": Param((int, float), 60.0, "per-item timeout: connect/read and total", min=0.1),
    "retries": Param(int, 3, "retries on timeouts and 5xx, with exponential backoff", min=0,
                     max=20),
    "backoff_s": Param((int, float), 1.0, "first backoff delay; doubles per retry", min=0.0),
    "min_interval_s": Param((int, float), 1.0, "minimum delay between requests to one host",
                            min=0.0),
    "respect_robots": Param(bool, True, "honour robots.txt for HTTP photo fetching"),
    "user_agent": Param(str, USER_AGENT, "User-Agent sent with every request"),
    "min_photo_px": Param(int, 32, "reject photos whose shorter side is smaller", min=1),
    "max_megapixels": Param((int, float), 40.0, "reject photos and videos with more pixels "
                            "per picture (read from the header, before decoding: a small file "
                            "can declare a huge image)", min=0.1, max=1000.0),
},
    reasons={
        'http_error': 'the server answered 4xx/5xx (after retries for 5xx and 429)',
        'timeout': 'no complete answer within timeout_s (connect, read and total), after retries',
        'truncated': 'the body ended before its declared length',
        'too_large': 'the file is larger than limits.max_filesize_mb, or a picture has more than max_megapixels',
        'too_long': 'the video is longer than limits.max_duration_s',
        'licence_not_allowed': "the source's licence is not in licences.allow",
        'robots_disallowed': 'robots.txt disallows the URL for our user agent',
        'unsupported_media': 'not a decodable image or video',
        'no_audio': 'a video without an audio stream while require_audio is on',
        'not_found': 'a local path or URL that does not exist (404, missing file)',
        'duplicate': 'the same bytes (sha256) were already stored for this recipe',
        'extract_error': 'yt-dlp could not list or extract the page, playlist or search',
        'too_small': 'a photo whose shorter side is under min_photo_px',
        'io_error': 'the file could not be read or written',
        'taken_down': 'the source was taken down (dsbuilder takedown) and is never fetched again',
        'connection_refused': 'the host refused the connection',
        'dns_error': 'the host name does not resolve',
        'outside_folder': "a listed folder's entry leaves the folder (symlink), is a dot-file or not a regular file",
        'blocked_address': 'a redirect or page-found URL leads to a loopback, link-local or private address the recipe does not name',
    },
    options=(CliOption(("--retry-failed",), "Retry items that failed transiently before (timeouts, 5xx, "
                      "truncated).", is_flag=True),),
)

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


def _folder_files(folder: Path, exts: frozenset
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
class _Entry:
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
    def from_json(cls, d: dict[str, Any]) -> "_Entry":
        return cls(d["ref"], d.get("local", False), tuple(d["stat"]) if d.get("stat") else None,
                   d.get("context") or {}, d.get("flat"))


@dataclass
class _Occurrence:
    """One (recipe entry, listed entry) pair and its item record, for assembling the tables."""

    spec: SourceSpec
    entry: _Entry
    item_id: str
    record: dict[str, Any]


class _Scrape:
    """One run of the stage: parameters, fetchers, and the records seen so far."""

    def __init__(self, recipe: Recipe, ws: Workspace, *, force: bool, retry_failed: bool):
        self.recipe = recipe
        self.ws = ws
        self.force = force
        self.retry_failed = retry_failed
        stage_params = recipe.stage_params(STAGE)
        self.params_hash = params_hash(stage_params)
        self.code_version = SPEC.code_version
        self.p = recipe.stages[STAGE]
        self.limits = recipe.limits
        self.max_bytes = int(float(self.limits["max_filesize_mb"]) * 1024 * 1024)
        self.default_licence = recipe.licences["default"]
        allow = recipe.licences["allow"]
        self.allow = None if allow is None else {normalise_licence(a, a) for a in allow}
        self.limiter = HostRateLimiter(self.p["min_interval_s"])
        self.tool_versions = tool_versions()
        self.archive = ws.cache / STAGE / "ytdlp-archive.txt"
        self._archive_lines: set[str] | None = None
        self._http = None
        self._ytdlp = None
        self.memo: dict[str, dict[str, Any]] = {}  # record key -> record, this run
        self.prefetched: dict[tuple[str, str], Any] = {}  # (kind, ref) -> Download or yt-dlp info
        self.computed = 0
        self.cached = 0
        self._verified: set[tuple[str, str]] = set()  # raw files whose sha256 was checked
        self.takedowns = Takedowns.load(ws)  # dsbuilder.takedown: never fetched, always rejected

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
                trusted_hosts={urlsplit(s.ref).hostname or "" for s in self.recipe.sources()
                               if s.ref.startswith(("http://", "https://"))})
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

    # --- records ----------------------------------------------------------------------------
    def key(self, identity: str) -> str:
        return item_key(identity, self.params_hash, self.code_version)

    def reusable(self, rec: dict[str, Any] | None) -> bool:
        """Whether a stored record stands for this run (see ``force`` and ``retry_failed``)."""
        if rec is None or self.force:
            return False
        if rec.get("transient") and self.retry_failed:
            return False
        local = (rec.get("source") or {}).get("local_path")
        if rec.get("status") == "ok" and local:
            size = rec["source"].get("bytes")
            p = self.ws.abspath(local)
            if not p.is_file() or (size is not None and p.stat().st_size != size):
                log.warning("%s is missing or changed; fetching it again", local)
                return False
        return True

    @staticmethod
    def rejected(exc: ItemRejected) -> dict[str, Any]:
        return {"status": "rejected", "reason": exc.reason, "detail": exc.detail,
                "transient": bool(exc.transient), "at": now_utc(),
                "source": exc.extra.get("source")}

    # --- 1. listing -------------------------------------------------------------------------
    def listing(self, spec: SourceSpec, tmpdir: Path) -> dict[str, Any]:
        """The entries of ``spec`` as a record: ``{"status": "listed", "expanded", "entries"}``
        or a rejection."""
        key = self.key(f"list\0{spec.kind}\0{spec.ref_type}\0{spec.ref}")
        if key in self.memo:
            return self.memo[key]
        stored = self.ws.get_record(STAGE, key)
        if spec.ref_type == "path":
            # Local listings are cheap and must see new files: always list again, but keep the
            # stored record (and its time) when nothing changed, so reruns stay byte-identical.
            rec = self._list_local(spec)
            if stored is not None and not self.force and _same(stored, rec):
                rec = stored
            else:
                self.ws.put_record(STAGE, key, rec)
        elif self.reusable(stored):
            rec = stored
            if rec["status"] == "rejected":
                self.cached += 1
        else:
            try:
                if spec.kind == "photo":
                    rec = self._list_photo_url(spec, tmpdir)
                else:
                    rec = self._list_videos(spec)
            except ItemRejected as exc:
                rec = self.rejected(exc)
            except _item_errors() as exc:
                rec = self.rejected(_as_rejection(exc, spec.ref))
            if rec["status"] == "rejected":
                self.computed += 1
                log.warning("%s %s: %s: %s", spec.kind, spec.ref, rec["reason"], rec["detail"])
            self.ws.put_record(STAGE, key, rec)
        self.memo[key] = rec
        return rec

    def _list_local(self, spec: SourceSpec) -> dict[str, Any]:
        if spec.licence:
            try:
                self._licence(spec.licence, spec.ref)
            except ItemRejected as exc:
                return self.rejected(exc)
        path = Path(spec.ref)
        exts = IMAGE_EXTS if spec.kind == "photo" else VIDEO_EXTS
        try:
            skipped: list[tuple[Path, str, str]] = []
            if path.is_dir():
                files, skipped = _folder_files(path, exts)
                expanded = True
            elif path.is_file():
                files, expanded = [path], False
            else:
                raise FileNotFoundError(errno.ENOENT, "no such file or folder", str(path))
            entries = []
            for f in files:
                st = f.stat()
                entries.append(_Entry(str(f), local=True, stat=(st.st_size, st.st_mtime_ns),
                                      context={"title": f.name}).to_json())
            for f, reason, detail in skipped:  # a rejection row each (ItemRejected in item())
                entries.append(_Entry(str(f), local=True,
                                      context={"title": f.name, "skip": [reason, detail]}).to_json())
        except OSError as exc:
            return self.rejected(ItemRejected("not_found", f"{path}: {exc.strerror or exc}"))
        return {"status": "listed", "expanded": expanded, "entries": entries, "at": now_utc()}

    def _list_photo_url(self, spec: SourceSpec, tmpdir: Path) -> dict[str, Any]:
        from dsbuilder.fetch.webpage import extract_images

        if spec.licence:  # every entry would carry it: decide before any request
            self._licence(spec.licence, spec.ref)
        single = {"status": "listed", "expanded": False, "at": now_utc(),
                  "entries": [_Entry(spec.ref).to_json()]}
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
        entries = [_Entry(im.url, context={"webpage_url": spec.ref, "title": im.alt or None,
                                           "licence_raw": page.licence_url}).to_json()
                   for im in images]
        return {"status": "listed", "expanded": True, "entries": entries, "at": now_utc()}

    def _list_videos(self, spec: SourceSpec) -> dict[str, Any]:
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
            return {"status": "listed", "expanded": False, "at": now_utc(),
                    "entries": [_Entry(ref, flat=flat).to_json()]}
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
            entries.append(_Entry(ref, context={"title": e.get("title")}, flat=e).to_json())
        return {"status": "listed", "expanded": True, "entries": entries, "at": now_utc(),
                "playlist": {k: listing.info.get(k) for k in ("id", "title", "extractor",
                                                               "webpage_url")}}

    # --- 2. items ---------------------------------------------------------------------------
    def item(self, spec: SourceSpec, entry: _Entry, tmpdir: Path) -> dict[str, Any]:
        """The record of one entry: from this run, from the cache, or fetched now."""
        claim = spec.licence or entry.context.get("licence_raw")
        stat = f"{entry.stat[0]}:{entry.stat[1]}" if entry.stat else ""
        key = self.key(f"item\0{spec.kind}\0{entry.ref}\0{stat}\0licence={claim or ''}")
        if key in self.memo:
            return self.memo[key]
        stored = self.ws.get_record(STAGE, key)
        if entry.context.get("skip"):  # found in a listed folder, not to be read
            reason, detail = entry.context["skip"]
            rec = stored if stored is not None and stored.get("reason") == reason else None
            if rec is None:  # recorded once, so that its time (and the manifests) stay the same
                rec = self.rejected(ItemRejected(reason, detail))
                self.ws.put_record(STAGE, key, rec)
            self.memo[key] = rec
            return rec
        down = self.takedowns.of(entry.ref, (stored or {}).get("source"))
        if down is not None:  # not fetched, not recorded (lifting the takedown restores `stored`)
            rec = {"status": "rejected", "reason": "taken_down", "detail": down.detail,
                   "transient": False, "at": down.at, "source": (stored or {}).get("source")}
            self.memo[key] = rec
            return rec
        if self.reusable(stored):
            rec = stored
            self.cached += 1
        else:
            self.computed += 1
            try:
                if spec.kind == "photo":
                    rec = self._photo(spec, entry, claim, tmpdir)
                else:
                    rec = self._video(spec, entry, tmpdir)
            except ItemRejected as exc:
                rec = self.rejected(exc)
            except _item_errors() as exc:
                rec = self.rejected(_as_rejection(exc, entry.ref))
            if rec["status"] == "rejected":
                log.warning("%s %s: %s: %s", spec.kind, entry.ref, rec["reason"], rec["detail"])
            else:
                log.info("%s %s -> %s", spec.kind, entry.ref, rec["source"]["local_path"])
            self.ws.put_record(STAGE, key, rec)
        if rec["status"] == "ok" and rec.get("archive_id"):
            self._archive(rec["archive_id"])  # after the record: see dsbuilder.fetch.ytdlp
        self.memo[key] = rec
        return rec

    def _archive(self, line: str) -> None:
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
    def _photo(self, spec: SourceSpec, entry: _Entry, claim: str | None,
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

    def _video(self, spec: SourceSpec, entry: _Entry, tmpdir: Path) -> dict[str, Any]:
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

    def _local_video(self, spec: SourceSpec, entry: _Entry, tmpdir: Path) -> dict[str, Any]:
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

    # --- 3. assembly ------------------------------------------------------------------------
    def assemble(self, done: list[tuple[SourceSpec, dict[str, Any], list[_Occurrence]]],
                 result: StageResult) -> None:
        """Build ``sources`` rows and rejections, in recipe order, content stored once."""
        groups: dict[str, list[_Occurrence]] = {}  # source_id -> occurrences, in recipe order
        for spec, listing, occs in done:
            if listing["status"] == "rejected":
                result.rejections.append(Rejection(
                    STAGE, spec.spec_id, listing["reason"], listing["detail"], None,
                    spec.person_id, at=listing["at"]))
                continue
            if not listing["entries"]:
                reason = "not_found" if spec.ref_type == "path" else "extract_error"
                what = "files of the right kind" if spec.ref_type == "path" else "entries"
                result.rejections.append(Rejection(
                    STAGE, spec.spec_id, reason, f"{spec.ref}: no {what} found", None,
                    spec.person_id, at=listing["at"]))
            for occ in occs:
                rec = occ.record
                src = rec.get("source")
                if src:
                    groups.setdefault(src["source_id"], []).append(occ)
                if rec["status"] == "rejected":
                    result.rejections.append(Rejection(
                        STAGE, occ.item_id, rec["reason"], rec["detail"],
                        src["source_id"] if src else None, spec.person_id, at=rec["at"]))

        rows = []
        for occs in groups.values():
            source = occs[0].record["source"]
            down = self.takedowns.of(None, source)
            named = next((o.record for o in occs if o.record.get("reason") == "taken_down"), None)
            if down is not None or named is not None:
                detail, at = (down.detail, down.at) if down else (named["detail"], named["at"])
                for o in occs:  # the same content reached through an entry not named goes too
                    if o.record["status"] == "ok":
                        result.rejections.append(Rejection(
                            STAGE, o.item_id, "taken_down", detail, source["source_id"],
                            o.spec.person_id, at=at))
                rows.append(_row(occs[0], "rejected", occs))
                delete_files(self.ws, (source.get("local_path"), source.get("info_json_path")))
                continue
            kept = next((o for o in occs if o.record["status"] == "ok"), None)
            if kept is None:  # known content, rejected for every requester: a row for auditors
                rows.append(_row(occs[0], "rejected", occs))
                continue
            members = [kept]
            for o in occs:
                if o is kept or o.record["status"] != "ok":
                    continue
                members.append(o)
                if (o.item_id, o.spec.person_id) != (kept.item_id, kept.spec.person_id):
                    sid = kept.record["source"]["source_id"]
                    result.rejections.append(Rejection(
                        STAGE, o.item_id, "duplicate",
                        f"{o.entry.ref}: same content as {sid}, kept for {kept.spec.ref}",
                        sid, o.spec.person_id, at=o.record["at"]))
            rows.append(_row(kept, "ok", members))
            self._sync_info_json(kept)
        result.rows = {"sources": rows}

    def _sync_info_json(self, kept: _Occurrence) -> None:
        """Make ``raw/videos/<source_id>.info.json`` the metadata of the kept requester.

        The same video reached through two URLs (a watch page and a playlist page, say) has one raw
        file but two yt-dlp infos; each item keeps its own in its ``fetched`` record, and the file
        beside the media is the one of the requester whose row is kept.
        """
        src = kept.record["source"]
        key = kept.record.get("fetched_key")
        if not key or not src.get("info_json_path"):
            return
        fetched = self.ws.get_record(STAGE, key)
        if not fetched or fetched.get("info") is None or fetched.get("sha256") != src["sha256"]:
            return
        target = self.ws.abspath(src["info_json_path"])
        data = (json.dumps(fetched["info"], sort_keys=True, indent=1, default=str) + "\n").encode()
        try:
            if target.read_bytes() == data:
                return
        except FileNotFoundError:
            pass
        atomic_write_json(target, fetched["info"])


def _row(first: _Occurrence, status: str, members: Iterable[_Occurrence]) -> dict[str, Any]:
    """A ``sources`` row: the record's values, gaps filled from the first requester's listing."""
    src = first.record["source"]
    row = {k: src.get(k) for k in SOURCE_FIELDS}
    for k in ("webpage_url", "title"):
        if row[k] is None and first.entry.context.get(k):
            row[k] = first.entry.context[k]
    if status != "ok":
        row["local_path"] = row["info_json_path"] = None
    members = list(members)
    row.update(status=status, request=first.spec.ref,
               person_ids=sorted({m.spec.person_id for m in members}),
               request_ids=sorted({m.spec.spec_id for m in members}))
    return row


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two records say the same thing, ignoring when they were made."""
    strip = lambda r: {k: v for k, v in r.items() if k != "at"}  # noqa: E731
    return json.loads(json.dumps(strip(a), default=str)) == json.loads(json.dumps(strip(b),
                                                                                  default=str))


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


def _item_errors() -> tuple[type[BaseException], ...]:
    """What one item may raise without stopping the run (anything else is a bug and propagates)."""
    import requests
    from yt_dlp.utils import YoutubeDLError

    from dsbuilder.media import MediaError

    return (requests.RequestException, YoutubeDLError, MediaError, OSError)


def _as_rejection(exc: BaseException, what: str) -> ItemRejected:
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


def run(recipe: Recipe, ws: Workspace, *, force: bool = False, retry_failed: bool = False,
        progress: bool = True) -> StageResult:
    """Fetch every source of ``recipe`` into ``ws``; write ``sources`` and scrape's rejections.

    ``force`` ignores all cache records; ``retry_failed`` redoes only the records of transient
    failures. One bad source never stops the run: it becomes a rejection row.
    """
    from tqdm import tqdm

    from dsbuilder.progress import QUIET

    job = _Scrape(recipe, ws, force=force, retry_failed=retry_failed)
    result = StageResult(STAGE, job.params_hash)
    specs: list[SourceSpec] = []
    seen: set[tuple[str, str]] = set()
    for spec in recipe.sources():  # the same entry twice for one person counts once
        if (spec.spec_id, spec.person_id) not in seen:
            seen.add((spec.spec_id, spec.person_id))
            specs.append(spec)
    done: list[tuple[SourceSpec, dict[str, Any], list[_Occurrence]]] = []
    try:
        for spec in tqdm(specs, desc="scrape", unit="source", disable=not progress or QUIET):
            tmpdir = Path(tempfile.mkdtemp(prefix=".dl-", dir=ws.raw))
            try:
                listing = job.listing(spec, tmpdir)
                occs = []
                if listing["status"] == "listed":
                    for e in listing["entries"]:
                        entry = _Entry.from_json(e)
                        item_id = ("ent-" + _sha16(f"{spec.kind}\0{entry.ref}")
                                   if listing["expanded"] else spec.spec_id)
                        occs.append(_Occurrence(spec, entry, item_id,
                                                job.item(spec, entry, tmpdir)))
                done.append((spec, listing, occs))
            finally:
                job.prefetched.clear()
                remove_tree(tmpdir)
    finally:
        job.close()
    job.assemble(done, result)
    result.computed, result.cached = job.computed, job.cached
    log.info("scrape: %d sources kept, %d rejections (%d items fetched, %d from cache)",
             sum(r["status"] == "ok" for r in result.rows["sources"]), len(result.rejections),
             result.computed, result.cached)
    return publish(ws, result)
