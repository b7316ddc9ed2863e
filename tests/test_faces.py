"""The faces stage: tracking cut at shots, identification against a dictionary, aligned clips and audio
of targets only (no pixel of anyone else written), the per-video cache, and a real clip from ../shared.

The synthetic video (25 fps, 320x240, speech-like audio) has three shots: the astronaut (not in the
recipe), Grace Hopper (the recipe's only person, "grace"), and a texture with no face. The dictionary
is made from a flipped, differently cropped copy of the Grace Hopper portrait.
"""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
import conftest
import pytest
from conftest import digest

from dsbuilder import synth
from dsbuilder.config import STAGE_PARAMS, stage_defaults
from dsbuilder.face import api
from dsbuilder.face.crops import alignment
from dsbuilder.face.tracker import DETECTORS, FacesParams, Sample, SampleReservoir
from dsbuilder.manifest.io import read_table, table_path, write_table
from dsbuilder.manifest.schema import schemas
from dsbuilder.media import iter_frames, probe
from dsbuilder.recipe import Recipe
from dsbuilder.stages import faces as faces_stage
from dsbuilder.stages import shots as shots_stage
from dsbuilder.stages.faces import Dictionary, process_video
from dsbuilder.workspace import Workspace, sha256_file

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "media"
SIZE = (240, 320)  # (h, w)
FPS = 25.0
SHOT_FRAMES = (30, 40, 25)  # astronaut, grace, texture
GRACE_THRESHOLD = 0.5  # measured distances: grace ~0.2, the astronaut ~0.67


# --- fixtures ------------------------------------------------------------------------------------

def grace_embedding() -> np.ndarray:
    """An embedding of a flipped, re-cropped, resized Grace Hopper (not the frames of the video)."""
    import cv2

    ref = np.ascontiguousarray(synth.grace_hopper()[:, ::-1][60:460, 40:480])
    ref = cv2.resize(ref, (300, 272), interpolation=cv2.INTER_AREA)
    det = api.detect(ref, upsample=1)
    assert len(det) == 1
    return api.embed(ref, det[0].box)


def dictionary_rows(threshold: float = GRACE_THRESHOLD) -> tuple[list[dict], list[dict]]:
    emb = grace_embedding()
    face = {"face_id": "face-grace-1", "person_id": "grace", "source_id": "src-photo",
            "origin": "photo", "bbox": [0.0, 0.0, 1.0, 1.0], "embedding": emb.tolist(), "kept": True}
    person = {"person_id": "grace", "name": "Grace Hopper", "source_ids": ["src-photo"],
              "n_faces": 1, "n_kept": 1, "n_bootstrapped": 0, "threshold": threshold}
    return [face], [person]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faces-media") / "three_shots.mp4"
    synth.write_video(path, [synth.Shot(synth.astronaut(), SHOT_FRAMES[0]),
                             synth.Shot(synth.grace_hopper(), SHOT_FRAMES[1]),
                             synth.Shot(synth.texture(3), SHOT_FRAMES[2])], size=SIZE, fps=FPS)
    return path


def make_recipe(ws: Path, **faces_params) -> Recipe:
    return Recipe(path=ws / "recipe.yaml", name="t", workspace=ws, people=[], licences={},
                  limits={}, stages={"shots": stage_defaults("shots"),
                                     "faces": {**stage_defaults("faces"), **faces_params}})


def add_video(ws: Workspace, src: Path, source_id: str) -> dict:
    return conftest.add_video(ws, src, source_id, person_id="grace")


def wav_samples(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767, \
            w.getframerate()


@pytest.fixture(scope="module")
def stage_ws(tmp_path_factory, video) -> tuple[Workspace, dict]:
    """A workspace with the synthetic video (and an unreadable one), shots, and the dictionary; the
    faces stage run once."""
    root = tmp_path_factory.mktemp("faces-ws")
    ws = Workspace.open(root / "ws")
    bad = root / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    rows = [add_video(ws, video, "src-syn"), add_video(ws, bad, "src-bad")]
    write_table(ws, "sources", rows, "h")
    shots_stage.run(make_recipe(ws.root), ws, progress=False)
    # the bad file has no shots; give it one so the faces stage tries (and fails) to decode it
    shots = read_table(ws, "shots").to_pylist()
    shots.append({"shot_id": "src-bad-shot0000", "source_id": "src-bad", "shot_index": 0,
                  "start_frame": 0, "end_frame": 10, "start_s": 0.0, "end_s": 0.4, "n_frames": 10,
                  "detector": "adaptive"})
    write_table(ws, "shots", shots, "h")
    faces, people = dictionary_rows()
    write_table(ws, "faces_dictionary", faces, "h")
    write_table(ws, "people", people, "h")
    result = faces_stage.run(make_recipe(ws.root), ws, progress=False)
    return ws, {"result": result, "shots": shots}


# --- units ---------------------------------------------------------------------------------------

def test_detector_registry_matches_config():
    assert tuple(DETECTORS) == STAGE_PARAMS["faces"]["detector"].choices
    assert STAGE_PARAMS["faces"]["detector"].default == "blazeface"
    assert FacesParams.from_mapping({"crop_size": 112}).crop_size == 112


def test_alignment_is_dlibs_face_chip_transform():
    """Our similarity (float landmarks, for smoothing) equals dlib.get_face_chip_details's."""
    import dlib

    rng = np.random.default_rng(0)
    img = synth.grace_hopper()
    box = api.detect(img)[0].box
    lm = np.round(api.landmarks(img, box) + rng.normal(0, 1, (68, 2))).astype(np.float32)
    det = dlib.full_object_detection(dlib.rectangle(*box),
                                     dlib.points([dlib.point(int(x), int(y)) for x, y in lm]))
    chip = dlib.get_face_chip_details(det, 224, 0.35)
    m = alignment(lm[None], 224, 0.35)[0]
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    angle = float(np.arctan2(m[1, 0], m[0, 0]))
    centre = m[:, :2] @ [112.0, 112.0] + m[:, 2]
    assert scale == pytest.approx(chip.rect.width() / 224, rel=1e-4)
    assert angle == pytest.approx(chip.angle, abs=1e-4)
    r = chip.rect
    assert centre == pytest.approx([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2],
                                   abs=1e-2)


def _frames(fmt: str, color_range: int = 1):
    """A 64x48 frame of the Grace Hopper portrait, in ``fmt``, from RGB by FFmpeg's scaler."""
    import av
    import cv2

    rgb = cv2.resize(synth.grace_hopper(), (64, 48), interpolation=cv2.INTER_AREA)
    src = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame = src.reformat(format=fmt, dst_color_range=color_range)
    return rgb, frame


@pytest.mark.parametrize("fmt,color_range", [("yuv420p", 1), ("nv12", 1), ("yuvj420p", 2)])
def test_luma_is_the_y_plane_in_full_range(fmt, color_range):
    from dsbuilder.media import luma

    _, frame = _frames(fmt, color_range)
    grey = luma(frame)
    y = np.frombuffer(frame.planes[0], np.uint8).reshape(48, frame.planes[0].line_size)[:, :64]
    assert grey.shape == (48, 64) and grey.dtype == np.uint8 and grey.flags.c_contiguous
    if color_range == 2:
        assert np.array_equal(grey, y)
    else:  # 16 -> 0, 235 -> 255, monotonic in between
        expect = np.clip(np.round((y.astype(float) - 16) * 255 / 219), 0, 255)
        assert np.array_equal(grey, expect.astype(np.uint8))
    # and FFmpeg's own grey differs by its dithering only
    ffmpeg = frame.reformat(format="gray").to_ndarray()
    assert np.abs(ffmpeg.astype(int) - grey).mean() < 3


def test_luma_refuses_frames_without_an_8_bit_y_plane():
    from dsbuilder.media import luma

    _, frame = _frames("rgb24")
    assert luma(frame) is None


def test_crops_warped_in_yuv_match_the_rgb_path():
    """A 4:2:0 source is warped plane by plane: the same crop as through RGB, chroma sited right."""
    import math

    import av
    import cv2

    from dsbuilder.face.crops import SourceFrame

    rgb = cv2.resize(synth.grace_hopper(), (320, 240), interpolation=cv2.INTER_AREA)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
        format="yuv420p")
    a, s = math.radians(10), 0.6
    # rotated, scaled, and partly outside the picture (the border must be black, not green)
    m = np.array([[s * math.cos(a), -s * math.sin(a), -20.0], [s * math.sin(a), s * math.cos(a), 40.0]])
    to_rgb = av.video.reformatter.VideoReformatter()
    planar = SourceFrame(frame, to_rgb)
    through_rgb = SourceFrame(frame, to_rgb)
    through_rgb.planar = False
    assert planar.planar
    out = planar.warp(m, 96)
    assert out.format.name == "yuv420p" and (out.width, out.height) == (96, 96)
    a_rgb = out.to_ndarray(format="rgb24").astype(int)
    b_rgb = through_rgb.warp(m, 96).to_ndarray(format="rgb24").astype(int)
    assert np.abs(a_rgb - b_rgb).mean() < 3
    assert a_rgb[0, 0].max() <= 2  # outside the source: black


class _StillFrame:
    """A stand-in for tracker.Frame: the same picture at every index."""

    def __init__(self, index: int, rgb: np.ndarray):
        self.index, self.t, self._rgb = index, index / FPS, rgb

    def gray(self) -> np.ndarray:
        return np.ascontiguousarray(self._rgb.mean(axis=2).astype(np.uint8))

    def rgb(self) -> np.ndarray:
        return self._rgb


@pytest.mark.parametrize("confirmed", [True, False])
def test_a_weak_face_starts_a_track_kept_only_once_a_detection_confirms_it(confirmed):
    """Probes also report faces under HOG's threshold: such a face is followed tentatively and
    becomes a track, from the weak frame on, only if a later detection at the threshold finds it."""
    from dsbuilder.face.tracker import ShotSpan, VideoInfo, _Tracker

    rgb = synth.grace_hopper()
    (det,) = api.detect(rgb)
    box = np.array(det.box, np.float32)
    none = np.zeros((0, 4), np.float32)
    p = FacesParams.from_mapping({"detect_fps": 5.0})
    shot = ShotSpan("syn-shot0000", 0, 12, 0.0, 12 / FPS)
    tracker = _Tracker(p, VideoInfo(rgb.shape[1], rgb.shape[0], FPS, None, 0.0))
    frames = [_StillFrame(i, rgb) for i in range(12)]
    tracker.detection(frames[0], shot, none, weak_boxes=box[None])  # the probe: a weak face only
    assert [t.confirmed for t in tracker.live] == [False]
    for i in range(1, 12):
        if i % 5:
            tracker.follow_all(frames[i])
        else:  # the scheduled detections (every 0.2 s): they find the face, or not
            tracker.detection(frames[i], shot, box[None] if confirmed else none)
    tracker.finish()
    if confirmed:
        (raw,) = tracker.done
        assert raw.start_frame == 0 and raw.n_frames == 12
        assert raw.detected[[0, 5, 10]].all() and raw.n_detections == 3
    else:
        assert tracker.done == [] and tracker.live == []


def test_only_the_hog_probes_report_weak_faces():
    from dsbuilder.face.tracker import WEAK_SCORE, _run_detection

    assert DETECTORS["hog"].weak_score == WEAK_SCORE < 0 and DETECTORS["cnn"].weak_score is None
    grey = np.ascontiguousarray(synth.grace_hopper().mean(axis=2).astype(np.uint8))
    seen = []
    spec = DETECTORS["hog"].__class__(
        "spy", "gray", lambda img, up, th: seen.append(th) or api.detect(img, "hog", up, th),
        weak_score=WEAK_SCORE)
    strong = _run_detection(spec, grey, 0, 1.0)
    probe = _run_detection(spec, grey, 0, 1.0, weak=True)
    assert seen == [0.0, WEAK_SCORE]
    assert len(strong.boxes) == 1 and len(strong.weak) == 0
    assert np.array_equal(probe.boxes, strong.boxes)  # weak faces are reported apart
    scores = [d.score for d in api.detect(grey, "hog", 0, WEAK_SCORE)]
    assert len(probe.weak) == sum(WEAK_SCORE <= s < 0 for s in scores)


def test_sample_reservoir_is_bounded_and_spread_over_the_track():
    res = SampleReservoir(capacity=10, bin_s=0.2)
    chip = np.zeros((4, 4, 3), np.uint8)
    for i in range(3000):  # 10 minutes at 5 detections per second
        t = i * 0.2
        res.add(Sample(t, quality=float((i * 37) % 101), chip=chip, box=(0, 0, 4, 4)))
    assert len(res.bins) <= 10
    picked = res.pick(5)
    assert len(picked) == 5
    times = [s.t for s in picked]
    assert times == sorted(times) and times[0] < 120 and times[-1] > 480  # from all along


# --- one video, no workspace ---------------------------------------------------------------------

def test_process_video_keeps_grace_rejects_astronaut_writes_only_grace(video, tmp_path):
    shots = shots_stage.detect_shots(video)
    assert [s.start_frame for s in shots] == [0, 30, 70]
    out = tmp_path / "clips"
    faces, people = dictionary_rows()
    result = process_video(video, shots, Dictionary.from_rows(faces, people), {}, out,
                           source_id="syn")
    by_shot = {}
    for t in result.tracks:
        by_shot.setdefault(t.shot_id, []).append(t)
    # the astronaut: one track, not a target; the texture: none
    (astro,) = by_shot["syn-shot0000"]
    assert (astro.kept, astro.reason, astro.person_id) == (False, "not_target", None)
    assert astro.second_person_id == "grace" and astro.distance > GRACE_THRESHOLD
    assert astro.crop_path is None and astro.frames is None
    assert "syn-shot0002" not in by_shot
    # grace: kept, the whole shot, identified with a margin
    (grace,) = by_shot["syn-shot0001"]
    assert grace.kept and grace.person_id == "grace" and grace.track_id == "syn-shot0001-trk000"
    assert grace.distance < 0.35 and grace.threshold == GRACE_THRESHOLD
    assert (grace.start_frame, grace.end_frame) == (30, 70)
    assert grace.n_embeddings == 5 and grace.n_detections >= 8
    assert grace.start_s == pytest.approx(30 / FPS) and grace.end_s == pytest.approx(70 / FPS)
    # only grace's files exist
    assert sorted(p.name for p in out.iterdir()) == [f"{grace.track_id}.mp4",
                                                      f"{grace.track_id}.wav"]
    clip = Path(grace.crop_path)
    info = probe(clip)
    assert (info.width, info.height, info.has_audio) == (224, 224, True)
    times = [t for _, t, _ in iter_frames(clip)]
    assert len(times) == grace.n_frames == 40
    # same frame times as the source frames, from 0
    assert np.allclose(times, grace.frames.t - grace.frames.t[0], atol=1e-3)
    assert sha256_file(clip) == grace.crop_sha256
    # the wav: exactly the track's span, and the source's audio at that span (no offset)
    samples, rate = wav_samples(Path(grace.audio_path))
    assert rate == 16000 and len(samples) == round((grace.end_s - grace.start_s) * rate)
    truth = synth.speech_like(sum(SHOT_FRAMES) / FPS)[round(grace.start_s * rate):][:len(samples)]
    lags = range(-160, 161)
    corr = [np.dot(samples[200 + k:len(samples) - 200 + k], truth[200:len(truth) - 200])
            for k in lags]
    assert abs(lags[int(np.argmax(corr))]) <= 16  # within 1 ms
    # frames: every frame of the track, detections where the detector fired, steady crop
    fr = grace.frames
    assert list(fr.frame_index) == list(range(30, 70)) and fr.detected[0]
    assert fr.landmarks.shape == (40, 136) and np.isfinite(fr.yaw).all()


def test_source_without_audio_gives_clip_without_audio(tmp_path):
    path = tmp_path / "silent.mp4"
    synth.write_video(path, [synth.Shot(synth.grace_hopper(), 20)], size=SIZE, audio=None)
    faces, people = dictionary_rows()
    result = process_video(path, shots_stage.detect_shots(path), Dictionary.from_rows(faces, people),
                           {"min_track_s": 0.3}, tmp_path / "clips", source_id="silent")
    (track,) = result.kept
    assert track.audio_path is None and track.audio_sha256 is None
    assert not probe(Path(track.crop_path)).has_audio
    assert sorted(p.suffix for p in (tmp_path / "clips").iterdir()) == [".mp4"]


def test_output_does_not_depend_on_threads_or_lookahead(video, tmp_path, monkeypatch):
    """Detections run ahead in threads; what they compute must never change the result."""
    from dsbuilder.face import tracker

    faces, people = dictionary_rows()
    dictionary = Dictionary.from_rows(faces, people)
    shots = shots_stage.detect_shots(video)

    def signature(threads: int, lookahead_s: float) -> list:
        monkeypatch.setattr(tracker, "DETECT_THREADS", threads)
        monkeypatch.setattr(tracker, "LOOKAHEAD_S", lookahead_s)
        out = tmp_path / f"{threads}-{lookahead_s}"
        result = process_video(video, shots, dictionary, {}, out, source_id="syn")
        return [({k: v for k, v in t.row().items() if k not in ("crop_path", "audio_path")},
                 None if t.frames is None else t.frames.to_record()) for t in result.tracks]

    reference = signature(1, 1.0)
    assert signature(2, 0.05) == reference
    assert signature(2, 4.0) == reference


def test_preview_shows_targets_and_pixelates_everyone_else(video, tmp_path):
    import cv2

    from dsbuilder.face.preview import write_preview
    from dsbuilder.face.tracker import ShotSpan
    from dsbuilder.stages.faces import analyse

    faces, people = dictionary_rows()
    dictionary = Dictionary.from_rows(faces, people)
    out = write_preview(video, tmp_path / "preview.mp4", dictionary, {})
    assert out == tmp_path / "preview.mp4"
    source = [img for _, _, img in iter_frames(video)]
    shown = [img for _, _, img in iter_frames(out)]
    assert len(shown) == len(source) and shown[0].shape == source[0].shape
    spans = [ShotSpan.of(s, video.stem) for s in shots_stage.detect_shots(video)]
    tracks = analyse(video, spans, dictionary, FacesParams.from_mapping({}), keep_geometry=True)

    def detail_kept(track, i: int) -> float:
        """Correlation of the face's fine detail in the preview with the source's (1: intact)."""
        frame = int(track.raw.frames[i])
        x0, y0, x1, y1 = (int(v) for v in track.raw.boxes[i])
        a, b = (cv2.cvtColor(img[y0 + 4:y1 - 4, x0 + 4:x1 - 4], cv2.COLOR_BGR2GRAY).astype(float)
                for img in (source[frame], shown[frame]))
        a, b = a - cv2.GaussianBlur(a, (0, 0), 2), b - cv2.GaussianBlur(b, (0, 0), 2)
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    (astro,) = [j for _, j in tracks if j.shot_id.endswith("shot0000")]
    (grace,) = [j for _, j in tracks if j.shot_id.endswith("shot0001")]
    assert not astro.kept and grace.kept
    assert detail_kept(grace, 10) > 0.4  # measured 0.69 (the drawn landmarks cost some)
    assert abs(detail_kept(astro, 10)) < 0.2  # measured 0.02


def test_cnn_detector_is_selectable(tmp_path):
    """The MMOD detector (slow: run on 160 px frames here) goes through the same pipeline."""
    path = tmp_path / "short.mp4"
    synth.write_video(path, [synth.Shot(synth.grace_hopper(), 20)], size=SIZE, audio=None)
    faces, people = dictionary_rows()
    params = {"detector": "cnn", "detect_width": 160, "upsample_below_px": 0, "min_track_s": 0.3}
    result = process_video(path, shots_stage.detect_shots(path), Dictionary.from_rows(faces, people),
                           params, tmp_path / "clips", source_id="short")
    (track,) = result.tracks
    assert track.kept and track.person_id == "grace" and track.n_frames == 20


# --- the stage -----------------------------------------------------------------------------------

def test_stage_tables_rejections_and_files(stage_ws):
    ws, ctx = stage_ws
    result = ctx["result"]
    assert (result.computed, result.cached) == (2, 0)
    tracks = read_table(ws, "tracks").to_pylist()
    frames = read_table(ws, "frames").to_pylist()
    common = {"schema_version", "stage_params_hash", "dsbuilder_version"}
    assert set(result.rows["tracks"][0]) == set(schemas()["tracks"][0].names) - common
    assert set(result.rows["frames"][0]) == set(schemas()["frames"][0].names) - common
    kept = [t for t in tracks if t["kept"]]
    assert [(t["shot_id"], t["person_id"]) for t in kept] == [("src-syn-shot0001", "grace")]
    (grace,) = kept
    assert grace["crop_path"] == f"clips/{grace['track_id']}.mp4"
    assert grace["audio_path"] == f"clips/{grace['track_id']}.wav"
    assert sha256_file(ws.abspath(grace["crop_path"])) == grace["crop_sha256"]
    assert sha256_file(ws.abspath(grace["audio_path"])) == grace["audio_sha256"]
    # frames only for the kept track, one per frame, crop_frame counting from 0
    assert {f["track_id"] for f in frames} == {grace["track_id"]}
    mine = sorted(frames, key=lambda f: f["frame_index"])
    assert [f["crop_frame"] for f in mine] == list(range(grace["n_frames"]))
    assert [f["frame_index"] for f in mine] == list(range(grace["start_frame"], grace["end_frame"]))
    assert sum(f["detected"] for f in mine) == grace["n_detections"]
    # the astronaut: a tracks row and a rejection, no frames, no file anywhere in the workspace
    rejected = [t for t in tracks if not t["kept"]]
    assert [(t["shot_id"], t["reason"]) for t in rejected] == [("src-syn-shot0000", "not_target")]
    astro = rejected[0]["track_id"]
    assert astro.startswith("src-syn-shot0000-trk")
    assert not [p for p in ws.root.rglob(f"*{astro}*")]
    assert sorted(p.name for p in (ws.root / "clips").iterdir()) == sorted(
        [Path(grace["crop_path"]).name, Path(grace["audio_path"]).name])
    rej = {(r["item_id"], r["reason"]) for r in read_table(ws, "rejections").to_pylist()
           if r["stage"] == "faces"}
    assert rej == {(astro, "not_target"), ("src-bad", "decode_error")}
    # the manifest validator finds nothing wrong with our tables (ids, references, reason codes)
    from dsbuilder.manifest.qa import validate

    problems, counts = validate(ws, check_hashes=False)
    assert not [p for p in problems if p.startswith(("tracks", "frames", "rejections"))], problems
    assert (counts["tracks"], counts["frames"]) == (len(tracks), len(frames))
    # tracks never cross a shot boundary
    shots = {s["shot_id"]: s for s in ctx["shots"]}
    for t in tracks:
        s = shots[t["shot_id"]]
        assert s["start_frame"] <= t["start_frame"] < t["end_frame"] <= s["end_frame"]


def test_stage_rerun_is_cached_and_byte_identical(stage_ws, monkeypatch):
    ws, _ = stage_ws
    files = [table_path(ws, "tracks"), table_path(ws, "frames"),
             table_path(ws, "rejections", "faces")]
    before = [digest(f) for f in files]
    clips_before = {p.name: digest(p) for p in (ws.root / "clips").iterdir()}

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached rerun must not decode")

    with monkeypatch.context() as m:
        m.setattr("dsbuilder.media.open_video", no_decoding)
        again = faces_stage.run(make_recipe(ws.root), ws, progress=False)
    # the unreadable video's rejection is cached too (the file is there, it just is not a video)
    assert (again.computed, again.cached) == (0, 2)
    assert [digest(f) for f in files] == before
    assert {p.name: digest(p) for p in (ws.root / "clips").iterdir()} == clips_before


def test_stage_dictionary_change_recomputes_and_removes_clips_of_non_targets(stage_ws, tmp_path):
    ws, _ = stage_ws
    # copy the workspace so the module's other tests keep theirs
    ws2 = Workspace.open(tmp_path / "ws")
    shutil.copytree(ws.root, ws2.root, dirs_exist_ok=True)
    faces, people = dictionary_rows(threshold=0.1)  # nobody is that close: grace is not a target
    write_table(ws2, "people", people, "h")
    res = faces_stage.run(make_recipe(ws2.root), ws2, progress=False)
    assert res.computed == 2  # the dictionary is part of every video's key
    assert not any(r["kept"] for r in res.rows["tracks"]) and res.rows["frames"] == []
    assert {r.reason for r in res.rejections} == {"not_target", "decode_error"}
    assert not [p for p in (ws2.root / "clips").iterdir() if p.suffix in (".mp4", ".wav")]
    # no dictionary at all: one no_dictionary rejection per video, nothing else
    write_table(ws2, "faces_dictionary", [], "h")
    res = faces_stage.run(make_recipe(ws2.root), ws2, progress=False)
    assert sorted((r.item_id, r.reason) for r in res.rejections) == [
        ("src-bad", "no_dictionary"), ("src-syn", "no_dictionary")]
    assert res.rows == {"tracks": [], "frames": []}


# --- real media ----------------------------------------------------------------------------------

def _hamilton_dictionary(tmp_path: Path) -> Dictionary:
    """lin and alex from their photos: through the dictionary stage when it exists, else directly."""
    try:
        from dsbuilder.stages import dictionary as dictionary_stage  # noqa: F401
        has_stage = callable(getattr(dictionary_stage, "run", None))
    except ImportError:
        has_stage = False
    if has_stage:
        from dsbuilder import pipeline
        from dsbuilder.recipe import load_recipe

        recipe_path = tmp_path / "recipe.yaml"
        recipe_path.write_text(
            "name: hamilton\n"
            "people:\n"
            f"  - id: lin\n    name: Lin-Manuel Miranda\n"
            f"    photos: [{SHARED / 'people' / 'lin-manuel-miranda.png'}]\n"
            f"  - id: alex\n    name: Alex Lacamoire\n"
            f"    photos: [{SHARED / 'people' / 'alex-lacamoire.png'}]\n")
        recipe = load_recipe(recipe_path, tmp_path / "ws")
        ws = Workspace.open(tmp_path / "ws")
        pipeline.run(recipe, ws, pipeline.plan(until="dictionary"), progress=False)
        return Dictionary.from_workspace(ws)
    from PIL import Image

    faces, people = [], []
    for pid, name in (("lin", "lin-manuel-miranda.png"), ("alex", "alex-lacamoire.png")):
        img = np.asarray(Image.open(SHARED / "people" / name).convert("RGB"))
        (det,) = api.detect(img, upsample=1)
        faces.append({"face_id": f"face-{pid}", "person_id": pid, "kept": True,
                      "embedding": api.embed(img, det.box)})
        people.append({"person_id": pid, "threshold": 0.6})  # dlib's usual same-person distance
    return Dictionary.from_rows(faces, people)


@pytest.mark.realmedia
def test_real_hamilton_clip(tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"real media not found at {SHARED} (a checkout without ../shared)")
    clip = SHARED / "video" / "short_hamilton_clip.mp4"
    dictionary = _hamilton_dictionary(tmp_path)
    assert {p.person_id for p in dictionary.people} == {"lin", "alex"}
    shots = shots_stage.detect_shots(clip)
    result = process_video(clip, shots, dictionary, {}, tmp_path / "clips", source_id="ham")
    by_id = {s.shot_id("ham"): s for s in shots}

    def shot_of(t):
        return by_id[t.shot_id]

    # Lin is kept in the 3.6-7.9 s close-up, for most of it
    lin = [t for t in result.kept if t.person_id == "lin"]
    close_up = [t for t in lin if shot_of(t).start_s == pytest.approx(3.6, abs=0.1)
                and shot_of(t).end_s == pytest.approx(7.9, abs=0.1)]
    assert close_up, [(t.track_id, t.reason, t.person_id) for t in result.tracks]
    assert sum(t.n_frames for t in close_up) >= 0.6 * shot_of(close_up[0]).n_frames
    for t in close_up:
        assert Path(t.crop_path).is_file() and Path(t.audio_path).is_file()
    # ...and in the 0.85-1.5 s wide shot, where his face is ~50 px (found only upsampled)
    wide = [t for t in lin if shot_of(t).start_s == pytest.approx(0.85, abs=0.1)]
    assert wide, [(t.track_id, t.reason, t.person_id) for t in result.tracks]
    # the audience (7.9-10 s): no target track, and no face there is labelled lin or alex
    audience = [t for t in result.tracks if shot_of(t).start_s >= 7.8]
    assert not [t for t in audience if t.kept or t.person_id is not None]
    # every kept track is in a stage shot and is one of the two people
    assert all(t.person_id in ("lin", "alex") for t in result.kept)
    for t in result.tracks:
        s = shot_of(t)
        assert s.start_frame <= t.start_frame < t.end_frame <= s.end_frame


def test_cli_show_writes_a_preview_instead_of_running_the_stage(stage_ws, video, tmp_path):
    from conftest import run_cli

    ws, _ = stage_ws
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\npeople:\n  - id: grace\n")
    before = digest(table_path(ws, "tracks"))
    out = tmp_path / "preview.mp4"
    r = run_cli("faces", str(recipe), "-w", str(ws.root), "--show", str(video), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"preview: {out}" in r.stdout
    assert sum(1 for _ in iter_frames(out)) == sum(SHOT_FRAMES)
    assert digest(table_path(ws, "tracks")) == before  # the stage did not run
    r = run_cli("faces", str(recipe), "-w", str(ws.root), "--show", str(recipe))
    assert r.returncode == 1 and "cannot preview" in r.stderr and "hint:" in r.stderr
