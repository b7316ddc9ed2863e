"""``dsbuilder annotate``: faces, emotions and valence/arousal drawn on images, videos and live streams.

Faces are found with :func:`dsbuilder.face.api.detect` (dlib HOG, on a copy downscaled to
``detect_width``), each face is classified by the FER teacher (:mod:`dsbuilder.labels.fer`) and mapped
to valence/arousal (:mod:`dsbuilder.labels.va`). Boxes are coloured by valence, red (-1) through yellow
(0) to green (+1), and labelled with the emotion, its probability and the V/A values.

Inputs:

* an image (by suffix) -> the annotated image;
* a video file -> an annotated mp4 (every frame, in order);
* a live source: a webcam index (``0`` = ``/dev/video0``) or anything PyAV opens as a URL (``http://``,
  ``rtsp://``, ``udp://``, ...). A reader thread decodes frames as they arrive and keeps only the
  newest; the annotator takes whatever is newest when it is free. So latency stays bounded by one
  frame's processing time and frames are dropped rather than queued when processing is slower than
  the source. ``realtime`` paces a non-live source (a file served over HTTP) to its timestamps, as
  ``ffmpeg -re`` does. Output: an mp4 whose frames keep their source times, and/or a window.
"""

from __future__ import annotations

import colorsys
import logging
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from dsbuilder.errors import UsageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".ts", ".m4v", ".mpg", ".mpeg", ".flv"}


@dataclass(frozen=True)
class FaceLabel:
    box: tuple[int, int, int, int]  # left, top, right, bottom in the input image
    emotion: str
    prob: float
    probs: tuple[float, ...]
    valence: float
    arousal: float


@dataclass
class AnnotateStats:
    frames_read: int = 0  # decoded from the source
    frames_processed: int = 0  # annotated (and written/shown)
    frames_dropped: int = 0  # decoded but superseded by a newer frame before processing
    faces: int = 0
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)  # frame arrival -> annotated

    @property
    def fps(self) -> float:
        return self.frames_processed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        lat = f", median latency {np.median(self.latencies_s) * 1000:.0f} ms" \
            if self.latencies_s else ""
        return (f"{self.frames_processed} frames annotated ({self.fps:.1f} fps), "
                f"{self.frames_read} read, {self.frames_dropped} dropped, {self.faces} faces{lat}")


class Annotator:
    """Detect faces in RGB frames, classify them and draw the result."""

    def __init__(self, model=None, *, detector: str = "hog", detect_width: int = 640,
                 upsample: int = 0, margin: float = 0.1):
        from dsbuilder.labels.fer import load_fer

        self.model = model if model is not None and not isinstance(model, (str, Path)) \
            else load_fer(model)
        self.detector, self.detect_width = detector, detect_width
        self.upsample, self.margin = upsample, margin

    def label(self, rgb: np.ndarray) -> list[FaceLabel]:
        import cv2

        from dsbuilder.face import api
        from dsbuilder.labels.fer import crop_gray64
        from dsbuilder.labels.va import valence_arousal

        h, w = rgb.shape[:2]
        scale = min(1.0, self.detect_width / w) if self.detect_width else 1.0
        small = rgb if scale == 1.0 else cv2.resize(rgb, (int(round(w * scale)),
                                                          int(round(h * scale))),
                                                    interpolation=cv2.INTER_AREA)
        dets = api.detect(small, self.detector, self.upsample)
        if not dets:
            return []
        boxes = [tuple(int(round(v / scale)) for v in d.box) for d in dets]
        batch = np.stack([crop_gray64(rgb, b, self.margin) for b in boxes])
        probs = self.model.predict(batch)
        va = valence_arousal(probs, self.model.classes)
        out = []
        for b, p, (v, a) in zip(boxes, probs, va):
            k = int(np.argmax(p))
            out.append(FaceLabel(b, self.model.classes[k], float(p[k]),
                                 tuple(float(x) for x in p), float(v), float(a)))
        return out

    def annotate(self, rgb: np.ndarray) -> tuple[np.ndarray, list[FaceLabel]]:
        faces = self.label(rgb)
        return draw(rgb, faces), faces


def valence_colour(v: float) -> tuple[int, int, int]:
    """RGB colour for valence in [-1, 1]: red (-1), yellow (0), green (+1)."""
    v = max(-1.0, min(1.0, float(v)))
    r, g, b = colorsys.hsv_to_rgb((v + 1) / 2 * (120 / 360), 1.0, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw(rgb: np.ndarray, faces: list[FaceLabel], fps: float | None = None) -> np.ndarray:
    """A copy of ``rgb`` with each face's box, emotion and V/A drawn (and the fps, if given)."""
    import cv2

    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    thick = max(1, int(round(min(h, w) / 300)))
    font_scale = max(0.4, min(h, w) / 900)
    for f in faces:
        colour = valence_colour(f.valence)
        l, t, r, b = f.box
        cv2.rectangle(img, (l, t), (r, b), colour, 2 * thick)
        lines = [f"{f.emotion} {f.prob:.2f}", f"V {f.valence:+.2f}  A {f.arousal:+.2f}"]
        y = t - 6 * thick
        sizes = [cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick) for s in lines]
        line_h = max(sz[0][1] + sz[1] for sz in sizes) + 4 * thick
        if y - line_h * len(lines) < 0:  # no room above the box: write inside its top
            y = t + line_h * len(lines) + 2 * thick
        for i, s in enumerate(reversed(lines)):
            (tw, th), base = sizes[len(lines) - 1 - i]
            yy = y - i * line_h
            cv2.rectangle(img, (l, yy - th - base), (l + tw + 4 * thick, yy + base // 2), colour,
                          -1)
            cv2.putText(img, s, (l + 2 * thick, yy - base // 2), cv2.FONT_HERSHEY_SIMPLEX,
                        font_scale, (0, 0, 0), thick, cv2.LINE_AA)
    if fps is not None:
        cv2.putText(img, f"{fps:.1f} fps", (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return img


# --- images and video files -------------------------------------------------------------------------

def annotate_image(src: str | Path, out: str | Path, annotator: Annotator | None = None
                   ) -> list[FaceLabel]:
    from PIL import Image

    annotator = annotator or Annotator()
    rgb = np.asarray(Image.open(src).convert("RGB"))
    img, faces = annotator.annotate(rgb)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(str(out))
    return faces


class _VideoWriter:
    """mp4 (H.264) writer taking RGB frames with their times in seconds (kept as pts)."""

    def __init__(self, path: str | Path, fps: float = 25.0):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), "w")
        self.stream = None
        self.fps = fps
        self.time_base = Fraction(1, 1000)
        self.last_pts = -1

    def write(self, rgb: np.ndarray, t: float) -> None:
        import av

        h, w = rgb.shape[:2]
        if self.stream is None:
            self.stream = self.container.add_stream(
                "libx264", rate=Fraction(self.fps).limit_denominator(1001))
            self.stream.width, self.stream.height = w - w % 2, h - h % 2
            self.stream.pix_fmt = "yuv420p"
            self.stream.time_base = self.time_base
            self.stream.codec_context.time_base = self.time_base
            self.stream.options = {"preset": "veryfast", "crf": "23"}
            self.t0 = t
        sw, sh = self.stream.width, self.stream.height
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:sh, :sw]), format="rgb24")
        pts = max(self.last_pts + 1, int(round((t - self.t0) * 1000)))
        frame.pts, frame.time_base = pts, self.time_base
        self.last_pts = pts
        for pkt in self.stream.encode(frame):
            self.container.mux(pkt)

    def close(self) -> None:
        if self.stream is not None:
            for pkt in self.stream.encode():
                self.container.mux(pkt)
        self.container.close()


def annotate_video(src: str | Path, out: str | Path, annotator: Annotator | None = None, *,
                   max_frames: int | None = None,
                   on_frame: Callable[[int, list[FaceLabel]], None] | None = None) -> AnnotateStats:
    """Annotate every frame of a video file (in order, none dropped) into an mp4."""
    from dsbuilder.media import iter_frames, probe

    annotator = annotator or Annotator()
    info = probe(src)
    writer = _VideoWriter(out, info.fps or 25.0)
    stats = AnnotateStats()
    start = time.monotonic()
    try:
        for index, t, rgb in iter_frames(src, fmt="rgb24", max_frames=max_frames):
            stats.frames_read += 1
            img, faces = annotator.annotate(rgb)
            writer.write(img, t)
            stats.frames_processed += 1
            stats.faces += len(faces)
            if on_frame:
                on_frame(index, faces)
    finally:
        writer.close()
        stats.seconds = time.monotonic() - start
    return stats


# --- live sources -----------------------------------------------------------------------------------

def open_live(source: str | int):
    """Open a webcam index or URL with PyAV."""
    import av

    src = str(source)
    if src.isdigit():
        return av.open(f"/dev/video{src}", format="v4l2")
    return av.open(src, timeout=(10.0, 10.0), metadata_errors="ignore")


class LatestFrameReader:
    """A thread decoding ``source`` and keeping only the newest frame (older ones are dropped)."""

    def __init__(self, source: str | int, realtime: bool = True):
        self.source, self.realtime = source, realtime
        self._cond = threading.Condition()
        self._frame: tuple[int, float, np.ndarray, float] | None = None  # index, t, rgb, arrival
        self._stop = threading.Event()
        self.done = False
        self.error: Exception | None = None
        self.frames_read = 0
        self.frames_dropped = 0
        self.fps: float | None = None
        self._thread = threading.Thread(target=self._run, name="annotate-reader", daemon=True)

    def start(self) -> "LatestFrameReader":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            container = open_live(self.source)
            with container:
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else None
                wall0 = t0 = None
                for i, frame in enumerate(container.decode(stream)):
                    if self._stop.is_set():
                        break
                    t = float(frame.pts * frame.time_base) if frame.pts is not None \
                        and frame.time_base is not None else i / (self.fps or 25.0)
                    if self.realtime:
                        if wall0 is None:
                            wall0, t0 = time.monotonic(), t
                        delay = (t - t0) - (time.monotonic() - wall0)
                        if delay > 0 and self._stop.wait(delay):
                            break
                    rgb = frame.to_ndarray(format="rgb24")
                    with self._cond:
                        if self._frame is not None:
                            self.frames_dropped += 1
                        self._frame = (i, t, rgb, time.monotonic())
                        self.frames_read += 1
                        self._cond.notify_all()
        except Exception as exc:  # noqa: BLE001 - reported to the consumer
            self.error = exc
        finally:
            with self._cond:
                self.done = True
                self._cond.notify_all()

    def get(self, timeout: float = 10.0) -> tuple[int, float, np.ndarray, float] | None:
        """The newest frame not yet taken (waiting up to ``timeout``), or None at the end."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self.done, timeout)
            item, self._frame = self._frame, None
            return item

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def annotate_live(source: str | int, out: str | Path | None = None,
                  annotator: Annotator | None = None, *, show: bool = False,
                  max_seconds: float | None = None, max_frames: int | None = None,
                  realtime: bool = True,
                  on_frame: Callable[[int, list[FaceLabel]], None] | None = None) -> AnnotateStats:
    """Annotate a live source with bounded latency until it ends, ``max_seconds`` pass or
    ``max_frames`` are annotated. Writes an mp4 to ``out`` and/or shows a window (``show``)."""
    import cv2

    annotator = annotator or Annotator()
    reader = LatestFrameReader(source, realtime=realtime).start()
    stats = AnnotateStats()
    writer = None
    start = time.monotonic()
    fps_shown = None
    try:
        while True:
            if max_seconds is not None and time.monotonic() - start >= max_seconds:
                break
            if max_frames is not None and stats.frames_processed >= max_frames:
                break
            wait = 10.0 if max_seconds is None else max(0.01, max_seconds - (time.monotonic()
                                                                                 - start))
            item = reader.get(timeout=min(wait, 10.0))
            if item is None:
                if reader.done:
                    break
                continue
            index, t, rgb, arrived = item
            img, faces = annotator.annotate(rgb)
            elapsed = time.monotonic() - start
            stats.frames_processed += 1
            fps_shown = stats.frames_processed / elapsed if elapsed > 0 else None
            img = draw(img, [], fps=fps_shown)
            stats.faces += len(faces)
            stats.latencies_s.append(time.monotonic() - arrived)
            if out is not None:
                if writer is None:
                    writer = _VideoWriter(out, reader.fps or 25.0)
                writer.write(img, t)
            if show:
                cv2.imshow("dsbuilder annotate", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    break
            if on_frame:
                on_frame(index, faces)
    finally:
        reader.stop()
        if writer is not None:
            writer.close()
        if show:
            cv2.destroyAllWindows()
        stats.seconds = time.monotonic() - start
        stats.frames_read = reader.frames_read
        stats.frames_dropped = reader.frames_dropped
    if reader.error is not None and stats.frames_processed == 0:
        raise UsageError(f"cannot read the live source {source!r}: {reader.error}",
                         "pass a webcam index, or a URL PyAV/FFmpeg can open")
    return stats


def annotate(src: str, out: str | Path | None, *, model: str | None = None, live: bool | None = None,
             show: bool = False, max_seconds: float | None = None, max_frames: int | None = None,
             detector: str = "hog", detect_width: int = 640, realtime: bool = True) -> Any:
    """Dispatch on the input: an image, a video file, or a live source (webcam index or URL).
    Returns the list of faces (image) or :class:`AnnotateStats` (video, live)."""
    path = Path(src)
    is_live = live if live is not None else (src.isdigit() or "://" in src)
    if not is_live and not path.exists():
        raise UsageError(f"{src}: no such file", "pass an image, a video, a webcam index or a URL")
    if out is None and not show:
        raise UsageError("nowhere to put the result", "pass -o OUT (or --show for a live source)")
    annotator = Annotator(model, detector=detector, detect_width=detect_width)
    if is_live:
        return annotate_live(src, out, annotator, show=show, max_seconds=max_seconds,
                             max_frames=max_frames, realtime=realtime)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if out is None:
            raise UsageError("an image needs -o OUT")
        return annotate_image(path, out, annotator)
    if out is None:
        raise UsageError("a video file needs -o OUT")
    return annotate_video(path, out, annotator, max_frames=max_frames)


def iter_live(source: str | int, annotator: Annotator | None = None, realtime: bool = True
              ) -> Iterator[tuple[int, float, np.ndarray, list[FaceLabel]]]:
    """Generator form of :func:`annotate_live` for callers with their own loop."""
    annotator = annotator or Annotator()
    reader = LatestFrameReader(source, realtime=realtime).start()
    try:
        while (item := reader.get()) is not None:
            index, t, rgb, _ = item
            img, faces = annotator.annotate(rgb)
            yield index, t, img, faces
    finally:
        reader.stop()
