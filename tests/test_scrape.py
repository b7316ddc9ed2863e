"""The scrape stage against a real HTTP server on 127.0.0.1 serving real (synthetic) media.

Nothing is mocked: photos go through ``requests``, videos through yt-dlp's generic extractor (direct
``.mp4`` links, and a page with ``<video>`` tags as a playlist). The server also misbehaves on purpose
(404, 500, a slow answer, a body cut short, a robots.txt rule) and every misbehaviour must end as a
rejection row while the rest of the run succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tempfile

import yaml

from dsbuilder import synth
from dsbuilder.manifest.io import read_table, table_path
from dsbuilder.recipe import load_recipe
from dsbuilder.stages import scrape
from dsbuilder.stages.scrape import normalise_licence, source_id_for
from dsbuilder.workspace import Workspace, sha256_file
from loopback import LoopbackServer, Route

UA = "dsbuilder-test/1 (loopback tests; +https://example.invalid)"
FAST = {"timeout_s": 1, "retries": 1, "backoff_s": 0.05, "min_interval_s": 0, "user_agent": UA}


# --- media and server ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Small real media files: videos (320x240, ~1-2 s), photos, and not-quite-media."""
    d = tmp_path_factory.mktemp("media")
    out = {}

    def video(name, seed, frames=20, **kw):
        synth.write_video(d / name, synth.standard_shots(2, frames, seed=seed), size=(240, 320),
                          **kw)
        out[name] = d / name

    video("a.mp4", 0)
    video("b.mp4", 10)
    video("noaudio.mp4", 20, audio=None)
    video("long.mp4", 30, frames=50)  # 4 s, over max_duration_s=3
    video("local.mp4", 40)
    hopper = synth.grace_hopper()
    for name, pic, size in [("hopper.jpg", hopper, (300, 240)),
                            ("tex1.jpg", synth.texture(1), None),
                            ("tex1-small.jpg", synth.texture(1), (60, 80)),
                            ("tex2.png", synth.texture(2), (120, 160)),
                            ("tiny.png", synth.texture(3), (16, 16))]:
        synth.write_photo(d / name, pic, size=size)
        out[name] = d / name
    folder = d / "folder"
    folder.mkdir()
    synth.write_photo(folder / "b.png", synth.texture(5), size=(90, 120))
    synth.write_photo(folder / "a.jpg", synth.texture(4), size=(90, 120))
    (folder / "notes.txt").write_text("not a photo")
    out["folder"] = folder
    (d / "fake.jpg").write_text("this is text, not a JPEG")
    out["fake.jpg"] = d / "fake.jpg"
    return out


GALLERY = """<!doctype html>
<html><head><title>Gallery</title>
<link rel="license" href="https://creativecommons.org/licenses/by/4.0/"></head>
<body>
<img src="img/hopper.jpg" alt="Grace Hopper">
<img src="img/tex1-small.jpg" srcset="img/tex1-small.jpg 80w, img/tex1.jpg 640w" alt="Texture">
<img src="/img/hopper-copy.jpg" alt="The same portrait again">
<img src="img/hopper.jpg#again">
<img src="/private/secret.jpg">
<img src="/img/missing.jpg">
<img src="/img/tiny.png">
<img src="/img/fake.jpg">
</body></html>
"""

VIDEO_PAGE = """<!doctype html>
<html><head><title>Two clips</title></head><body>
<video src="/v/a.mp4"></video>
<video><source src="/v/b.mp4" type="video/mp4"></video>
</body></html>
"""


@pytest.fixture(scope="module")
def server(media):
    with LoopbackServer() as srv:
        srv.add("/robots.txt", Route.text("User-agent: *\nDisallow: /private/\n"))
        srv.add("/gallery.html", Route.html(GALLERY))
        for name in ("hopper.jpg", "tex1.jpg", "tex1-small.jpg", "tex2.png", "tiny.png"):
            srv.add(f"/img/{name}", Route.file(media[name]))
        srv.add("/img/hopper-copy.jpg", Route.file(media["hopper.jpg"]))
        srv.add("/img/fake.jpg", Route.file(media["fake.jpg"], "image/jpeg"))
        srv.add("/private/secret.jpg", Route.file(media["tex2.png"]))
        srv.add("/img/e500.jpg", Route(b"oops", "text/plain", status=500))
        srv.add("/img/slow.jpg", Route.file(media["tex2.png"], delay_s=3))
        srv.add("/img/trunc.jpg", Route.file(media["hopper.jpg"], truncate=True))
        for name in ("a.mp4", "b.mp4", "noaudio.mp4", "long.mp4"):
            srv.add(f"/v/{name}", Route.file(media[name]))
        srv.add("/v/trunc.mp4", Route.file(media["b.mp4"], truncate=True))
        srv.add("/v/page.html", Route.html(VIDEO_PAGE))
        yield srv


def write_recipe(tmp_path: Path, people: list[dict], **sections) -> Path:
    doc = {"name": "scrape-test", "people": people,
           "stages": {"scrape": {**FAST, **sections.pop("scrape", {})}}, **sections}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_scrape(recipe_path: Path, ws_dir: Path, **kw):
    recipe = load_recipe(recipe_path, workspace=ws_dir)
    ws = Workspace.open(recipe.workspace)
    return scrape.run(recipe, ws, progress=False, **kw), ws


def tables(ws: Workspace) -> tuple[list[dict], list[dict]]:
    return read_table(ws, "sources").to_pylist(), read_table(ws, "rejections").to_pylist()


def manifest_bytes(ws: Workspace) -> dict[str, bytes]:
    paths = [table_path(ws, "sources"), table_path(ws, "rejections", "scrape")]
    return {p.name: p.read_bytes() for p in paths}


# --- the main scenario ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def main_run(server, media, tmp_path_factory):
    """One run over everything; the tests below inspect it (and rerun it)."""
    tmp = tmp_path_factory.mktemp("main")
    u = server.url
    people = [
        {"id": "grace", "name": "Grace",
         "photos": [u("/gallery.html"), u("/img/tex2.png"), u("/img/e500.jpg"),
                    u("/img/slow.jpg"), u("/img/trunc.jpg"), str(media["folder"])],
         "videos": [u("/v/a.mp4"), u("/v/noaudio.mp4"), u("/v/long.mp4"), u("/v/trunc.mp4"),
                    u("/v/page.html"), str(media["local.mp4"])]},
        {"id": "other", "name": "Someone else", "photos": [u("/img/hopper.jpg")]},
    ]
    recipe = write_recipe(tmp, people, limits={"max_duration_s": 3})
    server.reset_log()
    result, ws = run_scrape(recipe, tmp / "ws")
    return {"recipe": recipe, "ws": ws, "result": result, "requests": server.counts(),
            "user_agents": set(server.user_agents)}


def _by_url(rows):
    return {r["url"]: r for r in rows}


def test_rows_have_schema_columns_and_provenance(main_run, server, media):
    ws = main_run["ws"]
    sources, _ = tables(ws)
    ok = [r for r in sources if r["status"] == "ok"]
    by_url = _by_url(ok)
    u = server.url
    expected_ok = {u("/img/hopper.jpg"), u("/img/tex1.jpg"), u("/img/tex2.png"), u("/v/a.mp4"),
                   u("/v/b.mp4"), (media["folder"] / "a.jpg").as_uri(),
                   (media["folder"] / "b.png").as_uri(), media["local.mp4"].as_uri()}
    assert set(by_url) == expected_ok
    for r in ok:
        path = ws.abspath(r["local_path"])
        assert path.is_file()
        # names come from content hashes, never from titles
        assert path.stem == r["source_id"] == source_id_for(r["sha256"])
        assert sha256_file(path) == r["sha256"] and path.stat().st_size == r["bytes"]
        assert r["fetched_at"] is not None and r["fetched_at"].tzinfo is not None
        assert set(json.loads(r["tool_versions"])) >= {"yt-dlp", "requests", "av"}
    assert not list(ws.raw.glob(".dl-*")), "temporary download folders are removed"

    hopper = by_url[u("/img/hopper.jpg")]
    assert hopper["kind"] == "photo" and hopper["extractor"] == "http"
    assert hopper["webpage_url"] == u("/gallery.html") and hopper["title"] == "Grace Hopper"
    assert (hopper["width"], hopper["height"]) == (240, 300)
    assert hopper["licence"] == "CC-BY"  # from the page's rel="license" link
    # the same photo asked for by 'other' directly: merged into the kept row
    assert hopper["person_ids"] == ["grace", "other"]
    assert len(hopper["request_ids"]) == 2 and hopper["request"] == u("/gallery.html")

    # srcset: the largest candidate was taken, not the src
    assert by_url[u("/img/tex1.jpg")]["width"] == 640
    assert by_url[u("/img/tex2.png")]["licence"] == "unknown"
    assert by_url[u("/img/tex2.png")]["local_path"].endswith(".png")

    video = by_url[u("/v/a.mp4")]
    assert video["kind"] == "video" and video["extractor"] == "generic"
    assert video["has_audio"] is True and video["video_codec"] == "h264"
    assert (video["width"], video["height"]) == (320, 240)
    assert video["duration"] == pytest.approx(1.6, abs=0.15) and video["fps"] == pytest.approx(25)
    info = json.loads(ws.abspath(video["info_json_path"]).read_text())
    assert info["webpage_url"] == u("/v/a.mp4")
    assert video["info_json_path"] == f"raw/videos/{video['source_id']}.info.json"
    archive = (ws.cache / "scrape" / "ytdlp-archive.txt").read_text().splitlines()
    assert "generic a" in archive and "html5mediaembed page-2" in archive

    page_b = by_url[u("/v/b.mp4")]
    assert page_b["webpage_url"] == u("/v/page.html") and page_b["extractor"] == "html5"

    local = by_url[media["local.mp4"].as_uri()]
    assert local["extractor"] == "local" and local["info_json_path"] is None
    # the folder: images only, sorted by name
    folder_rows = sorted((r for r in ok if r["url"].startswith(media["folder"].as_uri())),
                         key=lambda r: r["url"])
    assert [Path(r["url"]).name for r in folder_rows] == ["a.jpg", "b.png"]

    # every request carried our User-Agent (requests and yt-dlp alike)
    assert main_run["user_agents"] == {UA}


def test_every_failure_is_a_rejection_row(main_run, server):
    ws = main_run["ws"]
    sources, rejections = tables(ws)
    got = {}
    for r in rejections:
        assert r["stage"] == "scrape" and r["at"] is not None
        got.setdefault(r["reason"], []).append(r)

    def one(reason, needle):
        hits = [r for r in got.get(reason, []) if needle in r["detail"]]
        assert hits, f"no {reason} rejection mentioning {needle!r}: {got.get(reason)}"
        return hits[0]

    assert "404" in one("http_error", "/img/missing.jpg")["detail"]
    assert "500" in one("http_error", "/img/e500.jpg")["detail"]
    one("timeout", "/img/slow.jpg")
    one("truncated", "/img/trunc.jpg")
    one("truncated", "/v/trunc.mp4")  # through yt-dlp
    one("robots_disallowed", "/private/")
    one("too_small", "16x16")
    one("unsupported_media", "not a readable image")
    one("no_audio", "/v/noaudio.mp4")
    one("too_long", "/v/long.mp4")
    # duplicates: the same image under two URLs, the same video directly and from the page,
    # and the same photo requested by a second person
    kept = {r["source_id"]: r for r in sources if r["status"] == "ok"}
    dups = got["duplicate"]
    assert {d["person_id"] for d in dups} == {"grace", "other"}
    for d in dups:
        assert d["source_id"] in kept and d["source_id"] in d["detail"]
    assert any("hopper-copy.jpg" in d["detail"] for d in dups)
    assert any("/v/page.html#page-1" in d["detail"] for d in dups)
    assert len(dups) == 3

    # rejected-but-known content keeps a row for auditors, without a file
    rejected_rows = [r for r in sources if r["status"] == "rejected"]
    assert rejected_rows and all(r["local_path"] is None for r in rejected_rows)
    ids = {r["source_id"] for r in sources}
    assert all(r["source_id"] in ids for r in rejections if r["source_id"])
    # request-level failures name the recipe entry; page entries get their own ids
    assert one("http_error", "/img/e500.jpg")["item_id"].startswith("req-")
    assert one("http_error", "/img/missing.jpg")["item_id"].startswith("ent-")
    # transient failures were retried once (retries: 1) before giving up
    reqs = main_run["requests"]
    assert reqs["/img/e500.jpg"] == 2 and reqs["/img/trunc.jpg"] == 2
    assert reqs["/img/missing.jpg"] == 1 and reqs["/private/secret.jpg"] == 0
    assert reqs["/robots.txt"] == 1
    assert reqs["/img/hopper.jpg"] == 1  # fetched once although two entries ask for it


def test_rerun_makes_no_requests_and_identical_manifests(main_run, server):
    before = manifest_bytes(main_run["ws"])
    server.reset_log()
    result, ws = run_scrape(main_run["recipe"], main_run["ws"].root)
    assert server.count() == 0, server.counts()
    assert result.computed == 0 and result.cached > 0
    assert manifest_bytes(ws) == before


def test_failures_keep_their_record_until_retry_failed(server, media, tmp_path):
    server.add("/img/flaky.jpg", Route(b"busy", "text/plain", status=503))
    recipe = write_recipe(tmp_path, [{"id": "p", "photos": [server.url("/img/flaky.jpg"),
                                                            server.url("/img/tex2.png")]}])
    run_scrape(recipe, tmp_path / "ws")
    _, rejections = tables(Workspace.open(tmp_path / "ws"))
    assert [r["reason"] for r in rejections] == ["http_error"]

    server.add("/img/flaky.jpg", Route.file(media["hopper.jpg"]))  # the server recovers
    server.reset_log()
    run_scrape(recipe, tmp_path / "ws")  # without retry_failed: the failure stands, no request
    assert server.count() == 0
    result, ws = run_scrape(recipe, tmp_path / "ws", retry_failed=True)
    assert set(server.counts()) == {"/img/flaky.jpg", "/robots.txt"}
    assert result.computed == 1 and result.cached == 1
    sources, rejections = tables(ws)
    assert rejections == [] and len([r for r in sources if r["status"] == "ok"]) == 2

    server.reset_log()
    result, ws = run_scrape(recipe, tmp_path / "ws", force=True)  # everything again
    assert server.count("/img/flaky.jpg") == server.count("/img/tex2.png") == 1
    assert result.computed == 2 and result.cached == 0
    assert tables(ws)[0] != sources  # new fetch times


def test_licence_allow_list_decides_before_downloading(server, media, tmp_path):
    u = server.url
    people = [{"id": "p",
               "photos": [u("/gallery.html"),
                          {"url": u("/img/tex2.png"), "licence": "CC BY-NC 4.0"}],
               "videos": [u("/v/b.mp4"), {"path": str(media["local.mp4"]), "licence": "cc-by"}]}]
    recipe = write_recipe(tmp_path, people, licences={"allow": ["CC-BY"]},
                          limits={"max_items_per_query": 2})
    server.reset_log()
    result, ws = run_scrape(recipe, tmp_path / "ws")
    reqs = server.counts()
    sources, rejections = tables(ws)
    ok = {r["url"]: r for r in sources if r["status"] == "ok"}
    # page photos carry the page's CC-BY; only the first 2 images of the page are taken
    assert set(ok) == {u("/img/hopper.jpg"), u("/img/tex1.jpg"), media["local.mp4"].as_uri()}
    assert all(r["licence"] == "CC-BY" for r in ok.values())
    lic = [r for r in rejections if r["reason"] == "licence_not_allowed"]
    assert len(lic) == 2
    assert any("'CC-BY-NC'" in r["detail"] for r in lic)
    assert any("'unknown'" in r["detail"] and "/v/b.mp4" in r["detail"] for r in lic)
    assert reqs["/img/tex2.png"] == 0  # the recipe's licence is known before fetching
    assert reqs["/v/b.mp4"] == 1  # yt-dlp's metadata request only: never downloaded
    assert not any(ws.raw.glob("videos/*.info.json"))
    # known but rejected: a sources row for auditors, with the site's metadata and no file
    b = next(r for r in sources if r["url"] == u("/v/b.mp4"))
    assert b["status"] == "rejected" and b["licence"] == "unknown" and b["sha256"] is None
    assert b["title"] == "b" and b["extractor"] == "generic" and b["local_path"] is None
    assert b["source_id"] in {r["source_id"] for r in lic}


def test_changed_parameters_reuse_raw_files(server, media, tmp_path):
    """A parameter change re-decides every item, but content already in raw/ is not fetched."""
    people = [{"id": "p", "photos": [server.url("/gallery.html")],
               "videos": [server.url("/v/a.mp4")]}]
    recipe = write_recipe(tmp_path, people)
    run_scrape(recipe, tmp_path / "ws")
    first = {r["source_id"]: r for r in tables(Workspace.open(tmp_path / "ws"))[0]}

    recipe = write_recipe(tmp_path, people, scrape={"min_photo_px": 200})
    server.reset_log()
    result, ws = run_scrape(recipe, tmp_path / "ws")
    # the page and the video's metadata are listed again, and what was rejected before is tried
    # again; nothing that is in raw/ is downloaded again
    counts = server.counts()
    assert counts["/gallery.html"] == 1 and counts["/v/a.mp4"] == 1  # yt-dlp's metadata only
    for kept in ("/img/hopper.jpg", "/img/hopper-copy.jpg", "/img/tex1.jpg"):
        assert counts[kept] == 0, kept
    sources, rejections = tables(ws)
    hopper = next(r for r in sources if r["url"].endswith("/img/hopper.jpg"))
    assert hopper["status"] == "ok"
    assert hopper["fetched_at"] == first[hopper["source_id"]]["fetched_at"]
    assert any(r["reason"] == "too_small" and "min_photo_px=200" in r["detail"]
               for r in rejections)
    tex = next(r for r in sources if r["url"].endswith("/img/tex1.jpg"))
    assert tex["status"] == "ok" and tex["fetched_at"] == first[tex["source_id"]]["fetched_at"]
    video = next(r for r in sources if r["kind"] == "video")
    assert video["fetched_at"] == first[video["source_id"]]["fetched_at"]
    assert result.computed > 0


def test_local_path_missing_at_run_time(tmp_path, media):
    photo = tmp_path / "gone.jpg"
    photo.write_bytes(media["hopper.jpg"].read_bytes())
    recipe = write_recipe(tmp_path, [{"id": "p", "photos": [str(photo)]}])
    recipe_obj = load_recipe(recipe, workspace=tmp_path / "ws")  # validated while it exists
    photo.unlink()
    ws = Workspace.open(recipe_obj.workspace)
    scrape.run(recipe_obj, ws, progress=False)
    before = manifest_bytes(ws)
    _, rejections = tables(ws)
    assert [(r["reason"], r["item_id"]) for r in rejections] == [
        ("not_found", recipe_obj.sources()[0].spec_id)]
    scrape.run(recipe_obj, ws, progress=False)
    assert manifest_bytes(ws) == before  # the rejection time comes from the record


FEED = """<?xml version="1.0"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
<channel><title>Clips</title>
<item><title>Clip A</title><enclosure url="{a}" type="video/mp4"/></item>
<item><title>Long clip</title><itunes:duration>0:04</itunes:duration>
  <enclosure url="{long}" type="video/mp4"/></item>
<item><title>Clip B</title><enclosure url="{b}" type="video/mp4"/></item>
<item><title>Not taken</title><enclosure url="{noaudio}" type="video/mp4"/></item>
</channel></rss>
"""


def test_feed_entries_resume_after_a_crash(server, tmp_path):
    """A feed is a playlist: each entry has its own record, so a crash mid-feed resumes.

    The first run is killed (SIGKILL, via the workspace's crash injection) right after the 4th atomic
    write: the feed's listing record, then clip A's info.json, its fetched record and its item record.
    So clip A is recorded but its line in yt-dlp's archive was never written.
    """
    u = server.url
    server.add("/v/feed.xml", Route(FEED.format(a=u("/v/a.mp4"), long=u("/v/long.mp4"),
                                                b=u("/v/b.mp4"), noaudio=u("/v/noaudio.mp4"))
                                    .encode(), "application/rss+xml"))
    recipe = write_recipe(tmp_path, [{"id": "p", "videos": [u("/v/feed.xml")]}],
                          limits={"max_items_per_query": 3, "max_duration_s": 3})
    ws_dir = tmp_path / "ws"
    code = ("import sys; from dsbuilder.recipe import load_recipe; "
            "from dsbuilder.workspace import Workspace; from dsbuilder.stages import scrape; "
            "r = load_recipe(sys.argv[1], workspace=sys.argv[2]); "
            "scrape.run(r, Workspace.open(r.workspace), progress=False)")
    server.reset_log()
    proc = subprocess.run([sys.executable, "-c", code, str(recipe), str(ws_dir)],
                          env={**os.environ, "DSBUILDER_KILL_AT": "4:after"}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert server.count("/v/a.mp4") == 2  # yt-dlp: metadata, then the download
    assert server.count("/v/b.mp4") == 0
    archive = ws_dir / "cache" / "scrape" / "ytdlp-archive.txt"
    assert not archive.exists()
    assert list((ws_dir / "raw").glob(".dl-*")), "the killed run left its temporary folder"

    server.reset_log()
    result, ws = run_scrape(recipe, ws_dir)
    counts = server.counts()
    assert counts["/v/a.mp4"] == 0 and counts["/v/b.mp4"] == 2 and counts["/v/feed.xml"] == 0
    assert counts["/v/long.mp4"] == 0  # too long by the feed's own duration: never requested
    assert counts["/v/noaudio.mp4"] == 0  # beyond max_items_per_query
    assert not list(ws.raw.glob(".dl-*"))
    assert archive.read_text().splitlines() == ["generic a", "generic b"]
    sources, rejections = tables(ws)
    ok = [r for r in sources if r["status"] == "ok"]
    assert sorted(r["title"] for r in ok) == ["Clip A", "Clip B"]  # the feed's titles
    assert all(r["webpage_url"].startswith(u("/v/")) for r in ok)
    (long_row,) = [r for r in sources if r["status"] == "rejected"]
    assert (long_row["title"], long_row["duration"], long_row["sha256"]) == ("Long clip", 4, None)
    assert [(r["reason"], r["item_id"][:4]) for r in rejections] == [("too_long", "ent-")]


def test_size_cap(server, media, tmp_path):
    """Too large by Content-Length, or by counting the bytes when there is none."""
    big = tmp_path / "big.png"
    synth.write_photo(big, synth.texture(6), size=(480, 640))
    assert big.stat().st_size > 60_000
    server.add("/img/big.png", Route.file(big))
    server.add("/img/big-nolength.png", Route.file(big, send_length=False))
    server.add("/v/a-nolength.mp4", Route.file(media["a.mp4"], send_length=False))
    u = server.url
    people = [{"id": "p", "photos": [u("/img/big.png"), u("/img/big-nolength.png"),
                                     u("/img/hopper.jpg")],
               "videos": [u("/v/a.mp4"), u("/v/a-nolength.mp4")]}]
    recipe = write_recipe(tmp_path, people, limits={"max_filesize_mb": 0.05})  # 52 KB
    _, ws = run_scrape(recipe, tmp_path / "ws")
    sources, rejections = tables(ws)
    assert [r["url"] for r in sources] == [u("/img/hopper.jpg")]
    reasons = sorted((r["reason"], r["detail"].split(":")[0] + ":" + r["detail"].split(":")[1])
                     for r in rejections)
    assert [r for r, _ in reasons] == ["too_large"] * 4, rejections
    assert not list(ws.raw.glob("videos/*"))


def test_rate_limit_per_host():
    from dsbuilder.fetch.common import HostRateLimiter

    limiter = HostRateLimiter(0.1)
    start = time.monotonic()
    for _ in range(4):
        limiter.wait("http://a.test/x")
    limiter.wait("http://b.test/y")  # another host does not wait for a.test
    assert 0.3 <= time.monotonic() - start < 0.6


# --- small pieces --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, code", [
    ("Creative Commons Attribution license (reuse allowed)", "CC-BY"),
    ("Creative Commons Attribution-ShareAlike 4.0 International", "CC-BY-SA"),
    ("https://creativecommons.org/licenses/by-nc-nd/3.0/", "CC-BY-NC-ND"),
    ("https://creativecommons.org/publicdomain/zero/1.0/", "CC0"),
    ("public domain", "public-domain"),
    ("Public-Domain", "public-domain"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
    ("MIT", "MIT"),
    ("Standard YouTube License", "youtube-standard"),
    ("All rights reserved", "other"),
    (None, "unknown"),
    ("   ", "unknown"),
])
def test_normalise_licence(text, code):
    assert normalise_licence(text) == code


def test_srcset_takes_the_largest_candidate():
    from dsbuilder.fetch.webpage import extract_images, largest_candidate

    assert largest_candidate("a.jpg 320w, b.jpg 1200w, c.jpg 640w") == "b.jpg"
    assert largest_candidate("a.jpg, b.jpg 3x, c.jpg 2x") == "b.jpg"
    assert largest_candidate("data.jpg?x=1,2 2x, plain.jpg") == "data.jpg?x=1,2"
    page = extract_images(GALLERY, "http://h.test/dir/gallery.html")
    urls = [i.url for i in page.images]
    assert urls[:3] == ["http://h.test/dir/img/hopper.jpg", "http://h.test/dir/img/tex1.jpg",
                        "http://h.test/img/hopper-copy.jpg"]
    assert len(urls) == len(set(urls)) == 7  # the '#again' copy is the same URL


def test_import_is_light():
    code = ("import sys, dsbuilder.stages.scrape; "
            "print(sorted(m for m in ('yt_dlp', 'requests', 'PIL', 'av', 'numpy', 'pyarrow') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- what the network can do to a fetch (issue 14) -------------------------------------------------

def test_trickling_server_refused_port_and_unknown_host_have_their_own_reasons():
    """A server sending 2 bytes a second cannot hold an item past its timeout (a watchdog shuts the
    socket); a refused connection and a name that does not resolve are not called timeouts."""
    import socket
    import time

    from dsbuilder.fetch.common import FetchFailed, HostRateLimiter
    from dsbuilder.fetch.http import HttpClient

    client = HttpClient(user_agent=UA, timeout_s=2, retries=0, backoff_s=0.01, max_bytes=10 ** 6,
                        limiter=HostRateLimiter(0), trusted_hosts={"127.0.0.1"})
    with LoopbackServer() as srv:
        srv.add("/drip.jpg", Route(b"x" * 200, "image/jpeg", drip_bps=2))
        t = time.perf_counter()
        with pytest.raises(FetchFailed) as err:
            client.download(srv.url("/drip.jpg"), tempfile.mkdtemp())
        assert err.value.reason == "timeout" and err.value.transient
        assert time.perf_counter() - t < 6
    # the same through yt-dlp: a video page trickled 2 bytes a second does not hold the listing
    from dsbuilder.fetch.ytdlp import YtDlp

    ytdlp = YtDlp(fmt="best", user_agent=UA, timeout_s=2, retries=0, backoff_s=0.01,
                  min_interval_s=0, max_items=5, max_bytes=10 ** 6,
                  cache_dir=Path(tempfile.mkdtemp()), limiter=HostRateLimiter(0))
    with LoopbackServer() as srv:
        srv.add("/page.html", Route(b"<html>" + b" " * 400 + b"</html>", "text/html", drip_bps=2))
        t = time.perf_counter()
        with pytest.raises(FetchFailed) as err:
            ytdlp.list(srv.url("/page.html"))
        assert err.value.reason == "timeout" and err.value.transient
        assert time.perf_counter() - t < 6
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(FetchFailed) as err:
        client.download(f"http://127.0.0.1:{port}/x.jpg", tempfile.mkdtemp())
    assert err.value.reason == "connection_refused"
    with pytest.raises(FetchFailed) as err:
        client.download("http://no-such-host.invalid/x.jpg", tempfile.mkdtemp())
    assert err.value.reason == "dns_error"


def test_a_redirect_cannot_steer_a_fetch_into_a_local_address():
    """The recipe names 127.0.0.1 (trusted); a redirect to localhost, another name for a loopback
    address, is refused (blocked_address), as is an untrusted client's loopback URL."""
    from dsbuilder.fetch.common import FetchFailed, HostRateLimiter
    from dsbuilder.fetch.http import HttpClient

    with LoopbackServer() as srv:
        port = srv.base_url.rsplit(":", 1)[1].strip("/")
        srv.add("/ok.jpg", Route(b"\xff\xd8data", "image/jpeg"))
        srv.add("/jump", Route(b"", "text/plain", status=302,
                               headers={"Location": f"http://localhost:{port}/ok.jpg"}))
        trusting = HttpClient(user_agent=UA, timeout_s=2, retries=0, backoff_s=0.01,
                              max_bytes=10 ** 6, limiter=HostRateLimiter(0),
                              trusted_hosts={"127.0.0.1"})
        assert trusting.download(srv.url("/ok.jpg"), tempfile.mkdtemp()).size == 6
        with pytest.raises(FetchFailed) as err:
            trusting.download(srv.url("/jump"), tempfile.mkdtemp())
        assert err.value.reason == "blocked_address" and "localhost" in err.value.detail
        plain = HttpClient(user_agent=UA, timeout_s=2, retries=0, backoff_s=0.01,
                           max_bytes=10 ** 6, limiter=HostRateLimiter(0))
        with pytest.raises(FetchFailed) as err:
            plain.download(srv.url("/ok.jpg"), tempfile.mkdtemp())
        assert err.value.reason == "blocked_address" and not err.value.transient


def test_robots_txt_applies_to_direct_video_urls(server, media, tmp_path):
    """A video URL that yt-dlp's generic extractor fetches is an HTTP fetch like a photo: a path
    robots.txt disallows is not downloaded (robots_disallowed)."""
    server.add("/private/clip.mp4", Route.file(media["a.mp4"]))
    recipe = write_recipe(tmp_path, [{"id": "p", "videos": [server.url("/private/clip.mp4")]}])
    server.reset_log()
    _, ws = run_scrape(recipe, tmp_path / "ws")
    rej = read_table(ws, "rejections").to_pylist()
    assert [r["reason"] for r in rej] == ["robots_disallowed"], rej
    assert server.counts().get("/private/clip.mp4", 0) <= 1  # yt-dlp's probe at most, no download
    assert not [s for s in read_table(ws, "sources").to_pylist() if s["status"] == "ok"]


def test_rule_rejections_are_information_and_unreachable_sources_warnings(caplog):
    import logging

    from dsbuilder.stages import scrape

    assert scrape.RULE_REASONS <= set(scrape.SPEC.reasons)
    with caplog.at_level(logging.INFO, logger="dsbuilder.stages.scrape"):
        scrape._log_rejected("video", "a.mp4", {"reason": "no_audio", "detail": "no audio stream"})
        scrape._log_rejected("photo", "b.jpg", {"reason": "http_error", "detail": "404"})
    levels = {r.getMessage().split(":")[1].strip(): r.levelno for r in caplog.records}
    assert levels == {"no_audio": logging.INFO, "http_error": logging.WARNING}
