"""Bad input, one file of each kind in one recipe: each ends as a rejection row with the right reason
or is processed correctly, the run as a whole succeeds, and the manifests validate."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from conftest import run_cli
from dsbuilder import pipeline, synth
from dsbuilder.manifest.io import read_table
from dsbuilder.manifest.qa import validate
from dsbuilder.media import probe
from dsbuilder.recipe import load_recipe
from dsbuilder.workspace import Workspace


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    small = dict(size=(96, 128))
    files = {name: d / name for name in (
        "corrupt.mp4", "zero.mp4", "audio-only.m4a", "no-audio.mp4", "hevc.mp4", "fast120.mp4",
        "vfr.mp4", "not-media.mp4")}
    good = d / "good.mp4"
    synth.write_video(good, synth.standard_shots(2, 20), **small)
    data = good.read_bytes()
    # a real video with its middle overwritten: the header is fine, the frames are garbage
    files["corrupt.mp4"].write_bytes(data[:48] + os.urandom(len(data) - 48))
    files["zero.mp4"].write_bytes(b"")
    synth.write_audio_only(files["audio-only.m4a"])
    synth.write_video(files["no-audio.mp4"], synth.standard_shots(2, 20), audio=None, **small)
    synth.write_video(files["hevc.mp4"], synth.standard_shots(2, 20), codec="libx265", **small)
    synth.write_video(files["fast120.mp4"], synth.standard_shots(2, 60), fps=120, **small)
    synth.write_video(files["vfr.mp4"], synth.standard_shots(3, 20), vfr_fps=[30, 24, 15], **small)
    files["not-media.mp4"].write_text("<html>this is a web page saved with a video name</html>\n")
    return files


def test_each_bad_input_is_a_rejection_or_processed(tmp_path, bad_media):
    assert probe(bad_media["hevc.mp4"]).video_codec == "hevc"
    assert probe(bad_media["fast120.mp4"]).fps == pytest.approx(120)
    assert probe(bad_media["vfr.mp4"]).variable_frame_rate
    recipe_path = tmp_path / "r.yaml"
    videos = "\n".join(f"      - {{path: {p}, licence: CC0}}" for p in bad_media.values())
    recipe_path.write_text(textwrap.dedent("""\
        name: bad
        people:
          - id: someone
            videos:
        """) + videos + "\nstages: {scrape: {min_interval_s: 0}, shots: {min_shot_s: 0.2}}\n")
    recipe = load_recipe(recipe_path, workspace=tmp_path / "ws")
    ws = Workspace.open(recipe.workspace)
    pipeline.run(recipe, ws, pipeline.plan(until="shots"), progress=False)
    assert validate(ws)[0] == []

    sources = read_table(ws, "sources").to_pylist()
    by_request = {Path(r["request"]).name: r for r in sources}
    rejections = read_table(ws, "rejections").to_pylist()
    reason_of = {}
    for rej in rejections:
        src = next((s for s in sources if s["source_id"] == rej["source_id"]), None)
        name = Path(src["request"]).name if src else None
        if name is None:  # rejected before any content: find it by the request id
            name = next(Path(p).name for p in map(str, bad_media.values())
                        if rej["detail"].find(Path(p).name) >= 0)
        reason_of.setdefault(name, set()).add((rej["stage"], rej["reason"]))

    assert reason_of["corrupt.mp4"] & {("scrape", "unsupported_media"), ("shots", "decode_error")}
    assert reason_of["zero.mp4"] == {("scrape", "unsupported_media")}
    assert reason_of["not-media.mp4"] == {("scrape", "unsupported_media")}
    assert reason_of["audio-only.m4a"] == {("scrape", "unsupported_media")}
    assert reason_of["no-audio.mp4"] == {("scrape", "no_audio")}
    shots = read_table(ws, "shots").to_pylist()
    for name, n_shots in (("hevc.mp4", 2), ("fast120.mp4", 2), ("vfr.mp4", 3)):
        assert by_request[name]["status"] == "ok", name
        got = [s for s in shots if s["source_id"] == by_request[name]["source_id"]]
        assert len(got) == n_shots, name
        assert name not in reason_of
    vfr = sorted((s for s in shots if s["source_id"] == by_request["vfr.mp4"]["source_id"]),
                 key=lambda s: s["start_frame"])
    # shot 2 starts after 20 frames at 30 fps, shot 3 after 20 more at 24 fps
    assert [round(s["start_s"], 4) for s in vfr] == [0.0, round(20 / 30, 4),
                                                     round(20 / 30 + 20 / 24, 4)]


def test_bad_recipes_leave_no_manifest(tmp_path):
    ws = tmp_path / "ws"
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: t\npeople: [{id: a, vidoes: [x.mp4]}]\n")
    res = run_cli("run", str(typo), "-w", str(ws))
    assert res.returncode == 2 and "'vidoes'" in res.stderr and "did you mean 'videos'" in res.stderr
    missing = tmp_path / "missing.yaml"
    missing.write_text("name: t\npeople: [{id: a, videos: [nowhere/clip.mp4]}]\n")
    res = run_cli("run", str(missing), "-w", str(ws))
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert not ws.exists()
