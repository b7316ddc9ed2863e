"""The PyTorch port of dlib's face-recognition ResNet (dsbuilder.face.resnet_torch) against dlib itself,
on real faces: the two portraits that ship in dependencies and transformed copies of them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch (labels extra) runs the port")

from dsbuilder import synth  # noqa: E402
from dsbuilder.face import resnet_torch  # noqa: E402

TOLERANCE = 1e-4


def _variants(img: np.ndarray) -> list[np.ndarray]:
    """The image, mirrored, darkened and rotated by 8 degrees."""
    from PIL import Image

    rotated = np.asarray(Image.fromarray(img).rotate(8, resample=Image.BILINEAR))
    darkened = (img.astype(np.float32) * 0.55).astype(np.uint8)
    return [img, np.ascontiguousarray(img[:, ::-1]), darkened, rotated]


def _chip(img: np.ndarray) -> np.ndarray:
    """The 150x150 aligned chip of the largest face, as dlib's face_recognition_model_v1 makes it."""
    import dlib

    from dsbuilder.face import api

    found = api.detect(img, upsample=1)
    assert found, "no face found"
    shape = api._models()["sp5"](img, api._rect(found[0].box))
    return np.asarray(dlib.get_face_chip(img, shape, size=150, padding=0.25))


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    images = _variants(synth.grace_hopper()) + _variants(synth.astronaut())
    return np.stack([_chip(img) for img in images])


@pytest.fixture(scope="module")
def dlib_descriptors(chips) -> np.ndarray:
    from dsbuilder.face import api

    net = api._models()["resnet"]
    return np.stack([np.asarray(net.compute_face_descriptor(chip), dtype=np.float32)
                     for chip in chips])


def _pairwise_distances(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)


def test_file_parses_into_the_documented_architecture():
    layers = resnet_torch.read_dlib_layers()
    assert [layer.kind for layer in layers] == resnet_torch.expected_layer_kinds()
    np.testing.assert_allclose(layers[0].params["mean_rgb"], [122.782, 117.001, 104.298], rtol=1e-6)
    assert layers[1].params["weight"].shape == (32, 3, 7, 7)
    assert layers[-1].params["weight"].shape == (256, 128)


def test_chips_are_distinct(chips):
    assert len(chips) >= 6
    flat = chips.reshape(len(chips), -1).astype(np.int16)
    for i in range(len(chips)):
        for j in range(i):
            assert np.abs(flat[i] - flat[j]).mean() > 1, (i, j)


def test_descriptors_equal_dlib(chips, dlib_descriptors):
    ours = resnet_torch.embed_chips(chips)
    assert ours.shape == (len(chips), 128) and ours.dtype == np.float32
    diff = np.abs(ours - dlib_descriptors).max()
    assert diff < TOLERANCE, f"max abs difference {diff:.2e}"
    distance_diff = np.abs(_pairwise_distances(ours) - _pairwise_distances(dlib_descriptors)).max()
    assert distance_diff < TOLERANCE, f"pairwise distances differ by up to {distance_diff:.2e}"


def test_batch_equals_one_at_a_time(chips):
    batch = resnet_torch.embed_chips(chips)
    single = np.concatenate([resnet_torch.embed_chips(chip[None]) for chip in chips])
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-6)
    small_batches = resnet_torch.embed_chips(chips, batch_size=3)
    np.testing.assert_allclose(batch, small_batches, rtol=0, atol=1e-6)


def test_model_is_cached_and_in_eval_mode():
    net = resnet_torch.load_dlib_resnet()
    assert net is resnet_torch.load_dlib_resnet()
    assert not net.training


def test_rejects_wrong_chip_shape():
    with pytest.raises(ValueError, match="150"):
        resnet_torch.embed_chips(np.zeros((2, 100, 100, 3), np.uint8))


def test_api_engines_agree_with_dlibs_own_descriptor_on_whole_images():
    """api.embed / embed_many: chip by 5-point landmarks + the torch port equals dlib's
    compute_face_descriptor(image, shape); the dlib engine is dlib itself."""
    from dsbuilder import synth
    from dsbuilder.face import api

    pictures = [synth.grace_hopper(), synth.astronaut(), synth.grace_hopper()[:, ::-1].copy()]
    faces = [(img, api.detect(img)[0].box) for img in pictures]
    reference = np.stack([
        np.asarray(api._models()["resnet"].compute_face_descriptor(
            img, api._models()["sp5"](img, api._rect(box))), np.float32) for img, box in faces])
    np.testing.assert_allclose(api.embed_many(faces, engine="torch"), reference, atol=1e-5)
    np.testing.assert_array_equal(api.embed_many(faces, engine="dlib"), reference)
    np.testing.assert_allclose(api.embed(*faces[1]), reference[1], atol=1e-5)
    assert api.embed_many([], engine="torch").shape == (0, 128)
    with pytest.raises(ValueError, match="engine"):
        api.embed_many(faces, engine="onnx")
