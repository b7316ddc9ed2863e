"""Faces of one reference photo (or one video frame): find them, measure them, pick the usable one.

:func:`analyse_photo` does the expensive part, once per photo: detection on a copy downscaled to
``max_side_px`` (boxes are mapped back to the original pixels), then, on the original pixels, 68
landmarks, head yaw/pitch, sharpness and the 128-d embedding of **every** face found. The result is a
list of :class:`FaceCandidate` s that round-trips exactly through JSON (:meth:`FaceCandidate.record`),
which is what the dictionary stage caches.

:func:`choose_face` is the cheap part, redone on every run from the cached candidates and the current
parameters. The rules, in order:

1. no face at all: the photo is rejected ``no_face``;
2. several faces: the largest is taken only if its box area is at least ``dominance_ratio`` times the
   next one's; otherwise every face is ``many_faces``. Faces other than the taken one are
   ``many_faces`` too (they are bystanders of that photo, not references);
3. the taken face must be large enough (``too_small``: ``sqrt(box area) < min_face_px``), sharp enough
   (``blurry``: variance of the Laplacian of the face resized to 128 px ``< min_sharpness``) and not
   turned too far (``extreme_pose``: ``|yaw| > max_yaw_deg``), checked in that order.

Detections scoring below ``min_det_score`` are not faces at all (the same as a higher detector cut):
with dlib's own cut at 0, the mission patch on the astronaut's sleeve in ``skimage.data.astronaut()``
is "a face" of the same size as hers and would make her portrait ``many_faces``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from dsbuilder.config import stage_defaults
from dsbuilder.errors import PhotoError  # noqa: F401 (re-exported: candidates.PhotoError)

log = logging.getLogger(__name__)

#: The parameters :func:`analyse_photo` depends on (the per-photo cache key hashes only these, so
#: changing a threshold such as ``min_sharpness`` re-decides from the cache without re-detecting).
ANALYSIS_PARAMS = ("detector", "upsample", "max_side_px", "min_det_score", "jitters")


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**stage_defaults("dictionary"), **(params or {})}


@dataclass(frozen=True)
class FaceCandidate:
    """One detected face, in the original image's pixels.

    ``index`` is the face's rank by box area (0 = largest; ties by top, then left). ``box`` is
    ``(left, top, right, bottom)``; ``landmarks`` is (68, 2) float32 (iBUG 300-W order); ``embedding``
    is the 128-d dlib ResNet vector (float32); ``yaw``/``pitch`` are degrees (0 = frontal, level).
    """

    index: int
    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray
    sharpness: float
    yaw: float
    pitch: float
    n_faces: int

    @property
    def area(self) -> int:
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])

    @property
    def face_px(self) -> float:
        """Side of a square of the box's area."""
        return math.sqrt(self.area)

    def record(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_record` gives back an equal candidate (float32 values are
        exact in JSON's float64)."""
        return {
            "index": self.index, "box": [int(v) for v in self.box], "score": float(self.score),
            "landmarks": [float(v) for v in np.asarray(self.landmarks, np.float32).ravel()],
            "embedding": [float(v) for v in np.asarray(self.embedding, np.float32).ravel()],
            "sharpness": float(self.sharpness), "yaw": float(self.yaw), "pitch": float(self.pitch),
            "n_faces": int(self.n_faces),
        }

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> "FaceCandidate":
        return cls(index=int(d["index"]), box=tuple(int(v) for v in d["box"]),
                   score=float(d["score"]),
                   landmarks=np.asarray(d["landmarks"], np.float32).reshape(68, 2),
                   embedding=np.asarray(d["embedding"], np.float32),
                   sharpness=float(d["sharpness"]), yaw=float(d["yaw"]), pitch=float(d["pitch"]),
                   n_faces=int(d["n_faces"]))


@dataclass(frozen=True)
class FaceVerdict:
    """What :func:`choose_face` decided for one face. ``usable`` faces go on to purification."""

    index: int
    usable: bool
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class PhotoDecision:
    """The outcome for one photo: ``chosen`` is the taken face's index (it may still have failed a
    quality check: see its verdict), ``None`` if no face was taken. ``reason``/``detail`` are set when
    the photo has no usable face: for ``no_face`` they are the only record of the photo."""

    chosen: int | None
    faces: tuple[FaceVerdict, ...]
    reason: str | None = None
    detail: str | None = None

    @property
    def usable(self) -> FaceVerdict | None:
        return next((f for f in self.faces if f.usable), None)


# --- decoding -------------------------------------------------------------------------------------

def load_photo(path: str | Path) -> np.ndarray:
    """Decode a photo as an RGB uint8 array, upright (EXIF orientation applied).

    Raises :class:`PhotoError` (``decode_error``) for anything that is not a decodable image, and
    :class:`FileNotFoundError`/:class:`PermissionError` if the file cannot be opened.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            arr = np.asarray(img.convert("RGB"))
    except (FileNotFoundError, PermissionError):
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise PhotoError("decode_error", f"not a decodable image: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated, corrupt, bad header
        raise PhotoError("decode_error", f"cannot decode image: {type(exc).__name__}: {exc}") \
            from None
    if arr.ndim != 3 or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise PhotoError("decode_error", f"unusable image shape {arr.shape}")
    return np.ascontiguousarray(arr)


# --- analysis -------------------------------------------------------------------------------------

def analyse_photo(image: np.ndarray, params: Mapping[str, Any] | None = None) -> list[FaceCandidate]:
    """Detect and measure every face of an RGB uint8 image; no workspace needed.

    ``params`` are ``stages.dictionary`` parameters (missing keys take their defaults); only
    :data:`ANALYSIS_PARAMS` matter here. Detection runs on a copy whose longer side is at most
    ``max_side_px`` (INTER_AREA), with ``upsample`` pyramid doublings; detections scoring below
    ``min_det_score`` are dropped. Everything else is measured on the original pixels. Returns the
    faces sorted by box area, largest first.
    """
    import cv2

    from dsbuilder.face import api

    p = _params(params)
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    h, w = img.shape[:2]
    scale = min(1.0, p["max_side_px"] / max(h, w))
    if scale < 1.0:
        small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    else:
        small = img
    dets = [d for d in api.detect(small, p["detector"], int(p["upsample"]))
            if d.score >= p["min_det_score"]]
    boxes = []
    for d in dets:
        l, t, r, b = (v / scale for v in d.box)
        box = (max(0, int(math.floor(l))), max(0, int(math.floor(t))),
               min(w, int(math.ceil(r))), min(h, int(math.ceil(b))))
        boxes.append((box, float(d.score)))
    boxes.sort(key=lambda bs: (-api.area(bs[0]), bs[0][1], bs[0][0]))
    out = []
    for k, (box, score) in enumerate(boxes):
        lm = api.landmarks(img, box)
        yaw, pitch = api.yaw_pitch(lm)
        out.append(FaceCandidate(
            index=k, box=box, score=score, landmarks=lm,
            embedding=api.embed(img, box, int(p["jitters"])),
            sharpness=api.sharpness(img, box), yaw=float(yaw), pitch=float(pitch),
            n_faces=len(boxes)))
    return out


def quality_verdict(c: FaceCandidate, params: Mapping[str, Any] | None = None
                    ) -> tuple[str, str] | None:
    """``(reason, detail)`` if the face fails a quality check (``too_small``, ``blurry``,
    ``extreme_pose``, in that order), else ``None``."""
    p = _params(params)
    if c.face_px < p["min_face_px"]:
        return "too_small", f"face {c.face_px:.0f} px < min_face_px {p['min_face_px']:g}"
    if c.sharpness < p["min_sharpness"]:
        return "blurry", f"sharpness {c.sharpness:.1f} < min_sharpness {p['min_sharpness']:g}"
    if abs(c.yaw) > p["max_yaw_deg"]:
        return "extreme_pose", f"|yaw| {abs(c.yaw):.1f} deg > max_yaw_deg {p['max_yaw_deg']:g}"
    return None


def choose_face(candidates: Sequence[FaceCandidate], params: Mapping[str, Any] | None = None,
                ) -> PhotoDecision:
    """Pick the reference face of a photo from its candidates (see the module docstring)."""
    p = _params(params)
    faces = sorted(candidates, key=lambda c: c.index)
    if not faces:
        return PhotoDecision(chosen=None, faces=(), reason="no_face",
                             detail=(f"no face found ({p['detector']}, upsample {p['upsample']}, "
                                     f"min_det_score {p['min_det_score']:g})"))
    ratio = p["dominance_ratio"]
    if len(faces) > 1:
        a0, a1 = faces[0].area, faces[1].area
        r = a0 / a1 if a1 else math.inf
        if r < ratio:
            detail = (f"{len(faces)} faces; the two largest are {faces[0].face_px:.0f} and "
                      f"{faces[1].face_px:.0f} px (area ratio {r:.2f} < dominance_ratio {ratio:g})")
            return PhotoDecision(
                chosen=None, reason="many_faces", detail=detail,
                faces=tuple(FaceVerdict(c.index, False, "many_faces", detail) for c in faces))
    verdicts = []
    head = faces[0]
    bad = quality_verdict(head, p)
    verdicts.append(FaceVerdict(head.index, bad is None, *(bad or (None, None))))
    for c in faces[1:]:
        verdicts.append(FaceVerdict(
            c.index, False, "many_faces",
            f"not the photo's main face ({len(faces)} faces; {c.face_px:.0f} px vs face0 "
            f"{head.face_px:.0f} px, area ratio {head.area / max(1, c.area):.2f} >= "
            f"dominance_ratio {ratio:g})"))
    return PhotoDecision(chosen=head.index, faces=tuple(verdicts),
                         reason=bad[0] if bad else None, detail=bad[1] if bad else None)


# --- video sampling (dictionary bootstrap) ---------------------------------------------------------

@dataclass(frozen=True)
class FrameFaces:
    """The faces of one sampled video frame."""

    frame_index: int
    t: float
    faces: tuple[FaceCandidate, ...]

    def record(self) -> dict[str, Any]:
        return {"frame_index": self.frame_index, "t": self.t,
                "faces": [c.record() for c in self.faces]}

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> "FrameFaces":
        return cls(int(d["frame_index"]), float(d["t"]),
                   tuple(FaceCandidate.from_record(c) for c in d["faces"]))


def sample_video_faces(path: str | Path, params: Mapping[str, Any] | None = None, *,
                       interval_s: float = 1.0, max_frames: int = 30) -> Iterator[FrameFaces]:
    """Analyse one frame every ``interval_s`` seconds of a video, at most ``max_frames``.

    The frames are reached by seeking (:func:`dsbuilder.media.sample_frames`): a group of pictures
    is decoded per sample, not the whole video, and only the sampled frames are converted. Each goes
    through :func:`analyse_photo`. ``frame_index`` is ``round(t * fps)``. Raises
    :class:`~dsbuilder.media.MediaError` if the video cannot be decoded.
    """
    from dsbuilder.media import probe, sample_frames

    info = probe(path)
    if not info.has_video:
        from dsbuilder.media import MediaError

        raise MediaError("no_video_stream", "the file has no video stream")
    duration = float(info.duration or 0.0)
    n = max(1, min(max_frames, int(duration // interval_s) + 1)) if duration else max_frames
    times = [k * interval_s for k in range(n)]
    for index, t, img in sample_frames(path, times, fmt="rgb24"):
        yield FrameFaces(index, float(t), tuple(analyse_photo(img, params)))
