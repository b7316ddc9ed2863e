"""Every stage's contract is its SPEC: the registry, recipe validation, the CLI, the validator and
docs/stages.md all read it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import run_cli
from dsbuilder import config
from dsbuilder.manifest.schema import REASONS, schemas
from dsbuilder.stages import CODE_VERSIONS, STAGES, get_spec, specs
from dsbuilder.stages.spec import EXECUTOR_REASONS

REPO = Path(__file__).resolve().parents[1]


def test_every_stage_has_a_complete_spec():
    tables = schemas()
    for s in specs():
        assert s.name in STAGES and s.help.endswith(".") and s.code_version
        assert s.reasons and all(v for v in s.reasons.values()), s.name
        for t in s.writes + s.reads:
            assert t in tables, f"{s.name}: unknown table {t}"
        assert config.STAGE_PARAMS[s.name] is s.params
        assert CODE_VERSIONS[s.name] == s.code_version
        assert set(REASONS[s.name]) == set(s.reasons) | set(EXECUTOR_REASONS)


def test_each_table_is_written_by_one_stage_and_read_after_it():
    writer = {}
    for s in specs():
        for t in s.writes:
            assert t not in writer, f"{t} written by {writer.get(t)} and {s.name}"
            writer[t] = s.name
    for s in specs():
        for t in s.reads:
            if t != "rejections":
                assert STAGES.index(writer[t]) < STAGES.index(s.name), (s.name, t)


def test_docs_stages_md_is_generated_from_the_specs():
    out = subprocess.run([sys.executable, "-m", "dsbuilder.stages"], capture_output=True,
                         text=True, check=True).stdout
    assert (REPO / "docs" / "stages.md").read_text() == out, \
        "docs/stages.md is stale: python -m dsbuilder.stages > docs/stages.md"


def test_stage_commands_take_help_and_options_from_the_spec():
    res = run_cli("label", "--help")
    assert res.returncode == 0 and get_spec("label").help.split(":")[0] in " ".join(res.stdout.split())
    assert "--au-csv" in res.stdout and "--executor" in res.stdout
    assert "--retry-failed" in run_cli("scrape", "--help").stdout
    assert "--show" in run_cli("faces", "--help").stdout


def test_recipe_rejects_an_unknown_executor(tmp_path):
    from dsbuilder.errors import RecipeError
    from dsbuilder.recipe import load_recipe

    r = tmp_path / "r.yaml"
    r.write_text("name: x\npeople: [{id: a}]\nrun: {executor: spark}\n")
    try:
        load_recipe(r)
    except RecipeError as exc:
        assert "run.executor" in str(exc) and "'ray'" in str(exc)
    else:
        raise AssertionError("an unknown executor was accepted")
    r.write_text("name: x\npeople: [{id: a}]\nrun: {executor: process, jobs: 2}\n")
    cfg = load_recipe(r).executor
    assert (cfg.kind, cfg.jobs) == ("process", 2)
