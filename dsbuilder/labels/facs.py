"""Emotion from action units: FACS prototypes as subspaces of AU space.

Notation (:func:`parse_facs`)
    Additive FACS codes such as ``"4+5*+7+23"`` or ``"R12A+R14A"``. Each token is
    ``[L|R|U]<AU number>[A-E|*]``: an optional side (``L``/``R`` unilateral; ``U`` = unspecified
    unilateral), the AU number (1-99), then either an intensity letter (A trace ... E maximum) or ``*``
    (the Investigator's Guide mark for "any intensity"; such an AU is free, see below). Whitespace
    around tokens is allowed. Bad tokens and repeated AUs raise :class:`FacsSyntaxError` naming the
    token.

Prototypes (:data:`PROTOTYPES`)
    Emotion prototypes and major variants from the FACS Investigator's Guide (Ekman, Friesen & Hager
    2002, the EMFACS-style prediction table), with its "25, 26 or 27" alternatives expanded into separate
    codes. Head and eye positions (AU 51-64) are left out: geometric and CSV AU sets do not contain them.
    Lateral prefixes are parsed and kept, but AU space here has one axis per AU number (our AU sources
    are not lateralised), so ``R12A`` projects onto the AU12 axis.

Scoring (:func:`emotion_scores`)
    A frame's AU values form a vector ``x`` in AU space (one axis per AU number; a combined proxy column
    such as ``AU06_07_geom`` adds its value to both axes). Each prototype is a subspace: the direction
    ``sum_a e_a / sqrt(m)`` of its *required* AUs (those without ``*``; an AU must appear with the
    others) plus the unit vectors ``e_a`` of its *starred* AUs, which are free to take any value (a
    linear span cannot require a starred AU to be present, so when fewer than two AUs of a prototype are
    unstarred, its first starred AUs join the required direction: otherwise ``5*+20*+26`` would give a
    jaw drop alone a perfect fear score). The
    score of a prototype is ``cos`` of the smallest principal angle between ``span{x}`` and that subspace
    (:func:`scipy.linalg.subspace_angles`), and an emotion's score is the maximum over its prototypes.
    ``mode="span"`` instead spans every AU's unit vector separately (all AUs free, as in the plain
    "span of the unit vectors" reading), which scores any subset of a prototype 1.0 and so separates
    emotions less well; it is kept for comparison.
    AU axes that no prototype uses (e.g. AU43) are still part of ``x``: energy there lowers every score.
    A frame whose AU vector is (near) zero scores 0 everywhere; :func:`nearest_emotion` calls that
    ``"neutral"``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

INTENSITY = {"A": 0.2, "B": 0.4, "C": 0.6, "D": 0.8, "E": 1.0}


class FacsSyntaxError(ValueError):
    """A FACS code that does not parse; the message names the offending token."""


@dataclass(frozen=True)
class AuTerm:
    au: int
    side: str | None = None  # "L", "R", "U" or None (bilateral / unspecified)
    intensity: str | None = None  # "A".."E" or None
    free: bool = False  # marked "*": any intensity

    def __str__(self) -> str:
        return f"{self.side or ''}{self.au}{'*' if self.free else (self.intensity or '')}"


_TOKEN = re.compile(r"(?P<side>[LRU])?(?P<au>\d{1,2})(?P<mod>[A-E]|\*)?")


def parse_facs(code: str) -> tuple[AuTerm, ...]:
    """``"1+2+5B+26"`` -> AuTerms. Raises :class:`FacsSyntaxError` naming a bad or repeated token."""
    if not isinstance(code, str) or not code.strip():
        raise FacsSyntaxError(f"empty FACS code {code!r}")
    terms: list[AuTerm] = []
    seen: dict[int, str] = {}
    for raw in code.split("+"):
        tok = raw.strip()
        m = _TOKEN.fullmatch(tok.upper()) if tok else None
        if not m or int(m.group("au")) == 0:
            raise FacsSyntaxError(
                f"bad token {tok!r} in FACS code {code!r} (expected [L|R|U]<AU 1-99>[A-E|*], "
                "e.g. 12C, R14A, 5*)")
        au = int(m.group("au"))
        if au in seen:
            raise FacsSyntaxError(f"AU {au} appears twice in FACS code {code!r} "
                                  f"(tokens {seen[au]!r} and {tok!r})")
        seen[au] = tok
        mod = m.group("mod")
        terms.append(AuTerm(au=au, side=m.group("side"), intensity=mod if mod and mod != "*"
                            else None, free=mod == "*"))
    return tuple(terms)


def _expand(*codes: str) -> tuple[str, ...]:
    """``"1+2+4+5*+20*+{25|26|27}"`` -> one code per alternative."""
    out = []
    for c in codes:
        m = re.search(r"\{([^}]*)\}", c)
        if m:
            out.extend(_expand(*(c[:m.start()] + alt + c[m.end():] for alt in m.group(1).split("|"))))
        else:
            out.append(c)
    return tuple(out)


#: Emotion -> FACS codes (prototypes, then major variants); after the Investigator's Guide
#: (Ekman, Friesen & Hager 2002). ``{a|b}`` alternatives are expanded.
PROTOTYPES: dict[str, tuple[str, ...]] = {
    "happiness": _expand("6+12*", "12C", "12D"),
    "sadness": _expand("1+4+11+15B", "1+4+15*", "6+15*", "1+4+11", "1+4+15B", "1+4+15B+17",
                       "11+15B", "11+17", "1+4+15*+{25|26}", "6+15*+{25|26}"),
    "surprise": _expand("1+2+5B+{26|27}", "1+2+5B", "1+2+{26|27}", "5B+{26|27}"),
    "fear": _expand("1+2+4+5*+20*+{25|26|27}", "1+2+4+5*+{25|26|27}", "1+2+4+5*",
                    "5*+20*+{25|26|27}", "5*+20*"),
    "anger": _expand("4+5*+7+10*+22+23+{25|26}", "4+5*+7+10*+23+{25|26}", "4+5*+7+23+{25|26}",
                     "4+5*+7+17+23", "4+5*+7+17+24", "4+5*+7+23", "4+5*+7+24",
                     # major variants: a prototype without one of AU 4, 5, 7 or 10
                     "5*+7+23", "4+7+23", "4+5*+23", "4+7+17+23", "4+7+17+24"),
    "disgust": _expand("9", "9+16+15+{25|26}", "9+17", "10*", "10*+16+{25|26}", "10+17"),
    "contempt": _expand("R12A+R14A", "L12A+L14A"),
}

EMOTIONS: tuple[str, ...] = tuple(PROTOTYPES)


def _au_axis(names) -> list[tuple[int, ...]]:
    from dsbuilder.labels.au import au_numbers

    return [au_numbers(n) for n in names]


def _basis(terms: tuple[AuTerm, ...], axes: dict[int, int], mode: str) -> np.ndarray:
    d = len(axes)
    cols = []
    req = [t for t in terms if not t.free]
    free = [t for t in terms if t.free]
    while len(req) < min(2, len(terms)):  # keep at least two AUs tied together (see module doc)
        req.append(free.pop(0))
    if mode == "joint":
        v = np.zeros(d)
        for t in req:
            v[axes[t.au]] = 1.0
        cols.append(v / np.linalg.norm(v))
        singles = free
    elif mode == "span":
        singles = list(terms)
    else:
        raise ValueError(f"unknown mode {mode!r} (joint or span)")
    for t in singles:
        e = np.zeros(d)
        e[axes[t.au]] = 1.0
        cols.append(e)
    return np.stack(cols, axis=1)


def emotion_score_matrix(au_values, au_names, prototypes: dict[str, tuple[str, ...]] | None = None,
                         mode: str = "joint") -> tuple[tuple[str, ...], np.ndarray]:
    """Score many frames at once: ``au_values`` (n, len(au_names)) -> (emotions, (n, n_emotions)).

    A frame's score for an emotion is the cosine of the smallest principal angle between its AU
    vector and the emotion's best prototype subspace. For a single vector x and a subspace with an
    orthonormal basis Q that cosine is ||Q^T x|| / ||x||, so every frame is scored with one matrix
    product per prototype instead of an SVD per frame and prototype (what
    ``scipy.linalg.subspace_angles`` would do; the tests check both agree). Negative and NaN values
    count as 0 (absent); an all-zero frame scores 0 everywhere.
    """
    vals = np.nan_to_num(np.atleast_2d(np.asarray(au_values, dtype=np.float64)), nan=0.0)
    vals = np.maximum(vals, 0.0)
    items = tuple((e, tuple(codes)) for e, codes in (PROTOTYPES if prototypes is None
                                                      else prototypes).items())
    emotions, to_axes, bases = _prototype_bases(tuple(au_names), items, mode)
    if to_axes.shape[0] != vals.shape[1]:
        raise ValueError(f"{vals.shape[1]} values for {to_axes.shape[0]} AU names")
    x = vals @ to_axes
    norms = np.linalg.norm(x, axis=1)
    unit = np.divide(x, norms[:, None], out=np.zeros_like(x), where=norms[:, None] > 1e-12)
    out = np.zeros((len(x), len(emotions)))
    for j, qs in enumerate(bases):
        for q in qs:
            out[:, j] = np.maximum(out[:, j], np.linalg.norm(unit @ q, axis=1))
    return emotions, np.minimum(out, 1.0)


@functools.lru_cache(maxsize=64)
def _prototype_bases(au_names: tuple[str, ...], prototypes: tuple[tuple[str, tuple[str, ...]], ...],
                     mode: str) -> tuple[tuple[str, ...], np.ndarray, list[list[np.ndarray]]]:
    """For AU columns ``au_names``: the emotions, the column -> FACS-axis map, and an orthonormal
    basis of every prototype subspace per emotion (parsed and factorised once per column set)."""
    numbers = _au_axis(au_names)
    parsed = {e: [parse_facs(c) for c in codes] for e, codes in prototypes}
    all_aus = sorted({a for ns in numbers for a in ns}
                     | {t.au for ps in parsed.values() for p in ps for t in p})
    axes = {a: i for i, a in enumerate(all_aus)}
    # map our AU columns onto FACS axes (a proxy such as AU06_07 feeds both AU6 and AU7)
    to_axes = np.zeros((len(numbers), len(axes)))
    for i, ns in enumerate(numbers):
        for a in ns:
            to_axes[i, axes[a]] = 1.0
    bases = [[np.linalg.qr(_basis(terms, axes, mode))[0] for terms in protos]
             for protos in parsed.values()]
    return tuple(parsed), to_axes, bases


def emotion_scores(au_values, au_names, prototypes: dict[str, tuple[str, ...]] | None = None,
                   mode: str = "joint") -> dict[str, float]:
    """AU values of one frame (``au_names`` like ``"AU12"``, ``"AU12_r"``, ``"AU06_07_geom"``) ->
    ``{emotion: score in [0, 1]}`` (see :func:`emotion_score_matrix`)."""
    emotions, m = emotion_score_matrix(np.asarray(au_values, dtype=np.float64).ravel()[None, :],
                                       au_names, prototypes, mode)
    return {e: float(v) for e, v in zip(emotions, m[0])}


def nearest_emotion(au_values, au_names, min_norm: float = 0.15,
                    **kwargs) -> tuple[str, float]:
    """The best-scoring emotion and its score; ``("neutral", 0.0)`` when the AU vector's Euclidean
    norm (after clipping negatives) is below ``min_norm`` (on a 0-1 intensity scale)."""
    vals = np.maximum(np.nan_to_num(np.asarray(au_values, dtype=np.float64), nan=0.0), 0.0)
    if np.linalg.norm(vals) < min_norm:
        return "neutral", 0.0
    scores = emotion_scores(vals, au_names, **kwargs)
    emo = max(scores, key=lambda e: (scores[e], -EMOTIONS.index(e) if e in EMOTIONS else 0))
    return emo, scores[emo]
