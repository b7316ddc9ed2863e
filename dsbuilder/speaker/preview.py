"""``dsbuilder speakers RECIPE --show ...``: a video per kept track that shows the speaking score.

:func:`write_speaking_preview` writes one mp4 for one kept face track, built only from what the faces
and speakers stages already stored in the workspace: the track's aligned face clip (``tracks.crop_path``),
its audio (``tracks.audio_path``) and the ``speech`` / ``speaking_frames`` rows. The source video is
never opened, so, like the dataset, the preview holds no pixel of anyone but the target.

Each output frame, from top to bottom:

* **The face clip**: crop frame ``i`` of the track (``frames.crop_frame == i``), as the faces stage wrote
  it (centred when the clip is narrower than :data:`MIN_WIDTH`).
* **Text**: the person id, the frame number and time in the track; the frame's ``speaking_prob`` (green
  at or above the 0.5 decision threshold, orange below) and whether the VAD hears speech there; the
  verdict of the ``speech`` segment the frame is in (``speaking`` or its rejection reason); the track's
  audio-visual offset (``av_offset_frames``, + = audio later) and sync confidence.
* **A strip chart over the whole track** (x = time from the track's start to its end):

  - a bar per frame of height ``speaking_prob`` (0 at the bottom, 1 at the top), green where the frame
    is at or above the threshold, orange below;
  - where the VAD flag (``speaking_frames.vad``) is set, a blue band under the plot and a blue
    background in it (visible above the bars: speech heard, lips not matching);
  - the per-frame sync confidence (``speaking_frames.sync_confidence``, at the track's offset) as a
    magenta line, on the same 0-1 axis (clipped; its own gate is ``min_confidence``, not 0.5);
  - the 0.5 decision threshold as a dashed yellow line;
  - under the VAD band, one with the ``speech`` segments: green where a segment is ``speaking``, dark
    red where it is not; tick marks along the time axis;
  - a white cursor at the current frame.
* **Audio**: the track's wav (16 kHz mono), muxed in as AAC, so a curator hears whether the lips and the
  voice go together.

The chart is drawn once with numpy; each frame only copies it and draws the cursor and the text
(OpenCV), so a preview takes about as long as encoding the clip.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from dsbuilder.errors import DsbuilderError
from dsbuilder.manifest.io import read_table, table_path
from dsbuilder.workspace import Workspace, atomic_path

#: The speaking decision threshold on ``speaking_prob`` (the speakers stage's segments are runs >= 0.5).
THRESHOLD = 0.5

#: The output is at least this wide, so the text fits beside a smaller face clip.
MIN_WIDTH = 224

TEXT_H = 62  # four lines of text
PLOT_H = 72  # the speaking_prob plot
BAND_H = 14  # under the plot: the VAD band, then the speech segments band
LEGEND_H = 16  # tick marks and the legend

#: Colours (RGB).
BACKGROUND = (24, 24, 24)
VAD_BG = (36, 52, 104)
VAD_BAND = (90, 120, 235)
SPEAKING = (60, 200, 90)
NOT_SPEAKING = (225, 130, 40)
REJECTED_SEGMENT = (120, 30, 30)
SYNC = (230, 70, 230)
THRESHOLD_LINE = (235, 215, 50)
CURSOR = (255, 255, 255)
TEXT = (230, 230, 230)
DIM = (150, 150, 150)

_RUN_SPEAKERS = "run `dsbuilder speakers RECIPE` first"


# --- what the workspace holds about one track ---------------------------------------------------

def tracks_of(ws: Workspace, source: str) -> list[str]:
    """The kept track ids of one source, sorted.

    ``source``: a ``source_id``, the path of a ``sources`` row's ``local_path`` (compared after
    resolving both), or any file with the same content (sha256) as a source, such as the recipe's own
    copy of a local video. Raises :class:`DsbuilderError` when no source matches.
    """
    from dsbuilder.workspace import sha256_file

    sources = read_table(ws, "sources").to_pylist()
    ids = {r["source_id"] for r in sources}
    source_id = source if source in ids else None
    wanted = Path(source).expanduser().resolve()
    if source_id is None:
        for r in sources:
            if r.get("local_path") and ws.abspath(r["local_path"]).resolve() == wanted:
                source_id = r["source_id"]
                break
    if source_id is None and wanted.is_file():
        digest = sha256_file(wanted)
        source_id = next((r["source_id"] for r in sources if r.get("sha256") == digest), None)
    if source_id is None:
        raise DsbuilderError(f"no source {source!r} in the workspace",
                             "give a video of the recipe (its path, or a source_id from "
                             "manifests/sources.parquet) after the faces and speakers stages ran")
    return sorted(t["track_id"] for t in read_table(ws, "tracks").to_pylist()
                  if t["source_id"] == source_id and t["kept"])


@dataclass
class _Track:
    """One kept track's rows, per frame in crop order."""

    row: dict[str, Any]  # the ``tracks`` row
    crop: Path
    audio: Path | None
    crop_frame: np.ndarray  # (n,) frames.crop_frame, ascending
    t: np.ndarray  # (n,) seconds from the track's start
    prob: np.ndarray  # (n,) speaking_prob (0 where a frame has no score)
    vad: np.ndarray  # (n,) bool
    conf: np.ndarray  # (n,) per-frame sync confidence, NaN where none
    scored: np.ndarray  # (n,) bool: the frame has a speaking_frames row
    segment: np.ndarray  # (n,) index into ``speech`` of the frame's segment, -1: none
    speech: list[dict[str, Any]]  # the track's ``speech`` rows, by segment_index

    @property
    def duration(self) -> float:
        return max(float(self.row["end_s"]) - float(self.row["start_s"]), 1e-6)


def _load(ws: Workspace, track_id: str) -> _Track:
    """Read everything the preview shows; raise :class:`DsbuilderError` when something is missing."""
    tracks = {t["track_id"]: t for t in read_table(ws, "tracks").to_pylist()}
    tr = tracks.get(track_id)
    if tr is None:
        hint = ("run `dsbuilder faces RECIPE` first" if not tracks else
                "kept tracks are listed in manifests/tracks.parquet (kept = true)")
        raise DsbuilderError(f"unknown track {track_id!r}", hint)
    if not tr["kept"]:
        raise DsbuilderError(f"track {track_id!r} was rejected by the faces stage ({tr['reason']}) "
                             "and has no face clip",
                             "only kept tracks have a preview: nothing of a rejected face is stored")
    crop = ws.abspath(tr["crop_path"]) if tr.get("crop_path") else None
    if crop is None or not crop.is_file():
        raise DsbuilderError(f"track {track_id!r} has no face clip"
                             + (f" ({crop} is missing)" if crop is not None else ""),
                             "run `dsbuilder faces RECIPE --force` to write the clips again")
    if not table_path(ws, "speech").exists():
        raise DsbuilderError("no speakers output yet", _RUN_SPEAKERS)
    speech = sorted(_rows(ws, "speech", track_id), key=lambda s: s["segment_index"])
    scores = {f["frame_id"]: f for f in _rows(ws, "speaking_frames", track_id)}
    if not speech or not scores:
        raise DsbuilderError(f"track {track_id!r} has no speaking scores"
                             + _rejection_note(ws, track_id),
                             "the track may be newer than the speakers output: " + _RUN_SPEAKERS)
    frames = sorted(_rows(ws, "frames", track_id), key=lambda f: f["crop_frame"])
    seg_of = {s["speech_id"]: k for k, s in enumerate(speech)}
    got = [scores.get(f["frame_id"]) for f in frames]
    start = float(tr["start_s"])
    audio = ws.abspath(tr["audio_path"]) if tr.get("audio_path") else None
    return _Track(
        row=tr, crop=crop, audio=audio if audio is not None and audio.is_file() else None,
        crop_frame=np.array([f["crop_frame"] for f in frames], np.int64),
        t=np.array([f["t"] - start for f in frames], np.float64),
        prob=np.array([g["speaking_prob"] if g else 0.0 for g in got], np.float64),
        vad=np.array([bool(g and g["vad"]) for g in got], bool),
        conf=np.array([g["sync_confidence"] if g and g["sync_confidence"] is not None else np.nan
                       for g in got], np.float64),
        scored=np.array([g is not None for g in got], bool),
        segment=np.array([seg_of.get(g["speech_id"], -1) if g else -1 for g in got], np.int64),
        speech=speech)


def _rows(ws: Workspace, table: str, track_id: str) -> list[dict[str, Any]]:
    """One track's rows of a table (filtered in Arrow: ``frames`` has a row per frame of every track)."""
    import pyarrow.compute as pc

    tbl = read_table(ws, table)
    return tbl.filter(pc.equal(tbl["track_id"], track_id)).to_pylist()


def _rejection_note(ws: Workspace, track_id: str) -> str:
    """`` (speakers: <reason>: <detail>)`` when the speakers stage rejected the whole track."""
    for r in read_table(ws, "rejections").to_pylist():
        if r["stage"] == "speakers" and r["item_id"] == track_id:
            return f" (speakers: {r['reason']}: {r['detail']})"
    return ""


# --- drawing --------------------------------------------------------------------------------------

class _Canvas:
    """The layout, the chart drawn once, and the per-frame overlay."""

    def __init__(self, track: _Track, crop_w: int, crop_h: int):
        self.track = track
        self.w = max(MIN_WIDTH, crop_w + crop_w % 2)
        self.crop_x = (self.w - crop_w) // 2
        self.crop_w, self.crop_h = crop_w, crop_h
        self.text_y = crop_h
        self.plot_y = crop_h + TEXT_H
        self.band_y = self.plot_y + PLOT_H
        self.legend_y = self.band_y + BAND_H
        height = self.legend_y + LEGEND_H
        self.h = height + height % 2
        self.static = self._draw_static()

    # x = time: frame k covers [t_k, t_(k+1)); the last frame runs to the track's end
    def x_of(self, t: float) -> int:
        return int(np.clip(math.floor(t / self.track.duration * self.w), 0, self.w - 1))

    def _column_frames(self) -> np.ndarray:
        centres = (np.arange(self.w) + 0.5) / self.w * self.track.duration
        return np.clip(np.searchsorted(self.track.t, centres, side="right") - 1, 0,
                       len(self.track.t) - 1)

    def _draw_static(self) -> np.ndarray:
        import cv2

        tr = self.track
        img = np.empty((self.h, self.w, 3), np.uint8)
        img[:] = BACKGROUND
        col = self._column_frames()
        # the plot: VAD background, speaking_prob bars, sync confidence, threshold
        plot = img[self.plot_y:self.band_y]
        plot[:, tr.vad[col]] = VAD_BG
        heights = np.round(np.clip(tr.prob[col], 0, 1) * PLOT_H).astype(int)
        filled = np.arange(PLOT_H)[:, None] >= PLOT_H - heights[None, :]
        above = (tr.prob[col] >= THRESHOLD)[None, :]
        plot[filled & above] = SPEAKING
        plot[filled & ~above] = NOT_SPEAKING
        conf = tr.conf[col]
        ys = np.round((1 - np.clip(conf, 0, 1)) * (PLOT_H - 1))
        for x in range(1, self.w):
            if np.isfinite(ys[x - 1]) and np.isfinite(ys[x]):
                cv2.line(plot, (x - 1, int(ys[x - 1])), (x, int(ys[x])), SYNC, 1, cv2.LINE_AA)
        y_thr = PLOT_H - int(round(THRESHOLD * PLOT_H))
        for x in range(0, self.w, 8):
            plot[y_thr, x:x + 4] = THRESHOLD_LINE
        # the VAD band, then the speech segments
        img[self.band_y + 1:self.band_y + 6, tr.vad[col]] = VAD_BAND
        band = img[self.band_y + 8:self.band_y + 13]
        for s in tr.speech:
            x0 = self.x_of(float(s["start_s"]) - float(tr.row["start_s"]))
            x1 = self.x_of(float(s["end_s"]) - float(tr.row["start_s"]) - 1e-9) + 1
            band[:, x0:x1] = SPEAKING if s["speaking"] else REJECTED_SEGMENT
        # time ticks and the legend
        step = next(s for s in (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1e9)
                    if tr.duration / s <= 12)
        for k in range(1, int(tr.duration / step) + 1):
            x = self.x_of(k * step)
            img[self.legend_y:self.legend_y + 3, x] = DIM
        x = 2
        for word, colour in (("p>=0.5", SPEAKING), ("p<0.5", NOT_SPEAKING), ("VAD", VAD_BAND),
                             ("sync", SYNC), (f"{step:g}s/tick", DIM)):
            cv2.putText(img, word, (x, self.legend_y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33, colour, 1,
                        cv2.LINE_AA)
            x += cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, 0.33, 1)[0][0] + 8
        return img

    def frame(self, crop: np.ndarray, i: int, k: int | None, t: float) -> np.ndarray:
        """The output picture for crop frame ``i`` (picture ``crop``) at ``t`` s into the track; ``k``:
        its index in the track's per-frame arrays (None: the frame has no ``frames`` row)."""
        import cv2

        img = self.static.copy()
        h, w = min(crop.shape[0], self.crop_h), min(crop.shape[1], self.crop_w)
        img[:h, self.crop_x:self.crop_x + w] = crop[:h, :w]
        x = min(self.x_of(t), self.w - 2)
        img[self.plot_y:self.legend_y, x:x + 2] = CURSOR
        tr = self.track
        s0 = tr.speech[0]
        lines: list[tuple[str, tuple[int, int, int]]] = [
            (f"{tr.row['person_id'] or '?'}  f{i + 1}/{tr.row['n_frames']}  "
             f"{t:5.2f}/{tr.duration:.2f} s", TEXT)]
        if k is not None and tr.scored[k]:
            p = float(tr.prob[k])
            lines.append((f"p(speaking) {p:.2f}" + ("  VAD" if tr.vad[k] else ""),
                          SPEAKING if p >= THRESHOLD else NOT_SPEAKING))
            seg = tr.speech[tr.segment[k]] if tr.segment[k] >= 0 else None
            lines.append(("segment: speaking" if seg and seg["speaking"] else
                          f"segment: {seg['reason'] if seg else '?'}", TEXT))
        else:
            lines += [("p(speaking) n/a", DIM), ("segment: n/a", DIM)]
        lines.append((f"offset {s0['av_offset_frames']:+d} fr  sync {s0['sync_confidence']:.2f}",
                      TEXT))
        for i, (line, colour) in enumerate(lines):
            cv2.putText(img, line, (4, self.text_y + 14 + 15 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        colour, 1, cv2.LINE_AA)
        return img


# --- encoding -------------------------------------------------------------------------------------

def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """The faces stage's 16-bit PCM mono wav as float32 samples, and its rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise DsbuilderError(f"{path}: not a 16-bit wav", "run `dsbuilder faces RECIPE --force`")
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
        return (pcm.mean(axis=1) / 32768.0).astype(np.float32), w.getframerate()


class _AacTrack:
    """A track's mono samples fed to AAC up to a time, so that audio and video interleave."""

    def __init__(self, out: Any, samples: np.ndarray, rate: int):
        from dsbuilder.face.crops import AacWriter

        self.samples, self.rate = samples, rate
        self.writer = AacWriter(out, rate)
        self.pos = 0

    def until(self, t: float) -> None:
        """Hand the samples up to ``t`` seconds (all of them when ``t`` is inf) to the encoder."""
        end = len(self.samples) if math.isinf(t) else min(len(self.samples), int(t * self.rate))
        if end > self.pos:
            self.writer.write(self.samples[self.pos:end])
            self.pos = end

    def close(self) -> None:
        self.until(math.inf)
        self.writer.close()


def write_speaking_preview(ws: Workspace, track_id: str, out_path: Path) -> Path:
    """Write the speaking preview of kept track ``track_id`` to ``out_path`` (mp4); return it.

    One output frame per frame of the track's face clip, at the clip's own times, with the track's
    audio as AAC (none when the track has no wav). Written atomically. Raises :class:`DsbuilderError`
    for an unknown or rejected track, a track without a face clip, and a workspace without (current)
    speakers output.
    """
    import av

    from dsbuilder.media import MediaError, iter_frames, probe

    track = _load(ws, track_id)
    out_path = Path(out_path)
    try:
        info = probe(track.crop)
        fps = Fraction(info.fps or 25.0).limit_denominator(1001)
        row_of = {int(c): k for k, c in enumerate(track.crop_frame)}
        canvas = _Canvas(track, int(info.width), int(info.height))
        time_base = Fraction(1, 90000)
        with atomic_path(out_path) as tmp, av.open(str(tmp), "w", format="mp4") as out:
            video = out.add_stream("libx264", rate=fps)
            video.width, video.height, video.pix_fmt = canvas.w, canvas.h, "yuv420p"
            video.time_base = video.codec_context.time_base = time_base
            video.options = {"preset": "veryfast", "crf": "20"}
            audio = _AacTrack(out, *_read_wav(track.audio)) if track.audio else None
            last_pts = -1
            for i, t_clip, rgb in iter_frames(track.crop, fmt="rgb24"):
                k = row_of.get(i)
                t = float(track.t[k]) if k is not None else t_clip
                frame = av.VideoFrame.from_ndarray(canvas.frame(rgb, i, k, t), format="rgb24")
                last_pts = frame.pts = max(last_pts + 1, int(round(t / time_base)))
                frame.time_base = time_base
                for packet in video.encode(frame):
                    out.mux(packet)
                if audio is not None:
                    audio.until(t + 1 / float(fps))
            for packet in video.encode(None):
                out.mux(packet)
            if audio is not None:
                audio.close()
    except MediaError as exc:
        raise DsbuilderError(f"cannot read the face clip of {track_id!r}: {exc}",
                             "run `dsbuilder faces RECIPE --force` to write the clips again") from None
    return out_path


def cli_show(recipe, ws, target, output=None, **_options):
    """``dsbuilder speakers --show VIDEO``: one preview per kept track of VIDEO (a path or a
    source_id); yields the lines to print."""
    track_ids = tracks_of(ws, str(target))
    if not track_ids:
        raise DsbuilderError(f"no kept face track for {target!r}",
                             "give a video of the recipe (its path or source_id) after running "
                             "the faces and speakers stages")
    folder = Path(output) if output else ws.root / "previews"
    for tid in track_ids:
        yield f"preview: {write_speaking_preview(ws, tid, folder / f'{tid}.speakers.mp4')}"
