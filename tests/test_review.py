"""`dsbuilder review`: the local review page, its decisions in the review CSV, and the report
applying them. Driven over HTTP on 127.0.0.1 as a browser would (GET the page and a clip, POST the
forms); a real headless browser drives it too when Playwright and Chromium are installed."""

from __future__ import annotations

import shutil

import pytest
import requests

from dsbuilder import pipeline
from dsbuilder.manifest.io import read_table
from dsbuilder.review import read_decisions, serve_in_thread



def test_review_page_plays_clips_and_decisions_reach_the_report(ws_copy):
    recipe, ws = ws_copy
    clips = read_table(ws, "clips").to_pylist()
    path = ws.root / "review.csv"
    server, url = serve_in_thread(ws, path)
    try:
        page = requests.get(url, timeout=10).text
        for c in clips:
            assert c["clip_id"] in page
        video = clips[0]["video_path"]
        r = requests.get(url + "media/" + video, timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"] == "video/mp4"
        assert r.content == (ws.root / video).read_bytes()
        # nothing outside clips/ is served
        assert requests.get(url + "media/raw/" + "x.mp4", timeout=10).status_code == 404
        assert requests.get(url + "media/../../etc/passwd", timeout=10).status_code == 404
        target = clips[0]["clip_id"]
        r = requests.post(url + "decide", data={"clip_id": target, "decision": "reject",
                                                "note": "wrong person"},
                          allow_redirects=False, timeout=10)
        assert r.status_code == 303
        r = requests.post(url + "decide", data={"clip_id": clips[-1]["clip_id"],
                                                "decision": "accept", "note": ""}, timeout=10)
        assert r.status_code == 200
        assert requests.post(url + "decide", data={"clip_id": target, "decision": "maybe"},
                             timeout=10).status_code == 400
    finally:
        server.shutdown()
        server.server_close()
    assert read_decisions(path)[target] == ("reject", "wrong person")
    pipeline.run_stage("report", recipe, ws, progress=False)
    after = {c["clip_id"]: c for c in read_table(ws, "clips").to_pylist()}
    assert target not in after and after[clips[-1]["clip_id"]]["review"] == "accepted"
    (rej,) = [r for r in read_table(ws, "rejections").to_pylist()
              if r["reason"] == "curator_rejected"]
    assert rej["item_id"] == target and rej["detail"] == "wrong person"


def test_review_in_a_headless_browser(ws_copy):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install playwright; "
                                      "playwright install chromium): the browser test is skipped")
    recipe, ws = ws_copy
    target = read_table(ws, "clips").to_pylist()[0]["clip_id"]
    server, url = serve_in_thread(ws, ws.root / "review.csv")
    try:
        with sync_api.sync_playwright() as p:
            system = shutil.which("chromium") or shutil.which("chromium-browser")
            try:  # Playwright's own Chromium (a CDN download), else the system's (Debian's)
                browser = p.chromium.launch(executable_path=system) if system else \
                    p.chromium.launch()
            except Exception as exc:  # noqa: BLE001 - no browser binary on this machine
                pytest.skip(f"no Chromium for Playwright here: {str(exc).splitlines()[0]}")
            pg = browser.new_page()
            pg.goto(url)
            form = pg.locator(f"section[id='{target}'] form")
            form.locator("input[value=reject]").check()
            form.locator("input[name=note]").fill("blurred")
            form.locator("button").click()
            pg.wait_for_load_state()
            assert "reject" in pg.locator(f"section[id='{target}']").get_attribute("class")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert read_decisions(ws.root / "review.csv")[target] == ("reject", "blurred")
