"""Pass 2 of the faces stage: an aligned face clip (mp4) and its audio (wav) for every kept track.

Only tracks already identified as a recipe person get here, so no pixel of anyone else is ever written.
:func:`write_crops` re-reads the source only where it is needed: the kept tracks are grouped into spans
(tracks that overlap or nearly touch share one), and for each span the source is opened, seeked to
the key frame before it and demuxed once, video and audio together, feeding every track of the span:

* **Video.** Each source frame of a track is warped (``cv2.warpAffine``) into a ``crop_size`` square by
  a similarity transform that maps the track's *smoothed* landmarks onto dlib's canonical face (the
  mean face of ``dlib.get_face_chip_details``, with ``crop_padding`` as its padding), so the face
  stays still in the clip while the head moves. Frames are encoded with libx264 (``ultrafast``,
  CRF :data:`CRF`) at the source frames' own timestamps, shifted to start at 0, so crop frame ``i`` is
  source frame ``start_frame + i`` at time ``start_s + (t_i - t_0)``.
* **Audio.** The source audio is resampled (``av.AudioResampler``: mono, ``audio_rate`` Hz) and cut
  sample-accurately to the track's ``[start_s, end_s)``: exactly ``round((end_s - start_s) * rate)``
  samples, zero-padded where the source has no audio. It is written as 16-bit PCM wav beside the clip
  and muxed into the clip as AAC. A source without audio gives a clip without audio and no wav.

Every file is written to a temporary name and renamed into place
(:func:`dsbuilder.workspace.atomic_path`).
Memory is one decoded frame plus the encoders' own buffers, whatever the track's length.
"""

from __future__ import annotations

import contextlib
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dsbuilder import media
from dsbuilder.media import MediaError, safe_decode
from dsbuilder.workspace import atomic_path, sha256_file

#: x264 constant rate factor of the clips (lower is better; 18 is visually lossless for most content).
CRF = 18

#: Seek this far before a span's start: the key frame before it, and audio packets stored earlier.
SEEK_MARGIN_S = 1.0

#: Tracks closer than this share one decode pass (seeking and re-decoding a GOP costs more).
MERGE_GAP_S = 2.0

# dlib's mean face (dlib/image_transforms/interpolation.h, get_face_chip_details; Boost Software
# Licence): average positions of landmarks 17-67 in a unit square.
_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991,
    0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373,
    0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132,
    0.858516, 0.79751, 0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268,
    0.726104, 0.642159, 0.556721, 0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127,
    0.552157, 0.689874, 0.553364, 0.490127, 0.42689)
_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
    0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345,
    0.587326, 0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852,
    0.178758, 0.216423, 0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388,
    0.745405, 0.780233, 0.864805, 0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746,
    0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182)
#: The landmarks dlib aligns on: 27-54 and 60-64 (no jaw, eyebrows or lower lip, which move a lot).
ALIGN_POINTS = np.array([i for i in range(17, 68)
                         if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67)])


def template(size: int, padding: float) -> np.ndarray:
    """Where :data:`ALIGN_POINTS` land in a ``size`` px crop with ``padding`` (as dlib), (k, 2)."""
    pts = np.stack([np.asarray(_MEAN_FACE_X), np.asarray(_MEAN_FACE_Y)], axis=1)[ALIGN_POINTS - 17]
    return (padding + pts) / (2 * padding + 1) * size


def alignment(landmarks: np.ndarray, size: int, padding: float) -> np.ndarray:
    """Crop-to-source similarity transforms, one per frame: (n, 68, 2) landmarks -> (n, 2, 3).

    The least-squares similarity (rotation, uniform scale, translation; Umeyama's closed form) that
    maps the template onto each frame's landmarks, as ``dlib.get_face_chip_details`` computes it.
    Use it with ``cv2.warpAffine(..., flags=cv2.WARP_INVERSE_MAP)``.
    """
    src = template(size, padding)  # (k, 2) in the crop
    dst = np.asarray(landmarks, np.float64)[:, ALIGN_POINTS]  # (n, k, 2) in the source frame
    ms, md = src.mean(axis=0), dst.mean(axis=1)
    sc, dc = src - ms, dst - md[:, None]
    var = (sc ** 2).sum() / len(src)
    # 2x2 covariance per frame; for a similarity the solution is [[a, -b], [b, a]]
    cov = np.einsum("nki,kj->nij", dc, sc) / len(src)
    a = (cov[:, 0, 0] + cov[:, 1, 1]) / var
    b = (cov[:, 1, 0] - cov[:, 0, 1]) / var
    m = np.zeros((len(dst), 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a, -b, b, a
    m[:, :, 2] = md - np.einsum("nij,j->ni", m[:, :, :2], ms)
    return m


@dataclass(frozen=True)
class CropJob:
    """What to write for one kept track."""

    track_id: str
    times: np.ndarray  # (n,) source frame times of the track, in order
    start_s: float
    end_s: float  # exclusive
    transforms: np.ndarray  # (n, 2, 3) crop -> source, from :func:`alignment`
    video_path: Path
    audio_path: Path  # written only when the source has audio


@dataclass(frozen=True)
class CropFiles:
    """What was written for one track."""

    track_id: str
    video_path: Path
    video_sha256: str
    n_frames: int
    audio_path: Path | None  # None: the source has no audio
    audio_sha256: str | None
    n_samples: int


class AacWriter:
    """Mono float32 samples -> AAC packets muxed into ``out`` (an open PyAV output container), in
    whole codec frames from the first sample on; :meth:`close` encodes the rest and flushes."""

    def __init__(self, out: Any, rate: int):
        self.out, self.rate = out, rate
        self.stream = out.add_stream("aac", rate=rate, layout="mono")
        self.frame_size = self.stream.codec_context.frame_size or 1024
        self.buf = np.zeros(0, np.float32)
        self.pts = 0  # samples encoded so far

    def write(self, samples: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, np.asarray(samples, np.float32)])
        n = self.frame_size
        while len(self.buf) >= n:
            self._encode(self.buf[:n])
            self.buf = self.buf[n:]

    def close(self) -> None:
        if len(self.buf):
            self._encode(self.buf)
            self.buf = self.buf[:0]
        for packet in self.stream.encode(None):
            self.out.mux(packet)

    def _encode(self, chunk: np.ndarray) -> None:
        import av

        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk[None, :]), format="fltp",
                                           layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.pts
        self.pts += len(chunk)
        for packet in self.stream.encode(frame):
            self.out.mux(packet)


#: Source pixel formats warped plane by plane (limited range 4:2:0, as the clips are written); any
#: other is converted to RGB first.
_PLANAR_420 = frozenset({"yuv420p"})


class SourceFrame:
    """A decoded source frame, warped into crops.

    A 4:2:0 frame is warped plane by plane (Y at full size, U and V at half size with the transform
    moved to chroma sample positions) straight into the clip's pixel format: no conversion to RGB and
    back, which cost more than the warps (0.5 ms a 360p frame). Other formats go through RGB.
    """

    #: Values outside the source picture: black, no colour.
    _BORDER = (16, 128, 128)

    def __init__(self, av_frame: Any, to_rgb: Any):
        self.av_frame = av_frame
        self.planar = (av_frame.format.name in _PLANAR_420
                       and int(av_frame.color_range or 0) != 2)
        self._to_rgb = to_rgb
        self._planes: list[np.ndarray] | None = None

    def _source_planes(self) -> list[np.ndarray]:
        if self._planes is None:
            f = self.av_frame
            if self.planar:
                sizes = [(f.height, f.width), ((f.height + 1) // 2, (f.width + 1) // 2),
                         ((f.height + 1) // 2, (f.width + 1) // 2)]
                self._planes = [np.frombuffer(p, np.uint8).reshape(h, p.line_size)[:, :w]
                                for p, (h, w) in zip(f.planes, sizes)]
            else:
                self._planes = [self._to_rgb.reformat(f, format="rgb24").to_ndarray()]
        return self._planes

    def warp(self, transform: np.ndarray, size: int) -> Any:
        """The ``size`` px crop through ``transform`` (crop -> source, luma pixels), as a VideoFrame."""
        import av
        import cv2

        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        planes = self._source_planes()
        if not self.planar:
            crop = cv2.warpAffine(planes[0], transform, (size, size), flags=flags,
                                  borderMode=cv2.BORDER_CONSTANT)
            return av.VideoFrame.from_ndarray(crop, format="rgb24")
        # chroma sample c sits at luma 2c + 0.5 (crop and source alike): same rotation and scale,
        # translation moved accordingly
        chroma = np.array(transform, np.float64)
        chroma[:, 2] = (transform[:, :2] @ [0.5, 0.5] + transform[:, 2] - 0.5) / 2
        half = (size + 1) // 2
        out = [cv2.warpAffine(plane, m, (n, n), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=border)
               for plane, m, n, border in zip(planes, (transform, chroma, chroma),
                                              (size, half, half), self._BORDER)]
        frame = av.VideoFrame(size, size, "yuv420p")
        for plane, data in zip(frame.planes, out):
            view = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
            view[:data.shape[0], :data.shape[1]] = data
        return frame


class _ClipWriter:
    """Encodes one track's crop clip and audio as frames and samples arrive."""

    def __init__(self, job: CropJob, video_tmp: Path, audio_tmp: Path | None, in_stream: Any,
                 size: int, rate: int):
        import av

        self.job = job
        self.video_tmp = video_tmp
        self.audio_tmp = audio_tmp
        self.size = size
        self.rate = rate
        self.out = av.open(str(video_tmp), "w", format="mp4")
        self.vs = self.out.add_stream("libx264", rate=in_stream.average_rate or in_stream.guessed_rate
                                      or 25)
        self.vs.width = self.vs.height = size
        self.vs.pix_fmt = "yuv420p"
        self.vs.time_base = in_stream.time_base
        self.vs.codec_context.time_base = in_stream.time_base
        # one encoder thread: a 224 px clip encodes at ~1 ms a frame, and no thread pool per clip
        self.vs.options = {"preset": "ultrafast", "crf": str(CRF), "threads": "1"}
        self.next_frame = 0  # index in job.times of the next frame to write
        self.n_samples = int(round((job.end_s - job.start_s) * rate))
        self.written = 0  # audio samples written so far
        self.wav = self.aac = None
        if audio_tmp is not None:
            self.wav = wave.open(str(audio_tmp), "wb")
            self.wav.setnchannels(1)
            self.wav.setsampwidth(2)
            self.wav.setframerate(rate)
            self.aac = AacWriter(self.out, rate)

    # --- video ------------------------------------------------------------------------------
    def wants(self, t: float, tol: float) -> int | None:
        """The crop frame index for a source frame at ``t``, or None if it is not one of ours."""
        if self.next_frame >= len(self.job.times):
            return None
        expected = self.job.times[self.next_frame]
        if t < expected - tol:
            return None
        if t > expected + tol:
            raise MediaError("decode_error", f"{self.job.track_id}: frame at {expected:.4f} s not "
                             f"decoded again in pass 2 (next was {t:.4f} s)")
        return self.next_frame

    def add_frame(self, source: "SourceFrame", t: float) -> None:
        """Warp the source frame at time ``t`` into the next crop frame and encode it."""
        frame = source.warp(self.job.transforms[self.next_frame], self.size)
        # the source frame's timestamp, counted from the track's first frame
        frame.pts = int(round((t - float(self.job.times[0])) / float(self.vs.time_base)))
        frame.time_base = self.vs.time_base
        for packet in self.vs.encode(frame):
            self.out.mux(packet)
        self.next_frame += 1

    # --- audio ------------------------------------------------------------------------------
    def add_audio(self, samples: np.ndarray, t: float) -> None:
        """Samples (mono float32) whose first one is at time ``t``; what falls in the track is kept."""
        if self.wav is None:
            return
        offset = int(round((t - self.job.start_s) * self.rate))  # of samples[0] in the track
        lo = max(0, self.written - offset)  # skip what precedes the track or was already written
        hi = min(len(samples), self.n_samples - offset)
        if hi <= lo:
            return
        if offset + lo > self.written:  # a hole in the source audio: silence
            self._write_samples(np.zeros(offset + lo - self.written, np.float32))
        self._write_samples(samples[lo:hi])

    def _write_samples(self, samples: np.ndarray) -> None:
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
        self.wav.writeframes(pcm.tobytes())
        self.written += len(samples)
        self.aac.write(samples)

    @property
    def video_done(self) -> bool:
        return self.next_frame >= len(self.job.times)

    @property
    def audio_done(self) -> bool:
        return self.wav is None or self.written >= self.n_samples

    def close(self) -> tuple[int, int]:
        """Flush the encoders; pad the audio to the track's length. Returns (frames, samples)."""
        if self.wav is not None:
            if self.written < self.n_samples:
                self._write_samples(np.zeros(self.n_samples - self.written, np.float32))
            self.aac.close()
            self.wav.close()
        for packet in self.vs.encode(None):
            self.out.mux(packet)
        self.out.close()
        return self.next_frame, self.written if self.wav is not None else 0

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.out.close()
        if self.wav is not None:
            with contextlib.suppress(Exception):
                self.wav.close()


def _groups(jobs: Sequence[CropJob]) -> list[list[CropJob]]:
    """Jobs in start order, grouped so that each group is one contiguous decode span."""
    groups: list[list[CropJob]] = []
    end = 0.0
    for job in sorted(jobs, key=lambda j: (j.start_s, j.track_id)):
        if groups and job.start_s <= end + MERGE_GAP_S:
            groups[-1].append(job)
            end = max(end, job.end_s)
        else:
            groups.append([job])
            end = job.end_s
    return groups


def write_crops(source: str | Path, jobs: Sequence[CropJob], *, size: int, rate: int
                ) -> list[CropFiles]:
    """Write every job's clip (and wav when the source has audio); return what was written, in
    ``jobs`` order. Raises :class:`MediaError` (``decode_error``) if the source cannot be re-read."""
    written: dict[str, CropFiles] = {}
    for group in _groups(jobs):
        for files in _write_group(Path(source), group, size, rate):
            written[files.track_id] = files
    return [written[j.track_id] for j in jobs]


def _write_group(source: Path, jobs: list[CropJob], size: int, rate: int) -> list[CropFiles]:
    import av

    container, vstream, info = media.open_video(source)
    with container, contextlib.ExitStack() as stack:
        astream = container.streams.audio[0] if container.streams.audio else None
        writers: list[_ClipWriter] = []
        for job in jobs:
            vtmp = stack.enter_context(atomic_path(job.video_path))
            atmp = stack.enter_context(atomic_path(job.audio_path)) if astream is not None else None
            writer = _ClipWriter(job, vtmp, atmp, vstream, size, rate)
            stack.callback(writer.abort)  # runs first on an error; harmless after close()
            writers.append(writer)
        start = min(j.start_s for j in jobs)
        _seek(container, vstream, start - SEEK_MARGIN_S + info.start_offset)
        step = 1.0 / info.fps
        tol = 0.25 * step
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate) if astream else None
        streams = [s for s in (vstream, astream) if s is not None]
        last_t = None
        to_rgb = av.video.reformatter.VideoReformatter()  # for sources that are not 4:2:0
        try:
            for packet in container.demux(*streams):
                for frame in safe_decode(packet):  # a damaged packet: no frame, not an error
                    if packet.stream is vstream:
                        t = media.frame_time(frame, info.start_offset, last_t, step)
                        last_t = t
                        targets = [w for w in writers if w.wants(t, tol) is not None]
                        if targets:
                            source_frame = SourceFrame(frame, to_rgb)
                            for w in targets:
                                w.add_frame(source_frame, t)
                    else:
                        _route_audio(resampler.resample(frame), info.start_offset, writers)
                if all(w.video_done for w in writers) and all(w.audio_done for w in writers):
                    break
            else:
                if resampler is not None:  # end of file: what the resampler still holds
                    _route_audio(resampler.resample(None), info.start_offset, writers)
        except av.error.FFmpegError as exc:
            raise MediaError("decode_error", f"re-reading for crops failed: {exc}") from None
        unfinished = [w.job.track_id for w in writers if not w.video_done]
        if unfinished:
            raise MediaError("decode_error", f"pass 2 ended before the last frames of "
                             f"{', '.join(unfinished)}")
        results = []
        for w in writers:
            n_frames, n_samples = w.close()
            has_audio = astream is not None
            results.append(CropFiles(
                track_id=w.job.track_id, video_path=w.job.video_path,
                video_sha256=sha256_file(w.video_tmp), n_frames=n_frames,
                audio_path=w.job.audio_path if has_audio else None,
                audio_sha256=sha256_file(w.audio_tmp) if w.audio_tmp is not None else None,
                n_samples=n_samples))
    return results


def _seek(container: Any, stream: Any, seconds: float) -> None:
    """Seek to the key frame at or before ``seconds`` (file timeline); from the start if unseekable."""
    import av

    if seconds <= 0 or stream.time_base is None:
        return
    try:
        container.seek(int(seconds / stream.time_base), stream=stream, backward=True, any_frame=False)
    except av.error.FFmpegError:
        container.seek(0)


def _route_audio(frames: Sequence[Any], start_offset: float, writers: Sequence[_ClipWriter]) -> None:
    for rf in frames:
        if rf.pts is None:  # pragma: no cover - the resampler always stamps its output
            continue
        samples = rf.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        t = float(rf.pts * rf.time_base) - start_offset
        for w in writers:
            w.add_audio(samples, t)
