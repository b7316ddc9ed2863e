"""Face primitives on numpy arrays, over dlib and the models in ``face_recognition_models``.

In the manner of face_recognition's ``api.py``: a few small functions, models loaded on first use (never
at import). Images are RGB uint8 arrays; boxes are ``(left, top, right, bottom)`` integer pixels.

Models (all inside the ``face-recognition-models`` wheel, CC0 / Boost licences, by Davis King):
HOG frontal face detector (built into dlib), MMOD CNN detector, 5- and 68-point shape predictors, and the
ResNet-34 face embedding network (128-d; same identity below ~0.6 Euclidean distance on LFW).

Embeddings run on one of two engines with the same network and weights (:data:`EMBEDDERS`): ``torch``,
our port of dlib's ResNet (:mod:`dsbuilder.face.resnet_torch`: equal to dlib's descriptors to float32
rounding, batched, releases the GIL, 10-30x faster on this project's CPUs), or ``dlib`` itself.
``auto`` (the default) takes torch when it is installed. Jittered embeddings (``jitters > 0``, dlib's
random crops and flips) always run in dlib.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

Box = tuple[int, int, int, int]


def model_files():
    """The ``face_recognition_models`` package (model file paths). It imports ``pkg_resources``,
    whose deprecation warning says nothing to a user of ours (setuptools<82 is pinned for it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import face_recognition_models

    return face_recognition_models


@functools.lru_cache(maxsize=None)
def _models():
    import dlib

    frm = model_files()
    return {
        "sp68": dlib.shape_predictor(frm.pose_predictor_model_location()),
        "sp5": dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
        "resnet": dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    }


# dlib's detectors keep scan state inside the object: two threads calling one detector corrupt memory
# (measured: "munmap_chunk(): invalid pointer"). Each thread gets its own; the shape predictors are
# read-only and shared.
_per_thread = threading.local()


@functools.lru_cache(maxsize=None)
def _hog_pickle() -> bytes:
    """dlib's HOG detector, pickled: building it takes ~0.7 s, unpickling a copy ~2 ms."""
    import pickle

    import dlib

    return pickle.dumps(dlib.get_frontal_face_detector())


def _hog():
    det = getattr(_per_thread, "hog", None)
    if det is None:
        import pickle

        det = _per_thread.hog = pickle.loads(_hog_pickle())
    return det


def _cnn():
    det = getattr(_per_thread, "cnn", None)
    if det is None:
        import dlib

        frm = model_files()
        det = _per_thread.cnn = dlib.cnn_face_detection_model_v1(
            frm.cnn_face_detector_model_location())
    return det


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float


def detect(img: np.ndarray, detector: str = "hog", upsample: int = 0,
           threshold: float = 0.0) -> list[Detection]:
    """Detect faces. ``detector``: "hog" (fast, frontal) or "cnn" (MMOD; slow on CPU, better on
    profiles and small faces). Boxes are clipped to the image. Safe to call from several threads
    (each thread has its own detector; HOG releases the GIL while it runs).

    ``threshold``: lowest HOG score reported (0 is dlib's own threshold; below it, weaker candidates
    too). The CNN detector reports its own detections whatever the threshold."""
    h, w = img.shape[:2]
    out = []
    if detector == "hog":
        rects, scores, _ = _hog().run(img, upsample, float(threshold))
        pairs = zip(rects, scores)
    elif detector == "cnn":
        pairs = ((d.rect, d.confidence) for d in _cnn()(img, upsample))
    else:
        raise ValueError(f"unknown face detector {detector!r} (hog or cnn)")
    for r, s in pairs:
        box = (max(0, r.left()), max(0, r.top()), min(w, r.right()), min(h, r.bottom()))
        if box[2] - box[0] > 4 and box[3] - box[1] > 4:
            out.append(Detection(box, float(s)))
    out.sort(key=lambda d: -area(d.box))
    return out


def area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def _rect(box: Box):
    import dlib

    return dlib.rectangle(int(box[0]), int(box[1]), int(box[2]), int(box[3]))


def landmarks(img: np.ndarray, box: Box) -> np.ndarray:
    """68 landmarks (iBUG 300-W order) as a (68, 2) float32 array."""
    shape = _models()["sp68"](img, _rect(box))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


#: Engines for :func:`embed_many`: same network and weights (see the module docstring).
EMBEDDERS = ("auto", "torch", "dlib")

#: The aligned chip dlib's face descriptor is computed on: side in pixels and padding.
CHIP_SIZE, CHIP_PADDING = 150, 0.25


@functools.lru_cache(maxsize=None)
def torch_installed() -> bool:
    """Is torch importable here (for the embedding engine and the detection threads)?"""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def face_chip(img: np.ndarray, box: Box) -> np.ndarray:
    """The aligned 150 px RGB chip of the face in ``box`` (5-point landmarks, padding 0.25): what
    dlib's ``compute_face_descriptor(img, shape)`` embeds."""
    import dlib

    shape = _models()["sp5"](img, _rect(box))
    return np.asarray(dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=CHIP_PADDING))


def embed_many(faces: Sequence[tuple[np.ndarray, Box]], engine: str = "auto") -> np.ndarray:
    """128-d ResNet embeddings ``(n, 128)`` float32 of ``(image, box)`` pairs, in one batch."""
    if engine not in EMBEDDERS:
        raise ValueError(f"unknown embedding engine {engine!r} (one of {', '.join(EMBEDDERS)})")
    if not faces:
        return np.zeros((0, 128), np.float32)
    chips = np.stack([face_chip(img, box) for img, box in faces])
    if engine == "torch" or (engine == "auto" and torch_installed()):
        from dsbuilder.face.resnet_torch import embed_chips

        return embed_chips(chips)
    net = _models()["resnet"]
    return np.stack([np.asarray(net.compute_face_descriptor(c), np.float32) for c in chips])


def embed(img: np.ndarray, box: Box, jitters: int = 0, engine: str = "auto") -> np.ndarray:
    """128-d ResNet embedding of the face in ``box`` (aligned with the 5-point model), float32."""
    if jitters:
        shape = _models()["sp5"](img, _rect(box))
        vec = _models()["resnet"].compute_face_descriptor(img, shape, jitters)
        return np.asarray(vec, dtype=np.float32)
    return embed_many([(img, box)], engine)[0]


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between rows of ``a`` (n, 128) and ``b`` (m, 128) -> (n, m)."""
    a = np.atleast_2d(a).astype(np.float64)
    b = np.atleast_2d(b).astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(d2, 0, None))


def sharpness(img: np.ndarray, box: Box, size: int = 128) -> float:
    """Variance of the Laplacian of the face, resized to ``size`` px: low means blurry."""
    import cv2

    l, t, r, b = box
    crop = img[t:b, l:r]
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


# A generic 3-D face (millimetres; nose tip at the origin) for the six landmarks used by head_pose.
_MODEL_3D = np.array([
    (0.0, 0.0, 0.0),  # 30 nose tip
    (0.0, -63.6, -12.5),  # 8 chin
    (-43.3, 32.7, -26.0),  # 36 left eye, outer corner
    (43.3, 32.7, -26.0),  # 45 right eye, outer corner
    (-28.9, -28.9, -24.1),  # 48 left mouth corner
    (28.9, -28.9, -24.1),  # 54 right mouth corner
], dtype=np.float64)
_MODEL_IDX = [30, 8, 36, 45, 48, 54]


def yaw_pitch(lm: np.ndarray) -> tuple[float, float]:
    """Head yaw and pitch in degrees, from six of the 68 landmarks and a generic 3-D face
    (``cv2.solvePnP`` with a pinhole camera whose focal length is the face's scale).

    An estimate good to about ±10-15 degrees: enough to tell frontal from three-quarter from profile.
    Yaw 0 is frontal; its sign says which way the head turns. Pitch 0 is level.
    """
    import cv2

    pts = lm[_MODEL_IDX].astype(np.float64)
    centre = pts.mean(axis=0)
    size = float(np.ptp(lm[:, 0])) or 1.0
    focal = 4.0 * size  # a normal lens: the face spans about a quarter of the field
    cam = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(_MODEL_3D, pts, cam, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return 0.0, 0.0
    rot, _ = cv2.Rodrigues(rvec)
    # image y points down and the model's y up: flip to read the angles in the model's frame
    rot = np.diag([1.0, -1.0, -1.0]) @ rot
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, -rot[2, 0]))))
    pitch = math.degrees(math.atan2(rot[2, 1], rot[2, 2]))
    return yaw, pitch


def mouth_aperture(lm: np.ndarray) -> float:
    """Inner-lip opening divided by the mouth width (scale-free; ~0 closed, ~0.5+ wide open)."""
    opening = float(np.mean([np.linalg.norm(lm[61 + i] - lm[67 - i]) for i in range(3)]))
    width = float(np.linalg.norm(lm[54] - lm[48])) or 1.0
    return opening / width


def median_distance(embeddings: Sequence[np.ndarray], reference: np.ndarray) -> float:
    """Median over ``embeddings`` of the distance to the nearest reference embedding."""
    if len(embeddings) == 0 or len(reference) == 0:
        return float("inf")
    return float(np.median(distance(np.stack(embeddings), reference).min(axis=1)))
