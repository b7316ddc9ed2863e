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

Listing an entry and fetching one listed entry are :class:`dsbuilder.fetch.source.SourceFetcher`'s
work; this module keys their records, reuses them, and assembles the table. The scrape runs in the
driver whatever the executor (its work is network-bound, and per-host rate limits and the network
policy live in one place).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, Iterable

from dsbuilder.config import USER_AGENT, Param
from dsbuilder.fetch.common import remove_tree
from dsbuilder.fetch.licence import normalise_licence
# listing and fetching one entry (re-exported: older imports name them here)
from dsbuilder.fetch.source import (IMAGE_EXTS, SOURCE_FIELDS, VIDEO_EXTS, Entry,  # noqa: F401
                                    SourceFetcher, _sha16, as_rejection, item_errors, rejected,
                                    source_id_for)
from dsbuilder.recipe import Recipe, SourceSpec, params_hash
from dsbuilder.stages.base import ItemRejected, Rejection, StageResult, publish
from dsbuilder.stages.spec import CliOption, StageSpec
from dsbuilder.takedown import Takedowns, delete_files
from dsbuilder.workspace import Workspace, atomic_write_json, item_key

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


#: Rejections that are the recipe's rules doing their job (logged as information); the others are
#: sources that could not be had (network, server, extraction, files: logged as warnings).
RULE_REASONS = frozenset({"too_large", "too_long", "licence_not_allowed", "robots_disallowed",
                          "no_audio", "duplicate", "too_small", "taken_down", "outside_folder",
                          "blocked_address"})


def _log_rejected(kind: str, ref: str, rec: dict[str, Any]) -> None:
    """Log a rejected fetch: a warning when the source could not be had, information when the
    recipe's rules turned it away (both are rejection rows and in the run's summary)."""
    level = logging.INFO if rec["reason"] in RULE_REASONS else logging.WARNING
    log.log(level, "%s %s: %s: %s", kind, ref, rec["reason"], rec["detail"])


@dataclass
class _Occurrence:
    """One (recipe entry, listed entry) pair and its item record, for assembling the tables."""

    spec: SourceSpec
    entry: Entry
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
        # the recipe's own hosts may be local (a curator's intranet, the tests' loopback server);
        # a redirect or a page must not lead anywhere else that is
        hosts = {urlsplit(s.ref).hostname or "" for s in recipe.sources()
                 if s.ref.startswith(("http://", "https://"))}
        self.fetch = SourceFetcher(ws, recipe.stages[STAGE], recipe.limits, recipe.licences,
                                   trusted_hosts=hosts, force=force,
                                   code_version=SPEC.code_version)
        self.memo: dict[str, dict[str, Any]] = {}  # record key -> record, this run
        self.computed = 0
        self.cached = 0
        self.takedowns = Takedowns.load(ws)  # dsbuilder.takedown: never fetched, always rejected

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
            try:
                rec = self.fetch.list_local(spec).to_json()
            except ItemRejected as exc:
                rec = rejected(exc)
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
                    rec = self.fetch.list_photo_url(spec, tmpdir).to_json()
                else:
                    rec = self.fetch.list_videos(spec).to_json()
            except ItemRejected as exc:
                rec = rejected(exc)
            except item_errors() as exc:
                rec = rejected(as_rejection(exc, spec.ref))
            if rec["status"] == "rejected":
                self.computed += 1
                _log_rejected(spec.kind, spec.ref, rec)
            self.ws.put_record(STAGE, key, rec)
        self.memo[key] = rec
        return rec

    # --- 2. items ---------------------------------------------------------------------------
    def item(self, spec: SourceSpec, entry: Entry, tmpdir: Path) -> dict[str, Any]:
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
                rec = rejected(ItemRejected(reason, detail))
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
                    rec = self.fetch.photo(spec, entry, claim, tmpdir)
                else:
                    rec = self.fetch.video(spec, entry, tmpdir)
            except ItemRejected as exc:
                rec = rejected(exc)
            except item_errors() as exc:
                rec = rejected(as_rejection(exc, entry.ref))
            if rec["status"] == "rejected":
                _log_rejected(spec.kind, entry.ref, rec)
            else:
                log.info("%s %s -> %s", spec.kind, entry.ref, rec["source"]["local_path"])
            self.ws.put_record(STAGE, key, rec)
        if rec["status"] == "ok" and rec.get("archive_id"):
            self.fetch.record_archive(rec["archive_id"])  # after the record: see dsbuilder.fetch.ytdlp
        self.memo[key] = rec
        return rec

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
                        entry = Entry.from_json(e)
                        item_id = ("ent-" + _sha16(f"{spec.kind}\0{entry.ref}")
                                   if listing["expanded"] else spec.spec_id)
                        occs.append(_Occurrence(spec, entry, item_id,
                                                job.item(spec, entry, tmpdir)))
                done.append((spec, listing, occs))
            finally:
                job.fetch.prefetched.clear()
                remove_tree(tmpdir)
    finally:
        job.fetch.close()
    job.assemble(done, result)
    result.computed, result.cached = job.computed, job.cached
    log.info("scrape: %d sources kept, %d rejections (%d items fetched, %d from cache)",
             sum(r["status"] == "ok" for r in result.rows["sources"]), len(result.rejections),
             result.computed, result.cached)
    return publish(ws, result)
