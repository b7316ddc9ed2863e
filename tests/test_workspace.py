"""Atomic writes: a crash leaves the old file or the new one, never a mix, and no temporaries."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dsbuilder.workspace import Workspace, atomic_write_bytes, atomic_write_json, item_key


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "a" / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # usual permissions, not mkstemp's


def test_failed_write_keeps_old_content(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object.__new__(type("X", (), {"__str__": None}))})
    assert target.read_text().strip().startswith("{")
    assert "\"a\": 1" in target.read_text()
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("phase", ["before", "after"])
def test_sigkill_during_write(tmp_path, phase):
    """A real SIGKILL between writing the temporary file and renaming it (or just after)."""
    target = tmp_path / "cache" / "f.txt"
    target.parent.mkdir()
    target.write_text("old")
    code = ("from dsbuilder.workspace import atomic_write_bytes\n"
            f"atomic_write_bytes({str(target)!r}, b'new')\n")
    env = {**os.environ, "DSBUILDER_KILL_AT": f"1:{phase}"}
    res = subprocess.run([sys.executable, "-c", code], env=env)
    assert res.returncode == -9
    assert target.read_text() == ("old" if phase == "before" else "new")
    leftovers = [p for p in target.parent.iterdir() if p.name != "f.txt"]
    assert len(leftovers) == (1 if phase == "before" else 0)
    Workspace.open(tmp_path)  # opening a workspace sweeps temporaries left by a crash
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_records_round_trip_and_keys_depend_on_all_parts(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    k = item_key("sha", "params", "1")
    assert ws.get_record("shots", k) is None
    ws.put_record("shots", k, {"x": [1, 2]})
    assert ws.get_record("shots", k) == {"x": [1, 2]}
    assert len({k, item_key("sha2", "params", "1"), item_key("sha", "p2", "1"),
                item_key("sha", "params", "2")}) == 4


def test_an_empty_table_has_its_schema_and_no_row_group(tmp_path):
    import pyarrow.parquet as pq

    from dsbuilder.manifest.io import read_table, write_table
    from dsbuilder.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws")
    path = write_table(ws, "rejections", [], "h", part="shots")
    f = pq.ParquetFile(path)
    assert f.num_row_groups == 0 and "reason" in f.schema_arrow.names
    assert read_table(ws, "rejections").num_rows == 0
