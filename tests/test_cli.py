"""The command line: fast help, one-line errors with hints, exit codes."""

from __future__ import annotations

import subprocess
import sys

from conftest import run_cli

HEAVY = ("av", "cv2", "numpy", "pyarrow", "yt_dlp", "scenedetect", "requests", "dlib", "PIL",
         "yaml", "tqdm")


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom dsbuilder.cli import cli\n"
            "r = CliRunner().invoke(cli, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "for sub in ('run', 'scrape', 'shots', 'manifest', 'recipe'):\n"
            "    assert CliRunner().invoke(cli, [sub, '--help']).exit_code == 0\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_recipe_error_is_one_line_with_hint_and_exit_2(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: t\npeople: [{id: a}]\nstagse: {}\n")
    res = run_cli("run", str(p), "--workspace", str(tmp_path / "ws"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "r.yaml:3" in lines[0] and "'stagse'" in lines[0]
    assert lines[1] == "hint: did you mean 'stages'?"
    assert "Traceback" not in res.stderr


def test_missing_recipe_and_bad_stage_exit_2(tmp_path):
    res = run_cli("run", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2 and "recipe file not found" in res.stderr
    p = tmp_path / "r.yaml"
    p.write_text("name: t\npeople: [{id: a}]\n")
    res = run_cli("run", str(p), "--only", "nosuchstage")
    assert res.returncode == 2 and "Invalid value for '--only'" in res.stderr


def test_debug_env_shows_traceback(tmp_path):
    res = run_cli("run", str(tmp_path / "nope.yaml"), env={"DSBUILDER_DEBUG": "1"})
    assert res.returncode != 0 and "Traceback" in res.stderr and "RecipeError" in res.stderr


def test_recipe_show_prints_effective_config(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: t\npeople: [{id: a}]\nstages: {shots: {detector: content}}\n")
    res = run_cli("recipe", "show", str(p))
    assert res.returncode == 0, res.stderr
    import yaml

    eff = yaml.safe_load(res.stdout)
    assert eff["stages"]["shots"]["detector"] == "content"
    assert eff["stages"]["shots"]["min_shot_s"] == 0.5  # a default filled in
    from dsbuilder.config import STAGES

    assert set(eff["stage_params_hash"]) == set(STAGES)


def test_commands_that_read_a_run_refuse_a_missing_workspace_and_create_nothing(tmp_path):
    from dsbuilder import synth

    synth.write_photo(tmp_path / "p.jpg", synth.grace_hopper())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: t\nworkspace: {tmp_path / 'ws'}\npeople:\n  - id: p\n"
                      f"    photos: [{tmp_path / 'p.jpg'}]\n")
    for args in (("train", "fer", str(recipe)), ("train", "speech", str(recipe)),
                 ("takedown", str(recipe), "src-x", "--reason", "r")):
        r = run_cli(*args)
        assert r.returncode == 2 and "no workspace at" in r.stderr, (args, r.stderr)
    assert not (tmp_path / "ws").exists()
