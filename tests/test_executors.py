"""Executors: the same outcomes in this process, in a process pool and on Ray; retries of lost
workers and transient failures; and the whole demo recipe giving byte-identical manifests under all
three (``SOURCE_DATE_EPOCH`` fixes the time stamps)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import executor_jobs as jobs
from dsbuilder.errors import StageError, UsageError
from dsbuilder.executors import ExecutorConfig, make_executor


def outcomes(kind: str, fn, ctx, payloads, **kw):
    with make_executor(ExecutorConfig(kind=kind, jobs=2, **kw)) as ex:
        return sorted(ex.map(fn, ctx, payloads), key=lambda o: o.index)


@pytest.mark.parametrize("kind", ["local", "process"])
def test_values_in_item_order_whatever_finishes_first(kind):
    got = outcomes(kind, jobs.square, 1, list(range(7)))
    assert [(o.index, o.ok, o.value) for o in got] == [(i, True, i * i + 1) for i in range(7)]


def test_process_pool_uses_several_workers():
    got = outcomes("process", jobs.pid, None, list(range(6)))
    assert len({o.value for o in got}) == 2 and os.getpid() not in {o.value for o in got}


def test_a_worker_killed_on_every_attempt_ends_as_worker_lost_and_the_rest_complete():
    got = outcomes("process", jobs.die_on, 3, list(range(6)), retries=1)
    lost = [o for o in got if not o.ok]
    assert [(o.index, o.reason, o.attempts) for o in lost] == [(3, "worker_lost", 2)]
    assert "died 2 times" in lost[0].detail
    assert [o.value for o in got if o.ok] == [0, 1, 2, 4, 5]


@pytest.mark.parametrize("kind", ["local", "process"])
def test_a_bug_in_one_item_is_an_internal_error_row_not_a_crash(kind):
    got = outcomes(kind, jobs.buggy, None, [0, 1, 2, 3])
    assert [o.ok for o in got] == [True, True, False, True]
    assert got[2].reason == "internal_error" and "ValueError: a bug in one item" in got[2].detail


@pytest.mark.parametrize("kind", ["local", "process"])
def test_transient_failures_are_retried(kind, tmp_path):
    got = outcomes(kind, jobs.flaky, str(tmp_path), [0, 1, 2])
    assert [(o.ok, o.value, o.attempts) for o in got] == [(True, i, 2) for i in range(3)]
    got = outcomes(kind, jobs.always_transient, None, [7], retries=2)
    assert (got[0].ok, got[0].reason, got[0].attempts) == (False, "timeout", 3)
    assert "after 3 attempts" in got[0].detail


@pytest.mark.parametrize("kind", ["local", "process"])
def test_a_stage_that_cannot_run_stops(kind):
    with pytest.raises(StageError, match="model is missing"):
        outcomes(kind, jobs.cannot_run, None, [0, 1])


def test_bad_configuration_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown executor"):
        ExecutorConfig(kind="spark")
    with pytest.raises(UsageError, match="at least 1"):
        ExecutorConfig(jobs=0)


# --- the whole pipeline ----------------------------------------------------------------------------

def tree_hashes(ws: Path) -> dict[str, str]:
    out = {}
    for sub in ("manifests", "report", "clips", "models"):
        for f in sorted((ws / sub).rglob("*")):
            if f.is_file():
                out[f.relative_to(ws).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def demo_recipe(tmp_path_factory) -> Path:
    from dsbuilder import demo

    # three videos of two people (one of both): work for two workers in every stage
    return demo.make_recipe(tmp_path_factory.mktemp("demo"),
                            ("hopper-talk.mp4", "collins-talk.mp4", "interview.mp4"))


@pytest.fixture(scope="module")
def local_run(demo_recipe, tmp_path_factory) -> dict[str, str]:
    """The part of the demo run in this process (SOURCE_DATE_EPOCH set): its files' hashes."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", "1767225600")
    try:
        ws = tmp_path_factory.mktemp("local")
        run_demo(demo_recipe, ws, ExecutorConfig("local"))
        return tree_hashes(ws)
    finally:
        mp.undo()


def run_demo(recipe: Path, ws: Path, config: ExecutorConfig) -> None:
    from dsbuilder import pipeline
    from dsbuilder.recipe import load_recipe
    from dsbuilder.workspace import Workspace

    rec = load_recipe(recipe, workspace=ws)
    pipeline.run(rec, Workspace.open(ws), progress=False, executor=config)


@pytest.mark.slow
def test_local_process_and_ray_give_byte_identical_manifests_clips_and_report(
        demo_recipe, local_run, tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    expected = local_run
    assert any(k.startswith("clips/") for k in expected)
    assert "manifests/tracks.parquet" in expected and "report/report.json" in expected

    run_demo(demo_recipe, tmp_path / "process", ExecutorConfig("process", jobs=2))
    assert tree_hashes(tmp_path / "process") == expected

    # a 2-worker local Ray; one worker is killed (SIGKILL) on its first item: Ray retries it
    kill_dir = tmp_path / "kill"
    kill_dir.mkdir()
    monkeypatch.setenv("DSBUILDER_KILL_WORKER_ONCE", str(kill_dir))
    run_demo(demo_recipe, tmp_path / "ray", ExecutorConfig("ray", jobs=2))
    assert (kill_dir / "killed").exists(), "no Ray worker was killed"
    assert tree_hashes(tmp_path / "ray") == expected


@pytest.mark.slow
def test_a_killed_pool_worker_is_retried_and_the_manifests_are_unchanged(
        demo_recipe, local_run, tmp_path, monkeypatch):
    from dsbuilder.manifest.io import read_table
    from dsbuilder.workspace import Workspace

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    kill_dir = tmp_path / "kill"
    kill_dir.mkdir()
    monkeypatch.setenv("DSBUILDER_KILL_WORKER_ONCE", str(kill_dir))
    run_demo(demo_recipe, tmp_path / "process", ExecutorConfig("process", jobs=2))
    assert (kill_dir / "killed").exists()
    assert tree_hashes(tmp_path / "process") == local_run
    rej = read_table(Workspace(tmp_path / "process"), "rejections").to_pylist()
    assert not [r for r in rej if r["reason"] in ("worker_lost", "internal_error")]
