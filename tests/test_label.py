"""The label stage: FER + valence/arousal per frame of aligned crop clips, geometric and imported AUs
with FACS emotion scores, per-person HMM segments, clip summaries, rejections as data, switchable
labellers, and the caches (a rerun decodes nothing, fits nothing and writes the same bytes)."""

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


# crop frames SMILE_FROM.. of every test track smile (landmarks moved), the others are neutral: a
# minority, as the per-track neutral baseline assumes (dsbuilder.labels.au.neutral_baseline)
SMILE_FROM = 8


@pytest.fixture(scope="module")
def shape():
    """Real 68 landmarks of the Grace Hopper crop (dlib's predictor)."""
    from dsbuilder.face import api

    chip = _chip(synth.grace_hopper())
    return api.landmarks(chip, api.detect(chip)[0].box).astype(np.float64)


def _smile(lm: np.ndarray, amount: float) -> np.ndarray:
    """Pull the mouth corners (48, 54) up and out by ``amount`` inter-ocular distances."""
    out = lm.copy()
    iod = np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0))
    out[48] += (-0.6 * amount * iod, -amount * iod)
    out[54] += (0.6 * amount * iod, -amount * iod)
    out[[49, 59, 60]] += (-0.3 * amount * iod, -0.5 * amount * iod)
    out[[53, 55, 64]] += (0.3 * amount * iod, -0.5 * amount * iod)
    return out


def _track(track_id: str, crop: str | None, sha: str | None, kept: bool = True) -> dict:
    return {"track_id": track_id, "source_id": "vid1", "shot_id": "vid1-shot0000",
            "person_id": "p1", "start_frame": 0, "end_frame": N, "start_s": 0.0,
            "end_s": N / 25, "n_frames": N, "n_detections": N, "n_embeddings": 5,
            "mean_face_px": 120.0, "kept": kept, "reason": None if kept else "not_target",
            "crop_path": crop, "crop_sha256": sha}


def _frames(track_id: str, shape: np.ndarray, offset: int = 100) -> list[dict]:
    """N frames rows: neutral landmarks (with 0.3 px jitter) until SMILE_FROM, then a smile."""
    rng = np.random.default_rng(len(track_id) + offset)
    rows = []
    for i in range(N):
        lm = _smile(shape, 0.15) if i >= SMILE_FROM else shape
        lm = lm + rng.normal(0, 0.3, lm.shape)
        rows.append({"frame_id": f"{track_id}-f{offset + i}", "track_id": track_id,
                     "source_id": "vid1", "frame_index": offset + i, "t": (offset + i) / 25,
                     "crop_frame": i, "bbox": [0.0, 0.0, 100.0, 100.0],
                     "landmarks": lm.ravel().tolist(), "detected": True})
    return rows


@pytest.fixture()
def workspace(tmp_path, chips, shape):
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
    write_table(ws, "frames", _frames("t1-grace", shape) + _frames("t2-astro", shape, 300)
                + _frames("t4-broken", shape), "h")
    recipe = Recipe(path=tmp_path / "r.yaml", name="t", workspace=ws.root, people=[], licences={},
                    limits={}, stages={"label": stage_defaults("label")})
    return recipe, ws


def test_registered():
    assert STAGES[-2:] == ("label", "report") and "label" in CODE_VERSIONS
    assert set(REASONS["label"]) == {"low_confidence", "no_landmarks", "decode_error",
                                     "hmm_too_few_frames", "internal_error", "worker_lost"}
    assert STAGE_PARAMS["label"]["smoothing"].choices == ("ema", "moving_average", "none")
    assert ("labels", "frame_id") in REFERENCES and ("label_clips", "track_id") in REFERENCES
    labels, id_col = schemas()["labels"]
    assert id_col == "label_id" and labels.field("fer_probs").type.list_size == 7


def test_label_stage(workspace, monkeypatch):
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
    paths = [table_path(ws, "labels"), table_path(ws, "label_clips"), table_path(ws, "segments"),
             table_path(ws, "rejections", "label"), ws.root / "models" / "hmm" / "p1.json"]
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    from dsbuilder.labels import hmm

    def no_fitting(*args, **kwargs):
        raise AssertionError("the HMM should come from the cache")

    monkeypatch.setattr(hmm, "fit", no_fitting)
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


def test_action_units_facs_scores_and_agreement(workspace):
    from dsbuilder.labels.au import AU_GEOM_NAMES
    from dsbuilder.labels.facs import EMOTIONS

    recipe, ws = workspace
    label_stage.run(recipe, ws, progress=False)
    labels = sorted(read_table(ws, "labels").to_pylist(), key=lambda r: r["frame_index"])
    i12 = AU_GEOM_NAMES.index("AU12_geom")
    for r in labels:
        assert len(r["aus_geom"]) == len(AU_GEOM_NAMES) and r["au_source"] == "geom"
        assert r["aus_imported"] is None and len(r["au_emotion_scores"]) == len(EMOTIONS)
        if r["crop_frame"] >= SMILE_FROM:  # the pulled corners read as AU12 and as happiness
            assert r["aus_geom"][i12] > 0.5 and r["au_emotion"] == "happiness", r
        else:
            assert r["aus_geom"][i12] < 0.2 and r["au_emotion"] == "neutral", r
    clips = {r["track_id"]: r for r in read_table(ws, "label_clips").to_pylist()}
    astro = clips["t2-astro"]
    # FER says happy on every frame of the smiling astronaut; the AUs only where the corners move
    assert astro["argmax"] == "happy"
    assert astro["fer_au_agreement"] == pytest.approx((N - SMILE_FROM) / N)
    assert astro["au_emotion"] == "neutral"
    assert astro["au_emotion_share"] == pytest.approx(SMILE_FROM / N)
    assert astro["mean_aus_geom"][i12] == pytest.approx(
        np.mean([r["aus_geom"][i12] for r in labels if r["track_id"] == "t2-astro"]), rel=1e-5)


def test_hmm_segments_per_person(workspace):
    recipe, ws = workspace
    # these clips are 12 frames long with a 4-frame smile: plain Viterbi (no minimum duration)
    recipe.stages["label"] = {**recipe.stages["label"], "hmm_min_segment_s": 0.0}
    label_stage.run(recipe, ws, progress=False)
    segs = read_table(ws, "segments").to_pylist()
    model = ws.root / "models" / "hmm" / "p1.json"
    assert model.is_file()
    for track_id, offset in (("t1-grace", 100), ("t2-astro", 300)):
        mine = sorted((s for s in segs if s["track_id"] == track_id),
                      key=lambda s: s["segment_index"])
        assert mine and mine[0]["start_frame"] == offset and mine[-1]["end_frame"] == offset + N
        assert all(a["end_frame"] == b["start_frame"] for a, b in zip(mine, mine[1:]))
        assert sum(s["n_frames"] for s in mine) == N
        # the smile onset is a state change, within 2 frames
        onset = offset + SMILE_FROM
        assert any(abs(s["start_frame"] - onset) <= 2 for s in mine[1:]), mine
        smiling = [s for s in mine if s["start_frame"] >= onset - 2]
        assert smiling[-1]["nearest_emotion"] == "happiness"
        assert all(s["model_path"] == "models/hmm/p1.json" and s["person_id"] == "p1"
                   for s in mine)


def test_hmm_segments_last_at_least_the_minimum(workspace):
    """With the default minimum (0.5 s) no segment is shorter, and a clip shorter than it is one
    segment; rows come sorted by track and start."""
    recipe, ws = workspace
    recipe.stages["label"] = {**recipe.stages["label"], "hmm_min_segment_s": 0.2}
    label_stage.run(recipe, ws, progress=False)
    segs = read_table(ws, "segments").to_pylist()
    assert segs == sorted(segs, key=lambda r: (r["track_id"], r["start_frame"]))
    for s in segs:
        whole = sum(x["n_frames"] for x in segs if x["track_id"] == s["track_id"])
        assert s["end_s"] - s["start_s"] >= 0.2 - 1e-6 or s["n_frames"] == whole
    recipe.stages["label"] = {**recipe.stages["label"], "hmm_min_segment_s": 5.0}
    label_stage.run(recipe, ws, progress=False)
    segs = read_table(ws, "segments").to_pylist()
    assert sorted(s["track_id"] for s in segs) == ["t1-grace", "t2-astro"]  # one per clip


def test_labellers_can_be_switched_off(workspace, monkeypatch):
    recipe, ws = workspace
    # FER off: nothing is decoded; AU and segment rows still come from the frames' landmarks
    recipe.stages["label"] = {**stage_defaults("label"), "fer": False}
    result = label_stage.run(recipe, ws, progress=False)
    assert result.computed == 0 and result.cached == 0
    labels = read_table(ws, "labels").to_pylist()
    assert labels and all(r["fer_probs"] is None and r["valence"] is None for r in labels)
    assert all(r["aus_geom"] is not None for r in labels)
    clips = read_table(ws, "label_clips").to_pylist()
    assert all(c["argmax"] is None and c["fer_au_agreement"] is None and c["kept"] for c in clips)
    assert read_table(ws, "segments").num_rows > 0
    # AUs off (and so no HMM): FER only
    recipe.stages["label"] = {**stage_defaults("label"), "aus": False}
    label_stage.run(recipe, ws, progress=False)
    labels = read_table(ws, "labels").to_pylist()
    assert all(r["aus_geom"] is None and r["fer_probs"] is not None for r in labels)
    assert read_table(ws, "segments").num_rows == 0


def test_too_few_frames_for_an_hmm_is_a_rejection(workspace):
    recipe, ws = workspace
    recipe.stages["label"] = {**stage_defaults("label"), "hmm_min_frames": 1000}
    label_stage.run(recipe, ws, progress=False)
    assert read_table(ws, "segments").num_rows == 0
    rej = {r["item_id"] for r in read_table(ws, "rejections").to_pylist()
           if r["reason"] == "hmm_too_few_frames"}
    assert rej == {"t1-grace", "t2-astro"}


def _openface_csv(path: Path, frames: range, au12: float) -> None:
    """A small OpenFace 2.x-layout CSV: frame (1-based), timestamp, success, AU06_r, AU12_r."""
    lines = ["frame, face_id, timestamp, confidence, success, AU06_r, AU12_r, AU45_r, AU12_c"]
    for f in frames:
        lines.append(f"{f + 1}, 0, {f / 25:.3f}, 0.98, 1, {au12 * 0.8:.2f}, {au12:.2f}, 0.00, 1")
    path.write_text("\n".join(lines) + "\n")


def test_imported_openface_aus_replace_geometry_where_they_cover(workspace, tmp_path):
    recipe, ws = workspace
    folder = tmp_path / "au"
    folder.mkdir()
    _openface_csv(folder / "t1-grace.csv", range(0, 4), au12=4.0)  # crop frames 0-3 only
    (folder / "t2-astro.csv").write_text("not, an, au, file\n1, 2, 3, 4\n")  # ignored, logged
    recipe.stages["label"] = {**stage_defaults("label"), "au_csv": str(folder)}
    label_stage.run(recipe, ws, progress=False)
    rows = {(r["track_id"], r["crop_frame"]): r for r in read_table(ws, "labels").to_pylist()}
    for cf in range(N):
        r = rows[("t1-grace", cf)]
        if cf < 4:  # OpenFace says AU6 + AU12 (a Duchenne smile) on neutral landmarks
            assert r["au_source"] == "openface" and r["au_emotion"] == "happiness"
            assert r["aus_imported"] == pytest.approx([0.64, 0.8, 0.0])
        else:  # no CSV row: the geometric AUs are scored
            assert r["au_source"] == "geom" and all(np.isnan(r["aus_imported"]))
    assert all(rows[("t2-astro", cf)]["au_source"] == "geom" for cf in range(N))
    clips = {r["track_id"]: r for r in read_table(ws, "label_clips").to_pylist()}
    assert clips["t1-grace"]["au_imported_names"] == ["AU06", "AU12", "AU45"]
    assert clips["t2-astro"]["au_imported_names"] is None


@pytest.mark.realmedia
def test_real_openface_csv_aligned_to_a_clip(workspace, tmp_path, shared_media):
    recipe, ws = workspace
    folder = tmp_path / "au"
    folder.mkdir()
    (folder / "t1-grace.csv").write_bytes((shared_media / "au" / "OpenFace_Test.csv").read_bytes())
    recipe.stages["label"] = {**stage_defaults("label"), "au_csv": str(folder)}
    label_stage.run(recipe, ws, progress=False)
    grace = [r for r in read_table(ws, "labels").to_pylist() if r["track_id"] == "t1-grace"]
    assert len(grace) == N and all(r["au_source"] == "openface" for r in grace)
    assert all(len(r["aus_imported"]) == 17 for r in grace)  # AU01_r ... AU45_r
    vals = np.array([r["aus_imported"] for r in grace])
    assert np.isfinite(vals).all() and (vals >= 0).all() and (vals <= 1).all()


@pytest.mark.realmedia
def test_real_hamilton_every_kept_clip_is_labelled(hamilton_workspace):
    """Issue 5's acceptance run: the whole pipeline on short_hamilton_clip.mp4; every kept clip has
    FER, valence/arousal, AU and HMM segment rows."""
    from dsbuilder.manifest.qa import validate

    ws = hamilton_workspace
    kept = {r["track_id"] for r in read_table(ws, "tracks").to_pylist() if r["kept"]}
    assert kept
    clips = {r["track_id"]: r for r in read_table(ws, "label_clips").to_pylist()}
    labels = read_table(ws, "labels").to_pylist()
    segments = read_table(ws, "segments").to_pylist()
    frames = read_table(ws, "frames").to_pylist()
    for tid in sorted(kept):
        c = clips[tid]
        assert c["argmax"] is not None and c["mean_valence"] is not None, c
        assert c["mean_aus_geom"] is not None and c["au_emotion"] is not None, c
        assert 0.0 <= c["fer_au_agreement"] <= 1.0
        mine = [r for r in labels if r["track_id"] == tid]
        assert len(mine) == sum(f["track_id"] == tid for f in frames)
        assert all(r["fer_probs"] is not None and r["valence"] is not None
                   and r["aus_geom"] is not None and r["au_emotion"] is not None for r in mine)
        segs = [s for s in segments if s["track_id"] == tid]
        assert sum(s["n_frames"] for s in segs) == len(mine), tid
        print(f"\n{tid} ({c['person_id']}): {c['n_frames']} frames, FER {c['argmax']} "
              f"p={c['argmax_prob']:.2f}, V={c['mean_valence']:+.2f} A={c['mean_arousal']:+.2f}, "
              f"AU {c['au_emotion']} ({c['au_emotion_share']:.2f}), FER/AU agreement "
              f"{c['fer_au_agreement']:.2f}, {len(segs)} segments "
              f"{[s['nearest_emotion'] for s in segs][:8]}")
    problems, _ = validate(ws)
    assert not problems, problems[:5]


def test_cli_au_csv_option(workspace, tmp_path):
    from conftest import run_cli

    _, ws = workspace
    folder = tmp_path / "au"
    folder.mkdir()
    _openface_csv(folder / "t2-astro.csv", range(0, N), au12=5.0)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\npeople:\n  - id: p1\n")
    r = run_cli("label", str(recipe), "-w", str(ws.root), "--au-csv", str(folder), "--no-progress")
    assert r.returncode == 0, r.stderr
    astro = [r for r in read_table(ws, "labels").to_pylist() if r["track_id"] == "t2-astro"]
    assert len(astro) == N and all(r["au_source"] == "openface" for r in astro)
    r = run_cli("label", str(recipe), "-w", str(ws.root), "--au-csv", str(tmp_path / "missing"))
    assert r.returncode == 2 and "--au-csv" in r.stderr


def test_recipe_checks_the_hmm_range_and_the_au_csv_path(tmp_path):
    from dsbuilder.errors import RecipeError
    from dsbuilder.recipe import load_recipe

    base = "name: t\npeople:\n  - id: p1\nstages:\n  label:\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "    hmm_min_states: 5\n    hmm_max_states: 3\n")
    with pytest.raises(RecipeError, match="hmm_min_states"):
        load_recipe(bad)
    bad.write_text(base + "    au_csv: nowhere/\n")
    with pytest.raises(RecipeError, match="au_csv does not exist"):
        load_recipe(bad)
    (tmp_path / "au").mkdir()
    good = tmp_path / "good.yaml"
    good.write_text(base + "    au_csv: au\n")
    assert load_recipe(good).stages["label"]["au_csv"] == str(tmp_path / "au")
