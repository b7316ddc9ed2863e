"""Real-time factor of the speakers stage's work, next to the face work it follows.

For each clip span: (a) the face work the faces stage must do anyway (HOG detection + 68 landmarks on
every frame; an upper bound of the faces stage, which detects at 5 fps and tracks between), and
(b) the speakers work: VAD over the whole video (streamed), audio decode of the span, mouth features,
sync scoring over +-15 frames, per-frame probabilities, and the voice embedding of each speaking segment.
RTF = processing time / media duration. Run: python benchmarks/speakers.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

REAL = Path(__file__).resolve().parents[2] / "shared" / "media" / "video"


def bench(path: Path, t0: float, t1: float) -> dict:
    from dsbuilder.audio import read_audio
    from dsbuilder.face import api
    from dsbuilder.media import iter_frames, probe
    from dsbuilder.stages import speakers

    a = time.perf_counter()
    T, L, Y, B = [], [], [], []
    for _, t, img in iter_frames(path, fmt="rgb24"):
        if t0 <= t < t1:
            d = api.detect(img)
            if d:
                lm = api.landmarks(img, d[0].box)
                T.append(t), L.append(lm), Y.append(api.yaw_pitch(lm)[0]), B.append(d[0].box)
    faces_s = time.perf_counter() - a
    b = time.perf_counter()
    segs = speakers.video_vad(path)
    audio, at0 = read_audio(path, start_s=t0, end_s=t1)
    r = speakers.score_track(np.array(T), np.array(L), np.array(Y), np.array(B, np.float32), audio,
                             at0, 16000, probe(path).fps, segs)
    spk_s = time.perf_counter() - b
    dur = t1 - t0
    return {"clip": f"{path.name} {t0}-{t1}s", "frames": len(T), "faces_rtf": faces_s / dur,
            "speakers_rtf": spk_s / dur, "ratio": spk_s / faces_s, "speaking": r["speaking"],
            "reason": r["reason"], "offset": r["offset"], "conf": r["confidence"]}


def main() -> None:
    from dsbuilder.speaker.voice import load_embedder

    load_embedder("auto")  # model load once, as in a stage run
    rows = []
    if REAL.is_dir():
        for name, t0, t1 in (("short_hamilton_clip.mp4", 3.6, 7.9),
                             ("short_hamilton_clip.mp4", 7.9, 10.0), ("single_face.mp4", 0.0, 2.4)):
            rows.append(bench(REAL / name, t0, t1))
    else:
        import tempfile

        from dsbuilder import synth

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "s.mp4"
            synth.write_video(p, [synth.Shot(synth.grace_hopper(), 150)], fps=25, size=(360, 640))
            rows.append(bench(p, 0.0, 6.0))
    print("| clip | frames | face work RTF | speakers RTF | speakers / face work | decision |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        dec = "speaking" if r["speaking"] else r["reason"]
        print(f"| {r['clip']} | {r['frames']} | {r['faces_rtf']:.3f} | {r['speakers_rtf']:.3f} | "
              f"{100 * r['ratio']:.1f}% | {dec} (offset {r['offset']}, conf {r['conf']:.3f}) |")


if __name__ == "__main__":
    main()
