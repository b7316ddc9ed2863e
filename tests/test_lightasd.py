"""Light-ASD: the port against the upstream code, its weights, its input, and its decisions.

The port check reads tests/data/lightasd_fixture.npz, made by tools/lightasd_fixture.py with the
upstream modules (Junhua-Liao/Light-ASD at the pinned commit) on public-domain crops and our synthetic
sound. Tests needing the weights skip with a message when they are not installed
(`dsbuilder models pull light-asd`, done by `make` set-up when ../shared/models is there).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dsbuilder.speaker import asd, lightasd
from tests.conftest import REPO, run_cli

FIXTURE = REPO / "tests" / "data" / "lightasd_fixture.npz"
SHARED_WEIGHTS = REPO.parent / "shared" / "models" / "light-asd"


@pytest.fixture(scope="module")
def weights() -> Path:
    path, why = lightasd.installed_weights()
    if path is None:
        pytest.skip(f"{why} (run `dsbuilder models pull light-asd`)")
    return path


@pytest.fixture(scope="module")
def fixture():
    return dict(np.load(FIXTURE))


def test_port_gives_the_upstream_outputs(weights, fixture):
    net = lightasd.load_model(weights)
    n = len(fixture["whole"])
    mf = lightasd.mfcc(fixture["audio16"])
    np.testing.assert_allclose(mf[:len(fixture["mfcc"])], fixture["mfcc"], atol=1e-5)
    out = lightasd.forward(net, fixture["mfcc"], fixture["faces"][:n])
    assert np.abs(out - fixture["whole"]).max() < 1e-4
    # upstream's evaluation loop (chunks of 1-6 s, averaged), rebuilt on our module
    scores = []
    for duration in [1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6]:
        s = []
        for i in range(math.ceil(n / 25 / duration)):
            a, b = i * duration * 25, min(n, (i + 1) * duration * 25)
            s.extend(lightasd.forward(net, fixture["mfcc"][4 * a:4 * b], fixture["faces"][a:b])[:, 1])
        scores.append(s)
    assert np.abs(np.mean(scores, axis=0) - fixture["eval_scores"]).max() < 1e-4


def test_onnx_runner_matches_the_port(weights, fixture):
    pytest.importorskip("onnx")
    runner = lightasd.load_runner(weights)
    assert isinstance(runner, lightasd.OnnxLightASD)
    n = len(fixture["whole"])
    out = lightasd.forward(runner, fixture["mfcc"], fixture["faces"][:n])
    assert np.abs(out - fixture["whole"]).max() < 1e-4
    # our speaking logit (out1 - out0) and upstream's rule (out1 > 0) agree in sign here
    assert np.mean((lightasd.speaking_logit(out) > 0) == (out[:, 1] > 0)) >= 0.95


def test_load_refuses_a_wrong_file(tmp_path):
    bad = tmp_path / lightasd.WEIGHTS_NAME
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError, match="sha256"):
        lightasd.load_model(bad)


def test_models_pull_from_a_folder_checks_sha256(tmp_path):
    cache = tmp_path / "cache"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / lightasd.WEIGHTS_NAME).write_bytes(b"truncated")
    (bad / "LICENSE").write_text("MIT")
    r = run_cli("models", "pull", "light-asd", "--from", str(bad),
                env={"DSBUILDER_CACHE": str(cache)})
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "sha256" in r.stderr and "hint:" in r.stderr
    assert not (cache / "models" / lightasd.weights_dir().name / lightasd.WEIGHTS_NAME).exists()
    r = run_cli("models", "pull", "light-asd", "--from", str(tmp_path / "missing"),
                env={"DSBUILDER_CACHE": str(cache)})
    assert r.returncode == 1 and "not found" in r.stderr
    if SHARED_WEIGHTS.is_dir():
        r = run_cli("models", "pull", "light-asd", "--from", str(SHARED_WEIGHTS),
                    env={"DSBUILDER_CACHE": str(cache)})
        assert r.returncode == 0, r.stderr
        folder = cache / "models" / lightasd.weights_dir().name
        assert (folder / "LICENSE").is_file() and (folder / "SOURCE.json").is_file()


def test_no_weights_falls_back_to_correlation(tmp_path, monkeypatch, caplog):
    from dsbuilder.config import stage_defaults
    from dsbuilder.stages import speakers

    monkeypatch.setenv("DSBUILDER_CACHE", str(tmp_path / "empty"))
    with caplog.at_level("WARNING"):
        net, scorer = speakers.resolve_scorer(stage_defaults("speakers"))
    assert net is None and scorer == "correlation"
    assert "correlation scorer decides instead" in caplog.text
    # the same when the file is there but corrupt
    folder = lightasd.weights_dir()
    folder.mkdir(parents=True)
    (folder / lightasd.WEIGHTS_NAME).write_bytes(b"corrupt")
    assert speakers.resolve_scorer(stage_defaults("speakers"))[0] is None


# --- input -----------------------------------------------------------------------------------------

def test_window_sits_on_the_lower_face_inside_the_clip():
    centre, side = asd.window(224, 0.35)
    eye, d = asd._eye_frame(224, 0.35)
    # below the eyes (mouth region), about two eye distances wide, inside the 224 px clip
    assert centre[1] > eye[1] + 0.5 * d and 1.8 * d < side < 2.4 * d
    assert centre[1] + side / 2 <= 224 + 2 and abs(centre[0] - eye[0]) < 1e-6


def _clip_and_wav(tmp_path: Path, n_frames: int, fps: float, audio_s: float):
    import av

    from dsbuilder.audio import write_wav

    clip = tmp_path / "c.mp4"
    with av.open(str(clip), "w") as out:
        vs = out.add_stream("libx264", rate=int(fps))
        vs.width = vs.height = 224
        vs.pix_fmt = "yuv420p"
        for i in range(n_frames):  # each frame a flat grey level = its index, to check the picking
            img = np.full((224, 224, 3), 10 + 3 * i, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    wav = tmp_path / "c.wav"
    write_wav(wav, np.zeros(int(audio_s * 16000), np.float32) + 0.01)
    return clip, wav


def test_build_input_resamples_to_25_fps(tmp_path):
    n, fps = 45, 30.0  # 1.5 s at 30 fps -> 37 frames at 25 fps
    clip, wav = _clip_and_wav(tmp_path, n, fps, 1.5)
    times = 2.0 + np.arange(n) / fps
    x = asd.build_input(clip, wav, times, 2.0, 2.0 + n / fps, size=224, padding=0.35)
    assert x.faces.shape == (37, 112, 112) and x.mfcc.shape == (148, 13)
    # the 25 fps frame k shows the clip frame on screen at 2 + k/25
    expect = np.floor(np.arange(37) / 25 * fps + 1e-6).astype(int)
    levels = x.faces[:, 56, 56].astype(int)
    assert np.all(np.abs(levels - (10 + 3 * expect)) <= 3), (levels, expect)
    back = asd.to_frames(x.times, np.arange(37, dtype=float), times)
    assert len(back) == n and back[0] == 0 and back[-1] == 36


def test_bad_tracks_get_explicit_reasons(tmp_path):
    clip, wav = _clip_and_wav(tmp_path, 45, 30.0, 1.5)
    times = np.arange(45) / 30.0
    with pytest.raises(asd.AsdInputError) as e:
        asd.build_input(clip, None, times, 0.0, 1.5, size=224, padding=0.35)
    assert e.value.reason == "no_audio"
    with pytest.raises(asd.AsdInputError) as e:  # 0.3 s: under the model's shortest window
        asd.build_input(clip, wav, times[:9], 0.0, 0.3, size=224, padding=0.35)
    assert e.value.reason == "too_short"
    short = tmp_path / "short.wav"
    from dsbuilder.audio import write_wav

    write_wav(short, np.zeros(3000, np.float32))  # audio ends long before the picture
    with pytest.raises(asd.AsdInputError) as e:
        asd.build_input(clip, short, times, 0.0, 1.5, size=224, padding=0.35)
    assert e.value.reason == "no_audio"


def test_probability_and_decision():
    from dsbuilder.speaker.sync import Gates
    from dsbuilder.stages import speakers

    times = np.arange(50) / 25
    logits = np.r_[np.full(20, -4.0), np.full(30, 4.0)]
    p = speakers.asd_probability(logits, None, smooth=5)
    assert p[0] < 0.05 and p[-1] > 0.95 and np.all(np.diff(p) >= 0)
    assert speakers.asd_decision(p, times, 2.0, 0.5, 1.0, Gates(), True) == (True, None)
    short = speakers.asd_probability(np.r_[np.full(45, -4.0), np.full(5, 4.0)], None, 1)
    assert speakers.asd_decision(short, times, 2.0, 0.5, 1.0, Gates(), True) == \
        (False, "not_speaking")
    assert speakers.asd_decision(short, times, 2.0, 0.5, 0.1, Gates(), True) == (False, "silent")
    assert speakers.asd_decision(p, times, 2.0, 0.5, 1.0, Gates(), False) == (False, "no_audio")
    # the model's run counts only where speech is heard: a moving mouth over silence is silent
    vad = np.zeros(50, bool)
    assert speakers.asd_decision(p, times, 2.0, 0.5, 1.0, Gates(), True, vad) == (False, "silent")
    vad[25:40] = True  # heard in half of the model's run (frames 20-49): it speaks
    assert speakers.asd_decision(p, times, 2.0, 0.5, 1.0, Gates(), True, vad) == (True, None)
    keep = speakers.speaking_runs(p, times, 2.0, 0.5, vad, 0.3)
    assert keep[~(p >= 0.5)].sum() == 0 and keep[p >= 0.5].all()
    assert not speakers.speaking_runs(p, times, 2.0, 0.5, vad, 0.9).any()


# --- real media ------------------------------------------------------------------------------------

def _run(tmp: Path, name: str, people: dict, video: Path, extra: str = ""):
    from dsbuilder import pipeline
    from dsbuilder.manifest.io import read_table
    from dsbuilder.recipe import load_recipe
    from dsbuilder.workspace import Workspace

    lines = [f"name: {name}", "people:"]
    for i, (pid, photos) in enumerate(people.items()):
        lines.append(f"  - id: {pid}\n    photos: [{', '.join(str(p) for p in photos)}]")
        if i == 0:
            lines.append(f"    videos: [{video}]")
    (tmp / f"{name}.yaml").write_text("\n".join(lines) + "\n" + extra)
    recipe = load_recipe(tmp / f"{name}.yaml", tmp / f"ws-{name}")
    ws = Workspace.open(tmp / f"ws-{name}")
    pipeline.run(recipe, ws, pipeline.plan(until="speakers"), progress=False)
    tracks = {t["track_id"]: t for t in read_table(ws, "tracks").to_pylist()}
    frames = read_table(ws, "speaking_frames").to_pylist()
    out = {}
    for tid, t in tracks.items():
        mine = [f for f in frames if f["track_id"] == tid]
        if mine:
            out[tid] = (t, float(np.mean([f["speaking_prob"] >= 0.5 for f in mine])),
                        {f["speech_id"] for f in mine})
    return ws, out


@pytest.mark.realmedia
def test_real_speakers_decided_by_light_asd(shared_media, weights, tmp_path):
    """Lin's close-up >= 90 % speaking, the audience 0 % (scored only because match_threshold 1.5
    makes every face "a target" in this throw-away workspace), a silent face 0 %, the same face with
    an unrelated real voice laid over it <= 5 %."""
    import cv2

    from dsbuilder.audio import read_audio
    from dsbuilder.manifest.io import read_table
    from dsbuilder.media import iter_frames
    from dsbuilder.synth import dub_video

    ham = shared_media / "video" / "short_hamilton_clip.mp4"
    single = shared_media / "video" / "single_face.mp4"
    ppl = shared_media / "people"
    ws, res = _run(tmp_path, "ham", {"lin": [ppl / "lin-manuel-miranda.png"]}, ham,
                   "stages:\n  faces: {match_threshold: 1.5}\n")
    speech = read_table(ws, "speech").to_pylist()
    assert speech and all(s["scorer"] == "light-asd" for s in speech)
    close = [v for v in res.values() if 3.5 <= v[0]["start_s"] and v[0]["end_s"] <= 8.0
             and v[0]["n_frames"] >= 60]
    crowd = [v for v in res.values() if v[0]["start_s"] >= 7.8]
    assert close and close[0][1] >= 0.9, res
    assert crowd and crowd[0][1] == 0.0, res

    for _, t, img in iter_frames(single):
        if t >= 0.3:
            cv2.imwrite(str(tmp_path / "man.jpg"), img)
            break
    _, res = _run(tmp_path, "silent", {"man": [tmp_path / "man.jpg"]}, single)
    assert res and all(v[1] == 0.0 for v in res.values()), res
    voice, _ = read_audio(ham, start_s=3.6, end_s=6.1)
    dub_video(single, tmp_path / "dub.mp4", voice)
    _, res = _run(tmp_path, "dub", {"man": [tmp_path / "man.jpg"]}, tmp_path / "dub.mp4")
    assert res and all(v[1] <= 0.05 for v in res.values()), res
