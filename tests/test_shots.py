"""The shots stage: detectors on synthetic videos with known transitions, frame-accurate times (also for
variable frame rates), bad files as rejections, the per-video cache, and real clips from ../shared."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import add_video, digest

from dsbuilder import synth
from dsbuilder.config import STAGE_PARAMS, stage_defaults
from dsbuilder.manifest.io import read_table, table_path, write_table
from dsbuilder.manifest.schema import schemas
from dsbuilder.media import MediaError
from dsbuilder.recipe import Recipe
from dsbuilder.shots_detectors import DETECTORS, create_detector, resolved_threshold
from dsbuilder.stages import shots as shots_stage
from dsbuilder.stages.shots import Shot, detect_shots
from dsbuilder.workspace import Workspace

REAL_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "video"
SIZE = (240, 320)  # (h, w) of the synthetic videos
DETECTOR_NAMES = ("adaptive", "content")


def write(path: Path, shots: list[synth.Shot], **kw) -> list[int]:
    """Write a small synthetic video; return its true transition frames."""
    kw.setdefault("size", SIZE)
    return synth.write_video(path, shots, **kw)


def cut_frames(shots: list[Shot]) -> list[int]:
    return [s.start_frame for s in shots[1:]]


def assert_partition(shots: list[Shot], n_frames: int) -> None:
    """Shots are numbered in order and cover every frame exactly once."""
    assert [s.index for s in shots] == list(range(len(shots)))
    assert shots[0].start_frame == 0 and shots[-1].end_frame == n_frames
    for a, b in zip(shots, shots[1:]):
        assert a.end_frame == b.start_frame and a.end_s == b.start_s
    assert all(s.n_frames > 0 and s.end_s > s.start_s for s in shots)


# --- the registry -----------------------------------------------------------------------------

def test_registry_matches_config_and_fills_threshold():
    assert tuple(DETECTORS) == STAGE_PARAMS["shots"]["detector"].choices
    assert STAGE_PARAMS["shots"]["detector"].default == next(iter(DETECTORS))
    assert resolved_threshold({"detector": "adaptive", "threshold": None}) == 3.0
    assert resolved_threshold({"detector": "content", "threshold": None}) == 27.0
    assert resolved_threshold({"detector": "content", "threshold": 40}) == 40.0
    det = create_detector({**stage_defaults("shots"), "min_shot_s": 0.5}, fps=25.0)
    assert det.name == "adaptive" and det.min_shot_frames == 13  # 12.5 frames, rounded up
    with pytest.raises(KeyError, match="known: adaptive, content"):
        create_detector({**stage_defaults("shots"), "detector": "nope"}, fps=25.0)


# --- detection on synthetic videos ----------------------------------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, tuple[Path, list[int]]]:
    """Name -> (path, true transition frames) of the synthetic test videos (25 fps, 320x240)."""
    d = tmp_path_factory.mktemp("shots-media")
    out = {}
    specs = {
        "cuts": synth.standard_shots(4, 30),
        "fades": synth.standard_shots(4, 40, transitions=("fade",), transition_frames=12),
        "dissolves": synth.standard_shots(4, 40, transitions=("dissolve",), transition_frames=12),
        "short_dissolves": synth.standard_shots(3, 40, transitions=("dissolve",),
                                                transition_frames=2),
    }
    for name, shots in specs.items():
        out[name] = (d / f"{name}.mp4", write(d / f"{name}.mp4", shots, audio=None))
    return out


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_hard_cuts_found_within_two_frames(videos, detector):
    path, truth = videos["cuts"]
    shots = detect_shots(path, {"detector": detector})
    assert_partition(shots, 120)
    found = cut_frames(shots)
    assert len(found) == len(truth)
    assert all(abs(f - t) <= 2 for f, t in zip(found, truth)), (found, truth)
    assert {s.detector for s in shots} == {detector}
    # constant frame rate: a frame's time is its index / fps; the last shot ends with the video
    assert all(s.start_s == pytest.approx(s.start_frame / 25.0, abs=1e-6) for s in shots)
    assert shots[-1].end_s == pytest.approx(120 / 25.0, abs=1e-6)


def test_fades_content_reports_each_once_adaptive_misses_them(videos):
    path, truth = videos["fades"]
    k = 12  # fade length in frames (out to black, then in)
    found = cut_frames(detect_shots(path, {"detector": "content"}))
    # one cut per fade, inside the fade (ContentDetector fires around the black frame)
    assert len(found) == len(truth)
    assert all(t <= f <= t + k for f, t in zip(found, truth)), (found, truth)
    # AdaptiveDetector compares a frame's change with its neighbours' mean; during a fade every
    # frame changes about as much as its neighbours, so no 4+-frame fade stands out (measured:
    # fades of 4-20 frames give no cut). Honest expectation: no cut, and no spurious ones either.
    assert cut_frames(detect_shots(path, {"detector": "adaptive"})) == []


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_dissolves(videos, detector):
    # A 12-frame dissolve changes each frame by ~1/12 of a cut: neither detector reports it
    # (measured for 4-20-frame dissolves), and neither invents cuts elsewhere.
    path, _ = videos["dissolves"]
    assert cut_frames(detect_shots(path, {"detector": detector})) == []
    # A 2-frame dissolve is nearly a cut: content finds it; adaptive still does not, because the
    # change is split over two neighbouring frames and each is compared with the other.
    path, truth = videos["short_dissolves"]
    found = cut_frames(detect_shots(path, {"detector": detector}))
    if detector == "content":
        assert len(found) == len(truth)
        assert all(abs(f - t) <= 2 for f, t in zip(found, truth)), (found, truth)
    else:
        assert found == []


def test_variable_frame_rate_times_are_true_presentation_times(tmp_path):
    rates = [30, 24, 15]
    path = tmp_path / "vfr.mp4"
    truth = write(path, synth.standard_shots(3, 20), vfr_fps=rates)
    true_starts = [0.0, 20 / 30, 20 / 30 + 20 / 24]
    true_end = true_starts[-1] + 20 / 15
    for detector in DETECTOR_NAMES:
        shots = detect_shots(path, {"detector": detector, "min_shot_s": 0.5})
        assert cut_frames(shots) == truth  # exact on clean synthetic cuts
        assert [s.start_s for s in shots] == pytest.approx(true_starts, abs=1e-6)
        assert [s.end_s for s in shots] == pytest.approx([*true_starts[1:], true_end], abs=1e-6)
        # the average frame rate would put the second cut at 40 / 21.43 = 1.87 s, not 1.5 s
        assert shots[2].start_s == pytest.approx(1.5, abs=1e-6)


@pytest.mark.parametrize("kind", ["120fps", "hevc", "no_audio"])
def test_other_formats_processed(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "120fps":
        fps, truth = 120.0, write(path, synth.standard_shots(3, 75), fps=120.0)
    elif kind == "hevc":
        fps, truth = 25.0, write(path, synth.standard_shots(3, 30), codec="libx265")
    else:
        fps, truth = 25.0, write(path, synth.standard_shots(3, 30), audio=None)
    shots = detect_shots(path)
    assert all(abs(f - t) <= 2 for f, t in zip(cut_frames(shots), truth))
    assert len(shots) == 3 and not any(s.too_short for s in shots)
    assert shots[1].start_s == pytest.approx(shots[1].start_frame / fps, abs=1e-6)


def test_downscale_width_zero_keeps_full_size(videos):
    path, _ = videos["cuts"]
    assert cut_frames(detect_shots(path, {"downscale_width": 0})) == cut_frames(
        detect_shots(path, {"downscale_width": 160}))


# --- bad files ----------------------------------------------------------------------------------

def make_bad(kind: str, d: Path) -> Path:
    path = d / f"{kind}.mp4"
    if kind == "random_bytes":
        path.write_bytes(os.urandom(40_000))
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 50)
    elif kind == "audio_only":
        synth.write_audio_only(path, duration=1.0)
    return path


@pytest.mark.parametrize("kind,reason", [("random_bytes", "decode_error"),
                                         ("zero_bytes", "decode_error"),
                                         ("text", "decode_error"),
                                         ("audio_only", "no_video_stream")])
def test_bad_files_raise_media_error_with_reason(tmp_path, kind, reason):
    with pytest.raises(MediaError) as info:
        detect_shots(make_bad(kind, tmp_path))
    assert info.value.reason == reason


def test_truncated_and_damaged_videos_keep_what_decodes(tmp_path):
    """A faststart mp4 cut in half: its index still declares every frame; the shots cover what
    decodes and a ``truncated`` row says how much is missing. Damaged bytes in the middle: that
    stretch is a ``decode_error`` row, the shots before and after it stay, none spans it."""
    whole = tmp_path / "whole.mp4"
    write(whole, [synth.Shot(synth.grace_hopper(), 100), synth.Shot(synth.texture(1), 100),
                  synth.Shot(synth.texture(2), 100)], audio=None, faststart=True)
    data = whole.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[:len(data) // 2])
    mid = tmp_path / "mid.mp4"
    damaged = bytearray(data)
    damaged[len(data) // 2:len(data) // 2 + 4000] = bytes(4000)
    mid.write_bytes(bytes(damaged))
    ws = Workspace.open(tmp_path / "ws")
    write_table(ws, "sources", [add_video(ws, p, f"src-{p.stem}") for p in (whole, half, mid)], "h")
    shots_stage.run(make_recipe(ws.root), ws, progress=False)
    shots = read_table(ws, "shots").to_pylist()
    rej = {r["item_id"]: r for r in read_table(ws, "rejections").to_pylist()}
    assert not [k for k in rej if k.startswith("src-whole")]
    tail = rej["src-half-tail"]
    assert tail["reason"] == "truncated" and "declares 300 frames" in tail["detail"]
    half_shots = [s for s in shots if s["source_id"] == "src-half"]
    assert half_shots and max(s["end_frame"] for s in half_shots) < 250
    assert "src-half" not in rej and "src-mid" not in rej  # neither video is dropped whole
    gap = rej["src-mid-damaged0"]
    assert gap["reason"] == "decode_error" and "skipped" in gap["detail"]
    import re

    t0, t1 = (float(x) for x in re.search(r"([\d.]+)-([\d.]+) s skipped", gap["detail"]).groups())
    mid_shots = [s for s in shots if s["source_id"] == "src-mid"]
    assert mid_shots and not any(s["start_s"] < t0 and s["end_s"] > t1 for s in mid_shots)
    assert max(s["end_s"] for s in mid_shots) > t1 + 4  # what follows the gap is kept
    assert "src-mid-tail" not in rej


# --- min_shot_s -------------------------------------------------------------------------------

@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_min_shot_s_short_last_shot_is_flagged_and_short_middle_shot_absorbed(tmp_path, detector):
    pics = [synth.grace_hopper(), synth.texture(1), synth.texture(2)]
    # a 6-frame (0.24 s) shot in the middle: the detector's own min_scene_len drops its end cut
    path = tmp_path / "middle.mp4"
    write(path, [synth.Shot(pics[0], 40), synth.Shot(pics[1], 6), synth.Shot(pics[2], 40)],
          audio=None)
    shots = detect_shots(path, {"detector": detector, "min_shot_s": 0.5})
    assert len(shots) == 2 and not any(s.too_short for s in shots)
    assert abs(shots[1].start_frame - 40) <= 2
    # an 8-frame (0.32 s) last shot: nothing to merge it with, so it is flagged too short
    path = tmp_path / "tail.mp4"
    write(path, [synth.Shot(pics[0], 40), synth.Shot(pics[1], 40), synth.Shot(pics[2], 8)],
          audio=None)
    shots = detect_shots(path, {"detector": detector, "min_shot_s": 0.5})
    assert [s.too_short for s in shots] == [False, False, True]
    assert shots[-1].n_frames == 8 and shots[-1].duration_s == pytest.approx(0.32, abs=1e-6)
    # with a lower minimum the same shot is kept
    assert not any(s.too_short for s in detect_shots(path, {"detector": detector,
                                                            "min_shot_s": 0.3}))


def test_video_without_cuts_is_one_shot(tmp_path):
    path = tmp_path / "one.mp4"
    write(path, [synth.Shot(synth.grace_hopper(), 30)], audio=None)
    shots = detect_shots(path)
    assert [(s.start_frame, s.end_frame) for s in shots] == [(0, 30)]
    assert shots[0].end_s == pytest.approx(30 / 25.0, abs=1e-6)


# --- the stage through a workspace --------------------------------------------------------------

def make_recipe(ws: Path, **shots_params) -> Recipe:
    return Recipe(path=ws / "recipe.yaml", name="t", workspace=ws, people=[], licences={},
                  limits={}, stages={"shots": {**stage_defaults("shots"), **shots_params}})


def test_stage_rows_rejections_cache_and_param_change(tmp_path, monkeypatch):
    ws = Workspace.open(tmp_path / "ws")
    good = tmp_path / "good.mp4"
    truth = write(good, [synth.Shot(synth.grace_hopper(), 30), synth.Shot(synth.texture(1), 30),
                         synth.Shot(synth.texture(2), 8)])
    rows = [add_video(ws, good, "src-good"),
            add_video(ws, make_bad("random_bytes", tmp_path), "src-bad"),
            {"source_id": "src-photo", "kind": "photo", "status": "ok", "person_ids": ["p"],
             "request_ids": ["req-2"]},
            {"source_id": "src-gone", "kind": "video", "status": "rejected", "person_ids": ["p"],
             "request_ids": ["req-3"]}]
    write_table(ws, "sources", rows, "h")

    first = shots_stage.run(make_recipe(ws.root), ws, progress=False)
    assert (first.computed, first.cached) == (2, 0)
    shots = sorted(first.rows["shots"], key=lambda r: r["shot_index"])
    schema, _ = schemas()["shots"]
    common = {"schema_version", "stage_params_hash", "dsbuilder_version"}
    assert set(shots[0]) == set(schema.names) - common
    assert [r["shot_id"] for r in shots] == ["src-good-shot0000", "src-good-shot0001"]
    assert abs(shots[1]["start_frame"] - truth[0]) <= 2
    rejections = {(r.item_id, r.reason) for r in first.rejections}
    assert rejections == {("src-bad", "decode_error"), ("src-good-shot0002", "too_short")}
    assert all(r.stage == "shots" and r.source_id in ("src-good", "src-bad")
               for r in first.rejections)
    table = read_table(ws, "shots").to_pylist()
    assert [r["shot_id"] for r in table] == ["src-good-shot0000", "src-good-shot0001"]
    stored = {(r["item_id"], r["reason"]) for r in read_table(ws, "rejections").to_pylist()}
    assert stored == rejections

    # a rerun decodes nothing and writes the same bytes
    shots_file, rej_file = table_path(ws, "shots"), table_path(ws, "rejections", "shots")
    before = digest(shots_file), digest(rej_file)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached rerun must not decode")

    with monkeypatch.context() as m:
        m.setattr("dsbuilder.media.iter_frames", no_decoding)
        again = shots_stage.run(make_recipe(ws.root), ws, progress=False)
    assert (again.computed, again.cached) == (0, 2)
    assert (digest(shots_file), digest(rej_file)) == before

    # a parameter change recomputes every video; the lower minimum now keeps the 8-frame shot
    changed = shots_stage.run(make_recipe(ws.root, min_shot_s=0.3), ws, progress=False)
    assert (changed.computed, changed.cached) == (2, 0)
    assert len(changed.rows["shots"]) == 3
    assert {r.reason for r in changed.rejections} == {"decode_error"}

    # force recomputes with the same parameters, and gives the same shots
    forced = shots_stage.run(make_recipe(ws.root), ws, force=True, progress=False)
    assert (forced.computed, forced.cached) == (2, 0)
    assert digest(shots_file) == before[0]


def test_stage_missing_file_is_rejected_but_not_cached(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    good = tmp_path / "good.mp4"
    write(good, synth.standard_shots(2, 30), audio=None)
    row = add_video(ws, good, "src-a")
    write_table(ws, "sources", [row], "h")
    ws.abspath(row["local_path"]).unlink()
    res = shots_stage.run(make_recipe(ws.root), ws, progress=False)
    assert [(r.item_id, r.reason) for r in res.rejections] == [("src-a", "decode_error")]
    assert not list(ws.cache.rglob("*.json"))
    # the file comes back: the next run computes it
    shutil.copyfile(good, ws.abspath(row["local_path"]))
    res = shots_stage.run(make_recipe(ws.root), ws, progress=False)
    assert res.computed == 1 and len(res.rows["shots"]) == 2 and res.rejections == []


# --- real media ---------------------------------------------------------------------------------

def real_video(name: str) -> Path:
    path = REAL_VIDEO / name
    if not path.is_file():
        pytest.skip(f"real media not found: {path} (a checkout without ../shared/media/video)")
    return path


@pytest.mark.realmedia
@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_real_hamilton_clip_shots(detector):
    # README: 0.85-1.5 s wide shot, 1.5-3.6 s close-up, 3.6-7.9 s close-up, 7.9-10 s audience;
    # the video stream starts at 0.85 s and our times are on the container timeline.
    shots = detect_shots(real_video("short_hamilton_clip.mp4"), {"detector": detector})
    assert_partition(shots, 275)
    assert shots[0].start_s == pytest.approx(0.85, abs=0.02)
    kept = [s for s in shots if not s.too_short]
    assert [s.start_s for s in kept[1:]] == pytest.approx([1.5, 3.6, 7.9], abs=0.2)
    assert shots[-1].end_s == pytest.approx(10.02, abs=0.02)  # end of the last frame
    # adaptive also cuts 4 frames before the end (9.89 s); that tail is shorter than
    # min_shot_s and becomes a too_short rejection, not a shot
    assert all(s.too_short for s in shots if s not in kept)


@pytest.mark.realmedia
@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_real_face_noface_hevc_vfr_cut(detector):
    # face_noface.mov: HEVC, VFR (30 then 24 fps); face until 2.37 s, a black frame at 2.40 s
    shots = detect_shots(real_video("face_noface.mov"), {"detector": detector})
    assert_partition(shots, 169)
    assert [s.start_s for s in shots[1:]] == pytest.approx([2.4], abs=0.2)
    assert shots[-1].end_s == pytest.approx(6.40, abs=0.05)
