"""Manifest validation (``dsbuilder manifest validate``), in the spirit of lhotse's ``qa.py``.

Checks each table's schema and schema_version, id uniqueness, required values, referential integrity
between tables, rejection reason codes, shot geometry, and that every referenced file exists with the
recorded sha256. Every message names the table and the item id.
"""

from __future__ import annotations

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
        rows.extend(pq.read_table(f).to_pylist())
    return rows


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
            path = ws.abspath(row["local_path"]) if row.get("local_path") else None
            if path is not None and not path.is_file():
                problems.append(f"sources {sid}: file missing: {row['local_path']}")
            elif path is not None and check_hashes and row.get("sha256") \
                    and sha256_file(path) != row["sha256"]:
                problems.append(f"sources {sid}: sha256 of {row['local_path']} does not match")
            if row.get("info_json_path") and not ws.abspath(row["info_json_path"]).is_file():
                problems.append(f"sources {sid}: info.json missing: {row['info_json_path']}")
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

    return problems, {t: len(r) for t, r in tables.items()}
