"""Benchmark the faces stage: speed against a naive per-frame baseline, memory against video length.

Run from the repository root::

    .venv/bin/python benchmarks/faces.py [--repeats 3] [--long-seconds 300] [--keep DIR]

1. **Speed.** On one 360p video -- ``../shared/media/video/short_hamilton_clip.mp4`` when it exists
   (dictionary: ``lin`` and ``alex`` from their photos in ``../shared/media/people``, threshold 0.6),
   else a synthetic 640x360 10 s video (dictionary: ``grace`` from a flipped crop of the portrait) --
   we time:

   * **stage**: :func:`dsbuilder.stages.faces.run` over a workspace that holds the video, its shots
     (:func:`dsbuilder.stages.shots.detect_shots`, not timed) and the dictionary tables, default
     parameters: everything the stage does, crops and manifests included;
   * **naive**: the face_recognition way (``face_locations(img, number_of_times_to_upsample=1)`` +
     ``face_encodings`` on every frame) with the same dlib models through :mod:`dsbuilder.face.api`:
     every frame decoded to RGB, HOG with one upsampling, a 128-d embedding of every face found, and
     its nearest dictionary distance. It writes nothing.

   Each run is a fresh subprocess. The models are loaded and warmed up before the clock starts (load
   time printed separately), so both figures are steady-state processing. Real-time factor (RTF) =
   the video's duration / wall time. Peak RSS is the child's ``ru_maxrss``.

2. **Memory.** The stage on synthetic 640x360, 25 fps videos of 10 s and ``--long-seconds`` (shots of
   3-5 s cycling through Grace Hopper, the astronaut and a texture; speech-like audio), shots from
   ``detect_shots``. Per child: its RSS before the stage started, its peak RSS when the video had been
   processed (before the manifests are written) and its peak RSS at the end.

3. **Tracker choice.** On the speed video: every 6th frame is detected (HOG); from each detection
   the face is followed for 6 frames, by our landmark tracking (68-point predictor in the previous
   box, box from the landmarks) or by ``dlib.correlation_tracker``, and the followed box is compared
   (IoU) with the detection 6 frames later. Time per followed frame is measured for each (the stage
   needs the landmarks of every frame anyway; the correlation tracker would come on top).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "media"
SIZE = (360, 640)  # (h, w)
FPS = 25.0


# --- inputs ----------------------------------------------------------------------------------------

def synthetic_video(path: Path, seconds: float, seed: int = 0) -> Path:
    """Shots of 3-5 s (seeded) cycling grace / astronaut / texture, 640x360, 25 fps, with audio."""
    from dsbuilder import synth

    rng = np.random.default_rng(seed)
    pictures = [synth.grace_hopper(), synth.astronaut()]
    shots, n, i = [], 0, 0
    total = int(round(seconds * FPS))
    while n < total:
        length = int(min(rng.integers(75, 126), total - n))
        picture = pictures[i % 3] if i % 3 < 2 else synth.texture(seed * 1000 + i)
        shots.append(synth.Shot(picture, length))
        n += length
        i += 1
    synth.write_video(path, shots, size=SIZE, fps=FPS)
    return path


def dictionary_npz(path: Path, real: bool) -> Path:
    """Person ids, embeddings and thresholds, saved for the child processes."""
    from dsbuilder import synth
    from dsbuilder.face import api

    ids, embs, thrs = [], [], []
    if real:
        from PIL import Image

        for pid, name in (("lin", "lin-manuel-miranda.png"), ("alex", "alex-lacamoire.png")):
            img = np.asarray(Image.open(SHARED / "people" / name).convert("RGB"))
            det = api.detect(img, upsample=1)[0]
            ids.append(pid), embs.append(api.embed(img, det.box)), thrs.append(0.6)
    else:
        import cv2

        ref = np.ascontiguousarray(synth.grace_hopper()[:, ::-1][60:460, 40:480])
        ref = cv2.resize(ref, (300, 272), interpolation=cv2.INTER_AREA)
        det = api.detect(ref, upsample=1)[0]
        ids.append("grace"), embs.append(api.embed(ref, det.box)), thrs.append(0.5)
    np.savez(path, ids=np.array(ids), embeddings=np.stack(embs), thresholds=np.array(thrs))
    return path


# --- children --------------------------------------------------------------------------------------

def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _warm_up() -> float:
    from dsbuilder.face import api

    t0 = time.perf_counter()
    img = np.zeros((120, 160, 3), np.uint8)
    api.detect(img), api.landmarks(img, (10, 10, 90, 90)), api.embed(img, (10, 10, 90, 90))
    import cv2  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import scipy.optimize  # noqa: F401
    return time.perf_counter() - t0


def child_stage(video: Path, dictionary: Path, workdir: Path) -> dict:
    """Run the faces stage over a fresh workspace holding ``video``; return the figures."""
    from dsbuilder.config import stage_defaults
    from dsbuilder.manifest.io import write_table
    from dsbuilder.media import probe
    from dsbuilder.recipe import Recipe
    from dsbuilder.stages import faces
    from dsbuilder.stages.shots import detect_shots
    from dsbuilder.workspace import Workspace, sha256_file

    ws = Workspace.open(workdir / "ws")
    dest = ws.raw / "videos" / f"src-bench{video.suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(video.resolve())
    write_table(ws, "sources", [{
        "source_id": "src-bench", "kind": "video", "status": "ok", "person_ids": ["p"],
        "request_ids": ["r"], "sha256": sha256_file(dest),
        "local_path": dest.relative_to(ws.root).as_posix()}], "h")  # a symlink: no copy
    shots = [s.row("src-bench") for s in detect_shots(dest) if not s.too_short]
    write_table(ws, "shots", shots, "h")
    d = np.load(dictionary)
    write_table(ws, "faces_dictionary", [
        {"face_id": f"face-{pid}", "person_id": str(pid), "source_id": "src-photo",
         "origin": "photo", "bbox": [0.0, 0.0, 1.0, 1.0], "embedding": e.tolist(), "kept": True}
        for pid, e in zip(d["ids"], d["embeddings"])], "h")
    write_table(ws, "people", [
        {"person_id": str(pid), "name": str(pid), "source_ids": ["src-photo"], "n_faces": 1,
         "n_kept": 1, "n_bootstrapped": 0, "threshold": float(t)}
        for pid, t in zip(d["ids"], d["thresholds"])], "h")
    recipe = Recipe(path=workdir / "r.yaml", name="bench", workspace=ws.root, people=[],
                    licences={}, limits={}, stages={"faces": stage_defaults("faces")})
    # the peak while the video is processed, before the manifests are written
    peak_processing = []
    process_video = faces.process_video

    def measured(*a, **k):
        out = process_video(*a, **k)
        peak_processing.append(_rss_mb()[1])
        return out

    faces.process_video = measured
    load_s = _warm_up()
    rss_before, _ = _rss_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    result = faces.run(recipe, ws, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tracks = result.rows["tracks"]
    return {"wall_s": wall, "cpu_s": cpu, "load_s": load_s, "duration_s": probe(video).duration,
            "rss_before_mb": rss_before, "peak_rss_mb": _rss_mb()[1],
            "peak_processing_mb": max(peak_processing, default=float("nan")),
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tracks": len(tracks), "kept": sum(t["kept"] for t in tracks),
            "frames_rows": len(result.rows["frames"]),
            "kept_people": sorted({t["person_id"] for t in tracks if t["kept"]})}


def child_naive(video: Path, dictionary: Path) -> dict:
    """face_recognition-style: HOG (upsample 1) + an embedding of every face, on every frame."""
    from dsbuilder.face import api
    from dsbuilder.media import iter_frames, probe

    d = np.load(dictionary)
    load_s = _warm_up()
    rss_before, _ = _rss_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    n_frames = n_faces = n_matched = 0
    for _, _, rgb in iter_frames(video, fmt="rgb24"):
        n_frames += 1
        for det in api.detect(rgb, "hog", upsample=1):
            emb = api.embed(rgb, det.box, engine="dlib")  # face_recognition's way: dlib itself
            dist = api.distance(emb, d["embeddings"])[0]
            n_faces += 1
            n_matched += bool((dist <= d["thresholds"]).any())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "load_s": load_s, "duration_s": probe(video).duration,
            "rss_before_mb": rss_before, "peak_rss_mb": _rss_mb()[1],
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "frames": n_frames, "faces": n_faces, "matched": n_matched}


def run_child(kind: str, video: Path, dictionary: Path, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", kind, "--video", str(video), "--dictionary",
           str(dictionary), "--workdir", str(workdir)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise SystemExit(f"child {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_trackers(video: Path, step: int = 6) -> dict[str, dict[str, float]]:
    """Landmark tracking against dlib.correlation_tracker: IoU with the next detection, and cost."""
    import dlib

    from dsbuilder.face import api
    from dsbuilder.face.tracker import ShotSpan, _LiveTrack, box_iou, int_box, iter_video
    from dsbuilder.stages.shots import detect_shots

    frames = []  # a 10 s 360p video: about 250 MB of grey + RGB frames, fine for a benchmark
    for _, f in iter_video(video):
        frames.append((f.gray().copy(), f.rgb().copy()))
        f.release()
    shot_cuts = {s.start_frame for s in detect_shots(video)}  # a followed face must not cross a cut
    out = {m: {"iou": [], "seconds": 0.0, "updates": 0} for m in ("landmarks", "correlation")}
    for k in range(0, len(frames) - step, step):
        if any(k < c <= k + step for c in shot_cuts):
            continue
        d0, d1 = api.detect(frames[k][0]), api.detect(frames[k + step][0])
        if not d0 or not d1:
            continue
        b0 = np.array(d0[0].box, np.float32)
        b1 = np.array(d1[0].box, np.float32)
        if box_iou(b0[None], b1[None])[0, 0] < 0.3:  # not the same face
            continue
        track = _LiveTrack(ShotSpan("s", 0, 1, 0.0, 1.0), 1, 1.0)
        track.calibrate(b0, api.landmarks(frames[k][0], d0[0].box))
        box = b0
        t0 = time.perf_counter()
        for j in range(1, step + 1):
            box = track.box_from_landmarks(api.landmarks(frames[k + j][0], int_box(box)))
        out["landmarks"]["seconds"] += time.perf_counter() - t0
        out["landmarks"]["iou"].append(float(box_iou(box[None], b1[None])[0, 0]))
        ct = dlib.correlation_tracker()
        ct.start_track(frames[k][1], dlib.rectangle(*d0[0].box))
        t0 = time.perf_counter()
        for j in range(1, step + 1):
            ct.update(frames[k + j][1])
        p = ct.get_position()
        out["correlation"]["seconds"] += time.perf_counter() - t0
        box = np.array([p.left(), p.top(), p.right(), p.bottom()], np.float32)
        out["correlation"]["iou"].append(float(box_iou(box[None], b1[None])[0, 0]))
        for m in out:
            out[m]["updates"] += step
    return {m: {"pairs": len(v["iou"]), "mean_iou": float(np.mean(v["iou"])),
                "min_iou": float(np.min(v["iou"])), "ms_per_frame": 1000 * v["seconds"] / v["updates"]}
            for m, v in out.items() if v["iou"]}


# --- report ----------------------------------------------------------------------------------------

def machine() -> str:
    import av
    import cv2
    import dlib

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, "
            f"CPython {platform.python_version()}, dlib {dlib.__version__}, PyAV {av.__version__}, "
            f"OpenCV {cv2.__version__}, numpy {np.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="stage runs on the speed video (median)")
    ap.add_argument("--long-seconds", type=float, default=300.0)
    ap.add_argument("--keep", type=Path, help="keep the generated videos and workspaces here")
    ap.add_argument("--child", choices=("stage", "naive"), help=argparse.SUPPRESS)
    ap.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dictionary", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "stage":
        print(json.dumps(child_stage(args.video, args.dictionary, args.workdir)))
        return
    if args.child == "naive":
        print(json.dumps(child_naive(args.video, args.dictionary)))
        return

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="faces-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}")
    print(f"command: {Path(sys.executable).name} benchmarks/faces.py "
          f"--repeats {args.repeats} --long-seconds {args.long_seconds:g}")
    try:
        # 1. speed
        real = (SHARED / "video" / "short_hamilton_clip.mp4").is_file()
        if real:
            video = SHARED / "video" / "short_hamilton_clip.mp4"
        else:
            video = synthetic_video(tmp / "speed_10s.mp4", 10.0, seed=1)
        dictionary = dictionary_npz(tmp / "speed_dictionary.npz", real)
        print(f"\n## speed on {video.name} ({'real' if real else 'synthetic'})")
        # the host's speed drifts: run the baseline between the stage's runs
        first = (args.repeats + 1) // 2
        stage_runs = [run_child("stage", video, dictionary, tmp / f"stage-{i}")
                      for i in range(first)]
        naive = run_child("naive", video, dictionary, tmp / "naive")
        stage_runs += [run_child("stage", video, dictionary, tmp / f"stage-{i}")
                       for i in range(first, args.repeats)]
        st = sorted(stage_runs, key=lambda r: r["wall_s"])[len(stage_runs) // 2]
        dur = st["duration_s"]
        print(f"video duration {dur:.2f} s")
        print("| run | wall s | CPU s | RTF (x real time) | x naive | peak RSS MiB | model load s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        walls = ", ".join(f"{r['wall_s']:.2f}" for r in stage_runs)
        print(f"| stage (median of {len(stage_runs)}: {walls}) | {st['wall_s']:.2f} | "
              f"{st['cpu_s']:.2f} | {dur / st['wall_s']:.2f} | "
              f"{naive['wall_s'] / st['wall_s']:.1f} | {st['peak_rss_mb']:.0f} | {st['load_s']:.2f} |")
        print(f"| naive | {naive['wall_s']:.2f} | {naive['cpu_s']:.2f} | "
              f"{dur / naive['wall_s']:.3f} | 1.0 | {naive['peak_rss_mb']:.0f} | "
              f"{naive['load_s']:.2f} |")
        print(f"stage: {st['tracks']} tracks, {st['kept']} kept ({', '.join(st['kept_people'])}), "
              f"{st['frames_rows']} frames rows")
        print(f"naive: {naive['frames']} frames, {naive['faces']} face detections embedded, "
              f"{naive['matched']} within a threshold")

        # 3. tracker choice (printed here: it uses the speed video)
        print(f"\n## tracker choice on {video.name}: a face followed 6 frames from a detection, "
              "against the next detection")
        print("| tracker | pairs | mean IoU | min IoU | ms per followed frame |")
        print("|---|---:|---:|---:|---:|")
        for name, r in compare_trackers(video).items():
            print(f"| {name} | {r['pairs']} | {r['mean_iou']:.3f} | {r['min_iou']:.3f} | "
                  f"{r['ms_per_frame']:.2f} |")

        # 2. memory against length
        print("\n## memory")
        print("| video | duration s | wall s | RTF | RSS before stage MiB | peak RSS after "
              "processing MiB | peak RSS MiB (incl. writing manifests) | tracks | kept | "
              "frames rows |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        dct = dictionary_npz(tmp / "synthetic_dictionary.npz", real=False)
        peaks = []
        for seconds in (10.0, float(args.long_seconds)):
            name = f"synthetic_{seconds:g}s.mp4"
            path = synthetic_video(tmp / name, seconds, seed=2)
            r = run_child("stage", path, dct, tmp / f"mem-{seconds:g}")
            peaks.append((r["peak_processing_mb"], r["peak_rss_mb"]))
            print(f"| {name} | {r['duration_s']:.1f} | {r['wall_s']:.2f} | "
                  f"{r['duration_s'] / r['wall_s']:.2f} | {r['rss_before_mb']:.0f} | "
                  f"{r['peak_processing_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['tracks']} | "
                  f"{r['kept']} | {r['frames_rows']} |")
            if not args.keep:
                path.unlink()
        (p_short, t_short), (p_long, t_long) = peaks
        print(f"long / short peak RSS: after processing {p_long / p_short:.3f} "
              f"({p_long - p_short:+.0f} MiB); at the end {t_long / t_short:.3f} "
              f"({t_long - t_short:+.0f} MiB)")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
