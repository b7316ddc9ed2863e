"""The label stage: FER + valence/arousal per frame of aligned crop clips, clip summaries, rejections
as data, and the per-track cache (a rerun decodes nothing and writes the same bytes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from dsbuilder import synth
from dsbuilder.config import STAGE_PARAMS, STAGES, stage_defaults
from dsbuilder.labels import fer
from dsbuilder.manifest.io import read_table, table_path, write_table
from dsbuilder.manifest.schema import REASONS, REFERENCES, schemas
from dsbuilder.recipe import Recipe
from dsbuilder.stages import CODE_VERSIONS
from dsbuilder.stages import label as label_stage
from dsbuilder.workspace import Workspace, sha256_file

N = 12  # frames per crop clip


def _chip(img: np.ndarray) -> np.ndarray:
    """The aligned 224 px face crop the faces stage writes (dlib chip, padding 0.35)."""
    import dlib

    from dsbuilder.face import api

    det = api.detect(img)[0]
    shape = api._models()["sp5"](img, api._rect(det.box))
    return dlib.get_face_chip(img, shape, size=224, padding=0.35)


def _crop_clip(path: Path, picture: np.ndarray) -> None:
    synth.write_video(path, [synth.Shot(picture, N, zoom=1.02)], size=(224, 224), audio=None)


@pytest.fixture(scope="module")
def chips():
    fer.pull_fer_model()
    return {"grace": _chip(synth.grace_hopper()), "astro": _chip(synth.astronaut())}


def _track(track_id: str, crop: str | None, sha: str | None, kept: bool = True) -> dict:
    return {"track_id": track_id, "source_id": "vid1", "shot_id": "vid1-shot0000",
            "person_id": "p1", "start_frame": 0, "end_frame": N, "start_s": 0.0,
            "end_s": N / 25, "n_frames": N, "n_detections": N, "n_embeddings": 5,
            "mean_face_px": 120.0, "kept": kept, "reason": None if kept else "not_target",
            "crop_path": crop, "crop_sha256": sha}


def _frames(track_id: str, offset: int = 100) -> list[dict]:
    return [{"frame_id": f"{track_id}-f{offset + i}", "track_id": track_id, "source_id": "vid1",
             "frame_index": offset + i, "t": (offset + i) / 25, "crop_frame": i,
             "bbox": [0.0, 0.0, 100.0, 100.0], "landmarks": [0.0] * 136, "detected": True}
            for i in range(N)]


@pytest.fixture()
def workspace(tmp_path, chips):
    ws = Workspace.open(tmp_path / "ws")
    crops = ws.root / "crops"
    crops.mkdir()
    _crop_clip(crops / "grace.mp4", chips["grace"])
    _crop_clip(crops / "astro.mp4", chips["astro"])
    (crops / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 10)
    tracks = [
        _track("t1-grace", "crops/grace.mp4", sha256_file(crops / "grace.mp4")),
        _track("t2-astro", "crops/astro.mp4", sha256_file(crops / "astro.mp4")),
        _track("t3-noframes", "crops/grace.mp4", sha256_file(crops / "grace.mp4")),
        _track("t4-broken", "crops/broken.mp4", sha256_file(crops / "broken.mp4")),
        _track("t5-notkept", None, None, kept=False),
    ]
    write_table(ws, "tracks", tracks, "h")
    write_table(ws, "frames", _frames("t1-grace") + _frames("t2-astro", 300)
                + _frames("t4-broken"), "h")
    recipe = Recipe(path=tmp_path / "r.yaml", name="t", workspace=ws.root, people=[], licences={},
                    limits={}, stages={"label": stage_defaults("label")})
    return recipe, ws


def test_registered():
    assert STAGES[-1] == "label" and CODE_VERSIONS["label"] == "1"
    assert set(REASONS["label"]) == {"low_confidence", "no_landmarks", "decode_error"}
    assert STAGE_PARAMS["label"]["smoothing"].choices == ("ema", "moving_average", "none")
    assert ("labels", "frame_id") in REFERENCES and ("label_clips", "track_id") in REFERENCES
    labels, id_col = schemas()["labels"]
    assert id_col == "label_id" and labels.field("fer_probs").type.list_size == 7


def test_label_stage(workspace):
    recipe, ws = workspace
    result = label_stage.run(recipe, ws, progress=False)
    assert result.computed == 3 and result.cached == 0  # t3 is rejected before decoding

    labels = read_table(ws, "labels").to_pylist()
    clips = {r["track_id"]: r for r in read_table(ws, "label_clips").to_pylist()}
    assert len(labels) == 2 * N and set(clips) == {"t1-grace", "t2-astro"}
    row = next(r for r in labels if r["label_id"] == "t2-astro-f305")
    assert row["frame_id"] == "t2-astro-f305" and row["crop_frame"] == 5
    assert row["t"] == pytest.approx(305 / 25) and row["fer_model"] == fer.FER_MODEL_NAME
    assert sum(row["fer_probs"]) == pytest.approx(1.0, abs=1e-4)
    assert row["fer_argmax"] == fer.FER_CLASSES[int(np.argmax(row["fer_probs"]))]

    astro, grace = clips["t2-astro"], clips["t1-grace"]
    print(f"\nclips: astronaut {astro['argmax']} p={astro['argmax_prob']:.2f} "
          f"V={astro['mean_valence']:+.2f} A={astro['mean_arousal']:+.2f} "
          f"agreement={astro['agreement']:.2f}; grace {grace['argmax']} "
          f"p={grace['argmax_prob']:.2f} V={grace['mean_valence']:+.2f} "
          f"agreement={grace['agreement']:.2f}")
    assert astro["argmax"] == "happy" and astro["mean_valence"] > 0.5 and astro["kept"]
    assert astro["agreement"] == 1.0 and astro["entropy"] < 0.2
    assert grace["mean_valence"] < astro["mean_valence"]
    assert astro["smoothing"] == "ema:5" and astro["n_frames"] == N

    rej = {(r["item_id"], r["reason"]) for r in read_table(ws, "rejections").to_pylist()
           if r["stage"] == "label"}
    assert rej == {("t3-noframes", "no_landmarks"), ("t4-broken", "decode_error")}

    # a rerun takes everything from the cache and writes the same bytes
    paths = [table_path(ws, "labels"), table_path(ws, "label_clips"),
             table_path(ws, "rejections", "label")]
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    again = label_stage.run(recipe, ws, progress=False)
    assert again.computed == 0 and again.cached == 3
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths] == before


def test_parameters_change_the_output(workspace):
    recipe, ws = workspace
    recipe.stages["label"] = {**stage_defaults("label"), "smoothing": "none",
                              "min_clip_confidence": 0.99}
    result = label_stage.run(recipe, ws, progress=False)
    assert result.computed == 3
    labels = read_table(ws, "labels").to_pylist()
    assert all(r["fer_probs_smoothed"] == r["fer_probs"] for r in labels)
    clips = read_table(ws, "label_clips").to_pylist()
    low = {r["track_id"] for r in clips if not r["kept"]}
    assert low and all(r["reason"] == "low_confidence" for r in clips if not r["kept"])
    rej = {r["item_id"] for r in read_table(ws, "rejections").to_pylist()
           if r["reason"] == "low_confidence"}
    assert rej == low


def test_crop_to_gray64():
    grey = np.zeros((224, 224), np.uint8)
    grey[100:124, 100:124] = 255
    out = label_stage.crop_to_gray64(grey, 0.5)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    assert out[32, 32] == 255 and out[0, 0] == 0
