"""Speaker embeddings of speech segments, and each person's voice consensus.

Two embedders, chosen by the recipe (``voice_embedder``: auto | resemblyzer | mfcc):

* ``resemblyzer``: the pretrained GE2E speaker encoder (3-layer LSTM, 256-d, Apache-2.0) whose weights
  ``pretrained.pt`` ship inside the ``Resemblyzer`` wheel. Resemblyzer's own package imports librosa at
  import time (and pulls webrtcvad, which compiles), so we do not import it: we find its weights file,
  rebuild the same network in torch and compute the same input (40-band Slaney mel power spectrogram,
  25 ms Hann windows every 10 ms, as ``resemblyzer.audio.wav_to_mel_spectrogram``) with numpy. Needs
  ``torch`` and ``pip install --no-deps resemblyzer==0.1.4``.
* ``mfcc``: mean and standard deviation of MFCCs 1-20 (c0, the loudness, is left out) from the same
  mel spectrogram; numpy only. Much weaker (it also encodes channel and content), kept as the fallback.

Distances are cosine distances (1 - cos) between L2-normalised embeddings.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL = 160  # frames per partial utterance (1.6 s), as Resemblyzer
PARTIAL_STEP = 80


def _hz_to_mel(f):
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mel = f / f_sp
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz)
                    / logstep, mel)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=4)
def mel_filters(sr: int = RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-style mel filterbank with Slaney area normalisation (librosa's default)."""
    fft_f = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0, np.minimum(lower, upper))
    w *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return w.astype(np.float32)


def mel_spectrogram(wav: np.ndarray, sr: int = RATE) -> np.ndarray:
    """(n_frames, 40) mel power spectrogram, centred frames with zero padding."""
    x = np.asarray(wav, np.float32)
    x = np.pad(x, (N_FFT // 2, N_FFT // 2))
    n = 1 + max(0, (len(x) - N_FFT) // HOP)
    idx = np.arange(n)[:, None] * HOP + np.arange(N_FFT)[None, :]
    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic
    spec = np.abs(np.fft.rfft(x[idx] * win, axis=1)) ** 2
    return (spec @ mel_filters(sr).T).astype(np.float32)


def normalize_volume(wav: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(wav, dtype=np.float64))) if len(wav) else 0.0
    if rms <= 1e-8:
        return wav
    gain = 10 ** ((target_dbfs - 20 * np.log10(rms)) / 20)
    return (wav * min(gain, 1e3) if gain > 1 else wav).astype(np.float32)  # increase only


class VoiceEmbedder:
    name = "base"
    default_max_distance = 0.5

    def embed(self, wav: np.ndarray, sr: int = RATE) -> np.ndarray:
        raise NotImplementedError


class MfccEmbedder(VoiceEmbedder):
    """Mean + std of MFCC 1..20 (40-d), L2-normalised."""

    name = "mfcc"
    default_max_distance = 0.25

    def embed(self, wav, sr=RATE):
        from scipy.fft import dct

        mel = mel_spectrogram(normalize_volume(wav), sr)
        if len(mel) < 2:
            return np.zeros(40, np.float32)
        mfcc = dct(np.log(mel + 1e-6), type=2, norm="ortho", axis=1)[:, 1:21]
        e = np.concatenate([mfcc.mean(0), mfcc.std(0)])
        return (e / (np.linalg.norm(e) or 1.0)).astype(np.float32)


def resemblyzer_weights() -> Path | None:
    spec = importlib.util.find_spec("resemblyzer")  # locate without importing (it imports librosa)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    return p if p.exists() and importlib.util.find_spec("torch") is not None else None


class ResemblyzerEmbedder(VoiceEmbedder):
    """Resemblyzer's GE2E encoder (weights from its wheel), rebuilt in torch."""

    name = "resemblyzer"
    default_max_distance = 0.35

    def __init__(self, weights: str | Path | None = None):
        import torch
        from torch import nn

        weights = Path(weights) if weights else resemblyzer_weights()
        if weights is None:
            raise ImportError("Resemblyzer's pretrained.pt not found: "
                              "pip install --no-deps resemblyzer==0.1.4 (and torch)")

        class _Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
                self.linear = nn.Linear(256, 256)

            def forward(self, mels):
                _, (hidden, _) = self.lstm(mels)
                e = torch.relu(self.linear(hidden[-1]))
                return e / torch.norm(e, dim=1, keepdim=True).clamp_min(1e-8)

        self.torch = torch
        self.net = _Net()
        try:
            ckpt = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception:  # older pickles; the file is the one shipped in the Resemblyzer wheel
            ckpt = torch.load(weights, map_location="cpu", weights_only=False)
        state = {k: v for k, v in ckpt["model_state"].items() if k.split(".")[0] in ("lstm", "linear")}
        self.net.load_state_dict(state, strict=True)
        self.net.eval()

    def embed(self, wav, sr=RATE):
        mel = mel_spectrogram(normalize_volume(wav), sr)
        if len(mel) < PARTIAL:
            mel = np.pad(mel, ((0, PARTIAL - len(mel)), (0, 0)))
        starts = list(range(0, len(mel) - PARTIAL + 1, PARTIAL_STEP))
        if len(mel) - PARTIAL - starts[-1] > PARTIAL_STEP // 2:
            starts.append(len(mel) - PARTIAL)
        batch = np.stack([mel[s:s + PARTIAL] for s in starts])
        from dsbuilder.torch_threads import torch_threads

        with torch_threads(1), self.torch.no_grad():  # a small LSTM: one thread is fastest
            e = self.net(self.torch.from_numpy(batch)).numpy().mean(axis=0)
        return (e / (np.linalg.norm(e) or 1.0)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def load_embedder(kind: str = "auto") -> VoiceEmbedder:
    """``auto``: Resemblyzer when its weights and torch are installed, else MFCC statistics."""
    if kind == "mfcc" or (kind == "auto" and resemblyzer_weights() is None):
        return MfccEmbedder()
    if kind in ("auto", "resemblyzer"):
        return ResemblyzerEmbedder()
    raise ValueError(f"unknown voice embedder {kind!r}")


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.atleast_2d(a).astype(np.float64)
    b = np.atleast_2d(b).astype(np.float64)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return 1.0 - a @ b.T


def consensus_distances(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Cosine distance of each embedding to the element-wise median of all (the person's consensus)."""
    if len(embeddings) == 0:
        return np.zeros(0)
    e = np.stack(embeddings)
    return cosine_distance(e, np.median(e, axis=0))[:, 0]


def voice_outliers(distances: np.ndarray, max_distance: float, mad_k: float = 3.0,
                   min_segments: int = 3) -> np.ndarray:
    """Flag distances above ``max(max_distance, median + mad_k * 1.4826 * MAD)``; nothing is flagged
    with fewer than ``min_segments`` segments (no consensus to speak of)."""
    d = np.asarray(distances, np.float64)
    if len(d) < min_segments:
        return np.zeros(len(d), bool)
    med = np.median(d)
    mad = np.median(np.abs(d - med)) * 1.4826
    return d > max(max_distance, med + mad_k * mad)
