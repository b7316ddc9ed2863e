"""Active-speaker scores of a face track by Light-ASD (:mod:`dsbuilder.speaker.lightasd`).

Input as the model was trained (upstream ``Columbia_test.py`` / ``dataLoader.py``):

* **Picture.** 25 fps, grey, 112x112. Upstream cuts, from each frame, a region around the S3FD face
  box (centre ``(x, y)``, ``s`` = half its larger side): ``[x - 1.4s, x + 1.4s] x [y - s, y + 1.8s]``,
  resizes it to 224x224 and keeps the central 112x112. That central part is the square of side
  ``1.4 s`` centred at ``(x, y + 0.4 s)``: mouth, nose, cheeks and chin. We read our aligned face clip
  (``tracks.crop_path``): there the face sits where dlib's mean face puts it (similarity transform of
  the smoothed landmarks), so the same region is one fixed window of the clip, computed from the mean
  face and the box rule :data:`BOX_RULE` (a WIDER-FACE-style box from the eyes, calibrated against
  MTCNN on photos, see its comment). The window is resampled to 112x112 by one affine warp; what falls
  outside the clip is grey 110, as upstream pads. Our clip removes in-plane rotation, upstream's
  crops do not (its training used +-15 degree rotations as augmentation).
* **Frame rate.** Each 25 fps instant ``start_s + k / 25`` takes the clip frame showing then (the
  last frame at or before it), as a frame-rate conversion would.
* **Sound.** The track's 16-bit wav (16 kHz mono, the track's exact span), 13 MFCCs at 100 Hz with
  ``python_speech_features`` as upstream: 4 rows per video frame.
* **Scores.** One pass over the track in chunks of at most ``chunk_s`` (equal lengths; upstream's demo
  averages passes with 1-6 s chunks, we make one). Per 25 fps frame the speaking logit
  (:func:`dsbuilder.speaker.lightasd.speaking_logit`); each of our frames takes the logit of the 25 fps
  instant nearest to it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsbuilder.errors import AsdInputError  # noqa: F401 (re-exported: asd.AsdInputError)
from dsbuilder.speaker import lightasd

log = logging.getLogger(__name__)

#: A WIDER-FACE-style face box from the two eye centres (``E``: their midpoint, ``D``: their
#: distance), in the eye-aligned frame: centre ``E + (dx, dy) * D``, half of its larger side
#: ``s = k * D``. Measured against MTCNN's ONet boxes (trained on WIDER FACE, as S3FD) on the 23
#: faces of the test photos (tools/asd_box_calibration/calib.py): dy median 0.31 (IQR 0.28-0.33),
#: dx -0.04 (taken as 0), s / D median 1.52 (IQR 1.48-1.63); dlib's HOG box is 0.82x that size.
BOX_RULE = {"dx": 0.0, "dy": 0.31, "k": 1.52}

#: The shortest track scored, in 25 fps frames: the visual encoder's temporal receptive field (three
#: blocks of 5-frame convolutions: 13 frames) less a little; shorter tracks are ``too_short``.
MIN_FRAMES = 10

#: Grey level upstream pads its crops with.
PAD_GREY = 110


def _eye_frame(size: int, padding: float) -> tuple[np.ndarray, float]:
    """Eye midpoint and inter-ocular distance of dlib's mean face in an aligned clip."""
    from dsbuilder.face.crops import _MEAN_FACE_X, _MEAN_FACE_Y

    pts = np.stack([np.asarray(_MEAN_FACE_X), np.asarray(_MEAN_FACE_Y)], axis=1)
    pts = (padding + pts) / (2 * padding + 1) * size
    left, right = pts[36 - 17:42 - 17].mean(axis=0), pts[42 - 17:48 - 17].mean(axis=0)
    return (left + right) / 2, float(np.linalg.norm(right - left))


def window(size: int, padding: float, rule: dict[str, float] | None = None
           ) -> tuple[np.ndarray, float]:
    """The model's 112 px window in an aligned clip of ``size`` px: (centre xy, side) in clip px."""
    r = {**BOX_RULE, **(rule or {})}
    eye, d = _eye_frame(size, padding)
    s = r["k"] * d
    centre = eye + np.array([r["dx"] * d, r["dy"] * d + 0.4 * s])
    return centre, 1.4 * s


def window_transform(size: int, padding: float, rule: dict[str, float] | None = None
                     ) -> np.ndarray:
    """2x3 affine matrix mapping clip pixels to the 112x112 model input (for cv2.warpAffine)."""
    centre, side = window(size, padding, rule)
    scale = lightasd.CROP / side
    # pixel centres: clip x -> (x - (centre - side/2)) * scale, with the half-pixel convention
    tx = -(centre[0] - side / 2) * scale + 0.5 * scale - 0.5
    ty = -(centre[1] - side / 2) * scale + 0.5 * scale - 0.5
    return np.array([[scale, 0.0, tx], [0.0, scale, ty]], np.float64)


@dataclass
class AsdInput:
    faces: np.ndarray  # (T, 112, 112) uint8 at 25 fps
    mfcc: np.ndarray  # (4T, 13) float32
    times: np.ndarray  # (T,) seconds on the source timeline of each 25 fps instant


def read_wav_int16(path: str | Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM wav as int16 samples (mono: the first channel) and its rate."""
    import wave

    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise AsdInputError("decode_error", f"{Path(path).name}: not 16-bit PCM")
        rate, ch = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return data.reshape(-1, ch)[:, 0].copy(), rate


def build_input(crop_path: str | Path, wav_path: str | Path | None, times: np.ndarray,
                start_s: float, end_s: float, *, size: int, padding: float,
                rule: dict[str, float] | None = None) -> AsdInput:
    """Model input of one track from its aligned clip and wav. ``times``: source times of the clip's
    frames (one per ``frames`` row, in order). Raises :class:`AsdInputError`."""
    import cv2

    from dsbuilder.media import MediaError, iter_frames

    if not wav_path or not Path(wav_path).is_file():
        raise AsdInputError("no_audio", "the track has no audio (the source is silent or has none)")
    audio, rate = read_wav_int16(wav_path)
    if rate != 16000:
        raise AsdInputError("decode_error", f"wav at {rate} Hz, the model needs 16000")
    n25 = int(math.floor((end_s - start_s) * lightasd.FPS + 1e-6))
    mf = lightasd.mfcc(audio, rate) if len(audio) >= 400 else np.zeros((0, 13), np.float32)
    n = min(n25, len(mf) // lightasd.AUDIO_PER_FRAME)
    if n25 < MIN_FRAMES:
        raise AsdInputError("too_short", f"{end_s - start_s:.2f} s: shorter than the model's "
                            f"shortest window ({MIN_FRAMES} frames at 25 fps)")
    if n < MIN_FRAMES:
        raise AsdInputError("no_audio", f"{len(audio)} audio samples for {end_s - start_s:.2f} s "
                            "of picture: the audio ends early")
    grid = start_s + np.arange(n) / lightasd.FPS
    times = np.asarray(times, np.float64)
    # clip frame shown at each grid instant: the last frame at or before it (small tolerance)
    pick = np.clip(np.searchsorted(times, grid + 1e-4, side="right") - 1, 0, len(times) - 1)
    m = window_transform(size, padding, rule)
    faces = np.empty((n, lightasd.CROP, lightasd.CROP), np.uint8)
    want = {}
    for k, i in enumerate(pick):
        want.setdefault(int(i), []).append(k)
    last = max(want)
    got = 0
    try:
        for i, _t, grey in iter_frames(crop_path, fmt="gray"):
            if i in want:
                face = cv2.warpAffine(grey, m, (lightasd.CROP, lightasd.CROP),
                                      flags=cv2.INTER_LINEAR, borderValue=PAD_GREY)
                for k in want[i]:
                    faces[k] = face
                got += len(want[i])
            if i >= last:
                break
    except MediaError as exc:
        raise AsdInputError("decode_error", f"face clip: {exc.detail}") from None
    if got < n:
        raise AsdInputError("decode_error", f"face clip has fewer frames than the track "
                            f"({got} of {n} needed)")
    return AsdInput(faces, mf[:n * lightasd.AUDIO_PER_FRAME], grid)


def chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """Split ``n`` frames into ceil(n / chunk) nearly equal consecutive parts."""
    k = max(1, math.ceil(n / max(1, chunk)))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges, edges[1:]) if b > a]


def score(net: Any, x: AsdInput, chunk_s: float = 4.0) -> np.ndarray:
    """Speaking logits, one per 25 fps frame of ``x``, in one chunked pass."""
    from dsbuilder.torch_threads import torch_threads

    a4 = lightasd.AUDIO_PER_FRAME
    out = np.empty(len(x.faces))
    with torch_threads(2):
        for a, b in chunks(len(x.faces), int(round(chunk_s * lightasd.FPS))):
            o = lightasd.forward(net, x.mfcc[a * a4:b * a4], x.faces[a:b])
            out[a:b] = lightasd.speaking_logit(o)
    return out


def to_frames(grid: np.ndarray, logits: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Each of our frames takes the logit of the nearest 25 fps instant."""
    j = np.clip(np.round((np.asarray(times) - grid[0]) * lightasd.FPS).astype(int), 0,
                len(grid) - 1)
    return np.asarray(logits)[j]
