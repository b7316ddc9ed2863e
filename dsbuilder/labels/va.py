"""Valence and arousal from emotion-class probabilities, per frame and per clip.

Each class gets a point on Russell's circumplex of affect (J. A. Russell, "A circumplex model of
affect", Journal of Personality and Social Psychology 39(6):1161-1178, 1980). Russell placed 28 affect
words on a circle by multidimensional scaling of similarity judgements and reports each word's angle
(degrees, counter-clockwise from "pleasure" = positive valence; 90° = high arousal). We take the angle
of the word nearest to each FER class:

========  ===================  ======  ===================
class     Russell (1980) word  angle   (valence, arousal)
========  ===================  ======  ===================
angry     angry                 99°    (-0.125, +0.790)
disgust   (none; see below)    130°    (-0.514, +0.613)
fear      afraid               117°    (-0.363, +0.713)
happy     happy                  8°    (+0.792, +0.111)
sad       sad                  208°    (-0.706, -0.376)
surprise  astonished            70°    (+0.274, +0.752)
neutral   (the origin)           --    ( 0.000,  0.000)
========  ===================  ======  ===================

Choices, stated so they can be argued with:

* Radius 0.8 for every emotional class (not 1.0): Russell's words lie near, not on, the unit circle,
  and a face classified with certainty is still not the most extreme affect possible; 0.8 leaves
  headroom in [-1, 1] for other teachers.
* Disgust is not among Russell's 28 words. We put it at 130°, between "annoyed" (123°) and
  "distressed" (138°): unpleasant and moderately aroused, the same quadrant the Warriner, Kuperman &
  Brysbaert (2013) word norms give "disgust" (clearly negative valence, mid-scale arousal).
* Neutral is the origin.

Per frame, valence and arousal are the probability-weighted mean of the class points (the expected
coordinate): a confident "happy" gives (0.79, 0.11), a 50/50 happy/neutral (0.40, 0.06). This is the
usual categorical-to-dimensional mapping; it is a proxy, not a measurement of felt affect.

Per clip (:func:`summarise_clip`): the probabilities are smoothed over time (:func:`smooth`: an
exponential moving average with span ``n`` frames, alpha = 2 / (n + 1) as in pandas, or a centred
moving average of ``n`` frames), then the clip's mean probabilities, argmax, normalised entropy of the
mean (0 = one class, 1 = uniform), frame agreement (fraction of frames whose smoothed argmax is the clip
argmax) and the mean and standard deviation of valence and arousal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from dsbuilder.labels.fer import FER_CLASSES

#: Russell (1980) angles in degrees for the FER classes (disgust: our placement, see above).
RUSSELL_ANGLES_DEG: dict[str, float] = {
    "angry": 99.0, "disgust": 130.0, "fear": 117.0, "happy": 8.0, "sad": 208.0,
    "surprise": 70.0,
}
RADIUS = 0.8


def _circumplex() -> dict[str, tuple[float, float]]:
    table = {c: (round(RADIUS * math.cos(math.radians(a)), 3),
                 round(RADIUS * math.sin(math.radians(a)), 3))
             for c, a in RUSSELL_ANGLES_DEG.items()}
    table["neutral"] = (0.0, 0.0)
    return table


#: Class -> (valence, arousal) in [-1, 1]; the numbers in the module docstring.
CIRCUMPLEX: dict[str, tuple[float, float]] = _circumplex()

SMOOTHING = ("ema", "moving_average", "none")


def coordinates(classes: Sequence[str] = FER_CLASSES,
                table: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """(n_classes, 2) array of (valence, arousal) for ``classes``."""
    table = CIRCUMPLEX if table is None else table
    missing = [c for c in classes if c not in table]
    if missing:
        raise KeyError(f"no circumplex coordinates for {missing}")
    return np.array([table[c] for c in classes], dtype=np.float64)


def valence_arousal(probs: np.ndarray, classes: Sequence[str] = FER_CLASSES,
                    table: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """(N, n_classes) probabilities -> (N, 2) valence, arousal (one row for a 1-D input)."""
    p = np.asarray(probs, dtype=np.float64)
    one = p.ndim == 1
    p = np.atleast_2d(p)
    s = p.sum(axis=1, keepdims=True)
    p = p / np.where(s > 0, s, 1.0)
    va = p @ coordinates(classes, table)
    return va[0] if one else va


def smooth(probs: np.ndarray, method: str = "ema", frames: int = 5) -> np.ndarray:
    """Smooth (N, C) per-frame probabilities over time; rows still sum to 1.

    ``ema``: exponential moving average, alpha = 2 / (frames + 1) (causal: usable live);
    ``moving_average``: centred window of ``frames`` (shrinks at the ends); ``none`` or frames <= 1:
    unchanged.
    """
    p = np.asarray(probs, dtype=np.float64)
    if method not in SMOOTHING:
        raise ValueError(f"unknown smoothing {method!r} (one of {SMOOTHING})")
    if method == "none" or frames <= 1 or len(p) == 0:
        return p.copy()
    if method == "ema":
        alpha = 2.0 / (frames + 1.0)
        out = np.empty_like(p)
        acc = p[0]
        for i, row in enumerate(p):
            acc = row if i == 0 else alpha * row + (1 - alpha) * acc
            out[i] = acc
    else:
        half = frames // 2
        c = np.cumsum(np.vstack([np.zeros((1, p.shape[1])), p]), axis=0)
        idx = np.arange(len(p))
        lo = np.clip(idx - half, 0, len(p))
        hi = np.clip(idx - half + frames, 0, len(p))
        out = (c[hi] - c[lo]) / (hi - lo)[:, None]
    return out / out.sum(axis=1, keepdims=True)


def entropy(p: np.ndarray) -> float:
    """Shannon entropy of one distribution, divided by log(n): 0 = one class, 1 = uniform."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum()
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(len(p))) if len(p) > 1 else 0.0


@dataclass(frozen=True)
class ClipSummary:
    mean_probs: tuple[float, ...]
    argmax: str
    argmax_prob: float
    entropy: float
    agreement: float
    mean_valence: float
    mean_arousal: float
    std_valence: float
    std_arousal: float
    n_frames: int


def summarise_clip(probs: np.ndarray, classes: Sequence[str] = FER_CLASSES, *,
                   method: str = "ema", frames: int = 5,
                   table: Mapping[str, tuple[float, float]] | None = None
                   ) -> tuple[ClipSummary, np.ndarray, np.ndarray]:
    """Summarise a clip's (N, C) per-frame probabilities.

    Returns ``(summary, smoothed probs (N, C), smoothed valence/arousal (N, 2))``. The clip's mean
    probabilities are the mean of the raw per-frame probabilities (smoothing does not change a mean
    much, and the raw mean is the least surprising definition); agreement and the V/A statistics use
    the smoothed per-frame values.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError("need a non-empty (N, C) array of probabilities")
    sm = smooth(p, method, frames)
    va = valence_arousal(sm, classes, table)
    mean = p.mean(axis=0)
    k = int(mean.argmax())
    summary = ClipSummary(
        mean_probs=tuple(float(x) for x in mean), argmax=classes[k], argmax_prob=float(mean[k]),
        entropy=entropy(mean), agreement=float((sm.argmax(axis=1) == k).mean()),
        mean_valence=float(va[:, 0].mean()), mean_arousal=float(va[:, 1].mean()),
        std_valence=float(va[:, 0].std()), std_arousal=float(va[:, 1].std()), n_frames=len(p))
    return summary, sm, va
