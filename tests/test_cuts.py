"""Cutting a face track into clips that each carry one emotion (dsbuilder.labels.cuts)."""

from __future__ import annotations

import numpy as np
import pytest

from dsbuilder.labels.cuts import cut_track, emotion_runs
from dsbuilder.labels.fer import FER_CLASSES

FPS = 25.0
SAD, HAPPY, NEUTRAL = (FER_CLASSES.index(c) for c in ("sad", "happy", "neutral"))


def probs_of(classes: list[tuple[int, float]], rng, noise: float = 0.15) -> np.ndarray:
    """Per-frame probabilities: ``(class, seconds)`` runs, each frame mostly its class."""
    out = []
    for k, seconds in classes:
        for _ in range(int(round(seconds * FPS))):
            p = rng.dirichlet(np.ones(7)) * noise
            p[k] += 1 - noise
            out.append(p / p.sum())
    return np.array(out)


def times(n: int) -> np.ndarray:
    return np.arange(n) / FPS


def test_crying_then_laughing_gives_two_clips_with_different_labels():
    rng = np.random.default_rng(0)
    p = probs_of([(SAD, 9.0), (HAPPY, 1.5), (HAPPY, 9.5)], rng)
    # a short flicker of another class inside the laughing part is not a cut
    p[300:310] = np.eye(7)[NEUTRAL] * 0.9 + 0.1 / 7
    cuts = cut_track(times(len(p)), len(p) / FPS, p, [], min_clip_s=1.0, max_clip_s=30.0)
    assert [(c.emotion, c.ended_by) for c in cuts] == [(SAD, "emotion"), (HAPPY, "track_end")]
    assert abs(cuts[0].end - 9 * FPS) <= 3


def test_speech_bounds_and_max_length():
    rng = np.random.default_rng(1)
    p = probs_of([(NEUTRAL, 12.0)], rng)
    n = len(p)
    # speech from 2 s to 6 s; a bound 0.3 s from the start is too close to cut
    cuts = cut_track(times(n), n / FPS, p, [int(0.3 * FPS), int(2 * FPS), int(6 * FPS)],
                     min_clip_s=1.0, max_clip_s=5.0)
    edges = [(c.start, c.end) for c in cuts]
    assert edges[0] == (0, 50) and (50, 150) in edges
    assert all((b - a) / FPS <= 5.0 + 1e-9 for a, b in edges)
    assert all((b - a) / FPS >= 1.0 - 1e-9 for a, b in edges)
    assert edges[-1][1] == n and all(x[1] == y[0] for x, y in zip(edges, edges[1:]))
    assert {c.ended_by for c in cuts} >= {"speech", "max_length", "track_end"}


def test_short_tracks_and_no_labels():
    assert cut_track(times(20), 20 / FPS, None, [], min_clip_s=1.0, max_clip_s=10.0) == []
    cuts = cut_track(times(60), 60 / FPS, None, [], min_clip_s=1.0, max_clip_s=10.0)
    assert [(c.start, c.end, c.emotion) for c in cuts] == [(0, 60, None)]


@pytest.mark.parametrize("min_s", [0.5, 1.0, 2.0])
def test_emotion_runs_last_at_least_the_minimum(min_s):
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(7) * 0.3, size=200)  # a teacher changing its mind every frame
    runs = emotion_runs(p, FPS, min_s)
    assert runs[0][0] == 0 and runs[-1][1] == 200
    assert all(b - a >= min_s * FPS - 1e-9 for a, b, _ in runs)
