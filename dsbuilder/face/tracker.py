"""Pass 1 of the faces stage: find the faces of a video and follow them, shot by shot.

:func:`track_video` streams a video once and yields every face track (:class:`RawTrack`) as soon as it
ends. Only the current frame and a short look-ahead of decoded frames are in memory, whatever the
video's length; a finished track carries its boxes and landmarks (a few hundred bytes per frame) and a
handful of small face chips for identification, never whole frames.

How a video is processed:

* **Detection on a schedule.** The detector runs on the first frame of every shot, then on the first
  frame at least ``1 / detect_fps`` seconds after the previous detection (by presentation time, so
  variable frame rates are handled). The frame is downscaled to ``detect_width`` by FFmpeg's scaler
  first. Detectors are in :data:`DETECTORS`: ``hog`` (default) and ``cnn`` (dlib's MMOD network; more
  than 2 s per 360p frame on a CPU, so meant for photos, not video).
* **Upsampling only where it pays.** HOG finds faces down to about 80 px; with one upsampling (the
  image doubled, 4x the cost) down to about 40 px. A detection is upsampled on a shot's first frame,
  every :data:`UPSAMPLE_PROBE_S` seconds after that (so a small face that appears later is found),
  and whenever a face in sight is smaller than ``upsample_below_px`` (in the detection frame).
  ``upsample_below_px: 0`` turns upsampling off. The whole-frame upsampled detections also report
  faces scoring a little under HOG's threshold (:data:`WEAK_SCORE`): such a face starts a tentative
  track, kept only when a later detection at the threshold finds it (the hysteresis of two
  thresholds), so a small face at the threshold on a short shot's only probe is not lost.
* **Detections run ahead, in a thread.** dlib's HOG detector releases the GIL, and the schedule is
  known in advance, so the detection of frame k+n (up to about a second ahead) runs in a thread pool
  while the main thread tracks the frames before it. Whether a detection is upsampled because a small
  face is in sight is decided exactly by the main loop when it reaches the frame (from the tracks as
  they are then); the detection run ahead only guesses it, and is redone when the guess was wrong. So
  the output never depends on thread timing.
* **Landmark tracking between detections.** Every live track is followed frame to frame by running the
  68-point shape predictor in the track's previous box and deriving the new box from the landmarks,
  using the offset and scale between the detector's box and the landmarks measured at the track's last
  detection. The landmarks are needed on every frame anyway (pose, mouth, crop alignment), so tracking
  costs nothing extra (``dlib.correlation_tracker`` would add its own cost per frame; see
  benchmarks/RESULTS.md ``## faces``).
* **Association.** At a detection frame, detections are matched to the live tracks by the IoU of the
  detection with the track's previous box: a Hungarian assignment
  (``scipy.optimize.linear_sum_assignment``) that refuses pairs below ``track_iou``. A detection
  that matches no track starts one. An unmatched track that overlaps a matched one is a duplicate and
  ends.
* **Ends.** A track ends at its shot's end (tracks never cross a cut), when it has had no matching
  detection for more than ``max_gap_s``, when its box leaves the picture or collapses, or as a
  duplicate. Frames after the last matching detection are kept only up to the first detection that
  missed the face (it may already be gone then), so every kept frame is either a detection or lies
  between two detections that saw the face, or between the last one and the shot's end.
* **Samples for identification.** Each track keeps, per time bin, the chip of its best detected face
  (largest x most frontal), in a :class:`SampleReservoir` whose bins double in length when there are
  too many: the samples spread over the whole track in bounded memory.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from dsbuilder.config import stage_defaults
from dsbuilder.face import api
# the decoder (one timeline rule for every stage) lives in dsbuilder.media
from dsbuilder.media import FALLBACK_FPS, Frame, VideoInfo, iter_video  # noqa: F401 (re-exported)

#: Without a face smaller than ``upsample_below_px`` in sight, still upsample one detection this often
#: (seconds), so that a small face entering mid-shot is found.
UPSAMPLE_PROBE_S = 2.0

#: A tracked face smaller than ``upsample_below_px`` is re-detected, upsampled, in a region of its
#: box plus this many face sizes on every side (not in the whole frame: 4x the pixels).
SMALL_FACE_MARGIN = 1.0

#: Whole-frame upsampled detections (the probes: a shot's first frame, then every
#: :data:`UPSAMPLE_PROBE_S`) also report faces whose HOG score is down to this (0 is the detector's
#: own threshold). A face that weak starts a *tentative* track, kept only if a later detection at the
#: usual threshold confirms it before the track ends. A small face otherwise gets one chance per
#: probe: at a short shot's single probe, a face scoring just under 0 would be lost for the shot.
WEAK_SCORE = -0.3

#: Threads that run detections ahead of the main loop (dlib's HOG releases the GIL); None: decided by
#: :func:`detect_threads`.
DETECT_THREADS: int | None = None


def detect_threads() -> int:
    """Measured on 2 cores (benchmarks/RESULTS.md, faces): while dlib's embeddings held the GIL in
    the main thread, it needed a core of its own and one detection thread was faster; with the torch
    embeddings (:mod:`dsbuilder.face.api`), two are (2.5 s against 2.9 s on the Hamilton clip)."""
    from dsbuilder.executors import cores as available_cores
    from dsbuilder.face import api

    if DETECT_THREADS:
        return DETECT_THREADS
    cores = available_cores()
    return max(1, min(2, cores if api.torch_installed() else cores - 1))


#: Face chips kept for identification are downscaled so that the face is at most this many pixels
#: (dlib's embedding network looks at a 150 px chip in which the face spans about 100 px).
CHIP_FACE_PX = 160

#: Margin around the face box in a kept chip, as a fraction of the face size (room for the 5-point
#: aligner and dlib's 0.25 chip padding).
CHIP_MARGIN = 0.6

#: An unmatched track whose box overlaps a matched track's by more than this is a duplicate.
DUPLICATE_IOU = 0.5

#: Decode this far ahead of the main loop (seconds), so that detections keep running while the main
#: thread is busy (e.g. embedding a finished track's samples, ~0.1 s each)...
LOOKAHEAD_S = 1.0
#: ...but never hold more than this many bytes of decoded frames (4:2:0 frames: 1.5 bytes a pixel).
LOOKAHEAD_BYTES = 64 << 20

# --- parameters and inputs -------------------------------------------------------------------------

@dataclass(frozen=True)
class FacesParams:
    """The ``stages.faces`` recipe parameters, typed (their meaning: ``STAGE_PARAMS["faces"]``)."""

    detector: str
    detect_fps: float
    detect_width: int
    upsample_below_px: int
    track_iou: float
    max_gap_s: float
    min_track_s: float
    min_face_px: int
    max_yaw_deg: float
    embed_samples: int
    match_threshold: float | None
    smooth_s: float
    crop_size: int
    crop_padding: float
    audio_rate: int

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any] | "FacesParams" | None = None) -> "FacesParams":
        """Missing keys take their defaults; unknown keys are ignored (the recipe validated them)."""
        if isinstance(params, FacesParams):
            return params
        merged = {**stage_defaults("faces"), **(params or {})}
        return cls(**{f.name: merged[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class ShotSpan:
    """The part of a shot the tracker needs: frames ``[start_frame, end_frame)`` and their times."""

    shot_id: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float

    @classmethod
    def of(cls, shot: Any, source_id: str) -> "ShotSpan":
        """From a ``shots`` table row (a mapping) or a :class:`dsbuilder.stages.shots.Shot`."""
        if isinstance(shot, ShotSpan):
            return shot
        if isinstance(shot, Mapping):
            return cls(str(shot["shot_id"]), int(shot["start_frame"]), int(shot["end_frame"]),
                       float(shot["start_s"]), float(shot["end_s"]))
        return cls(shot.shot_id(source_id), int(shot.start_frame), int(shot.end_frame),
                   float(shot.start_s), float(shot.end_s))


# --- detectors -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DetectorSpec:
    """A face detector: what pixel format it reads and how it is called."""

    name: str
    pixel_format: str  # FFmpeg pixel format the frame is converted to: "gray" or "rgb24"
    # (image, upsample, threshold) -> detections
    detect: Callable[[np.ndarray, int, float], list[api.Detection]]
    weak_score: float | None = None  # lowest score for tentative tracks; None: none reported


#: BlazeFace scores are probabilities; the tracker's scale puts the threshold at 0 (as HOG's), so a
#: detection reports ``probability - BLAZE_MIN_SCORE``. Weak faces (tentative tracks) from 0.35.
BLAZE_MIN_SCORE = 0.5
BLAZE_WEAK = -0.15


def _blazeface(img: np.ndarray, upsample: int, threshold: float) -> list[api.Detection]:
    """BlazeFace full-range on an RGB image; ``upsample`` >= 1 runs it on overlapping square tiles
    (each seen larger) instead of the whole letterboxed frame. Boxes clipped to the image, largest
    first, as :func:`dsbuilder.face.api.detect` gives them."""
    from dsbuilder.face import blazeface

    h, w = img.shape[:2]
    found = (blazeface.detect_tiled(img, BLAZE_MIN_SCORE + threshold) if upsample >= 1
             else blazeface.detector().detect(img, BLAZE_MIN_SCORE + threshold))
    out = []
    for d in found:
        x0, y0, x1, y1 = d.box
        box = (max(0, int(round(x0))), max(0, int(round(y0))), min(w, int(round(x1))),
               min(h, int(round(y1))))
        if box[2] - box[0] > 4 and box[3] - box[1] > 4:
            out.append(api.Detection(box, float(d.score) - BLAZE_MIN_SCORE))
    out.sort(key=lambda d: -api.area(d.box))
    return out


#: Detector registry; ``STAGE_PARAMS["faces"]["detector"].choices`` lists the same names.
DETECTORS: dict[str, DetectorSpec] = {
    # MediaPipe BlazeFace full-range (dsbuilder/face/blazeface.py): 5 ms a 640x360 frame, profiles
    # and small faces; the default (benchmarks/RESULTS.md, "faces: BlazeFace")
    "blazeface": DetectorSpec("blazeface", "rgb24", _blazeface, weak_score=BLAZE_WEAK),
    # HOG on grey: the same detector as on RGB (which takes the strongest gradient of the 3 channels),
    # measured 10-20 % faster here with the same faces found.
    "hog": DetectorSpec("hog", "gray", lambda img, up, th: api.detect(img, "hog", up, th),
                        weak_score=WEAK_SCORE),
    "cnn": DetectorSpec("cnn", "rgb24", lambda img, up, th: api.detect(img, "cnn", up, th)),
}


# --- boxes -----------------------------------------------------------------------------------------

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4) -> (n, m)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]),
                 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]),
                 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def face_px(boxes: np.ndarray) -> np.ndarray:
    """Face size: the square root of each box's area, in the boxes' pixels."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0,
                                                                          None))


def landmark_face_px(landmarks: np.ndarray) -> np.ndarray:
    """Face size from the 68 landmarks, (n, 68, 2) -> (n,): :func:`face_px` of the box dlib's HOG
    would put around them (:data:`PREDICTOR_BOX`), so that ``min_face_px`` means the same whatever
    the detector."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
    kx, ky, kw, kh = PREDICTOR_BOX
    size = lm.max(axis=1) - lm.min(axis=1)
    return np.sqrt(np.clip(kw * size[:, 0], 0, None) * np.clip(kh * size[:, 1], 0, None))


def int_box(box: np.ndarray) -> api.Box:
    return tuple(int(round(float(v))) for v in box)  # type: ignore[return-value]


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 (edges use the nearest value); ``window`` <= 1 is a copy."""
    values = np.asarray(values, np.float64)
    if window <= 1 or len(values) < 2:
        return values.copy()
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(values, size=window, axis=0, mode="nearest")


def smoothing_window(times: np.ndarray, seconds: float) -> int:
    """An odd number of frames spanning about ``seconds`` at the frame rate of ``times``."""
    if len(times) < 2 or seconds <= 0:
        return 1
    step = float(np.median(np.diff(times))) or 1.0 / FALLBACK_FPS
    n = max(1, int(round(seconds / step)))
    return n if n % 2 else n + 1


# --- samples for identification ----------------------------------------------------------------------

@dataclass
class Sample:
    """A face chip kept for identification: a small RGB crop around a detected face."""

    t: float
    quality: float  # face size x frontalness
    chip: np.ndarray  # RGB uint8
    box: api.Box  # the face box inside ``chip``


def make_chip(rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, api.Box]:
    """Crop the face with a margin and downscale it so the face is at most :data:`CHIP_FACE_PX`."""
    import cv2

    h, w = rgb.shape[:2]
    size = float(face_px(box)[0])
    m = CHIP_MARGIN * size
    x0, y0 = max(0, int(box[0] - m)), max(0, int(box[1] - m))
    x1, y1 = min(w, int(math.ceil(box[2] + m))), min(h, int(math.ceil(box[3] + m)))
    chip = rgb[y0:y1, x0:x1]
    scale = min(1.0, CHIP_FACE_PX / max(size, 1.0))
    if scale < 1.0:
        chip = cv2.resize(chip, (max(1, round(chip.shape[1] * scale)),
                                 max(1, round(chip.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    local = (np.asarray(box, np.float64) - [x0, y0, x0, y0]) * scale
    return np.ascontiguousarray(chip), int_box(local)


class SampleReservoir:
    """The best sample per time bin, in bounded memory, spread over the whole track.

    Bins start ``bin_s`` long; when there are more than ``capacity`` bins, bins are merged in pairs
    (keeping the better sample) and their length doubles. So a 2-second track and a 20-minute one both
    keep at most ``capacity`` chips, taken from all along the track.
    """

    def __init__(self, capacity: int, bin_s: float = 0.5):
        self.capacity = max(1, capacity)
        self.bin_s = bin_s
        self.t0: float | None = None
        self.bins: dict[int, Sample] = {}

    def _bin(self, t: float) -> int:
        return int((t - self.t0) // self.bin_s)

    def wants(self, t: float, quality: float) -> bool:
        """Would a sample at ``t`` with ``quality`` be kept? (Lets callers skip making the chip.)"""
        if self.t0 is None:
            return True
        best = self.bins.get(self._bin(t))
        return best is None or quality > best.quality

    def add(self, sample: Sample) -> None:
        if self.t0 is None:
            self.t0 = sample.t
        if not self.wants(sample.t, sample.quality):
            return
        self.bins[self._bin(sample.t)] = sample
        while len(self.bins) > self.capacity:
            self.bin_s *= 2
            merged: dict[int, Sample] = {}
            for s in self.bins.values():
                k = self._bin(s.t)
                if k not in merged or s.quality > merged[k].quality:
                    merged[k] = s
            self.bins = merged

    def pick(self, n: int) -> list[Sample]:
        """Up to ``n`` samples: the bins (in time order) cut into ``n`` runs, the best of each run."""
        ordered = [self.bins[k] for k in sorted(self.bins)]
        if len(ordered) <= n:
            return ordered
        runs = np.array_split(np.arange(len(ordered)), n)
        return [max((ordered[i] for i in run), key=lambda s: s.quality) for run in runs]


# --- tracks ----------------------------------------------------------------------------------------

@dataclass
class RawTrack:
    """A finished track: per-frame geometry in source pixels, plus samples for identification."""

    shot: ShotSpan
    frames: np.ndarray  # (n,) int64 frame indices in the source video
    times: np.ndarray  # (n,) float64 presentation times
    boxes: np.ndarray  # (n, 4) float32 raw (unsmoothed) boxes: left, top, right, bottom
    landmarks: np.ndarray  # (n, 68, 2) float32
    detected: np.ndarray  # (n,) bool: a detection (else landmark-tracked)
    end_s: float  # time of the frame after the last one (the shot's end_s at a cut)
    ended_by: str  # "shot_end", "gap", "lost" or "duplicate"
    samples: list[Sample] = field(default_factory=list)
    screened: dict | None = None  # the early verdict on a track that is not a target (Screen)

    @property
    def start_frame(self) -> int:
        return int(self.frames[0])

    @property
    def end_frame(self) -> int:  # exclusive
        return int(self.frames[-1]) + 1

    @property
    def start_s(self) -> float:
        return float(self.times[0])

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def n_detections(self) -> int:
        return int(self.detected.sum())

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class _LiveTrack:
    """A track being followed. Per-frame values go to lists, turned into arrays when it ends."""

    def __init__(self, shot: ShotSpan, reservoir_size: int, bin_s: float):
        self.shot = shot
        self.frames: list[int] = []
        self.times: list[float] = []
        self.boxes: list[np.ndarray] = []
        self.landmarks: list[np.ndarray] = []
        self.detected: list[bool] = []
        self.last_match_t = -math.inf
        self.first_miss: int | None = None  # position of the first miss since the last match
        self.calibration = (0.0, 0.0, 1.0, 1.0)  # detector box relative to the landmarks' box
        self.reservoir = SampleReservoir(reservoir_size, bin_s)
        self.screened: dict | None = None  # not a target: followed by its detections only
        self.screen_at = SCREEN_SAMPLES[0]  # screen when the reservoir holds this many samples
        self.confirmed = True  # False: started by a weak face, not yet seen at the usual threshold

    @property
    def box(self) -> np.ndarray:
        return self.boxes[-1]

    def append(self, frame: Frame, box: np.ndarray, lm: np.ndarray, detected: bool) -> None:
        self.frames.append(frame.index)
        self.times.append(frame.t)
        self.boxes.append(np.asarray(box, np.float32))
        self.landmarks.append(lm)
        self.detected.append(detected)

    def calibrate(self, box: np.ndarray, lm: np.ndarray) -> None:
        """Remember where the detector puts its box relative to the landmarks' bounding box."""
        lx0, ly0 = lm.min(axis=0)
        lx1, ly1 = lm.max(axis=0)
        lw, lh = max(lx1 - lx0, 1.0), max(ly1 - ly0, 1.0)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        self.calibration = (float((cx - (lx0 + lx1) / 2) / lw), float((cy - (ly0 + ly1) / 2) / lh),
                            float((box[2] - box[0]) / lw), float((box[3] - box[1]) / lh))

    def box_from_landmarks(self, lm: np.ndarray, calibration: tuple | None = None) -> np.ndarray:
        kx, ky, kw, kh = calibration or self.calibration
        lx0, ly0 = lm.min(axis=0)
        lx1, ly1 = lm.max(axis=0)
        lw, lh = max(lx1 - lx0, 1.0), max(ly1 - ly0, 1.0)
        cx, cy = (lx0 + lx1) / 2 + kx * lw, (ly0 + ly1) / 2 + ky * lh
        w, h = kw * lw, kh * lh
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)

    def finish(self, end: int | None, end_s: float, ended_by: str, n_samples: int) -> RawTrack | None:
        """Freeze the first ``end`` frames (all when None) into a :class:`RawTrack`; None if empty."""
        end = len(self.frames) if end is None else end
        if end <= 0:
            return None
        return RawTrack(
            shot=self.shot, frames=np.asarray(self.frames[:end], np.int64),
            times=np.asarray(self.times[:end], np.float64),
            boxes=np.stack(self.boxes[:end]).astype(np.float32),
            landmarks=np.stack(self.landmarks[:end]).astype(np.float32),
            detected=np.asarray(self.detected[:end], bool), end_s=float(end_s), ended_by=ended_by,
            samples=[s for s in self.reservoir.pick(n_samples) if s.t < end_s],
            screened=self.screened)


#: ``screen(samples) -> verdict or None``: is a live track clearly not any recipe person? Called when
#: its reservoir holds :data:`SCREEN_SAMPLES` samples (the faces stage embeds them and compares them
#: with the dictionary, :func:`dsbuilder.stages.faces.screener`; the verdict is a dict with its
#: ``detail`` and the nearest person). A screened track is followed by its detections only (no
#: landmarks between them) and ends as ``not_target``.
Screen = Callable[[list["Sample"]], "dict | None"]
SCREEN_SAMPLES = (3, 6)

#: Where dlib's HOG puts its box relative to the 68 landmarks' bounding box (centre offset in box
#: widths/heights, width and height ratios): medians over the faces of the test photos and the Hamilton
#: clip (57 HOG detections; BlazeFace's: -0.025, -0.111, 1.146, 1.111). The landmark predictor was
#: trained on such boxes.
PREDICTOR_BOX = (-0.027, -0.104, 1.098, 1.072)


def _inside(box: np.ndarray, width: int, height: int) -> bool:
    """Is the box plausible: not collapsed, and its centre in the picture?"""
    w, h = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return w >= 8 and h >= 8 and 0 <= cx < width and 0 <= cy < height


class _Schedule:
    """Which frames are detected, and which of those are upsampled whatever is in sight.

    Decided from frame times alone (not from the tracks), so it can run ahead of the main loop: a
    shot's first frame is detected with upsampling, then a frame every ``1 / detect_fps`` seconds, with
    upsampling again every :data:`UPSAMPLE_PROBE_S` seconds (the "probe" for small faces, new ones
    included). Between probes, faces in sight that are small are re-detected upsampled in a region
    around each (:func:`_with_small_faces`): that depends on the tracks and is done by the main loop.
    """

    def __init__(self, p: FacesParams):
        self.interval = 1.0 / float(p.detect_fps)
        self.upsampling = int(p.upsample_below_px) > 0
        self.shot_id: str | None = None
        self.next_t = 0.0
        self.next_probe_t = 0.0
        self.probe = False  # was the last planned detection a probe?

    def plan(self, frame: Frame, shot: ShotSpan) -> int | None:
        """None if ``frame`` is not detected; else the upsampling (0 or 1) planned for it."""
        first = shot.shot_id != self.shot_id
        if not first and frame.t < self.next_t - 1e-6:
            return None
        self.shot_id = shot.shot_id
        self.next_t = frame.t + self.interval
        self.probe = self.upsampling and (first or frame.t >= self.next_probe_t - 1e-6)
        if self.probe:
            self.next_probe_t = frame.t + UPSAMPLE_PROBE_S
        return int(self.probe)


@dataclass
class _Pending:
    """A decoded frame waiting for the main loop, with its detection running ahead (if planned)."""

    frame: Frame
    shot: ShotSpan | None
    future: Any = None  # concurrent.futures.Future of the detection boxes
    upsample: int = 0  # the upsampling the detection was submitted with
    probe: bool = False  # the schedule's probe: upsampled whatever is in sight
    image: np.ndarray | None = None  # the detection image (kept in case it must be redone)


@dataclass(frozen=True)
class Found:
    """What one detection found, in source pixels: ``boxes`` (k, 4) at the detector's threshold and
    ``weak`` (m, 4) scoring between :attr:`DetectorSpec.weak_score` and it (float32)."""

    boxes: np.ndarray
    weak: np.ndarray


def _as_boxes(dets: Sequence[api.Detection], scale: float) -> np.ndarray:
    if not dets:
        return np.zeros((0, 4), np.float32)
    return (np.array([d.box for d in dets], np.float64) * scale).astype(np.float32)


def _run_detection(spec: DetectorSpec, image: np.ndarray, upsample: int, scale: float,
                   weak: bool = False) -> Found:
    """Detect in the (downscaled) image; boxes in source pixels. ``weak``: report weak faces too
    (detectors without :attr:`DetectorSpec.weak_score` report none)."""
    if not weak or spec.weak_score is None:
        return Found(_as_boxes(spec.detect(image, upsample, 0.0), scale), _as_boxes([], scale))
    dets = spec.detect(image, upsample, spec.weak_score)
    return Found(_as_boxes([d for d in dets if d.score >= 0.0], scale),
                 _as_boxes([d for d in dets if d.score < 0.0], scale))


def _with_small_faces(spec: DetectorSpec, image: np.ndarray, boxes: np.ndarray, small: np.ndarray,
                      scale: float) -> np.ndarray:
    """``boxes`` (a detection of the whole ``image`` without upsampling, source pixels) plus what an
    upsampled detection finds in a region around each ``small`` tracked face (the face and
    :data:`SMALL_FACE_MARGIN` times its size on every side). A region's box that overlaps a box
    already found (IoU > :data:`DUPLICATE_IOU`) is the same face and is dropped."""
    h, w = image.shape[:2]
    out = [b for b in np.asarray(boxes, np.float32).reshape(-1, 4)]
    for box in np.asarray(small, np.float64) / scale:
        m = SMALL_FACE_MARGIN * float(face_px(box)[0])
        x0, y0 = max(0, int(box[0] - m)), max(0, int(box[1] - m))
        x1, y1 = min(w, int(math.ceil(box[2] + m))), min(h, int(math.ceil(box[3] + m)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        found = _run_detection(spec, np.ascontiguousarray(image[y0:y1, x0:x1]), 1, 1.0).boxes
        for b in found + np.array([x0, y0, x0, y0], np.float32):
            b = (b * scale).astype(np.float32)
            if not out or box_iou(b[None], np.stack(out)).max() <= DUPLICATE_IOU:
                out.append(b)
    return np.stack(out) if out else np.zeros((0, 4), np.float32)


def _associate(track_boxes: np.ndarray, det_boxes: np.ndarray, min_iou: float
               ) -> list[tuple[int, int]]:
    """Hungarian assignment of detections to tracks on IoU; pairs below ``min_iou`` are refused."""
    if not len(track_boxes) or not len(det_boxes):
        return []
    from scipy.optimize import linear_sum_assignment

    iou = box_iou(track_boxes, det_boxes)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= max(min_iou, 1e-9)]


class _Tracker:
    """The live tracks of the current shot, updated frame by frame. Finished tracks go to ``done``."""

    def __init__(self, p: FacesParams, info: VideoInfo, screen: Screen | None = None):
        self.p = p
        self.info = info
        self.live: list[_LiveTrack] = []
        self.done: list[RawTrack] = []
        self.screen = screen

    def small_faces(self, shot: ShotSpan, below_px: float) -> np.ndarray:
        """Boxes ``(k, 4)`` (source pixels) of the live faces of ``shot`` smaller than ``below_px``."""
        boxes = [t.box for t in self.live if t.shot is shot and float(face_px(t.box)[0]) < below_px]
        return np.array(boxes, np.float64).reshape(-1, 4)

    def end(self, track: _LiveTrack, keep: int | None, end_s: float, why: str) -> None:
        """End ``track``, keeping its first ``keep`` frames (all when None)."""
        self.live.remove(track)
        if not track.confirmed:  # a weak face no detection confirmed: never a face track
            return
        raw = track.finish(keep, end_s, why, int(self.p.embed_samples))
        if raw is not None:
            self.done.append(raw)

    def end_after_misses(self, track: _LiveTrack, frame: Frame, why: str) -> None:
        """End ``track`` at its first missed detection (or here, when it has not missed yet)."""
        keep = track.first_miss if track.first_miss is not None else len(track.frames)
        end_s = track.times[keep] if keep < len(track.times) else frame.t
        self.end(track, keep, end_s, why)

    def end_at_cut(self, track: _LiveTrack) -> None:
        """End ``track`` with its shot: at the shot's end, or at its first miss if it has one."""
        if track.first_miss is not None:
            self.end(track, track.first_miss, track.times[track.first_miss], "shot_end")
        else:
            self.end(track, None, track.shot.end_s, "shot_end")

    def leave_shot(self, shot: ShotSpan | None) -> None:
        """Entering ``shot`` (None: a frame outside the listed shots) ends other shots' tracks."""
        for track in [t for t in self.live if t.shot is not shot]:
            self.end_at_cut(track)

    def finish(self) -> None:
        for track in list(self.live):
            self.end_at_cut(track)

    def follow_all(self, frame: Frame) -> None:
        """A frame without detection: follow every live track by its landmarks."""
        for track in list(self.live):
            if not self.follow(track, frame):
                self.end_after_misses(track, frame, "lost")

    def detection(self, frame: Frame, shot: ShotSpan, det_boxes: np.ndarray,
                  weak_boxes: np.ndarray | None = None) -> None:
        """A detected frame: match detections to tracks; follow, end or start tracks accordingly.
        ``weak_boxes`` (faces under the detector's threshold) only start tentative tracks."""
        p = self.p
        tracks = list(self.live)
        matches = _associate(np.array([t.box for t in tracks]).reshape(-1, 4), det_boxes,
                             float(p.track_iou))
        matched = {ti for ti, _ in matches}
        for ti, di in matches:
            self.match(tracks[ti], frame, det_boxes[di])
        matched_boxes = np.array([tracks[ti].box for ti in sorted(matched)]).reshape(-1, 4)
        for ti, track in enumerate(tracks):
            if ti in matched:
                continue
            if len(matched_boxes) and box_iou(track.box[None], matched_boxes).max() > DUPLICATE_IOU:
                self.end(track, len(track.frames), frame.t, "duplicate")
                continue
            # a miss: keep following until the gap is too long, remembering where the misses began
            if track.first_miss is None:
                track.first_miss = len(track.frames)
            if frame.t - track.last_match_t > float(p.max_gap_s) + 1e-6:
                self.end_after_misses(track, frame, "gap")
            elif not self.follow(track, frame, missed=True):
                self.end_after_misses(track, frame, "lost")
        claimed = {di for _, di in matches}
        for di, box in enumerate(det_boxes):
            if di in claimed:
                continue
            live_boxes = np.array([t.box for t in self.live]).reshape(-1, 4)
            if len(live_boxes) and box_iou(box[None], live_boxes).max() >= float(p.track_iou):
                continue  # overlaps a live track: not a new face
            self.start(frame, shot, box)
        for box in np.asarray(weak_boxes if weak_boxes is not None else (), np.float32).reshape(-1, 4):
            boxes = np.concatenate([np.array([t.box for t in self.live]).reshape(-1, 4), det_boxes])
            if len(boxes) and box_iou(box[None], boxes).max() >= float(p.track_iou):
                continue  # a face already followed or found
            self.start(frame, shot, box).confirmed = False

    def start(self, frame: Frame, shot: ShotSpan, det_box: np.ndarray) -> _LiveTrack:
        """A new track from a detection."""
        p = self.p
        # one bin per detection interval to start with; twice as many bins as samples to pick
        track = _LiveTrack(shot, 2 * int(p.embed_samples), 1.0 / float(p.detect_fps))
        self.match(track, frame, det_box)
        self.live.append(track)
        return track

    def match(self, track: _LiveTrack, frame: Frame, det_box: np.ndarray) -> None:
        """A detection of ``track``: landmarks in the detector's box, calibration, maybe a sample."""
        lm = api.landmarks(frame.gray(), int_box(det_box))
        track.calibrate(det_box, lm)
        track.append(frame, det_box, lm, detected=True)
        track.last_match_t = frame.t
        track.first_miss = None
        track.confirmed = True
        yaw, _ = api.yaw_pitch(lm)
        frontal = max(0.05, math.cos(math.radians(min(abs(yaw), 90.0))))
        quality = float(face_px(det_box)[0]) * frontal
        if track.reservoir.wants(frame.t, quality):
            chip, local = make_chip(frame.rgb(), det_box)
            track.reservoir.add(Sample(frame.t, quality, chip, local))
            n = len(track.reservoir.bins)
            if self.screen is not None and track.screened is None and n >= track.screen_at:
                track.screened = self.screen(track.reservoir.pick(n))
                later = [k for k in SCREEN_SAMPLES if k > n]
                track.screen_at = later[0] if later else 10 ** 9

    def follow(self, track: _LiveTrack, frame: Frame, missed: bool = False) -> bool:
        """Landmark tracking: the predictor in a box placed on the previous landmarks as dlib's HOG
        places its boxes (the boxes it was trained on: :data:`PREDICTOR_BOX`; another detector's box
        shape, fed back frame after frame, makes the fit drift), then the track's box from the new
        landmarks in its detector's calibration. False if lost. A screened track (not a target) is
        not followed between its detections: the predictor's time goes to the targets."""
        if track.screened is not None:
            if missed:  # a detection frame without it: keep its place (where misses began)
                track.append(frame, track.box, track.landmarks[-1], detected=False)
            return True
        lm = api.landmarks(frame.gray(),
                           int_box(track.box_from_landmarks(track.landmarks[-1], PREDICTOR_BOX)))
        box = track.box_from_landmarks(lm)
        if not _inside(box, self.info.width, self.info.height):
            return False
        track.append(frame, box, lm, detected=False)
        return True


def lookahead_frames(info: VideoInfo, detect_fps: float) -> int:
    """How many decoded frames to keep ahead: about :data:`LOOKAHEAD_S`, at least two detection
    intervals, within :data:`LOOKAHEAD_BYTES`."""
    two_intervals = int(math.ceil(2 * info.fps / detect_fps)) + 1
    by_time = int(math.ceil(LOOKAHEAD_S * info.fps))
    by_memory = int(LOOKAHEAD_BYTES // max(1, int(info.width * info.height * 1.5)))
    return max(2, min(max(two_intervals, by_time), max(two_intervals, by_memory)))


def track_video(path: str | Path, shots: Sequence[ShotSpan], params: Mapping[str, Any] | FacesParams,
                screen: Screen | None = None) -> Iterator[RawTrack]:
    """Detect and track the faces of one video, streaming; yield each track when it ends.

    Only frames inside ``shots`` are looked at (a shot missing from the list, e.g. one rejected as too
    short, is skipped). Raises :class:`~dsbuilder.media.MediaError` (``decode_error``) when the video
    cannot be opened or decoded.
    """
    from concurrent.futures import ThreadPoolExecutor

    p = FacesParams.from_mapping(params)
    spec = DETECTORS[p.detector]
    spans = sorted(shots, key=lambda s: s.start_frame)
    decoded = iter_video(path)
    pool = ThreadPoolExecutor(max_workers=detect_threads(), thread_name_prefix="face-detect")
    try:
        info, first = next(decoded)
        # the detection frame: downscaled to detect_width (never upscaled), even height
        det_w = min(int(p.detect_width), info.width)
        det_h = max(2, int(round(info.height * det_w / info.width / 2)) * 2)
        det_scale = info.width / det_w
        lookahead = lookahead_frames(info, float(p.detect_fps))

        def frames() -> Iterator[Frame]:
            yield first
            for _, f in decoded:
                yield f

        source = frames()
        tracker = _Tracker(p, info, screen)
        schedule = _Schedule(p)
        pending: deque[_Pending] = deque()
        shot_pos = 0

        def shot_of(index: int) -> ShotSpan | None:
            nonlocal shot_pos
            while shot_pos < len(spans) and index >= spans[shot_pos].end_frame:
                shot_pos += 1
            if shot_pos < len(spans) and spans[shot_pos].start_frame <= index:
                return spans[shot_pos]
            return None

        small_px = int(p.upsample_below_px)

        def refill() -> None:
            """Decode ahead; submit the detections of frames the schedule picks."""
            while len(pending) < lookahead:
                frame = next(source, None)
                if frame is None:
                    return
                item = _Pending(frame, shot_of(frame.index))
                if item.shot is not None:
                    upsample = schedule.plan(frame, item.shot)
                    if upsample is not None:
                        item.upsample = upsample
                        item.image = frame.for_detection(det_w, det_h, spec.pixel_format)
                        # weak faces from the probes only (upsampled whole frames)
                        item.future = pool.submit(_run_detection, spec, item.image, upsample,
                                                  det_scale, bool(upsample))
                        item.probe = schedule.probe
                pending.append(item)

        refill()
        while pending:
            item = pending.popleft()
            frame, shot = item.frame, item.shot
            tracker.leave_shot(shot)
            if shot is not None and item.future is not None:
                found = item.future.result()
                boxes = found.boxes
                if small_px > 0 and not item.upsample:
                    # faces in sight that are small: detected again, upsampled, around each of them
                    # (on the tracks as they are now, so the result never depends on the look-ahead)
                    small = tracker.small_faces(shot, small_px * det_scale)
                    if len(small):
                        boxes = _with_small_faces(spec, item.image, boxes, small, det_scale)
                tracker.detection(frame, shot, boxes, found.weak)
            elif shot is not None:
                tracker.follow_all(frame)
            item.image = None
            frame.release()
            yield from tracker.done
            tracker.done.clear()
            refill()
        tracker.finish()
        yield from tracker.done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        decoded.close()
