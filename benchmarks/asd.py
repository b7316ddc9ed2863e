"""Light-ASD in the speakers stage: who it calls speaking, what each gate changes, what it costs.

Cases (real media from ../shared/media; nothing is kept: workspaces live in a temporary folder):

* ``hamilton``: short_hamilton_clip.mp4 with Lin-Manuel Miranda and Alex Lacamoire as targets and
  ``match_threshold`` 1.5, so that every track is "a target" and gets a face clip: the audience shot is
  scored too (in the product it is a bystander and never stored). The pianist is never tracked (dlib's
  HOG misses his profile), so there is nothing to score for him.
* ``silent``: single_face.mp4 (a man smiling, not speaking; near-silent sound); the person's photo is
  a frame of the clip.
* ``dub-voice``: the same picture with 2.5 s of the Hamilton clip's singing laid over it (unrelated
  voice), ``dub-synth``: with our synthetic voiced sound (dsbuilder.synth.speech_like).

For each kept track: the fraction of frames called speaking by the stage (light-asd), by the model
alone (no gate), with the VAD gate, with the offset gate, and by the correlation scorer; then the
stage times of faces and speakers in the same run (target: speakers < 20 % of faces).

Run: .venv/bin/python benchmarks/asd.py
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "media"


def recipe_for(tmp: Path, name: str, people: dict[str, list[Path]], video: Path, extra: str = ""):
    from dsbuilder.recipe import load_recipe

    lines = [f"name: {name}", "people:"]
    for i, (pid, photos) in enumerate(people.items()):
        lines.append(f"  - id: {pid}\n    photos: [{', '.join(str(p) for p in photos)}]")
        if i == 0:
            lines.append(f"    videos: [{video}]")
    path = tmp / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return load_recipe(path, tmp / f"ws-{name}")


def run_stages(recipe, ws) -> dict[str, float]:
    from dsbuilder.stages import stage_runner

    times = {}
    for stage in ("scrape", "shots", "dictionary", "faces", "speakers"):
        t = time.perf_counter()
        stage_runner(stage)(recipe, ws, progress=False)
        times[stage] = time.perf_counter() - t
    return times


def fractions(ws, recipe) -> list[dict]:
    from dsbuilder.manifest.io import read_table
    from dsbuilder.stages import speakers

    p = recipe.stage_params("speakers")
    gates = speakers.gates_from(p)
    speech = read_table(ws, "speech").to_pylist()
    frames = read_table(ws, "speaking_frames").to_pylist()
    out = []
    for tr in read_table(ws, "tracks").to_pylist():
        if not tr["kept"]:
            continue
        fr = sorted((f for f in frames if f["track_id"] == tr["track_id"]),
                    key=lambda f: f["frame_index"])
        sp = [s for s in speech if s["track_id"] == tr["track_id"]]
        if not fr:
            out.append({"track": tr["track_id"][-13:], "t": f"{tr['start_s']:.1f}-{tr['end_s']:.1f}",
                        "n": 0, "note": "not scored"})
            continue
        logit = np.array([np.nan if f["asd_logit"] is None else f["asd_logit"] for f in fr])
        vad = np.array([f["vad"] for f in fr])
        stage = np.mean([f["speaking_prob"] >= 0.5 for f in fr])
        alone = speakers.asd_probability(logit, None, int(p["smooth_frames"])) >= 0.5
        with_vad = speakers.asd_probability(logit, vad, int(p["smooth_frames"])) >= 0.5
        offset = sp[0]["av_offset_frames"] if sp else 0
        conf = sp[0]["sync_confidence"] if sp else 0.0
        off_ok = abs(offset) <= gates.max_offset_frames
        out.append({"track": tr["track_id"][-13:], "t": f"{tr['start_s']:.1f}-{tr['end_s']:.1f}",
                    "n": len(fr), "stage": stage, "model": alone.mean(), "vad_gate": with_vad.mean(),
                    "offset_gate": alone.mean() if off_ok else 0.0, "offset": offset, "conf": conf,
                    "upstream_rule": float(np.mean(logit > 0)), "vad": vad.mean()})
    return out


def main() -> None:
    if not SHARED.is_dir():
        sys.exit(f"needs the real media in {SHARED}")
    import cv2

    from dsbuilder.audio import read_audio
    from dsbuilder.media import iter_frames
    from dsbuilder.speaker import lightasd
    from dsbuilder.stages import speakers
    from dsbuilder.synth import dub_video, speech_like
    from dsbuilder.workspace import Workspace

    if lightasd.installed_weights()[0] is None:
        sys.exit("Light-ASD weights missing: dsbuilder models pull light-asd --from ../shared/models/"
                 "light-asd")
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        ppl = SHARED / "people"
        ham = SHARED / "video" / "short_hamilton_clip.mp4"
        single = SHARED / "video" / "single_face.mp4"
        for _, t, img in iter_frames(single):
            if t >= 0.3:
                cv2.imwrite(str(tmp / "man.jpg"), img)
                break
        voice, _ = read_audio(ham, start_s=3.6, end_s=6.1)
        dub_video(single, tmp / "dub-voice.mp4", voice)
        dub_video(single, tmp / "dub-synth.mp4", speech_like(2.5, seed=1))
        cases = [
            ("hamilton", {"lin": [ppl / "lin-manuel-miranda.png"],
                          "alex": [ppl / "alex-lacamoire.png"]}, ham,
             "stages:\n  faces: {match_threshold: 1.5}\n"),
            ("silent", {"man": [tmp / "man.jpg"]}, single, ""),
            ("dub-voice", {"man": [tmp / "man.jpg"]}, tmp / "dub-voice.mp4", ""),
            ("dub-synth", {"man": [tmp / "man.jpg"]}, tmp / "dub-synth.mp4", ""),
        ]
        print("| case | track | span s | frames | VAD | stage | model alone | + VAD gate | "
              "+ offset gate (offset, sync confidence) | upstream rule (out1 > 0) | correlation scorer |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        timing = []
        for name, people, video, extra in cases:
            recipe = recipe_for(tmp, name, people, video, extra)
            ws = Workspace.open(tmp / f"ws-{name}")
            times = run_stages(recipe, ws)
            timing.append((name, times))
            rows = fractions(ws, recipe)
            # the correlation scorer on the same tracks, for comparison
            corr = dataclasses.replace(recipe, stages={
                **recipe.stages, "speakers": {**recipe.stages["speakers"], "scorer": "correlation"}})
            speakers.run(corr, ws, progress=False)
            corr_rows = {r["track"]: r for r in fractions(ws, corr)}
            for r in rows:
                if r["n"] == 0:
                    print(f"| {name} | {r['track']} | {r['t']} | 0 | | not scored | | | | | |")
                    continue
                c = corr_rows.get(r["track"], {}).get("stage")
                print(f"| {name} | {r['track']} | {r['t']} | {r['n']} | {r['vad']:.0%} | "
                      f"{r['stage']:.0%} | {r['model']:.0%} | {r['vad_gate']:.0%} | "
                      f"{r['offset_gate']:.0%} ({r['offset']:+d}, {r['conf']:.2f}) | {r['upstream_rule']:.0%} | "
                      + ("-" if c is None else f"{c:.0%}") + " |")
        print()
        print("| case | faces s | speakers s | speakers / faces |")
        print("|---|---|---|---|")
        for name, t in timing:
            print(f"| {name} | {t['faces']:.2f} | {t['speakers']:.2f} | "
                  f"{t['speakers'] / t['faces']:.1%} |")


if __name__ == "__main__":
    main()
