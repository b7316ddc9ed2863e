"""Read action-unit CSVs from OpenFace and py-feat into one typed table, and align them to our frames.

* OpenFace ``FeatureExtraction`` CSVs: pre-2.0 files start every column name after ``frame`` with a space
  (`` timestamp``, `` AU01_r``); names are stripped. ``AUxx_r`` are intensities on OpenFace's 0-5 scale,
  ``AUxx_c`` presences (0/1). OpenFace numbers frames from 1; :class:`AuTable` stores 0-based indices
  (``frame - 1``) so they match our decoded frame indices, and keeps the file's own numbers in
  ``source_frame``.
* py-feat CSVs (a saved ``Fex``): ``AUxx`` columns are detector probabilities/intensities in 0-1, seven
  emotion columns (``anger disgust fear happiness sadness surprise neutral``), ``frame`` 0-based.

Only the standard library ``csv`` module and numpy are used (no pandas at run time).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

PYFEAT_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")

_AU_R = re.compile(r"AU(\d+)_r", re.IGNORECASE)
_AU_C = re.compile(r"AU(\d+)_c", re.IGNORECASE)
_AU = re.compile(r"AU(\d+)", re.IGNORECASE)


def _au(n: str) -> str:
    return f"AU{int(n):02d}"


@dataclass
class AuTable:
    """Per-frame action units from one tool. Arrays have one row per CSV row, in file order.

    ``values`` are intensities (columns ``au_names``, e.g. ``"AU01"``) on a 0..``scale`` scale (5 for
    OpenFace, 1 for py-feat); ``presence`` are OpenFace's 0/1 ``_c`` columns (``presence_names``), empty
    for py-feat; ``emotions`` are py-feat's emotion columns, empty for OpenFace. ``time`` is None when
    the file has no timestamps. ``success`` / ``confidence`` are None when absent.
    """

    tool: str
    frame: np.ndarray  # int64, 0-based
    au_names: tuple[str, ...]
    values: np.ndarray  # (n, k) float64
    scale: float
    time: np.ndarray | None = None  # float64 seconds
    source_frame: np.ndarray | None = None  # the file's own frame numbers
    presence_names: tuple[str, ...] = ()
    presence: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    emotion_names: tuple[str, ...] = ()
    emotions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    success: np.ndarray | None = None  # bool
    confidence: np.ndarray | None = None  # float64

    def __len__(self) -> int:
        return len(self.frame)

    def column(self, name: str) -> np.ndarray:
        """One AU intensity (``"AU12"``), presence (``"AU12_c"``) or emotion column by name."""
        if name in self.au_names:
            return self.values[:, self.au_names.index(name)]
        if name.endswith("_c") and name[:-2] in self.presence_names:
            return self.presence[:, self.presence_names.index(name[:-2])]
        if name in self.emotion_names:
            return self.emotions[:, self.emotion_names.index(name)]
        raise KeyError(f"{name!r} is not a column of this {self.tool} table")


def _read(path: str | Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty CSV file") from None
        rows = [r for r in reader if r and any(c.strip() for c in r)]
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise ValueError(f"{path}: row {i + 2} has {len(r)} fields, the header {len(header)}")
    return header, rows


def _floats(rows: list[list[str]], idx: list[int]) -> np.ndarray:
    out = np.full((len(rows), len(idx)), np.nan)
    for i, r in enumerate(rows):
        for j, k in enumerate(idx):
            s = r[k].strip()
            if s and s.lower() not in ("nan", "na", "none"):
                out[i, j] = float(s)
    return out


def read_openface_csv(path: str | Path) -> AuTable:
    """An OpenFace ``FeatureExtraction`` CSV (pre-2.0 or 2.x) -> :class:`AuTable`."""
    header, rows = _read(path)
    pos = {h: i for i, h in enumerate(header)}
    if "frame" not in pos:
        raise ValueError(f"{path}: no 'frame' column; not an OpenFace CSV")
    r_cols = [(h, _AU_R.fullmatch(h)) for h in header]
    r_cols = [(h, m) for h, m in r_cols if m]
    c_cols = [(h, m) for h, m in ((h, _AU_C.fullmatch(h)) for h in header) if m]
    if not r_cols and not c_cols:
        raise ValueError(f"{path}: no AUxx_r or AUxx_c columns; not an OpenFace AU file")
    src = _floats(rows, [pos["frame"]])[:, 0].astype(np.int64)
    time = _floats(rows, [pos["timestamp"]])[:, 0] if "timestamp" in pos else None
    success = (_floats(rows, [pos["success"]])[:, 0] > 0.5) if "success" in pos else None
    conf = _floats(rows, [pos["confidence"]])[:, 0] if "confidence" in pos else None
    return AuTable(
        tool="openface", frame=src - 1, source_frame=src, time=time,
        au_names=tuple(_au(m.group(1)) for _, m in r_cols),
        values=_floats(rows, [pos[h] for h, _ in r_cols]), scale=5.0,
        presence_names=tuple(_au(m.group(1)) for _, m in c_cols),
        presence=_floats(rows, [pos[h] for h, _ in c_cols]),
        success=success, confidence=conf)


def read_pyfeat_csv(path: str | Path) -> AuTable:
    """A py-feat detector CSV (``Fex.to_csv``) -> :class:`AuTable` (AUs 0-1, emotions, frame)."""
    header, rows = _read(path)
    pos = {h: i for i, h in enumerate(header)}
    au_cols = [(h, m) for h, m in ((h, _AU.fullmatch(h)) for h in header) if m]
    if not au_cols:
        raise ValueError(f"{path}: no AUxx columns; not a py-feat file")
    emo = [e for e in PYFEAT_EMOTIONS if e in pos]
    if "frame" in pos:
        frame = _floats(rows, [pos["frame"]])[:, 0].astype(np.int64)
    else:
        frame = np.arange(len(rows), dtype=np.int64)
    time = None
    for tcol in ("approx_time", "timestamp", "time"):
        if tcol in pos:
            time = _floats(rows, [pos[tcol]])[:, 0]
            break
    conf = _floats(rows, [pos["FaceScore"]])[:, 0] if "FaceScore" in pos else None
    return AuTable(
        tool="pyfeat", frame=frame, source_frame=frame.copy(), time=time,
        au_names=tuple(_au(m.group(1)) for _, m in au_cols),
        values=_floats(rows, [pos[h] for h, _ in au_cols]), scale=1.0,
        emotion_names=tuple(emo), emotions=_floats(rows, [pos[e] for e in emo]),
        confidence=conf)


def read_au_csv(path: str | Path) -> AuTable:
    """An OpenFace or a py-feat CSV, told apart by its header (``AUxx_r``/``AUxx_c`` columns:
    OpenFace; ``AUxx`` columns: py-feat). Raises ``ValueError`` naming the file otherwise."""
    header, _ = _read(path)
    if any(_AU_R.fullmatch(h) or _AU_C.fullmatch(h) for h in header):
        return read_openface_csv(path)
    if any(_AU.fullmatch(h) for h in header):
        return read_pyfeat_csv(path)
    raise ValueError(f"{path}: neither an OpenFace (AUxx_r/AUxx_c) nor a py-feat (AUxx) CSV")


def align_to_frames(table: AuTable, frame_times: np.ndarray | None = None,
                    frame_indices: np.ndarray | None = None, fps: float | None = None) -> AuTable:
    """Rows of ``table`` matched to our frames: one output row per requested frame, NaN where the
    table has no row within half a frame (and where OpenFace reports ``success == 0``).

    With ``frame_times`` the match is by time (the table's ``time``, else ``frame / fps``); with
    ``frame_indices`` by frame number (times derived as ``index / fps`` when ``fps`` is given). ``fps``
    sets the half-frame tolerance for time matching and is required for it.
    """
    if (frame_times is None) == (frame_indices is None):
        raise ValueError("pass exactly one of frame_times or frame_indices")
    n = len(frame_times if frame_times is not None else frame_indices)
    ok = np.ones(len(table), bool) if table.success is None else table.success.copy()
    if frame_times is not None:
        if not fps or fps <= 0:
            raise ValueError("time alignment needs fps > 0 (the tolerance is half a frame)")
        query = np.asarray(frame_times, dtype=np.float64)
        keys = table.time if table.time is not None else table.frame / fps
        tol = 0.5 / fps + 1e-9
        out_frame = np.round(query * fps).astype(np.int64)
        out_time = query
    else:
        query = np.asarray(frame_indices, dtype=np.float64)
        keys = table.frame.astype(np.float64)
        tol = 0.5
        out_frame = np.asarray(frame_indices, dtype=np.int64)
        out_time = out_frame / fps if fps else None
    keys = np.where(ok, keys, np.nan)
    valid = np.flatnonzero(np.isfinite(keys))
    rows = np.full(n, -1)
    if len(valid) and n:
        order = valid[np.argsort(keys[valid], kind="stable")]
        sk = keys[order]
        j = np.clip(np.searchsorted(sk, query), 0, len(sk) - 1)
        jm = np.clip(j - 1, 0, len(sk) - 1)
        best = np.where(np.abs(sk[jm] - query) <= np.abs(sk[j] - query), jm, j)
        hit = np.abs(sk[best] - query) <= tol
        rows = np.where(hit, order[best], -1)

    def take(a: np.ndarray | None, fill=np.nan):
        if a is None:
            return None
        if a.ndim == 2 and a.shape[1] == 0:
            return np.zeros((n, 0))
        src = a.astype(np.float64) if fill is np.nan else a
        out = np.full((n,) + a.shape[1:], fill, dtype=src.dtype)
        out[rows >= 0] = src[rows[rows >= 0]]
        return out

    return replace(
        table, frame=out_frame, time=out_time, source_frame=take(table.source_frame),
        values=take(table.values), presence=take(table.presence), emotions=take(table.emotions),
        success=rows >= 0, confidence=take(table.confidence))
