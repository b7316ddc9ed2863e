"""The speaking preview (dsbuilder.speaker.preview): face clip + speaking-score chart + the track's audio.

The workspace comes from the real stages (shots, faces, speakers) run on a generated talking face: Grace
Hopper's portrait, silent with the mouth closed for 1.5 s, then speaking 3.5 s with the mouth warped open
by the speech envelope (test_speakers' helpers), identified by test_faces' dictionary.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_faces import add_video, dictionary_rows
from test_speakers import FPS, SR, _write_clip, open_mouth, syllabic_speech

from dsbuilder import synth
from dsbuilder.config import stage_defaults
from dsbuilder.errors import DsbuilderError
from dsbuilder.face import api
from dsbuilder.manifest.io import read_table, table_path, write_table
from dsbuilder.recipe import Recipe
from dsbuilder.speaker import preview
from dsbuilder.speaker.preview import tracks_of, write_speaking_preview
from dsbuilder.stages import faces as faces_stage
from dsbuilder.stages import shots as shots_stage
from dsbuilder.stages import speakers
from dsbuilder.workspace import Workspace

SILENT_S, TALK_S = 1.5, 3.5


def talking_video(path: Path) -> None:
    """256x300 at 24 fps: silent and still for SILENT_S, then speech with the mouth following it."""
    import cv2

    img = synth.grace_hopper()
    lm = api.landmarks(img, api.detect(img)[0].box)
    img = cv2.resize(img, (256, 300), interpolation=cv2.INTER_AREA)
    lm = lm * np.array([256 / 512, 300 / 600], np.float32)
    sig, env = syllabic_speech(TALK_S, seed=1)
    pad = np.zeros(int(SILENT_S * SR), np.float32)
    audio, env = np.concatenate([pad, sig]), np.concatenate([pad, env])
    times = np.arange(int((SILENT_S + TALK_S) * FPS)) / FPS
    level = np.array([env[max(0, int((t - 0.5 / FPS) * SR)):int((t + 0.5 / FPS) * SR)].mean()
                      for t in times])
    width = lm[54, 0] - lm[48, 0]
    pics = [open_mouth(img, lm, v / level.max() * 0.45 * width) for v in level]
    _write_clip(path, {"pics": pics}, audio)


@pytest.fixture(scope="module")
def speaking_ws(tmp_path_factory) -> tuple[Workspace, str]:
    root = tmp_path_factory.mktemp("speaking-preview")
    ws = Workspace.open(root / "ws")
    talking_video(root / "talk.mp4")
    write_table(ws, "sources", [add_video(ws, root / "talk.mp4", "src-talk")], "h")
    faces, people = dictionary_rows()
    write_table(ws, "faces_dictionary", faces, "h")
    write_table(ws, "people", people, "h")
    recipe = Recipe(path=root / "r.yaml", name="t", workspace=ws.root, people=[], licences={},
                    limits={}, stages={s: stage_defaults(s) for s in ("shots", "faces", "speakers")})
    shots_stage.run(recipe, ws, progress=False)
    faces_stage.run(recipe, ws, progress=False)
    speakers.run(recipe, ws, progress=False)
    kept = tracks_of(ws, "src-talk")
    assert len(kept) == 1, read_table(ws, "tracks").to_pylist()
    speech = read_table(ws, "speech").to_pylist()
    assert any(s["speaking"] for s in speech) and not all(s["speaking"] for s in speech), speech
    return ws, kept[0]


# --- helpers -------------------------------------------------------------------------------------

def decode(path: Path) -> tuple[list[np.ndarray], list[float], dict]:
    """RGB frames, their times, and the audio stream's facts (None: no audio stream)."""
    import av

    with av.open(str(path)) as c:
        frames, times = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return frames, times, None
        a = c.streams.audio[0]
        facts = {"codec": a.codec_context.name, "rate": a.codec_context.sample_rate,
                 "duration": float(a.duration * a.time_base)}
        facts["samples"] = sum(f.samples for f in c.decode(audio=0))
    return frames, times, facts


def crop_frames(ws: Workspace, track: dict) -> list[np.ndarray]:
    from dsbuilder.media import iter_frames

    return [img for _, _, img in iter_frames(ws.abspath(track["crop_path"]), fmt="rgb24")]


def track_row(ws: Workspace, track_id: str) -> dict:
    return next(t for t in read_table(ws, "tracks").to_pylist() if t["track_id"] == track_id)


def plot_region(img: np.ndarray, crop_h: int) -> np.ndarray:
    y = crop_h + preview.TEXT_H
    return img[y:y + preview.PLOT_H].astype(int)


def is_green(px: np.ndarray) -> np.ndarray:  # preview.SPEAKING after yuv420p
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    return (g - r > 80) & (g - b > 60)


def is_orange(px: np.ndarray) -> np.ndarray:  # preview.NOT_SPEAKING
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    return (r - g > 50) & (r - b > 100) & (g > 80)


def bar_height(plot: np.ndarray) -> np.ndarray:
    """Per column, the pixels bright enough to be a bar (luma is not subsampled, unlike colour)."""
    luma = plot @ np.array([0.299, 0.587, 0.114])
    return (luma > 90).sum(axis=0)


def steady(prob: np.ndarray) -> np.ndarray:
    """Columns whose neighbours show the same value: yuv420p shares colour between pixel pairs."""
    same = np.ones(len(prob), bool)
    same[1:] &= prob[1:] == prob[:-1]
    same[:-1] &= prob[:-1] == prob[1:]
    return same


def cursor_x(img: np.ndarray, crop_h: int) -> int:
    """The column of the white cursor: the one with the most near-white pixels in the plot."""
    white = (plot_region(img, crop_h) > 200).all(axis=-1).sum(axis=0)
    assert white.max() > 0.8 * preview.PLOT_H
    return int(np.argmax(white))


def column_probs(ws: Workspace, track: dict, width: int) -> np.ndarray:
    """speaking_prob of the frame shown at each chart column (x = time since the track's start)."""
    frames = {f["frame_id"]: f for f in read_table(ws, "frames").to_pylist()}
    rows = sorted(((frames[s["frame_id"]]["t"] - track["start_s"], s["speaking_prob"])
                   for s in read_table(ws, "speaking_frames").to_pylist()
                   if s["track_id"] == track["track_id"]))
    t = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows])
    centres = (np.arange(width) + 0.5) / width * (track["end_s"] - track["start_s"])
    return p[np.clip(np.searchsorted(t, centres, side="right") - 1, 0, len(p) - 1)]


# --- tests ---------------------------------------------------------------------------------------

def test_preview_has_every_crop_frame_the_face_clip_and_the_tracks_audio(speaking_ws, tmp_path):
    ws, tid = speaking_ws
    tr = track_row(ws, tid)
    out = write_speaking_preview(ws, tid, tmp_path / "p.mp4")
    assert out == tmp_path / "p.mp4" and sorted(tmp_path.iterdir()) == [out]  # no temporaries left
    frames, times, audio = decode(out)
    crops = crop_frames(ws, tr)
    n_rows = sum(f["track_id"] == tid for f in read_table(ws, "frames").to_pylist())
    assert len(frames) == len(crops) == n_rows == tr["n_frames"]
    assert times == pytest.approx(sorted(times)) and times[0] == pytest.approx(0.0)
    assert times[-1] == pytest.approx((tr["n_frames"] - 1) / FPS, abs=1e-3)
    # the picture is the stored face clip (the source video is never read)
    ch, cw = crops[0].shape[:2]
    assert frames[0].shape[1] == max(cw, preview.MIN_WIDTH) and frames[0].shape[0] > ch
    for k in (0, len(frames) // 2, len(frames) - 1):
        diff = np.abs(frames[k][:ch, :cw].astype(int) - crops[k].astype(int)).mean()
        assert diff < 4, (k, diff)
    # the track's wav, as AAC
    duration = tr["end_s"] - tr["start_s"]
    assert audio is not None and audio["codec"] == "aac" and audio["rate"] == SR
    assert audio["duration"] == pytest.approx(duration, abs=0.1)
    assert audio["samples"] / SR == pytest.approx(duration, abs=0.1)


def test_cursor_moves_and_bars_show_the_speaking_score(speaking_ws, tmp_path):
    ws, tid = speaking_ws
    tr = track_row(ws, tid)
    frames, _, _ = decode(write_speaking_preview(ws, tid, tmp_path / "p.mp4"))
    ch, width = crop_frames(ws, tr)[0].shape[0], frames[0].shape[1]
    xs = [cursor_x(f, ch) for f in frames]
    assert xs[0] <= 1 and xs[-1] >= width - 4 and np.all(np.diff(xs) >= 0)
    assert len(set(xs)) > 0.8 * len(frames)  # one step per frame, roughly
    # the chart (away from the cursor, which is at the left edge in frame 0): a green bar of height
    # speaking_prob where the stage says the frame is speaking, no bar where it is silent
    plot = plot_region(frames[0], ch)
    green = is_green(plot).sum(axis=0)[4:]
    prob = column_probs(ws, tr, width)[4:]
    assert (prob >= 0.5).any() and (prob < 0.5).any()
    assert np.corrcoef(green, prob)[0, 1] > 0.95
    on, off = steady(prob) & (prob >= 0.5), steady(prob) & (prob < 0.2)
    assert (green[on] >= 0.9 * preview.PLOT_H * prob[on]).all()
    assert (green[off] == 0).all()
    # the text of the current frame: orange in the silent start, green while speaking
    line2 = slice(ch + 18, ch + 32)
    silent, talking = frames[int(0.5 * FPS)][line2], frames[int(4.0 * FPS)][line2]
    assert is_orange(silent.astype(int)).sum() > 20 and is_green(silent.astype(int)).sum() == 0
    assert is_green(talking.astype(int)).sum() > 20 and is_orange(talking.astype(int)).sum() == 0


def test_bar_height_and_colour_follow_any_speaking_prob(speaking_ws, tmp_path):
    """A ramp of probabilities written into a copy of the workspace: each column's bar is prob *
    plot height, orange below the 0.5 threshold and green at or above it."""
    ws0, tid = speaking_ws
    ws = Workspace.open(shutil.copytree(ws0.root, tmp_path / "ws"))
    tr = track_row(ws, tid)
    index = {f["frame_id"]: f["frame_index"] for f in read_table(ws, "frames").to_pylist()}
    rows = sorted(read_table(ws, "speaking_frames").to_pylist(), key=lambda r: index[r["frame_id"]])
    for k, r in enumerate(rows):
        r["speaking_prob"], r["sync_confidence"] = k / (len(rows) - 1), None
        r["vad"] = k % 20 < 10
    write_table(ws, "speaking_frames", rows, "h")
    frames, _, _ = decode(write_speaking_preview(ws, tid, tmp_path / "ramp.mp4"))
    ch, width = crop_frames(ws, tr)[0].shape[0], frames[0].shape[1]
    plot = plot_region(frames[0], ch)
    prob = column_probs(ws, tr, width)[4:]
    green, orange = is_green(plot).sum(axis=0)[4:], is_orange(plot).sum(axis=0)[4:]
    height = bar_height(plot)[4:]
    assert np.corrcoef(height, prob)[0, 1] > 0.99
    assert np.abs(height - prob * preview.PLOT_H).max() <= 2
    hi, lo = prob >= 0.53, (prob < 0.47) & (prob > 0.05)
    assert (orange[hi] <= 2).all() and (green[hi] > 0).all()
    assert (green[lo] <= 2).all() and (orange[lo] > 0).all()
    # the VAD band under the plot follows the flags (blue where set)
    band = frames[0][ch + preview.TEXT_H + preview.PLOT_H + 2:
                     ch + preview.TEXT_H + preview.PLOT_H + 5].astype(int)
    blue = ((band[..., 2] - band[..., 0]) > 80).all(axis=0)
    assert 0.3 < blue.mean() < 0.7 and not blue.all()


def test_track_without_audio_gives_a_preview_without_audio(speaking_ws, tmp_path):
    ws0, tid = speaking_ws
    ws = Workspace.open(shutil.copytree(ws0.root, tmp_path / "ws"))
    tr = track_row(ws, tid)
    write_table(ws, "tracks", [{**tr, "audio_path": None, "audio_sha256": None}], "h")
    frames, _, audio = decode(write_speaking_preview(ws, tid, tmp_path / "mute.mp4"))
    assert audio is None and len(frames) == tr["n_frames"]


def test_tracks_of_takes_a_source_id_or_its_file(speaking_ws):
    ws, tid = speaking_ws
    src = read_table(ws, "sources").to_pylist()[0]
    assert tracks_of(ws, "src-talk") == [tid]
    assert tracks_of(ws, str(ws.abspath(src["local_path"]))) == [tid]
    # the recipe's own copy of the video (same content, another path)
    assert tracks_of(ws, str(ws.root.parent / "talk.mp4")) == [tid]
    with pytest.raises(DsbuilderError) as err:
        tracks_of(ws, "no-such-source")
    assert err.value.hint


def test_errors_name_the_problem_and_the_fix(speaking_ws, tmp_path):
    ws0, tid = speaking_ws
    with pytest.raises(DsbuilderError, match="unknown track 'nope'") as err:
        write_speaking_preview(ws0, "nope", tmp_path / "x.mp4")
    assert err.value.hint and not (tmp_path / "x.mp4").exists()

    # a copy of the workspace before the speakers stage, with a rejected track and one without a clip
    ws = Workspace.open(shutil.copytree(ws0.root, tmp_path / "ws"))
    for table in ("speech", "speaking_frames", "vad_segments"):
        table_path(ws, table).unlink()
    good = track_row(ws, tid)
    rejected = {**good, "track_id": "trk-rejected", "kept": False, "reason": "not_target",
                "crop_path": None, "audio_path": None}
    no_clip = {**good, "track_id": "trk-no-clip", "crop_path": "clips/missing.mp4"}
    write_table(ws, "tracks", [good, rejected, no_clip], "h")
    assert tracks_of(ws, "src-talk") == sorted([tid, "trk-no-clip"])
    with pytest.raises(DsbuilderError, match="rejected by the faces stage"):
        write_speaking_preview(ws, "trk-rejected", tmp_path / "x.mp4")
    with pytest.raises(DsbuilderError, match="has no face clip") as err:
        write_speaking_preview(ws, "trk-no-clip", tmp_path / "x.mp4")
    assert "dsbuilder faces" in err.value.hint
    with pytest.raises(DsbuilderError, match="no speakers output yet") as err:
        write_speaking_preview(ws, tid, tmp_path / "x.mp4")
    assert err.value.hint == "run `dsbuilder speakers RECIPE` first"
    # speakers output that does not cover the track (e.g. the faces stage ran again since)
    write_table(ws, "speech", [], "h")
    write_table(ws, "speaking_frames", [], "h")
    with pytest.raises(DsbuilderError, match="has no speaking scores") as err:
        write_speaking_preview(ws, tid, tmp_path / "x.mp4")
    assert "dsbuilder speakers RECIPE" in err.value.hint
    assert list(tmp_path.glob("*.mp4")) == [] and list(tmp_path.glob(".*.tmp")) == []


def test_cli_show_writes_one_preview_per_kept_track(speaking_ws, tmp_path):
    from conftest import run_cli

    ws, tid = speaking_ws
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\npeople:\n  - id: grace\n")
    r = run_cli("speakers", str(recipe), "-w", str(ws.root), "--show", "src-talk",
                "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out" / f"{tid}.speakers.mp4"
    assert f"preview: {out}" in r.stdout
    frames, _, _ = decode(out)
    assert len(frames) == track_row(ws, tid)["n_frames"]
    r = run_cli("speakers", str(recipe), "-w", str(ws.root), "--show", "nothing-like-this")
    assert r.returncode == 1 and "no source" in r.stderr and "hint:" in r.stderr
