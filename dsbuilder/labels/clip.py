"""Labels of one clip: the FER teacher on every frame of an aligned face clip, and its action units
(geometric proxies from the landmarks, or imported OpenFace / py-feat AUs) with FACS emotion scores.

Used by the label stage (:mod:`dsbuilder.stages.label`), the trainers and ``dsbuilder hmm``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from dsbuilder.config import stage_defaults
from dsbuilder.errors import MediaError

log = logging.getLogger(__name__)


def crop_to_gray64(grey: np.ndarray, crop_fraction: float, size: int = 64) -> np.ndarray:
    """The central ``crop_fraction`` of an aligned grey face crop, resized to ``size``×``size``."""
    import cv2

    h, w = grey.shape[:2]
    ch, cw = max(1, int(round(h * crop_fraction))), max(1, int(round(w * crop_fraction)))
    top, left = (h - ch) // 2, (w - cw) // 2
    face = grey[top:top + ch, left:left + cw]
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)


def _batches(path: Path, crop_fraction: float, size: int, batch_size: int
             ) -> Iterator[tuple[list[int], np.ndarray]]:
    from dsbuilder.media import iter_frames

    idx: list[int] = []
    faces: list[np.ndarray] = []
    for index, _t, grey in iter_frames(path, fmt="gray"):
        idx.append(index)
        faces.append(crop_to_gray64(grey, crop_fraction, size))
        if len(faces) >= batch_size:
            yield idx, np.stack(faces)
            idx, faces = [], []
    if faces:
        yield idx, np.stack(faces)


def label_clip(path: str | Path, model, params: Mapping[str, Any] | None = None
               ) -> tuple[list[int], np.ndarray]:
    """Run the FER teacher on every frame of an aligned crop clip.

    Returns ``(crop frame indices, (N, n_classes) probabilities)``. Raises
    :class:`~dsbuilder.media.MediaError` (``decode_error``) when no frame decodes.
    """
    p = {**stage_defaults("label"), **(params or {})}
    size = int(getattr(model, "input_size", 64))
    all_idx: list[int] = []
    all_probs: list[np.ndarray] = []
    for idx, batch in _batches(Path(path), float(p["crop_fraction"]), size, int(p["batch_size"])):
        all_idx.extend(idx)
        all_probs.append(np.asarray(model.predict(batch), dtype=np.float32))
    if not all_idx:
        raise MediaError("decode_error", "no decodable frame in the crop clip")
    return all_idx, np.concatenate(all_probs)


# --- action units of one clip -----------------------------------------------------------------------

#: FER class -> the FACS emotion it corresponds to (contempt has no FER class).
FER_TO_FACS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
               "sad": "sadness", "surprise": "surprise", "neutral": "neutral"}


def geometric_track_aus(frames: list[Mapping[str, Any]], baseline: str = "median_shape"
                        ) -> np.ndarray:
    """Baseline-normalised geometric AU proxies ``(n, 14)`` of one track's ``frames`` rows (in the
    given order; the baseline is taken over all of them). Degenerate shapes give NaN rows."""
    from dsbuilder.labels.au import track_aus

    lm = np.array([r["landmarks"] for r in frames], dtype=np.float64).reshape(-1, 68, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return track_aus(lm, method=baseline)


def au_emotions(values: np.ndarray, names, neutral_norm: float
                ) -> tuple[np.ndarray, list[str]]:
    """FACS emotion scores ``(n, 7)`` (facs.EMOTIONS order) and the nearest emotion per frame
    (``"neutral"`` below ``neutral_norm``; NaN values count as absent)."""
    from dsbuilder.labels.facs import EMOTIONS, emotion_score_matrix

    vals = np.maximum(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0)
    _, scores = emotion_score_matrix(vals, names)
    best = scores.argmax(axis=1)  # ties: the first emotion, as nearest_emotion does
    norms = np.linalg.norm(vals, axis=1)
    nearest = ["neutral" if n < neutral_norm else EMOTIONS[b] for n, b in zip(norms, best)]
    return scores, nearest


@dataclass
class ClipAus:
    """AU labels of one clip's labelled frames (row-aligned with them)."""

    geom: np.ndarray  # (n, 14) geometric proxies, 0-1 above neutral
    source: list[str]  # per frame: geom | openface | pyfeat
    imported: np.ndarray | None  # (n, k) 0-1, NaN where the CSV has no row; None: no CSV
    imported_names: tuple[str, ...] | None
    scores: np.ndarray  # (n, 7) facs.EMOTIONS order
    nearest: list[str]


def clip_aus(frames: list[Mapping[str, Any]], keep: list[int], params: Mapping[str, Any],
             au_table=None) -> ClipAus:
    """AUs of a track: geometric proxies over all its ``frames`` (sorted by frame index), kept at the
    positions ``keep``; an imported :class:`~dsbuilder.labels.au_import.AuTable` of the crop clip, when
    given, is aligned by crop frame and scored where it has a row."""
    from dsbuilder.labels.au import AU_GEOM_NAMES
    from dsbuilder.labels.au_import import align_to_frames

    geom = geometric_track_aus(frames, params["au_baseline"])[keep]
    norm = float(params["au_neutral_norm"])
    scores, nearest = au_emotions(geom, AU_GEOM_NAMES, norm)
    source = ["geom"] * len(keep)
    imported = names = None
    if au_table is not None:
        crop_frames = np.array([frames[i]["crop_frame"] for i in keep], dtype=np.int64)
        aligned = align_to_frames(au_table, frame_indices=crop_frames)
        imported, names = aligned.values / aligned.scale, tuple(aligned.au_names)
        hit = np.asarray(aligned.success, dtype=bool)
        if hit.any():
            s_imp, n_imp = au_emotions(imported[hit], names, norm)
            scores[hit] = s_imp
            for j, i in enumerate(np.flatnonzero(hit)):
                nearest[i] = n_imp[j]
                source[i] = au_table.tool
    return ClipAus(geom, source, imported, names, scores, nearest)


def find_au_csvs(au_csv: str | None, track_ids) -> dict[str, Path]:
    """``stages.label.au_csv`` (a folder of ``<track_id>.csv`` or one such file) -> {track_id: path}
    for the given tracks."""
    if not au_csv:
        return {}
    root = Path(au_csv)
    files = [root] if root.is_file() else sorted(root.glob("*.csv"))
    wanted = set(track_ids)
    found = {f.stem: f for f in files if f.stem in wanted}
    unused = [f.name for f in files if f.stem not in wanted]
    if unused:
        log.warning("label: %d AU CSV(s) match no labelled track (named <track_id>.csv?): %s",
                    len(unused), ", ".join(unused[:5]))
    return found
