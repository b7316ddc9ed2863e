"""The speech-emotion student: it learns the teacher's soft labels from audio when the audio carries
them (synthetic clips whose sound depends on the teacher's class), writes its model files, is
reproducible, and refuses manifests without training clips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsbuilder.audio import write_wav
from dsbuilder.labels.fer import FER_CLASSES
from dsbuilder.manifest.io import write_table
from dsbuilder.train import speech
from dsbuilder.workspace import Workspace

RATE = 16000


def teacher(cls: str, rng) -> list[float]:
    p = rng.dirichlet(np.ones(7)) * 0.3
    p[FER_CLASSES.index(cls)] += 0.7
    return (p / p.sum()).tolist()


def sound(cls: str, rng, seconds: float = 1.5) -> np.ndarray:
    """happy: a bright tone with harmonics; sad: low rumbling noise (the student can tell them)."""
    t = np.arange(int(seconds * RATE)) / RATE
    if cls == "happy":
        f = rng.uniform(600, 900)
        x = sum(np.sin(2 * np.pi * k * f * t) / k for k in (1, 2, 3))
    else:
        x = np.convolve(rng.normal(size=len(t)), np.ones(40) / 40, mode="same") * 4
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def make_clips(root, n_train: int = 24, n_val: int = 10, speaking: bool = True) -> Workspace:
    ws = Workspace.open(root)
    (ws.root / "clips").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_train + n_val):
        cls = ("happy", "sad")[i % 2]
        clip_id = f"src-a-shot{i:04d}-trk000"
        write_wav(ws.root / "clips" / f"{clip_id}.wav", sound(cls, rng))
        rows.append({
            "clip_id": clip_id, "track_id": clip_id, "source_id": "src-a",
            "shot_id": f"src-a-shot{i:04d}", "person_id": "p", "video_path": f"clips/{clip_id}.mp4",
            "audio_path": f"clips/{clip_id}.wav", "start_frame": 0, "end_frame": 37,
            "start_s": 0.0, "end_s": 1.5, "duration_s": 1.5, "n_frames": 37, "clip_index": 0,
            "crop_start_frame": 0, "crop_end_frame": 37, "crop_start_s": 0.0, "crop_end_s": 1.5,
            "ended_by": "track_end",
            "probs": teacher(cls, rng), "speaking": speaking, "speaking_s": 1.5 if speaking else 0.0,
            "split": "train" if i < n_train else "val", "split_group": "person:p"})
    write_table(ws, "clips", rows, "h")
    return ws


OPTIONS = {"epochs": 12, "batch_size": 8, "window_s": 1.0, "lr": 3e-3}


def test_the_student_learns_what_the_audio_tells_about_the_teachers_labels(tmp_path):
    ws = make_clips(tmp_path / "ws")
    metrics = speech.train(ws, OPTIONS, progress=False)
    val = metrics["val"]
    assert val["items"] == 10
    # far better than always answering the training prior, on clips it never saw
    assert val["kl"] < 0.5 * val["kl_prior"], val
    assert val["argmax_agreement"] >= 0.9 > val["argmax_agreement_prior"]
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    out = ws.root / speech.MODEL_DIR
    config = json.loads((out / "config.json").read_text())
    assert config["held_out_split"] == "val" and len(config["train_clips"]) == 24
    assert config["classes"] == list(FER_CLASSES)
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == metrics["best_epoch"]
    card = (out / "model_card.md").read_text()
    assert "| val | 10 |" in card and "prior" in card
    # the saved weights give the reported figures
    import torch

    model = speech.build_student()
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    held = speech.load_clips(ws, "val", True)
    again = speech.predict(model, held, config["input"]["window_samples"],
                           config["input"]["mean"], config["input"]["std"])
    assert speech.kl(np.stack([c.probs for c in held]), again) == pytest.approx(val["kl"], abs=1e-5)


def test_training_is_reproducible(tmp_path):
    import torch

    weights = []
    for run in ("a", "b"):
        ws = make_clips(tmp_path / run, n_train=8, n_val=0)
        speech.train(ws, {**OPTIONS, "epochs": 2}, progress=False)
        weights.append(torch.load(ws.root / speech.MODEL_DIR / "model.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_without_training_clips_it_says_what_to_do(tmp_path):
    ws = make_clips(tmp_path / "ws", n_train=4, n_val=0, speaking=False)
    with pytest.raises(speech.TrainingError, match="where the person speaks") as err:
        speech.train(ws, OPTIONS, progress=False)
    assert "--all-clips" in err.value.hint
    metrics = speech.train(ws, {**OPTIONS, "epochs": 1, "speaking_only": False}, progress=False)
    assert metrics["train"]["items"] == 4 and "val" not in metrics
    with pytest.raises(speech.TrainingError, match="no training clip"):
        speech.train(Workspace.open(tmp_path / "empty"), OPTIONS, progress=False)


def test_soften_is_the_teachers_logits_over_the_temperature():
    p = np.array([[0.7, 0.2, 0.1]], np.float32)
    assert np.allclose(speech.soften(p, 1.0), p, atol=1e-6)
    soft = speech.soften(p, 2.0)[0]
    logits = np.log(p[0]) / 2
    assert np.allclose(soft, np.exp(logits) / np.exp(logits).sum(), atol=1e-6)
    assert soft[0] < p[0, 0] and soft[2] > p[0, 2]
