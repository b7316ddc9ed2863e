"""HMM segments of a clip: Viterbi-decode its AU sequence with the person's model into ``segments``
rows; where each person's model is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np


def frames_fps(frames: list[Mapping[str, Any]]) -> float:
    """Frame rate of a track from its rows' times (median step; 25 when it cannot be told)."""
    t = np.array([r["t"] for r in frames], dtype=np.float64)
    dt = np.diff(t)
    dt = dt[dt > 0]
    return round(float(1.0 / np.median(dt)), 3) if len(dt) else 25.0


#: HMM parameters that change the decoding only, not the fitted model (left out of its cache key).
DECODE_ONLY = ("hmm_min_segment_s",)


def hmm_segment_rows(model, track: Mapping[str, Any], frames: list[Mapping[str, Any]],
                     x: np.ndarray, model_path: str, min_segment_s: float = 0.0
                     ) -> list[dict[str, Any]]:
    """Viterbi-decode one clip's AU sequence ``x`` (row-aligned with ``frames``, sorted by frame
    index) into ``segments`` rows (times from the frames; the last segment ends one frame after its
    last frame). Segments last at least ``min_segment_s`` (minimum-duration Viterbi at the model's
    frame rate)."""
    from dsbuilder.labels import hmm as H

    rows = []
    min_run = max(1, int(np.ceil(min_segment_s * model.fps - 1e-9)))
    for k, seg in enumerate(H.segments(model, x, min_run)):
        first, last = frames[seg.start], frames[seg.end - 1]
        nxt = frames[seg.end] if seg.end < len(frames) else None
        rows.append({
            "segment_id": f"{track['track_id']}-h{k}", "track_id": track["track_id"],
            "source_id": track["source_id"], "person_id": track["person_id"], "segment_index": k,
            "start_frame": first["frame_index"],
            "end_frame": nxt["frame_index"] if nxt else last["frame_index"] + 1,
            "start_s": first["t"], "end_s": nxt["t"] if nxt else last["t"] + 1.0 / model.fps,
            "n_frames": seg.end - seg.start, "state": seg.state, "n_states": model.n_states,
            "family": model.family, "au_names": list(model.au_names),
            "au_profile": list(seg.profile), "nearest_emotion": seg.emotion,
            "emotion_score": seg.emotion_score, "model_path": model_path})
    return rows


def hmm_model_path(root: Path, person_id: str) -> Path:
    """Where a person's HMM is saved, under the workspace ``root``."""
    return Path(root) / "models" / "hmm" / f"{person_id}.json"
