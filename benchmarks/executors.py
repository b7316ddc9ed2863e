"""The same recipe under each executor: wall time, speed-up, peak memory per worker process.

Batch: 8 videos. With ``../shared/media`` (default): the real clips (short_hamilton_clip.mp4,
single_face.mp4, no_face.mp4, face_noface.mov, noface_face.mov) and three longer copies made by
:func:`dsbuilder.synth.concat_video` (hamilton x2 and x3, single_face x3), 86 s of video in all; the
targets are Lin-Manuel Miranda and Alex Lacamoire (one photo each). With ``--generated``: 8 videos
made by :mod:`dsbuilder.synth` from the demo's public-domain portraits.

Each configuration runs ``dsbuilder run`` in a fresh child process from an empty workspace, with
``SOURCE_DATE_EPOCH`` set, so the manifests must come out byte-identical (checked). A thread samples
the RSS of every process under the child (every 0.5 s): the main process, pool workers, and Ray's
workers and daemons (raylet, GCS), reported apart. The "worker" count includes multiprocessing's
resource tracker.

Run: .venv/bin/python benchmarks/executors.py [--generated] [--configs local:1,process:2,ray:2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "media"
DSBUILDER = [sys.executable, "-m", "dsbuilder.cli"]


def real_batch(dest: Path) -> tuple[list[Path], dict[str, Path]]:
    from dsbuilder.synth import concat_video

    v = SHARED / "video"
    videos = [v / "short_hamilton_clip.mp4", v / "single_face.mp4", v / "no_face.mp4",
              v / "face_noface.mov", v / "noface_face.mov"]
    for src, times in ((v / "short_hamilton_clip.mp4", 2), (v / "short_hamilton_clip.mp4", 3),
                       (v / "single_face.mp4", 3)):
        out = dest / f"{src.stem}_x{times}.mp4"
        concat_video(src, out, times)
        videos.append(out)
    photos = {"lin": SHARED / "people" / "lin-manuel-miranda.png",
              "alex": SHARED / "people" / "alex-lacamoire.png"}
    return videos, photos


def generated_batch(dest: Path) -> tuple[list[Path], dict[str, Path]]:
    import numpy as np

    from dsbuilder import synth

    hopper, astronaut = synth.grace_hopper(), synth.astronaut()
    photo = dest / "hopper.jpg"
    synth.write_photo(photo, hopper)
    videos = []
    for k in range(8):
        shots = [synth.Shot(hopper if k % 2 == 0 else hopper[:, ::-1], 60 + 10 * k),
                 synth.Shot(synth.texture(100 + k), 40), synth.Shot(astronaut, 50),
                 synth.Shot((hopper * (0.7 + 0.03 * k)).astype(np.uint8), 60)]
        out = dest / f"gen{k}.mp4"
        synth.write_video(out, shots, fps=25.0, size=(360, 480), audio="tone",
                          container_format="mp4")
        videos.append(out)
    return videos, {"hopper": photo}


def write_recipe(dest: Path, videos: list[Path], photos: dict[str, Path]) -> Path:
    people = []
    for i, (pid, photo) in enumerate(photos.items()):
        vids = "".join(f"\n          - {{path: {v}, licence: test}}" for v in videos) if i == 0 else " []"
        people.append(f"  - id: {pid}\n    photos: [{{path: {photo}, licence: test}}]\n"
                      f"    videos:{textwrap.indent(vids, '')}")
    recipe = dest / "recipe.yaml"
    recipe.write_text("name: executors-bench\npeople:\n" + "\n".join(people) + "\n"
                      "stages:\n  scrape: {min_interval_s: 0}\n")
    return recipe


class RssSampler(threading.Thread):
    """Peak RSS of every process under ``root_pid``, by pid, with its command line."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root = root_pid
        self.peak: dict[int, tuple[float, str]] = {}
        self.stop = threading.Event()

    def _children(self) -> dict[int, int]:
        parents = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    stat = Path(f"/proc/{d}/stat").read_text()
                    parents[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        return parents

    def run(self) -> None:
        while not self.stop.is_set():
            parents = self._children()
            tree, frontier = {self.root}, [self.root]
            while frontier:
                p = frontier.pop()
                kids = [c for c, pp in parents.items() if pp == p and c not in tree]
                tree.update(kids)
                frontier.extend(kids)
            for pid in tree:
                try:
                    rss = 0.0
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            rss = int(line.split()[1]) / 1024
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                        errors="replace")[:120]
                except OSError:
                    continue
                if rss > self.peak.get(pid, (0.0, ""))[0]:
                    self.peak[pid] = (rss, cmd)
            time.sleep(0.5)


def classify(cmd: str) -> str:
    if "dsbuilder.cli" in cmd:
        return "main"
    if "multiprocessing" in cmd or "spawn_main" in cmd:
        return "worker"
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "worker"
    return "ray daemon"


def run_config(recipe: Path, ws: Path, kind: str, jobs: int) -> dict:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1767225600"}
    cmd = [*DSBUILDER, "-q", "run", str(recipe), "-w", str(ws), "--no-progress",
           "--executor", kind, "--jobs", str(jobs)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = RssSampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{kind}:{jobs} failed ({proc.returncode}):\n{err[-3000:]}")
    groups: dict[str, list[float]] = {}
    for rss, c in sampler.peak.values():
        groups.setdefault(classify(c), []).append(rss)
    digest = hashlib.sha256()
    for f in sorted((ws / "manifests").rglob("*.parquet")):
        digest.update(f.relative_to(ws).as_posix().encode() + f.read_bytes())
    return {"wall": wall, "groups": groups, "digest": digest.hexdigest()[:16], "summary": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generated", action="store_true", help="synthetic videos, not ../shared")
    ap.add_argument("--configs", default="local:1,process:2,ray:2")
    ap.add_argument("--keep", type=Path, help="keep the workspaces in this folder")
    args = ap.parse_args()
    from dsbuilder.media import probe

    with tempfile.TemporaryDirectory(prefix="dsb-exec-") as tmp:
        tmp = args.keep or Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        if args.generated or not SHARED.is_dir():
            videos, photos = generated_batch(tmp)
            batch = "generated (8 videos from the demo's portraits)"
        else:
            videos, photos = real_batch(tmp)
            batch = "real (../shared/media, 8 videos)"
        seconds = sum(float(probe(v).duration or 0) for v in videos)
        recipe = write_recipe(tmp, videos, photos)
        print(f"batch: {batch}, {len(videos)} videos, {seconds:.1f} s of video; {os.cpu_count()} CPUs")
        print(f"{'executor':<10} {'jobs':>4} {'wall s':>7} {'speed-up':>8} {'x real time':>11} "
              f"{'main MB':>8} {'worker MB (max, n)':>19} {'ray daemons MB':>14}  manifests")
        base = None
        for spec in args.configs.split(","):
            kind, jobs = spec.split(":")
            r = run_config(recipe, tmp / f"ws-{kind}-{jobs}", kind, int(jobs))
            base = base or r["wall"]
            g = r["groups"]
            workers = g.get("worker", [])
            print(f"{kind:<10} {jobs:>4} {r['wall']:>7.1f} {base / r['wall']:>7.2f}x "
                  f"{seconds / r['wall']:>10.2f}x {max(g.get('main', [0])):>8.0f} "
                  f"{(f'{max(workers):.0f}, {len(workers)}' if workers else '-'):>19} "
                  f"{sum(g.get('ray daemon', [])):>14.0f}  {r['digest']}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
