"""The whole ``dsbuilder run``, from an empty workspace, against the naive per-frame pipeline.

Cases (``../shared/media``): ``short``: short_hamilton_clip.mp4 (10 s, 640x360, a singing face,
the audience, a profile), ``long``: the same clip 20 times in a row (200 s; packets copied by
:func:`dsbuilder.synth.concat_video`). Targets are Lin-Manuel Miranda and Alex Lacamoire (one photo
each; the dictionary bootstraps from the video).

Each case runs in a fresh child process (so its peak RSS is its own): every stage in order, timed.
The naive pipeline (face_recognition's way: HOG upsampled once + a dlib embedding of every face, on
every frame) runs in another child on the short clip; its cost per second of video is what the x-naive
column divides by (the long case repeats the short one's frames).

Run: .venv/bin/python benchmarks/e2e.py [--repeat-long 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "media"
STAGES = ("scrape", "shots", "dictionary", "faces", "speakers", "label", "report")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_run(video: Path, workdir: Path) -> dict:
    from dsbuilder.manifest.io import read_table
    from dsbuilder.media import probe
    from dsbuilder.recipe import load_recipe
    from dsbuilder.stages import stage_runner
    from dsbuilder.workspace import Workspace

    ppl = SHARED / "people"
    recipe_path = workdir / "e2e.yaml"
    recipe_path.write_text(
        "name: e2e\npeople:\n"
        f"  - id: lin\n    photos: [{ppl / 'lin-manuel-miranda.png'}]\n    videos: [{video}]\n"
        f"  - id: alex\n    photos: [{ppl / 'alex-lacamoire.png'}]\n")
    recipe = load_recipe(recipe_path, workdir / "ws")
    ws = Workspace.open(workdir / "ws")
    times = {}
    t_all = time.perf_counter()
    for stage in STAGES:
        t = time.perf_counter()
        stage_runner(stage)(recipe, ws, progress=False)
        times[stage] = time.perf_counter() - t
    wall = time.perf_counter() - t_all
    tracks = read_table(ws, "tracks").to_pylist()
    return {"duration_s": probe(video).duration, "wall_s": wall, "stages": times,
            "peak_rss_mb": _peak_rss_mb(), "tracks": len(tracks),
            "kept": sum(t["kept"] for t in tracks),
            "kept_people": sorted({t["person_id"] for t in tracks if t["kept"]}),
            "clips": read_table(ws, "clips").num_rows}


def child_naive(video: Path) -> dict:
    from dsbuilder.face import api
    from dsbuilder.media import iter_frames, probe

    img = next(iter_frames(video, fmt="rgb24", max_frames=1))[2]
    api.detect(img, "hog", upsample=1)  # load the models before the clock
    t0 = time.perf_counter()
    faces = frames = 0
    for _, _, rgb in iter_frames(video, fmt="rgb24"):
        frames += 1
        for det in api.detect(rgb, "hog", upsample=1):
            api.embed(rgb, det.box, engine="dlib")
            faces += 1
    return {"duration_s": probe(video).duration, "wall_s": time.perf_counter() - t0,
            "frames": frames, "faces": faces}


def run_child(kind: str, video: Path, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--video", str(video),
                          "--workdir", str(workdir)], capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise SystemExit(f"child {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=("run", "naive"), help=argparse.SUPPRESS)
    ap.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--repeat-long", type=int, default=20)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_run(args.video, args.workdir) if args.child == "run"
                         else child_naive(args.video)))
        return
    if not SHARED.is_dir():
        sys.exit(f"needs the real media in {SHARED}")
    from dsbuilder.synth import concat_video

    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        short = SHARED / "video" / "short_hamilton_clip.mp4"
        long = tmp / "long.mp4"
        concat_video(short, long, args.repeat_long)
        naive = run_child("naive", short, tmp / "naive")
        naive_rtf = naive["duration_s"] / naive["wall_s"]
        results = {"short": run_child("run", short, tmp / "short"),
                   "long": run_child("run", long, tmp / "long")}
    print(f"naive (short clip, {naive['frames']} frames, {naive['faces']} faces): "
          f"{naive['wall_s']:.1f} s, {naive_rtf:.3f}x real time")
    print("| case | video s | run s | x real time | x naive | peak RSS MiB | tracks (kept) | "
          "clips | " + " | ".join(f"{s} s" for s in STAGES) + " |")
    print("|---|---:|---:|---:|---:|---:|---|---:|" + "---:|" * len(STAGES))
    for name, r in results.items():
        rtf = r["duration_s"] / r["wall_s"]
        print(f"| {name} | {r['duration_s']:.1f} | {r['wall_s']:.1f} | {rtf:.2f} | "
              f"{rtf / naive_rtf:.1f} | {r['peak_rss_mb']:.0f} | {r['tracks']} ({r['kept']}) | "
              f"{r['clips']} | " + " | ".join(f"{r['stages'][s]:.2f}" for s in STAGES) + " |")


if __name__ == "__main__":
    main()
