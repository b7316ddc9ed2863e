"""Media probing and streaming decode with PyAV (FFmpeg libraries inside the wheel; no ffmpeg binary).

Frames are yielded one at a time with their index and presentation time, so memory does not grow with
video length, and times are right for variable-frame-rate input too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dsbuilder.errors import MediaError  # noqa: F401 (re-exported: media.MediaError)
from dsbuilder.progress import at_time

log = logging.getLogger(__name__)

#: Frame rate assumed when a container states none.
FALLBACK_FPS = 25.0


@dataclass(frozen=True)
class MediaInfo:
    has_video: bool
    has_audio: bool
    duration: float | None
    width: int | None
    height: int | None
    fps: float | None  # average frame rate as the container states it
    n_frames: int | None  # as the container states it (may be None or approximate)
    video_codec: str | None
    audio_codec: str | None
    variable_frame_rate: bool | None = None


def probe(path: str | Path) -> MediaInfo:
    """Read stream metadata without decoding the whole file. Raises :class:`MediaError`."""
    import av

    path = Path(path)
    if path.stat().st_size == 0:
        raise MediaError("unsupported_media", "file is empty (0 bytes)")
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            v = c.streams.video[0] if c.streams.video else None
            a = c.streams.audio[0] if c.streams.audio else None
            duration = None
            if c.duration is not None:
                duration = c.duration / 1_000_000
            elif v is not None and v.duration is not None and v.time_base is not None:
                duration = float(v.duration * v.time_base)
            if v is None:
                return MediaInfo(False, a is not None, duration, None, None, None, None, None,
                                 a.codec_context.name if a else None)
            rate = v.average_rate or v.guessed_rate
            base_rate = v.base_rate
            vfr = None
            if rate and base_rate:
                vfr = abs(float(rate) - float(base_rate)) > 0.01 * float(base_rate)
            return MediaInfo(
                has_video=True, has_audio=a is not None, duration=duration,
                width=v.codec_context.width, height=v.codec_context.height,
                fps=float(rate) if rate else None, n_frames=v.frames or None,
                video_codec=v.codec_context.name, audio_codec=a.codec_context.name if a else None,
                variable_frame_rate=vfr,
            )
    except av.error.FFmpegError as exc:
        raise MediaError("unsupported_media", f"not a readable media file: {exc}") from None


def decode_first_frame(path: str | Path) -> None:
    """Decode one video frame; raises :class:`MediaError` if the video cannot be decoded."""
    for _ in iter_frames(path, max_frames=1):
        return
    raise MediaError("decode_error", "no decodable video frame")


#: 8-bit pixel formats whose first plane is the luma (Y) plane, stored one byte a pixel.
_LUMA_FIRST = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                         "yuv440p", "yuvj440p", "yuv411p", "yuv410p", "nv12", "nv21", "nv16",
                         "nv24", "nv42"})

#: Limited ("MPEG", 16-235) luma to full range (0-255), rounded: what a grey image means to the
#: detector and the landmark predictor.
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)


def luma(av_frame: Any) -> np.ndarray | None:
    """The grey image of a decoded frame, read straight from its Y plane: ``(h, w)`` uint8, full
    range. None when the pixel format has no 8-bit Y plane (the caller converts with FFmpeg then).

    Five times cheaper than FFmpeg's conversion to ``gray`` (0.1 against 0.5 ms at 360p), which
    also dithers (a given Y value maps to a spread of grey values); this maps each value once.
    """
    if av_frame.format.name not in _LUMA_FIRST:
        return None
    plane = av_frame.planes[0]
    h, w = av_frame.height, av_frame.width
    y = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)[:, :w]
    if av_frame.format.name.startswith("yuvj") or int(av_frame.color_range or 0) == 2:
        return np.ascontiguousarray(y)  # full range already (JPEG range)
    import cv2

    return cv2.LUT(y, _LIMITED_TO_FULL)


def _damaged_packet_errors() -> tuple[type, ...]:
    """PyAV's exception types for a packet the decoder refuses (imported on use: ``av`` is heavy)."""
    import av

    return (av.error.InvalidDataError, av.error.PatchWelcomeError, av.error.UndefinedError)


def safe_decode(packet: Any) -> list:
    """``packet.decode()``, or no frame when the packet is damaged (see :func:`decode_stream`)."""
    try:
        return packet.decode()
    except _damaged_packet_errors():
        return []


def decode_stream(container: Any, stream: Any, damage: list | None = None) -> Iterator[Any]:
    """Decoded frames of ``stream``, packet by packet, streaming.

    A packet the decoder refuses (damaged bytes in the middle of a file) is skipped, not fatal: the
    frames it held are lost and decoding goes on with the next packets (after a damaged key frame, the
    decoder waits for the next one). Each run of refused packets is appended to ``damage`` as
    ``[first_t, last_t, n_packets]`` (seconds on the container's timeline; None when the packets carry
    no time). A file cut short simply ends where its data ends; the caller compares what decoded with
    what the container declares (:func:`declared_frames`).
    """
    start = container.start_time / 1_000_000 if container.start_time is not None else 0.0
    span: list | None = None
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except _damaged_packet_errors() as exc:
            t = (float(packet.pts * packet.time_base) - start
                 if packet.pts is not None and packet.time_base is not None else None)
            if span is None:
                span = [t, t, 0]
                if damage is not None:
                    damage.append(span)
                log.info("decode: skipping a damaged packet at %s s: %s", t, exc)
            span[1] = t if t is not None else span[1]
            span[2] += 1
            continue
        if frames:
            span = None
        yield from frames


@dataclass(frozen=True)
class VideoInfo:
    """What the decoders need to know of a video stream."""

    width: int
    height: int
    fps: float
    time_base: Any  # fractions.Fraction of the video stream
    start_offset: float  # container start time, seconds (frame times are relative to it)


def open_video(path: str | Path) -> tuple[Any, Any, VideoInfo]:
    """An open container, its first video stream (decoded with FFmpeg's threads) and its
    :class:`VideoInfo`. Raises :class:`MediaError` (``decode_error``, ``no_video_stream``)."""
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise MediaError("decode_error", f"cannot open: {exc}") from None
    if not container.streams.video:
        container.close()
        raise MediaError("no_video_stream", "the file has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if "DSBUILDER_CORES" in os.environ:  # a worker's share of the cores
        from dsbuilder.executors import cores

        stream.thread_count = cores()
    rate = stream.average_rate or stream.guessed_rate
    # Times are on the container's timeline (0 = the file's start), as players show them: a video
    # stream that starts 0.85 s after the audio has its first frame at t=0.85.
    start = container.start_time / 1_000_000 if container.start_time is not None else 0.0
    info = VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height,
                     fps=float(rate) if rate else FALLBACK_FPS, time_base=stream.time_base,
                     start_offset=start)
    return container, stream, info


def frame_time(frame: Any, start_offset: float, last_t: float | None, step: float) -> float:
    """The one timeline rule: a decoded frame's presentation time on the container's timeline
    (seconds from the file's start); a frame without a timestamp gets the previous time plus one
    nominal frame (``step``)."""
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base) - start_offset
    return (last_t + step) if last_t is not None else 0.0


def declared_frames(info: "MediaInfo") -> int | None:
    """Frames the container says its video stream holds (None when it does not say)."""
    if info.n_frames:
        return int(info.n_frames)
    if info.duration and info.fps:
        return int(round(info.duration * info.fps))
    return None


def iter_frames(path: str | Path, width: int | None = None, max_frames: int | None = None,
                fmt: str = "bgr24", damage: list | None = None
                ) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(index, pts_seconds, image)`` for every decoded frame, streaming.

    ``width`` resizes (keeping the aspect ratio, even height) inside FFmpeg's scaler; grey frames at
    their own size come straight from the Y plane (:func:`luma`). Times come from
    each frame's presentation timestamp, so they are right for variable frame rates; a frame with no
    timestamp gets the previous time plus one nominal frame duration. Damaged packets are skipped
    and reported in ``damage`` (:func:`decode_stream`).
    """
    import av

    container, stream, info = open_video(path)
    with container:
        step = 1.0 / info.fps
        index = 0
        last_t = None
        # one scaler for the whole stream: frame.to_ndarray(width=...) would set up a new one per frame
        reformatter = av.video.reformatter.VideoReformatter()
        try:
            for frame in decode_stream(container, stream, damage):
                t = last_t = frame_time(frame, info.start_offset, last_t, step)
                if width and frame.width != width:
                    h = max(2, int(round(frame.height * width / frame.width / 2)) * 2)
                    img = reformatter.reformat(frame, width=width, height=h, format=fmt).to_ndarray()
                elif fmt == "gray" and (grey := luma(frame)) is not None:
                    img = grey
                else:
                    img = reformatter.reformat(frame, format=fmt).to_ndarray()
                yield index, t, img
                at_time(t)
                index += 1
                if max_frames is not None and index >= max_frames:
                    return
        except av.error.FFmpegError as exc:
            if index == 0:
                raise MediaError("decode_error", f"cannot decode: {exc}") from None
            raise MediaError("decode_error", f"decoding stopped at frame {index}: {exc}") from None


def sample_frames(path: str | Path, times: list[float], fmt: str = "rgb24"
                  ) -> Iterator[tuple[int, float, np.ndarray]]:
    """One frame per requested time (ascending, seconds on the container's timeline): the first
    frame shown at or after it. Yields ``(index, t, image)``; ``index`` is ``round(t * fps)``, exact for
    constant frame rates.

    For sparse samples of a long video: each sample seeks to the key frame before it and decodes
    from there, so the cost is a group of pictures per sample, not the whole video, and only the
    sampled frames are converted. A sample whose seek lands after it (a broken index) is decoded
    on from where the previous one stopped instead. Raises :class:`MediaError`.
    """
    import av

    container, stream, info = open_video(path)
    with container:
        rate, start = info.fps, info.start_offset
        reformatter = av.video.reformatter.VideoReformatter()
        decoded = 0
        for want in times:
            try:
                if stream.time_base is not None:
                    container.seek(int((want + start - 0.001) / stream.time_base), stream=stream,
                                   backward=True, any_frame=False)
            except av.error.FFmpegError:
                pass  # not seekable: decode on
            got = None
            try:
                for frame in decode_stream(container, stream):
                    if frame.pts is None or frame.time_base is None:
                        continue
                    t = float(frame.pts * frame.time_base) - start
                    if t + 1e-6 >= want:
                        got = (t, frame)
                        break
            except av.error.FFmpegError as exc:
                raise MediaError("decode_error", f"decoding near {want:.2f} s: {exc}") from None
            if got is None:
                break  # past the end
            t, frame = got
            decoded += 1
            img = luma(frame) if fmt == "gray" else None
            if img is None:
                img = reformatter.reformat(frame, format=fmt).to_ndarray()
            yield int(round(t * rate)), t, img
            at_time(t)
        if not decoded and times:
            raise MediaError("decode_error", "no decodable video frame")


# --- frames for the face tracker: decoded once, converted on demand ----------------------------

class Frame:
    """One decoded frame, converted on demand (grey for landmarks, RGB for face chips)."""

    __slots__ = ("index", "t", "av_frame", "_gray", "_rgb", "_converters")

    def __init__(self, index: int, t: float, av_frame: Any, converters: dict[str, Any]):
        self.index = index
        self.t = t
        self.av_frame = av_frame
        self._gray: np.ndarray | None = None
        self._rgb: np.ndarray | None = None
        self._converters = converters  # one FFmpeg scaler per conversion, reused for the whole video

    def gray(self) -> np.ndarray:
        if self._gray is None:
            self._gray = luma(self.av_frame)
            if self._gray is None:
                self._gray = self._converters["gray"].reformat(self.av_frame,
                                                               format="gray").to_ndarray()
        return self._gray

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self._converters["rgb"].reformat(self.av_frame, format="rgb24").to_ndarray()
        return self._rgb

    def for_detection(self, width: int, height: int, pixel_format: str) -> np.ndarray:
        if pixel_format == "gray" and width == self.av_frame.width:
            return self.gray()  # full size: the grey frame the landmarks use anyway
        return self._converters["detect"].reformat(self.av_frame, width=width, height=height,
                                                   format=pixel_format).to_ndarray()

    def release(self) -> None:
        self.av_frame = self._gray = self._rgb = None


def iter_video(path: str | Path) -> Iterator[tuple[VideoInfo, Frame]]:
    """Yield ``(info, Frame)`` for every decoded frame, streaming. Raises :class:`MediaError`."""
    import av

    container, stream, info = open_video(path)
    converters = {k: av.video.reformatter.VideoReformatter() for k in ("gray", "rgb", "detect")}
    step = 1.0 / info.fps
    index, last_t = 0, None
    with container:
        try:
            for av_frame in decode_stream(container, stream):
                t = frame_time(av_frame, info.start_offset, last_t, step)
                last_t = t
                yield info, Frame(index, t, av_frame, converters)
                at_time(t)
                index += 1
        except av.error.FFmpegError as exc:
            where = "cannot decode" if index == 0 else f"decoding stopped at frame {index}"
            raise MediaError("decode_error", f"{where}: {exc}") from None
    if index == 0:
        raise MediaError("decode_error", "no decodable video frame")
