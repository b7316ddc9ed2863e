"""HMM segments on the real clips: how many, how short, with and without the minimum duration.

Runs scrape ... label on short_hamilton_clip.mp4 (targets Lin-Manuel Miranda and Alex Lacamoire) and
on single_face.mp4 (the man's photo: a frame of the clip), in a temporary folder, then decodes the
segments again with ``hmm_min_segment_s`` 0 (plain Viterbi) and the default, and prints per setting:
segments, segments per minute of labelled track, the share of segments under 0.5 s, and the share of
frames lying in segments under 0.5 s.

Run: .venv/bin/python benchmarks/segments.py
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "media"
SHORT_S = 0.5


def main() -> None:
    if not SHARED.is_dir():
        sys.exit(f"needs the real media in {SHARED}")
    import cv2

    from dsbuilder import pipeline
    from dsbuilder.config import stage_defaults
    from dsbuilder.manifest.io import read_table
    from dsbuilder.media import iter_frames
    from dsbuilder.recipe import load_recipe
    from dsbuilder.stages import label
    from dsbuilder.workspace import Workspace

    print("| clip | hmm_min_segment_s | tracks | labelled s | segments | per minute | "
          f"segments < {SHORT_S} s | frames in segments < {SHORT_S} s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        single = SHARED / "video" / "single_face.mp4"
        for _, t, img in iter_frames(single):
            if t >= 0.3:
                cv2.imwrite(str(tmp / "man.jpg"), img)
                break
        ppl = SHARED / "people"
        cases = {
            "short_hamilton_clip.mp4": (SHARED / "video" / "short_hamilton_clip.mp4",
                                        {"lin": ppl / "lin-manuel-miranda.png",
                                         "alex": ppl / "alex-lacamoire.png"}),
            "single_face.mp4": (single, {"man": tmp / "man.jpg"}),
        }
        for name, (video, people) in cases.items():
            lines = [f"name: {name.split('.')[0].replace('_', '-')}", "people:"]
            for i, (pid, photo) in enumerate(people.items()):
                lines.append(f"  - id: {pid}\n    photos: [{photo}]")
                if i == 0:
                    lines.append(f"    videos: [{video}]")
            path = tmp / f"{name}.yaml"
            path.write_text("\n".join(lines) + "\n")
            recipe = load_recipe(path, tmp / f"ws-{name}")
            ws = Workspace.open(tmp / f"ws-{name}")
            pipeline.run(recipe, ws, pipeline.plan(until="label"), progress=False)
            for min_s in (0.0, stage_defaults("label")["hmm_min_segment_s"]):
                r = dataclasses.replace(recipe, stages={
                    **recipe.stages, "label": {**recipe.stages["label"],
                                               "hmm_min_segment_s": min_s}})
                label.run(r, ws, progress=False)
                segs = read_table(ws, "segments").to_pylist()
                dur = [s["end_s"] - s["start_s"] for s in segs]
                total = sum(dur)
                short = [d for d in dur if d < SHORT_S - 1e-9]
                tracks = len({s["track_id"] for s in segs})
                print(f"| {name} | {min_s:g} | {tracks} | {total:.1f} | {len(segs)} | "
                      f"{len(segs) / (total / 60):.0f} | {len(short)} ({len(short) / len(segs):.0%}) "
                      f"| {sum(short) / total:.0%} |")


if __name__ == "__main__":
    main()
