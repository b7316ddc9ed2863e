"""``dsbuilder annotate``: images, video files, and a live stream served over loopback HTTP (bounded
latency: frames are dropped, never queued, when annotation is slower than the source)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from dsbuilder import annotate as ann
from dsbuilder import synth
from dsbuilder.labels import fer
from dsbuilder.media import iter_frames, probe
from tests.conftest import run_cli
from tests.loopback import LoopbackServer, Route


@pytest.fixture(scope="module")
def annotator():
    fer.pull_fer_model()
    return ann.Annotator()


class SlowModel:
    """A FerModel stand-in: any object with ``classes`` and ``predict`` plugs in."""

    classes = fer.FER_CLASSES
    name = "slow-happy"

    def __init__(self, delay_s: float):
        self.delay_s = delay_s

    def predict(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        out = np.zeros((len(batch), 7), np.float32)
        out[:, fer.FER_CLASSES.index("happy")] = 1.0
        return out


def test_valence_colour():
    assert ann.valence_colour(-1) == (255, 0, 0)
    assert ann.valence_colour(0) == (255, 255, 0)
    assert ann.valence_colour(1) == (0, 255, 0)
    assert ann.valence_colour(5) == (0, 255, 0)


def test_annotate_image(annotator, tmp_path):
    src = tmp_path / "grace.jpg"
    synth.write_photo(src, synth.grace_hopper())
    out = tmp_path / "out" / "grace.png"
    faces = ann.annotate_image(src, out, annotator)
    assert len(faces) == 1
    f = faces[0]
    assert f.emotion in fer.FER_CLASSES and sum(f.probs) == pytest.approx(1, abs=1e-4)
    from PIL import Image

    img = np.asarray(Image.open(out).convert("RGB"))
    l, t, r, b = f.box
    # the box's left edge is drawn in the valence colour
    assert tuple(img[(t + b) // 2, l]) == ann.valence_colour(f.valence)


def test_annotate_video_file(annotator, tmp_path):
    src = tmp_path / "in.mp4"
    synth.write_video(src, [synth.Shot(synth.astronaut(), 10)], size=(240, 320), audio=None)
    seen = []
    stats = ann.annotate_video(src, tmp_path / "out.mp4", annotator,
                               on_frame=lambda i, faces: seen.append([x.emotion for x in faces]))
    assert stats.frames_processed == 10 and stats.frames_dropped == 0
    assert sum(len(s) for s in seen) == stats.faces >= 8
    assert sum(s.count("happy") for s in seen) >= 8
    assert sum(1 for _ in iter_frames(tmp_path / "out.mp4")) == 10


def _serve_ts(tmp_path: Path, seconds: float) -> Path:
    ts = tmp_path / "live.ts"
    synth.write_video(ts, [synth.Shot(synth.astronaut(), int(25 * seconds))], size=(240, 320),
                      audio=None, container_format="mpegts")
    return ts


def test_live_stream_over_loopback(annotator, tmp_path):
    ts = _serve_ts(tmp_path, 2.0)
    with LoopbackServer() as srv:
        srv.add("/live.ts", Route.file(ts, "video/mp2t"))
        start = time.monotonic()
        stats = ann.annotate_live(srv.url("/live.ts"), tmp_path / "live.mp4", annotator,
                                  max_seconds=15)
        wall = time.monotonic() - start
    print(f"\nlive (loopback, real model): {stats.summary()}, wall {wall:.1f} s")
    assert stats.frames_read == 50 and stats.frames_processed > 10
    assert stats.frames_processed + stats.frames_dropped <= stats.frames_read
    assert wall < 6  # paced to the 2 s source, not to the processing
    assert stats.faces >= stats.frames_processed * 0.8
    assert probe(tmp_path / "live.mp4").has_video


def test_live_drops_frames_instead_of_falling_behind(tmp_path):
    ts = _serve_ts(tmp_path, 2.0)
    slow = ann.Annotator(SlowModel(0.15), detect_width=320)
    with LoopbackServer() as srv:
        srv.add("/live.ts", Route.file(ts, "video/mp2t"))
        stats = ann.annotate_live(srv.url("/live.ts"), None, slow, max_seconds=10)
    print(f"\nlive (slow model, 0.15 s/frame): {stats.summary()}")
    assert stats.frames_read == 50
    assert stats.frames_dropped >= 20  # ~6 fps of processing against a 25 fps source
    assert max(stats.latencies_s) < 0.6  # one frame's work (+ detection), not a growing queue
    assert stats.fps < 10 and stats.faces == stats.frames_processed


def test_live_errors_and_bounds(annotator, tmp_path):
    with LoopbackServer() as srv:
        with pytest.raises(ann.UsageError, match="cannot read the live source"):
            ann.annotate_live(srv.url("/missing.ts"), None, annotator, max_seconds=5)
    with pytest.raises(ann.UsageError, match="no such file"):
        ann.annotate(str(tmp_path / "nope.jpg"), tmp_path / "o.png")


def test_cli_annotate_and_models_pull(tmp_path):
    fer.pull_fer_model()
    src = tmp_path / "astro.png"
    synth.write_photo(src, synth.astronaut())
    res = run_cli("annotate", str(src), "-o", str(tmp_path / "a.png"))
    assert res.returncode == 0, res.stderr
    assert "happy" in res.stdout and (tmp_path / "a.png").is_file()
    res = run_cli("models", "pull")
    assert res.returncode == 0, res.stderr
    assert "emotion_model.hdf5" in res.stdout
