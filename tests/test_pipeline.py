"""End to end over local files: run, validate, rerun with no work, change one parameter, and crash
with SIGKILL at many points and rerun to the same manifests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_cli
from dsbuilder import pipeline, synth
from dsbuilder import workspace as workspace_mod
from dsbuilder.manifest.io import read_table
from dsbuilder.manifest.qa import validate
from dsbuilder.recipe import load_recipe
from dsbuilder.workspace import Workspace

WALL_CLOCK = {"fetched_at", "at"}
UNTIL = "shots"


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    (d / "photos").mkdir()
    hopper = synth.grace_hopper()
    synth.write_photo(d / "photos" / "a.jpg", hopper, size=(300, 240))
    synth.write_photo(d / "photos" / "b.png", hopper[:, ::-1], size=(300, 240))
    shots = synth.standard_shots(3, 20)
    synth.write_video(d / "v1.mp4", shots, size=(120, 160))
    synth.write_video(d / "v2.mp4", synth.standard_shots(2, 25, seed=5), size=(120, 160))
    return d


def make_recipe(tmp_path: Path, media: Path, detector: str = "adaptive") -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(textwrap.dedent(f"""\
        name: e2e
        people:
          - id: grace
            photos: [{{path: {media / 'photos'}, licence: public-domain}}]
            videos:
              - {{path: {media / 'v1.mp4'}, licence: public-domain}}
              - {{path: {media / 'v2.mp4'}, licence: public-domain}}
        stages:
          scrape: {{min_interval_s: 0}}
          shots: {{min_shot_s: 0.2, detector: {detector}}}
        """))
    return p


def manifest_bytes(ws: Path) -> dict[str, str]:
    out = {}
    for f in sorted((ws / "manifests").rglob("*.parquet")):
        out[f.relative_to(ws).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def manifest_rows(ws: Path) -> dict[str, list[dict]]:
    w = Workspace(ws)
    return {t: [{k: v for k, v in row.items() if k not in WALL_CLOCK}
                for row in read_table(w, t).to_pylist()]
            for t in ("sources", "shots", "rejections")}


def test_run_validate_rerun_and_param_change(tmp_path, media):
    recipe = load_recipe(make_recipe(tmp_path, media), workspace=tmp_path / "ws")
    ws = Workspace.open(recipe.workspace)
    first = pipeline.run(recipe, ws, pipeline.plan(until="shots"), progress=False)
    problems, counts = validate(ws)
    assert problems == []
    assert counts["sources"] == 4 and counts["shots"] == 5
    assert [r.computed for r in first] == [4, 2]  # two photos, two videos; two videos

    before = manifest_bytes(ws.root)
    again = pipeline.run(recipe, ws, pipeline.plan(until="shots"), progress=False)
    assert [r.computed for r in again] == [0, 0]
    assert manifest_bytes(ws.root) == before

    # a shots parameter change redoes shots only; scrape's manifests stay byte-identical
    recipe2 = load_recipe(make_recipe(tmp_path, media, detector="content"),
                          workspace=tmp_path / "ws")
    third = pipeline.run(recipe2, ws, pipeline.plan(until="shots"), progress=False)
    assert [r.computed for r in third] == [0, 2]
    after = manifest_bytes(ws.root)
    assert after["manifests/sources.parquet"] == before["manifests/sources.parquet"]
    assert after["manifests/shots.parquet"] != before["manifests/shots.parquet"]
    assert {r["detector"] for r in read_table(ws, "shots").to_pylist()} == {"content"}


def test_cli_run_and_validate(tmp_path, media):
    recipe = make_recipe(tmp_path, media)
    res = run_cli("run", str(recipe), "--workspace", str(tmp_path / "ws"), "--no-progress",
                  "--until", "shots")
    assert res.returncode == 0, res.stderr
    assert "Manifests: " in res.stdout and "shots" in res.stdout
    res = run_cli("manifest", "validate", str(tmp_path / "ws"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "manifests valid" in res.stdout
    # tamper with a stored file: validation names the source and fails
    src = read_table(Workspace(tmp_path / "ws"), "sources").to_pylist()[0]
    (tmp_path / "ws" / src["local_path"]).write_bytes(b"tampered")
    res = run_cli("manifest", "validate", str(tmp_path / "ws"))
    assert res.returncode == 1 and src["source_id"] in res.stderr and "sha256" in res.stderr


def test_only_and_until(tmp_path, media):
    recipe = load_recipe(make_recipe(tmp_path, media), workspace=tmp_path / "ws")
    ws = Workspace.open(recipe.workspace)
    pipeline.run(recipe, ws, pipeline.plan(until="scrape"), progress=False)
    assert (ws.manifests / "sources.parquet").exists()
    assert not (ws.manifests / "shots.parquet").exists()
    res = pipeline.run(recipe, ws, pipeline.plan(only=["shots"]), progress=False)
    assert [r.stage for r in res] == ["shots"] and (ws.manifests / "shots.parquet").exists()


def count_writes(recipe_path: Path, ws: Path, until: str = UNTIL) -> int:
    """How many atomic writes an uninterrupted run makes (so kill points can span all of them)."""
    start = workspace_mod._writes
    recipe = load_recipe(recipe_path, workspace=ws)
    pipeline.run(recipe, Workspace.open(ws), pipeline.plan(until=until), progress=False)
    return workspace_mod._writes - start


def test_sigkill_at_many_points_then_rerun_gives_same_manifests(tmp_path, media):
    recipe = make_recipe(tmp_path, media)
    total = count_writes(recipe, tmp_path / "reference")
    expected = manifest_rows(tmp_path / "reference")
    assert total > 10
    # spread kill points over the whole run, both before and after a rename
    points = sorted({1, 2, total // 4, total // 2, (3 * total) // 4, total - 1, total})
    for i, n in enumerate(points):
        phase = "before" if i % 2 == 0 else "after"
        ws = tmp_path / f"ws-{n}-{phase}"
        env = {**os.environ, "DSBUILDER_KILL_AT": f"{n}:{phase}"}
        cmd = [sys.executable, "-m", "dsbuilder.cli", "-q", "run", str(recipe), "-w", str(ws),
               "--no-progress", "--until", UNTIL]
        killed = subprocess.run(cmd, env=env, capture_output=True)
        assert killed.returncode == -9, f"kill point {n}:{phase} was not reached"
        rerun = subprocess.run(cmd, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        got = manifest_rows(ws)
        for table in expected:  # name the differing rows and columns
            diff = [(a.get(next(iter(a))), k, a[k], b.get(k)) for a, b in zip(got[table],
                    expected[table]) for k in a if a[k] != b.get(k)]
            assert got[table] == expected[table], \
                f"after a kill at write {n} ({phase}): {table} differs: {diff[:5]}"
        assert validate(Workspace(ws))[0] == []
        assert not list(ws.rglob(".*.tmp"))


def test_cli_run_over_loopback_http_then_rerun_is_byte_identical(tmp_path, media):
    """The issue's acceptance run: videos through yt-dlp's generic extractor and photos from an HTML
    page, served on 127.0.0.1; validate; a second run makes no request and changes no byte."""
    from loopback import LoopbackServer, Route

    with LoopbackServer() as srv:
        srv.add("/v/talk.mp4", Route.file(media / "v1.mp4", "video/mp4"))
        srv.add("/v/other.mp4", Route.file(media / "v2.mp4", "video/mp4"))
        srv.add("/img/a.jpg", Route.file(media / "photos" / "a.jpg", "image/jpeg"))
        srv.add("/img/b.png", Route.file(media / "photos" / "b.png", "image/png"))
        srv.add("/people/grace.html", Route.html(
            '<html><body><img src="../img/a.jpg"><img srcset="/img/b.png 2x, /img/a.jpg 1x">'
            '<img src="/img/missing.jpg"></body></html>'))
        srv.add("/robots.txt", Route.text("User-agent: *\nDisallow: /private/\n"))
        recipe = tmp_path / "web.yaml"
        recipe.write_text(textwrap.dedent(f"""\
            name: web
            people:
              - id: grace
                photos: ["{srv.url('/people/grace.html')}"]
                videos: ["{srv.url('/v/talk.mp4')}", "{srv.url('/v/other.mp4')}"]
            stages:
              scrape: {{min_interval_s: 0, timeout_s: 5, retries: 0}}
              shots: {{min_shot_s: 0.2}}
            """))
        ws = tmp_path / "ws"
        res = run_cli("run", str(recipe), "-w", str(ws), "--no-progress", "--until", "shots")
        assert res.returncode == 0, res.stderr
        res = run_cli("manifest", "validate", str(ws))
        assert res.returncode == 0, res.stdout + res.stderr
        w = Workspace(ws)
        sources = read_table(w, "sources").to_pylist()
        kinds = sorted((r["kind"], r["extractor"]) for r in sources if r["status"] == "ok")
        assert kinds == [("photo", "http"), ("photo", "http"), ("video", "generic"),
                         ("video", "generic")]
        assert {r["reason"] for r in read_table(w, "rejections").to_pylist()} >= {"http_error"}
        assert len(read_table(w, "shots")) == 5

        before = manifest_bytes(ws)
        srv.reset_log()
        res = run_cli("run", str(recipe), "-w", str(ws), "--no-progress", "--until", "shots")
        assert res.returncode == 0, res.stderr
        assert srv.count() == 0
        assert manifest_bytes(ws) == before


def test_tables_read_with_pandas_and_duckdb(tmp_path, media):
    import duckdb
    import pandas as pd

    recipe = load_recipe(make_recipe(tmp_path, media), workspace=tmp_path / "ws")
    ws = Workspace.open(recipe.workspace)
    pipeline.run(recipe, ws, pipeline.plan(until="shots"), progress=False)
    m = ws.manifests
    shots = pd.read_parquet(m / "shots.parquet")
    assert len(shots) == 5 and shots["start_s"].dtype == "float64"
    assert shots["start_frame"].dtype == "int64"
    rejections = pd.read_parquet(m / "rejections")  # a folder of parts reads as one table
    assert set(rejections.columns) >= {"stage", "reason", "detail", "item_id"}
    n = duckdb.sql(f"SELECT count(*) FROM '{m}/sources.parquet' s JOIN '{m}/shots.parquet' t "
                   "USING (source_id)").fetchall()[0][0]
    assert n == 5
    parts = duckdb.sql(f"SELECT count(*) FROM '{m}/rejections/*.parquet'").fetchall()[0][0]
    assert parts == len(rejections)


@pytest.fixture(scope="module")
def demo_recipe(tmp_path_factory) -> Path:
    """Part of the offline demo (two people's photos, a talking face with a bystander, a video
    without sound), so that every stage has work, in a temporary folder."""
    from dsbuilder import demo

    return demo.make_recipe(tmp_path_factory.mktemp("demo"),
                            ("hopper-talk.mp4", "hopper-silent-film.mp4"))


def all_manifest_rows(ws: Path) -> dict[str, list[dict]]:
    from dsbuilder.manifest.schema import schemas

    w = Workspace(ws)
    return {t: [{k: v for k, v in row.items() if k not in WALL_CLOCK}
                for row in read_table(w, t).to_pylist()] for t in schemas()}


def report_without_wall_clock(ws: Path) -> dict:
    """report.json with the sources' fetch times (when the media were copied) left out."""
    import json

    report = json.loads((ws / "report" / "report.json").read_text())
    for source in report["sources"]:
        source.pop("fetched_at")
    return report


def test_sigkill_during_every_stage_then_rerun_gives_same_manifests(tmp_path, demo_recipe):
    """The whole pipeline (scrape ... report, with face clips, speech, HMMs, clips and the report)
    killed with SIGKILL at points spread over all its writes; each rerun ends with the uninterrupted
    run's manifests and report."""
    total = count_writes(demo_recipe, tmp_path / "reference", until="report")
    expected = all_manifest_rows(tmp_path / "reference")
    assert expected["labels"] and expected["segments"] and expected["speech"] and expected["clips"]
    expected_report = report_without_wall_clock(tmp_path / "reference")
    points = sorted({total // 5, (2 * total) // 5, (3 * total) // 5, (4 * total) // 5, total - 2})
    for i, n in enumerate(points):
        phase = "after" if i % 2 == 0 else "before"
        ws = tmp_path / f"ws-{n}-{phase}"
        cmd = [sys.executable, "-m", "dsbuilder.cli", "-q", "run", str(demo_recipe), "-w", str(ws),
               "--no-progress"]
        killed = subprocess.run(cmd, env={**os.environ, "DSBUILDER_KILL_AT": f"{n}:{phase}"},
                                capture_output=True)
        assert killed.returncode == -9, f"kill point {n}:{phase} was not reached"
        rerun = subprocess.run(cmd, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        got = all_manifest_rows(ws)
        for table in expected:
            assert got[table] == expected[table], f"after a kill at write {n} ({phase}): {table}"
        assert report_without_wall_clock(ws) == expected_report
        assert validate(Workspace(ws))[0] == []
        assert not list(ws.rglob(".*.tmp"))
