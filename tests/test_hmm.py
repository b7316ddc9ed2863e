"""HMM segmentation and generation of AU sequences (dsbuilder.labels.hmm) and `dsbuilder hmm`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from dsbuilder.labels import hmm as H

NAMES = ("AU01_geom", "AU12_geom", "AU25_geom")
MEANS = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])


def _synthetic(seed=0, n_seq=4, length=120):
    """Piecewise-constant means + Gaussian noise with known change points."""
    rng = np.random.default_rng(seed)
    seqs, cps = [], []
    for s in range(n_seq):
        cuts = [0, *sorted(rng.choice(np.arange(15, length - 14, 5), 2, replace=False).tolist()),
                length]
        states = [(s + i) % 3 for i in range(3)]
        seqs.append(np.concatenate([MEANS[states[i]] + 0.12 * rng.standard_normal(
            (cuts[i + 1] - cuts[i], 3)) for i in range(3)]))
        cps.append(cuts[1:-1])
    return seqs, cps


@pytest.fixture(scope="module")
def fitted():
    seqs, cps = _synthetic()
    return H.fit(seqs, NAMES, fps=25.0, n_states=(2, 4), restarts=2, seed=0), seqs, cps


def test_recovers_change_points(fitted):
    model, seqs, cps = fitted
    assert model.n_states == 3 and model.selection["criterion"] == "bic"
    for X, truth in zip(seqs, cps):
        segs = H.segments(model, X)
        found = [s.start for s in segs][1:]
        assert len(found) == len(truth)
        assert all(abs(a - b) <= 2 for a, b in zip(found, truth)), (found, truth)
        assert segs[0].start == 0 and segs[-1].end == len(X)
    # states match the generating means; their FACS reading: AU12 -> happiness, ~0 -> neutral
    emos = {tuple(np.round(m).astype(int)): e for m, (e, _) in
            zip(model.state_means(), H.state_emotions(model))}
    assert emos[(0, 1, 0)] == "happiness" and emos[(0, 0, 0)] == "neutral"


def test_deterministic_and_round_trip(fitted, tmp_path):
    model, seqs, _ = fitted
    again = H.fit(seqs, NAMES, fps=25.0, n_states=(2, 4), restarts=2, seed=0)
    assert H.model_to_dict(again) == H.model_to_dict(model)
    path = H.save_model(model, tmp_path / "m.json")
    d = json.loads(path.read_text())
    assert d["format"] == "dsbuilder-hmm/1" and d["n_states"] == 3
    loaded = H.load_model(path)
    assert np.allclose(loaded.hmm.transmat_, model.hmm.transmat_)
    assert np.allclose(loaded.state_means(), model.state_means())
    assert np.array_equal(H.decode(loaded, seqs[1]), H.decode(model, seqs[1]))
    assert loaded.selection["scores"].keys() == model.selection["scores"].keys()
    with pytest.raises(ValueError, match="format"):
        H.model_from_dict({**d, "format": "pickle"})


def test_heldout_and_poisson():
    seqs, cps = _synthetic(seed=1)
    m = H.fit(seqs, NAMES, fps=25.0, n_states=(2, 4), criterion="heldout", restarts=2, seed=0)
    assert m.n_states >= 3 and set(m.selection["scores"]) == {2, 3, 4}
    p = H.fit([s * 3 for s in seqs], NAMES, fps=25.0, n_states=3, family="poisson", seed=0)
    assert p.family == "poisson" and p.selection["criterion"] == "fixed"
    d = H.model_to_dict(p)
    assert "lambdas" in d and np.allclose(H.model_from_dict(d).state_means(), p.state_means())
    found = [s.start for s in H.segments(p, seqs[0] * 3)][1:]
    assert len(found) == 2 and all(abs(a - b) <= 2 for a, b in zip(found, cps[0]))
    with pytest.raises(ValueError):
        H.fit(seqs, NAMES, fps=25, family="nope", n_states=2)


def test_sample_and_graph(fitted, tmp_path):
    model = fitted[0]
    vals, states = H.sample(model, 2.0, seed=3)
    assert vals.shape == (50, 3) and (vals >= 0).all() and set(states) <= {0, 1, 2}
    v2, s2 = H.sample(model, 2.0, seed=3)
    assert np.array_equal(vals, v2) and np.array_equal(states, s2)
    dot = H.transition_dot(model)
    assert dot.startswith("digraph") and "S0 -> S0" in dot
    png = H.draw_transitions(model, tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs():
    assert H.runs(np.array([0, 0, 1, 1, 1, 0])) == [(0, 2, 0), (2, 5, 1), (5, 6, 0)]
    assert H.runs(np.array([], int)) == []


# --- CLI on a small synthetic workspace -----------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tracks and frames tables for person 'p1': landmark sequences moving between neutral, smile and
    raised brows + open jaw, with known change points."""
    from dsbuilder.face import api
    from dsbuilder.manifest.io import write_table
    from dsbuilder.synth import grace_hopper
    from dsbuilder.workspace import Workspace

    img = grace_hopper()
    base = api.landmarks(img, api.detect(img)[0].box).astype(np.float64)

    def pose(kind):
        m = base.copy()
        if kind == 1:  # smile
            m[48] += (-8, -8)
            m[54] += (8, -8)
        elif kind == 2:  # surprise-like: brows up, jaw open
            m[17:27, 1] -= 12
            m[[5, 6, 7, 8, 9, 10, 11, 55, 56, 57, 58, 59, 65, 66, 67], 1] += 18
        return m

    rng = np.random.default_rng(0)
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    tracks, frames, truth = [], [], {}
    fps = 25.0
    for k in range(3):
        tid = f"src1-t{k}"
        start = 100 * k
        plan = [(0, 30), ((k % 2) + 1, 25), (0, 25)]
        seq = np.concatenate([[pose(kind)] * n for kind, n in plan])
        seq = seq + 0.3 * rng.standard_normal(seq.shape)
        truth[tid] = [30, 55]
        for i, lm in enumerate(seq):
            fi = start + i
            frames.append({"frame_id": f"{tid}-f{fi:06d}", "track_id": tid, "source_id": "src1",
                           "frame_index": fi, "t": fi / fps, "crop_frame": i,
                           "bbox": [150.0, 130.0, 380.0, 360.0],
                           "landmarks": lm.reshape(-1).tolist(), "detected": i % 5 == 0})
        tracks.append({"track_id": tid, "source_id": "src1", "shot_id": "src1-s0",
                       "person_id": "p1", "start_frame": start, "end_frame": start + len(seq),
                       "start_s": start / fps, "end_s": (start + len(seq)) / fps,
                       "n_frames": len(seq), "n_detections": 16, "n_embeddings": 5,
                       "mean_face_px": 230.0, "kept": True})
    write_table(ws, "tracks", tracks, "test")
    write_table(ws, "frames", frames, "test")
    return ws, truth


def test_cli_fit_sample_animate(workspace, tmp_path):
    from dsbuilder.cli import cli
    from dsbuilder.manifest.io import read_table

    ws, truth = workspace
    r = CliRunner().invoke(cli, ["hmm", "fit", "-w", str(ws.root), "--person", "p1",
                                 "--max-states", "4", "--restarts", "2"])
    assert r.exit_code == 0, r.output
    model_path = ws.root / "models" / "hmm" / "p1.json"
    assert json.loads(model_path.read_text())["n_states"] == 3
    segs = read_table(ws, "segments").to_pylist()
    by_track: dict[str, list] = {}
    for s in segs:
        by_track.setdefault(s["track_id"], []).append(s)
    for tid, cps in truth.items():
        rows = sorted(by_track[tid], key=lambda s: s["segment_index"])
        assert len(rows) == 3
        start = rows[0]["start_frame"]
        assert all(abs(r_["start_frame"] - start - c) <= 2 for r_, c in zip(rows[1:], cps))
        assert rows[0]["nearest_emotion"] == "neutral"
        assert rows[-1]["end_frame"] == start + 80 and rows[0]["model_path"] == "models/hmm/p1.json"
        assert len(rows[1]["au_profile"]) == len(rows[1]["au_names"])
    middle = {by_track[t][1]["nearest_emotion"] for t in truth}
    assert middle == {"happiness", "surprise"}
    before = (ws.manifests / "segments.parquet").read_bytes()
    r = CliRunner().invoke(cli, ["hmm", "fit", "-w", str(ws.root), "--person", "p1",
                                 "--max-states", "4", "--restarts", "2"])
    assert r.exit_code == 0 and (ws.manifests / "segments.parquet").read_bytes() == before

    out = tmp_path / "gen.csv"
    r = CliRunner().invoke(cli, ["hmm", "sample", "-w", str(ws.root), "--person", "p1",
                                 "--seconds", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 50 and "AU12_geom" in rows[0] and "state" in rows[0]
    assert out.with_suffix(".dot").read_text().startswith("digraph")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"

    gif = tmp_path / "face.gif"
    r = CliRunner().invoke(cli, ["hmm", "animate", "--csv", str(out), "-o", str(gif), "--size", "96"])
    assert r.exit_code == 0, r.output
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames > 1 and im.size == (96, 96)
    mp4 = tmp_path / "track.mp4"
    r = CliRunner().invoke(cli, ["hmm", "animate", "-w", str(ws.root), "--track", "src1-t0",
                                 "-o", str(mp4), "--size", "96"])
    assert r.exit_code == 0, r.output
    import av

    with av.open(str(mp4)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 80

    r = CliRunner().invoke(cli, ["hmm", "animate", "--csv", str(out), "-o", str(tmp_path / "x.avi")])
    assert r.exit_code != 0
    r = CliRunner().invoke(cli, ["hmm", "sample", "-w", str(ws.root), "--person", "nobody",
                                 "-o", str(tmp_path / "n.csv")])
    assert r.exit_code != 0


def test_schematic_moves_with_aus():
    from dsbuilder.labels.schematic import au_dict, draw_face

    a = np.asarray(draw_face({}, size=128))
    b = np.asarray(draw_face({12: 1.0, 25: 1.0}, size=128))
    c = np.asarray(draw_face({1: 1.0, 2: 1.0}, size=128))
    assert a.shape == (128, 128, 3)
    diff_mouth = np.abs(a.astype(int) - b).sum(axis=2) > 0
    diff_brow = np.abs(a.astype(int) - c).sum(axis=2) > 0
    assert diff_mouth[80:].any() and not diff_mouth[:50].any()  # the mouth, not the brows
    assert diff_brow[:60].any() and not diff_brow[90:].any()
    assert au_dict([0.3, 0.5], ["AU06_07_geom", "AU12_r"]) == {6: 0.3, 7: 0.3, 12: 0.5}


def test_cli_fit_keeps_other_people(workspace):
    """A fit replaces only its person's segments; other rows keep their own params hash."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dsbuilder.cli import cli
    from dsbuilder.manifest.io import read_table, write_table

    ws, _ = workspace
    other = [{"segment_id": "src9-t0-h0", "track_id": "src9-t0", "source_id": "src9",
              "person_id": "p2", "segment_index": 0, "start_frame": 0, "end_frame": 10,
              "start_s": 0.0, "end_s": 0.4, "n_frames": 10, "state": 0, "n_states": 2,
              "family": "gaussian", "au_names": ["AU01_geom"], "au_profile": [0.5],
              "nearest_emotion": "sadness", "emotion_score": 0.7,
              "model_path": "models/hmm/p2.json"}]
    write_table(ws, "segments", other, "hash-of-p2")
    r = CliRunner().invoke(cli, ["hmm", "fit", "-w", str(ws.root), "--person", "p1",
                                 "--min-states", "3", "--max-states", "3", "--family", "poisson"])
    assert r.exit_code == 0, r.output
    rows = read_table(ws, "segments").to_pylist()
    p2 = [x for x in rows if x["person_id"] == "p2"]
    p1 = [x for x in rows if x["person_id"] == "p1"]
    assert len(p2) == 1 and p2[0]["stage_params_hash"] == "hash-of-p2"
    assert len(p1) >= 9 and {x["family"] for x in p1} == {"poisson"}
    assert pq.read_schema(ws.manifests / "segments.parquet").field("au_profile").type == \
        pa.list_(pa.float32())


def test_min_run_viterbi_is_the_best_constrained_path():
    """Against brute force on small random HMMs: the same score as the best path whose runs all last
    >= min_run frames (a shorter sequence: one run), and such a path."""
    import itertools

    from dsbuilder.labels.hmm import runs, viterbi_min_run

    rng = np.random.default_rng(0)

    def score(ls, lt, ll, p):
        return ls[p[0]] + ll[0, p[0]] + sum(lt[a, b] + ll[t + 1, b]
                                            for t, (a, b) in enumerate(zip(p, p[1:])))

    for _ in range(150):
        K, T, D = int(rng.integers(1, 4)), int(rng.integers(1, 8)), int(rng.integers(1, 4))
        ls = np.log(rng.dirichlet(np.ones(K)))
        lt = np.log(rng.dirichlet(np.ones(K), size=K))
        ll = rng.normal(0, 2, (T, K))
        path = viterbi_min_run(ls, lt, ll, D)
        lengths = [b - a for a, b, _ in runs(path)]
        assert (min(lengths) >= D) if T >= D else len(lengths) == 1
        ok = [p for p in itertools.product(range(K), repeat=T)
              if (min(b - a for a, b, _ in runs(np.array(p))) >= D if T >= D
                  else len(set(p)) == 1)]
        best = max(score(ls, lt, ll, p) for p in ok)
        assert score(ls, lt, ll, path) == pytest.approx(best)
    # min_run 1 is the plain Viterbi path
    ls, lt = np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.1, 0.9]])
    ll = np.log(np.array([[0.9, 0.1]] * 3 + [[0.1, 0.9]] + [[0.9, 0.1]] * 3))
    assert viterbi_min_run(ls, lt, ll, 1).tolist() == [0, 0, 0, 0, 0, 0, 0]
    ll = np.log(np.array([[0.99, 0.01]] * 3 + [[0.01, 0.99]] * 2 + [[0.99, 0.01]] * 3))
    assert viterbi_min_run(ls, lt, ll, 1).tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert viterbi_min_run(ls, lt, ll, 3).tolist() == [0] * 8
