"""``dsbuilder faces --show VIDEO``: an annotated copy of a video, to see what the faces stage decides.

:func:`write_preview` runs the stage's first pass (shots, detection, tracking, judging) on one file and
writes a copy of the video with, per frame:

* every track's smoothed box, green when kept (label: track number, person, median distance and
  threshold) and red when rejected (label: the reason, and for ``not_target`` the nearest person and
  distance); a dot where the detector fired, so tracked frames can be told from detected ones;
* the 68 landmarks of kept tracks;
* the shot number and the frame's time, top left.

**Only kept faces are shown.** Inside every rejected track's box the picture is pixelated, so the
preview, like the dataset, never writes the face of someone who is not a target (nor of a track too
short, small or turned to be identified). The preview has no audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dsbuilder.face.tracker import FacesParams, ShotSpan, iter_video, moving_average, smoothing_window

_GREEN = (40, 200, 60)
_RED = (230, 50, 40)
_WHITE = (255, 255, 255)

#: Output container per file suffix (anything else: mp4).
_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


@dataclass(frozen=True)
class _Overlay:
    box: np.ndarray  # (4,) smoothed, source pixels
    landmarks: np.ndarray | None  # (68, 2), kept tracks only
    detected: bool
    kept: bool
    label: str


def write_preview(video_path: str | Path, out_path: str | Path, ws_or_dictionary: Any,
                  params: Mapping[str, Any] | FacesParams | None = None) -> Path:
    """Write an annotated copy of ``video_path`` to ``out_path``; return ``out_path``.

    ``ws_or_dictionary``: a :class:`~dsbuilder.workspace.Workspace` (its ``faces_dictionary`` and
    ``people`` tables are read) or a :class:`~dsbuilder.face.matching.Dictionary`. ``params``:
    ``stages.faces`` parameters (defaults fill the rest). Shots are detected with the default
    ``stages.shots`` parameters. Raises :class:`~dsbuilder.media.MediaError` for an unreadable video.
    """
    from dsbuilder.face.matching import Dictionary
    from dsbuilder.face.video import analyse
    from dsbuilder.shots_detectors.video import detect_shots

    p = FacesParams.from_mapping(params)
    video_path, out_path = Path(video_path), Path(out_path)
    dictionary = (ws_or_dictionary if isinstance(ws_or_dictionary, Dictionary)
                  else Dictionary.from_workspace(ws_or_dictionary))
    shots = [s for s in detect_shots(video_path) if not s.too_short]
    spans = [ShotSpan.of(s, video_path.stem) for s in shots]
    shot_no = {sp.shot_id: s.index for s, sp in zip(shots, spans)}

    overlays: dict[int, list[_Overlay]] = {}
    for track_id, j in analyse(video_path, spans, dictionary, p, keep_geometry=True):
        raw = j.raw
        boxes = moving_average(raw.boxes, smoothing_window(raw.times, float(p.smooth_s)))
        label = f"#{track_id.rsplit('trk', 1)[1]} " + _label(j)
        for i, frame_index in enumerate(raw.frames):
            overlays.setdefault(int(frame_index), []).append(_Overlay(
                box=boxes[i], landmarks=raw.landmarks[i] if j.kept else None,
                detected=bool(raw.detected[i]), kept=j.kept, label=label))
    starts = sorted((sp.start_frame, shot_no[sp.shot_id]) for sp in spans)
    _render(video_path, out_path, overlays, starts)
    return out_path


def _label(j: Any) -> str:
    ident = j.identity
    if j.kept:
        return f"{ident.person_id} {ident.distance:.2f}<={ident.threshold:.2f}"
    if j.reason == "not_target" and ident.distance is not None:
        return f"not_target ({ident.second_person_id} {ident.distance:.2f}>{ident.threshold:.2f})"
    return str(j.reason)


def _render(video_path: Path, out_path: Path, overlays: dict[int, list[_Overlay]],
            shot_starts: list[tuple[int, int]]) -> None:
    import av

    from dsbuilder.workspace import atomic_path

    fmt = _FORMATS.get(out_path.suffix.lower(), "mp4")
    with atomic_path(out_path) as tmp:
        out = None
        try:
            for info, frame in iter_video(video_path):
                if out is None:
                    out = av.open(str(tmp), "w", format=fmt)
                    stream = out.add_stream("libx264", rate=Fraction(info.fps).limit_denominator(1001))
                    w, h = info.width - info.width % 2, info.height - info.height % 2
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    stream.time_base = info.time_base
                    stream.codec_context.time_base = info.time_base
                    stream.options = {"preset": "veryfast", "crf": "23"}
                    t0 = frame.t
                img = np.ascontiguousarray(frame.rgb()[:h, :w])
                shot = max((n for start, n in shot_starts if start <= frame.index), default=None)
                _draw(img, overlays.get(frame.index, []), shot, frame.t)
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                vf.pts = int(round((frame.t - t0) / float(info.time_base)))
                vf.time_base = info.time_base
                for packet in stream.encode(vf):
                    out.mux(packet)
                frame.release()
            if out is not None:
                for packet in stream.encode(None):
                    out.mux(packet)
        finally:
            if out is not None:
                out.close()


def _draw(img: np.ndarray, overlays: list[_Overlay], shot: int | None, t: float) -> None:
    import cv2

    h, w = img.shape[:2]
    for ov in overlays:  # pixelate rejected faces first, so no label is pixelated
        if ov.kept:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in ov.box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            region = img[y0:y1, x0:x1]
            small = cv2.resize(region, (max(1, (x1 - x0) // 12), max(1, (y1 - y0) // 12)),
                               interpolation=cv2.INTER_AREA)
            img[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0),
                                           interpolation=cv2.INTER_NEAREST)
    for ov in overlays:
        colour = _GREEN if ov.kept else _RED
        x0, y0, x1, y1 = (int(round(v)) for v in ov.box)
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, 2)
        if ov.detected:
            cv2.circle(img, (x1 - 5, y0 + 5), 3, colour, -1)
        if ov.landmarks is not None:
            for x, y in ov.landmarks:
                cv2.circle(img, (int(round(x)), int(round(y))), 1, _WHITE, -1)
        cv2.putText(img, ov.label, (x0, max(12, y0 - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1,
                    cv2.LINE_AA)
    text = f"{'shot %d' % shot if shot is not None else 'no shot'}  {t:.2f} s"
    cv2.putText(img, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _WHITE, 1, cv2.LINE_AA)


def cli_show(recipe, ws, target, output=None, **_options):
    """``dsbuilder faces --show VIDEO``: write the preview instead of running the stage; yields the
    lines to print."""
    from dsbuilder.errors import DsbuilderError
    from dsbuilder.media import MediaError

    out = Path(output) if output else ws.root / "previews" / f"{Path(target).stem}.faces.mp4"
    try:
        write_preview(target, out, ws, recipe.stage_params("faces"))
    except MediaError as exc:
        raise DsbuilderError(f"cannot preview {target}: {exc.detail}",
                             "give a video file that PyAV/FFmpeg can decode") from None
    yield f"preview: {out}"
