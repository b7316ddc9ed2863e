"""Taking a source down: when its owner asks, its media and everything made from it go, for good.

A takedown lives in the workspace (``<workspace>/takedowns.json``), not in the recipe: it applies to
every recipe run there, and editing the recipe cannot undo it by accident. It names a source by its
``source_id``, its URL or page URL, its site media id, or the recipe entry that led to it (a URL or a
local path), and gives a reason.

``dsbuilder takedown RECIPE WHAT --reason TEXT`` records it and deletes at once the matching sources'
raw files (media and yt-dlp info.json) and the face clips made from them. The next ``dsbuilder run``
then finishes the job: the scrape stage does not fetch a taken-down entry again (even when its cache
record says it could) and rejects the source (reason ``taken_down``, with the reason and the date in
the detail); every later stage drops what came from it, and the faces stage removes its clips. To lift
a takedown, delete its entry from the JSON file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from dsbuilder.workspace import Workspace, atomic_write_json

log = logging.getLogger(__name__)

FILE = "takedowns.json"

#: Source fields a takedown's ``match`` is compared with (besides the recipe entry's reference).
MATCHED_FIELDS = ("source_id", "url", "webpage_url", "media_id")


@dataclass(frozen=True)
class Takedown:
    match: str
    reason: str
    at: str  # when it was recorded (UTC, ISO 8601)

    @property
    def detail(self) -> str:
        return f"taken down on {self.at[:10]}: {self.reason}"


class Takedowns:
    """The workspace's takedowns, matched against recipe entries and sources."""

    def __init__(self, entries: Iterable[Takedown] = ()):
        self.entries = list(entries)
        self._by_match = {t.match: t for t in self.entries}

    @classmethod
    def load(cls, ws: Workspace) -> "Takedowns":
        path = ws.root / FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(Takedown(**t) for t in data.get("takedowns", []))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def of(self, ref: str | None = None, source: Mapping[str, Any] | None = None) -> Takedown | None:
        """The takedown that names the recipe entry ``ref`` or the ``source`` (a sources row or a
        scrape record's source), if any."""
        if ref and ref.strip() in self._by_match:
            return self._by_match[ref.strip()]
        for field in MATCHED_FIELDS:
            value = (source or {}).get(field)
            if value and str(value) in self._by_match:
                return self._by_match[str(value)]
        return None


def add(ws: Workspace, match: str, reason: str) -> Takedown:
    """Record a takedown (once per ``match``: a second call keeps the first reason and date)."""
    from dsbuilder.stages.base import now_utc

    match = match.strip()
    current = Takedowns.load(ws)
    if match in current._by_match:
        return current._by_match[match]
    new = Takedown(match, reason, now_utc())
    atomic_write_json(ws.root / FILE,
                      {"takedowns": [asdict(t) for t in [*current.entries, new]]})
    log.info("takedown recorded: %s (%s)", match, reason)
    return new


def known_names(ws: Workspace, recipe_refs: Iterable[str] = ()) -> set[str]:
    """Everything a takedown may name here: the sources' ids, URLs, page URLs and media ids, and
    the recipe's entries."""
    from dsbuilder.manifest.io import read_table

    names = {str(v) for r in read_table(ws, "sources").to_pylist() for f in MATCHED_FIELDS
             if (v := r.get(f))}
    names |= {str(r.get("request")) for r in read_table(ws, "sources").to_pylist()
              if r.get("request")}
    return names | {str(x).strip() for x in recipe_refs if x}


def closest(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, sorted(names), n=n, cutoff=0.5)


def taken_down_sources(ws: Workspace, takedowns: Takedowns) -> dict[str, dict[str, Any]]:
    """The ``sources`` rows the takedowns name, by source_id."""
    from dsbuilder.manifest.io import read_table

    return {r["source_id"]: r for r in read_table(ws, "sources").to_pylist()
            if takedowns.of(r.get("request"), r)}


def purge_records(ws: Workspace, takedowns: Takedowns | None = None) -> list[str]:
    """Delete every cache record of the stages after scrape that names a taken-down source (its id,
    its sha256, or an id made from it: tracks, frames, clips), so nothing derived from it survives
    in the cache. The scrape stage's records stay: they are how a rerun knows the source without
    fetching it. Returns the records' workspace-relative paths."""
    takedowns = takedowns if takedowns is not None else Takedowns.load(ws)
    if not takedowns:
        return []
    needles = {v for r in taken_down_sources(ws, takedowns).values()
               for v in (r["source_id"], r.get("sha256")) if v}
    if not needles:
        return []
    gone = []
    for path in sorted(ws.cache.rglob("*.json")):
        if path.relative_to(ws.cache).parts[0] == "scrape":
            continue  # the scrape's own records say what the source was: it is not fetched again
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if any(n in text for n in needles):
            path.unlink(missing_ok=True)
            gone.append(ws.relpath(path))
    return gone


def _needles(ws: Workspace, takedowns: Takedowns) -> tuple[set[str], set[str]]:
    """What names a taken-down source in text (its id, sha256, URLs, raw file names), and the
    people whose tracks came from it."""
    from dsbuilder.manifest.io import read_table

    gone = taken_down_sources(ws, takedowns)
    needles = {v for r in gone.values()
               for v in (r["source_id"], r.get("sha256"), r.get("url"), r.get("webpage_url"),
                         r.get("request"), Path(r["local_path"]).name if r.get("local_path") else None)
               if v and len(v) > 8}
    people = {t["person_id"] for t in read_table(ws, "tracks").to_pylist()
              if t["source_id"] in gone and t.get("person_id")}
    return needles, people


def purge_mentions(ws: Workspace, takedowns: Takedowns | None = None) -> list[str]:
    """Delete what names or was made from a taken-down source outside the cache: report files that
    mention it (report.html, report.json, the dataset card, Croissant; the next run writes them
    again), its lines in ``logs/run.log`` (rewritten without them), and the HMMs of the people it
    had tracks of (``models/hmm/<person>.json`` and the label stage's HMM records: refitted on the
    next run without it). Returns what was deleted or rewritten, workspace-relative."""
    from dsbuilder.workspace import atomic_write_bytes

    takedowns = takedowns if takedowns is not None else Takedowns.load(ws)
    if not takedowns:
        return []
    needles, people = _needles(ws, takedowns)
    if not needles:
        return []
    done = []
    report = ws.root / "report"
    for path in sorted(report.rglob("*")) if report.is_dir() else []:
        if not path.is_file():
            continue
        named = any(n in path.name for n in needles)
        if not named and path.suffix in (".html", ".json", ".md", ".csv", ".txt", ".svg"):
            text = path.read_text(encoding="utf-8", errors="replace")
            named = any(n in text for n in needles)
        if named:
            path.unlink()
            done.append(ws.relpath(path))
    log_path = ws.logs / "run.log"
    if log_path.is_file():
        lines = log_path.read_bytes().decode("utf-8", errors="replace").splitlines(keepends=True)
        kept = [ln for ln in lines if not any(n in ln for n in needles)]
        if len(kept) != len(lines):
            atomic_write_bytes(log_path, "".join(kept).encode("utf-8"))
            done.append(f"{ws.relpath(log_path)} ({len(lines) - len(kept)} line(s) removed)")
    for pid in sorted(people):
        model = ws.root / "models" / "hmm" / f"{pid}.json"
        if model.is_file():
            model.unlink()
            done.append(ws.relpath(model))
    if people:  # an HMM record holds a model fitted on every clip of its person
        for rec in sorted((ws.cache / "label").glob("*.json")):
            try:
                data = json.loads(rec.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not (isinstance(data, dict) and isinstance(data.get("model"), dict)):
                continue  # not an HMM (FER records name their track: purge_records finds them)
            if data.get("person_id", None) in people or "person_id" not in data:
                rec.unlink()  # (records written before they named their person: all of them)
                done.append(ws.relpath(rec))
    return done


def purge(ws: Workspace, takedowns: Takedowns | None = None) -> list[str]:
    """Delete the raw files of the taken-down sources of the ``sources`` table, and the face clips
    of their tracks. Returns the workspace-relative paths deleted."""
    from dsbuilder.manifest.io import read_table

    takedowns = takedowns if takedowns is not None else Takedowns.load(ws)
    if not takedowns:
        return []
    gone = taken_down_sources(ws, takedowns)
    paths = [p for r in gone.values() for p in (r.get("local_path"), r.get("info_json_path"))]
    for t in read_table(ws, "tracks").to_pylist():
        if t["source_id"] in gone:
            paths += [t.get("crop_path"), t.get("audio_path")]
    return delete_files(ws, paths)


def delete_files(ws: Workspace, paths: Iterable[str | None]) -> list[str]:
    """Delete these workspace-relative files (None and absent ones skipped); return those deleted."""
    from dsbuilder.errors import WorkspaceError

    deleted = []
    for rel in paths:
        try:
            path = ws.abspath(rel) if rel else None
        except WorkspaceError as exc:  # never delete outside the workspace
            log.error("takedown: not deleting %s", exc.message)
            continue
        if path is not None and path.is_file():
            path.unlink()
            log.info("taken down: deleted %s", rel)
            deleted.append(rel)
    return deleted
