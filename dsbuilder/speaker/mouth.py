"""Mouth motion from 68 landmarks (iBUG 300-W order), normalised by face size.

Per frame: ``inner`` = mean inner-lip gap (61-67, 62-66, 63-65) and ``outer`` = outer-lip height
(51-57), both divided by the face height (nose bridge 27 to chin 8, which does not move with the
mouth the way the jaw-free measures do), ``aperture`` = inner gap / mouth width (as
:func:`dsbuilder.face.api.mouth_aperture`), ``width`` = mouth width / outer-eye distance (lip shape:
spread vs rounded).

A frame is invalid (``valid`` False, its features NaN for scoring) when the face is turned away
(``|yaw| > max_yaw_deg``) or the mouth is hidden or mis-fitted: the inner upper lip lies clearly below
the inner lower lip, the mouth is implausibly narrow for the face, or the mouth points leave the face
box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MouthTrack:
    inner: np.ndarray  # (n,) float32
    outer: np.ndarray
    aperture: np.ndarray
    width: np.ndarray
    valid: np.ndarray  # (n,) bool
    turned: np.ndarray  # (n,) bool: |yaw| too large
    hidden: np.ndarray  # (n,) bool: mouth not plausibly visible

    def motion(self) -> float:
        """Mouth activity: std of the frame-to-frame change of the inner gap over valid frames."""
        d = np.diff(np.where(self.valid, self.inner, np.nan))
        d = d[np.isfinite(d)]
        return float(np.std(d)) if len(d) >= 2 else 0.0

    def signal(self) -> np.ndarray:
        """(n, 1) visual feature for sync scoring: the inner-lip gap; NaN where invalid. (The outer
        height adds lip protrusion and smiles, which do not follow the sound: it lowered the
        agreement on the real clips.)"""
        v = self.inner[:, None].astype(np.float32).copy()
        v[~self.valid] = np.nan
        return v


def mouth_features(landmarks: np.ndarray, yaw: np.ndarray | None = None,
                   bbox: np.ndarray | None = None, max_yaw_deg: float = 50.0) -> MouthTrack:
    """``landmarks``: (n, 68, 2) or (n, 136); ``yaw``: (n,) degrees or None; ``bbox``: (n, 4)."""
    lm = np.asarray(landmarks, np.float64).reshape(len(landmarks), 68, 2)
    n = len(lm)
    gap = np.mean([np.linalg.norm(lm[:, 61 + i] - lm[:, 67 - i], axis=1) for i in range(3)], axis=0)
    signed_gap = np.mean([lm[:, 67 - i, 1] - lm[:, 61 + i, 1] for i in range(3)], axis=0)
    outer = np.linalg.norm(lm[:, 51] - lm[:, 57], axis=1)
    mw = np.linalg.norm(lm[:, 54] - lm[:, 48], axis=1)
    face_h = np.linalg.norm(lm[:, 8] - lm[:, 27], axis=1)
    eyes = np.linalg.norm(lm[:, 45] - lm[:, 36], axis=1)
    face_h = np.where(face_h > 1e-6, face_h, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        inner = gap / face_h
        outer_n = outer / face_h
        aperture = gap / np.where(mw > 1e-6, mw, np.nan)
        width = mw / np.where(eyes > 1e-6, eyes, np.nan)
        hidden = (signed_gap < -0.05 * mw) | (mw < 0.15 * face_h) | ~np.isfinite(inner)
    if bbox is not None:
        b = np.asarray(bbox, np.float64).reshape(n, 4)
        pad = 0.25 * (b[:, 3] - b[:, 1])
        mouth = lm[:, 48:68]
        outside = ((mouth[..., 0] < (b[:, 0] - pad)[:, None]) | (mouth[..., 0] > (b[:, 2] + pad)[:, None])
                   | (mouth[..., 1] < (b[:, 1] - pad)[:, None]) | (mouth[..., 1] > (b[:, 3] + pad)[:, None]))
        hidden |= outside.mean(axis=1) > 0.5
    turned = np.zeros(n, bool) if yaw is None else ~(np.abs(np.nan_to_num(
        np.asarray(yaw, np.float64), nan=0.0)) <= max_yaw_deg)
    valid = ~(hidden | turned)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return MouthTrack(f32(inner), f32(outer_n), f32(aperture), f32(width), valid, turned, hidden)
