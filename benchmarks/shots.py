"""Benchmark the shots stage: speed against the PySceneDetect CLI, and cut-detection accuracy.

Run from the repository root (``make bench`` does)::

    .venv/bin/python benchmarks/shots.py [--seconds 60] [--repeats 3] [--keep DIR]

1. **Speed.** One synthetic 640x360, 25 fps video with hard cuts (``--seconds`` long) is made by
   :mod:`dsbuilder.synth` in a temporary folder. On that same file we time

   * ours: :func:`dsbuilder.stages.shots.detect_shots` with the default (adaptive) detector, in this
     process (PyAV decode, FFmpeg scaling to 320 px wide, ``AdaptiveDetector``);
   * the CLI: ``scenedetect -i FILE -b pyav -d 2 -m 0.5s detect-adaptive list-scenes -n`` in a
     subprocess, with the venv's ``scenedetect``. ``-b pyav`` uses the same PyAV decoder as we do;
     ``-d 2`` makes it detect on 320x180 frames like us (its automatic factor would give 256 px);
     ``-m 0.5s`` matches our default ``min_shot_s``. The same command with ``-b opencv`` (the CLI's
     default backend) is timed as well.

   Each is run ``--repeats`` times; the median wall time is printed. The CLI's time includes its
   start-up (imports), which is measured alone with ``scenedetect version``.

2. **Accuracy.** F1 of cut detection for the ``adaptive`` and ``content`` detectors on synthetic
   videos with known transitions (hard cuts, fades through black, dissolves; 12-frame transitions).
   A detection matches a true transition one-to-one if it is within +-2 frames of the frame where
   the transition starts (the first frame of the new shot for a hard cut). Because a detector may
   fire anywhere inside a gradual transition, a second column also accepts detections inside the
   transition (start - 2 .. start + length + 2).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsbuilder import synth
from dsbuilder.stages.shots import detect_shots

SIZE = (360, 640)  # (h, w)
FPS = 25.0
TRANSITION_FRAMES = 12
TOLERANCE = 2  # frames


# --- test videos ----------------------------------------------------------------------------------

def shot_list(total_frames: int, transition: str, seed: int) -> list[synth.Shot]:
    """Shots of 40-90 frames (seeded) filling ``total_frames``, joined by ``transition``; pictures
    alternate between Grace Hopper and seeded textures so that consecutive shots differ."""
    rng = np.random.default_rng(seed)
    hopper = synth.grace_hopper()
    shots, n, i = [], 0, 0
    while n < total_frames:
        length = int(min(rng.integers(40, 91), max(40, total_frames - n)))
        picture = hopper if i % 4 == 0 else synth.texture(seed * 100 + i)
        tr = "cut" if i == 0 else transition
        shots.append(synth.Shot(picture, length, transition=tr,
                                transition_frames=TRANSITION_FRAMES if tr != "cut" else 0))
        n += length
        i += 1
    return shots


# --- scoring --------------------------------------------------------------------------------------

@dataclass
class Score:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def score(found: list[int], truth: list[int], before: int, after: int) -> Score:
    """Greedy one-to-one matching: a detection ``f`` matches true transition ``t`` when
    ``t - before <= f <= t + after``; each is used once, nearest pairs first."""
    pairs = sorted((abs(f - t), fi, ti) for fi, f in enumerate(found) for ti, t in enumerate(truth)
                   if t - before <= f <= t + after)
    used_f, used_t = set(), set()
    for _, fi, ti in pairs:
        if fi not in used_f and ti not in used_t:
            used_f.add(fi)
            used_t.add(ti)
    tp = len(used_t)
    return Score(tp=tp, fp=len(found) - tp, fn=len(truth) - tp)


def cuts_of(path: Path, detector: str) -> list[int]:
    return [s.start_frame for s in detect_shots(path, {"detector": detector})[1:]]


# --- the CLI ------------------------------------------------------------------------------------

def scenedetect_exe() -> str:
    exe = Path(sys.executable).with_name("scenedetect")
    if exe.exists():
        return str(exe)
    found = shutil.which("scenedetect")
    if not found:
        sys.exit("scenedetect executable not found next to this Python or on PATH")
    return found


def cli_command(path: Path, backend: str) -> list[str]:
    return [scenedetect_exe(), "-i", str(path), "-b", backend, "-d", "2", "-m", "0.5s",
            "detect-adaptive", "list-scenes", "-n"]


_ROW = re.compile(r"^\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", re.M)


def run_cli(cmd: list[str]) -> tuple[float, list[int]]:
    """Wall time of one CLI run, and the cut frames it printed (0-based first frames of scenes 2..)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    scenes = [(int(n), int(first)) for n, first in _ROW.findall(proc.stdout + proc.stderr)]
    return wall, [first - 1 for n, first in sorted(scenes)[1:]]  # the table counts from 1


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


# --- main -----------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the timing video")
    ap.add_argument("--repeats", type=int, default=3, help="runs per timing (median is shown)")
    ap.add_argument("--keep", type=Path, help="write the videos here instead of a temp folder")
    args = ap.parse_args()

    tmp = None
    if args.keep:
        work = args.keep
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-shots-")
        work = Path(tmp.name)
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; videos in {work}")

        # 1. speed, on one file
        path = work / "timing.mp4"
        total = int(round(args.seconds * FPS))
        t0 = time.perf_counter()
        truth = synth.write_video(path, shot_list(total, "cut", seed=1), fps=FPS, size=SIZE)
        print(f"made {path.name}: {total} frames ({total / FPS:.0f} s), {SIZE[1]}x{SIZE[0]}, "
              f"{len(truth)} cuts, in {time.perf_counter() - t0:.1f} s")

        ours_s, ours_cuts = timed(lambda: cuts_of(path, "adaptive"), args.repeats)
        startup_s, _ = timed(lambda: subprocess.run([scenedetect_exe(), "version"],
                                                    capture_output=True, check=True),
                             args.repeats)
        rows = [("ours: detect_shots (adaptive)", ours_s, score(ours_cuts, truth, 2, 2))]
        for backend in ("pyav", "opencv"):
            cmd = cli_command(path, backend)
            walls, cuts = [], []
            for _ in range(args.repeats):
                wall, cuts = run_cli(cmd)
                walls.append(wall)
            rows.append((f"scenedetect CLI -b {backend}", statistics.median(walls),
                         score(cuts, truth, 2, 2)))
        print()
        print("Speed (same file; median of %d runs; CLI times include its start-up of %.2f s)"
              % (args.repeats, startup_s))
        print(f"CLI command: {' '.join(cli_command(Path('FILE'), 'pyav'))}")
        print()
        print("| run | wall s | frames/s | x ours | cut F1 (+-2) |")
        print("|---|---:|---:|---:|---:|")
        for name, wall, sc in rows:
            print(f"| {name} | {wall:.2f} | {total / wall:.0f} | {wall / ours_s:.2f} | "
                  f"{sc.f1:.3f} |")

        # 2. accuracy, per transition type and detector
        print()
        print(f"Cut detection on synthetic 640x360 videos ({TRANSITION_FRAMES}-frame fades and "
              f"dissolves), default parameters")
        print()
        print("| transition | true | detector | found | P | R | F1 (+-2) | F1 (inside transition) |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        for i, transition in enumerate(("cut", "fade", "dissolve")):
            vpath = work / f"{transition}.mp4"
            vtruth = synth.write_video(vpath, shot_list(int(30 * FPS), transition, seed=10 + i),
                                       fps=FPS, size=SIZE, audio=None)
            span = 0 if transition == "cut" else TRANSITION_FRAMES
            for detector in ("adaptive", "content"):
                found = cuts_of(vpath, detector)
                strict = score(found, vtruth, TOLERANCE, TOLERANCE)
                loose = score(found, vtruth, TOLERANCE, span + TOLERANCE)
                precision = f"{strict.precision:.2f}" if found else "-"  # undefined: no detections
                print(f"| {transition} | {len(vtruth)} | {detector} | {len(found)} | "
                      f"{precision} | {strict.recall:.2f} | {strict.f1:.3f} | {loose.f1:.3f} |")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
