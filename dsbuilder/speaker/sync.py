"""Audio-visual sync scoring: is this face the one we hear, and at what offset?

The method follows SyncNet's evaluation (Chung & Zisserman 2016) with a measurable signal instead of
learned embeddings:

1. Visual features ``v`` (n, kv): mouth opening per frame (:mod:`dsbuilder.speaker.mouth`), NaN where
   the mouth is not visible. Audio features ``a`` (n, ka) at the same frame times: log envelope and
   log band energies (:func:`dsbuilder.audio.frame_features`).
2. Both are standardised over the track, summed into one visual and one audio signal, and each signal
   is paired with its frame-to-frame change (speech onsets go with the mouth opening).
3. For windows of ``window_s`` every ``hop_s`` and each offset ``d`` in ``[-max_offset, max_offset]``
   frames, the distance is ``1 - r`` where ``r`` is the mean of the Pearson correlations of the
   (level, change) pairs between ``v[t]`` and ``a[t + d]``. **Positive offset: the audio comes d frames
   after the picture** (advance the audio by d frames to re-sync).
4. Track level, as SyncNet: the distance curve averaged over windows; ``offset`` = its argmin,
   ``confidence`` = median minus minimum of the curve. Distances are in [0, 2], so the confidence is
   on a 0-2 scale (SyncNet's embedding distances give values around 0-15; the two are not comparable).
   Measured (benchmarks/RESULTS.md ``## speakers``): synthetic lip-synced speech ~0.7, the same
   with unrelated speech 0.15-0.31, silence ~0.1, a real singer (Hamilton clip) ~0.2. The confidence
   alone does NOT separate real speech from unrelated speech: the offset gate (|offset| <= 5 frames;
   unrelated audio peaks at a random offset) and the mouth-motion gate do much of the work. The
   default confidence gate is 0.15.
5. Per frame: each window's confidence at the track offset (its median distance minus its distance at
   the offset), averaged over the windows covering the frame, mapped through a logistic around the
   confidence gate, median-smoothed, and multiplied by the VAD decision at that frame.

:class:`SyncScorer` is the plug-in point: a subclass implements :meth:`SyncScorer.distances` (windows x
offsets) and inherits the offset search, confidence and per-frame probabilities. :class:`OnnxSyncScorer`
runs a user-supplied ONNX model (recipe ``stages.speakers.sync_model``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Gates:
    """The explicit decision rule; stored with every result (``speech.gates``)."""

    min_vad_ratio: float = 0.3  # fraction of the span with speech (VAD) -> else "silent"
    min_confidence: float = 0.15  # sync confidence -> else "not_speaking"
    min_mouth_motion: float = 0.015  # std of the inner-gap change (face heights) -> else "not_speaking"
    max_offset_frames: int = 5  # |av offset| -> else "off_sync"
    min_valid_ratio: float = 0.5  # frames with a visible mouth -> else "not_speaking"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SyncResult:
    offset: int  # frames; positive = audio later than video
    confidence: float  # median - min of the mean distance curve
    curve: np.ndarray  # (n_offsets,) mean distance per offset
    offsets: np.ndarray  # (n_offsets,) the offsets tried
    frame_confidence: np.ndarray  # (n,) per-frame confidence at ``offset`` (NaN: no window)
    n_windows: int
    scorer: str
    extra: dict[str, Any] = field(default_factory=dict)


def _z(x: np.ndarray) -> np.ndarray:
    """Standardise each column over its finite values (NaN stays NaN)."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    mu = np.nanmean(x, axis=0) if np.isfinite(x).any() else np.zeros(x.shape[1])
    sd = np.nanstd(x, axis=0) if np.isfinite(x).any() else np.ones(x.shape[1])
    sd = np.where(np.isfinite(sd) & (sd > 1e-9), sd, 1.0)
    return (x - mu) / sd


def _diff(x: np.ndarray) -> np.ndarray:
    d = np.full_like(x, np.nan)
    d[1:] = x[1:] - x[:-1]
    return d


def _shift(a: np.ndarray, d: int) -> np.ndarray:
    """``out[t] = a[t + d]`` (NaN outside)."""
    out = np.full_like(a, np.nan)
    n = len(a)
    if d >= 0:
        out[:max(0, n - d)] = a[d:]
    else:
        out[-d:] = a[:n + d]
    return out


def window_starts(n: int, win: int, hop: int) -> np.ndarray:
    if n <= win:
        return np.array([0])
    starts = np.arange(0, n - win + 1, hop)
    if starts[-1] != n - win:
        starts = np.append(starts, n - win)
    return starts


def windowed_corr(v: np.ndarray, a: np.ndarray, starts: np.ndarray, win: int,
                  min_pairs: int) -> np.ndarray:
    """Pearson correlation of 1-D ``v`` and ``a`` over ``[s, s+win)`` for each start, NaN-aware.

    Windows with fewer than ``min_pairs`` finite pairs (or no variance) give NaN.
    """
    m = np.isfinite(v) & np.isfinite(a)
    vv = np.where(m, v, 0.0)
    aa = np.where(m, a, 0.0)
    cols = np.stack([m.astype(float), vv, aa, vv * vv, aa * aa, vv * aa])
    cs = np.concatenate([np.zeros((6, 1)), np.cumsum(cols, axis=1)], axis=1)
    ends = np.minimum(starts + win, len(v))
    s = cs[:, ends] - cs[:, starts]
    n, sv, sa, svv, saa, sva = s
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = n * sva - sv * sa
        den = np.sqrt(np.clip(n * svv - sv * sv, 0, None) * np.clip(n * saa - sa * sa, 0, None))
        r = cov / den
    r[(n < min_pairs) | ~(den > 1e-9)] = np.nan
    return r


class SyncScorer:
    """Base class: subclasses give window x offset distances; the rest is shared.

    ``window_s``, ``hop_s``: scoring windows; ``max_offset``: offsets tried, in frames either way.
    """

    name = "base"

    def __init__(self, window_s: float = 0.8, hop_s: float = 0.2, max_offset: int = 15):
        self.window_s = float(window_s)
        self.hop_s = float(hop_s)
        self.max_offset = int(max_offset)

    # -- to implement ----------------------------------------------------------------------------
    def distances(self, visual: np.ndarray, audio: np.ndarray, starts: np.ndarray, win: int,
                  offsets: np.ndarray) -> np.ndarray:
        """(n_windows, n_offsets) distances, small = in sync; NaN where a window cannot be scored.

        ``visual`` (n, kv) and ``audio`` (n, ka) are per-frame features at the same frame times (NaN
        where missing); window ``i`` covers frames ``[starts[i], starts[i] + win)`` of the picture and
        ``[starts[i] + d, ...)`` of the sound for offset ``d``.
        """
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def score(self, visual: np.ndarray, audio: np.ndarray, fps: float) -> SyncResult:
        visual = np.asarray(visual, np.float64).reshape(len(visual), -1)
        audio = np.asarray(audio, np.float64).reshape(len(audio), -1)
        if len(visual) != len(audio):
            raise ValueError("visual and audio features need one row per frame each")
        n = len(visual)
        win = max(4, int(round(self.window_s * fps)))
        hop = max(1, int(round(self.hop_s * fps)))
        offsets = np.arange(-self.max_offset, self.max_offset + 1)
        starts = window_starts(n, min(win, n), hop)
        win = min(win, n)
        dist = self.distances(visual, audio, starts, win, offsets)
        ok_rows = np.isfinite(dist).sum(axis=1) >= max(3, len(offsets) // 2)
        dist = dist[ok_rows]
        starts = starts[ok_rows]
        if len(dist) == 0:
            return SyncResult(0, 0.0, np.full(len(offsets), np.nan), offsets,
                              np.full(n, np.nan), 0, self.name)
        with np.errstate(invalid="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                curve = np.nanmean(dist, axis=0)
                fill = np.nanmax(curve) if np.isfinite(curve).any() else 1.0
                curve = np.where(np.isfinite(curve), curve, fill)
                best = int(np.argmin(curve))
                conf = float(np.median(curve) - curve[best])
                win_med = np.nanmedian(dist, axis=1)
                win_conf = win_med - dist[:, best]
        frame_sum = np.zeros(n)
        frame_cnt = np.zeros(n)
        for s, c in zip(starts, win_conf):
            if np.isfinite(c):
                frame_sum[s:s + win] += c
                frame_cnt[s:s + win] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            frame_conf = np.where(frame_cnt > 0, frame_sum / np.maximum(frame_cnt, 1), np.nan)
        return SyncResult(int(offsets[best]), conf, curve, offsets, frame_conf, len(dist), self.name)


class CorrelationScorer(SyncScorer):
    """Distance ``1 - r``: r is the mean Pearson correlation, over the audio features (envelope and
    each band energy) and over (level, frame-to-frame change), of the standardised mouth-opening
    signal with that standardised feature. Averaging per-feature correlations (rather than correlating
    a sum of features) keeps a band that carries no speech from moving the peak."""

    name = "correlation"

    #: log energies below (95th percentile - this many dB) are clipped: silence is one level, not noise
    floor_db = 45.0

    def distances(self, visual, audio, starts, win, offsets):
        v = np.nansum(_z(visual), axis=1) if visual.shape[1] > 1 else _z(visual)[:, 0]
        v[~np.isfinite(visual).all(axis=1)] = np.nan
        a = np.array(audio, np.float64)
        if np.isfinite(a).any():
            a = np.maximum(a, np.nanpercentile(a, 95, axis=0) - self.floor_db)
        a = _z(a)
        pairs = [(v, a[:, k]) for k in range(a.shape[1])]
        pairs += [(_diff(v), _diff(a[:, k])) for k in range(a.shape[1])]
        min_pairs = max(4, int(0.6 * win))
        out = np.empty((len(starts), len(offsets)))
        for j, d in enumerate(offsets):
            rs = np.array([windowed_corr(pv, _shift(pa, int(d)), starts, win, min_pairs)
                           for pv, pa in pairs])
            with np.errstate(invalid="ignore"):
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out[:, j] = 1.0 - np.nanmean(rs, axis=0)
        return out


class OnnxSyncScorer(SyncScorer):
    """A learned scorer from an ONNX file.

    Contract: inputs ``visual`` float32 (B, W, kv) and ``audio`` float32 (B, W, ka) -- the standardised
    per-frame features of B window/offset pairs -- and one output (B,) or (B, 1): the distance, small
    when in sync. Offset search, confidence and gates are those of :class:`SyncScorer`.
    """

    name = "onnx"

    def __init__(self, model_path: str | Path, **kw):
        super().__init__(**kw)
        import onnxruntime as ort

        self.path = Path(model_path)
        if not self.path.exists():
            raise FileNotFoundError(f"sync_model not found: {self.path}")
        self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self.name = f"onnx:{self.path.name}"

    def distances(self, visual, audio, starts, win, offsets):
        v, a = np.nan_to_num(_z(visual)), _z(audio)
        out = np.full((len(starts), len(offsets)), np.nan)
        for j, d in enumerate(offsets):
            ad = np.stack([_shift(a[:, k], int(d)) for k in range(a.shape[1])], axis=1)
            vb = np.stack([v[s:s + win] for s in starts]).astype(np.float32)
            ab = np.stack([ad[s:s + win] for s in starts])
            ok = np.isfinite(ab).all(axis=(1, 2))
            if not ok.any():
                continue
            res = self.session.run(None, {"visual": vb[ok], "audio": ab[ok].astype(np.float32)})[0]
            out[ok, j] = np.asarray(res, np.float64).reshape(-1)
        return out


def load_scorer(sync_model: str | None = None, **kw) -> SyncScorer:
    """The correlation scorer, or an :class:`OnnxSyncScorer` when ``sync_model`` is a path."""
    if sync_model:
        return OnnxSyncScorer(sync_model, **kw)
    return CorrelationScorer(**kw)


def speaking_probability(frame_conf: np.ndarray, vad: np.ndarray | None, gate: float,
                         scale: float | None = None, smooth: int = 5) -> np.ndarray:
    """Per-frame probability: logistic of the frame confidence around ``gate``, median-smoothed over
    ``smooth`` frames, times the VAD decision at the frame (0 where nobody is heard)."""
    from scipy.ndimage import median_filter

    scale = scale or max(gate / 3, 1e-3)
    c = np.nan_to_num(np.asarray(frame_conf, np.float64), nan=-np.inf)
    p = 1.0 / (1.0 + np.exp(np.clip(-(np.clip(c, -50, 50) - gate) / scale, -60, 60)))
    p[~np.isfinite(c)] = 0.0
    if smooth > 1 and len(p) >= smooth:
        p = median_filter(p, size=smooth, mode="nearest")
    if vad is not None:
        p = p * np.asarray(vad, np.float64)
    return p.astype(np.float32)


def decide(result: SyncResult, vad_ratio: float, valid_ratio: float, gates: Gates,
           has_audio: bool = True, mouth_motion: float | None = None) -> tuple[bool, str | None]:
    """Apply the gates in order: no_audio, silent, not_speaking (mouth hidden, still, or low
    confidence), off_sync. Returns ``(speaking, reason)``."""
    if not has_audio:
        return False, "no_audio"
    if vad_ratio < gates.min_vad_ratio:
        return False, "silent"
    if valid_ratio < gates.min_valid_ratio or result.n_windows == 0:
        return False, "not_speaking"
    if mouth_motion is not None and mouth_motion < gates.min_mouth_motion:
        return False, "not_speaking"
    if result.confidence < gates.min_confidence:
        return False, "not_speaking"
    if abs(result.offset) > gates.max_offset_frames:
        return False, "off_sync"
    return True, None
