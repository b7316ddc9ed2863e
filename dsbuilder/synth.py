"""Synthetic media with known ground truth, made with PyAV (no ffmpeg binary needed).

Used by the offline demo, the tests and the benchmarks. A video is a list of :class:`Shot` s; each shot
shows one picture (a public-domain portrait that ships in a dependency, or a seeded texture), moving
slowly, and is joined to the previous one by a hard cut, a fade through black or a dissolve. The frame
index of every transition is returned, so detectors can be scored exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


def grace_hopper() -> np.ndarray:
    """RGB portrait of Rear Admiral Grace Hopper (US Navy photo, public domain), from matplotlib."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        return np.asarray(Image.open(fh).convert("RGB"))


def astronaut() -> np.ndarray:
    """RGB portrait of astronaut Eileen Collins (NASA photo, public domain), from scikit-image."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def texture(seed: int, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A smooth, seeded colour texture (distinct colours per seed), RGB uint8."""
    rng = np.random.default_rng(seed)
    h, w = size
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    from PIL import Image

    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    return np.asarray(img)


@dataclass
class Shot:
    picture: np.ndarray  # RGB, any size; cropped/moved to the output size
    n_frames: int
    transition: str = "cut"  # how this shot begins: cut | fade | dissolve
    transition_frames: int = 0  # length of a fade/dissolve
    zoom: float = 1.15  # the crop window moves across a picture zoomed this much
    #: frame index in the shot -> the picture then (a talking portrait); None: ``picture`` throughout
    animate: Callable[[int], np.ndarray] | None = None


def _view(picture: np.ndarray, size: tuple[int, int], progress: float, zoom: float) -> np.ndarray:
    """Crop a slowly panning window of ``picture`` at ``progress`` in [0, 1], resized to ``size``."""
    import cv2

    h, w = size
    ph, pw = picture.shape[:2]
    scale = max(h / ph, w / pw) * zoom
    big = cv2.resize(picture, (int(math.ceil(pw * scale)), int(math.ceil(ph * scale))),
                     interpolation=cv2.INTER_AREA)
    bh, bw = big.shape[:2]
    x = int(round((bw - w) * progress))
    y = int(round((bh - h) * (0.5 + 0.5 * math.sin(progress * math.pi)) / 2))
    return np.ascontiguousarray(big[y:y + h, x:x + w])


def render_frames(shots: Sequence[Shot], size: tuple[int, int]):
    """Yield RGB frames; also returns (via StopIteration.value) the transition start frames."""
    total = 0
    prev_last = None
    for shot in shots:
        frame = None
        for i in range(shot.n_frames):
            picture = shot.animate(i) if shot.animate else shot.picture
            frame = _view(picture, size, i / max(1, shot.n_frames - 1), shot.zoom)
            k = shot.transition_frames
            if prev_last is not None and shot.transition == "dissolve" and i < k:
                a = (i + 1) / (k + 1)
                frame = (prev_last * (1 - a) + frame * a).astype(np.uint8)
            elif prev_last is not None and shot.transition == "fade" and i < k:
                half = k / 2
                if i < half:
                    frame = (prev_last * (1 - (i + 1) / half)).clip(0, 255).astype(np.uint8)
                else:
                    frame = (frame * ((i + 1 - half) / half)).clip(0, 255).astype(np.uint8)
            yield frame
            total += 1
        if frame is not None:  # a fade or dissolve into the next shot starts from what was shown
            prev_last = frame.astype(np.float32)


def transition_frames(shots: Sequence[Shot]) -> list[int]:
    """Frame index where each shot after the first begins (the true cut positions)."""
    out, acc = [], 0
    for s in shots[:-1]:
        acc += s.n_frames
        out.append(acc)
    return out


def write_video(path: str | Path, shots: Sequence[Shot], *, fps: float = 25.0,
                size: tuple[int, int] = (240, 320), codec: str = "libx264",
                audio: "str | np.ndarray | None" = "tone",
                vfr_fps: Sequence[float] | None = None, container_format: str | None = None,
                pix_fmt: str = "yuv420p", faststart: bool = False) -> list[int]:
    """Write ``shots`` to ``path``; return the true transition frames.

    ``audio``: "tone" (a voiced, syllable-like 150 Hz tone modulated at 4 Hz), "silence", None, or
    the samples themselves (mono float32 at 16 kHz; cut or padded with silence to the picture).
    ``vfr_fps``: a frame rate per shot instead of ``fps``, giving variable-frame-rate video.
    ``faststart``: the mp4 index (moov) before the media data, as web downloads have it.
    """
    import av

    path = Path(path)
    h, w = size
    rates = list(vfr_fps) if vfr_fps else [fps] * len(shots)
    time_base = Fraction(1, 90000)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container_format, options=options) as out:
        vs = out.add_stream(codec, rate=Fraction(max(rates)).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.time_base = time_base
        vs.codec_context.time_base = time_base
        if codec in ("libx264", "libx265"):
            vs.options = {"preset": "ultrafast", "crf": "23", "g": "50"}
            if codec == "libx265":
                vs.options = {**vs.options, "x265-params": "log-level=error"}
        a_stream = None
        if isinstance(audio, np.ndarray) or audio:
            a_stream = out.add_stream("aac", rate=16000, layout="mono")
        t = 0.0
        frames = render_frames(shots, size)
        for shot, rate in zip(shots, rates):
            for _ in range(shot.n_frames):
                img = next(frames)
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                vf.pts = int(round(t / float(time_base)))
                vf.time_base = time_base
                for pkt in vs.encode(vf):
                    out.mux(pkt)
                t += 1.0 / rate
        for pkt in vs.encode():
            out.mux(pkt)
        if a_stream is not None:
            _write_audio(out, a_stream, t, audio)
    return transition_frames(shots)


def speech_like(duration: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-like signal: 120-180 Hz harmonics gated by a 4 Hz envelope; float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * sr)) / sr
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 1.5
    return (0.3 * voiced * env / 1.5).astype(np.float32)


def _write_audio(out, stream, duration: float, kind: "str | np.ndarray") -> None:
    sr = 16000
    n_total = int(duration * sr)
    if isinstance(kind, np.ndarray):
        sig = np.zeros(n_total, np.float32)
        sig[:min(n_total, len(kind))] = kind[:n_total]
    else:
        sig = speech_like(duration) if kind == "tone" else np.zeros(n_total, np.float32)
    _encode_samples(out, stream, sig, sr)


def _encode_samples(out, stream, samples: np.ndarray, rate: int) -> None:
    """Encode mono float32 ``samples`` into ``stream`` of ``out`` in codec-sized frames (the last
    one padded with silence), then flush the encoder."""
    import av

    n = stream.codec_context.frame_size or 1024
    sig = np.asarray(samples, np.float32)
    for i in range(0, len(sig), n):
        chunk = sig[i:i + n]
        if len(chunk) < n:
            chunk = np.pad(chunk, (0, n - len(chunk)))
        af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        af.sample_rate, af.pts = rate, i
        for pkt in stream.encode(af):
            out.mux(pkt)
    for pkt in stream.encode():
        out.mux(pkt)


def write_audio_only(path: str | Path, duration: float = 2.0) -> None:
    """An m4a/mp4 file with an audio stream and no video."""
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=16000, layout="mono")
        _write_audio(out, s, duration, "tone")


def write_photo(path: str | Path, picture: np.ndarray, size: tuple[int, int] | None = None,
                quality: int = 90, fmt: str | None = None) -> None:
    """Save an RGB array (format from the suffix, or ``fmt`` such as "JPEG"), optionally resized
    to ``(h, w)``."""
    from PIL import Image

    img = Image.fromarray(picture)
    if size:
        img = img.resize((size[1], size[0]), Image.LANCZOS)
    img.save(str(path), format=fmt, quality=quality)


def standard_shots(n: int = 4, frames: int = 40, seed: int = 0, transitions: Sequence[str] = ("cut",),
                   transition_frames: int = 12) -> list[Shot]:
    """``n`` visually distinct shots (Grace Hopper first, then textures) joined by ``transitions``."""
    pics = [grace_hopper()] + [texture(seed + i) for i in range(1, n)]
    shots = []
    for i in range(n):
        tr = transitions[(i - 1) % len(transitions)] if i else "cut"
        shots.append(Shot(pics[i], frames, transition=tr,
                          transition_frames=transition_frames if tr != "cut" else 0))
    return shots


def dub_video(src: str | Path, dest: str | Path, samples: np.ndarray | None, rate: int = 16000,
              container_format: str | None = None) -> None:
    """A copy of ``src``'s picture (packets copied, not re-encoded) with its sound replaced by
    ``samples`` (mono float32 at ``rate``; None: no audio stream). Makes the dubbed and silent clips
    the speaker tests need from a real face video."""
    import av

    with av.open(str(src)) as inp, av.open(str(dest), "w", format=container_format) as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        astream = None
        if samples is not None:
            astream = out.add_stream("aac", rate=rate, layout="mono")
        for pkt in inp.demux(vin):
            if pkt.dts is None:
                continue
            pkt.stream = vout
            out.mux(pkt)
        if astream is not None:
            _encode_samples(out, astream, samples, rate)


def concat_video(src: str | Path, dest: str | Path, times: int) -> None:
    """``src`` played ``times`` times in a row, its packets copied (no re-encoding): a long real video
    for benchmarks. Every stream's timestamps are shifted by the file's duration per repeat."""
    import av

    with av.open(str(src)) as probe_c:
        length = probe_c.duration / 1_000_000 if probe_c.duration else None
    if not length:
        raise ValueError(f"{src}: no duration")
    with av.open(str(dest), "w") as out:
        outs = {}
        for k in range(times):
            with av.open(str(src)) as inp:
                streams = [s for s in inp.streams if s.type in ("video", "audio")]
                if not outs:
                    outs = {s.index: out.add_stream_from_template(s) for s in streams}
                for pkt in inp.demux(*streams):
                    if pkt.dts is None:
                        continue
                    shift = int(round(k * length / pkt.time_base))
                    pkt.dts += shift
                    if pkt.pts is not None:
                        pkt.pts += shift
                    pkt.stream = outs[pkt.stream.index]
                    out.mux(pkt)
