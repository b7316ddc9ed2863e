"""Recipe validation: unknown keys and wrong types name the YAML line and the allowed values."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dsbuilder import config
from dsbuilder.errors import RecipeError
from dsbuilder.recipe import load_recipe, params_hash


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    p = tmp_path / "a.jpg"
    p.write_bytes(b"x")
    return p


def test_minimal_recipe_gets_every_default(tmp_path, photo):
    r = load_recipe(write(tmp_path, """\
        name: t
        people:
          - id: ada
            photos: [a.jpg]
            videos: ["ytsearch5:Ada Lovelace interview", "https://example.org/v.mp4"]
        """))
    assert r.workspace == (Path.cwd() / "workspaces" / "t").resolve()
    assert r.stages["shots"] == config.stage_defaults("shots")
    assert r.limits["max_items_per_query"] == config.LIMITS["max_items_per_query"].default
    kinds = [(s.kind, s.ref_type) for s in r.sources()]
    assert kinds == [("photo", "path"), ("video", "search"), ("video", "url")]
    assert r.sources()[0].ref == str(photo.resolve())  # relative to the recipe file


def test_typo_key_names_line_and_suggests(tmp_path, photo):
    p = write(tmp_path, """\
        name: t
        people:
          - id: ada
            photos: [a.jpg]
        stages:
          shots:
            min_shot_secs: 2
        """)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert e.value.line == 7
    assert "min_shot_secs" in e.value.message and "min_shot_s" in e.value.message
    assert e.value.hint == "did you mean 'min_shot_s'?"
    assert e.value.exit_code == 2


def test_wrong_type_and_choice_name_allowed_values(tmp_path, photo):
    p = write(tmp_path, """\
        name: t
        people: [{id: ada, photos: [a.jpg]}]
        stages:
          shots: {detector: adaptiv}
        """)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert e.value.line == 4 and "'adaptive', 'content'" in e.value.message
    p = write(tmp_path, """\
        name: t
        people: [{id: ada, photos: [a.jpg]}]
        limits:
          max_duration_s: "long"
        """)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert e.value.line == 4 and "int or float" in e.value.message
    p = write(tmp_path, """\
        name: t
        people: [{id: ada, photos: [a.jpg]}]
        stages: {scrape: {retries: -1}}
        """)
    with pytest.raises(RecipeError, match=r"in \[0, 20\]"):
        load_recipe(p)


def test_bool_is_not_a_number(tmp_path, photo):
    p = write(tmp_path, """\
        name: t
        people: [{id: ada, photos: [a.jpg]}]
        stages: {scrape: {timeout_s: true}}
        """)
    with pytest.raises(RecipeError, match="timeout_s"):
        load_recipe(p)


def test_missing_local_path_is_a_clear_error(tmp_path):
    p = write(tmp_path, """\
        name: t
        people:
          - id: ada
            videos:
              - missing/clip.mp4
        """)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert e.value.line == 5
    assert "does not exist" in e.value.message and "clip.mp4" in e.value.message


@pytest.mark.parametrize("body, needle", [
    ("name: t\npeople: []\n", "non-empty 'people'"),
    ("name: Bad Name\npeople: [{id: a}]\n", "lowercase id"),
    ("name: t\npeople: [{id: a}, {id: a}]\n", "used twice"),
    ("name: t\npeople: [{id: a, photos: ['ytsearch2:x']}]\n", "searches are for videos"),
    ("name: t\npeople: [{id: a, photos: [{url: 'http://x/y.jpg', path: 'z'}]}]\n", "exactly one"),
    ("name: t\npeople:\n  - id: a\n   photos: []\n", "YAML syntax error"),
    ("name: t\npeople: [{id: a}]\nstages:\n  report: {}\n  report: {group_by: video}\n",
     "'report' appears twice"),
    ("name: t\npeople: [{id: a, videos: [{url: 'https://x.org/v', split: dev}]}]\n",
     "split must be one of train, val, test"),
    ("name: t\npeople: [{id: a, photos: [{url: 'https://x.org/a.jpg', split: test}]}]\n",
     "videos only"),
    ("name: t\npeople:\n  - {id: a, videos: [{url: 'https://x.org/v', split: test}]}\n"
     "  - {id: b, videos: [{url: 'https://x.org/v', split: train}]}\n", "held in split test"),
    ("", "empty"),
])
def test_invalid_recipes(tmp_path, body, needle):
    p = tmp_path / "r.yaml"
    p.write_text(body)
    with pytest.raises(RecipeError, match=needle):
        load_recipe(p)


def test_params_hash_changes_only_with_the_stage(tmp_path, photo):
    base = "name: t\npeople: [{id: a, photos: [a.jpg]}]\n"
    r1 = load_recipe(write(tmp_path, base))
    r2 = load_recipe(write(tmp_path, base + "stages: {shots: {min_shot_s: 1.5}}\n"))
    assert params_hash(r1.stage_params("scrape")) == params_hash(r2.stage_params("scrape"))
    assert params_hash(r1.stage_params("shots")) != params_hash(r2.stage_params("shots"))
    r3 = load_recipe(write(tmp_path, base + "limits: {max_duration_s: 10}\n"))
    assert params_hash(r1.stage_params("scrape")) != params_hash(r3.stage_params("scrape"))


def test_a_video_entry_can_hold_its_videos_in_a_split(tmp_path):
    body = """\
        name: t
        people:
          - id: ada
            videos:
              - {url: "https://example.org/a.mp4", split: test}
              - https://example.org/b.mp4
        """
    r = load_recipe(write(tmp_path, body))
    pinned, free = [s for s in r.sources()]
    assert pinned.split == "test" and free.split is None
    assert r.split_pins() == {pinned.spec_id: "test"}
    # the report's parameters carry the pins: moving a video to another split redoes the report
    moved = load_recipe(write(tmp_path, body.replace("split: test", "split: val")))
    assert params_hash(r.stage_params("report")) != params_hash(moved.stage_params("report"))
    assert params_hash(r.stage_params("faces")) == params_hash(moved.stage_params("faces"))
    assert r.effective()["people"][0]["videos"][0]["split"] == "test"


def test_repo_recipes_are_valid():
    repo = Path(__file__).resolve().parents[1]
    r = load_recipe(repo / "recipes" / "example-web.yaml")
    assert {s.ref_type for s in r.sources()} == {"url", "search"}
