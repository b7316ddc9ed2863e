"""Manifest validation (``dsbuilder manifest validate``), in the spirit of lhotse's ``qa.py``.

Checks each table's schema and schema_version, id uniqueness, required values, referential integrity
between tables, rejection reason codes, shot geometry, and that every referenced file exists with the
recorded sha256. Every message names the table and the item id.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from dsbuilder.manifest.io import table_path
from dsbuilder.manifest.schema import PARTITIONED, REASONS, REFERENCES, SCHEMA_VERSION, schemas
from dsbuilder.workspace import Workspace, sha256_file


def _load(ws: Workspace, table: str, problems: list[str]) -> list[dict[str, Any]] | None:
    import pyarrow.parquet as pq

    expected, _ = schemas()[table]
    path = table_path(ws, table)
    files = (sorted(path.glob("*.parquet")) if path.is_dir() else []) if table in PARTITIONED \
        else ([path] if path.exists() else [])
    if not files:
        return None
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            got = pq.read_schema(f)
        except Exception as exc:  # a corrupt file is a finding, not a crash
            problems.append(f"{table}: cannot read {f.name}: {exc}")
            continue
        plain = [(fld.name, fld.type) for fld in got]
        want = [(fld.name, fld.type) for fld in expected]
        if plain != want:
            missing = sorted(set(n for n, _ in want) - set(n for n, _ in plain))
            extra = sorted(set(n for n, _ in plain) - set(n for n, _ in want))
            problems.append(f"{table}: {f.name} schema differs from dsbuilder.manifest.schema "
                            f"(missing {missing}, unexpected {extra}, or types/order differ)")
            continue
        try:
            rows.extend(pq.read_table(f).to_pylist())
        except Exception as exc:  # a damaged page: the schema reads, the data does not
            problems.append(f"{table}: cannot read the rows of {f.name} ({type(exc).__name__}: "
                            f"{exc}); the file is damaged: rerun the stage that writes it")
    return rows


def _file(ws: Workspace, rel: str | None, what: str, problems: list[str], sha256: str | None = None,
          check_hashes: bool = True) -> None:
    """A file a manifest names: inside the workspace, present, with its recorded sha256."""
    from dsbuilder.errors import WorkspaceError

    if not rel:
        return
    try:
        path = ws.abspath(rel)
    except WorkspaceError:
        problems.append(f"{what}: path {rel!r} leads out of the workspace")
        return
    if not path.is_file():
        problems.append(f"{what}: file missing: {rel}")
    elif check_hashes and sha256 and sha256_file(path) != sha256:
        problems.append(f"{what}: sha256 of {rel} does not match the manifest")


def validate(ws: Workspace, check_hashes: bool = True) -> tuple[list[str], dict[str, int]]:
    """Return (problems, row counts per table). No problems means the manifests are valid."""
    problems: list[str] = []
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in schemas():
        rows = _load(ws, table, problems)
        if rows is not None:
            tables[table] = rows
    if "sources" not in tables:
        problems.append("sources: table is missing (run `dsbuilder scrape RECIPE` first)")

    ids: dict[str, set[str]] = {}
    for table, rows in tables.items():
        schema, id_col = schemas()[table]
        seen: set[str] = set()
        for row in rows:
            rid = row[id_col]
            if row["schema_version"] != SCHEMA_VERSION:
                problems.append(f"{table} {rid}: schema_version {row['schema_version']} "
                                f"!= {SCHEMA_VERSION}")
            if rid in seen:
                problems.append(f"{table} {rid}: duplicate id")
            seen.add(rid)
            for fld in schema:
                if not fld.nullable and row.get(fld.name) is None:
                    problems.append(f"{table} {rid}: required column {fld.name} is null")
        ids[table] = seen

    for (table, col), ref in REFERENCES.items():
        for row in tables.get(table, []):
            value = row.get(col)
            if value is not None and value not in ids.get(ref, set()):
                problems.append(f"{table} {row[schemas()[table][1]]}: {col}={value} "
                                f"not found in {ref}")

    for row in tables.get("rejections", []):
        allowed = REASONS.get(row["stage"])
        if allowed is None:
            problems.append(f"rejections {row['rejection_id']}: unknown stage {row['stage']!r}")
        elif row["reason"] not in allowed:
            problems.append(f"rejections {row['rejection_id']}: reason {row['reason']!r} is not "
                            f"a {row['stage']} reason code ({', '.join(allowed)})")

    sources = {r["source_id"]: r for r in tables.get("sources", [])}
    for sid, row in sources.items():
        if row["status"] == "ok":
            if row["kind"] not in ("photo", "video"):
                problems.append(f"sources {sid}: kind {row['kind']!r} is not photo or video")
            for col in ("local_path", "sha256"):
                if not row.get(col):
                    problems.append(f"sources {sid}: status ok but {col} is empty")
            _file(ws, row.get("local_path"), f"sources {sid}", problems, row.get("sha256"),
                  check_hashes)
            _file(ws, row.get("info_json_path"), f"sources {sid} info.json", problems)
        elif row["status"] != "rejected":
            problems.append(f"sources {sid}: status {row['status']!r} is not ok or rejected")

    by_video: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in tables.get("shots", []):
        sid = row["shot_id"]
        if not (0 <= row["start_frame"] < row["end_frame"]):
            problems.append(f"shots {sid}: start_frame {row['start_frame']} must be < end_frame "
                            f"{row['end_frame']}")
        if row["n_frames"] != row["end_frame"] - row["start_frame"]:
            problems.append(f"shots {sid}: n_frames != end_frame - start_frame")
        if not row["start_s"] < row["end_s"]:
            problems.append(f"shots {sid}: start_s {row['start_s']} must be < end_s {row['end_s']}")
        src = sources.get(row["source_id"])
        if src is not None and (src["kind"] != "video" or src["status"] != "ok"):
            problems.append(f"shots {sid}: source {row['source_id']} is not a kept video")
        by_video[row["source_id"]].append(row)
    for vid, shots in by_video.items():
        shots.sort(key=lambda r: r["start_frame"])
        for a, b in zip(shots, shots[1:]):
            if b["start_frame"] < a["end_frame"]:
                problems.append(f"shots {b['shot_id']}: overlaps {a['shot_id']}")

    _check_tracks_and_clips(ws, tables, problems, check_hashes)
    # the models the segments were decoded with (one file per person)
    for path in sorted({r["model_path"] for r in tables.get("segments", []) if r.get("model_path")}):
        _file(ws, path, f"segments model {path}", problems)
    _check_row_counts(ws, tables, problems)
    return problems, {t: len(r) for t, r in tables.items()}


def _check_row_counts(ws: Workspace, tables: dict[str, list[dict[str, Any]]],
                      problems: list[str]) -> None:
    """Every table has the rows the last run's report counted (``report.json`` ``table_rows``)."""
    path = ws.root / "report" / "report.json"
    try:
        counted = json.loads(path.read_text(encoding="utf-8")).get("table_rows") or {}
    except (OSError, ValueError):
        return  # no report yet (or one from before it counted rows): nothing to compare with
    for table, n in sorted(counted.items()):
        if table in tables and len(tables[table]) != n:
            problems.append(f"{table}: {len(tables[table])} rows, but the last run's report counted "
                            f"{n}: a row was deleted or added after it (or a stage was rerun "
                            "alone: rerun `dsbuilder run RECIPE`)")


def _check_tracks_and_clips(ws: Workspace, tables: dict[str, list[dict[str, Any]]],
                            problems: list[str], check_hashes: bool) -> None:
    """The face clips and wavs (present, inside, hashed), and the training view: every clip's
    files, frame range and labels agree with its track and its frames' labels; the clips of a
    labelled track tile it (a deleted row shows as a gap); splits are train/val/test and a split
    group never spans two splits."""
    import numpy as np

    tracks = {t["track_id"]: t for t in tables.get("tracks", [])}
    for tid, t in tracks.items():
        if t["kept"]:
            _file(ws, t.get("crop_path"), f"tracks {tid} crop", problems, t.get("crop_sha256"),
                  check_hashes)
            _file(ws, t.get("audio_path"), f"tracks {tid} audio", problems, t.get("audio_sha256"),
                  check_hashes)
    clips = tables.get("clips")
    if clips is None:
        return
    probs_by_frame: dict[tuple[str, int], list[float]] = {}
    for r in tables.get("labels", []):
        if r.get("fer_probs") is not None:
            probs_by_frame[(r["track_id"], r["frame_index"])] = r["fer_probs"]
    by_track: dict[str, list[dict[str, Any]]] = defaultdict(list)
    group_split: dict[str, str] = {}
    for c in clips:
        cid, t = c["clip_id"], tracks.get(c["track_id"])
        by_track[c["track_id"]].append(c)
        if t is None or not t["kept"]:
            problems.append(f"clips {cid}: track {c['track_id']} is not a kept track")
            continue
        if c["video_path"] != t["crop_path"] or c["audio_path"] != t["audio_path"]:
            problems.append(f"clips {cid}: files differ from its track's crop and wav")
        if c["video_sha256"] != t["crop_sha256"] or c["audio_sha256"] != t["audio_sha256"]:
            problems.append(f"clips {cid}: file hashes differ from its track's")
        _file(ws, c["video_path"], f"clips {cid} video", problems, c["video_sha256"], check_hashes)
        _file(ws, c["audio_path"], f"clips {cid} audio", problems, c["audio_sha256"], check_hashes)
        if not (t["start_frame"] <= c["start_frame"] < c["end_frame"] <= t["end_frame"]) or \
                c["crop_start_frame"] != c["start_frame"] - t["start_frame"] or \
                c["crop_end_frame"] != c["end_frame"] - t["start_frame"]:
            problems.append(f"clips {cid}: frame range outside its track or inconsistent")
        if c["split"] not in ("train", "val", "test"):
            problems.append(f"clips {cid}: split {c['split']!r} is not train, val or test")
        if group_split.setdefault(c["split_group"], c["split"]) != c["split"]:
            problems.append(f"clips {cid}: split group {c['split_group']} is in two splits")
        if c.get("probs") is not None:
            p = np.asarray(c["probs"], np.float64)
            if c["argmax"] is not None and c["argmax"] != _class(int(np.argmax(p))):
                problems.append(f"clips {cid}: argmax {c['argmax']!r} is not the largest of probs")
            frames = [probs_by_frame.get((c["track_id"], k))
                      for k in range(c["start_frame"], c["end_frame"])]
            frames = [f for f in frames if f is not None]
            if frames and np.abs(np.mean(frames, axis=0) - p).max() > 1e-3:
                problems.append(f"clips {cid}: probs are not the mean of its frames' labels")
    rejected = {r["item_id"] for r in tables.get("rejections", [])
                if r["stage"] == "report" and r["reason"] == "curator_rejected"}
    too_short = {r["item_id"] for r in tables.get("rejections", [])
                 if r["stage"] == "report" and r["reason"] == "too_short"}
    for lc in tables.get("label_clips", []):
        tid = lc["track_id"]
        t = tracks.get(tid)
        if lc["kept"] and t is not None and t["kept"] and t.get("crop_path") \
                and tid not in by_track and tid not in too_short \
                and not any(r.startswith(f"{tid}-c") for r in rejected):
            problems.append(f"clips of track {tid}: the track is labelled and kept but has no "
                            "clip and no report rejection (a deleted row?)")
    for tid, mine in by_track.items():
        mine.sort(key=lambda c: c["clip_index"])
        present = [c["clip_index"] for c in mine]
        dropped = [int(r.rsplit("-c", 1)[1]) for r in rejected
                   if r.startswith(f"{tid}-c") and r.rsplit("-c", 1)[1].isdigit()]
        gaps = [(a, b) for a, b in zip(mine, mine[1:])
                if b["clip_index"] == a["clip_index"] + 1 and a["end_frame"] != b["start_frame"]]
        if sorted(present + dropped) != list(range(len(present) + len(dropped))) or gaps:
            problems.append(f"clips of track {tid}: a clip is missing (indices {present}, "
                            f"curator-rejected {sorted(dropped)}, do not tile the track)")
    _check_splits(ws, clips, problems)


def _check_splits(ws: Workspace, clips: list[dict[str, Any]], problems: list[str]) -> None:
    """Each clip's split is the one its group hashes to under the report's ratios and seed, or the
    one the recipe pinned a video of its group to (``splits.pinned`` of report.json)."""
    import json

    path = ws.root / "report" / "report.json"
    try:
        splits = json.loads(path.read_text())["splits"]
        ratios = [float(splits["ratios"][s]) for s in ("train", "val", "test")]
        seed = int(splits["seed"])
        pinned = dict(splits.get("pinned") or {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # no report yet: nothing to compare with
    from dsbuilder.stages.report import split_of

    group_pin = {c["split_group"]: pinned[c["source_id"]] for c in clips
                 if c["source_id"] in pinned}
    for c in clips:
        pin = group_pin.get(c["split_group"])
        want = pin or split_of(c["split_group"], ratios, seed)
        if c["split"] != want:
            why = "pinned by the recipe" if pin else f"ratios {ratios}, seed {seed}"
            problems.append(f"clips {c['clip_id']}: split {c['split']!r}, but its group "
                            f"{c['split_group']} belongs to {want!r} ({why})")


def _class(k: int) -> str:
    from dsbuilder.labels.fer import FER_CLASSES

    return FER_CLASSES[k]
