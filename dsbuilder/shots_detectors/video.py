"""Shots of one video file, without a workspace: :func:`detect_shots` streams its frames through a
detector of the registry and maps the cuts back to frame-accurate times.

:func:`detect_shots` streams frames with our PyAV decoder (:func:`dsbuilder.media.iter_frames`,
downscaled to ``downscale_width``) and maps the cut frame indices back to each frame's own
presentation time, so start/end are frame-accurate in frames and in seconds, also for
variable-frame-rate video, and memory does not grow with the video's length (one float per frame).
The shots stage (:mod:`dsbuilder.stages.shots`) runs it once per video as a work item.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dsbuilder.config import stage_defaults
from dsbuilder.errors import MediaError

log = logging.getLogger(__name__)

#: Frame rate assumed when the container states none (only converts ``min_shot_s`` to frames).
FALLBACK_FPS = 25.0

#: Tolerance when comparing a shot's duration with ``min_shot_s`` (timestamps are rationals as floats).
_EPS = 1e-6


@dataclass(frozen=True)
class Shot:
    """One shot of a video: frames ``[start_frame, end_frame)`` and their presentation times.

    Frame indices count decoded frames from 0. ``start_s`` is the presentation time of ``start_frame``
    and ``end_s`` that of ``end_frame``; for the last shot, the end of its last frame (that frame's
    time plus its duration, estimated as the interval since the frame before it). Times are on the
    container's timeline, as players show them (a video stream may start after 0).
    """

    index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    detector: str
    too_short: bool = False  # shorter than min_shot_s: the stage records it as a rejection

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def shot_id(self, source_id: str) -> str:
        return f"{source_id}-shot{self.index:04d}"

    def row(self, source_id: str) -> dict[str, Any]:
        """This shot as a ``shots`` table row (without the common columns ``write_table`` adds)."""
        return {
            "shot_id": self.shot_id(source_id), "source_id": source_id, "shot_index": self.index,
            "start_frame": self.start_frame, "end_frame": self.end_frame,
            "start_s": self.start_s, "end_s": self.end_s, "n_frames": self.n_frames,
            "detector": self.detector,
        }




def detect_shots(path: str | Path, params: Mapping[str, Any] | None = None,
                 report: dict[str, Any] | None = None) -> list[Shot]:
    """Detect the shots of one video file; no workspace needed.

    ``params`` are ``stages.shots`` parameters (missing keys take their defaults from
    ``STAGE_PARAMS["shots"]``). Returns every shot in order; together they cover every decoded frame.
    A video without cuts is one shot. Shots shorter than ``min_shot_s`` are included with
    ``too_short=True``.

    Damaged stretches in the middle of the file are skipped (their frames are lost; a shot never
    spans one); a file cut short gives the shots of what decodes. ``report``, when given, receives
    ``damaged`` (``[first_t, last_t, n_packets]`` per damaged stretch), ``decoded_frames``,
    ``declared_frames`` (from the container; None when it does not say), ``decoded_end_s`` and
    ``declared_s``: :func:`_rows_from_record` turns them into rejection rows.

    Raises :class:`~dsbuilder.media.MediaError` with reason ``decode_error`` (not a readable video,
    empty, nothing decodable) or ``no_video_stream`` (e.g. an audio-only file), and
    :class:`OSError` if the file cannot be read at all (e.g. it does not exist).
    """
    from dsbuilder.media import declared_frames, iter_frames, probe
    from dsbuilder.shots_detectors import create_detector

    p = {**stage_defaults("shots"), **(params or {})}
    path = Path(path)
    fps, width = _video_rate_and_width(path)
    detector = create_detector(p, fps)
    scale_to = p["downscale_width"] if p["downscale_width"] and width > p["downscale_width"] else None

    times: list[float] = []  # presentation time of every frame, by index
    cuts: set[int] = set()
    damage: list[list] = []
    seen_damage = 0
    for index, t, image in iter_frames(path, width=scale_to, damage=damage):
        if len(damage) > seen_damage:  # frames were lost just before this one: a cut here
            seen_damage = len(damage)
            if index:
                cuts.add(index)
        times.append(t)
        cuts.update(detector.process(index, image))
    if not times:
        raise MediaError("decode_error", "no decodable video frame")
    cuts.update(detector.finish(len(times)))
    shots = shots_from_cuts(sorted(cuts), times, fps=fps, detector=detector.name,
                            min_shot_s=float(p["min_shot_s"]))
    if report is not None:
        info = probe(path)
        report.update(damaged=damage, decoded_frames=len(times),
                      declared_frames=declared_frames(info), decoded_end_s=shots[-1].end_s,
                      declared_s=info.duration)
    return shots


def shots_from_cuts(cuts: list[int], times: list[float], *, fps: float, detector: str,
                    min_shot_s: float = 0.0) -> list[Shot]:
    """Turn cut frame indices (each the first frame of a new shot) into :class:`Shot` s.

    ``times`` holds every frame's presentation time. Cuts at 0, outside the video or repeated are
    ignored. The end of the last frame is its time plus the interval since the previous frame
    (``1 / fps`` for a one-frame video).
    """
    n = len(times)
    bounds = [0, *sorted({c for c in cuts if 0 < c < n}), n]
    if n >= 2 and times[-1] > times[-2]:
        end_of_video = times[-1] + (times[-1] - times[-2])
    else:
        end_of_video = times[-1] + 1.0 / fps
    shots = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        start_s = times[a]
        end_s = times[b] if b < n else end_of_video
        shots.append(Shot(index=i, start_frame=a, end_frame=b, start_s=start_s, end_s=end_s,
                          detector=detector, too_short=(end_s - start_s) < min_shot_s - _EPS))
    return shots


def _video_rate_and_width(path: Path) -> tuple[float, int]:
    """The container's average frame rate and the frame width, or :class:`MediaError` with a shots
    reason code."""
    from dsbuilder.media import probe

    try:
        info = probe(path)
    except MediaError as exc:  # probe says "unsupported_media"; for this stage it is undecodable
        raise MediaError("decode_error", exc.detail) from None
    if not info.has_video:
        raise MediaError("no_video_stream", "the file has no video stream")
    if not info.fps:
        log.warning("%s: no frame rate in the container; assuming %g fps for min_shot_s",
                    path, FALLBACK_FPS)
    return float(info.fps or FALLBACK_FPS), int(info.width or 0)
