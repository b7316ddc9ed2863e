"""A speech-emotion student distilled from the face teacher (cross-modal transfer, as in EmoVoxCeleb).

The ``clips`` table gives, for every clip, the face teacher's soft labels (``probs``: the clip mean of
the FER probabilities) and the clip's 16 kHz wav. The student hears only the audio and learns to
predict the teacher's distribution:

* **input**: log-mel spectrograms (40 Slaney mel bands, 25 ms windows every 10 ms, the same
  front-end as the voice check, :func:`dsbuilder.speaker.voice.mel_spectrogram`) of ``window_s``
  windows: a random window of each clip per epoch in training, every window (half overlapping) at
  evaluation, the student's probabilities averaged over them;
* **target**: the teacher's probabilities sharpened or softened by the temperature,
  ``p_T ∝ p^(1/T)`` (the same as dividing the teacher's logits by T);
* **loss**: ``T² · KL(p_T ‖ softmax(z / T))`` (Hinton et al.'s distillation loss; EmoVoxCeleb keeps
  only the teacher's argmax per clip, we keep the soft labels);
* **network**: three conv blocks over (time, mel), global average pooling, a linear layer to the
  seven FER classes (:data:`dsbuilder.labels.fer.FER_CLASSES`). ~25 k weights: it trains on a CPU.

By default only clips where the person speaks are used (``clips.speaking``): the voice carries the
emotion there; ``speaking_only=False`` takes every clip. The train split trains; val (else test) is
evaluated after every epoch and the best epoch's weights are kept. Metrics say how far the student is
from the teacher (KL at T=1, agreement of the argmax) next to the trivial student that always answers
the train split's mean distribution: a student that does not beat that has learnt nothing.

Writes ``<workspace>/models/speech/``: ``model.pt`` (a torch state dict; load with
``torch.load(path, weights_only=True)``), ``config.json``, ``metrics.json`` and ``model_card.md``.
"""

from __future__ import annotations

import logging
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from dsbuilder import __version__
from dsbuilder.train.distil import (DistilOptions, TrainingError, fit, kl, score_table,
                                    scores, soften, write_model)
from dsbuilder.workspace import Workspace

__all__ = ["TrainingError", "kl", "soften", "train", "build_student", "predict", "load_clips"]

log = logging.getLogger(__name__)

RATE = 16000
MODEL_DIR = Path("models") / "speech"


@dataclass(frozen=True)
class SpeechTrainConfig(DistilOptions):
    """Training options (defaults and ranges: ``TRAIN_PARAMS["speech"]`` in dsbuilder.config)."""

    TRAINER: ClassVar[str] = "speech"

    window_s: float
    speaking_only: bool


@dataclass(frozen=True)
class AudioClip:
    clip_id: str
    wav: Path
    probs: np.ndarray  # (7,) the teacher's
    n_samples: int  # the clip's samples
    offset: int = 0  # where the clip starts in ``wav`` (a track's wav holds all its clips)


# --- data ----------------------------------------------------------------------------------------

def read_wav(path: Path, start: int = 0, n: int | None = None) -> np.ndarray:
    """Samples ``[start, start + n)`` of a 16-bit mono wav as float32 in [-1, 1]."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise TrainingError(f"{path}: expected 16-bit mono wav")
        w.setpos(min(start, w.getnframes()))
        data = w.readframes(w.getnframes() - start if n is None else n)
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def log_mel(samples: np.ndarray) -> np.ndarray:
    """(frames, 40) log-mel of 16 kHz samples."""
    from dsbuilder.speaker.voice import mel_spectrogram

    return np.log(mel_spectrogram(samples, RATE) + 1e-6).astype(np.float32)


def load_clips(ws: Workspace, split: str, speaking_only: bool) -> list[AudioClip]:
    """The clips of ``split`` that have audio (and speech, with ``speaking_only``)."""
    from dsbuilder.manifest.io import read_table

    out = []
    for c in read_table(ws, "clips").to_pylist():
        if c["split"] != split or not c["audio_path"] or c["probs"] is None:
            continue
        if speaking_only and not c["speaking"]:
            continue
        path = ws.abspath(c["audio_path"])
        if not path.is_file():
            raise TrainingError(f"clips {c['clip_id']}: audio file missing: {c['audio_path']}",
                                "rerun the faces stage (dsbuilder run RECIPE)")
        with wave.open(str(path), "rb") as w:
            total, rate = w.getnframes(), w.getframerate()
        a = min(total, int(round(float(c["crop_start_s"]) * rate)))
        b = min(total, int(round(float(c["crop_end_s"]) * rate)))
        out.append(AudioClip(c["clip_id"], path, np.asarray(c["probs"], np.float32), b - a, a))
    return sorted(out, key=lambda c: c.clip_id)


def windows(clip: AudioClip, window: int, step: int) -> list[int]:
    """Start samples of the evaluation windows of a clip (one when it is shorter than a window)."""
    if clip.n_samples <= window:
        return [0]
    return list(range(0, clip.n_samples - window + 1, step))


def features(clip: AudioClip, start: int, window: int) -> np.ndarray:
    """Log-mel of ``window`` samples from ``start`` (zero-padded past the clip's end)."""
    x = read_wav(clip.wav, clip.offset + start, max(0, min(window, clip.n_samples - start)))
    if len(x) < window:
        x = np.pad(x, (0, window - len(x)))
    return log_mel(x)


# --- model ---------------------------------------------------------------------------------------

def build_student(n_classes: int = 7):
    import torch.nn as nn

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
                         *block(32, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, n_classes))


def _normalise(x, mean: float, std: float):
    return (x - mean) / std


def predict(model, clips: Sequence[AudioClip], window: int, mean: float, std: float) -> np.ndarray:
    """The student's probabilities per clip: the mean over its half-overlapping windows."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for c in clips:
            feats = np.stack([features(c, s, window) for s in windows(c, window, window // 2)])
            x = _normalise(torch.from_numpy(feats)[:, None], mean, std)
            out.append(torch.softmax(model(x), dim=1).mean(dim=0).numpy())
    return np.stack(out) if out else np.zeros((0, 7), np.float32)


# --- training ------------------------------------------------------------------------------------

def train(ws: Workspace, options: Mapping[str, Any] | SpeechTrainConfig | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train the student on the workspace's ``clips``; write the model files; return the metrics."""
    import torch

    from dsbuilder.labels.fer import FER_CLASSES
    from dsbuilder.torch_threads import torch_threads

    cfg = options if isinstance(options, SpeechTrainConfig) else \
        SpeechTrainConfig.from_mapping(options)
    train_clips = load_clips(ws, "train", cfg.speaking_only)
    if not train_clips:
        raise TrainingError(
            "no training clip with audio" + (" where the person speaks" if cfg.speaking_only else ""),
            "run the pipeline to the report stage first (dsbuilder run RECIPE)"
            + ("; or train on every clip with --all-clips" if cfg.speaking_only else ""))
    held_split, held = None, []
    for split in ("val", "test"):  # the first held-out split that has clips
        held = load_clips(ws, split, cfg.speaking_only)
        if held:
            held_split = split
            break
    window = int(round(cfg.window_s * RATE))
    # input normalisation from the training clips' first windows
    sample = np.concatenate([features(c, 0, window).ravel() for c in train_clips])
    mean, std = float(sample.mean()), float(sample.std() or 1.0)
    teacher_train = np.stack([c.probs for c in train_clips])
    teacher_held = np.stack([c.probs for c in held]) if held else None
    prior = teacher_train.mean(axis=0)

    def batch(idx: np.ndarray, rng) -> "torch.Tensor":
        # a random window of each clip
        starts = [int(rng.integers(0, max(1, train_clips[i].n_samples - window + 1))) for i in idx]
        feats = np.stack([features(train_clips[i], s, window) for i, s in zip(idx, starts)])
        return _normalise(torch.from_numpy(feats)[:, None], mean, std)

    def log_probs(model, x):
        return torch.log_softmax(model(x) / cfg.temperature, dim=1)

    def held_kl(model) -> float:
        return kl(teacher_held, predict(model, held, window, mean, std))

    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_student(len(FER_CLASSES))
    with torch_threads(1):
        history, best_epoch = fit(
            model, teacher_train, batch, log_probs, held_kl if held else None, **cfg.fit_args(),
            desc="train speech", progress=progress)
        metrics: dict[str, Any] = {
            "train": scores(teacher_train, predict(model, train_clips, window, mean, std), prior),
            "history": history, "best_epoch": best_epoch}
        if held:
            metrics[held_split] = scores(teacher_held, predict(model, held, window, mean, std),
                                         prior)
    config = {**asdict(cfg), "classes": list(FER_CLASSES), "input": {
        "rate": RATE, "window_samples": window, "features": "log-mel, 40 Slaney bands, 25 ms / 10 ms",
        "mean": mean, "std": std}, "train_clips": [c.clip_id for c in train_clips],
        "held_out_split": held_split, "held_out_clips": [c.clip_id for c in held],
        "dsbuilder_version": __version__}
    write_model(ws.root / MODEL_DIR, model, config, metrics, model_card(config, metrics))
    return metrics


def model_card(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    held = config["held_out_split"]

    data = (f"{len(config['train_clips'])} training clips"
            + (" where the person speaks" if config["speaking_only"] else " (speaking or not)")
            + (f"; held out: {len(config['held_out_clips'])} clips of the {held} split." if held
               else "; no held-out split had clips: the figures below are on the training clips "
                    "only.")
            + f" Best epoch: {metrics['best_epoch']}.")
    return "\n".join([
        "# Model card: speech-emotion student", "",
        f"dsbuilder {config['dsbuilder_version']}. A small CNN over log-mel spectrograms of "
        f"{config['window_s']:g} s windows, trained to reproduce the face teacher's FER soft labels "
        f"of each clip from its audio (distillation at temperature {config['temperature']:g}, "
        f"{config['epochs']} epochs, lr {config['lr']:g}, seed {config['seed']}). Classes: "
        + ", ".join(config["classes"]) + ".", "",
        "## Data", "", data, "",
        "## How close to the teacher", "",
        "KL(teacher ‖ student) in nats at T = 1 (lower is better) and agreement of the argmax, next to "
        "a student that always answers the training clips' mean distribution (`prior`).", "",
        *score_table(metrics, ["train", held] if held else ["train"], "clips"), "",
        "## Limits", "",
        "- The targets are a face model's guesses (a FER2013 mini-Xception), not human labels of "
        "the voice: the student learns what in the voice goes with the face's expression.",
        "- Few clips or few people make the figures noisy; a student no better than the prior has "
        "learnt nothing.", ""])
