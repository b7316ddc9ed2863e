"""The manifest schemas: the single source of truth for every table's columns.

``manifests/*.md`` documents each table for readers and points here. Bump :data:`SCHEMA_VERSION` on any
change a reader would notice (a column added, removed, renamed or retyped).

Every table carries ``schema_version``, its own id, the ids of its parents, ``source_id``,
``stage_params_hash`` and ``dsbuilder_version``. Times are float64 seconds plus int64 frame indices.
"""

from __future__ import annotations

SCHEMA_VERSION = 1


def _common(pa):
    return [
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("stage_params_hash", pa.string(), nullable=False),
        pa.field("dsbuilder_version", pa.string(), nullable=False),
    ]


def schemas() -> dict:
    """Table name -> (pyarrow schema, id column). Built lazily so importing this is cheap."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    sources = pa.schema([
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # photo | video
        pa.field("status", pa.string(), nullable=False),  # ok | rejected (see rejections)
        pa.field("person_ids", pa.list_(pa.string()), nullable=False),
        pa.field("request_ids", pa.list_(pa.string()), nullable=False),  # parents: recipe entries
        pa.field("request", pa.string()),  # the recipe entry that first led here
        pa.field("url", pa.string()),
        pa.field("webpage_url", pa.string()),
        pa.field("extractor", pa.string()),
        pa.field("media_id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("uploader", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("licence", pa.string()),
        pa.field("licence_raw", pa.string()),
        pa.field("upload_date", pa.string()),  # YYYY-MM-DD as the site states it
        pa.field("fetched_at", ts),
        pa.field("sha256", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("duration", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("fps", pa.float64()),
        pa.field("n_frames", pa.int64()),
        pa.field("video_codec", pa.string()),
        pa.field("has_audio", pa.bool_()),
        pa.field("local_path", pa.string()),  # relative to the workspace root
        pa.field("info_json_path", pa.string()),  # yt-dlp's info.json, relative
        pa.field("tool_versions", pa.string()),  # JSON: yt-dlp, requests, PyAV ...
        *_common(pa),
    ])
    shots = pa.schema([
        pa.field("shot_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),  # parent: the video
        pa.field("shot_index", pa.int32(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),  # inclusive
        pa.field("end_frame", pa.int64(), nullable=False),  # exclusive
        pa.field("start_s", pa.float64(), nullable=False),  # presentation time of start_frame
        pa.field("end_s", pa.float64(), nullable=False),  # presentation time of end_frame (or EOF)
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("detector", pa.string(), nullable=False),
        *_common(pa),
    ])
    rejections = pa.schema([
        pa.field("rejection_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),  # parent: what was dropped
        pa.field("source_id", pa.string()),  # null when no content was ever obtained
        pa.field("person_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),  # a code, see manifests/rejections.md
        pa.field("detail", pa.string(), nullable=False),
        pa.field("at", ts, nullable=False),
        *_common(pa),
    ])
    return {
        "sources": (sources, "source_id"),
        "shots": (shots, "shot_id"),
        "rejections": (rejections, "rejection_id"),
    }


#: Tables written as a folder of parts (one file per stage), the others as one file.
PARTITIONED = {"rejections"}

#: Foreign keys checked by ``dsbuilder manifest validate``: (table, column) -> referenced table.
REFERENCES = {
    ("shots", "source_id"): "sources",
    ("rejections", "source_id"): "sources",
}

#: Rejection reason codes per stage. Validation rejects any other code.
REASONS = {
    "scrape": ("http_error", "timeout", "truncated", "too_large", "too_long", "licence_not_allowed",
               "robots_disallowed", "unsupported_media", "no_audio", "not_found", "duplicate",
               "extract_error", "too_small"),
    "shots": ("no_video_stream", "decode_error", "too_short"),
}
