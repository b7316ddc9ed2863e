"""FACS notation and emotion-from-AU scoring (dsbuilder.labels.facs)."""

from __future__ import annotations

import numpy as np
import pytest

from dsbuilder.labels.facs import (EMOTIONS, PROTOTYPES, AuTerm, FacsSyntaxError, emotion_scores,
                                   nearest_emotion, parse_facs)


def test_parse_valid():
    assert parse_facs("4+5*+7+23") == (AuTerm(4), AuTerm(5, free=True), AuTerm(7), AuTerm(23))
    assert parse_facs("12C + 25") == (AuTerm(12, intensity="C"), AuTerm(25))
    assert parse_facs("R12A+r14a") == (AuTerm(12, side="R", intensity="A"),
                                       AuTerm(14, side="R", intensity="A"))
    assert str(parse_facs("L20*")[0]) == "L20*"


@pytest.mark.parametrize("code, bad", [("4+5F", "5F"), ("4++5", "''"), ("X12", "X12"),
                                       ("12+0", "0"), ("6+12**", "12**"), ("100", "100")])
def test_parse_invalid_names_token(code, bad):
    import re

    with pytest.raises(FacsSyntaxError, match=re.escape(f"bad token {bad}" if bad == "''"
                                                        else f"bad token '{bad}'")):
        parse_facs(code)


def test_parse_duplicates_and_empty():
    with pytest.raises(FacsSyntaxError, match="AU 12 appears twice.*'12C'.*'R12A'"):
        parse_facs("12C+6+R12A")
    with pytest.raises(FacsSyntaxError, match="empty"):
        parse_facs("  ")


def test_prototype_table_parses():
    assert set(EMOTIONS) == {"happiness", "sadness", "surprise", "fear", "anger", "disgust",
                             "contempt"}
    for emo, codes in PROTOTYPES.items():
        assert len(codes) >= 2, emo
        for c in codes:
            parse_facs(c)
    assert "1+2+5B+26" in PROTOTYPES["surprise"] and "R12A+R14A" in PROTOTYPES["contempt"]


def _top(aus: dict[int, float], **kw):
    names = [f"AU{a:02d}" for a in aus]
    s = emotion_scores(list(aus.values()), names, **kw)
    return max(s, key=s.get), s


@pytest.mark.parametrize("aus, want", [
    ({6: 1, 12: 1}, "happiness"),
    ({12: 0.8}, "happiness"),
    ({1: 1, 2: 1, 5: 1, 26: 1}, "surprise"),
    ({1: 1, 2: 1, 4: 1, 5: 1, 20: 1, 26: 1}, "fear"),
    ({1: 1, 4: 1, 15: 1}, "sadness"),
    ({4: 1, 5: 1, 7: 1, 23: 1}, "anger"),
    ({9: 1}, "disgust"),
    ({12: 0.2, 14: 0.2}, "contempt"),
])
def test_hand_made_vectors(aus, want):
    top, s = _top(aus)
    assert top == want, s
    assert s[want] > 0.99
    assert all(0.0 <= v <= 1.0 for v in s.values())


def test_score_is_cosine_of_principal_angle():
    # AU12 alone vs happiness 6+12*: required direction (e6+e12)/sqrt2 -> but 12C alone is a prototype
    _, s = _top({6: 1.0})
    assert s["happiness"] == pytest.approx(1 / np.sqrt(2))
    # scale does not matter; unknown AUs lower every score
    _, a = _top({6: 1, 12: 1})
    _, b = _top({6: 5, 12: 5})
    assert a == pytest.approx(b)
    _, c = _top({6: 1, 12: 1, 43: 1})
    assert c["happiness"] == pytest.approx(np.sqrt(2 / 3))


def test_names_geom_and_combined():
    s = emotion_scores([1.0, 1.0], ["AU06_07_geom", "AU12_geom"])
    assert max(s, key=s.get) == "happiness"
    s_r = emotion_scores([3.0, 2.0, np.nan, -1.0], [" AU06_r", "AU12_r", "AU04_r", "AU15_r"])
    assert max(s_r, key=s_r.get) == "happiness"
    with pytest.raises(ValueError):
        emotion_scores([1.0], ["AU01", "AU02"])


def test_span_mode_and_neutral():
    s = emotion_scores([1.0], ["AU01"], mode="span")
    assert s["surprise"] == pytest.approx(1.0) and s["sadness"] == pytest.approx(1.0)
    assert emotion_scores([0.0, 0.0], ["AU01", "AU12"]) == {e: 0.0 for e in EMOTIONS}
    assert nearest_emotion([0.01, 0.02], ["AU01", "AU12"]) == ("neutral", 0.0)
    emo, score = nearest_emotion([0.0, 0.9], ["AU01", "AU12"])
    assert emo == "happiness" and score == pytest.approx(1.0)


def test_batched_scores_equal_principal_angles_from_scipy():
    """The matrix shortcut (||Q^T x|| for orthonormal Q) equals scipy's principal angles."""
    import numpy as np
    from scipy.linalg import subspace_angles

    from dsbuilder.labels import facs
    from dsbuilder.labels.au import AU_GEOM_NAMES

    rng = np.random.default_rng(3)
    values = rng.random((20, len(AU_GEOM_NAMES))) * (rng.random((20, len(AU_GEOM_NAMES))) > 0.5)
    emotions, m = facs.emotion_score_matrix(values, AU_GEOM_NAMES)
    numbers = facs._au_axis(AU_GEOM_NAMES)
    parsed = {e: [facs.parse_facs(c) for c in codes] for e, codes in facs.PROTOTYPES.items()}
    all_aus = sorted({a for ns in numbers for a in ns}
                     | {t.au for ps in parsed.values() for p in ps for t in p})
    axes = {a: i for i, a in enumerate(all_aus)}
    for row, scores in zip(values, m):
        x = np.zeros(len(axes))
        for v, ns in zip(row, numbers):
            for a in ns:
                x[axes[a]] += v
        if not x.any():
            assert not scores.any()
            continue
        for j, e in enumerate(emotions):
            best = max(float(np.cos(subspace_angles(x[:, None], facs._basis(t, axes, "joint")).min()))
                       for t in parsed[e])
            assert scores[j] == pytest.approx(min(1.0, best), abs=1e-9)
