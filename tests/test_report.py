"""The report stage: clips (the training view), splits that never share a video or a person, and the
audit report (JSON, HTML, dataset card), on the offline demo's workspace and on hand-made rows."""

from __future__ import annotations

import json

import pytest
from conftest import digest, run_cli

from dsbuilder import pipeline
from dsbuilder.errors import StageError
from dsbuilder.manifest.io import read_table, table_path
from dsbuilder.manifest.qa import validate
from dsbuilder.stages import report as report_stage


def clip(clip_id: str, person: str, video: str, seconds: float = 2.0) -> dict:
    return {"clip_id": clip_id, "person_id": person, "source_id": video, "duration_s": seconds}


def test_groups_join_videos_and_people_that_share_a_clip():
    clips = [clip("a1", "ann", "v1"), clip("a2", "ann", "v2"),  # ann in two videos
             clip("b1", "bob", "v2"),  # bob shares v2 with ann: one group
             clip("c1", "cat", "v3"), clip("c2", "cat", "v4")]
    groups = report_stage._groups(clips, "identity_and_video")
    assert groups["a1"] == groups["a2"] == groups["b1"] != groups["c1"] == groups["c2"]
    assert report_stage._groups(clips, "video") == {
        "a1": "video:v1", "a2": "video:v2", "b1": "video:v2", "c1": "video:v3", "c2": "video:v4"}
    assert set(report_stage._groups(clips, "identity").values()) == {
        "person:ann", "person:bob", "person:cat"}
    with pytest.raises(StageError):
        report_stage._groups(clips, "speaker")


@pytest.mark.parametrize("group_by", report_stage.GROUPINGS)
def test_splits_never_leak_and_follow_the_ratios(group_by):
    # 300 people, each in two videos of their own, one video shared by two people now and then
    clips = []
    for i in range(300):
        clips += [clip(f"p{i}-a", f"p{i}", f"v{i}a"), clip(f"p{i}-b", f"p{i}", f"v{i}b")]
        if i % 10 == 0:
            clips.append(clip(f"p{i}-x", f"p{i + 1}", f"v{i}a"))
    report_stage.assign_splits(clips, (0.8, 0.1, 0.1), group_by, seed=0)
    assert report_stage.check_leakage(clips, group_by) == []
    groups = {c["split_group"] for c in clips}
    share = {s: sum(1 for g in groups if report_stage.split_of(g, (0.8, 0.1, 0.1), 0) == s)
             / len(groups) for s in report_stage.SPLITS}
    assert share["train"] == pytest.approx(0.8, abs=0.06)
    assert share["val"] == pytest.approx(0.1, abs=0.05) and share["test"] == pytest.approx(0.1,
                                                                                           abs=0.05)


def test_a_group_keeps_its_split_when_the_dataset_grows():
    before = [clip(f"c{i}", f"p{i}", f"v{i}") for i in range(50)]
    report_stage.assign_splits(before, (0.6, 0.2, 0.2), "identity_and_video", seed=3)
    grown = [dict(c) for c in before] + [clip(f"n{i}", f"q{i}", f"w{i}") for i in range(50)]
    report_stage.assign_splits(grown, (0.6, 0.2, 0.2), "identity_and_video", seed=3)
    assert [c["split"] for c in grown[:50]] == [c["split"] for c in before]
    # another seed moves groups
    reseeded = [dict(c) for c in before]
    report_stage.assign_splits(reseeded, (0.6, 0.2, 0.2), "identity_and_video", seed=4)
    assert [c["split"] for c in reseeded] != [c["split"] for c in before]


def test_zero_ratios_leave_a_split_empty_and_bad_ratios_are_refused():
    clips = [clip(f"c{i}", f"p{i}", f"v{i}") for i in range(40)]
    report_stage.assign_splits(clips, (1.0, 0.0, 0.0), "video", seed=0)
    assert {c["split"] for c in clips} == {"train"}
    report_stage.assign_splits(clips, (0.0, 0.0, 1.0), "video", seed=0)
    assert {c["split"] for c in clips} == {"test"}
    for bad in ((0.0, 0.0, 0.0), (0.9, 0.2, -0.1), (0.5, 0.5)):
        with pytest.raises(StageError, match="ratios"):
            report_stage.assign_splits(clips, bad, "video", seed=0)


def test_pinned_videos_take_their_group_to_their_split():
    clips = [clip("a1", "ann", "v1"), clip("a2", "ann", "v2"), clip("b1", "bob", "v3")]
    clips += [clip(f"x{i}", f"p{i}", f"w{i}") for i in range(30)]
    free = [dict(c) for c in clips]
    report_stage.assign_splits(free, (0.8, 0.1, 0.1), "identity_and_video", seed=0)
    pins = {"v1": "test", "v3": "val"}
    report_stage.assign_splits(clips, (0.8, 0.1, 0.1), "identity_and_video", seed=0, pins=pins)
    by_id = {c["clip_id"]: c for c in clips}
    # v1 pins ann's whole group (v2 too), v3 pins bob; everyone else keeps the hash's split
    assert by_id["a1"]["split"] == by_id["a2"]["split"] == "test" and by_id["b1"]["split"] == "val"
    assert [c["split"] for c in clips[3:]] == [c["split"] for c in free[3:]]
    assert report_stage.check_leakage(clips, "identity_and_video") == []
    # two pins in one group cannot both hold
    with pytest.raises(StageError, match="cannot be in different splits") as e:
        report_stage.assign_splits(clips, (0.8, 0.1, 0.1), "identity_and_video", seed=0,
                                   pins={"v1": "test", "v2": "train"})
    assert "group_by: video" in e.value.hint
    report_stage.assign_splits(clips, (0.8, 0.1, 0.1), "video", seed=0,
                               pins={"v1": "test", "v2": "train"})
    assert (by_id["a1"]["split"], by_id["a2"]["split"]) == ("test", "train")


def test_source_pins_come_from_the_recipe_entries_that_led_to_a_source():
    sources = [{"source_id": "v1", "request_ids": ["req-a"]},
               {"source_id": "v2", "request_ids": ["req-a", "req-b"]},
               {"source_id": "v3", "request_ids": ["req-c"]}]
    assert report_stage.source_pins(sources, {"req-a": "test"}) == {"v1": "test", "v2": "test"}
    with pytest.raises(StageError, match="v2"):
        report_stage.source_pins(sources, {"req-a": "test", "req-b": "val"})


def test_check_leakage_names_the_clip_and_what_leaked():
    clips = [dict(clip("a", "ann", "v1"), split="train"), dict(clip("b", "ann", "v2"), split="test")]
    assert report_stage.check_leakage(clips, "video") == []
    (problem,) = report_stage.check_leakage(clips, "identity_and_video")
    assert "clips a" in problem and "person_id ann" in problem and "'test', 'train'" in problem


@pytest.fixture()
def demo_ws(demo_workspace):
    return demo_workspace


def test_clips_are_the_labelled_kept_tracks_with_their_lineage(demo_ws):
    """Each labelled kept track is cut into clips of min_clip_s..max_clip_s that tile it (or it is
    too short and has a rejection row); each clip names its frames in the track's crop files."""
    recipe, ws = demo_ws
    params = recipe.stage_params("report")
    clips = read_table(ws, "clips").to_pylist()
    labelled = {r["track_id"] for r in read_table(ws, "label_clips").to_pylist() if r["kept"]}
    too_short = {r["item_id"] for r in read_table(ws, "rejections").to_pylist()
                 if r["stage"] == "report" and r["reason"] == "too_short"}
    assert clips and {c["track_id"] for c in clips} | too_short == labelled
    tracks = {t["track_id"]: t for t in read_table(ws, "tracks").to_pylist()}
    sources = {s["source_id"]: s for s in read_table(ws, "sources").to_pylist()}
    for tid in {c["track_id"] for c in clips}:
        mine = sorted((c for c in clips if c["track_id"] == tid), key=lambda c: c["clip_index"])
        t = tracks[tid]
        assert [c["clip_index"] for c in mine] == list(range(len(mine)))
        assert mine[0]["crop_start_frame"] == 0 and mine[-1]["end_frame"] == t["end_frame"]
        assert all(a["end_frame"] == b["start_frame"] for a, b in zip(mine, mine[1:]))
        for c in mine:
            assert c["clip_id"] == f"{tid}-c{c['clip_index']:02d}"
            assert c["crop_end_frame"] - c["crop_start_frame"] == c["n_frames"]
            assert c["crop_start_frame"] == c["start_frame"] - t["start_frame"]
            assert c["crop_start_s"] == pytest.approx(c["start_s"] - t["start_s"])
            assert params["min_clip_s"] - 1e-6 <= c["duration_s"] <= params["max_clip_s"] + 1e-6
            assert c["ended_by"] in ("emotion", "speech", "max_length", "track_end")
    for c in clips:
        t = tracks[c["track_id"]]
        assert t["kept"] and c["person_id"] == t["person_id"] and c["video_path"] == t["crop_path"]
        assert (ws.root / c["video_path"]).is_file() and (ws.root / c["audio_path"]).is_file()
        assert c["licence"] == sources[c["source_id"]]["licence"]
        assert 0 <= c["speaking_s"] <= c["duration_s"] + 1e-6
        assert c["speaking"] == (c["speaking_s"] >= 0.5 * c["duration_s"])
        assert abs(sum(c["probs"]) - 1) < 1e-4 and c["split"] in report_stage.SPLITS
    assert validate(ws)[0] == []


def test_report_files_tell_where_every_clip_came_from_and_why_things_were_dropped(demo_ws):
    recipe, ws = demo_ws
    out = ws.root / "report"
    report = json.loads((out / "report.json").read_text())
    clips = read_table(ws, "clips").to_pylist()
    assert report["counts"]["clips"] == len(clips)
    assert [c["clip_id"] for c in report["clips"]] == [c["clip_id"] for c in clips]
    by_id = {s["source_id"]: s for s in report["sources"]}
    for c in report["clips"]:
        src = by_id[c["source_id"]]
        assert src["sha256"] and src["licence"] and src["fetched_at"] and src["tool_versions"]
    rejections = read_table(ws, "rejections").to_pylist()
    counted = sum(info["count"] for reasons in report["rejections"].values()
                  for info in reasons.values())
    assert rejections and counted == len(rejections)
    for r in rejections:
        info = report["rejections"][r["stage"]][r["reason"]]
        assert info["examples"]
    assert set(report["stages"]) == set(recipe.stages)
    assert report["splits"]["leakage"] == "none"
    # the demo holds one video in val and one in test: every split has clips and nothing warns
    realised = report["splits"]["realised"]
    assert all(realised[s]["clips"] for s in report_stage.SPLITS)
    assert report["splits"]["warnings"] == [] and report["splits"]["pinned"]
    assert report["counts"]["speaking_clips"] >= 1
    assert len(report["people"]) == 2 and all(p["clips"] for p in report["people"])
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    for c in clips:
        assert c["clip_id"] in page
    card = (out / "dataset_card.md").read_text()
    assert f"{len(clips)} clips" in card and "## Splits" in card
    for section in ("## Uses", "## Personal and sensitive information", "## Collection process",
                    "## Bias and limitations"):
        assert section in card, section
    assert "takedown" in card and "Out of scope" in card


def test_card_metadata_and_split_views_give_hugging_face_splits(demo_ws):
    """The card starts with a YAML block (license, task categories, size, configs whose data files
    are the per-split views), and each view holds exactly its split's clips."""
    import pyarrow.parquet as pq
    import yaml

    _, ws = demo_ws
    card = (ws.root / "report" / "dataset_card.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "other" and "video-classification" in meta["task_categories"]
    assert meta["size_categories"] == ["n<1K"]
    files = {d["split"]: d["path"] for d in meta["configs"][0]["data_files"]}
    assert set(files) == {"train", "validation", "test"}
    clips = read_table(ws, "clips").to_pylist()
    for hf, ours in (("train", "train"), ("validation", "val"), ("test", "test")):
        view = pq.read_table(ws.root / files[hf]).to_pylist()
        assert sorted(c["clip_id"] for c in view) == sorted(c["clip_id"] for c in clips
                                                            if c["split"] == ours)
        if not view:  # an empty split has no row group (HF datasets refuses an empty one)
            assert pq.ParquetFile(ws.root / files[hf]).metadata.num_row_groups == 0


def test_report_escapes_what_sources_say(demo_ws):
    recipe, ws = demo_ws
    tables, sizes = report_stage.read_inputs(ws)
    tables["sources"][0]["uploader"] = "<script>alert(1)</script>"
    params = recipe.stage_params("report")
    clips, _ = report_stage.clip_rows(tables["tracks"], tables["label_clips"], tables["speech"],
                                      tables["sources"], report_stage.read_labels(ws), params)
    report_stage.assign_splits(clips, (0.8, 0.1, 0.1), "identity_and_video", 0)
    page = report_stage.render_html(report_stage.build_report(recipe, tables, sizes, clips, params,
                                                              5, pins={}))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_rerun_writes_the_same_bytes(demo_ws):
    recipe, ws = demo_ws
    files = [table_path(ws, "clips"), *sorted(p for p in (ws.root / "report").rglob("*") if p.is_file())]
    before = [digest(f) for f in files]
    pipeline.run_stage("report", recipe, ws, progress=False)
    assert [digest(f) for f in files] == before


def test_cli_report_command(demo_ws):
    from conftest import run_cli

    recipe, ws = demo_ws
    r = run_cli("report", str(recipe.path), "-w", str(ws.root), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "report: " in r.stdout and "report.html" in r.stdout
    bad = recipe.path.with_name("bad.yaml")  # beside the demo's: its paths are relative
    bad.write_text(recipe.path.read_text().replace("group_by: video", "group_by: speaker", 1))
    r = run_cli("report", str(bad), "-w", str(ws.root))
    assert r.returncode == 2 and "group_by" in r.stderr


def test_html_lists_a_bounded_number_of_rows(demo_ws, monkeypatch):
    recipe, ws = demo_ws
    report = json.loads((ws.root / "report" / "report.json").read_text())
    report["clips"] = report["clips"] * 3
    monkeypatch.setattr(report_stage, "HTML_ROWS", 2)
    page = report_stage.render_html(report)
    assert f"The first 2 of {len(report['clips'])}" in page
    clips_section = page.split("<h2>Clips (lineage)</h2>")[1].split("<h2>")[0]
    assert clips_section.count("<tr>") == 1 + 2  # the header and two clips


@pytest.mark.realmedia
def test_real_hamilton_report(hamilton_workspace):
    """The whole pipeline on the real clip: Lin's clips (the close-up, where he sings, among them)
    are in one split with their video, the audience face's rejection is in the report with its
    detail, and the video's provenance is there."""
    ws = hamilton_workspace
    clips = read_table(ws, "clips").to_pylist()
    assert clips and {c["person_id"] for c in clips} == {"lin"}
    assert len({c["split"] for c in clips}) == 1  # one video, one person: one group
    close_up = [c for c in clips if c["start_s"] >= 3.5 and c["end_s"] <= 8.0]
    assert close_up and close_up[0]["speaking"] and close_up[0]["speaking_s"] > 1.0
    report = json.loads((ws.root / "report" / "report.json").read_text())
    not_target = report["rejections"]["faces"]["not_target"]
    assert not_target["count"] >= 1 and "nearest person" in not_target["examples"][0]["detail"]
    (video,) = [s for s in report["sources"] if s["kind"] == "video"]
    assert video["sha256"] and video["local_path"] and video["status"] == "ok"
    assert report["people_lost"] == []  # Lin and Alex both have a kept reference face
    # who judged the speakers is in the report; the fallback is named when it was used
    by = report["speakers"]["tracks_by_scorer"]
    assert by and set(by) <= {"light-asd", "correlation"}
    assert (report["speakers"]["note"] is None) == ("correlation" not in by)
    html_text = (ws.root / "report" / "report.html").read_text()
    assert "Active speaker:" in html_text
    assert validate(ws)[0] == []


def test_the_curators_review_rejects_and_accepts_clips(demo_workspace, tmp_path):
    import shutil

    from dsbuilder.recipe import load_recipe
    from dsbuilder.workspace import Workspace

    recipe, demo = demo_workspace
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(demo.root, ws.root, dirs_exist_ok=True)
    before = [c["clip_id"] for c in read_table(ws, "clips").to_pylist()]
    assert len(before) >= 2
    review = recipe.path.with_name("review.csv")
    review.write_text("clip_id,decision,note\n"
                      f"{before[0]},reject,eyes closed the whole clip\n"
                      f"{before[1]},accept,\n"
                      "src-gone-shot0000-trk000,reject,\n")
    reviewed = recipe.path.with_name("reviewed.yaml")
    reviewed.write_text(recipe.path.read_text().replace(
        "  report:\n", "  report:\n    review: review.csv\n", 1))
    rec = load_recipe(reviewed, ws.root)
    assert rec.stages["report"]["review"] == str(review.resolve())
    pipeline.run_stage("report", rec, ws, progress=False)
    clips = {c["clip_id"]: c for c in read_table(ws, "clips").to_pylist()}
    assert before[0] not in clips and clips[before[1]]["review"] == "accepted"
    assert all(c["review"] is None for k, c in clips.items() if k != before[1])
    (rej,) = [r for r in read_table(ws, "rejections").to_pylist() if r["stage"] == "report"]
    assert (rej["item_id"], rej["reason"], rej["detail"]) == (
        before[0], "curator_rejected", "eyes closed the whole clip")
    report = json.loads((ws.root / "report" / "report.json").read_text())
    assert report["review"]["not_clips"] == ["src-gone-shot0000-trk000"]
    assert report["rejections"]["report"]["curator_rejected"]["count"] == 1
    assert validate(ws)[0] == []
    # a rerun gives the same bytes (the rejection keeps its time)
    files = [table_path(ws, "clips"), table_path(ws, "rejections", "report"),
             ws.root / "report" / "report.json"]
    again = [digest(f) for f in files]
    pipeline.run_stage("report", rec, ws, progress=False)
    assert [digest(f) for f in files] == again
    # a bad decision is an error naming the line
    review.write_text("clip_id,decision\nx,maybe\n")
    with pytest.raises(StageError, match="review.csv:2: decision must be accept or reject"):
        pipeline.run_stage("report", rec, ws, progress=False)


def test_croissant_records_load_with_mlcroissant(demo_ws):
    """A user's view: mlcroissant reads the clips' records from report/croissant.json, with the
    paths resolved from the file's own folder; no warning about the context."""
    mlc = pytest.importorskip("mlcroissant")

    _, ws = demo_ws
    ds = mlc.Dataset(jsonld=str(ws.root / "report" / "croissant.json"))
    recs = list(ds.records("clips"))
    clips = read_table(ws, "clips").to_pylist()
    assert len(recs) == len(clips)
    ids = sorted(r["clips/clip_id"].decode() if isinstance(r["clips/clip_id"], bytes)
                 else r["clips/clip_id"] for r in recs)
    assert ids == sorted(c["clip_id"] for c in clips)


def test_croissant_describes_the_clips_table(demo_ws):
    from dsbuilder.manifest.schema import schemas
    from dsbuilder.workspace import sha256_file

    _, ws = demo_ws
    meta = json.loads((ws.root / "report" / "croissant.json").read_text())
    assert meta["@type"] == "sc:Dataset" and meta["conformsTo"].endswith("croissant/1.0")
    dist = meta["distribution"][0]
    assert dist["sha256"] == sha256_file(table_path(ws, "clips"))
    dist = meta["distribution"][0]
    # resolved from the file's own folder, as Croissant readers do
    assert (ws.root / "report" / dist["contentUrl"]).resolve() == table_path(ws, "clips").resolve()
    assert meta["citeAs"] and meta["datePublished"] and meta["rai:personalSensitiveInformation"]
    assert {d["@id"] for d in meta["distribution"]} >= {"clip-videos", "clip-audio"}
    (records,) = meta["recordSet"]
    schema, _ = schemas()["clips"]
    assert [f["name"] for f in records["field"]] == schema.names
    types = {f["name"]: (f["dataType"], f.get("repeated", False)) for f in records["field"]}
    assert types["probs"] == ("sc:Float", True) and types["speaking"] == ("sc:Boolean", False)
    assert types["n_frames"] == ("sc:Integer", False) and types["clip_id"] == ("sc:Text", False)
    assert meta["license"] == ["public-domain"]


@pytest.mark.realmedia
def test_real_track_changing_expression_gives_clips_with_different_labels(shared_media, tmp_path):
    """single_face.mp4: the man is neutral until ~0.75 s, then smiles broadly. With clips of at
    least 0.5 s the track is cut where the teacher's emotion changes: a neutral clip, then a happy
    one."""
    import cv2

    from dsbuilder.media import iter_frames
    from dsbuilder.recipe import load_recipe
    from dsbuilder.workspace import Workspace

    video = shared_media / "video" / "single_face.mp4"
    for _, t, img in iter_frames(video):
        if t >= 0.3:
            cv2.imwrite(str(tmp_path / "man.jpg"), img)
            break
    (tmp_path / "r.yaml").write_text(
        f"name: smile\npeople:\n  - id: man\n    photos: [{tmp_path / 'man.jpg'}]\n"
        f"    videos: [{video}]\nstages:\n  report: {{min_clip_s: 0.5}}\n")
    recipe = load_recipe(tmp_path / "r.yaml", tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws")
    pipeline.run(recipe, ws, progress=False)
    clips = sorted(read_table(ws, "clips").to_pylist(), key=lambda c: c["start_s"])
    assert [c["argmax"] for c in clips] == ["neutral", "happy"], clips
    assert clips[0]["ended_by"] == "emotion" and 0.5 <= clips[1]["start_s"] <= 1.0
    assert clips[0]["track_id"] == clips[1]["track_id"] and clips[0]["split"] == clips[1]["split"]

    # the report, the Croissant file, the card and the review page work on real media too
    import re

    import requests
    import yaml

    from dsbuilder.review import serve_in_thread

    out = ws.root / "report"
    page = (out / "report.html").read_text()
    for c in clips:
        assert f"figures/clip_{c['clip_id']}.jpg" in page and (out / "figures" /
                                                               f"clip_{c['clip_id']}.jpg").is_file()
    assert all((out / src).is_file() for src in re.findall(r'src="([^"]+)"', page))
    meta = yaml.safe_load((out / "dataset_card.md").read_text().split("---\n")[1])
    assert {d["split"] for d in meta["configs"][0]["data_files"]} == {"train", "validation", "test"}
    mlc = pytest.importorskip("mlcroissant")
    recs = list(mlc.Dataset(jsonld=str(out / "croissant.json")).records("clips"))
    assert len(recs) == len(clips)
    server, url = serve_in_thread(ws, ws.root / "review.csv")
    try:
        listing = requests.get(url, timeout=10).text
        assert all(c["clip_id"] in listing for c in clips)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("tamper", ["append_bytes", "swap_clip", "delete_wav", "escape_path",
                                    "delete_row", "change_label", "change_split", "crop_sha",
                                    "corrupt_page", "delete_frame_row", "delete_rejection",
                                    "delete_hmm"])
def test_validate_catches_tampered_clips(demo_workspace, tmp_path, tamper):
    """Each tampering of the training view is named by `manifest validate` (issue 14)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dsbuilder.workspace import Workspace

    _, demo = demo_workspace
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(demo.root, ws.root, dirs_exist_ok=True)
    assert validate(ws)[0] == []
    path = table_path(ws, "clips")
    clips = pq.read_table(path).to_pylist()
    c = clips[0]

    def rewrite(table: str, rows: list[dict]) -> None:
        p = table_path(ws, table)
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(p)), p)

    if tamper == "append_bytes":
        with open(ws.root / c["video_path"], "ab") as fh:
            fh.write(b"extra")
    elif tamper == "swap_clip":
        other = next(x for x in clips if x["video_path"] != c["video_path"])
        shutil.copyfile(ws.root / other["video_path"], ws.root / c["video_path"])
    elif tamper == "delete_wav":
        (ws.root / c["audio_path"]).unlink()
    elif tamper == "escape_path":
        c["video_path"] = "../../../etc/passwd"
        rewrite("clips", clips)
    elif tamper == "delete_row":
        rewrite("clips", clips[1:])
    elif tamper == "change_label":
        c["argmax"] = "disgust" if c["argmax"] != "disgust" else "fear"
        rewrite("clips", clips)
    elif tamper == "change_split":
        c["split"] = "test" if c["split"] != "test" else "train"
        rewrite("clips", clips)
    elif tamper == "crop_sha":
        tracks = pq.read_table(table_path(ws, "tracks")).to_pylist()
        t = next(t for t in tracks if t["track_id"] == c["track_id"])
        t["crop_sha256"] = "0" * 64
        rewrite("tracks", tracks)
    elif tamper in ("delete_frame_row", "delete_rejection"):
        table = "frames" if tamper == "delete_frame_row" else "rejections"
        p = table_path(ws, table)
        if p.is_dir():  # rejections: one part per stage
            p = next(f for f in sorted(p.glob("*.parquet")) if pq.read_metadata(f).num_rows)
        rows = pq.read_table(p).to_pylist()
        pq.write_table(pa.Table.from_pylist(rows[1:], schema=pq.read_schema(p)), p)
    elif tamper == "delete_hmm":
        model = min({r["model_path"] for r in pq.read_table(table_path(ws, "segments")).to_pylist()})
        (ws.root / model).unlink()
    elif tamper == "corrupt_page":
        data = bytearray(path.read_bytes())
        data[8:40] = bytes(32)  # the first column chunk's page
        path.write_bytes(bytes(data))
    problems, _ = validate(ws)
    assert problems, tamper
    r = run_cli("manifest", "validate", str(ws.root))
    assert r.returncode == 1 and "INVALID" in r.stderr and "unexpected" not in r.stderr, r.stderr


def test_the_page_shows_no_dict_and_no_local_path(demo_ws):
    recipe, ws = demo_ws
    page = (ws.root / "report" / "report.html").read_text()
    assert "{'" not in page and "file:///" not in page
    assert "local file: " in page  # the demo's media are local files


def test_report_page_has_pictures_with_relative_paths_and_no_bystander(demo_ws):
    """report.html: the yield funnel and rejections charts, a gallery of each person's clips (a
    thumbnail linked to the clip, a timeline of labels), reference faces; every picture is a file in
    report/figures/ named by a relative path; nothing of a non-target track is drawn."""
    import re

    recipe, ws = demo_ws
    out = ws.root / "report"
    page = (out / "report.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', page)
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert any(s.endswith("funnel.png") for s in srcs) and any("rejections.png" in s for s in srcs)
    clips = read_table(ws, "clips").to_pylist()
    for c in clips:
        assert f"figures/timeline_{c['clip_id']}.png" in srcs
        assert f"figures/clip_{c['clip_id']}.jpg" in srcs
        assert "../" + c["video_path"] in hrefs
    for s in srcs:
        assert not s.startswith(("/", "file:", "http")) and (out / s).is_file(), s
    for h in hrefs:
        assert not h.startswith(("/", "file:")) and (out / h).resolve().is_file(), h
    assert any("figures/ref_" in s for s in srcs)  # the dictionary's reference faces
    rejected_tracks = {t["track_id"] for t in read_table(ws, "tracks").to_pylist() if not t["kept"]}
    assert rejected_tracks  # the demo's bystander
    drawn = " ".join(p.name for p in (out / "figures").iterdir())
    assert not any(t in drawn for t in rejected_tracks)
    assert "<script" not in page
