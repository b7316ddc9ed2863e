"""`dsbuilder train fer --fer2013 / --folders`: a compact CNN from scratch on labelled faces.

No FER2013 copy is reachable here, so the data is a small FER2013-format CSV made in the test and
separable by construction: each class is a bright bar at its own place on a noisy face-sized
image. The metrics must move from the majority-class baseline to near perfect, and the ONNX model
must be one the label stage can name."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from dsbuilder.train.fer_supervised import (CLASSES, SupervisedConfig, classification_metrics,
                                            read_fer2013, read_folders, train_supervised)

pytest.importorskip("torch")


def face(label: int, rng: np.random.Generator) -> np.ndarray:
    img = rng.normal(100, 25, (48, 48))
    row = 4 + 6 * label
    img[row:row + 5, 6:42] += 110  # the class's bar
    return np.clip(img, 0, 255).astype(np.uint8)


def write_csv(path: Path, per_class: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for usage, n in per_class.items():
            for label in range(len(CLASSES)):
                for _ in range(n):
                    w.writerow([label, " ".join(map(str, face(label, rng).ravel())), usage])


def test_metrics_by_hand():
    m = classification_metrics(np.array([0, 0, 1, 1, 3]), np.array([0, 1, 1, 1, 3]), majority=0)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["recall"]["angry"] == 0.5 and m["recall"]["disgust"] == 1.0 and m["recall"]["sad"] is None
    # F1: angry 2/3, disgust 0.8, happy 1.0 (classes absent from the truth are left out)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    assert m["confusion"][0][:2] == [1, 1] and m["majority_accuracy"] == pytest.approx(0.4)


def test_fer2013_csv_trains_and_the_label_stage_can_run_the_model(tmp_path):
    from dsbuilder.labels.fer import load_fer

    csv_path = tmp_path / "fer2013.csv"
    write_csv(csv_path, {"Training": 24, "PublicTest": 6, "PrivateTest": 6})
    data = read_fer2013(csv_path)
    assert data.faces.shape == (7 * 36, 48, 48) and data.counts() == {"train": 168, "val": 42,
                                                                       "test": 42}
    res = train_supervised(data, tmp_path / "out", SupervisedConfig(epochs=12, batch_size=32),
                           progress=False)
    test = res.metrics["test"]
    assert test["majority_accuracy"] == pytest.approx(1 / 7)
    assert test["accuracy"] >= 0.9 and test["macro_f1"] >= 0.9, test
    assert res.history[0]["val_accuracy"] < res.history[res.metrics["best_epoch"] - 1]["val_accuracy"]
    for name in ("model.pt", "model.onnx", "metrics.json", "confusion.png", "config.json",
                 "model_card.md"):
        assert (tmp_path / "out" / name).is_file(), name
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert np.array(saved["test"]["confusion"]).sum() == 42
    # what the label stage would load for stages.label.fer_model: out/model.onnx
    model = load_fer(str(tmp_path / "out" / "model.onnx"))
    assert tuple(model.classes) == CLASSES and model.input_size == 48
    x, y = data.part("test")
    probs = model.predict(x)
    assert np.allclose(probs.sum(1), 1, atol=1e-4) and (probs.argmax(1) == y).mean() >= 0.9


def test_class_folders_hold_out_val_and_train(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split, n in (("train", 30), ("test", 5)):
        for label, name in enumerate(CLASSES[:3]):
            d = tmp_path / "faces" / split / name
            d.mkdir(parents=True)
            for k in range(n):
                Image.fromarray(face(label, rng)).resize((64, 64)).save(d / f"{k}.png")
    data = read_folders(tmp_path / "faces")
    assert data.counts() == {"train": 90, "val": 0, "test": 15}
    res = train_supervised(data, tmp_path / "out", SupervisedConfig(epochs=12, batch_size=16),
                           progress=False)
    assert res.metrics["val"]["items"] == 9  # 10 % of each class held out, seeded
    assert res.metrics["test"]["accuracy"] > res.metrics["test"]["majority_accuracy"] + 0.3


def test_cli_and_its_errors(tmp_path):
    csv_path = tmp_path / "fer.csv"
    write_csv(csv_path, {"Training": 6, "PrivateTest": 2})
    r = run_cli("train", "fer", "--fer2013", str(csv_path), "--out", str(tmp_path / "m"),
                "--epochs", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "test: 14 faces, accuracy" in r.stdout and (tmp_path / "m" / "model.onnx").is_file()
    r = run_cli("train", "fer", "--fer2013", str(csv_path))
    assert r.returncode == 2 and "--out" in r.stderr
    r = run_cli("train", "fer")
    assert r.returncode == 2 and "--fer2013" in r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    r = run_cli("train", "fer", "--fer2013", str(bad), "--out", str(tmp_path / "x"))
    assert r.returncode == 1 and "bad.csv:2" in r.stderr
    (tmp_path / "dirs" / "train" / "joy").mkdir(parents=True)
    r = run_cli("train", "fer", "--folders", str(tmp_path / "dirs"), "--out", str(tmp_path / "y"))
    assert r.returncode == 1 and "unknown class 'joy'" in r.stderr
