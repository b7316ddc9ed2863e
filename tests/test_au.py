"""Geometric AU proxies (dsbuilder.labels.au) and AU CSV import (dsbuilder.labels.au_import)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsbuilder.labels import au_import
from dsbuilder.labels.au import (AU_GEOM_NAMES, au_numbers, geometric_aus, neutral_baseline,
                                 normalise_aus, track_aus)

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


@pytest.fixture(scope="module")
def shape() -> np.ndarray:
    """A real 68-point shape: dlib's landmarks on the Grace Hopper portrait (mouth closed)."""
    from dsbuilder.face import api
    from dsbuilder.synth import grace_hopper

    img = grace_hopper()
    return api.landmarks(img, api.detect(img)[0].box).astype(np.float64)


def _col(name):
    return AU_GEOM_NAMES.index(name)


def _delta(base, moved):
    return (geometric_aus(moved) - geometric_aus(base))[0]


def test_names_and_shape(shape):
    assert len(AU_GEOM_NAMES) >= 14 and all(n.endswith("_geom") for n in AU_GEOM_NAMES)
    for need in ("AU01", "AU02", "AU04", "AU05", "AU09", "AU12", "AU15", "AU17", "AU20", "AU25",
                 "AU26", "AU45"):
        assert f"{need}_geom" in AU_GEOM_NAMES
    assert au_numbers("AU06_07_geom") == (6, 7) and au_numbers(" AU12_r") == (12,)
    f = geometric_aus(np.stack([shape, shape]))
    assert f.shape == (2, len(AU_GEOM_NAMES)) and np.isfinite(f).all()
    assert np.allclose(geometric_aus(shape.reshape(136)), f[:1])


def test_brow_raise(shape):
    m = shape.copy()
    m[17:27, 1] -= 10
    d = _delta(shape, m)
    assert d[_col("AU01_geom")] > 0.08 and d[_col("AU02_geom")] > 0.08
    assert d[_col("AU04_geom")] < 0
    assert abs(d[_col("AU12_geom")]) < 1e-9 and abs(d[_col("AU25_geom")]) < 1e-9


def test_smile(shape):
    m = shape.copy()
    m[48] += (-6, -6)
    m[54] += (6, -6)
    d = _delta(shape, m)
    assert d[_col("AU12_geom")] > 0.1 and d[_col("AU20_geom")] > 0.1
    assert d[_col("AU15_geom")] < 0
    assert abs(d[_col("AU01_geom")]) < 1e-9


def test_jaw_open(shape):
    m = shape.copy()
    m[[5, 6, 7, 8, 9, 10, 11, 55, 56, 57, 58, 59, 65, 66, 67], 1] += 15
    d = _delta(shape, m)
    assert d[_col("AU25_geom")] > 0.15 and d[_col("AU26_geom")] > 0.15
    assert abs(d[_col("AU01_geom")]) < 1e-9


def test_eyes_closed(shape):
    m = shape.copy()
    m[[37, 38], 1] = m[[41, 40], 1] - 0.5
    m[[43, 44], 1] = m[[47, 46], 1] - 0.5
    d = _delta(shape, m)
    assert d[_col("AU45_geom")] > 0.08
    assert d[_col("AU05_geom")] < 0


def test_invariant_to_similarity(shape):
    rng = np.random.default_rng(0)
    base = geometric_aus(shape)
    for _ in range(5):
        a = rng.uniform(-np.pi / 4, np.pi / 4)
        s = rng.uniform(0.3, 4.0)
        R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        moved = s * shape @ R.T + rng.uniform(-500, 500, size=2)
        assert np.allclose(geometric_aus(moved), base, atol=1e-9)


def test_baseline_and_normalise(shape):
    frames = np.stack([shape] * 20)
    frames[8, 17:27, 1] -= 10  # one frame in 20 with raised brows (AU04 falls: below neutral)
    raw = geometric_aus(frames)
    base = neutral_baseline(raw)
    assert np.allclose(base, raw[0])
    base2 = neutral_baseline(raw, method="median_shape", landmarks=frames)
    assert np.allclose(base2, raw[0])
    x = normalise_aus(raw, base)
    assert (x >= 0).all() and np.allclose(np.delete(x, 8, axis=0), 0)
    assert x[8, _col("AU01_geom")] > 0.5
    assert np.allclose(track_aus(frames, method="percentile"), x)
    assert np.allclose(track_aus(frames), normalise_aus(raw, base2))
    with pytest.raises(ValueError):
        neutral_baseline(raw, method="nope")
    with pytest.raises(ValueError):
        geometric_aus(np.zeros((3, 5, 2)))


# --- CSV import -----------------------------------------------------------------------------------

def test_openface_synthetic(tmp_path):
    p = tmp_path / "of.csv"
    p.write_text("frame, timestamp, confidence, success, AU01_r, AU12_r, AU12_c, AU28_c\n"
                 "1, 0.000, 0.98, 1, 0.5, 2.0, 1, 0\n"
                 "2, 0.040, 0.97, 1, 0.0, 3.0, 1, 1\n"
                 "3, 0.080, 0.10, 0, 0.0, 0.0, 0, 0\n")
    t = au_import.read_openface_csv(p)
    assert t.tool == "openface" and len(t) == 3 and t.scale == 5.0
    assert t.au_names == ("AU01", "AU12") and t.presence_names == ("AU12", "AU28")
    assert t.frame.tolist() == [0, 1, 2] and t.source_frame.tolist() == [1, 2, 3]
    assert np.allclose(t.time, [0, 0.04, 0.08]) and t.success.tolist() == [True, True, False]
    assert np.allclose(t.column("AU12"), [2, 3, 0]) and t.column("AU28_c").tolist() == [0, 1, 0]
    # by time at 25 fps: 0.01 -> row 0; 0.05 -> row 1; 0.08 -> failed row -> NaN; 0.3 -> missing
    a = au_import.align_to_frames(t, frame_times=np.array([0.01, 0.05, 0.08, 0.3]), fps=25)
    assert np.allclose(a.values[:2], [[0.5, 2.0], [0.0, 3.0]])
    assert np.isnan(a.values[2:]).all() and a.success.tolist() == [True, True, False, False]
    a = au_import.align_to_frames(t, frame_indices=np.array([1, 0, 7]), fps=25)
    assert np.allclose(a.values[:2, 1], [3.0, 2.0]) and np.isnan(a.values[2]).all()
    assert np.allclose(a.time, [0.04, 0.0, 0.28])


def test_pyfeat_synthetic(tmp_path):
    p = tmp_path / "pf.csv"
    p.write_text("FaceScore,AU01,AU12,anger,happiness,neutral,input,frame\n"
                 "0.99,0.1,0.9,0.0,0.95,0.05,v.mp4,0\n"
                 "0.98,0.2,0.8,0.1,0.80,0.10,v.mp4,2\n")
    t = au_import.read_pyfeat_csv(p)
    assert t.tool == "pyfeat" and t.scale == 1.0 and t.time is None
    assert t.au_names == ("AU01", "AU12") and t.emotion_names == ("anger", "happiness", "neutral")
    a = au_import.align_to_frames(t, frame_indices=np.arange(3))
    assert np.allclose(a.values[[0, 2], 1], [0.9, 0.8]) and np.isnan(a.values[1]).all()
    assert np.allclose(a.emotions[2], [0.1, 0.8, 0.1])
    # no timestamps: times are frame / fps
    a = au_import.align_to_frames(t, frame_times=np.array([0.0, 1 / 30, 2 / 30]), fps=30)
    assert np.allclose(a.values[2], [0.2, 0.8]) and np.isnan(a.values[1]).all()


def test_bad_csvs(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="frame"):
        au_import.read_openface_csv(p)
    with pytest.raises(ValueError, match="AU"):
        au_import.read_pyfeat_csv(p)
    p.write_text("frame,AU01_r\n1,0.5,9\n")
    with pytest.raises(ValueError, match="row 2"):
        au_import.read_openface_csv(p)
    with pytest.raises(ValueError):
        au_import.align_to_frames(au_import.read_pyfeat_csv(_pf(tmp_path)), frame_times=[0.0])


def _pf(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text("AU01,frame\n0.5,0\n")
    return p


def _media():
    if not MEDIA.is_dir():
        pytest.skip(f"real media not found at {MEDIA} (a checkout without ../shared)")
    return MEDIA


@pytest.mark.realmedia
def test_openface_real():
    t = au_import.read_openface_csv(_media() / "au" / "OpenFace_Test.csv")
    assert len(t) == 100 and len(t.au_names) == 17 and len(t.presence_names) == 18
    assert "AU28" in t.presence_names and "AU28" not in t.au_names
    assert t.source_frame[0] == 1 and t.frame[0] == 0 and np.isclose(t.time[-1], 0.099)
    assert t.success.all() and np.nanmax(t.values) <= 5.0 and np.nanmin(t.values) >= 0.0
    a = au_import.align_to_frames(t, frame_indices=np.arange(0, 120, 10), fps=1000)
    assert np.isfinite(a.values[:10]).all() and np.isnan(a.values[10:]).all()


@pytest.mark.realmedia
def test_pyfeat_real():
    t = au_import.read_pyfeat_csv(_media() / "au" / "001.csv")
    assert len(t) == 40 and len(t.au_names) == 20 and len(t.emotion_names) == 7
    assert t.frame.tolist() == list(range(40))
    assert 0.0 <= np.nanmin(t.values) and np.nanmax(t.values) <= 1.0
    h = t.column("happiness")
    assert h.min() >= 0.65 and h.max() <= 1.0
