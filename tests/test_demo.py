"""The end of `dsbuilder demo`: a line per stage that agrees with the manifests, and the next
commands (review, both trainers) that work on the workspace the demo wrote."""

from __future__ import annotations

import os
import re

from dsbuilder import demo
from dsbuilder.manifest.io import read_table


def test_stage_lines_agree_with_the_manifests(demo_workspace):
    _, ws = demo_workspace
    lines = demo.stage_lines(ws)
    by_stage = {line.split()[0]: line for line in lines}
    assert list(by_stage) == ["scrape", "dictionary", "shots", "faces", "speakers", "label",
                              "report"]
    clips = read_table(ws, "clips").to_pylist()
    counts = {s: sum(c["split"] == s for c in clips) for s in ("train", "val", "test")}
    assert all(counts.values())  # the demo fills every split
    assert f"train {counts['train']}, val {counts['val']}, test {counts['test']}" in by_stage["report"]
    speech = read_table(ws, "speech").to_pylist()
    speaking = {r["track_id"] for r in speech if r["speaking"]}
    tracks = {r["track_id"] for r in speech}
    assert speaking and f"{len(speaking)} of {len(tracks)} tracks speaking" in by_stage["speakers"]
    # the not-speaking tracks are named by reason; the demo's mute and dubbed copies give both
    assert re.search(r"silent \d", by_stage["speakers"])
    rejected = read_table(ws, "rejections").to_pylist()
    not_target = sum(r["reason"] == "not_target" for r in rejected)
    assert not_target and f"not_target {not_target}" in by_stage["faces"]
    assert "no_audio 1" in by_stage["scrape"] and "duplicate 1" in by_stage["scrape"]


def test_next_steps_name_the_workspace_only_when_it_was_chosen(demo_workspace):
    recipe, ws = demo_workspace
    plain = demo.next_steps(ws, recipe.path, "dsbuilder")
    chosen = demo.next_steps(ws, recipe.path, "dsbuilder", workspace_given=True)
    assert str(ws.root / "report" / "report.html") in plain[0]
    for cmd in ("review", "train speech", "train fer"):
        assert any(f"dsbuilder {cmd} " in line and " -w " not in line for line in plain)
        assert any(f"dsbuilder {cmd} " in line and " -w " in line for line in chosen)


def test_program_name_is_what_the_shell_finds(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "dsbuilder"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.defpath)
    assert demo.program_name(str(exe)) == os.path.join("bin", "dsbuilder")  # not on PATH
    monkeypatch.setenv("PATH", str(exe.parent))
    assert demo.program_name(str(exe)) == "dsbuilder"


def test_a_track_the_speakers_stage_could_not_score_is_dropped(demo_workspace, monkeypatch):
    import pyarrow as pa

    from dsbuilder.manifest import io

    _, ws = demo_workspace
    real = io.read_table

    def with_unscored(w, name):
        table = real(w, name)
        if name != "rejections":
            return table
        rows = table.to_pylist()
        rows.append({**rows[0], "stage": "speakers", "reason": "too_short",
                     "item_id": "src-x-shot0000-trk000"})  # a track id: it has no speech rows
        return pa.Table.from_pylist(rows, schema=table.schema)

    monkeypatch.setattr(io, "read_table", with_unscored)
    speakers = next(line for line in demo.stage_lines(ws) if line.split()[0] == "speakers")
    assert speakers.endswith("dropped 1 (too_short 1)")
