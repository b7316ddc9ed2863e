"""Shared fixtures. Real-media tests use ../shared/media and skip with a message when it is absent."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDIA = REPO.parent / "shared" / "media"


@pytest.fixture(scope="session")
def shared_media() -> Path:
    if not SHARED_MEDIA.is_dir():
        pytest.skip(f"real media not found at {SHARED_MEDIA} (a checkout without ../shared)")
    return SHARED_MEDIA


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``dsbuilder`` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "dsbuilder.cli", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)


def add_video(ws, src: Path, source_id: str, person_id: str = "p") -> dict:
    """Copy ``src`` into the workspace as scrape would, and return its ``sources`` row."""
    from dsbuilder.workspace import sha256_file

    dest = ws.raw / "videos" / f"{source_id}.mp4"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return {"source_id": source_id, "kind": "video", "status": "ok", "person_ids": [person_id],
            "request_ids": ["req-1"], "sha256": sha256_file(dest), "local_path": ws.relpath(dest)}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def hamilton_workspace(shared_media, tmp_path_factory):
    """The whole pipeline (scrape ... report) on short_hamilton_clip.mp4 with the reference photos of
    Lin-Manuel Miranda (whose video it is) and Alex Lacamoire; shared by the real-media acceptance
    tests of several stages."""
    from dsbuilder import pipeline
    from dsbuilder.recipe import load_recipe
    from dsbuilder.workspace import Workspace

    tmp = tmp_path_factory.mktemp("hamilton")
    people = shared_media / "people"
    recipe_path = tmp / "hamilton.yaml"
    recipe_path.write_text(
        "name: hamilton\n"
        "people:\n"
        f"  - id: lin\n    photos: [{people / 'lin-manuel-miranda.png'}]\n"
        f"    videos: [{shared_media / 'video' / 'short_hamilton_clip.mp4'}]\n"
        f"  - id: alex\n    photos: [{people / 'alex-lacamoire.png'}]\n")
    recipe = load_recipe(recipe_path, tmp / "ws")
    ws = Workspace.open(tmp / "ws")
    pipeline.run(recipe, ws, progress=False)
    return ws


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory):
    """The offline demo's whole pipeline (scrape ... report), run once: ``(recipe, workspace)``."""
    from dsbuilder import demo, pipeline
    from dsbuilder.recipe import load_recipe
    from dsbuilder.workspace import Workspace

    d = tmp_path_factory.mktemp("demo-pipeline")
    recipe = load_recipe(demo.make_recipe(d), d / "ws")
    ws = Workspace.open(d / "ws")
    pipeline.run(recipe, ws, progress=False)
    return recipe, ws


@pytest.fixture()
def ws_copy(demo_workspace, tmp_path):
    """A private copy of the demo workspace, for tests that change it: ``(recipe, workspace)``."""
    import shutil

    from dsbuilder.workspace import Workspace

    recipe, demo = demo_workspace
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(demo.root, ws.root, dirs_exist_ok=True)
    return recipe, ws
