"""The faces, speakers and label stages side by side, on the same workspace, in one run.

Issue targets: the speakers stage adds < 20 % to the faces stage's time, the label stage < 30 % (both
at the default parameters). Each stage runs with ``force=True`` (no cache: the faces stage re-detects
and rewrites its clips, speakers re-scores, label re-runs the FER teacher and refits the HMMs), models
loaded and warmed up before the clock starts, ``--repeats`` times; the median is reported.

Media: ``../shared/media/video/short_hamilton_clip.mp4`` with the reference photos of Lin-Manuel
Miranda and Alex Lacamoire when ``../shared`` exists, else the offline demo's media.

Run from the repository root: ``.venv/bin/python benchmarks/stages.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
TIMED = ("faces", "speakers", "label")


def _recipe(tmp: Path) -> Path:
    if SHARED.is_dir():
        people, video = SHARED / "people", SHARED / "video" / "short_hamilton_clip.mp4"
        path = tmp / "hamilton.yaml"
        path.write_text("name: bench-hamilton\npeople:\n"
                        f"  - id: lin\n    photos: [{people / 'lin-manuel-miranda.png'}]\n"
                        f"    videos: [{video}]\n"
                        f"  - id: alex\n    photos: [{people / 'alex-lacamoire.png'}]\n")
        return path
    from dsbuilder import demo

    return demo.prepare()


def _warm_up() -> None:
    """Load every model the timed stages use, so the clock measures work, not loading."""
    import numpy as np

    from dsbuilder.face import api
    from dsbuilder.labels.fer import load_fer
    from dsbuilder.speaker.voice import load_embedder

    api._models()
    api.detect(np.zeros((64, 64, 3), np.uint8))
    load_fer("fer2013").predict(np.zeros((1, 64, 64), np.uint8))
    load_embedder("auto")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from dsbuilder import pipeline
    from dsbuilder.manifest.io import read_table
    from dsbuilder.recipe import load_recipe
    from dsbuilder.workspace import Workspace

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        recipe = load_recipe(_recipe(tmp), tmp / "ws")
        ws = Workspace.open(tmp / "ws")
        pipeline.run(recipe, ws, pipeline.plan(until="dictionary"), progress=False)
        duration = sum(r["duration"] or 0.0 for r in read_table(ws, "sources").to_pylist()
                       if r["kind"] == "video" and r["status"] == "ok")
        _warm_up()
        times: dict[str, list[float]] = {s: [] for s in TIMED}
        for _ in range(args.repeats):
            for stage in TIMED:
                t = time.perf_counter()
                result = pipeline.run_stage(stage, recipe, ws, force=True, progress=False)
                times[stage].append(time.perf_counter() - t)
        tracks = read_table(ws, "tracks").to_pylist()
        if not any(t["kept"] for t in tracks):
            raise SystemExit("no kept track: the benchmark would time nothing")
        labels = read_table(ws, "labels").num_rows
        segments = read_table(ws, "segments").num_rows

    med = {s: statistics.median(v) for s, v in times.items()}
    print(f"media: {'short_hamilton_clip.mp4' if SHARED.is_dir() else 'demo videos'}, "
          f"{duration:.2f} s of video; {sum(t['kept'] for t in tracks)} kept tracks of "
          f"{len(tracks)}; {labels} labelled frames, {segments} segments; last label run: "
          f"{result.summary()}")
    print(f"{'stage':<9} {'median s':>9} {'runs s':<24} {'x real time':>11} {'/ faces':>8}")
    for s in TIMED:
        runs = ", ".join(f"{v:.2f}" for v in times[s])
        print(f"{s:<9} {med[s]:>9.2f} {runs:<24} {duration / med[s]:>11.2f} "
              f"{med[s] / med['faces']:>8.1%}")
    print(f"targets: speakers < 20 % of faces: {med['speakers'] / med['faces']:.1%}; "
          f"label < 30 % of faces: {med['label'] / med['faces']:.1%}")


if __name__ == "__main__":
    main()
