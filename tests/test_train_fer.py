"""The FER student: the teacher fine-tuned on the dataset's own crops with its smoothed soft labels,
on the offline demo's workspace."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dsbuilder.errors import StageError
from dsbuilder.manifest.io import read_table, write_table
from dsbuilder.train import fer
from dsbuilder.workspace import Workspace


def test_fine_tuning_gets_closer_to_the_smoothed_labels_and_exports_onnx(demo_workspace, tmp_path):
    _, demo = demo_workspace
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(demo.root, ws.root, dirs_exist_ok=True)
    metrics = fer.train(ws, {"epochs": 4}, progress=False)
    labelled = [r for r in read_table(ws, "labels").to_pylist() if r["fer_probs_smoothed"]]
    cap = fer.FerTrainConfig.from_mapping({}).max_frames_per_clip
    expected = 0  # every labelled frame of the train clips, at most `cap` a clip
    for c in read_table(ws, "clips").to_pylist():
        if c["split"] == "train":
            n = sum(1 for r in labelled if r["track_id"] == c["track_id"]
                    and c["crop_start_frame"] <= r["crop_frame"] < c["crop_end_frame"])
            expected += min(n, cap)
    assert 0 < metrics["train"]["items"] == expected
    assert metrics["train"]["kl"] < metrics["train_before"]["kl"] < metrics["train"]["kl_prior"]
    out = ws.root / fer.MODEL_DIR
    config = json.loads((out / "config.json").read_text())
    assert config["held_out_split"] == "val" and config["target"] == "smoothed"  # the demo has one
    assert "| train_before |" in (out / "model_card.md").read_text()
    # the ONNX export is the trained network, usable as the label stage's fer_model
    import torch

    from dsbuilder.labels.fer import OnnxFer

    model = fer.build_student()
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    faces = fer.load_frames(ws, "train", fer.FerTrainConfig.from_mapping({}), 0.8).faces[:5]
    assert np.allclose(OnnxFer(out / "model.onnx").predict(faces), fer.predict(model, faces),
                       atol=1e-4)


def test_a_held_out_split_picks_the_best_epoch(demo_workspace, tmp_path):
    _, demo = demo_workspace
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(demo.root, ws.root, dirs_exist_ok=True)
    clips = read_table(ws, "clips").to_pylist()
    for c in clips:  # one clip held out
        c["split"] = "train"
    clips[0]["split"] = "val"
    write_table(ws, "clips", [{k: v for k, v in c.items() if k not in (
        "schema_version", "stage_params_hash", "dsbuilder_version")} for c in clips], "h")
    metrics = fer.train(ws, {"epochs": 2, "target": "frame"}, progress=False)
    assert metrics["val"]["items"] > 0 and "held_out_kl" in metrics["history"][0]
    best = min(metrics["history"], key=lambda r: r["held_out_kl"])["epoch"]
    assert metrics["best_epoch"] == best
    config = json.loads((ws.root / fer.MODEL_DIR / "config.json").read_text())
    assert config["held_out_clips"] == [clips[0]["clip_id"]]


def test_options_are_checked(tmp_path):
    with pytest.raises(StageError, match="target"):
        fer.FerTrainConfig.from_mapping({"target": "both"})
    with pytest.raises(StageError, match="unknown"):
        fer.FerTrainConfig.from_mapping({"init": "scratch"})
    with pytest.raises(fer.TrainingError, match="no labelled frame"):
        fer.train(Workspace.open(tmp_path / "empty"), {}, progress=False)
