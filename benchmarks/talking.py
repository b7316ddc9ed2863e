"""Does the speakers stage call the demo's talking portraits speaking, and their dubbed and mute
copies not? (issue 17; the animation is dsbuilder/talking.py, the demo media dsbuilder/demo.py)

For each of the two demo people (Grace Hopper, Eileen Collins) and each of ``--seeds`` voices, four
videos of one 4 s shot, made here from the portraits that ship in matplotlib and scikit-image:

* ``synced``: the mouth moved by the voice that is heard;
* ``dubbed``: the same picture, a man's voice with another timing laid over it;
* ``mute``: the same picture, an audio stream of silence;
* ``still``: the portrait not animated, the voice heard.

All go through the pipeline up to the speakers stage (Light-ASD when its weights are installed) in one
run. Printed per variant: tracks, share judged speaking, the reasons of the others, Light-ASD's mean
speaking logit (the model alone, before any gate), the correlation scorer's offset and confidence.

Run: .venv/bin/python benchmarks/talking.py [--seeds 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

VARIANTS = ("synced", "dubbed", "mute", "still")


def make_media(root: Path, seeds: int) -> dict[str, tuple[str, str]]:
    """Write the photos and videos; return video file name -> (person, variant)."""
    from dsbuilder import demo, synth, talking

    people = {"grace-hopper": synth.grace_hopper(), "eileen-collins": synth.astronaut()}
    frames = 100
    out = {}
    for pid, picture in people.items():
        demo._photos(root / "photos" / pid, pid, picture)
        for k in range(seeds):
            f0, tract = demo.VOICES[pid]
            voice = talking.Voice.make(frames / demo.FPS, seed=1000 + k, f0=f0, tract=tract)
            f0, tract = demo.VOICES["dub"]
            dub = talking.Voice.make(frames / demo.FPS, seed=2000 + k, f0=f0, tract=tract)
            synced = root / f"{pid}-{k}-synced.mp4"
            shot = synth.Shot(picture, frames, animate=talking.talking(picture, voice, demo.FPS))
            synth.write_video(synced, [shot], fps=demo.FPS, size=demo.SIZE, audio=voice.samples)
            synth.dub_video(synced, root / f"{pid}-{k}-dubbed.mp4", dub.samples)
            synth.dub_video(synced, root / f"{pid}-{k}-mute.mp4", np.zeros_like(voice.samples))
            synth.write_video(root / f"{pid}-{k}-still.mp4", [synth.Shot(picture, frames)],
                              fps=demo.FPS, size=demo.SIZE, audio=voice.samples)
            for v in VARIANTS:
                out[f"{pid}-{k}-{v}.mp4"] = (pid, v)
    return out


def write_recipe(root: Path, videos: dict[str, tuple[str, str]]) -> Path:
    lines = ["name: talking", f"workspace: {root / 'ws'}", "people:"]
    for pid in sorted({p for p, _ in videos.values()}):
        lines.append(f"  - id: {pid}\n    photos: [{root / 'photos' / pid}]\n    videos:")
        lines += [f"      - {root / name}" for name, (p, _) in sorted(videos.items()) if p == pid]
    lines += ["stages:", "  scrape: {min_interval_s: 0}"]
    path = root / "talking.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4, help="voices per person (default 4)")
    args = ap.parse_args()
    from dsbuilder import pipeline
    from dsbuilder.manifest.io import read_table
    from dsbuilder.recipe import load_recipe
    from dsbuilder.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        videos = make_media(root, args.seeds)
        t1 = time.perf_counter()
        recipe = load_recipe(write_recipe(root, videos))
        ws = Workspace.open(recipe.workspace)
        pipeline.run(recipe, ws, pipeline.plan(until="speakers"), progress=False)
        t2 = time.perf_counter()
        # a source is named by the recipe entry that led to it (here: the video's path)
        by_source = {s["source_id"]: videos[Path(s["request"]).name]
                     for s in read_table(ws, "sources").to_pylist()
                     if s["kind"] == "video" and Path(s["request"] or "").name in videos}
        rows = defaultdict(list)
        for r in read_table(ws, "speech").to_pylist():
            pid, variant = by_source[r["source_id"]]
            rows[variant].append(r)
        tracks = read_table(ws, "tracks").to_pylist()
        kept = Counter(by_source[t["source_id"]][1] for t in tracks if t["kept"])
    print(f"{args.seeds} voices x 2 people per variant; media {t1 - t0:.0f} s, pipeline "
          f"{t2 - t1:.0f} s; scorer: {sorted({r['scorer'] for v in rows.values() for r in v})}")
    print("| variant | tracks | speaking | others' reasons | Light-ASD logit, mean (min..max) "
          "| AV offset (frames) | sync confidence |")
    print("|---|---:|---:|---|---|---|---|")
    for v in VARIANTS:
        rs = rows.get(v, [])
        if not rs:
            print(f"| {v} | {kept.get(v, 0)} | - | no speech rows | - | - | - |")
            continue
        logits = np.array([r["asd_logit_mean"] for r in rs if r["asd_logit_mean"] is not None])
        speaking = sum(bool(r["speaking"]) for r in rs)
        reasons = Counter(r["reason"] for r in rs if not r["speaking"])
        offsets = sorted(int(r["av_offset_frames"]) for r in rs)
        conf = np.array([r["sync_confidence"] for r in rs], float)
        logit = (f"{logits.mean():+.1f} ({logits.min():+.1f}..{logits.max():+.1f})"
                 if len(logits) else "-")
        print(f"| {v} | {len(rs)} | {speaking}/{len(rs)} | "
              f"{', '.join(f'{k} {n}' for k, n in sorted(reasons.items())) or '-'} | {logit} | "
              f"{offsets} | {conf.mean():.2f} ({conf.min():.2f}..{conf.max():.2f}) |")


if __name__ == "__main__":
    main()
