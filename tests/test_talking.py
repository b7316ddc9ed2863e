"""The demo's talking portrait (dsbuilder/talking.py): a synthetic voice that a VAD hears as speech in
its syllables only, and a mouth warp whose opening, measured by dlib's landmarks on the rendered
picture, follows that voice while the eyes stay put."""

from __future__ import annotations

import numpy as np
import pytest

from dsbuilder import synth, talking
from dsbuilder.audio import AudioChunk, speech_ratio, vad_segments
from dsbuilder.face import api


@pytest.fixture(scope="module")
def hopper():
    picture = synth.grace_hopper()
    return picture, talking.face_landmarks(picture)


def _landmarks(picture: np.ndarray) -> np.ndarray:
    found = api.detect(picture, "hog", 1)
    assert found, "the rendered portrait must still be a face"
    return api.landmarks(picture, found[0].box)


def test_voice_is_speech_in_its_syllables_and_nothing_in_its_pauses():
    v = talking.Voice.make(6.0, seed=3)
    assert v.samples.dtype == np.float32 and len(v.samples) == 6 * 16000
    assert 0.45 <= np.abs(v.samples).max() <= 0.5
    assert len(v.syllables) >= 8
    assert all(0 <= s.start < s.end <= 6.0 for s in v.syllables)
    starts = np.array([s.start for s in v.syllables])
    assert np.all(np.diff(starts) > 0)
    gaps = [b.start - a.end for a, b in zip(v.syllables, v.syllables[1:])]
    assert max(gaps) >= 0.25  # phrases are separated by pauses
    # silence outside the syllables, sound inside
    inside = np.zeros(len(v.samples), bool)
    for s in v.syllables:
        inside[int(s.start * 16000):int(s.end * 16000)] = True
    assert np.abs(v.samples[~inside]).max() == 0.0
    assert v.envelope(v.syllables[0].start - 0.01) == 0.0
    mid = v.syllables[0]
    assert v.envelope((mid.start + mid.end) / 2) > 0.9
    # a VAD hears speech in the syllables and not between phrases
    segs = vad_segments([AudioChunk(0.0, v.samples, 16000)], method="webrtc")
    spoken = sum(s.end - s.start for s in v.syllables)
    assert speech_ratio(segs, 0.0, 6.0) > 0.6 * spoken / 6.0
    before, after = max(zip(v.syllables, v.syllables[1:]), key=lambda p: p[1].start - p[0].end)
    assert speech_ratio(segs, before.end + 0.12, after.start - 0.05) < 0.5
    # seeded: the same seed gives the same voice, another seed another one
    assert np.array_equal(v.samples, talking.Voice.make(6.0, seed=3).samples)
    assert not np.array_equal(v.samples, talking.Voice.make(6.0, seed=4).samples)


def test_a_voice_too_short_for_a_syllable_is_an_error():
    with pytest.raises(ValueError, match="too short"):
        talking.Voice.make(0.3)
    assert talking.Voice.make(0.6, seed=1).syllables


def test_voice_pitch_is_the_speakers():
    low = talking.Voice.make(3.0, seed=1, f0=105.0)
    high = talking.Voice.make(3.0, seed=1, f0=220.0)

    def pitch(v: talking.Voice) -> float:
        s = max(v.syllables, key=lambda s: s.end - s.start)
        x = v.samples[int(s.start * 16000):int(s.end * 16000)].astype(np.float64)
        ac = np.correlate(x, x, "full")[len(x) - 1:]
        lo, hi = 16000 // 400, 16000 // 60
        return 16000 / (lo + int(np.argmax(ac[lo:hi])))

    assert 80 < pitch(low) < 135 and 170 < pitch(high) < 270


def test_mouth_opens_and_narrows_on_the_landmarks_and_the_eyes_stay(hopper):
    picture, lm0 = hopper
    rig = talking.MouthRig(picture, lm0)
    assert rig.render(0.0) is picture  # closed: the portrait itself
    rest = _landmarks(picture)
    wide = _landmarks(rig.render(1.0))
    assert api.mouth_aperture(rest) < 0.1
    assert api.mouth_aperture(wide) > 0.25
    assert wide[8, 1] - rest[8, 1] > 0.2 * (rest[54, 0] - rest[48, 0])  # the chin drops
    # above the lips nothing moves: the eyes' pixels are the portrait's, and so are their landmarks
    # (up to dlib's own jitter when the face box grows with the jaw)
    above = int(lm0[[60, 61, 62, 63, 64], 1].min()) - 2
    assert np.array_equal(rig.render(1.0)[:above], picture[:above])
    assert np.abs(wide[36:48].mean(axis=0) - rest[36:48].mean(axis=0)).max() < 2.0
    nose = int(lm0[33, 1])  # narrowing the lips leaves the nose and all above it alone
    assert np.array_equal(rig.render(0.5, width=0.74)[:nose], picture[:nose])
    rounded = _landmarks(rig.render(0.5, width=0.74))
    spread = _landmarks(rig.render(0.5, width=1.0))
    assert (rounded[54, 0] - rounded[48, 0]) < 0.92 * (spread[54, 0] - spread[48, 0])


def test_the_mouth_follows_the_voice(hopper):
    picture, _ = hopper
    fps = 25.0
    voice = talking.Voice.make(3.0, seed=5)
    frame = talking.talking(picture, voice, fps)
    idx = np.arange(0, int(3.0 * fps), 2)
    aperture = np.array([api.mouth_aperture(_landmarks(frame(int(i)))) for i in idx])
    wanted = np.array([voice.mouth(i / fps)[0] for i in idx])
    assert np.corrcoef(aperture, wanted)[0, 1] > 0.8
    # silent frames show the mouth closed
    assert aperture[wanted == 0].max() < 0.12
