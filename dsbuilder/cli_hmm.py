"""``dsbuilder hmm``: fit HMMs on a person's geometric AU sequences, sample from them, animate AUs.

Light at import (only Click); numpy, hmmlearn and the manifests are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import click

#: Defaults of the ``dsbuilder hmm`` commands (kept here so importing the CLI stays light).
DEFAULTS = {"min_states": 2, "max_states": 6, "restarts": 3, "family": "gaussian",
            "criterion": "bic", "seed": 0, "baseline": "median_shape"}


def _model_path(root: Path, person: str) -> Path:
    return root / "models" / "hmm" / f"{person}.json"


def _track_sequences(ws, person: str | None = None, track: str | None = None):
    """``[(track_row, frames sorted by frame_index)]`` from the tracks and frames tables."""
    from dsbuilder.manifest.io import read_table

    tracks = {r["track_id"]: r for r in read_table(ws, "tracks").to_pylist()}
    frames = read_table(ws, "frames").to_pylist()
    by_track: dict[str, list[dict]] = {}
    for f in frames:
        by_track.setdefault(f["track_id"], []).append(f)
    out = []
    for tid in sorted(by_track):
        tr = tracks.get(tid)
        if track is not None and tid != track:
            continue
        if person is not None and (tr is None or tr.get("person_id") != person
                                   or not tr.get("kept", True)):
            continue
        out.append((tr or {"track_id": tid, "source_id": by_track[tid][0]["source_id"],
                           "person_id": None},
                    sorted(by_track[tid], key=lambda r: r["frame_index"])))
    return out


def _fps(rows) -> float:
    import numpy as np

    t = np.array([r["t"] for r in rows])
    dt = np.diff(t)
    dt = dt[dt > 0]
    return round(float(1.0 / np.median(dt)), 3) if len(dt) else 25.0


def _aus(rows, baseline: str):
    import numpy as np

    from dsbuilder.labels.au import track_aus

    lm = np.array([r["landmarks"] for r in rows], dtype=np.float64).reshape(-1, 68, 2)
    return track_aus(lm, method=baseline)  # clipped at 0: intensities above the neutral face


@click.group()
def hmm() -> None:
    """Hidden Markov models of action-unit sequences (geometric AUs from the frames table)."""


@hmm.command("fit")
@click.option("--workspace", "-w", required=True, type=click.Path(file_okay=False, exists=True,
                                                                  path_type=Path))
@click.option("--person", "-p", required=True, help="person_id whose kept tracks are fitted.")
@click.option("--min-states", default=DEFAULTS["min_states"], show_default=True, type=int)
@click.option("--max-states", default=DEFAULTS["max_states"], show_default=True, type=int)
@click.option("--restarts", default=DEFAULTS["restarts"], show_default=True, type=int)
@click.option("--family", default=DEFAULTS["family"], show_default=True,
              type=click.Choice(["gaussian", "poisson"]))
@click.option("--criterion", default=DEFAULTS["criterion"], show_default=True,
              type=click.Choice(["bic", "heldout"]))
@click.option("--baseline", default=DEFAULTS["baseline"], show_default=True,
              type=click.Choice(["percentile", "median_shape"]),
              help="Per-track neutral baseline of the geometric AUs.")
@click.option("--seed", default=DEFAULTS["seed"], show_default=True, type=int)
def hmm_fit(workspace: Path, person: str, min_states: int, max_states: int, restarts: int,
            family: str, criterion: str, baseline: str, seed: int) -> None:
    """Fit an HMM on PERSON's tracks; save models/hmm/<person>.json; write the segments table."""
    import numpy as np

    from dsbuilder.errors import DsbuilderError
    from dsbuilder.labels import hmm as H
    from dsbuilder.labels.au import AU_GEOM_NAMES
    from dsbuilder.manifest.io import read_table, write_table
    from dsbuilder.recipe import params_hash
    from dsbuilder.workspace import Workspace

    ws = Workspace.open(workspace)
    seqs = _track_sequences(ws, person=person)
    if not seqs:
        raise DsbuilderError(f"no kept tracks with frames for person {person!r}",
                             "run the faces stage first, or check --person against the tracks table")
    fps = float(np.median([_fps(rows) for _, rows in seqs]))
    X = [_aus(rows, baseline) for _, rows in seqs]
    model = H.fit(X, AU_GEOM_NAMES, fps=fps, n_states=(min_states, max_states), family=family,
                  criterion=criterion, restarts=restarts, seed=seed)
    mpath = H.save_model(model, _model_path(ws.root, person))
    phash = params_hash({"min_states": min_states, "max_states": max_states, "restarts": restarts,
                         "family": family, "criterion": criterion, "baseline": baseline,
                         "seed": seed, "features": "geometric"})
    new_rows = []
    for (tr, rows), x in zip(seqs, X):
        for k, seg in enumerate(H.segments(model, x)):
            first, last = rows[seg.start], rows[seg.end - 1]
            nxt = rows[seg.end] if seg.end < len(rows) else None
            new_rows.append({
                "segment_id": f"{tr['track_id']}-h{k}", "track_id": tr["track_id"],
                "source_id": tr["source_id"], "person_id": person, "segment_index": k,
                "start_frame": first["frame_index"],
                "end_frame": nxt["frame_index"] if nxt else last["frame_index"] + 1,
                "start_s": first["t"], "end_s": nxt["t"] if nxt else last["t"] + 1.0 / fps,
                "n_frames": seg.end - seg.start, "state": seg.state, "n_states": model.n_states,
                "au_names": list(AU_GEOM_NAMES), "au_profile": list(seg.profile),
                "nearest_emotion": seg.emotion, "emotion_score": seg.emotion_score,
                "model_path": ws.relpath(mpath), "family": family})
    # one segments file for everyone: other people's rows are kept, with their own params hash
    kept = [r for r in read_table(ws, "segments").to_pylist() if r["person_id"] != person]
    hashes = {r["segment_id"]: r.pop("stage_params_hash") for r in kept}
    for r in kept:
        r.pop("schema_version", None)
        r.pop("dsbuilder_version", None)
    _write_segments(ws, kept, hashes, new_rows, phash, write_table)
    click.echo(f"{person}: {len(seqs)} tracks, {sum(len(x) for x in X)} frames, "
               f"{model.n_states} states ({model.selection['criterion']}); "
               f"{len(new_rows)} segments; model {mpath}")


def _write_segments(ws, kept, hashes, new_rows, phash, write_table) -> None:
    """One segments file for everyone; each row keeps the params hash it was written with."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dsbuilder.manifest.io import table_path
    from dsbuilder.workspace import atomic_path

    if not kept:
        write_table(ws, "segments", new_rows, phash)
        return
    # write_table stamps one hash on every row: write, then patch the hash column of older rows
    path = write_table(ws, "segments", kept + new_rows, phash)
    tbl = pq.read_table(path)
    col = [hashes.get(sid, phash) for sid in tbl.column("segment_id").to_pylist()]
    i = tbl.schema.get_field_index("stage_params_hash")
    tbl = tbl.set_column(i, tbl.schema.field(i), pa.array(col, pa.string()))
    with atomic_path(table_path(ws, "segments")) as tmp:
        pq.write_table(tbl, tmp, compression="zstd")


@hmm.command("sample")
@click.option("--workspace", "-w", required=True, type=click.Path(file_okay=False, exists=True,
                                                                  path_type=Path))
@click.option("--person", "-p", required=True)
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(min=0.01))
@click.option("--fps", type=float, help="Sample rate (default: the model's).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of generated AU values; the transition graph goes beside it "
                   "(<stem>.dot and <stem>.png).")
def hmm_sample(workspace: Path, person: str, seconds: float, fps: float | None, seed: int,
               output: Path) -> None:
    """Generate SECONDS of AU values from PERSON's fitted HMM, plus its transition graph."""
    import csv
    import io

    from dsbuilder.errors import DsbuilderError
    from dsbuilder.labels import hmm as H
    from dsbuilder.workspace import atomic_write_bytes

    mpath = _model_path(workspace.resolve(), person)
    if not mpath.exists():
        raise DsbuilderError(f"no HMM for {person!r} at {mpath}",
                             f"run `dsbuilder hmm fit --workspace {workspace} --person {person}`")
    model = H.load_model(mpath)
    fps = fps or model.fps
    vals, states = H.sample(model, seconds, fps=fps, seed=seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["frame", "t", "state", *model.au_names])
    for i, (row, s) in enumerate(zip(vals, states)):
        w.writerow([i, f"{i / fps:.6f}", int(s), *(f"{v:.6f}" for v in row)])
    atomic_write_bytes(output, buf.getvalue().encode())
    dot = output.with_suffix(".dot")
    atomic_write_bytes(dot, H.transition_dot(model).encode())
    png = H.draw_transitions(model, output.with_suffix(".png"))
    click.echo(f"{len(vals)} frames at {fps:g} fps -> {output}; graph {dot}, {png}")


def _read_au_csv(path: Path):
    """Our sample CSV, an OpenFace CSV or a py-feat CSV -> (values 0-1, AU names, fps or None)."""
    import csv

    import numpy as np

    from dsbuilder.labels import au_import

    with open(path, newline="", encoding="utf-8") as fh:
        header = [h.strip() for h in next(csv.reader(fh))]
    if any(h.endswith("_r") for h in header):
        t = au_import.read_openface_csv(path)
    elif "FaceScore" in header or "happiness" in header:
        t = au_import.read_pyfeat_csv(path)
    else:
        from dsbuilder.labels.au import au_numbers

        names = []
        for h in header:
            try:
                au_numbers(h)
                names.append(h)
            except ValueError:
                pass
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        vals = np.array([[float(r[n]) for n in names] for r in rows]) if rows else np.zeros((0, 0))
        fps = None
        if rows and "t" in rows[0] and len(rows) > 1:
            dt = np.diff([float(r["t"]) for r in rows])
            fps = float(1 / np.median(dt)) if (dt > 0).any() else None
        return vals, names, fps
    fps = None
    if t.time is not None and len(t.time) > 1:
        dt = np.diff(t.time)
        fps = float(1 / np.median(dt[dt > 0])) if (dt > 0).any() else None
    return t.values / t.scale, list(t.au_names), fps


@hmm.command("animate")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="AU CSV: `hmm sample` output, OpenFace or py-feat.")
@click.option("--workspace", "-w", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--track", "-t", help="track_id whose geometric AUs are drawn (with --workspace).")
@click.option("--fps", type=float, help="Frame rate (default: from the data, else 25).")
@click.option("--size", default=256, show_default=True, type=click.IntRange(64, 1024))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Animation file: .gif or .mp4.")
def hmm_animate(csv_path: Path | None, workspace: Path | None, track: str | None,
                fps: float | None, size: int, output: Path) -> None:
    """Draw an AU sequence as an animated schematic face (GIF or MP4)."""
    from dsbuilder.errors import DsbuilderError
    from dsbuilder.labels.au import AU_GEOM_NAMES
    from dsbuilder.labels.schematic import animate
    from dsbuilder.workspace import Workspace

    if output.suffix.lower() not in (".gif", ".mp4"):
        raise click.BadParameter("must end in .gif or .mp4", param_hint="-o/--output")
    if (csv_path is None) == (workspace is None or track is None):
        raise click.UsageError("pass either --csv, or --workspace with --track")
    if csv_path is not None:
        vals, names, data_fps = _read_au_csv(csv_path)
    else:
        seqs = _track_sequences(Workspace.open(workspace), track=track)
        if not seqs:
            raise DsbuilderError(f"no frames for track {track!r}", "check the frames table")
        rows = seqs[0][1]
        vals, names, data_fps = _aus(rows, DEFAULTS["baseline"]), list(AU_GEOM_NAMES), _fps(rows)
    if not len(vals):
        raise DsbuilderError("the AU sequence is empty", "pass a CSV with at least one row")
    fps = fps or data_fps or 25.0
    animate(vals, names, output, fps=fps, size=size)
    click.echo(f"{len(vals)} frames at {fps:g} fps -> {output}")
