"""``dsbuilder eval``: the face pipeline's parts measured against annotations.

* **detection** (:func:`eval_detection`): images and face boxes, in WIDER FACE's text format (an image
  path, a box count, then ``x y w h blur expression illumination invalid occlusion pose`` per box;
  boxes marked invalid are ignored: neither a miss nor a false detection when found) or a CSV with
  columns ``image,x,y,w,h``. Every detector of the registry (``blazeface``, ``hog``, ``cnn``) runs on
  every image; a detection matches an unmatched annotated box at IoU >= 0.5 (greedily, strongest
  detection first). Reports recall, precision, true/false positives and misses per detector.
* **landmarks** (:func:`eval_landmarks`): images with iBUG ``.pts`` files beside them (68 points, as in
  300-W). The face box is the detector's box that best overlaps the annotated points' bounding box
  (the points' box itself when no detection overlaps it by IoU >= 0.3); the 68-point predictor runs in
  it. NME = mean point-to-point error / outer-eye-corner distance (points 37 and 46, 1-based), per
  image and mean, and the failure rate at NME > 0.1.
* **fer** (:func:`eval_fer`): a FER2013 CSV (optionally with FER+'s ``fer2013new.csv`` votes, whose
  majority replaces FER2013's label: contempt, unknown and not-a-face faces are left out), or class
  folders ``DIR/<split>/<class>/*``; the bundled teacher or a model file (``.onnx``, ``.h5``). Accuracy,
  macro-F1, per-class recall, confusion matrix, next to the majority-class baseline.

Each returns a JSON-ready dict; the CLI prints a table and writes the JSON.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dsbuilder.errors import UsageError

log = logging.getLogger(__name__)

IOU = 0.5
NME_FAILURE = 0.1


@dataclass
class AnnotatedImage:
    path: Path
    boxes: np.ndarray  # (n, 4) x0, y0, x1, y1
    ignore: np.ndarray  # (n,) bool: WIDER FACE's invalid boxes


# --- detection -------------------------------------------------------------------------------------

def read_boxes(annotations: str | Path, images: str | Path) -> list[AnnotatedImage]:
    """WIDER FACE text annotations or an ``image,x,y,w,h`` CSV; image paths relative to ``images``."""
    annotations, images = Path(annotations), Path(images)
    text = annotations.read_text(encoding="utf-8", errors="replace")
    by_image: dict[str, tuple[list, list]] = {}
    if annotations.suffix.lower() == ".csv":
        for line, row in enumerate(csv.DictReader(text.splitlines()), start=2):
            try:
                x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
                name = row["image"]
            except (KeyError, TypeError, ValueError):
                raise UsageError(f"{annotations}:{line}: expected image,x,y,w,h",
                                 "a CSV with the header image,x,y,w,h") from None
            boxes, ignore = by_image.setdefault(name, ([], []))
            boxes.append([x, y, x + w, y + h])
            ignore.append(False)
    else:
        lines = [ln.strip() for ln in text.splitlines()]
        i = 0
        try:
            while i < len(lines):
                if not lines[i]:
                    i += 1
                    continue
                name, n = lines[i], int(lines[i + 1])
                boxes, ignore = by_image.setdefault(name, ([], []))
                rows = lines[i + 2:i + 2 + max(n, 1)]  # a count of 0 is followed by one zero line
                for r in rows[:n]:
                    v = [float(t) for t in r.split()]
                    x, y, w, h = v[:4]
                    invalid = len(v) > 7 and v[7] == 1
                    if w > 0 and h > 0:
                        boxes.append([x, y, x + w, y + h])
                        ignore.append(invalid)
                i += 2 + max(n, 1)
        except (IndexError, ValueError):
            raise UsageError(f"{annotations}: line {i + 1}: not WIDER FACE's format",
                             "an image path, a box count, then x y w h ... per box") from None
    out = []
    for name, (boxes, ignore) in by_image.items():
        path = images / name
        if not path.is_file():
            raise UsageError(f"{path}: annotated image not found", "IMAGES is the folder the "
                             "annotation's image paths are relative to")
        out.append(AnnotatedImage(path, np.array(boxes, float).reshape(-1, 4),
                                  np.array(ignore, bool)))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from dsbuilder.face.tracker import box_iou

    return box_iou(a, b)


def match(dets: np.ndarray, scores: np.ndarray, gt: np.ndarray, ignore: np.ndarray,
          iou: float = IOU) -> tuple[int, int, int]:
    """Greedy matching, strongest detection first: ``(true positives, false positives, misses)``.
    A detection on an ignored box counts as neither."""
    used = np.zeros(len(gt), bool)
    tp = fp = 0
    ious = _iou(dets, gt) if len(dets) and len(gt) else np.zeros((len(dets), len(gt)))
    for d in np.argsort(-scores, kind="stable"):
        cand = [(ious[d, g], g) for g in range(len(gt)) if not used[g] and ious[d, g] >= iou]
        if not cand:
            fp += 1
            continue
        _, g = max(cand)
        used[g] = True
        if not ignore[g]:
            tp += 1
    misses = int(((~used) & (~ignore)).sum())
    return tp, fp, misses


def _load_rgb(path: Path) -> np.ndarray:
    """An annotated image, upright RGB (the dictionary stage's photo loader); one that does not
    decode is a usage error naming it."""
    from dsbuilder.errors import PhotoError
    from dsbuilder.face.candidates import load_photo

    try:
        return load_photo(path)
    except PhotoError as exc:
        raise UsageError(f"{path}: {exc.detail}", "annotations must name decodable images") \
            from None


def _for_detector(rgb: np.ndarray, pixel_format: str) -> np.ndarray:
    """The image in the pixel format a detector of the registry reads (``rgb24`` or ``gray``)."""
    import cv2

    return rgb if pixel_format == "rgb24" else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def eval_detection(images: Sequence[AnnotatedImage], detectors: Sequence[str] = ("blazeface", "hog"),
                   upsample: int = 0) -> dict[str, Any]:
    """Recall and precision at IoU >= 0.5 per detector of the registry."""
    from dsbuilder.face.tracker import DETECTORS

    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise UsageError(f"unknown detector(s) {unknown}", f"detectors are: {', '.join(DETECTORS)}")
    out: dict[str, Any] = {"images": len(images), "faces": int(sum((~a.ignore).sum() for a in images)),
                           "iou": IOU, "detectors": {}}
    for name in detectors:
        spec = DETECTORS[name]
        tp = fp = fn = 0
        per_image = []
        for a in images:
            dets = spec.detect(_for_detector(_load_rgb(a.path), spec.pixel_format), upsample, 0.0)
            boxes = np.array([d.box for d in dets], float).reshape(-1, 4)
            scores = np.array([d.score for d in dets], float)
            t, f, m = match(boxes, scores, a.boxes, a.ignore)
            tp, fp, fn = tp + t, fp + f, fn + m
            per_image.append({"image": a.path.name, "found": t, "false": f, "missed": m})
        out["detectors"][name] = {
            "recall": tp / max(tp + fn, 1), "precision": tp / max(tp + fp, 1) if tp + fp else None,
            "true_positives": tp, "false_positives": fp, "misses": fn, "per_image": per_image}
    return out


# --- landmarks -------------------------------------------------------------------------------------

def read_pts(path: str | Path) -> np.ndarray:
    """An iBUG ``.pts`` file -> (n, 2) points (0-based pixel coordinates, as 300-W's are 1-based)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        body = text[text.index("{") + 1:text.index("}")]
        pts = np.array([[float(v) for v in ln.split()] for ln in body.splitlines() if ln.strip()])
    except ValueError:
        raise UsageError(f"{path}: not an iBUG .pts file", "version: 1, n_points: 68, { x y ... }") \
            from None
    return pts - 1.0


def write_pts(path: str | Path, points: np.ndarray) -> None:
    """Points (0-based) as an iBUG ``.pts`` file (1-based)."""
    lines = ["version: 1", f"n_points: {len(points)}", "{"]
    lines += [f"{x + 1:.3f} {y + 1:.3f}" for x, y in np.asarray(points, float)]
    Path(path).write_text("\n".join(lines + ["}"]) + "\n")


def nme(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean point error normalised by the outer-eye-corner distance (points 36 and 45, 0-based)."""
    d = float(np.linalg.norm(truth[36] - truth[45]))
    return float(np.linalg.norm(pred - truth, axis=1).mean() / max(d, 1e-9))


def eval_landmarks(images_dir: str | Path, detector: str = "blazeface") -> dict[str, Any]:
    """NME of the 68-point predictor on every image of ``images_dir`` with a ``.pts`` beside it."""
    from dsbuilder.face import api
    from dsbuilder.face.tracker import DETECTORS

    images_dir = Path(images_dir)
    pairs = [(p, p.with_suffix(".pts")) for p in sorted(images_dir.iterdir())
             if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp") and p.with_suffix(".pts").is_file()]
    if not pairs:
        raise UsageError(f"{images_dir}: no image with a .pts file beside it",
                         "put <name>.pts (iBUG, 68 points) next to each <name>.jpg|png")
    spec = DETECTORS[detector]
    rows = []
    for img_path, pts_path in pairs:
        truth = read_pts(pts_path)
        if len(truth) != 68:
            raise UsageError(f"{pts_path}: {len(truth)} points", "68-point iBUG annotations only")
        rgb = _load_rgb(img_path)
        gt_box = np.array([truth[:, 0].min(), truth[:, 1].min(), truth[:, 0].max(),
                           truth[:, 1].max()])
        dets = spec.detect(_for_detector(rgb, spec.pixel_format), 0, 0.0)
        boxes = np.array([d.box for d in dets], float).reshape(-1, 4)
        source = "points"
        box = gt_box
        if len(boxes):
            ious = _iou(boxes, gt_box[None])[:, 0]
            if ious.max() >= 0.3:
                box, source = boxes[int(ious.argmax())], detector
        pred = api.landmarks(_for_detector(rgb, "gray"), tuple(int(round(v)) for v in box))
        e = nme(np.asarray(pred, float), truth)
        rows.append({"image": img_path.name, "nme": round(e, 5), "box": source})
    errs = np.array([r["nme"] for r in rows])
    return {"images": len(rows), "detector": detector, "mean_nme": float(errs.mean()),
            "median_nme": float(np.median(errs)),
            "failure_rate": float((errs > NME_FAILURE).mean()), "failure_nme": NME_FAILURE,
            "per_image": rows}


# --- FER -------------------------------------------------------------------------------------------

#: FER+ vote columns (fer2013new.csv) -> FER2013 class index; the rest are left out.
FERPLUS_TO_FER = {"anger": 0, "disgust": 1, "fear": 2, "happiness": 3, "sadness": 4, "surprise": 5,
                  "neutral": 6}


def apply_ferplus(data, ferplus_csv: str | Path):
    """FER+'s majority vote as the label of each FER2013 row (row order is shared); rows whose
    majority is contempt, unknown or not-a-face are dropped."""
    from dsbuilder.train.fer_supervised import LabelledFaces

    with open(ferplus_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != len(data.labels):
        raise UsageError(f"{ferplus_csv}: {len(rows)} rows for {len(data.labels)} FER2013 rows",
                         "give FER+'s fer2013new.csv for the same fer2013.csv")
    keep, labels = [], []
    for i, r in enumerate(rows):
        votes = {k.strip().lower(): float(v or 0) for k, v in r.items()
                 if k and k.strip().lower() in (*FERPLUS_TO_FER, "contempt", "unknown", "nf")}
        if not votes or max(votes.values()) <= 0:
            continue
        top = max(votes, key=votes.get)
        if top in FERPLUS_TO_FER:
            keep.append(i)
            labels.append(FERPLUS_TO_FER[top])
    keep = np.array(keep, int)
    return LabelledFaces(data.faces[keep], np.array(labels, np.int64), data.splits[keep],
                         f"{data.source} + FER+ {ferplus_csv}")


def eval_fer(data, model: str | None = None, split: str = "test") -> dict[str, Any]:
    """The FER model (the bundled teacher by default) on ``data``'s ``split`` (or ``all``)."""
    import cv2

    from dsbuilder.labels.fer import load_fer
    from dsbuilder.train.fer_supervised import CLASSES, classification_metrics

    faces, labels = (data.faces, data.labels) if split == "all" else data.part(split)
    if not len(faces):
        have = {s: n for s, n in data.counts().items() if n}
        raise UsageError(f"no {split} faces in {data.source}", f"choose --split among {have} or all")
    m = load_fer(model or "fer2013")
    if tuple(m.classes) != CLASSES:
        raise UsageError(f"model classes {m.classes}", "a 7-class model in FER2013's order")
    size = int(getattr(m, "input_size", 64))
    x = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in faces]) \
        if faces.shape[1] != size else faces
    probs = np.concatenate([m.predict(x[i:i + 256]) for i in range(0, len(x), 256)])
    train_labels = data.part("train")[1]
    majority = int(np.bincount(train_labels if len(train_labels) else labels,
                               minlength=len(CLASSES)).argmax())
    return {"data": data.source, "split": split, "model": getattr(m, "name", str(model)),
            **classification_metrics(labels, probs.argmax(1), majority=majority)}
