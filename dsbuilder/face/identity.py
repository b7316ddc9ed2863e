"""A person's identity from a handful of face embeddings: purification and the match threshold.

Purification (:func:`purify`)
    A curator's reference photos of "person X" are sometimes of someone else (a wrong search result,
    a photo with the interviewer). We cluster the person's usable faces and keep the **dominant
    identity**: the largest cluster. Two faces are linked when their embedding distance is below
    ``cluster_distance``; clusters are found with dlib's Chinese whispers (graph clustering of those
    links, dlib's fixed seed) or scipy's average-linkage agglomerative clustering cut at the same
    distance. The input order is the caller's (the stage sorts faces by id), so the result is
    deterministic.

    ``cluster_distance`` defaults to 0.6, dlib's documented same-person threshold for this model
    (99.38 % on LFW): two genuine photos of one person with very different expressions (crying,
    laughing) can lie 0.5 apart, while different people on the test photos lie 0.70 or more apart.

    **The dominant identity must be unique.** If two or more clusters tie for the largest (two photos
    farther apart than ``cluster_distance``, two photos each of two people), the photos alone cannot
    tell which one is the person. The stage then asks the person's videos (:func:`video_votes`):
    each sampled frame votes for the tied cluster one of its faces matches; a cluster with more votes
    than any other (and at least :data:`MIN_VIDEO_VOTES`) is kept (:func:`keep_cluster`). Without such
    evidence none is kept, since keeping one at random would let the wrong person into the dataset
    under this person's name: every face is ``identity_outlier`` with an "ambiguous" detail, and the
    person has no dictionary (the run ends with exit status 3, see the README). A single face is kept
    (there is nothing to compare it with).

    Each face's ``distance`` is to the mean embedding of the kept cluster (NaN when nothing is kept).

Threshold (:func:`fit_threshold`)
    Identification in videos accepts a face as person X when its distance to X's dictionary is at most
    X's threshold. We choose the largest threshold ``t`` with

    * ``t <= threshold_cap`` (dlib's model is calibrated around 0.6 on LFW), and
    * estimated false-accept rate ``FAR(t) <= target_far``, where the estimate is
      ``max(Phi((t - mu) / sigma), empirical FAR)``: ``mu`` and ``sigma`` are the mean and standard
      deviation of the impostor distances (a normal fit: with tens of impostor pairs the empirical tail
      says nothing about a 0.1 % rate, the fit extrapolates it), ``sigma`` floored at
      :data:`SIGMA_FLOOR` because few pairs from few identities understate the spread, and the
      empirical fraction of impostor distances ``<= t`` guards against a fit that the data contradict
      (so ``t`` stays below the closest observed impostor when ``target_far * n < 1``).

    ``t`` is rounded down to 0.001. The false-reject rate is reported the same way from the genuine
    distances: ``max(1 - Phi((t - mu_g) / sigma_g), empirical FRR)``.

    Be honest about what this is: impostor pairs are not independent (every pair involving the same
    impostor identity is correlated), and with a one-person recipe the impostors are only the three
    bundled public-domain faces, so the normal fit rests on three identities. The cap usually decides;
    ``est_far`` is a model figure, not a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Iterator, Mapping

import numpy as np

from dsbuilder.config import stage_defaults

#: Lower bound of a fitted standard deviation of distances. Impostor distances of the dlib model on
#: the real test photos spread with a standard deviation of about 0.06; genuine ones about 0.05.
SIGMA_FLOOR = 0.05

#: The threshold is rounded down to this step.
THRESHOLD_STEP = 0.001

#: ``target_far`` of 0 is read as this (a normal model never reaches exactly 0).
MIN_TARGET_FAR = 1e-12

_STD = NormalDist()


#: A tie between clusters is broken by the person's videos only with at least this many frames
#: voting for the winner.
MIN_VIDEO_VOTES = 2

# --- purification ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Purification:
    """Result of :func:`purify`. Unpacks as ``kept, distances = purify(...)``.

    ``labels``: cluster of each face, 0 = the largest (ties broken by the first face's position);
    ``kept_label``: the kept cluster, ``None`` when ambiguous or empty; ``sizes``: cluster sizes by
    label.
    """

    kept: np.ndarray  # bool (n,)
    distances: np.ndarray  # float64 (n,), to the kept cluster's mean; NaN when nothing is kept
    labels: np.ndarray  # int (n,)
    kept_label: int | None
    sizes: tuple[int, ...]
    method: str
    cluster_distance: float
    ambiguous: bool = False
    mean: np.ndarray | None = None  # mean embedding of the kept cluster

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.kept
        yield self.distances

    def describe(self) -> str:
        """A one-line summary for logs and rejection details."""
        sizes = "+".join(str(s) for s in self.sizes) or "0"
        return f"{self.method}, cluster_distance {self.cluster_distance:g}: clusters {sizes}"


def _chinese_whispers(emb: np.ndarray, threshold: float) -> np.ndarray:
    import dlib

    vecs = [dlib.vector([float(x) for x in e]) for e in emb]
    return np.asarray(dlib.chinese_whispers_clustering(vecs, float(threshold)), dtype=np.int64)


def _agglomerative(emb: np.ndarray, threshold: float) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    z = linkage(pdist(emb), method="average")
    return np.asarray(fcluster(z, t=float(threshold), criterion="distance"), dtype=np.int64)


def purify(embeddings: Any, params: Mapping[str, Any] | None = None) -> Purification:
    """Keep the dominant identity of a set of embeddings (n, d); see the module docstring.

    ``params``: ``purification`` (``chinese_whispers``, ``agglomerative`` or ``none``) and
    ``cluster_distance``; missing keys take the ``stages.dictionary`` defaults.
    """
    p = {**stage_defaults("dictionary"), **(params or {})}
    method, cd = p["purification"], float(p["cluster_distance"])
    emb = np.asarray(embeddings, dtype=np.float64)
    n = len(emb)
    if n == 0:
        return Purification(np.zeros(0, bool), np.zeros(0), np.zeros(0, np.int64), None, (),
                            method, cd)
    emb = emb.reshape(n, -1)
    if method == "none" or n == 1:
        raw = np.zeros(n, np.int64)
    elif method == "chinese_whispers":
        raw = _chinese_whispers(emb, cd)
    elif method == "agglomerative":
        raw = _agglomerative(emb, cd)
    else:
        raise ValueError(f"unknown purification {method!r} (chinese_whispers, agglomerative, none)")
    # relabel deterministically: larger clusters first, then by the position of their first face
    first = {}
    for i, lab in enumerate(raw.tolist()):
        first.setdefault(lab, i)
    counts = {lab: int((raw == lab).sum()) for lab in first}
    order = sorted(first, key=lambda lab: (-counts[lab], first[lab]))
    remap = {lab: k for k, lab in enumerate(order)}
    labels = np.array([remap[lab] for lab in raw.tolist()], dtype=np.int64)
    sizes = tuple(counts[lab] for lab in order)
    if len(sizes) > 1 and sizes[0] == sizes[1]:
        return Purification(np.zeros(n, bool), np.full(n, np.nan), labels, None, sizes, method, cd,
                            ambiguous=True)
    kept = labels == 0
    mean = emb[kept].mean(axis=0)
    dist = np.sqrt(((emb - mean) ** 2).sum(axis=1))
    return Purification(kept, dist, labels, 0, sizes, method, cd, mean=mean)


def tied_labels(p: Purification) -> list[int]:
    """The cluster labels sharing the largest size (one label when there is no tie)."""
    return [k for k, n in enumerate(p.sizes) if p.sizes and n == p.sizes[0]]


def keep_cluster(embeddings: Any, p: Purification, label: int) -> Purification:
    """``p`` with cluster ``label`` kept (a tie decided by other evidence)."""
    emb = np.asarray(embeddings, dtype=np.float64).reshape(len(p.labels), -1)
    kept = p.labels == label
    mean = emb[kept].mean(axis=0)
    dist = np.sqrt(((emb - mean) ** 2).sum(axis=1))
    return Purification(kept, dist, p.labels, label, p.sizes, p.method, p.cluster_distance,
                        mean=mean)


def video_votes(embeddings: Any, p: Purification, frames: list[list[np.ndarray]],
                others: list[np.ndarray]) -> dict[int, int]:
    """For each tied cluster, the number of sampled video frames showing it: a frame votes for a
    cluster when one of its faces lies within ``cluster_distance`` of the cluster's mean and nearer
    to it than to any other tied cluster or any other recipe person's mean (``others``)."""
    emb = np.asarray(embeddings, dtype=np.float64).reshape(len(p.labels), -1)
    labels = tied_labels(p)
    means = {k: emb[p.labels == k].mean(axis=0) for k in labels}
    votes = {k: 0 for k in labels}
    for faces in frames:
        seen = set()
        for e in faces:
            e = np.asarray(e, np.float64)
            d = {k: float(np.linalg.norm(e - m)) for k, m in means.items()}
            best = min(d, key=d.get)
            if d[best] > p.cluster_distance:
                continue
            if any(d[k] <= d[best] for k in d if k != best):
                continue
            if any(float(np.linalg.norm(e - o)) <= d[best] for o in others):
                continue
            seen.add(best)
        for k in seen:
            votes[k] += 1
    return votes


def decide_by_votes(votes: Mapping[int, int]) -> int | None:
    """The cluster with strictly the most votes, if it has at least :data:`MIN_VIDEO_VOTES`."""
    if not votes:
        return None
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    if ranked[0][1] < MIN_VIDEO_VOTES or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return None
    return ranked[0][0]


# --- threshold ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ThresholdFit:
    """Result of :func:`fit_threshold`.

    ``method``: ``normal_fit`` or ``cap_only`` (no impostor pair: the cap, nothing estimated).
    ``limited_by``: what set the threshold: ``target_far`` (the normal fit), ``observed_impostor``
    (an observed impostor distance), ``cap`` (``threshold_cap``), ``no_impostors``.
    ``est_far``/``est_frr`` are ``None`` when there is nothing to estimate them from.
    """

    threshold: float
    method: str
    limited_by: str
    est_far: float | None
    est_frr: float | None
    n_genuine_pairs: int
    n_impostor_pairs: int
    impostor_mean: float | None = None
    impostor_sigma: float | None = None
    genuine_mean: float | None = None
    genuine_sigma: float | None = None
    candidates: dict[str, float] = field(default_factory=dict)

    @property
    def threshold_method(self) -> str:
        """The ``people.threshold_method`` value, e.g. ``normal_fit:cap``."""
        return f"{self.method}:{self.limited_by}"


def _fit_normal(x: np.ndarray) -> tuple[float, float]:
    mu = float(x.mean())
    sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return mu, max(sd, SIGMA_FLOOR)


def fit_threshold(genuine: Any, impostor: Any, cap: float, target_far: float) -> ThresholdFit:
    """Choose a match threshold from genuine and impostor distances (see the module docstring).

    ``genuine``: distances between faces of the same person; ``impostor``: distances between the
    person's faces and other people's. Non-finite values are ignored.
    """
    g = np.asarray(genuine, dtype=np.float64).ravel()
    i = np.asarray(impostor, dtype=np.float64).ravel()
    g, i = g[np.isfinite(g)], i[np.isfinite(i)]
    cap = float(cap)
    cands: dict[str, float] = {"cap": cap}
    if i.size == 0:
        t, method, limited = _floor_step(cap), "cap_only", "no_impostors"
        mu = sigma = None
        est_far = None
    else:
        method = "normal_fit"
        mu, sigma = _fit_normal(i)
        z = _STD.inv_cdf(max(float(target_far), MIN_TARGET_FAR))
        cands["target_far"] = mu + sigma * z
        srt = np.sort(i)
        m = int(math.floor(float(target_far) * i.size + 1e-9))  # impostors allowed at or below t
        if m < i.size:
            cands["observed_impostor"] = float(srt[m]) - THRESHOLD_STEP
        limited = min(cands, key=lambda k: (cands[k], k != "cap"))  # a tie goes to the cap
        t = max(0.0, _floor_step(cands[limited]))
        est_far = max(_STD.cdf((t - mu) / sigma), float((i <= t).mean()))
    gm = gs = est_frr = None
    if g.size:
        gm, gs = _fit_normal(g)
        est_frr = max(1.0 - _STD.cdf((t - gm) / gs), float((g > t).mean()))
    return ThresholdFit(threshold=t, method=method, limited_by=limited, est_far=est_far,
                        est_frr=est_frr, n_genuine_pairs=int(g.size), n_impostor_pairs=int(i.size),
                        impostor_mean=mu, impostor_sigma=sigma, genuine_mean=gm, genuine_sigma=gs,
                        candidates=cands)


def _floor_step(x: float) -> float:
    return round(math.floor(x / THRESHOLD_STEP + 1e-9) * THRESHOLD_STEP, 6)
