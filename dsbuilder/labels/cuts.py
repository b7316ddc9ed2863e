"""Where a face track is cut into training clips that each carry one emotion.

A face track can go through several expressions (crying for 9 s, then laughing); one clip per track
would average them into a label that describes neither. :func:`cut_track` cuts a track's labelled
frames into clips of ``min_clip_s`` to ``max_clip_s``:

1. **Emotion runs.** The FER teacher's smoothed per-frame probabilities are read as an HMM over the
   seven classes (emission ``log p_t(class)``, staying in a class ``1 - 1/(fps * hold_s)`` likely per
   frame, switching uniform over the others), decoded by the minimum-duration Viterbi
   (:func:`dsbuilder.labels.hmm.viterbi_min_run`) with runs of at least ``min_clip_s``. Each run is
   one dominant emotion; a change of the teacher's mind shorter than ``min_clip_s`` is not a cut.
2. **Speech bounds.** Where the person starts or stops speaking (the ``speech`` table's segments) is a
   cut too, unless it falls within ``min_clip_s`` of another cut or of the track's ends.
3. **Length.** A piece longer than ``max_clip_s`` is split into equal parts no longer than it.

A track shorter than ``min_clip_s`` gives no clip (the report stage writes a ``too_short`` rejection).
The HMM segments of the label stage are not used for cutting: they follow geometric AU proxies that
move with speech and pose (benchmarks/RESULTS.md, "label: HMM segments").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: How long the teacher is expected to hold an emotion when it switches freely (sets the switch
#: probability per frame; the minimum duration does most of the work).
HOLD_S = 2.0


@dataclass(frozen=True)
class Cut:
    """Frames ``[start, end)`` of the track's labelled frames, and what ended the piece."""

    start: int
    end: int
    emotion: int | None  # the run's class index (None: no FER labels)
    ended_by: str  # emotion | speech | max_length | track_end


def emotion_runs(probs: np.ndarray, fps: float, min_run_s: float) -> list[tuple[int, int, int]]:
    """Runs ``(start, end, class)`` of at least ``min_run_s`` over per-frame class probabilities."""
    from dsbuilder.labels.hmm import runs, viterbi_min_run

    p = np.asarray(probs, np.float64)
    n, k = p.shape
    if n == 0:
        return []
    stay = 1.0 - 1.0 / max(2.0, fps * HOLD_S)
    trans = np.full((k, k), (1.0 - stay) / max(1, k - 1))
    np.fill_diagonal(trans, stay)
    with np.errstate(divide="ignore"):
        path = viterbi_min_run(np.full(k, -np.log(k)), np.log(trans), np.log(p + 1e-6),
                               max(1, int(np.ceil(min_run_s * fps - 1e-9))))
    return runs(path)


def cut_track(times: Sequence[float], end_s: float, probs: np.ndarray | None,
              speech_bounds: Sequence[int], *, min_clip_s: float, max_clip_s: float) -> list[Cut]:
    """The clips of one track (see the module docstring). ``times``: the labelled frames' times;
    ``end_s``: the end of the last frame; ``probs`` (n, 7) smoothed FER probabilities or None;
    ``speech_bounds``: frame positions (indices into ``times``) where a speech segment starts or
    ends."""
    t = np.asarray(times, np.float64)
    n = len(t)
    if n == 0 or end_s - t[0] < min_clip_s - 1e-9:
        return []
    fps = (n - 1) / (t[-1] - t[0]) if n > 1 and t[-1] > t[0] else 25.0

    def at(i: int) -> float:  # time of frame position i (i == n: the end of the track)
        return float(t[i]) if i < n else float(end_s)

    cuts: dict[int, tuple[str, int | None]] = {}
    runs_ = emotion_runs(probs, fps, min_clip_s) if probs is not None and len(probs) == n else []
    emotion_at = np.full(n, -1, np.int64)
    for a, b, k in runs_:
        emotion_at[a:b] = k
        if a > 0:
            cuts[a] = ("emotion", k)
    for b in sorted(set(int(x) for x in speech_bounds)):
        if not 0 < b < n:
            continue
        near = [c for c in (0, n, *cuts) if abs(at(c) - at(b)) < min_clip_s - 1e-9]
        if not near:
            cuts[b] = ("speech", None)
    bounds = [0, *sorted(cuts), n]
    out: list[Cut] = []
    for a, b in zip(bounds, bounds[1:]):
        length = at(b) - at(a)
        parts = max(1, int(np.ceil(length / max_clip_s - 1e-9)))
        edges = [a + int(round((b - a) * j / parts)) for j in range(parts + 1)]
        for j, (x, y) in enumerate(zip(edges, edges[1:])):
            if y <= x:
                continue
            if j < parts - 1:
                why = "max_length"
            elif b == n:
                why = "track_end"
            else:
                why = cuts[b][0]
            k = int(emotion_at[x]) if emotion_at[x] >= 0 else None
            out.append(Cut(x, y, k, why))
    return out
