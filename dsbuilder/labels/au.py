"""Geometric action-unit proxies from 68-point landmarks.

**These are geometric proxies, not a learned AU detector.** Each value is a distance between landmarks
(iBUG 300-W order), measured in a face frame that removes translation, scale and in-plane rotation. It
moves when the muscle action it is named after moves those landmarks, but it also moves with anything
else that does (head pitch and yaw, speech, landmark jitter, identity), cannot see texture cues
(wrinkles, bulges, furrows) and cannot tell apart AUs that move the same points the same way (AU6
from AU7, AU23 from AU24: those are one combined proxy each). Use them for temporal structure and
relative change within a track; for FACS-grade intensities import OpenFace or py-feat output
(:mod:`dsbuilder.labels.au_import`).

Face frame
    Origin at the midpoint of the two eye centres (means of points 36-41 and 42-47); x along the line
    from the subject's right eye centre to the left one (roll removed); y perpendicular to it, pointing
    down the face; unit = the inter-ocular distance (IOD, between the eye centres). All raw values below
    are in IOD units; "height" means ``-y`` (up the face).

Per-AU distances (points are 0-based iBUG indices; "corner line" = the mean y of an eye's two corners)
    =============  ==================================================================================
    AU01_geom      inner brow raiser: height of the inner brow ends (21, 22) above the eye line
    AU02_geom      outer brow raiser: height of the outer brow points (17, 18, 25, 26) above the eye line
    AU04_geom      brow lowerer: minus (gap between the inner brow ends 21-22 + their height); brows
                   that knit together and come down raise it
    AU05_geom      upper lid raiser: height of the upper lids (37, 38, 43, 44) above each eye's corner line
    AU06_07_geom   cheek raiser / lid tightener (one proxy): minus the depth of the lower lids (40, 41,
                   46, 47) below each eye's corner line (a lower lid pushed up raises it)
    AU09_geom      nose wrinkler: minus the drop from the eye line to the nostril wings (31, 35)
    AU12_geom      lip corner puller: height of the mouth corners (48, 54) relative to the nose base (33),
                   plus half the mouth-width change (corners move up and out)
    AU15_geom      lip corner depressor: depth of the mouth corners (48, 54) below the midpoint of the
                   upper and lower outer-lip centres (51, 57)
    AU17_geom      chin raiser: minus the distance from the lower-lip centre (57) to the chin (8)
    AU20_geom      lip stretcher: mouth width, corner to corner (48-54)
    AU23_24_geom   lip tightener / pressor (one proxy): minus the red-lip thickness, upper (51 to the
                   inner upper lip 61-63) plus lower (inner lower lip 65-67 to 57)
    AU25_geom      lips part: gap between the inner lips (mean of 61-63 to mean of 65-67)
    AU26_geom      jaw drop: distance from the nose base (33) to the chin (8)
    AU45_geom      blink: minus the eye opening (upper lids 37, 38, 43, 44 to lower lids 41, 40, 47, 46)
    =============  ==================================================================================

Raw values carry the person's face shape, so they are compared with a per-track **neutral baseline**
(:func:`neutral_baseline`; :func:`track_aus` uses the frames closest to the track's median shape) and
:func:`normalise_aus` turns the difference into rough 0-1 intensities by
dividing by :data:`AU_GEOM_SCALE` (a typical full-action displacement, IOD units) and clipping below 0.
"""

from __future__ import annotations

import re

import numpy as np

AU_GEOM_NAMES: tuple[str, ...] = (
    "AU01_geom", "AU02_geom", "AU04_geom", "AU05_geom", "AU06_07_geom", "AU09_geom", "AU12_geom",
    "AU15_geom", "AU17_geom", "AU20_geom", "AU23_24_geom", "AU25_geom", "AU26_geom", "AU45_geom",
)

#: Displacement (IOD units, from neutral) that counts as a strong action: maps raw differences to ~0-1.
AU_GEOM_SCALE: dict[str, float] = {
    "AU01_geom": 0.15, "AU02_geom": 0.15, "AU04_geom": 0.15, "AU05_geom": 0.05,
    "AU06_07_geom": 0.05, "AU09_geom": 0.08, "AU12_geom": 0.15, "AU15_geom": 0.08,
    "AU17_geom": 0.10, "AU20_geom": 0.20, "AU23_24_geom": 0.08, "AU25_geom": 0.30,
    "AU26_geom": 0.30, "AU45_geom": 0.12,
}

_BROW_INNER = [21, 22]
_BROW_OUTER = [17, 18, 25, 26]
_UPPER_LID = [37, 38, 43, 44]
_LOWER_LID = [41, 40, 47, 46]  # under 37, 38, 43, 44
_INNER_UPPER = [61, 62, 63]
_INNER_LOWER = [67, 66, 65]


def au_numbers(name: str) -> tuple[int, ...]:
    """FACS AU numbers a column name stands for: ``"AU06_07_geom"`` -> (6, 7), ``" AU12_r"`` -> (12,),
    ``"AU1"`` -> (1,). Suffixes ``_r``, ``_c``, ``_geom`` are ignored."""
    m = re.fullmatch(r"\s*AU(\d+(?:_\d+)*)(?:_(?:r|c|geom))?\s*", name, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"not an action-unit column name: {name!r}")
    return tuple(int(x) for x in m.group(1).split("_"))


def face_frame(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks ``(n, 68, 2)`` (or ``(68, 2)``, or flat 136) -> the same points in the face frame
    (eye midpoint at the origin, eyes on the x axis, inter-ocular distance 1)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim == 1 or (lm.ndim == 2 and lm.shape == (68, 2)):
        lm = lm.reshape(1, 68, 2)
    elif lm.ndim == 2 and lm.shape[1] == 136:
        lm = lm.reshape(-1, 68, 2)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must have shape (n, 68, 2) or (n, 136), not {lm.shape}")
    right = lm[:, 36:42].mean(axis=1)  # subject's right eye (image left)
    left = lm[:, 42:48].mean(axis=1)
    axis = left - right
    iod = np.linalg.norm(axis, axis=1)
    iod = np.where(iod > 1e-9, iod, np.nan)
    c, s = axis[:, 0] / iod, axis[:, 1] / iod
    centred = lm - ((left + right) / 2)[:, None, :]
    x = centred[..., 0] * c[:, None] + centred[..., 1] * s[:, None]
    y = -centred[..., 0] * s[:, None] + centred[..., 1] * c[:, None]
    return np.stack([x, y], axis=-1) / iod[:, None, None]


def geometric_aus(landmarks: np.ndarray) -> np.ndarray:
    """Raw geometric AU proxies, ``(n, 68, 2)`` landmarks -> ``(n, len(AU_GEOM_NAMES))`` float64 in IOD
    units, columns in :data:`AU_GEOM_NAMES` order. Larger means more of the action. Frames with
    degenerate landmarks (coincident eyes) give NaN rows."""
    p = face_frame(landmarks)
    x, y = p[..., 0], p[..., 1]

    def my(idx):
        return y[:, idx].mean(axis=1)

    eye_corner_r = (y[:, 36] + y[:, 39]) / 2
    eye_corner_l = (y[:, 42] + y[:, 45]) / 2
    upper_h = np.concatenate([eye_corner_r[:, None] - y[:, [37, 38]],
                              eye_corner_l[:, None] - y[:, [43, 44]]], axis=1).mean(axis=1)
    lower_d = np.concatenate([y[:, [41, 40]] - eye_corner_r[:, None],
                              y[:, [47, 46]] - eye_corner_l[:, None]], axis=1).mean(axis=1)
    opening = (y[:, _LOWER_LID] - y[:, _UPPER_LID]).mean(axis=1)
    mouth_w = np.hypot(x[:, 54] - x[:, 48], y[:, 54] - y[:, 48])
    corners_y = (y[:, 48] + y[:, 54]) / 2
    inner_gap = my(_INNER_LOWER) - my(_INNER_UPPER)
    cols = {
        "AU01_geom": -my(_BROW_INNER),
        "AU02_geom": -my(_BROW_OUTER),
        "AU04_geom": -((x[:, 22] - x[:, 21]) + -my(_BROW_INNER)),
        "AU05_geom": upper_h,
        "AU06_07_geom": -lower_d,
        "AU09_geom": -my([31, 35]),
        "AU12_geom": (y[:, 33] - corners_y) + 0.5 * mouth_w,
        "AU15_geom": corners_y - (y[:, 51] + y[:, 57]) / 2,
        "AU17_geom": -np.hypot(x[:, 8] - x[:, 57], y[:, 8] - y[:, 57]),
        "AU20_geom": mouth_w,
        "AU23_24_geom": -((my(_INNER_UPPER) - y[:, 51]) + (y[:, 57] - my(_INNER_LOWER))),
        "AU25_geom": inner_gap,
        "AU26_geom": np.hypot(x[:, 8] - x[:, 33], y[:, 8] - y[:, 33]),
        "AU45_geom": -opening,
    }
    return np.stack([cols[n] for n in AU_GEOM_NAMES], axis=1)


def neutral_baseline(features: np.ndarray, method: str = "percentile", q: float = 10.0,
                     landmarks: np.ndarray | None = None, fraction: float = 0.2) -> np.ndarray:
    """Per-feature neutral value of one track, ``(n, k)`` raw features -> ``(k,)``.

    ``method="percentile"``: the ``q``-th percentile of each feature over the track (every proxy grows
    with its action, so the low end is the relaxed face; assumes the track is not expressive all the
    time). ``method="median_shape"``: the mean features of the ``fraction`` of frames whose face-frame
    landmark shape is closest to the track's median shape (needs ``landmarks``); better for tracks
    that are neutral most of the time but have brief actions in both directions. NaN rows are ignored.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or not len(f):
        raise ValueError(f"features must be a non-empty (n, k) array, not shape {f.shape}")
    if method == "percentile":
        return np.nanpercentile(f, q, axis=0)
    if method == "median_shape":
        if landmarks is None:
            raise ValueError("method='median_shape' needs the landmarks")
        shapes = face_frame(landmarks).reshape(len(f), -1)
        med = np.nanmedian(shapes, axis=0)
        d = np.linalg.norm(shapes - med, axis=1)
        d = np.where(np.isfinite(d), d, np.inf)
        k = max(1, int(round(fraction * len(f))))
        idx = np.argsort(d, kind="stable")[:k]
        return np.nanmean(f[idx], axis=0)
    raise ValueError(f"unknown baseline method {method!r} (percentile or median_shape)")


def normalise_aus(features: np.ndarray, baseline: np.ndarray,
                  names: tuple[str, ...] = AU_GEOM_NAMES, clip: bool = True) -> np.ndarray:
    """``(features - baseline) / AU_GEOM_SCALE``: rough intensities, 0 = neutral, ~1 = strong action
    (clipped below at 0 unless ``clip=False``)."""
    scale = np.array([AU_GEOM_SCALE[n] for n in names])
    out = (np.asarray(features, dtype=np.float64) - np.asarray(baseline)) / scale
    return np.maximum(out, 0.0) if clip else out


def track_aus(landmarks: np.ndarray, method: str = "median_shape", clip: bool = True) -> np.ndarray:
    """One track's landmarks ``(n, 68, 2)`` -> baseline-normalised AU proxies ``(n, k)``.

    The default baseline is ``median_shape``: a low percentile is wrong for the proxies that an
    expression lowers (a smile lowers AU15_geom), as soon as that expression fills more than ``q`` %
    of the track."""
    raw = geometric_aus(landmarks)
    base = neutral_baseline(raw, method=method, landmarks=landmarks if method == "median_shape"
                            else None)
    return normalise_aus(raw, base, clip=clip)
