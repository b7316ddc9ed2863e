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


# --- paths that try to leave the workspace or a listed folder (issue 14) ----------------------------

def test_manifest_paths_cannot_leave_the_workspace(tmp_path):
    from dsbuilder.errors import WorkspaceError
    from dsbuilder.takedown import delete_files
    from dsbuilder.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws")
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (ws.root / "clips").mkdir(exist_ok=True)
    (ws.root / "clips" / "a.mp4").write_bytes(b"x")
    (ws.root / "clips" / "link.mp4").symlink_to(outside)
    assert ws.abspath("clips/a.mp4") == (ws.root / "clips" / "a.mp4").resolve()
    for bad in ("../precious.txt", "clips/../../precious.txt", "clips/link.mp4", str(outside)):
        with pytest.raises(WorkspaceError):
            ws.abspath(bad)
    assert delete_files(ws, ["../precious.txt", "clips/link.mp4", "clips/a.mp4"]) == ["clips/a.mp4"]
    assert outside.read_text() == "keep me"


def test_listed_folder_skips_with_a_row_each(tmp_path):
    """Hidden files, other kinds of files, folders named like images, dangling symlinks and symlinks
    out of the folder are skipped, each with a rejection row; a symlink inside the folder is read."""
    from dsbuilder import synth
    from dsbuilder.manifest.io import read_table
    from dsbuilder.recipe import load_recipe
    from dsbuilder.stages import scrape
    from dsbuilder.workspace import Workspace

    photos = tmp_path / "photos"
    photos.mkdir()
    synth.write_photo(photos / "grace.jpg", synth.grace_hopper())
    (photos / "same.jpg").symlink_to(photos / "grace.jpg")  # inside: fine
    secret = tmp_path / "secret.jpg"
    synth.write_photo(secret, synth.astronaut())
    (photos / "escape.jpg").symlink_to(secret)
    (photos / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (photos / "folder.jpg").mkdir()
    (photos / ".hidden.jpg").write_bytes(b"x")
    (photos / "notes.txt").write_text("hello")
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(f"name: t\npeople:\n  - id: p\n    photos: [{photos}]\n")
    recipe = load_recipe(recipe_path, tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws")
    scrape.run(recipe, ws, progress=False)
    rej = read_table(ws, "rejections").to_pylist()
    reasons = sorted(r["reason"] for r in rej)
    # same.jpg (a link inside the folder) is read, and is grace.jpg again: a duplicate
    assert reasons == ["duplicate", "not_found", "outside_folder", "unsupported_media",
                       "unsupported_media", "unsupported_media"], rej
    assert any("symlink leading out" in r["detail"] for r in rej)
    sources = read_table(ws, "sources").to_pylist()
    ok = [s for s in sources if s["status"] == "ok"]
    assert ok and all("secret" not in (s["url"] or "") for s in sources)
    assert not any(s.get("sha256") == synth_sha(secret) for s in sources)


def synth_sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_small_file_declaring_a_huge_image_is_refused_before_decoding(tmp_path):
    """A 100-megapixel PNG of a few hundred KB: refused from its header (too_large), memory flat."""
    import resource
    import zlib

    from dsbuilder.manifest.io import read_table
    from dsbuilder.recipe import load_recipe
    from dsbuilder.stages import scrape
    from dsbuilder.workspace import Workspace

    photos = tmp_path / "photos"
    photos.mkdir()
    w = h = 10_000  # 100 MP, one grey channel, all zeros: compresses to almost nothing

    def chunk(kind: bytes, data: bytes) -> bytes:
        import struct

        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    import struct

    raw = zlib.compress(b"\0" * ((w + 1) * h), 9)
    (photos / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    assert (photos / "huge.png").stat().st_size < 1_000_000
    synth.write_photo(photos / "grace.jpg", synth.grace_hopper())
    (tmp_path / "r.yaml").write_text(f"name: t\npeople:\n  - id: p\n    photos: [{photos}]\n")
    recipe = load_recipe(tmp_path / "r.yaml", tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scrape.run(recipe, ws, progress=False)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    rej = [r for r in read_table(ws, "rejections").to_pylist() if r["reason"] == "too_large"]
    assert len(rej) == 1 and "100 MP" in rej[0]["detail"] and "not decoded" in rej[0]["detail"]
    assert grown_mb < 60, grown_mb  # a decoded 100 MP image would be 100+ MB
