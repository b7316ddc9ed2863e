"""``dsbuilder hmm``: fit HMMs on a person's geometric AU sequences, sample from them, animate AUs.

Light at import (only Click); numpy, hmmlearn and the manifests are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import click

def _defaults() -> dict:
    """``dsbuilder hmm`` defaults: the label stage's (``stages.label.hmm_*``, in dsbuilder.config)."""
    from dsbuilder.config import stage_defaults

    d = stage_defaults("label")
    return {"min_states": d["hmm_min_states"], "max_states": d["hmm_max_states"],
            "restarts": d["hmm_restarts"], "family": d["hmm_family"],
            "criterion": d["hmm_criterion"], "seed": d["hmm_seed"], "baseline": d["au_baseline"],
            "min_segment_s": d["hmm_min_segment_s"]}


DEFAULTS = _defaults()


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


def _aus(rows, baseline: str):
    from dsbuilder.labels.clip import geometric_track_aus

    return geometric_track_aus(rows, baseline)  # clipped at 0: intensities above the neutral face


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
@click.option("--min-segment-s", default=DEFAULTS["min_segment_s"], show_default=True, type=float,
              help="Shortest segment (minimum-duration Viterbi; 0: plain Viterbi).")
def hmm_fit(workspace: Path, person: str, min_states: int, max_states: int, restarts: int,
            family: str, criterion: str, baseline: str, seed: int, min_segment_s: float) -> None:
    """Fit an HMM on PERSON's tracks; save models/hmm/<person>.json; write the segments table."""
    import numpy as np

    from dsbuilder.errors import DsbuilderError
    from dsbuilder.config import stage_defaults
    from dsbuilder.labels.segments import frames_fps, hmm_model_path, hmm_segment_rows
    from dsbuilder.manifest.io import read_table, write_table
    from dsbuilder.recipe import params_hash
    from dsbuilder.stages.label import fit_person_hmm
    from dsbuilder.workspace import Workspace

    ws = Workspace.open(workspace)
    seqs = _track_sequences(ws, person=person)
    if not seqs:
        raise DsbuilderError(f"no kept tracks with frames for person {person!r}",
                             "run the faces stage first, or check --person against the tracks table")
    fps = float(np.median([frames_fps(rows) for _, rows in seqs]))
    X = [_aus(rows, baseline) for _, rows in seqs]
    # the label stage's own fitting and cache: the same sequences and settings give the same model
    model, _ = fit_person_hmm(ws, person, X, fps, {
        "hmm_min_states": min_states, "hmm_max_states": max_states, "hmm_restarts": restarts,
        "hmm_family": family, "hmm_criterion": criterion, "hmm_seed": seed,
        "hmm_min_frames": stage_defaults("label")["hmm_min_frames"]})
    mpath = hmm_model_path(ws.root, person)
    phash = params_hash({"min_states": min_states, "max_states": max_states, "restarts": restarts,
                         "family": family, "criterion": criterion, "baseline": baseline,
                         "seed": seed, "features": "geometric", "min_segment_s": min_segment_s})
    new_rows = []
    for (tr, rows), x in zip(seqs, X):
        new_rows.extend(hmm_segment_rows(model, {**tr, "person_id": person}, rows, x,
                                         ws.relpath(mpath), min_segment_s))
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
    from dsbuilder.labels.segments import hmm_model_path
    from dsbuilder.workspace import atomic_write_bytes

    mpath = hmm_model_path(workspace.resolve(), person)
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
    from dsbuilder.labels.au import au_numbers

    try:
        t = au_import.read_au_csv(path)
    except ValueError:  # not OpenFace or py-feat: `hmm sample` output (t, state, AU01_geom, ...)
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        header = list(rows[0]) if rows else []
        names = []
        for h in header:
            try:
                au_numbers(h)
                names.append(h)
            except ValueError:
                pass
        vals = np.array([[float(r[n]) for n in names] for r in rows]) if rows else np.zeros((0, 0))
        times = np.array([float(r["t"]) for r in rows]) if rows and "t" in rows[0] else None
    else:
        vals, names, times = t.values / t.scale, list(t.au_names), t.time
    fps = None
    if times is not None and len(times) > 1:
        dt = np.diff(times)
        fps = float(1 / np.median(dt[dt > 0])) if (dt > 0).any() else None
    return vals, names, fps


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
    from dsbuilder.labels.segments import frames_fps
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
        vals, names, data_fps = (_aus(rows, DEFAULTS["baseline"]), list(AU_GEOM_NAMES),
                                  frames_fps(rows))
    if not len(vals):
        raise DsbuilderError("the AU sequence is empty", "pass a CSV with at least one row")
    fps = fps or data_fps or 25.0
    animate(vals, names, output, fps=fps, size=size)
    click.echo(f"{len(vals)} frames at {fps:g} fps -> {output}")
