"""A talking portrait for the demo and the tests: a synthetic voice, and a still face whose jaw and
lips move with it.

**The voice** (:class:`Voice`) is a source-filter vowel synthesiser: a glottal harmonic series whose
pitch falls over each phrase, shaped by the first three formants of one of five vowels per syllable
(Peterson & Barney's adult averages), syllables of 140-320 ms with a noise burst at some onsets (a
consonant), grouped in phrases of three to seven syllables with pauses between. It is speech to a
voice-activity detector and to MFCCs, without being anyone's voice.

**The mouth** (:class:`MouthRig`) is moved on the portrait itself, from its 68 dlib landmarks found once:
the jaw drops by the voice's loudness times the vowel's opening (``a`` wide, ``i`` and ``u`` narrow),
the lower lip and chin follow it (the drop fades towards the jaw line and below the chin, so the face
stretches rather than tears), the gap between the lips shows a dark mouth with the upper teeth, and
the lips narrow for rounded vowels (``o``, ``u``) and widen for ``i``. One inverse warp per frame
(``cv2.remap``), computed from the landmarks and nothing else, so any frontal portrait with a closed
mouth can be made to talk.

Both are driven by the same time axis: the picture at time ``t`` shows the mouth for the voice at
``t``. The same picture with another voice (:meth:`Voice.make` with another seed) is a dubbed copy
whose lips do not match its sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Vowel -> (F1, F2, F3 in Hz), jaw opening (0-1) and lip width (1 = at rest).
VOWELS: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "a": ((730.0, 1090.0, 2440.0), 1.0, 1.0),
    "e": ((530.0, 1840.0, 2480.0), 0.6, 1.06),
    "i": ((270.0, 2290.0, 3010.0), 0.3, 1.12),
    "o": ((570.0, 840.0, 2410.0), 0.75, 0.84),
    "u": ((300.0, 870.0, 2240.0), 0.35, 0.74),
}
_BANDWIDTHS = (90.0, 110.0, 170.0)


@dataclass(frozen=True)
class Syllable:
    start: float  # seconds
    end: float
    vowel: str


@dataclass
class Voice:
    """A synthetic voice track: ``samples`` (mono float32 at ``rate``) and its ``syllables``."""

    samples: np.ndarray
    rate: int
    syllables: list[Syllable]

    @classmethod
    def make(cls, duration: float, seed: int = 0, rate: int = 16000, f0: float = 190.0,
             tract: float = 1.0, start: float = 0.15) -> "Voice":
        """``duration`` seconds of phrases (pauses of 0.25-0.7 s between them), from ``seed``.
        ``f0``: the speaker's mean pitch (Hz); ``tract``: formant frequencies scaled by this (a
        shorter vocal tract, higher formants: > 1), so that two voices sound like two people."""
        rng = np.random.default_rng(seed)
        n = int(round(duration * rate))
        out = np.zeros(n, np.float64)
        syllables: list[Syllable] = []
        t = start
        while True:
            count = int(rng.integers(3, 8))
            phrase = []
            for _ in range(count):
                length = float(rng.uniform(0.14, 0.32))
                if t + length > duration - 0.05:
                    break
                phrase.append(Syllable(t, t + length, str(rng.choice(list(VOWELS)))))
                t += length + float(rng.uniform(0.0, 0.04))
            for k, syl in enumerate(phrase):
                # pitch falls over the phrase (declination), with a little jitter per syllable
                pitch = f0 * (1.12 - 0.24 * k / max(1, len(phrase) - 1)) * rng.uniform(0.97, 1.03)
                _add_syllable(out, syl, rate, pitch, tract, burst=bool(rng.random() < 0.5),
                              rng=rng)
            syllables.extend(phrase)
            t += float(rng.uniform(0.25, 0.7))
            if not phrase or t > duration - 0.2:
                break
        if not syllables:
            raise ValueError(f"{duration:.2f} s is too short for a syllable (about 0.5 s at least)")
        peak = float(np.abs(out).max()) or 1.0
        return cls((0.5 * out / peak).astype(np.float32), rate, syllables)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate

    def envelope(self, t: float) -> float:
        """Loudness of the voiced part at ``t`` (0-1), as the mouth should follow it."""
        for s in self.syllables:
            if s.start <= t < s.end:
                return _syllable_env((t - s.start) / (s.end - s.start))
        return 0.0

    def mouth(self, t: float, lead_s: float = 0.03) -> tuple[float, float]:
        """(jaw opening 0-1, lip width factor) at ``t``. The mouth leads the sound a little, as it
        does in speech (it opens before the vowel is heard)."""
        t = t + lead_s
        for s in self.syllables:
            if s.start <= t < s.end:
                _, opening, width = VOWELS[s.vowel]
                e = _syllable_env((t - s.start) / (s.end - s.start))
                return e * opening, 1.0 + (width - 1.0) * e
        return 0.0, 1.0


def _syllable_env(x: float | np.ndarray) -> float | np.ndarray:
    """Rise, hold and fall over a syllable's length (``x`` in [0, 1])."""
    return np.sin(np.pi * np.clip(x, 0.0, 1.0)) ** 0.6


def _add_syllable(out: np.ndarray, syl: Syllable, rate: int, pitch: float, tract: float,
                  burst: bool, rng: np.random.Generator) -> None:
    i0, i1 = int(syl.start * rate), min(len(out), int(syl.end * rate))
    if i1 <= i0:
        return
    t = np.arange(i1 - i0) / rate
    x = t / (syl.end - syl.start)
    f0 = pitch * (1.0 + 0.04 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    formants, _, _ = VOWELS[syl.vowel]
    wave = np.zeros_like(t)
    for k in range(1, int(4000 // pitch) + 1):
        f = k * pitch
        gain = 1.0 / k  # glottal source: about -6 dB an octave after lip radiation
        for fc, bw in zip(formants, _BANDWIDTHS):
            fc, bw = fc * tract, bw * tract
            gain *= 1.0 / np.sqrt((1 - (f / fc) ** 2) ** 2 + (f * bw / fc ** 2) ** 2)
        wave += gain * np.sin(k * phase)
    wave /= np.abs(wave).max() or 1.0
    env = _syllable_env(x)
    out[i0:i1] += wave * env
    if burst:  # a consonant: 25 ms of high-passed noise at the onset
        m = min(len(t), int(0.025 * rate))
        noise = rng.standard_normal(m)
        noise = np.diff(noise, prepend=0.0) * 0.25 * np.hanning(m)
        out[i0:i0 + m] += noise


class MouthRig:
    """Moves the jaw and lips of a still portrait. ``landmarks``: dlib's 68 points on ``picture``."""

    def __init__(self, picture: np.ndarray, landmarks: np.ndarray, max_open: float = 0.42):
        lm = np.asarray(landmarks, np.float64)
        self.picture = np.ascontiguousarray(picture)
        h, w = picture.shape[:2]
        self.mouth_w = float(lm[54, 0] - lm[48, 0])
        self.cx = float((lm[48, 0] + lm[54, 0]) / 2)
        self.max_open = max_open * self.mouth_w  # pixels of jaw drop at full opening
        # the line where the lips meet: the mean of the inner upper and lower lip, across the mouth
        upper = lm[[60, 61, 62, 63, 64]]
        lower = lm[[60, 67, 66, 65, 64]]
        xs = (upper[:, 0] + lower[:, 0]) / 2
        ys = (upper[:, 1] + lower[:, 1]) / 2
        order = np.argsort(xs)
        self.lip_x, self.lip_y = xs[order], ys[order]
        self.inner_half = float(lm[64, 0] - lm[60, 0]) / 2 + 0.08 * self.mouth_w
        self.jaw_left, self.jaw_right = float(lm[4, 0]), float(lm[12, 0])
        self.chin_y = float(lm[8, 1])
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.xx, self.yy = xx, yy
        lip_line = np.interp(xx[0], self.lip_x, self.lip_y).astype(np.float32)
        self.lip_line = lip_line[None, :]  # (1, w)
        # horizontal profile of the jaw drop: full under the mouth, fading to nothing at the jaw line
        u = np.clip((np.abs(xx[0] - self.cx) - 0.5 * self.mouth_w)
                    / max(1.0, (self.jaw_right - self.jaw_left) / 2 - 0.5 * self.mouth_w), 0, 1)
        self.jaw_profile = (0.5 + 0.5 * np.cos(np.pi * u)).astype(np.float32)[None, :]
        # vertical profile: from the lip line down to the chin the whole drop, then fading out over
        # a third of the face below the chin (the neck and collar do not move)
        fade = 0.35 * (self.chin_y - float(lm[27, 1]))
        v = np.clip((yy - self.chin_y) / fade, 0, 1)
        self.below = (0.5 + 0.5 * np.cos(np.pi * v)) * (yy >= self.lip_line)
        # how far down from the lips towards the chin (0 at the lips, 1 at the chin and below): the
        # drop blends from the lower lip's (the mouth's opening) to the chin's (the jaw profile)
        self.to_chin = np.clip((yy - self.lip_line) / max(1.0, self.chin_y - self.lip_line.max()),
                               0, 1)
        # region where the lips change width: around the mouth
        sx, sy = 0.75 * self.mouth_w, 0.45 * self.mouth_w
        self.around = np.exp(-(((xx - self.cx) / sx) ** 2) - (((yy - self.lip_line) / sy) ** 2))
        # ... and nothing above the nose's tip moves (nostrils, cheeks, eyes)
        nose = float(lm[33, 1])
        self.around *= np.clip((yy - nose) / max(1.0, float(self.lip_line.min()) - nose), 0, 1)

    def render(self, opening: float, width: float = 1.0) -> np.ndarray:
        """The portrait with the jaw open by ``opening`` (0-1) and the lips ``width`` times as wide."""
        import cv2

        opening = float(np.clip(opening, 0.0, 1.0))
        if opening < 1e-3 and abs(width - 1.0) < 1e-3:
            return self.picture
        drop = opening * self.max_open
        # the mouth's own opening is an ellipse across the inner lips, widest in the middle
        half = self.inner_half * width
        e = np.clip(1 - ((self.xx[0:1] - self.cx) / half) ** 2, 0, 1) ** 0.5
        gap = drop * e  # (1, w): height of the open mouth per column
        # jaw drop per pixel: the lower lip at the gap, the chin by the jaw profile, blended down
        d = (gap * (1 - self.to_chin) + drop * self.jaw_profile * self.to_chin) * self.below
        map_y = self.yy - d
        map_x = self.xx - (self.xx - self.cx) * (1 - 1 / width) * self.around
        # inside the open mouth: sample nothing of the face (painted below)
        out = cv2.remap(self.picture, map_x.astype(np.float32), map_y.astype(np.float32),
                        interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        below_lip = self.yy - self.lip_line
        # coverage of the open mouth per pixel, soft over one pixel at its edges
        inside = np.clip(below_lip + 0.5, 0, 1) * np.clip(gap - below_lip + 0.5, 0, 1) * (gap > 0.5)
        if inside.any():
            depth = np.clip(below_lip / np.maximum(gap, 1e-3), 0, 1)
            cavity = np.empty(out.shape, np.float32)
            cavity[:] = np.array([70, 28, 30], np.float32)
            cavity *= (1 - 0.5 * depth)[..., None]
            teeth = min(0.09 * self.mouth_w, 0.4 * drop)
            is_teeth = (below_lip < teeth) & (e > 0.35)
            cavity[is_teeth] = np.array([200, 190, 176], np.float32)
            a = inside[..., None].astype(np.float32)
            out = (out * (1 - a) + cavity * a).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(out)


def face_landmarks(picture: np.ndarray) -> np.ndarray:
    """dlib's 68 landmarks of the largest face in ``picture`` (HOG detector, upsampled once)."""
    from dsbuilder.face import api

    found = api.detect(picture, "hog", 1)
    if not found:
        raise ValueError("no face found in the portrait")
    return api.landmarks(picture, found[0].box)


def talking(picture: np.ndarray, voice: Voice, fps: float, start_s: float = 0.0
            ) -> Callable[[int], np.ndarray]:
    """Frame ``i`` of a shot starting at ``start_s``: the portrait speaking ``voice`` at that time."""
    rig = MouthRig(picture, face_landmarks(picture))

    def frame(i: int) -> np.ndarray:
        opening, width = voice.mouth(start_s + i / fps)
        return rig.render(opening, width)

    return frame
