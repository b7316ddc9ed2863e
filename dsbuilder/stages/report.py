"""The report stage: the dataset's training view (``clips``, with splits) and its audit report.

Reads what the other stages published and writes:

* the ``clips`` table: one row per labelled kept track (a training example): the crop clip and its
  audio, times and frames, the clip-level labels (FER soft labels, entropy, valence/arousal, the FACS
  emotion and its agreement with FER), whether and how long the person speaks, the split, and the
  source's licence and page, so a trainer can filter without joins;
* ``report/report.json`` and ``report/report.html``: for an auditor, every stage's parameters and
  code version, counts, every rejection by stage and reason (with examples), the provenance of every
  source (URL, uploader, licence, fetch time, sha256, tool versions), and the lineage of every clip;
* ``report/dataset_card.md``: a dataset card (what is in it, where it comes from, splits, limits);
* ``report/croissant.json``: Croissant 1.0 metadata of ``clips.parquet`` (MLCommons), for loaders
  that read it.

**Splits never share a video or an identity.** Clips are grouped (``group_by``): by default the
connected groups of videos and people (two people in one video are in one group, and so is every
other video of theirs); ``video`` groups by video only (a person may then be in several splits: for
models that must generalise over videos, not people); ``identity`` by person only (a video showing two
people may then be in two splits). Each group goes to a split by a hash of its key and
``split_seed``, in proportion to the ratios: a group keeps its split when other groups are added later,
so a test set does not move as the dataset grows. With few groups the realised shares differ from the
ratios (they are reported). After assignment the grouping is checked again (:func:`check_leakage`);
a leak is an error (:class:`LeakageError`), not a warning.

Nothing written here depends on the time of the run: a rerun over the same manifests writes the
same bytes.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from dsbuilder import config
from dsbuilder.config import STAGES, Param
from dsbuilder import __version__
from dsbuilder.errors import StageError
from dsbuilder.manifest.io import count_rows, read_table, table_path
from dsbuilder.manifest.schema import SCHEMA_VERSION
from dsbuilder.recipe import Recipe, params_hash
from dsbuilder.stages.base import Rejection, StageResult, first_time, publish
from dsbuilder.stages.spec import StageSpec
from dsbuilder.workspace import Workspace, atomic_path, atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

STAGE = "report"

#: The stage's contract (see :mod:`dsbuilder.stages.spec`).
SPEC = StageSpec(
    name=STAGE,
    help='Write the clips table (the training view, with splits that never share a video or a person) and the audit report: report/report.html and .json, report/dataset_card.md.',
    reads=('sources', 'shots', 'faces_dictionary', 'people', 'tracks', 'frames', 'speech', 'labels', 'label_clips', 'segments', 'rejections'),
    writes=('clips',),
    code_version='1',
    params={
"train_ratio": Param((int, float), 0.8, "share of clip groups in the train split", min=0.0,
                     max=1.0),
"val_ratio": Param((int, float), 0.1, "share of clip groups in the val split", min=0.0, max=1.0),
"test_ratio": Param((int, float), 0.1, "share of clip groups in the test split", min=0.0,
                    max=1.0),
"group_by": Param(str, "identity_and_video", "what never crosses splits: videos and people "
                  "(connected), videos only, or people only",
                  choices=("identity_and_video", "video", "identity")),
"split_seed": Param(int, 0, "seed of the hash that places each group in a split", min=0),
"min_clip_s": Param((int, float), 1.0, "shortest training clip: tracks are cut where the FER "
                    "teacher's emotion changes for at least this long and where speech starts "
                    "or stops; shorter tracks give no clip (rejection too_short)", min=0.1,
                    max=60.0),
"max_clip_s": Param((int, float), 10.0, "longest training clip (longer pieces are split "
                    "evenly)", min=0.5, max=600.0),
"examples_per_reason": Param(int, 5, "rejected items listed per stage and reason in the report",
                             min=0),
"review": Param(str, None, "the curator's decisions: a CSV with columns clip_id, decision "
                "(accept or reject) and note, relative to the recipe; a rejected clip leaves "
                "clips (rejection curator_rejected), an accepted one is marked", nullable=True),
},
    reasons={
        'curator_rejected': 'the curator rejected the clip in the review file',
        'too_short': 'the track gives no clip of at least min_clip_s',
    },
    options=(),
)
SPLITS = config.SPLITS
GROUPINGS = ("identity_and_video", "video", "identity")
GROUP_NOUNS = {"identity_and_video": "videos and people", "video": "videos", "identity": "people"}

#: Where the report files go, relative to the workspace.
REPORT_DIR = "report"

#: The HTML page lists at most this many sources and clips (report.json lists all of them).
HTML_ROWS = 2000


class LeakageError(StageError):
    """A video or a person is in more than one split (under the chosen grouping)."""


# --- clips ---------------------------------------------------------------------------------------

LABEL_COLUMNS = ("track_id", "frame_index", "crop_frame", "t", "fer_probs", "fer_probs_smoothed",
                 "fer_argmax", "valence_smoothed", "arousal_smoothed", "au_emotion")


def clip_rows(tracks: Iterable[Mapping[str, Any]], label_clips: Iterable[Mapping[str, Any]],
              speech: Iterable[Mapping[str, Any]], sources: Iterable[Mapping[str, Any]],
              labels: Iterable[Mapping[str, Any]], params: Mapping[str, Any],
              at: str = "") -> tuple[list[dict[str, Any]], list[Rejection]]:
    """The training view: each kept track with a kept ``label_clips`` row, cut into clips that
    carry one emotion (:func:`dsbuilder.labels.cuts.cut_track`), each with its own labels, speech
    and lineage (``split`` and ``split_group`` are filled by :func:`assign_splits`). A track
    shorter than ``min_clip_s`` gives a ``too_short`` rejection instead."""
    from dsbuilder.labels.cuts import cut_track

    kept_labels = {r["track_id"]: r for r in label_clips if r["kept"]}
    src = {r["source_id"]: r for r in sources}
    talk: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in speech:
        talk[r["track_id"]].append(r)
    frames: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in labels:
        if r["track_id"] in kept_labels:
            frames[r["track_id"]].append(r)
    rows, rejections = [], []
    for t in sorted(tracks, key=lambda r: r["track_id"]):
        lab = kept_labels.get(t["track_id"])
        if not t["kept"] or not t["crop_path"] or lab is None:
            continue
        fr = sorted(frames.get(t["track_id"], []), key=lambda r: r["frame_index"])
        if not fr:
            continue
        segs = sorted(talk.get(t["track_id"], []), key=lambda r: r["start_frame"])
        index = {f["frame_index"]: i for i, f in enumerate(fr)}
        bounds = {index[b] for s in segs for b in (s["start_frame"], s["end_frame"]) if b in index}
        probs = (np.array([f["fer_probs_smoothed"] for f in fr], np.float64)
                 if all(f["fer_probs_smoothed"] is not None for f in fr) else None)
        cuts = cut_track([f["t"] for f in fr], float(t["end_s"]), probs, sorted(bounds),
                         min_clip_s=float(params["min_clip_s"]),
                         max_clip_s=float(params["max_clip_s"]))
        if not cuts:
            rejections.append(Rejection(
                STAGE, t["track_id"], "too_short",
                f"the track lasts {t['end_s'] - t['start_s']:.2f} s < min_clip_s "
                f"{float(params['min_clip_s']):g}: no training clip", t["source_id"],
                t["person_id"], at))
            continue
        s = src.get(t["source_id"], {})
        for k, cut in enumerate(cuts):
            part = fr[cut.start:cut.end]
            start_s = float(part[0]["t"])
            end_s = float(fr[cut.end]["t"]) if cut.end < len(fr) else float(t["end_s"])
            end_frame = (fr[cut.end]["frame_index"] if cut.end < len(fr)
                         else int(t["end_frame"]))
            speaking = [x for x in segs if x["speaking"]]
            speaking_s = sum(max(0.0, min(end_s, x["end_s"]) - max(start_s, x["start_s"]))
                             for x in speaking)
            overlap = max(segs, key=lambda x: min(end_s, x["end_s"]) - max(start_s, x["start_s"]),
                          default=None)
            rows.append({
                "clip_id": f"{t['track_id']}-c{k:02d}", "track_id": t["track_id"],
                "clip_index": k, "source_id": t["source_id"], "shot_id": t["shot_id"],
                "person_id": t["person_id"],
                "video_path": t["crop_path"], "video_sha256": t["crop_sha256"],
                "audio_path": t["audio_path"], "audio_sha256": t["audio_sha256"],
                "start_frame": part[0]["frame_index"], "end_frame": end_frame,
                "start_s": start_s, "end_s": end_s, "duration_s": end_s - start_s,
                "n_frames": end_frame - part[0]["frame_index"],
                "crop_start_frame": part[0]["frame_index"] - int(t["start_frame"]),
                "crop_end_frame": end_frame - int(t["start_frame"]),
                "crop_start_s": start_s - float(t["start_s"]),
                "crop_end_s": end_s - float(t["start_s"]),
                "ended_by": cut.ended_by,
                **_clip_labels(part, lab),
                "speaking": speaking_s >= 0.5 * (end_s - start_s),
                "speaking_s": float(speaking_s),
                "sync_confidence": overlap["sync_confidence"] if overlap else None,
                "licence": s.get("licence"), "webpage_url": s.get("webpage_url") or s.get("url"),
                "review": None, "split": None, "split_group": None,
            })
    return rows, rejections


def _clip_labels(part: Sequence[Mapping[str, Any]], track_labels: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """A clip's own labels from its frames' rows: FER mean and agreement, V/A, AU emotion."""
    from dsbuilder.labels.fer import FER_CLASSES
    from dsbuilder.labels.va import entropy
    from dsbuilder.labels.clip import FER_TO_FACS

    out: dict[str, Any] = {"probs": None, "argmax": None, "argmax_prob": None, "entropy": None,
                           "agreement": None, "valence": None, "arousal": None,
                           "au_emotion": None, "fer_au_agreement": None,
                           "fer_model": track_labels.get("fer_model")}
    if all(f["fer_probs"] is not None for f in part):
        mean = np.mean([f["fer_probs"] for f in part], axis=0)
        k = int(np.argmax(mean))
        smoothed = [int(np.argmax(f["fer_probs_smoothed"])) for f in part
                    if f["fer_probs_smoothed"] is not None]
        out.update(probs=[float(x) for x in mean], argmax=FER_CLASSES[k],
                   argmax_prob=float(mean[k]), entropy=entropy(mean),
                   agreement=float(np.mean([x == k for x in smoothed])) if smoothed else None)
    for key, col in (("valence", "valence_smoothed"), ("arousal", "arousal_smoothed")):
        vals = [f[col] for f in part if f[col] is not None]
        out[key] = float(np.mean(vals)) if vals else None
    aus = [f["au_emotion"] for f in part if f["au_emotion"] is not None]
    if aus:
        out["au_emotion"] = Counter(aus).most_common(1)[0][0]
        pairs = [(f["fer_argmax"], f["au_emotion"]) for f in part
                 if f["fer_argmax"] is not None and f["au_emotion"] is not None]
        if pairs:
            out["fer_au_agreement"] = float(np.mean([FER_TO_FACS[a] == b for a, b in pairs]))
    return out


# --- the curator's review ------------------------------------------------------------------------

DECISIONS = ("accept", "reject")


def read_review(path: str | None) -> dict[str, tuple[str, str]]:
    """``stages.report.review`` -> {clip_id: (decision, note)}. The CSV has a header with at least
    ``clip_id`` and ``decision`` (``accept`` or ``reject``); ``note`` is optional. A later line for
    the same clip wins."""
    import csv

    if not path:
        return {}
    out: dict[str, tuple[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"clip_id", "decision"} <= set(reader.fieldnames):
            raise StageError(f"{path}: the review CSV needs clip_id and decision columns",
                             "first line: clip_id,decision,note")
        for line, row in enumerate(reader, start=2):
            decision = (row["decision"] or "").strip().lower()
            if decision not in DECISIONS:
                raise StageError(f"{path}:{line}: decision must be accept or reject, got "
                                 f"{row['decision']!r}")
            out[(row["clip_id"] or "").strip()] = (decision, (row.get("note") or "").strip())
    return out


def apply_review(clips: list[dict[str, Any]], review: Mapping[str, tuple[str, str]],
                 params_hash_: str, ws: Workspace) -> tuple[list[dict[str, Any]], list[Rejection],
                                                         list[str]]:
    """Clips the curator did not reject (accepted ones marked), rejections for the others, and
    the reviewed ids that are not clips (any more)."""
    kept, rejected = [], []
    for c in clips:
        decision, note = review.get(c["clip_id"], (None, ""))
        if decision == "reject":
            rejected.append(Rejection(
                STAGE, c["clip_id"], "curator_rejected", note or "rejected in the review file",
                source_id=c["source_id"], person_id=c["person_id"],
                at=first_time(ws, STAGE, f"reject\0{c['clip_id']}\0{note}", params_hash_)))
            continue
        c["review"] = "accepted" if decision == "accept" else None
        kept.append(c)
    unknown = sorted(set(review) - {c["clip_id"] for c in clips})
    return kept, rejected, unknown


# --- splits --------------------------------------------------------------------------------------

def _groups(clips: Sequence[Mapping[str, Any]], group_by: str) -> dict[str, str]:
    """clip_id -> group key: the smallest member of its connected group of videos and people."""
    if group_by not in GROUPINGS:
        raise StageError(f"unknown group_by {group_by!r}", f"one of {', '.join(GROUPINGS)}")
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def nodes(c: Mapping[str, Any]) -> list[str]:
        out = []
        if group_by in ("identity_and_video", "video"):
            out.append(f"video:{c['source_id']}")
        if group_by in ("identity_and_video", "identity"):
            out.append(f"person:{c['person_id']}")
        return out

    for c in clips:
        first, *rest = nodes(c)
        for n in rest:
            a, b = find(first), find(n)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the smallest name leads: a stable key
        find(first)
    return {c["clip_id"]: find(nodes(c)[0]) for c in clips}


def split_of(group: str, ratios: Sequence[float], seed: int) -> str:
    """The split of a group: a uniform number from the hash of (seed, group) against the ratios."""
    total = float(sum(ratios))
    u = int.from_bytes(hashlib.sha256(f"{seed}\0{group}".encode()).digest()[:8], "big") / 2 ** 64
    edge = 0.0
    for name, r in zip(SPLITS, ratios):
        edge += r / total
        if u < edge:
            return name
    return next(n for n, r in zip(reversed(SPLITS), reversed(ratios)) if r > 0)


def assign_splits(clips: list[dict[str, Any]], ratios: Sequence[float], group_by: str,
                  seed: int, pins: Mapping[str, str] | None = None) -> None:
    """Fill ``split`` and ``split_group`` of every clip row (in place). ``pins``: source_id -> the
    split the recipe holds that video in; a pinned video takes its whole group there, and a group
    with two different pins is an error (it cannot be in both)."""
    if len(ratios) != len(SPLITS) or min(ratios) < 0 or sum(ratios) <= 0:
        raise StageError(f"split ratios must be {len(SPLITS)} non-negative numbers with a positive "
                         f"sum, got {list(ratios)}",
                         "set stages.report.train_ratio / val_ratio / test_ratio")
    groups = _groups(clips, group_by)
    pinned: dict[str, tuple[str, str]] = {}  # group -> (split, the source that pinned it)
    for c in sorted(clips, key=lambda c: c["source_id"]):
        split = (pins or {}).get(c["source_id"])
        if split is None:
            continue
        g = groups[c["clip_id"]]
        prev = pinned.setdefault(g, (split, c["source_id"]))
        if prev[0] != split:
            raise StageError(f"videos {prev[1]} (split {prev[0]}) and {c['source_id']} (split "
                             f"{split}) are in one group under group_by {group_by} (they share a "
                             "person or a video), so they cannot be in different splits",
                             "pin them to the same split, or set stages.report.group_by: video")
    for c in clips:
        c["split_group"] = groups[c["clip_id"]]
        pin = pinned.get(c["split_group"])
        c["split"] = pin[0] if pin else split_of(c["split_group"], ratios, seed)


def source_pins(sources: Iterable[Mapping[str, Any]], request_pins: Mapping[str, str]
                ) -> dict[str, str]:
    """source_id -> split, from the recipe entries that led to each source (``request_ids``) and
    their ``split:`` (``request_pins``: entry id -> split); sources the scrape rejected are left
    out. One video under two entries that pin different splits is an error."""
    out: dict[str, str] = {}
    for row in sources:
        if row.get("status", "ok") != "ok":  # rejected by scrape: no clip to place
            continue
        splits = sorted({request_pins[r] for r in row["request_ids"] or () if r in request_pins})
        if len(splits) > 1:
            raise StageError(f"video {row['source_id']} is listed by recipe entries pinned to "
                             f"different splits ({', '.join(splits)})",
                             "give the entries that list the same video one split")
        if splits:
            out[row["source_id"]] = splits[0]
    return out


def check_leakage(clips: Sequence[Mapping[str, Any]], group_by: str) -> list[str]:
    """Videos and people found in more than one split (what ``group_by`` promises to keep apart)."""
    problems = []
    keys = {"identity_and_video": ("source_id", "person_id"), "video": ("source_id",),
            "identity": ("person_id",)}[group_by]
    for key in keys:
        where: dict[str, set[str]] = defaultdict(set)
        for c in clips:
            where[c[key]].add(c["split"])
        for value, splits in sorted(where.items()):
            if len(splits) > 1:
                clip = next(c["clip_id"] for c in clips if c[key] == value)
                problems.append(f"clips {clip}: {key} {value} is in splits {sorted(splits)}")
    return problems


# --- the report ----------------------------------------------------------------------------------

_SOURCE_FIELDS = ("source_id", "kind", "status", "person_ids", "url", "webpage_url", "extractor",
                  "title", "uploader", "channel", "licence", "licence_raw", "upload_date",
                  "fetched_at", "sha256", "bytes", "duration", "width", "height", "local_path",
                  "tool_versions")


def _plain(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 6)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def build_report(recipe: Recipe, tables: Mapping[str, list[dict[str, Any]]],
                 sizes: Mapping[str, int], clips: Sequence[Mapping[str, Any]],
                 params: Mapping[str, Any], examples: int, pins: Mapping[str, str]
                 ) -> dict[str, Any]:
    """The report as plain data (what report.json holds), from :func:`read_inputs`."""
    from dsbuilder.stages import CODE_VERSIONS

    sources, rejections = tables["sources"], tables["rejections"]
    by_reason: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(rejections, key=lambda r: (r["stage"], r["reason"], r["item_id"])):
        by_reason[r["stage"]][r["reason"]].append(r)
    stage_order = {s: i for i, s in enumerate(STAGES)}
    split_counts = {s: {"clips": 0, "seconds": 0.0, "people": set(), "videos": set()}
                    for s in SPLITS}
    for c in clips:
        sc = split_counts[c["split"]]
        sc["clips"] += 1
        sc["seconds"] += c["duration_s"]
        sc["people"].add(c["person_id"])
        sc["videos"].add(c["source_id"])
    tracks = tables["tracks"]
    scorers = Counter({r["track_id"]: r["scorer"] for r in tables["speech"]}.values())
    return {
        "dataset": recipe.name,
        "dsbuilder_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "stages": {s: {"params": _plain_params(recipe.stage_params(s)),
                       "params_hash": params_hash(recipe.stage_params(s)),
                       "code_version": CODE_VERSIONS[s]} for s in STAGES},
        "counts": {
            "people": len(recipe.people),
            "sources": dict(sorted(Counter(f"{r['kind']}s_{r['status']}"
                                           for r in sources).items())),
            "shots": sizes["shots"],
            "tracks": len(tracks), "tracks_kept": sum(1 for t in tracks if t["kept"]),
            "labelled_frames": sizes["labels"],
            "segments": sizes["segments"],
            "clips": len(clips),
            "clip_seconds": round(sum(c["duration_s"] for c in clips), 3),
            "speaking_clips": sum(1 for c in clips if c["speaking"]),
            "rejections": len(rejections),
        },
        "speakers": {"tracks_by_scorer": dict(sorted(scorers.items())),
                     "note": (f"{scorers['correlation']} track(s) judged by the correlation "
                              "fallback, not the learned active-speaker model (Light-ASD weights "
                              "not installed: `dsbuilder models pull light-asd`)"
                              if scorers.get("correlation") else None)},
        "people_lost": sorted(p["person_id"] for p in tables["people"] if not p["n_kept"]),
        "people": [{"person_id": p["person_id"], "name": p["name"], "n_kept": p["n_kept"],
                    "threshold": _plain(p["threshold"]), "est_far": _plain(p["est_far"]),
                    "clips": sum(1 for c in clips if c["person_id"] == p["person_id"])}
                   for p in sorted(tables["people"], key=lambda p: p["person_id"])],
        "splits": {
            "group_by": params["group_by"], "seed": params["split_seed"],
            "ratios": dict(zip(SPLITS, _ratios(params))),
            "leakage": "none",
            "pinned": dict(sorted(pins.items())),
            "warnings": [f"The {s} split has no clip: {len({c['split_group'] for c in clips})} "
                         f"group(s) of {GROUP_NOUNS[params['group_by']]} are too few for the "
                         "ratios (a video entry's `split:` can hold a video in it)."
                         for s, r in zip(SPLITS, _ratios(params))
                         if clips and r > 0 and not split_counts[s]["clips"]],
            "realised": {s: {"clips": v["clips"], "seconds": round(v["seconds"], 3),
                             "people": sorted(v["people"]), "videos": sorted(v["videos"])}
                         for s, v in split_counts.items()},
        },
        "rejections": {
            stage: {reason: {"count": len(rows),
                             "examples": [{"item_id": r["item_id"], "source_id": r["source_id"],
                                           "person_id": r["person_id"], "detail": r["detail"]}
                                          for r in rows[:examples]]}
                    for reason, rows in sorted(reasons.items())}
            for stage, reasons in sorted(by_reason.items(), key=lambda kv: stage_order.get(kv[0], 99))
        },
        "sources": [{k: _plain(r.get(k)) for k in _SOURCE_FIELDS}
                    for r in sorted(sources, key=lambda r: r["source_id"])],
        "clips": [{k: _plain(c[k]) for k in ("clip_id", "person_id", "source_id", "shot_id",
                                              "start_s", "end_s", "split", "argmax", "argmax_prob",
                                              "entropy", "valence", "arousal", "au_emotion",
                                              "speaking", "licence", "webpage_url", "video_path",
                                              "video_sha256")}
                  for c in clips],
    }


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def _ratios(params: Mapping[str, Any]) -> list[float]:
    return [float(params["train_ratio"]), float(params["val_ratio"]), float(params["test_ratio"])]


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            v = f"{v:.3f}"
        elif isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        elif isinstance(v, Mapping):  # e.g. counts by kind: "photos_ok 4, videos_ok 2"
            v = ", ".join(f"{k} {x}" for k, x in v.items())
        elif isinstance(v, str) and v.startswith("file://"):
            v = "local file: " + v.rsplit("/", 1)[-1]  # no absolute path of this machine in the page
        return f"<td>{html.escape('' if v is None else str(v))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _more(rows: Sequence[Any]) -> str:
    if len(rows) <= HTML_ROWS:
        return ""
    return (f"<p>The first {HTML_ROWS} of {len(rows)}; <code>report.json</code> lists all of "
            "them.</p>")


def _review_html(review: Mapping[str, Any] | None) -> str:
    if not review or not review["file"]:
        return "<p>No review file (<code>stages.report.review</code>).</p>"
    text = (f"<p>{html.escape(review['file'])}: {review['accepted']} clips accepted, "
            f"{review['rejected']} rejected (listed under Rejections, stage report).")
    if review["not_clips"]:
        text += (" Reviewed ids that are not clips: "
                 + html.escape(", ".join(review["not_clips"])) + ".")
    return text + "</p>"


def _figures_html(figures: Mapping[str, Any] | None, part: str) -> str:
    """The pictures of one part of the page (``funnel``, ``gallery``, ``references``)."""
    esc = html.escape
    if not figures:
        return ""
    if part == "funnel":
        return "".join(f'<img class="chart" src="{esc(figures[k])}" alt="{k}">'
                       for k in ("funnel", "rejections") if figures.get(k))
    if part == "gallery":
        out = []
        for person, clips in figures["gallery"].items():
            out.append(f"<h3>{esc(person)}</h3><div class=\"gallery\">")
            for c in clips:
                thumb = (f'<a href="{esc(c["video"])}"><img src="{esc(c["thumb"])}" '
                         f'alt="{esc(c["clip_id"])}"></a>' if c["thumb"] else "")
                out.append(f'<figure>{thumb}<img src="{esc(c["timeline"])}" alt="timeline">'
                           f'<figcaption><a href="{esc(c["video"])}">{esc(c["clip_id"])}</a><br>'
                           f'{esc(str(c["argmax"]))}, {c["seconds"]} s, {esc(c["split"])}'
                           f'{", speaking" if c["speaking"] else ""}</figcaption></figure>')
            out.append("</div>")
        if not out:
            return "<p>No clip yet.</p>"
        return ("<p>Each clip: its middle frame (a link to the clip) and, over its duration, the "
                "teacher's class probabilities (stacked: angry, disgust, fear, happy, sad, surprise, "
                "neutral), valence (green) and arousal (red), the speaking probability (blue, dashed) "
                f"and the HMM segments (colours by state). At most {figures['gallery_limit']} clips "
                "a person are drawn; the clips table below lists them all.</p>" + "".join(out))
    refs = figures.get("references") or []
    shown = "".join(f'<img src="{esc(r["image"])}" title="{esc(r["face_id"])}: '
                    f'{"kept" if r["kept"] else esc(str(r["reason"]))}" alt="{esc(r["face_id"])}">'
                    for r in refs if r["image"])
    hidden = [r for r in refs if not r["image"]]
    return (f'<div class="refs">{shown}</div><p>Green: kept; red: rejected (hover for the reason).'
            + (f" Not drawn, as they may show someone else: {len(hidden)} face(s) rejected as "
               + ", ".join(sorted({str(r['reason']) for r in hidden})) + "." if hidden else "")
            + "</p>")


def render_html(report: Mapping[str, Any], figures: Mapping[str, Any] | None = None) -> str:
    """A self-contained page (no scripts, nothing fetched: pictures from ``figures/`` beside it)
    from :func:`build_report`'s data and :func:`dsbuilder.report_figures.make_figures`' pictures."""
    esc = html.escape
    parts = [f"<h1>{esc(report['dataset'])}: dataset report</h1>",
             f"<p>dsbuilder {esc(report['dsbuilder_version'])}, manifest schema "
             f"{report['schema_version']}. The same data as <code>report.json</code>.</p>",
             "<h2>Counts</h2>", _figures_html(figures, "funnel"),
             _table(("what", "count"), report["counts"].items()),
             "<p>Active speaker: " + esc(", ".join(
                 f"{n} track(s) by {k}" for k, n in report["speakers"]["tracks_by_scorer"].items())
                 or "no track scored") + "."
             + (f" <b>{esc(report['speakers']['note'])}.</b>" if report["speakers"]["note"]
                else "") + "</p>",
             "<h2>People</h2>",
             (f"<p><b>No kept reference face, so no clip, for: "
              f"{esc(', '.join(report['people_lost']))}</b> (dictionary rejections "
              "<code>no_kept_face</code>, <code>identity_outlier</code>; add photos).</p>"
              if report["people_lost"] else ""),
             _table(("person", "name", "kept photos", "match threshold", "est. false accepts",
                     "clips"),
                    ((p["person_id"], p["name"], p["n_kept"], p["threshold"], p["est_far"],
                      p["clips"]) for p in report["people"])),
             "<h2>Clips, person by person</h2>", _figures_html(figures, "gallery"),
             "<h2>Reference faces</h2>", _figures_html(figures, "references"),
             f"<h2>Splits</h2><p>Grouped by <code>{esc(report['splits']['group_by'])}</code> "
             f"(seed {report['splits']['seed']}); leakage: {esc(report['splits']['leakage'])}."
             + (f" {len(report['splits']['pinned'])} video(s) held in a split by the recipe."
                if report["splits"]["pinned"] else "")
             + "".join(f" {esc(w)}" for w in report["splits"]["warnings"]) + "</p>",
             _table(("split", "target share", "clips", "seconds", "people", "videos"),
                    ((s, report["splits"]["ratios"][s], v["clips"], v["seconds"], v["people"],
                      v["videos"]) for s, v in report["splits"]["realised"].items())),
             "<h2>Curator's review</h2>",
             _review_html(report.get("review")),
             "<h2>Rejections</h2>"]
    rows = []
    for stage, reasons in report["rejections"].items():
        for reason, info in reasons.items():
            for i, ex in enumerate(info["examples"] or [{}]):
                rows.append((stage if i == 0 else "", reason if i == 0 else "",
                             info["count"] if i == 0 else "", ex.get("item_id"), ex.get("detail")))
    parts.append(_table(("stage", "reason", "count", "example item", "detail"), rows))
    parts += ["<h2>Sources (provenance)</h2>", _more(report["sources"]),
              _table(("source", "kind", "status", "url", "uploader", "licence", "upload date",
                      "fetched at", "sha256"),
                     ((s["source_id"], s["kind"], s["status"], s["webpage_url"] or s["url"],
                       s["uploader"], s["licence"], s["upload_date"], s["fetched_at"], s["sha256"])
                      for s in report["sources"][:HTML_ROWS])),
              "<h2>Clips (lineage)</h2>", _more(report["clips"]),
              _table(("clip", "person", "source", "shot", "start s", "end s", "split", "FER argmax",
                      "p", "AU emotion", "speaking", "licence"),
                     ((c["clip_id"], c["person_id"], c["source_id"], c["shot_id"], c["start_s"],
                       c["end_s"], c["split"], c["argmax"], c["argmax_prob"], c["au_emotion"],
                       c["speaking"], c["licence"]) for c in report["clips"][:HTML_ROWS])),
              "<h2>Stage parameters</h2>",
              _table(("stage", "code version", "params hash", "params"),
                     ((s, v["code_version"], v["params_hash"],
                       json.dumps(v["params"], sort_keys=True)) for s, v in report["stages"].items()))]
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;"
             "margin-bottom:1.5em;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px;"
             "text-align:left;vertical-align:top;max-width:24em;overflow-wrap:anywhere}"
             "th{background:#eee}.gallery{display:flex;flex-wrap:wrap;gap:8px}"
             "figure{margin:0;width:300px;font-size:75%}figure img{max-width:100%;display:block}"
             ".chart{max-width:48%;vertical-align:top;margin-right:1%}.refs img{margin:2px}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{esc(report['dataset'])}"
            f" report</title><style>{style}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")


def dataset_card(report: Mapping[str, Any]) -> str:
    """A Markdown dataset card from :func:`build_report`'s data."""
    c, sp = report["counts"], report["splits"]
    licences = Counter(s["licence"] or "unknown" for s in report["sources"] if s["status"] == "ok")
    n = c["clips"]
    size = ("n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000
            else "100K<n<1M")
    hf_licences = sorted({_hf_licence(k) for k in licences}) or ["unknown"]
    front = [
        "---",
        f"license: {hf_licences[0] if len(hf_licences) == 1 else 'other'}",
        f"pretty_name: {json.dumps(report['dataset'])}",
        "task_categories:", "- video-classification", "- audio-classification",
        "tags:", "- emotion-recognition", "- facial-expression", "- audio-visual",
        "size_categories:", f"- {size}",
        "configs:", "- config_name: default", "  data_files:",
        *(f"  - split: {hf}\n    path: {SPLIT_VIEW_DIR}/{hf}.parquet" for hf in HF_SPLITS.values()),
        "---", ""]
    lines = [
        *front,
        f"# Dataset card: {report['dataset']}", "",
        f"Built by dsbuilder {report['dsbuilder_version']} (manifest schema "
        f"{report['schema_version']}). Tables: `manifests/*.parquet`; the training view is "
        "`manifests/clips.parquet`; the audit report is `report/report.html`.", "",
        "## What is in it", "",
        f"- {c['clips']} clips ({c['clip_seconds']:.1f} s) of {c['people']} "
        f"{'person' if c['people'] == 1 else 'people'}, aligned face "
        f"crops (mp4) with their audio (16 kHz wav); {c['speaking_clips']} clips where the person "
        "speaks.",
        "- People: " + ", ".join(f"{p['person_id']} ({p['clips']} clips)"
                                  for p in report["people"]) + ".",
        "- Labels are *soft* and machine-made: FER probabilities of a FER2013 teacher per frame "
        "and per clip, valence/arousal derived from them, geometric action-unit proxies from "
        "landmarks, FACS emotion scores, and HMM segments of the AU sequences. No label was "
        "checked by a person.", "",
        "## Where it comes from", "",
        "- Sources by licence as declared by the sites: "
        + ", ".join(f"{k} ({v})" for k, v in sorted(licences.items())) + ".",
        "- Every clip row names its source page and licence; `report/report.json` has each "
        "source's URL, uploader, fetch time and sha256, and each stage's parameters.",
        "- The rights in the pictures and voices of the people shown are not settled by a site's "
        "licence. Check them before redistributing.", "",
        "## Splits", "",
        f"Grouped by `{sp['group_by']}`, seed {sp['seed']}: no video"
        + (" and no person" if sp["group_by"] == "identity_and_video" else "")
        + " is in two splits."
        + (f" {len(sp['pinned'])} video(s) are held in their split by the recipe; the others are "
           "placed by a hash of their group." if sp["pinned"] else ""), "",
        "| split | target | clips | seconds |", "|---|---:|---:|---:|",
        *(f"| {s} | {sp['ratios'][s]:.2f} | {v['clips']} | {v['seconds']:.1f} |"
          for s, v in sp["realised"].items()), "",
        "## Uses", "",
        "- Research on facial expression and voice, trained on soft labels: FER students, "
        "speech-emotion students distilled from the face (as EmoVoxCeleb), HMMs of expression "
        "dynamics; evaluating such models on these people.",
        "- Out of scope: identifying, tracking or profiling the people shown; judging anyone's "
        "feelings, honesty, health or suitability from their face or voice (an expression is not a "
        "felt emotion); any use the sources' licences or the people's rights do not allow.", "",
        "## Personal and sensitive information", "",
        "- Every clip shows a real, named person's face and voice: biometric data (GDPR art. 9 and "
        "similar laws). They were chosen by the curator from public web video; they did not "
        "consent to this dataset. Bystanders' faces are never stored (non-target tracks keep no "
        "pixels).",
        "- Takedown: `dsbuilder takedown RECIPE <source_id|URL> --reason ...` deletes a source's "
        "media, clips and everything derived from it, and the next run drops it; the curator of "
        "this copy is who to ask.", "",
        "## Collection process", "",
        "- Sources listed in a recipe (URLs, playlists, searches, files), fetched with provenance "
        "under a licence allow-list and robots.txt; faces matched to each person's reference photos "
        "(dlib ResNet embeddings, fitted thresholds); shots by PySceneDetect; faces by MediaPipe "
        "BlazeFace; speech by VAD and the Light-ASD active-speaker model; labels by the teacher.", "",
        "## Bias and limitations", "",
        "- The FER teacher is a mini-Xception trained on FER2013 (about 66 % accuracy there); its "
        "labels carry its biases and errors (FER2013 is web faces, mostly adults; accuracy differs "
        "across ages, skin tones and lighting).",
        "- The face detector and the recogniser miss or confuse faces more often in profile, small, "
        "dark or occluded; the recipe's people and sources decide who is represented at all.",
        "- Geometric AUs move with speech; they are proxies, not a trained AU detector.",
        f"- {c['rejections']} items were dropped; the report lists why, by stage and reason.", ""]
    return "\n".join(lines)


#: Our split names -> Hugging Face's (the per-split views under manifests/splits/).
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}
SPLIT_VIEW_DIR = "manifests/splits"


def _hf_licence(code: str) -> str:
    """A licence code as a Hugging Face ``license:`` id (``other`` when it has none)."""
    k = code.lower().replace("_", "-")
    if k.startswith("cc0"):
        return "cc0-1.0"
    for prefix, hf in (("cc-by-nc-sa", "cc-by-nc-sa-4.0"), ("cc-by-nc", "cc-by-nc-4.0"),
                       ("cc-by-sa", "cc-by-sa-4.0"), ("cc-by", "cc-by-4.0")):
        if k.startswith(prefix):
            return hf
    return {"mit": "mit", "unknown": "unknown"}.get(k, "other")


def write_split_views(ws: Workspace) -> list[Path]:
    """``manifests/splits/{train,validation,test}.parquet``: the clips of each split, so that
    ``datasets.load_dataset("parquet", data_dir=".../manifests/splits")`` (or the card's configs)
    gives Hugging Face splits. An empty split is a schema with no row group."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    clips = read_table(ws, "clips")
    out = []
    for ours, hf in HF_SPLITS.items():
        part = clips.filter(pc.equal(clips["split"], ours)) if clips.num_rows else clips
        target = ws.root / SPLIT_VIEW_DIR / f"{hf}.parquet"
        with atomic_path(target) as tmp:
            if part.num_rows:
                pq.write_table(part, tmp, compression="zstd")
            else:
                pq.ParquetWriter(tmp, clips.schema, compression="zstd").close()
        out.append(target)
    return out


# --- Croissant -----------------------------------------------------------------------------------

#: The JSON-LD context of Croissant 1.0 (mlcommons.org/croissant).
CROISSANT_CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs",
    "column": "cr:column", "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"}, "extract": "cr:extract",
    "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key",
    "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex",
    "repeated": "cr:repeated", "replace": "cr:replace", "sc": "https://schema.org/",
    "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField",
    "transform": "cr:transform", "samplingRate": "cr:samplingRate",
    "equivalentProperty": "cr:equivalentProperty", "rai": "http://mlcommons.org/croissant/RAI/"}


def _croissant_type(pa_type) -> tuple[str, bool]:
    """(Croissant dataType, repeated) of a pyarrow column type."""
    import pyarrow as pa

    repeated = pa.types.is_list(pa_type) or pa.types.is_fixed_size_list(pa_type)
    t = pa_type.value_type if repeated else pa_type
    if pa.types.is_boolean(t):
        return "sc:Boolean", repeated
    if pa.types.is_integer(t):
        return "sc:Integer", repeated
    if pa.types.is_floating(t):
        return "sc:Float", repeated
    return "sc:Text", repeated


def croissant(report: Mapping[str, Any], clips_file: Mapping[str, Any]) -> dict[str, Any]:
    """Croissant 1.0 metadata of the training view: the dataset, ``clips.parquet`` (``clips_file``:
    its ``path`` relative to the workspace, ``sha256`` and ``bytes``) and its columns."""
    from dsbuilder.manifest.schema import schemas

    schema, id_col = schemas()["clips"]
    licences = sorted({s["licence"] or "unknown" for s in report["sources"] if s["status"] == "ok"})
    fields = []
    for f in schema:
        data_type, repeated = _croissant_type(f.type)
        field = {"@type": "cr:Field", "@id": f"clips/{f.name}", "name": f.name,
                 "dataType": data_type,
                 "source": {"fileObject": {"@id": "clips.parquet"}, "extract": {"column": f.name}}}
        if repeated:
            field["repeated"] = True
        fields.append(field)
    c = report["counts"]
    fetched = sorted(str(s["fetched_at"])[:10] for s in report["sources"]
                     if s["status"] == "ok" and s.get("fetched_at"))
    # paths are relative to this file's folder (report/), as Croissant readers resolve them
    up = "../"
    return {
        "@context": CROISSANT_CONTEXT, "@type": "sc:Dataset", "name": report["dataset"],
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "citeAs": (f"@misc{{{re.sub(r'[^A-Za-z0-9]+', '_', report['dataset'])}, title="
                   f"{{{report['dataset']}}}, note={{built with dsbuilder "
                   f"{report['dsbuilder_version']}}}}}"),
        "datePublished": fetched[-1] if fetched else None,
        "rai:dataCollection": "Public web video and photos named in a curator's recipe, fetched "
                              "with provenance (report/report.json); faces of the recipe's people "
                              "only, matched to reference photos.",
        "rai:personalSensitiveInformation": "Faces and voices of real, named people (biometric "
                                            "data), who did not consent; takedown by `dsbuilder "
                                            "takedown`.",
        "rai:dataBiases": "Labels come from a FER2013-trained teacher and inherit its biases; the "
                          "recipe decides who is represented.",
        "rai:dataUseCases": "Research on facial expression and voice; not identification, "
                            "profiling or judging people.",
        "description": (f"{c['clips']} face clips ({c['clip_seconds']:.1f} s) of {c['people']} "
                        "people with audio and machine-made emotion labels, built by dsbuilder "
                        f"{report['dsbuilder_version']} (see report/report.json for provenance)."),
        "license": licences, "version": str(report["schema_version"]),
        "distribution": [{"@type": "cr:FileObject", "@id": "clips.parquet", "name": "clips.parquet",
                          "contentUrl": up + clips_file["path"],
                          "encodingFormat": "application/x-parquet",
                          "contentSize": f"{clips_file['bytes']} B",
                          "sha256": clips_file["sha256"]},
                         {"@type": "cr:FileSet", "@id": "clip-videos", "name": "clip-videos",
                          "description": "Aligned face clips; each clips row names its file "
                                         "(video_path) and the tracks table its sha256.",
                          "includes": up + "clips/*.mp4",
                          "encodingFormat": "video/mp4"},
                         {"@type": "cr:FileSet", "@id": "clip-audio", "name": "clip-audio",
                          "description": "16 kHz mono audio of each clip (audio_path).",
                          "includes": up + "clips/*.wav", "encodingFormat": "audio/wav"}],
        "recordSet": [{"@type": "cr:RecordSet", "@id": "clips", "name": "clips",
                       "description": "One training example per row (manifests/clips.md).",
                       "key": {"@id": f"clips/{id_col}"}, "field": fields}],
    }


# --- the stage -----------------------------------------------------------------------------------

#: Tables the report reads row by row, and tables it only counts (they can be large).
READ_TABLES = ("sources", "people", "tracks", "speech", "label_clips", "rejections")
COUNTED_TABLES = ("shots", "labels", "segments")


def table_rows(ws: Workspace, tables: dict[str, list[dict[str, Any]]], sizes: dict[str, int],
               clips: list[dict[str, Any]]) -> dict[str, int]:
    """Rows of every manifest table as this run leaves them: ``manifest validate`` compares them
    with the tables (a row deleted or added afterwards, by hand or by a stage rerun alone)."""
    from dsbuilder.manifest.schema import schemas

    rows = {}
    for name in schemas():
        if name == "clips":
            rows[name] = len(clips)
        elif name in tables:
            rows[name] = len(tables[name])
        elif name in sizes:
            rows[name] = sizes[name]
        else:
            rows[name] = count_rows(ws, name)
    return rows


def read_labels(ws: Workspace) -> list[dict[str, Any]]:
    """The per-frame label columns the clips are cut and labelled from."""
    table = read_table(ws, "labels")
    if table.num_rows == 0:
        return []
    return table.select([c for c in LABEL_COLUMNS]).to_pylist()


def read_inputs(ws: Workspace) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """The rows of :data:`READ_TABLES` and the row counts of :data:`COUNTED_TABLES`."""
    return ({n: read_table(ws, n).to_pylist() for n in READ_TABLES},
            {n: count_rows(ws, n) for n in COUNTED_TABLES})


def run(recipe: Recipe, ws: Workspace, *, force: bool = False, progress: bool = True) -> StageResult:
    """Write ``clips`` (with splits) and the report files. ``force`` changes nothing: the stage is
    a pure function of the manifests and takes well under a second, so it is never cached."""
    params = recipe.stage_params(STAGE)
    result = StageResult(stage=STAGE, params_hash=params_hash(params))
    tables, sizes = read_inputs(ws)
    at = first_time(ws, STAGE, "clips", result.params_hash)
    clips, too_short = clip_rows(tables["tracks"], tables["label_clips"], tables["speech"],
                                 tables["sources"], read_labels(ws), params, at)
    # the curator's decisions: stages.report.review, else what `dsbuilder review` wrote
    default_review = ws.root / "review.csv"
    review = read_review(params["review"] or (str(default_review) if default_review.is_file()
                                              else None))
    clips, result.rejections, unknown = apply_review(clips, review, result.params_hash, ws)
    result.rejections = too_short + result.rejections
    if unknown:
        log.warning("report: %d reviewed clip id(s) are not clips: %s", len(unknown),
                    ", ".join(unknown[:5]))
    if not clips:
        log.warning("report: no labelled clip yet; run the stages before it (dsbuilder run RECIPE)")
    pins = source_pins(tables["sources"], params.get("split_pins") or {})
    assign_splits(clips, _ratios(params), params["group_by"], int(params["split_seed"]), pins)
    leaks = check_leakage(clips, params["group_by"])
    if leaks:  # cannot happen by construction; checked anyway, as a trainer relies on it
        raise LeakageError("; ".join(leaks[:5]), "report this as a bug in dsbuilder")
    tables["rejections"] = [r for r in tables["rejections"] if r["stage"] != STAGE] + [
        r.row() for r in result.rejections]  # this run's decisions, not the last run's
    report = build_report(recipe, tables, sizes, clips, params, int(params["examples_per_reason"]),
                          pins)
    report["table_rows"] = table_rows(ws, tables, sizes, clips)
    report["review"] = {"file": params["review"], "accepted": sum(c["review"] == "accepted"
                                                                  for c in clips),
                        "rejected": len(result.rejections), "not_clips": unknown}
    for warning in report["splits"]["warnings"]:
        log.warning("report: %s", warning)
    if report["speakers"]["note"]:
        log.warning("report: %s", report["speakers"]["note"])
    if report["people_lost"]:
        log.warning("report: no kept reference face for %s", ", ".join(report["people_lost"]))
    out = ws.root / REPORT_DIR
    atomic_write_bytes(out / "report.json",
                       (json.dumps(report, indent=1, sort_keys=False) + "\n").encode())
    from dsbuilder.report_figures import make_figures

    atomic_write_bytes(out / "report.html",
                       render_html(report, make_figures(ws, report, clips, out)).encode())
    atomic_write_bytes(out / "dataset_card.md", dataset_card(report).encode())
    result.rows = {"clips": clips}
    result.computed = 1
    publish(ws, result)
    write_split_views(ws)
    clips_path = table_path(ws, "clips")
    atomic_write_bytes(out / "croissant.json", (json.dumps(croissant(report, {
        "path": clips_path.relative_to(ws.root).as_posix(), "sha256": sha256_file(clips_path),
        "bytes": clips_path.stat().st_size}), indent=1) + "\n").encode())
    log.info("report: %d clips (%s); report in %s", len(clips),
             ", ".join(f"{s} {sum(1 for c in clips if c['split'] == s)}" for s in SPLITS), out)
    return result
