"""Faces in one video, without a workspace: detect, track and judge every face (too short, too small,
turned away, nobody in the dictionary), then write aligned clips of the kept tracks only.

:func:`process_video` is the whole of it; :func:`analyse` is pass 1 alone (no files written), as the
previews use it. The faces stage (:mod:`dsbuilder.stages.faces`) runs :func:`process_video` once per
video as a work item and turns its :class:`VideoFaces` into the ``tracks`` and ``frames`` tables.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from dsbuilder.face.matching import Dictionary, Identity
from dsbuilder.face.tracker import (FacesParams, RawTrack, ShotSpan, landmark_face_px,
                                    moving_average, smoothing_window)

if TYPE_CHECKING:  # annotations only: crops imports PyAV and OpenCV
    from dsbuilder.face.crops import CropJob

log = logging.getLogger(__name__)

#: Tolerance for comparing durations with ``min_track_s`` (times are rationals as floats).
_EPS = 1e-6


# --- results -------------------------------------------------------------------------------------

def _pack(a: np.ndarray, dtype: str) -> str:
    """A numeric array as base64 of its little-endian bytes (compact and exact in a JSON record)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype).tobytes()).decode("ascii")


def _unpack(s: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype).reshape(shape)


@dataclass
class TrackFrames:
    """Per-frame values of a kept track, as columns (the ``frames`` table, one row per frame)."""

    frame_index: np.ndarray  # (n,) int64
    t: np.ndarray  # (n,) float64
    bbox: np.ndarray  # (n, 4) float32, smoothed
    landmarks: np.ndarray  # (n, 136) float32, as the predictor found them
    detected: np.ndarray  # (n,) bool
    yaw: np.ndarray  # (n,) float32
    pitch: np.ndarray  # (n,) float32
    mouth_aperture: np.ndarray  # (n,) float32

    _DTYPES = {"frame_index": "<i8", "t": "<f8", "bbox": "<f4", "landmarks": "<f4", "detected": "|b1",
               "yaw": "<f4", "pitch": "<f4", "mouth_aperture": "<f4"}
    _WIDTH = {"bbox": 4, "landmarks": 136}

    def __len__(self) -> int:
        return len(self.frame_index)

    def to_record(self) -> dict[str, Any]:
        return {"n": len(self), **{k: _pack(getattr(self, k), dt) for k, dt in self._DTYPES.items()}}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "TrackFrames":
        n = int(rec["n"])
        return cls(**{k: _unpack(rec[k], dt, (n, cls._WIDTH[k]) if k in cls._WIDTH else (n,))
                      for k, dt in cls._DTYPES.items()})

    def rows(self, track_id: str, source_id: str) -> list[dict[str, Any]]:
        return [{
            "frame_id": f"{track_id}-f{int(self.frame_index[i])}", "track_id": track_id,
            "source_id": source_id, "frame_index": int(self.frame_index[i]), "t": float(self.t[i]),
            "crop_frame": i, "bbox": self.bbox[i], "landmarks": self.landmarks[i],
            "detected": bool(self.detected[i]), "yaw": float(self.yaw[i]),
            "pitch": float(self.pitch[i]), "mouth_aperture": float(self.mouth_aperture[i]),
        } for i in range(len(self))]


@dataclass
class TrackSpan:
    """What a finished track covers and how it was judged (shared by :class:`JudgedTrack` and
    :class:`TrackResult`)."""

    shot_id: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    n_frames: int
    n_detections: int
    n_embeddings: int
    mean_face_px: float
    median_yaw: float | None
    kept: bool
    reason: str | None  # rejection code
    detail: str | None  # of the rejection

    def span(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(TrackSpan)}


@dataclass
class TrackResult(TrackSpan):
    """One track: its ``tracks`` row, why it was rejected, and (kept tracks) its frames and files."""

    track_id: str
    source_id: str
    person_id: str | None = None
    distance: float | None = None
    threshold: float | None = None
    second_person_id: str | None = None
    second_distance: float | None = None
    crop_path: str | None = None  # relative to the workspace (stage) or absolute (process_video)
    crop_sha256: str | None = None
    audio_path: str | None = None
    audio_sha256: str | None = None
    frames: TrackFrames | None = None

    _NOT_IN_ROW = ("detail", "frames")

    def row(self) -> dict[str, Any]:
        """The ``tracks`` row (without the columns every table has)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in self._NOT_IN_ROW}

    def to_record(self) -> dict[str, Any]:
        rec = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "frames"}
        rec["frames"] = self.frames.to_record() if self.frames is not None else None
        return rec

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "TrackResult":
        frames = TrackFrames.from_record(rec["frames"]) if rec.get("frames") else None
        return cls(**{**{k: rec[k] for k in cls.__dataclass_fields__ if k != "frames"},
                      "frames": frames})


@dataclass
class VideoFaces:
    """Every track of one video (kept and rejected), in track-id order."""

    source_id: str
    tracks: list[TrackResult] = field(default_factory=list)

    @property
    def kept(self) -> list[TrackResult]:
        return [t for t in self.tracks if t.kept]


# --- one video -----------------------------------------------------------------------------------

@dataclass
class JudgedTrack(TrackSpan):
    """A finished track after judging: geometry is kept only for kept tracks (or for the preview)."""

    raw: RawTrack | None
    first_left: float
    identity: Identity
    yaw_pitch: np.ndarray | None  # (n, 2) for kept tracks


def judge(raw: RawTrack, dictionary: Dictionary, p: FacesParams, *, keep_geometry: bool = False
          ) -> JudgedTrack:
    """Filter and identify one finished track (cheapest test first); drop its chips."""
    from dsbuilder.face import api

    sizes = landmark_face_px(raw.landmarks)
    reason = detail = None
    if raw.screened is not None and raw.duration_s >= float(p.min_track_s) - _EPS:
        v = raw.screened
        raw.samples = []
        return JudgedTrack(
            raw=raw if keep_geometry else None, shot_id=raw.shot.shot_id,
            first_left=float(raw.boxes[0, 0]), start_frame=raw.start_frame,
            end_frame=raw.end_frame, start_s=raw.start_s, end_s=raw.end_s, n_frames=raw.n_frames,
            n_detections=raw.n_detections, mean_face_px=float(sizes.mean()), median_yaw=None,
            kept=False, reason="not_target", detail=v["detail"], n_embeddings=v["n_embeddings"],
            identity=Identity(None, v["distance"], v["threshold"], v["nearest"], v["distance"]),
            yaw_pitch=None)
    yaw_pitch = None
    median_yaw = None
    identity = Identity(None, None, None, None, None)
    n_emb = 0
    if raw.duration_s < float(p.min_track_s) - _EPS:
        reason = "track_too_short"
        detail = f"{raw.duration_s:.3f} s < min_track_s {float(p.min_track_s):g}"
    elif float(np.median(sizes)) < int(p.min_face_px):
        reason = "face_too_small"
        detail = f"median face {float(np.median(sizes)):.1f} px < min_face_px {int(p.min_face_px)}"
    else:
        yaw_pitch = np.array([api.yaw_pitch(lm) for lm in raw.landmarks], np.float64)
        median_yaw = float(np.median(yaw_pitch[:, 0]))
        if abs(median_yaw) > float(p.max_yaw_deg):
            reason = "profile_pose"
            detail = f"|median yaw| {abs(median_yaw):.1f} deg > max_yaw_deg {float(p.max_yaw_deg):g}"
        else:
            embeddings = list(api.embed_many([(s.chip, s.box) for s in raw.samples]))
            n_emb = len(embeddings)
            identity = dictionary.identify(embeddings, p.match_threshold)
            if identity.person_id is None:
                reason = "not_target"
                if identity.distance is None:
                    detail = "no person in the dictionary has a match threshold"
                else:
                    detail = (f"nearest person {identity.second_person_id} at median distance "
                              f"{identity.distance:.3f} > threshold {identity.threshold:.3f} "
                              f"({n_emb} embeddings)")
    raw.samples = []  # the chips are not needed any more
    kept = reason is None
    return JudgedTrack(
        raw=raw if kept or keep_geometry else None, shot_id=raw.shot.shot_id,
        first_left=float(raw.boxes[0, 0]), start_frame=raw.start_frame, end_frame=raw.end_frame,
        start_s=raw.start_s, end_s=raw.end_s, n_frames=raw.n_frames,
        n_detections=raw.n_detections, mean_face_px=float(sizes.mean()), median_yaw=median_yaw,
        kept=kept, reason=reason, detail=detail, n_embeddings=n_emb, identity=identity,
        yaw_pitch=yaw_pitch if kept else None)


#: A track is screened out early (followed by its detections only, then ``not_target``) when its
#: first samples' median distance exceeds every person's threshold by this much: a clear stranger.
SCREEN_MARGIN = 0.05


def screener(dictionary: Dictionary, p: FacesParams):
    """The tracker's early identity check (:data:`dsbuilder.face.tracker.Screen`): a detail string
    for a track whose samples are clearly nobody in the dictionary, else None. With
    ``match_threshold`` set (an override), or no dictionary, nothing is screened."""
    from dsbuilder.face import api

    if not len(dictionary) or p.match_threshold is not None:
        return None

    people = [q for q in dictionary.people if q.threshold is not None and len(q.embeddings)]

    def screen(samples) -> dict | None:
        if not people:
            return None
        embeddings = list(api.embed_many([(s.chip, s.box) for s in samples]))
        gaps = sorted((api.median_distance(embeddings, q.embeddings) - q.threshold, q.person_id,
                       q.threshold) for q in people)
        gap, nearest, thr = gaps[0]  # the person it comes closest to matching
        if gap <= SCREEN_MARGIN:
            return None
        return {"nearest": nearest, "distance": gap + thr, "threshold": thr,
                "n_embeddings": len(embeddings),
                "detail": f"nearest person {nearest} at median distance {gap + thr:.3f} > "
                          f"threshold {thr:.3f} + margin {SCREEN_MARGIN:g} on its first "
                          f"{len(embeddings)} embeddings: screened out early, followed by its "
                          "detections only"}

    return screen


def iter_shots(path: str | Path, spans: Sequence[ShotSpan], dictionary: Dictionary, p: FacesParams,
               *, keep_geometry: bool = False) -> Iterator[list[tuple[str, JudgedTrack]]]:
    """Pass 1 and the decisions, shot by shot: each shot's ``(track_id, judged track)`` list, in id
    order, as soon as pass 1 has left the shot (tracks end at cuts, so a shot is complete then)."""
    from dsbuilder.face.tracker import track_video

    def numbered(group: list[JudgedTrack]) -> list[tuple[str, JudgedTrack]]:
        # deterministic ids: by start frame, then left edge of the first box
        ordered = sorted(group, key=lambda j: (j.start_frame, j.first_left, j.end_frame))
        return [(f"{j.shot_id}-trk{k:03d}", j) for k, j in enumerate(ordered)]

    group: list[JudgedTrack] = []
    for raw in track_video(path, spans, p, screen=screener(dictionary, p)):
        judged = judge(raw, dictionary, p, keep_geometry=keep_geometry)
        if group and group[-1].shot_id != judged.shot_id:
            yield numbered(group)
            group = []
        group.append(judged)
    if group:
        yield numbered(group)


def analyse(path: str | Path, spans: Sequence[ShotSpan], dictionary: Dictionary, p: FacesParams,
            *, keep_geometry: bool = False) -> list[tuple[str, JudgedTrack]]:
    """Pass 1 and the decisions for the whole video: ``(track_id, judged track)`` in id order."""
    return [t for shot in iter_shots(path, spans, dictionary, p, keep_geometry=keep_geometry)
            for t in shot]


def _track_frames(raw: RawTrack, yaw_pitch: np.ndarray, p: FacesParams) -> TrackFrames:
    from dsbuilder.face import api

    window = smoothing_window(raw.times, float(p.smooth_s))
    return TrackFrames(
        frame_index=raw.frames.astype(np.int64), t=raw.times.astype(np.float64),
        bbox=moving_average(raw.boxes, window).astype(np.float32),
        landmarks=raw.landmarks.reshape(len(raw.frames), 136).astype(np.float32),
        detected=raw.detected.astype(bool), yaw=yaw_pitch[:, 0].astype(np.float32),
        pitch=yaw_pitch[:, 1].astype(np.float32),
        mouth_aperture=np.array([api.mouth_aperture(lm) for lm in raw.landmarks], np.float32))


def _kept_track(track_id: str, j: JudgedTrack, p: FacesParams, out_dir: Path
                ) -> tuple[TrackFrames, "CropJob"]:
    """A kept track's ``frames`` columns and the job that writes its clip; drops its raw geometry."""
    from dsbuilder.face.crops import CropJob, alignment

    raw = j.raw
    smooth_lm = moving_average(raw.landmarks, smoothing_window(raw.times, float(p.smooth_s)))
    job = CropJob(track_id=track_id, times=raw.times, start_s=j.start_s, end_s=j.end_s,
                  transforms=alignment(smooth_lm, int(p.crop_size), float(p.crop_padding)),
                  video_path=out_dir / f"{track_id}.mp4", audio_path=out_dir / f"{track_id}.wav")
    frames = _track_frames(raw, j.yaw_pitch, p)
    j.raw = None
    return frames, job


def process_video(path: str | Path, shots: Sequence[Any], dictionary: Dictionary,
                  params: Mapping[str, Any] | FacesParams | None, out_dir: str | Path, *,
                  source_id: str | None = None) -> VideoFaces:
    """Track, identify and crop the faces of one video; no workspace needed.

    ``shots``: rows of the ``shots`` table (mappings with shot_id, start_frame, end_frame, start_s,
    end_s) or :class:`dsbuilder.stages.shots.Shot` s (their ids are made from ``source_id``, which
    defaults to the file's stem). ``params``: ``stages.faces`` parameters (defaults fill the rest).
    Clips of kept tracks go to ``out_dir/<track_id>.mp4`` and ``.wav``; their paths in the result are
    absolute. Raises :class:`~dsbuilder.media.MediaError` (``decode_error``) for an unreadable video;
    clips it had already written are removed then.
    """
    from dsbuilder.face.crops import CropJob, write_crops

    p = FacesParams.from_mapping(params)
    path, out_dir = Path(path), Path(out_dir)
    source_id = source_id or path.stem
    spans = [ShotSpan.of(s, source_id) for s in shots if not getattr(s, "too_short", False)]
    result = VideoFaces(source_id)
    if not spans:
        return result
    # Pass 1 for the whole video, then pass 2 for the kept tracks. (Writing a shot's clips in a
    # background thread while pass 1 goes on was measured no faster: both hold the GIL most of the
    # time.)
    judged = analyse(path, spans, dictionary, p)
    frames: dict[str, TrackFrames] = {}
    jobs: list[CropJob] = []
    for track_id, j in judged:
        if j.kept:
            frames[track_id], job = _kept_track(track_id, j, p, out_dir)
            jobs.append(job)
    try:
        files = {f.track_id: f for f in write_crops(path, jobs, size=int(p.crop_size),
                                                     rate=int(p.audio_rate))}
    except BaseException:  # no half-finished video leaves clips behind
        for job in jobs:
            job.video_path.unlink(missing_ok=True)
            job.audio_path.unlink(missing_ok=True)
        raise
    for track_id, j in judged:
        f = files.get(track_id)
        ident = j.identity
        result.tracks.append(TrackResult(
            **j.span(), track_id=track_id, source_id=source_id, person_id=ident.person_id,
            distance=ident.distance, threshold=ident.threshold,
            second_person_id=ident.second_person_id, second_distance=ident.second_distance,
            crop_path=str(f.video_path) if f else None, crop_sha256=f.video_sha256 if f else None,
            audio_path=str(f.audio_path) if f and f.audio_path else None,
            audio_sha256=f.audio_sha256 if f else None, frames=frames.get(track_id)))
    n_kept = len(result.kept)
    log.info("faces: %s: %d tracks, %d kept", path.name, len(result.tracks), n_kept)
    return result
