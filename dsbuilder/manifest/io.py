"""Write and read manifest tables deterministically and atomically."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterable

from dsbuilder import __version__
from dsbuilder.manifest.schema import PARTITIONED, SCHEMA_VERSION, schemas
from dsbuilder.workspace import Workspace, atomic_path


def table_path(ws: Workspace, table: str, part: str | None = None) -> Path:
    if table in PARTITIONED:
        if part is None:
            return ws.manifests / table
        return ws.manifests / table / f"{part}.parquet"
    return ws.manifests / f"{table}.parquet"


def parse_time(value: Any) -> dt.datetime | None:
    """ISO-8601 strings from cache records -> aware datetimes (pyarrow stores them as UTC)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)


def write_table(ws: Workspace, table: str, rows: Iterable[dict[str, Any]], params_hash: str,
                part: str | None = None) -> Path:
    """Write ``rows`` (sorted by the table's id) with the common columns filled in.

    The same rows always give the same bytes: the order is fixed, no wall-clock metadata is written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, id_col = schemas()[table]
    ts_cols = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    full = []
    for row in rows:
        r = {"schema_version": SCHEMA_VERSION, "stage_params_hash": params_hash,
             "dsbuilder_version": __version__, **row}
        for c in ts_cols:
            r[c] = parse_time(r.get(c))
        unknown = set(r) - set(schema.names)
        if unknown:
            raise ValueError(f"{table}: columns not in the schema: {sorted(unknown)}")
        full.append(r)
    full.sort(key=lambda r: r[id_col])
    tbl = pa.Table.from_pylist(full, schema=schema)
    target = table_path(ws, table, part)
    # dictionary-encode the string columns only: float columns (landmarks, probabilities) gain nothing
    # from dictionaries and would cost memory while writing (measured: benchmarks/RESULTS.md, faces)
    strings = [f.name for f in schema if pa.types.is_string(f.type)]
    with atomic_path(target) as tmp:
        if tbl.num_rows:
            pq.write_table(tbl, tmp, compression="zstd", use_dictionary=strings)
        else:  # no row group at all: readers that refuse an empty row group (HF datasets) load it
            pq.ParquetWriter(tmp, schema, compression="zstd").close()
    return target


def read_table(ws: Workspace, table: str):
    """Read a table (all parts) as a pyarrow Table; an absent table reads as empty."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, _ = schemas()[table]
    path = table_path(ws, table)
    if table in PARTITIONED:
        parts = sorted(path.glob("*.parquet")) if path.is_dir() else []
        if not parts:
            return schema.empty_table()
        return pa.concat_tables([pq.read_table(p, schema=schema) for p in parts])
    if not path.exists():
        return schema.empty_table()
    return pq.read_table(path, schema=schema)


def count_rows(ws: Workspace, table: str) -> int:
    """Rows of a table (all parts) from the Parquet footers, without reading its columns."""
    import pyarrow.parquet as pq

    path = table_path(ws, table)
    if table in PARTITIONED:
        parts = sorted(path.glob("*.parquet")) if path.is_dir() else []
    else:
        parts = [path] if path.exists() else []
    return sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
