"""The speakers stage: streaming audio, VAD, mouth motion, sync scoring, voice check.

Synthetic ground truth: Grace Hopper's still portrait with the mouth warped open in proportion to the
envelope of a generated syllabic speech signal; landmarks come from real detection on every frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsbuilder import synth
from dsbuilder.audio import (AudioChunk, frame_features, iter_audio, read_audio, speech_ratio,
                             vad_segments, webrtc_vad_flags, write_wav)
from dsbuilder.config import stage_defaults
from dsbuilder.face import api
from dsbuilder.manifest.io import read_table, write_table
from dsbuilder.recipe import Recipe
from dsbuilder.speaker import Gates, decide, mouth_features
from dsbuilder.speaker.voice import (MfccEmbedder, consensus_distances, load_embedder,
                                     resemblyzer_weights, voice_outliers)
from dsbuilder.stages import speakers
from dsbuilder.workspace import Workspace

SR = 16000
FPS = 24.0  # 0.5 s = 12 frames, inside the +-15 searched
DUR = 6.0
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def syllabic_speech(duration: float, seed: int, sr: int = SR) -> tuple[np.ndarray, np.ndarray]:
    """Voiced harmonics (random f0 110-200 Hz with vibrato) gated by random syllables (80-300 ms)
    and pauses (50-350 ms): unlike synth.speech_like's periodic 4 Hz envelope, a shift by 0.5 s is
    not another alignment. Returns (signal, envelope)."""
    rng = np.random.default_rng(seed)
    n = int(duration * sr)
    env = np.zeros(n, np.float32)
    t = 0.1
    while t < duration:
        length, amp = rng.uniform(0.08, 0.3), rng.uniform(0.5, 1.0)
        i0, i1 = int(t * sr), min(n, int((t + length) * sr))
        if i1 > i0:
            env[i0:i1] = amp * np.sin(np.pi * np.linspace(0, 1, i1 - i0)) ** 1.5
        t += length + rng.uniform(0.05, 0.35)
    tt = np.arange(n) / sr
    f0 = rng.uniform(110, 200) + 25 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * tt)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.3 * voiced * env / 1.6).astype(np.float32), env


def open_mouth(img: np.ndarray, lm: np.ndarray, opening: float) -> np.ndarray:
    """Move everything below the lip line down by ``opening`` px (tapering to 0 at the chin and
    across the mouth) with cv2.remap, and darken the gap that opens between the lips."""
    import cv2

    h, w = img.shape[:2]
    y0 = float(np.mean(lm[[62, 66], 1]))
    cx, hw = (lm[48, 0] + lm[54, 0]) / 2, (lm[54, 0] - lm[48, 0]) / 2 * 1.1
    chin = lm[8, 1] + 5
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    taper = np.clip(1 - ((xs - cx) / (hw * 1.3)) ** 2, 0, 1)
    o = opening * taper
    below = ys >= y0
    frac = np.clip((chin - ys) / (chin - y0), 0, 1)
    out = cv2.remap(img, xs, np.where(below, ys - o * frac, ys).astype(np.float32), cv2.INTER_LINEAR)
    gap = below & (ys < y0 + o * 0.85) & (taper > 0.15)
    out[gap] = (out[gap] * 0.15 + np.array([40, 10, 10]) * 0.85).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def clip():
    """Frames' times, detected landmarks/yaw/boxes, and the speech that drove the mouth."""
    import cv2

    img = synth.grace_hopper()
    det = api.detect(img)[0]
    lm0 = api.landmarks(img, det.box)
    img = cv2.resize(img, (256, 300), interpolation=cv2.INTER_AREA)
    lm0 = lm0 * np.array([256 / 512, 300 / 600], np.float32)
    sig, env = syllabic_speech(DUR, seed=1)
    n = int(DUR * FPS)
    times = np.arange(n) / FPS
    level = np.array([env[max(0, int((t - 0.5 / FPS) * SR)):int((t + 0.5 / FPS) * SR)].mean()
                      for t in times])
    width = lm0[54, 0] - lm0[48, 0]
    lms, yaws, boxes, pics = [], [], [], []
    for k in range(n):
        frame = open_mouth(img, lm0, level[k] / level.max() * 0.45 * width)
        d = api.detect(frame)
        assert d, f"no face found in synthetic frame {k}"
        lm = api.landmarks(frame, d[0].box)
        lms.append(lm)
        yaws.append(api.yaw_pitch(lm)[0])
        boxes.append(d[0].box)
        if k % 12 == 0:
            pics.append(frame)
    return {"times": times, "lm": np.array(lms), "yaw": np.array(yaws),
            "box": np.array(boxes, np.float32), "sig": sig, "level": level, "pics": pics}


def shifted(sig: np.ndarray, seconds: float) -> np.ndarray:
    k = int(round(abs(seconds) * SR))
    z = np.zeros(k, np.float32)
    return (np.concatenate([z, sig])[:len(sig)] if seconds > 0 else np.concatenate([sig[k:], z]))


def judge(clip, audio: np.ndarray):
    segs = vad_segments([AudioChunk(0.0, audio, SR)])
    return speakers.score_track(clip["times"], clip["lm"], clip["yaw"], clip["box"], audio, 0.0, SR,
                                FPS, segs)


# --- library -------------------------------------------------------------------------------------

def test_detected_mouth_follows_the_warp(clip):
    m = mouth_features(clip["lm"], clip["yaw"], clip["box"])
    assert m.valid.all()
    assert np.corrcoef(m.inner, clip["level"])[0, 1] > 0.9  # real landmark detection sees the warp


def test_in_sync_speech_is_speaking_at_offset_zero(clip):
    r = judge(clip, clip["sig"])
    assert r["speaking"], r["reason"]
    assert abs(r["offset"]) <= 1
    assert r["confidence"] > 0.4
    assert sum(s["speaking"] for s in r["segments"]) >= 1
    prob = np.array(r["frames"]["prob"], float)
    vad = np.array(r["frames"]["vad"])
    assert prob[vad].mean() > 0.5 and prob[~vad].max() == 0.0


@pytest.mark.parametrize("delay", [0.5, -0.5])
def test_audio_shifted_half_a_second_reports_the_offset(clip, delay):
    r = judge(clip, shifted(clip["sig"], delay))
    expect = int(round(delay * FPS))  # +12: audio later than the picture
    assert abs(r["offset"] - expect) <= 1, r["offset"]
    assert r["confidence"] > 0.4
    assert not r["speaking"] and r["reason"] == "off_sync"


@pytest.mark.parametrize("seed", [2, 3, 4, 5])
def test_unrelated_speech_is_not_speaking(clip, seed):
    r = judge(clip, syllabic_speech(DUR, seed=seed)[0])
    assert not r["speaking"], r
    assert r["reason"] in ("not_speaking", "off_sync")


def test_silence_is_silent(clip):
    quiet = np.random.default_rng(0).normal(0, 1e-4, len(clip["sig"])).astype(np.float32)
    r = judge(clip, quiet)
    assert not r["speaking"] and r["reason"] == "silent" and r["vad_ratio"] < 0.05


def test_turned_or_hidden_mouth_frames_are_marked(clip):
    lm = clip["lm"].copy()
    lm[:10, 61:64, 1] += 40  # inner upper lip drawn below the lower one: a mis-fit / hidden mouth
    yaw = clip["yaw"].copy()
    yaw[10:20] = 80
    m = mouth_features(lm, yaw, clip["box"], max_yaw_deg=50)
    assert m.hidden[:10].all() and m.turned[10:20].all()
    assert not m.valid[:20].any() and m.valid[20:].all()
    assert np.isnan(m.signal()[:20]).all()


def test_decide_gate_order():
    from dsbuilder.speaker.sync import SyncResult

    g = Gates()
    r = SyncResult(0, 0.5, np.zeros(3), np.arange(-1, 2), np.zeros(4), 5, "x")
    assert decide(r, 0.9, 1.0, g, has_audio=False) == (False, "no_audio")
    assert decide(r, 0.1, 1.0, g) == (False, "silent")
    assert decide(r, 0.9, 0.2, g) == (False, "not_speaking")
    assert decide(r, 0.9, 1.0, g, mouth_motion=0.001) == (False, "not_speaking")
    r.offset = 9
    assert decide(r, 0.9, 1.0, g) == (False, "off_sync")


def test_iter_audio_streams_chunks_with_times(tmp_path):
    path = tmp_path / "v.mp4"
    synth.write_video(path, [synth.Shot(synth.texture(1), 100)], fps=25, audio="tone")
    chunks = list(iter_audio(path, chunk_s=1.0))
    assert all(len(c.samples) == SR for c in chunks[:-1]) and len(chunks) >= 4
    assert all(c.samples.dtype == np.float32 and c.rate == SR for c in chunks)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start_s == pytest.approx(a.end_s)
    total = sum(len(c.samples) for c in chunks) / SR
    assert total == pytest.approx(4.0, abs=0.15)
    part, t0 = read_audio(path, start_s=1.0, end_s=2.5)
    assert t0 == pytest.approx(1.0, abs=0.07) and len(part) / SR == pytest.approx(1.5, abs=0.07)
    ints = list(iter_audio(path, chunk_s=0.5, dtype="int16"))
    assert ints[0].samples.dtype == np.int16
    segs = vad_segments(iter_audio(path, chunk_s=0.37), aggressiveness=2)  # odd chunks: carry-over
    assert speech_ratio(segs, 0, 4) > 0.5
    silent = tmp_path / "s.mp4"
    synth.write_video(silent, [synth.Shot(synth.texture(1), 50)], fps=25, audio="silence")
    assert speech_ratio(vad_segments(iter_audio(silent)), 0, 2) == 0.0
    with pytest.raises(Exception) as err:
        noaud = tmp_path / "n.mp4"
        synth.write_video(noaud, [synth.Shot(synth.texture(1), 10)], audio=None)
        list(iter_audio(noaud))
    assert getattr(err.value, "reason", None) == "no_audio"


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
@pytest.mark.parametrize("mode", [0, 3])
def test_webrtc_vad_frames_and_aggressiveness(frame_ms, mode):
    sig, env = syllabic_speech(3.0, seed=7)
    flags = webrtc_vad_flags(sig, SR, frame_ms, mode)
    assert len(flags) == int(3.0 * 1000 / frame_ms)
    loud = np.array([env[i * SR * frame_ms // 1000:(i + 1) * SR * frame_ms // 1000].mean() > 0.3
                     for i in range(len(flags))])
    assert flags[loud].mean() > 0.8
    assert not webrtc_vad_flags(np.zeros(SR, np.float32), SR, frame_ms, mode).any()


def test_silero_vad_onnx_when_installed():
    from dsbuilder.audio import SileroVAD

    if not SileroVAD.available():
        pytest.skip("silero-vad not installed (optional: pip install --no-deps silero-vad)")
    sig, _ = syllabic_speech(3.0, seed=7)
    ratio = speech_ratio(vad_segments([AudioChunk(0, sig, SR)], method="silero"), 0, 3)
    quiet = speech_ratio(vad_segments([AudioChunk(0, np.zeros(3 * SR, np.float32), SR)],
                                      method="silero"), 0, 3)
    assert quiet == 0.0 and 0.0 <= ratio <= 1.0


def test_frame_features_shape_and_edges():
    sig, _ = syllabic_speech(2.0, seed=3)
    times = np.arange(-2, 52) / 25
    f = frame_features(sig, SR, 0.0, times, 25)
    assert f.shape == (len(times), 4)
    assert np.isnan(f[:3]).all() and np.isfinite(f[5:45]).all()


@pytest.mark.parametrize("kind", ["mfcc", "resemblyzer"])
def test_voice_embedding_consensus_flags_another_voice(kind):
    if kind == "resemblyzer" and resemblyzer_weights() is None:
        pytest.skip("Resemblyzer weights not installed; MFCC fallback tested")
    emb = load_embedder(kind)
    same = [emb.embed(syllabic_speech(2.0, seed=s)[0] * 0 + _voice(s, f0=120)) for s in range(5)]
    other = emb.embed(_voice(99, f0=230, bright=True))
    d = consensus_distances(same + [other])
    assert d[-1] > d[:-1].max()
    flags = voice_outliers(d, max_distance=0.0, mad_k=3.0, min_segments=3)
    assert flags[-1] and not flags[:-1].any()
    assert not voice_outliers(d[:2], 0.0, min_segments=3).any()


def _voice(seed: int, f0: float, bright: bool = False) -> np.ndarray:
    """A synthetic 'voice': harmonics with a fixed spectral tilt (the timbre) and random syllables."""
    rng = np.random.default_rng(seed)
    _, env = syllabic_speech(2.0, seed=seed)
    t = np.arange(len(env)) / SR
    ph = 2 * np.pi * np.cumsum(f0 + 10 * np.sin(2 * np.pi * rng.uniform(0.3, 1) * t)) / SR
    tilt = 0.5 if bright else 1.6
    x = sum(np.sin(k * ph) / k ** tilt for k in range(1, 20))
    return (0.2 * x * env / np.abs(x).max()).astype(np.float32)


def test_resemblyzer_encoder_or_why_not():
    """The pretrained encoder is used when installed; otherwise say why MFCC statistics are used."""
    if resemblyzer_weights() is None:
        assert isinstance(load_embedder("auto"), MfccEmbedder)
        pytest.skip("Resemblyzer weights not installed (pip install torch==2.13.0 and "
                    "pip install --no-deps resemblyzer==0.1.4): the MFCC fallback is in use")
    emb = load_embedder("resemblyzer")
    e = emb.embed(_voice(1, 120))
    assert e.shape == (256,) and abs(np.linalg.norm(e) - 1) < 1e-4


# --- the stage -----------------------------------------------------------------------------------

def make_ws(tmp_path: Path, clip, audio: np.ndarray) -> tuple[Recipe, Workspace]:
    ws = Workspace.open(tmp_path / "ws")
    vid = ws.raw / "videos" / "vid1.mp4"
    vid.parent.mkdir(parents=True, exist_ok=True)
    _write_clip(vid, clip, audio)
    wav = ws.root / "clips" / "trk1.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    write_wav(wav, audio)
    write_table(ws, "sources", [{
        "source_id": "vid1", "kind": "video", "status": "ok", "person_ids": ["grace"],
        "request_ids": ["req-1"], "sha256": "x" * 64, "local_path": ws.relpath(vid), "fps": FPS,
        "has_audio": True}], "h")
    n = len(clip["times"])
    write_table(ws, "tracks", [{
        "track_id": "trk1", "source_id": "vid1", "shot_id": "vid1-shot0000", "person_id": "grace",
        "start_frame": 0, "end_frame": n, "start_s": 0.0, "end_s": n / FPS, "n_frames": n,
        "n_detections": n, "n_embeddings": 5, "mean_face_px": 120.0, "kept": True,
        "audio_path": ws.relpath(wav), "audio_sha256": str(hash(audio.tobytes()))}], "h")
    write_table(ws, "frames", [{
        "frame_id": f"trk1-f{i}", "track_id": "trk1", "source_id": "vid1", "frame_index": i,
        "t": float(clip["times"][i]), "crop_frame": i, "bbox": clip["box"][i].tolist(),
        "landmarks": clip["lm"][i].reshape(-1).tolist(), "detected": True,
        "yaw": float(clip["yaw"][i]), "pitch": 0.0,
        "mouth_aperture": api.mouth_aperture(clip["lm"][i])} for i in range(n)], "h")
    recipe = Recipe(path=tmp_path / "r.yaml", name="t", workspace=ws.root, people=[], licences={},
                    limits={}, stages={"speakers": {**stage_defaults("speakers"), "scorer": "correlation"}})
    return recipe, ws


def _write_clip(path: Path, clip, audio: np.ndarray) -> None:
    """A short mp4 whose audio is ``audio`` (the stage's VAD reads the source video)."""
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=int(FPS))
        vs.width, vs.height, vs.pix_fmt = 256, 300, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        ast = out.add_stream("aac", rate=SR, layout="mono")
        for pic in clip["pics"]:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(pic, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        size = ast.codec_context.frame_size or 1024
        for i in range(0, len(audio), size):
            c = audio[i:i + size]
            c = np.pad(c, (0, size - len(c)))
            fr = av.AudioFrame.from_ndarray(c[None, :], format="fltp", layout="mono")
            fr.sample_rate, fr.pts = SR, i
            for pkt in ast.encode(fr):
                out.mux(pkt)
        for pkt in ast.encode():
            out.mux(pkt)


@pytest.mark.parametrize("case", ["sync", "unrelated"])
def test_stage_tables_rejections_and_cache(tmp_path, clip, case):
    audio = clip["sig"] if case == "sync" else syllabic_speech(DUR, seed=3)[0]
    recipe, ws = make_ws(tmp_path, clip, audio)
    res = speakers.run(recipe, ws, progress=False)
    speech = read_table(ws, "speech").to_pylist()
    frames = read_table(ws, "speaking_frames").to_pylist()
    vad = read_table(ws, "vad_segments").to_pylist()
    rej = read_table(ws, "rejections").to_pylist()
    assert vad and any(v["speech"] for v in vad)
    assert speech and len(frames) == len(clip["times"])
    assert {f["speech_id"] for f in frames} <= {s["speech_id"] for s in speech}
    import json

    assert json.loads(speech[0]["gates"])["max_offset_frames"] == 5
    if case == "sync":
        kept = [s for s in speech if s["speaking"]]
        assert kept and all(abs(s["av_offset_frames"]) <= 1 for s in kept)
        assert all(s["voice_distance"] is not None for s in kept)
        assert sum(s["n_frames"] for s in kept) > 0.4 * len(clip["times"])
    else:
        assert not any(s["speaking"] for s in speech)
        assert {r["reason"] for r in rej} <= {"off_sync", "not_speaking"} and rej
        assert all(r["item_id"].startswith("trk1-s") for r in rej)
    before = {p.name: p.read_bytes() for p in ws.manifests.rglob("*.parquet")}
    again = speakers.run(recipe, ws, progress=False)
    assert again.computed == 0 and again.cached == res.computed
    assert before == {p.name: p.read_bytes() for p in ws.manifests.rglob("*.parquet")}


# --- real media ----------------------------------------------------------------------------------

def _real(name: str) -> Path:
    p = REAL / "video" / name
    if not p.is_file():
        pytest.skip(f"real media not found: {p} (a checkout without ../shared/media)")
    return p


def _landmarks(path: Path, t0: float, t1: float):
    """Detection + 68 landmarks of the largest face on every frame in [t0, t1): the scorer judged on
    exact spans, independent of what the faces stage keeps (it rejects the audience as not_target,
    so only this path scores an audience face)."""
    from dsbuilder.media import iter_frames

    T, L, Y, B = [], [], [], []
    for _, t, img in iter_frames(path, fmt="rgb24"):
        if t0 <= t < t1:
            d = api.detect(img)
            if d:
                lm = api.landmarks(img, d[0].box)
                T.append(t), L.append(lm), Y.append(api.yaw_pitch(lm)[0]), B.append(d[0].box)
    return np.array(T), np.array(L), np.array(Y), np.array(B, np.float32)


def _judge_real(path: Path, t0: float, t1: float):
    from dsbuilder.media import probe

    T, L, Y, B = _landmarks(path, t0, t1)
    audio, a0 = read_audio(path, start_s=t0, end_s=t1)
    segs = speakers.video_vad(path)
    return speakers.score_track(T, L, Y, B, audio, a0, SR, probe(path).fps, segs)


@pytest.mark.realmedia
def test_real_hamilton_lin_sings_and_audience_does_not():
    path = _real("short_hamilton_clip.mp4")
    lin = _judge_real(path, 3.6, 7.9)
    assert lin["speaking"], lin["reason"]
    assert abs(lin["offset"]) <= 5
    crowd = _judge_real(path, 7.9, 10.0)
    assert not crowd["speaking"], crowd


@pytest.mark.realmedia
def test_real_single_face_is_silent():
    path = _real("single_face.mp4")
    r = _judge_real(path, 0.0, 2.4)
    assert not r["speaking"] and r["reason"] == "silent"


@pytest.mark.realmedia
def test_real_hamilton_through_the_stages(hamilton_workspace):
    """scrape ... speakers on the real clip: Lin's kept close-up track (3.6-7.9 s) has speaking
    segments at a small offset over much of the shot, and no speech row belongs to anyone else."""
    ws = hamilton_workspace
    tracks = {t["track_id"]: t for t in read_table(ws, "tracks").to_pylist() if t["kept"]}
    close_up = [t for t in tracks.values() if t["person_id"] == "lin"
                and t["start_s"] >= 3.5 and t["end_s"] <= 8.0 and t["n_frames"] >= 60]
    assert close_up, tracks
    speech = read_table(ws, "speech").to_pylist()
    assert {s["track_id"] for s in speech} <= set(tracks)
    mine = [s for s in speech if s["track_id"] == close_up[0]["track_id"] and s["speaking"]]
    assert mine and all(abs(s["av_offset_frames"]) <= 5 for s in mine), speech
    assert sum(s["n_frames"] for s in mine) >= 0.4 * close_up[0]["n_frames"], mine
