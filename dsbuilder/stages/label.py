"""Stage ``label``: per-frame emotion probabilities and valence/arousal for every kept face track.

For each kept track of ``tracks`` (``kept``, with a ``crop_path``) the aligned face clip is streamed
(:func:`dsbuilder.media.iter_frames`, grey), the central ``crop_fraction`` of each frame is resized to
64×64 and classified in batches by the FER teacher (:mod:`dsbuilder.labels.fer`; by default the FER2013
mini-Xception ported to PyTorch). The probabilities are smoothed over time and mapped to valence and
arousal (:mod:`dsbuilder.labels.va`). Outputs:

* ``labels``: one row per frame of ``frames`` whose ``crop_frame`` was decoded (``label_id`` =
  ``frame_id``);
* ``label_clips``: one row per labelled track: mean probabilities, argmax, entropy, frame agreement,
  mean V/A. A clip whose mean probability of its argmax is below ``min_clip_confidence`` has
  ``kept=false`` and a ``low_confidence`` rejection (its per-frame labels are still written).

Rejections (item_id = the track id): ``no_landmarks`` (the track has no ``frames`` rows),
``decode_error`` (the crop clip cannot be decoded), ``low_confidence``.

The teacher's raw per-frame probabilities are the cache record, keyed by the crop's sha256, the stage
parameters and the code version; smoothing and summaries are recomputed from it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from dsbuilder.config import stage_defaults
from dsbuilder.errors import StageError
from dsbuilder.manifest.io import read_table
from dsbuilder.media import MediaError
from dsbuilder.recipe import Recipe, params_hash
from dsbuilder.stages import CODE_VERSIONS
from dsbuilder.stages.base import Rejection, StageResult, now_utc, publish
from dsbuilder.workspace import Workspace, item_key

log = logging.getLogger(__name__)

STAGE = "label"


# --- one clip ---------------------------------------------------------------------------------------

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
    p = {**stage_defaults(STAGE), **(params or {})}
    size = int(getattr(model, "input_size", 64))
    all_idx: list[int] = []
    all_probs: list[np.ndarray] = []
    for idx, batch in _batches(Path(path), float(p["crop_fraction"]), size, int(p["batch_size"])):
        all_idx.extend(idx)
        all_probs.append(np.asarray(model.predict(batch), dtype=np.float32))
    if not all_idx:
        raise MediaError("decode_error", "no decodable frame in the crop clip")
    return all_idx, np.concatenate(all_probs)


# --- the stage --------------------------------------------------------------------------------------

def run(recipe: Recipe, ws: Workspace, *, force: bool = False, progress: bool = True) -> StageResult:
    """Label every kept track's crop clip and publish ``labels`` and ``label_clips``."""
    from tqdm import tqdm

    from dsbuilder.labels.fer import FER_CLASSES, ModelError, load_fer

    params = recipe.stage_params(STAGE)
    phash = params_hash(params)
    result = StageResult(stage=STAGE, params_hash=phash)

    tracks = sorted((r for r in read_table(ws, "tracks").to_pylist()
                     if r["kept"] and r["crop_path"]), key=lambda r: r["track_id"])
    frames_by_track: dict[str, dict[int, dict[str, Any]]] = {}
    if tracks:
        for fr in read_table(ws, "frames").select(
                ["frame_id", "track_id", "frame_index", "t", "crop_frame"]).to_pylist():
            frames_by_track.setdefault(fr["track_id"], {})[fr["crop_frame"]] = fr
    else:
        log.warning("label: no kept track with a crop clip; run the faces stage first")

    model = None
    label_rows: list[dict[str, Any]] = []
    clip_rows: list[dict[str, Any]] = []
    for tr in tqdm(tracks, desc="label", unit="track", disable=not progress):
        track_id = tr["track_id"]
        frames = frames_by_track.get(track_id, {})
        if not frames:
            # a tiny record only to keep the rejection's time (rows rebuilt byte-identically)
            nl_key = item_key(f"no_landmarks\0{track_id}", phash, CODE_VERSIONS[STAGE])
            nl = None if force else ws.get_record(STAGE, nl_key)
            if nl is None:
                nl = {"at": now_utc()}
                ws.put_record(STAGE, nl_key, nl)
            result.rejections.append(Rejection(
                stage=STAGE, item_id=track_id, reason="no_landmarks",
                detail="the track has no rows in the frames table", source_id=tr["source_id"],
                person_id=tr["person_id"], at=nl["at"]))
            continue
        key = item_key(tr["crop_sha256"] or track_id, phash, CODE_VERSIONS[STAGE])
        record = None if force else ws.get_record(STAGE, key)
        if record is not None:
            result.cached += 1
        else:
            if model is None:
                try:
                    model = load_fer(params["fer_model"])
                except ModelError as exc:
                    raise StageError(f"label: cannot load the FER model: {exc.message}",
                                     exc.hint or "run `dsbuilder models pull`") from None
                if tuple(model.classes) != FER_CLASSES:
                    raise StageError(f"label: model classes {model.classes} differ from "
                                     f"{FER_CLASSES}", "use a 7-class FER2013-order model")
            record, cacheable = _compute_record(ws.abspath(tr["crop_path"]), model, params)
            if cacheable:
                ws.put_record(STAGE, key, record)
            result.computed += 1
        rows, clip, rejections = _rows_from_record(record, tr, frames, params, phash)
        label_rows.extend(rows)
        if clip is not None:
            clip_rows.append(clip)
        result.rejections.extend(rejections)

    result.rows = {"labels": label_rows, "label_clips": clip_rows}
    return publish(ws, result)


def _compute_record(path: Path, model, params: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    at = now_utc()
    try:
        idx, probs = label_clip(path, model, params)
    except MediaError as exc:
        log.warning("label: %s rejected: %s: %s", path, exc.reason, exc.detail)
        return {"at": at, "rejected": {"reason": "decode_error", "detail": exc.detail}}, True
    except OSError as exc:
        log.error("label: cannot read %s: %s", path, exc)
        return {"at": at, "rejected": {"reason": "decode_error",
                                       "detail": f"cannot read file: {exc}"}}, False
    return {"at": at, "model": model.name, "crop_frames": idx,
            "probs": [[round(float(x), 6) for x in row] for row in probs]}, True


def _rows_from_record(record: Mapping[str, Any], track: Mapping[str, Any],
                      frames: Mapping[int, Mapping[str, Any]], params: Mapping[str, Any],
                      phash: str) -> tuple[list[dict], dict | None, list[Rejection]]:
    from dsbuilder.labels.fer import FER_CLASSES
    from dsbuilder.labels.va import summarise_clip, valence_arousal

    at = record["at"]
    track_id, source_id, person_id = track["track_id"], track["source_id"], track["person_id"]
    if "rejected" in record:
        rej = record["rejected"]
        return [], None, [Rejection(stage=STAGE, item_id=track_id, reason=rej["reason"],
                                    detail=rej["detail"], source_id=source_id,
                                    person_id=person_id, at=at)]
    # keep the crop frames that the frames table knows (a clip may have an extra encoder frame)
    pairs = [(cf, row) for cf, row in zip(record["crop_frames"], record["probs"]) if cf in frames]
    if not pairs:
        return [], None, [Rejection(stage=STAGE, item_id=track_id, reason="no_landmarks",
                                    detail="no decoded crop frame matches a frames row",
                                    source_id=source_id, person_id=person_id, at=at)]
    probs = np.array([p for _, p in pairs], dtype=np.float64)
    summary, smoothed, va_s = summarise_clip(probs, FER_CLASSES, method=params["smoothing"],
                                             frames=int(params["smooth_frames"]))
    va = valence_arousal(probs, FER_CLASSES)
    model_name = record["model"]
    rows = []
    for i, (cf, _) in enumerate(pairs):
        fr = frames[cf]
        k = int(probs[i].argmax())
        rows.append({
            "label_id": fr["frame_id"], "frame_id": fr["frame_id"], "track_id": track_id,
            "source_id": source_id, "person_id": person_id, "frame_index": fr["frame_index"],
            "crop_frame": cf, "t": fr["t"], "fer_probs": probs[i].tolist(),
            "fer_probs_smoothed": smoothed[i].tolist(), "fer_argmax": FER_CLASSES[k],
            "fer_confidence": float(probs[i, k]), "valence": float(va[i, 0]),
            "arousal": float(va[i, 1]), "valence_smoothed": float(va_s[i, 0]),
            "arousal_smoothed": float(va_s[i, 1]), "fer_model": model_name,
            # AU HOOK: when dsbuilder.labels.au is integrated, add its per-frame AU columns here
            # (geometric_aus(landmarks of this frame) -> one column per AU_GEOM_NAMES entry) and
            # declare them in schema._label_schemas where the "AU HOOK" comment is.
        })
    low = summary.argmax_prob < float(params["min_clip_confidence"])
    clip = {
        "track_id": track_id, "source_id": source_id, "person_id": person_id,
        "n_frames": summary.n_frames, "mean_probs": list(summary.mean_probs),
        "argmax": summary.argmax, "argmax_prob": summary.argmax_prob, "entropy": summary.entropy,
        "agreement": summary.agreement, "mean_valence": summary.mean_valence,
        "mean_arousal": summary.mean_arousal, "std_valence": summary.std_valence,
        "std_arousal": summary.std_arousal,
        "smoothing": f"{params['smoothing']}:{params['smooth_frames']}", "fer_model": model_name,
        "kept": not low, "reason": "low_confidence" if low else None,
    }
    rejections = []
    if low:
        rejections.append(Rejection(
            stage=STAGE, item_id=track_id, reason="low_confidence",
            detail=(f"mean probability of {summary.argmax} is {summary.argmax_prob:.3f} < "
                    f"min_clip_confidence {float(params['min_clip_confidence']):g}"),
            source_id=source_id, person_id=person_id, at=at))
    return rows, clip, rejections
