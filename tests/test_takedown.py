"""Taking a source down: its files go at once, the next run rejects it (taken_down) without fetching
it again and drops everything made from it, and reruns keep the manifests identical."""

from __future__ import annotations

import json

import pytest
from conftest import digest, run_cli

from dsbuilder import pipeline, takedown
from dsbuilder.manifest.io import read_table, table_path
from dsbuilder.manifest.qa import validate
from dsbuilder.workspace import Workspace



def manifests(ws: Workspace) -> dict[str, str]:
    return {p.relative_to(ws.root).as_posix(): digest(p)
            for p in sorted(ws.manifests.rglob("*.parquet"))}


def test_a_source_taken_down_by_id_leaves_everything(ws_copy, monkeypatch):
    recipe, ws = ws_copy
    clip = read_table(ws, "clips").to_pylist()[0]
    sid = clip["source_id"]
    source = next(s for s in read_table(ws, "sources").to_pylist() if s["source_id"] == sid)
    raw, crop = ws.abspath(source["local_path"]), ws.abspath(clip["video_path"])
    assert raw.is_file() and crop.is_file()

    t = takedown.add(ws, sid, "owner request")
    deleted = takedown.purge(ws)
    assert takedown.purge_records(ws)  # the faces, shots... records made from it
    assert source["local_path"] in deleted and clip["video_path"] in deleted
    assert not raw.exists() and not crop.exists()
    assert takedown.add(ws, sid, "again").reason == "owner request"  # recorded once

    def no_fetch(*args, **kwargs):
        raise AssertionError("a taken-down source must not be fetched again")

    monkeypatch.setattr("dsbuilder.fetch.source.SourceFetcher.video", no_fetch)
    pipeline.run(recipe, ws, progress=False)
    row = next(s for s in read_table(ws, "sources").to_pylist() if s["source_id"] == sid)
    assert row["status"] == "rejected" and row["local_path"] is None
    (rej,) = [r for r in read_table(ws, "rejections").to_pylist() if r["reason"] == "taken_down"]
    assert rej["stage"] == "scrape" and rej["source_id"] == sid and rej["detail"] == t.detail
    for table in ("shots", "tracks", "frames", "speech", "labels", "clips"):
        assert not [r for r in read_table(ws, table).to_pylist() if r["source_id"] == sid], table
    assert not raw.exists() and not crop.exists()
    assert not [p for p in (ws.root / "clips").iterdir() if sid in p.name]
    report = json.loads((ws.root / "report" / "report.json").read_text())
    assert report["rejections"]["scrape"]["taken_down"]["count"] == 1
    assert validate(ws)[0] == []
    before = manifests(ws)
    pipeline.run(recipe, ws, progress=False)
    assert manifests(ws) == before


def test_a_source_taken_down_by_its_recipe_entry_is_not_fetched(ws_copy, monkeypatch):
    recipe, ws = ws_copy
    sources = read_table(ws, "sources").to_pylist()
    video = next(s for s in sources if s["kind"] == "video" and s["status"] == "ok")
    takedown.add(ws, video["request"], "licence withdrawn")
    monkeypatch.setattr("dsbuilder.fetch.source.SourceFetcher.video",
                        lambda *a, **k: pytest.fail("fetched a taken-down entry"))
    pipeline.run(recipe, ws, progress=False)
    row = next(s for s in read_table(ws, "sources").to_pylist()
               if s["source_id"] == video["source_id"])
    assert row["status"] == "rejected"
    assert not ws.abspath(video["local_path"]).exists()
    assert table_path(ws, "clips").is_file()


def test_cli_takedown(ws_copy):
    recipe, ws = ws_copy
    clips = read_table(ws, "clips").to_pylist()
    sid = clips[0]["source_id"]
    fitted_on_it = {c["person_id"] for c in clips if c["source_id"] == sid}
    r = run_cli("takedown", str(recipe.path), sid, "-w", str(ws.root))
    assert r.returncode == 2 and "--reason" in r.stderr
    # a mistyped id is refused, with the closest names
    r = run_cli("takedown", str(recipe.path), sid[:-1] + "x", "-w", str(ws.root), "--reason", "x")
    assert r.returncode == 2 and "names no source" in r.stderr and sid in r.stderr, r.stderr
    assert not (ws.root / "takedowns.json").exists()
    log = ws.logs / "run.log"
    log.write_text(f"INFO kept line\nINFO faces: {sid} done in 1.0 s\nINFO another kept line\n")
    report_files = {p.name for p in (ws.root / "report").iterdir()}
    assert "report.json" in report_files and sid in (ws.root / "report" / "report.json").read_text()
    hmm_models = sorted((ws.root / "models" / "hmm").glob("*.json"))
    assert {p.stem for p in hmm_models} == {"grace-hopper", "eileen-collins"}  # one a person
    records_before = {p for p in ws.cache.rglob("*.json")}
    mention = {p for p in records_before if sid in p.read_text()}
    assert mention  # the faces, shots, scrape... records of the source
    r = run_cli("takedown", str(recipe.path), sid, "-w", str(ws.root), "--reason", "owner request")
    assert r.returncode == 0, r.stderr
    assert f"taken down: {sid}" in r.stdout and "dsbuilder run" in r.stdout
    assert "cache record(s)" in r.stdout
    left = {p for p in ws.cache.rglob("*.json") if sid in p.read_text()}
    assert all(p.relative_to(ws.cache).parts[0] == "scrape" for p in left)
    assert all(not p.exists() for p in mention - left)
    # nothing outside the cache names it or was fitted on it: report, log lines, HMMs
    assert not (ws.root / "report" / "report.json").exists() and "report/report.json" in r.stdout
    assert not any(sid in p.read_text(errors="replace") for p in (ws.root / "report").rglob("*")
                   if p.is_file() and p.suffix in (".html", ".json", ".md"))
    assert log.read_text() == "INFO kept line\nINFO another kept line\n"
    # the HMMs fitted on its clips are gone (refitted by the next run), the other person's stay
    assert {p.stem for p in hmm_models if p.exists()} == {p.stem for p in hmm_models} - fitted_on_it
    hmm_records = [json.loads(p.read_text()) for p in (ws.cache / "label").glob("*.json")
                   if '"model": {' in p.read_text()]
    assert not [r for r in hmm_records if r.get("person_id") in fitted_on_it]
    r = run_cli("takedown", str(recipe.path), "-w", str(ws.root), "--list")
    assert sid in r.stdout and "owner request" in r.stdout
