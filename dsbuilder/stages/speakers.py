"""Stage ``speakers``: which kept face tracks speak, and where (VoxCeleb/LRS-style active speaker).

For every video with kept target tracks (table ``tracks``, frames in ``frames``):

1. VAD over the whole video's audio, streamed (:func:`dsbuilder.audio.vad_segments`) -> ``vad_segments``.
2. Per track: mouth features from the landmarks (:mod:`dsbuilder.speaker.mouth`), audio features at the
   frame times from the track's wav (or the video's audio over the same span), sync scoring
   (:mod:`dsbuilder.speaker.sync`), per-frame speaking probabilities and the gated decision.
3. A speaking track is split into speaking segments (runs of probability >= 0.5 at least
   ``min_segment_s`` long in which the VAD hears speech for at least ``min_vad_ratio``:
   :func:`speaking_runs`; Light-ASD alone calls a mouth moving over silence speaking); each gets a
   speaker embedding. A track judged not speaking is one segment with ``speaking`` False and a reason.
4. Per person, each speaking segment's distance to the person's voice consensus (median embedding);
   outliers become ``voice_mismatch``.

Tables: ``speech`` (one row per segment), ``speaking_frames`` (one row per frame of each scored
track), ``vad_segments``; ``rejections`` part ``speakers`` (item_id = speech_id; a track with no audio
at all: item_id = track_id, reason no_audio). A rejection here means "not a speech clip": the track
stays in ``tracks`` as a face clip.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from dsbuilder.config import Param, stage_defaults
from dsbuilder.manifest.io import read_table
from dsbuilder.errors import MediaError
from dsbuilder.recipe import Recipe, params_hash
from dsbuilder.errors import AsdInputError, StageError
from dsbuilder.stages.base import Rejection, StageResult, WorkItem, now_utc, publish, run_items
from dsbuilder.stages.spec import CliOption, StageSpec
from dsbuilder.workspace import Workspace, item_key

if TYPE_CHECKING:
    from dsbuilder.executors import Executor

log = logging.getLogger(__name__)

STAGE = "speakers"

#: The stage's contract (see :mod:`dsbuilder.stages.spec`).
SPEC = StageSpec(
    name=STAGE,
    help='Find where target faces speak: VAD, lip-sync scoring and a voice check.',
    reads=('sources', 'tracks', 'frames'),
    writes=('speech', 'speaking_frames', 'vad_segments'),
    code_version='3',
    params={
"vad": Param(str, "webrtc", "voice-activity detector (silero: the silero-vad wheel's ONNX model, "
             "needs `pip install --no-deps silero-vad`)", choices=("webrtc", "silero")),
"vad_aggressiveness": Param(int, 2, "WebRTC VAD mode (3 rejects the most non-speech)", min=0,
                            max=3),
"vad_frame_ms": Param(int, 30, "WebRTC VAD frame length", choices=(10, 20, 30)),
"min_speech_s": Param((int, float), 0.1, "shorter VAD speech runs become non-speech", min=0.0),
"min_silence_s": Param((int, float), 0.3, "shorter VAD pauses inside speech become speech",
                       min=0.0),
"window_s": Param((int, float), 0.8, "sync scoring window", min=0.2, max=5.0),
"hop_s": Param((int, float), 0.2, "sync scoring hop", min=0.02, max=5.0),
"search_offset_frames": Param(int, 15, "audio-visual offsets tried, frames either way", min=1,
                              max=60),
"max_yaw_deg": Param((int, float), 50.0, "frames turned further do not count (mouth not seen)",
                     min=0.0, max=90.0),
"min_vad_ratio": Param((int, float), 0.3, "gate: speech fraction of the span (else silent)",
                       min=0.0, max=1.0),
"min_confidence": Param((int, float), 0.15, "gate: sync confidence, median - min distance "
                        "(0-2 scale; else not_speaking)", min=0.0, max=2.0),
"max_av_offset": Param(int, 5, "gate: |audio-visual offset| in frames (else off_sync)", min=0),
"min_valid_ratio": Param((int, float), 0.5, "gate: fraction of frames with a visible mouth",
                         min=0.0, max=1.0),
"min_mouth_motion": Param((int, float), 0.015, "gate: std of the frame-to-frame change of the "
                          "inner-lip gap, in face heights (else not_speaking)", min=0.0),
"smooth_frames": Param(int, 5, "median smoothing of per-frame speaking probabilities", min=1),
"min_segment_s": Param((int, float), 0.5, "shorter speaking runs are not segments", min=0.0),
"voice_embedder": Param(str, "auto", "speaker embedding (auto: resemblyzer if installed, else "
                        "mfcc)", choices=("auto", "resemblyzer", "mfcc")),
"voice_max_distance": Param((int, float), None, "cosine distance to the person's voice "
                            "consensus above which a segment may be voice_mismatch (null: the "
                            "embedder's default)", min=0.0, max=2.0, nullable=True),
"voice_mad_k": Param((int, float), 3.0, "... and above median + k * MAD of the person's "
                     "distances", min=0.0),
"min_voice_segments": Param(int, 3, "no voice check for people with fewer speaking segments",
                            min=2),
"sync_model": Param(str, None, "ONNX sync model replacing the correlation scorer (see "
                    "dsbuilder/speaker/sync.py OnnxSyncScorer)", nullable=True),
"scorer": Param(str, "auto", "who decides: light-asd (the learned model; `dsbuilder models pull "
                "light-asd`), correlation (mouth motion against the speech envelope, with its "
                "gates), auto (light-asd when its weights are installed, else correlation, said "
                "in the log and the report)", choices=("auto", "light-asd", "correlation")),
"asd_chunk_s": Param((int, float), 4.0, "light-asd: the track is scored in one pass of chunks "
                     "of at most this length", min=0.4, max=60.0),
"asd_vad_gate": Param(bool, False, "light-asd: frames where the VAD hears no speech are not "
                      "speaking"),
"asd_offset_gate": Param(bool, True, "light-asd: also reject tracks whose mouth-motion / sound "
                         "correlation peaks beyond max_av_offset (off_sync; measured in "
                         "benchmarks/RESULTS.md: it removes a dubbed face the model accepts)"),
},
    reasons={
        'no_audio': 'the track has no audio to score',
        'silent': 'the VAD hears speech in less than min_vad_ratio of the segment',
        'off_sync': 'mouth motion and sound correlate best beyond max_av_offset frames (dubbed or out of sync)',
        'not_speaking': 'the active-speaker scorer says the face does not speak',
        'voice_mismatch': "the voice is far from the person's voice consensus (someone else speaks)",
        'decode_error': 'the face clip or audio cannot be decoded',
        'too_short': 'the track is too short for the active-speaker model',
    },
    options=(
        CliOption(("--show",), "Instead of running the stage, write a preview per kept track of "
                  "VIDEO (a path or a source_id): its face clip and audio with the speaking score, "
                  "VAD and speaking segments drawn. Needs a finished speakers run.",
                  target="action", metavar="VIDEO", action="dsbuilder.speaker.preview:cli_show"),
        CliOption(("-o", "--output"), "--show: output folder; default <workspace>/previews/.",
                  target="action", kind="path"),
    ),
)


def gates_from(p: Mapping[str, Any]):
    from dsbuilder.speaker.sync import Gates

    return Gates(min_vad_ratio=float(p["min_vad_ratio"]), min_confidence=float(p["min_confidence"]),
                 max_offset_frames=int(p["max_av_offset"]), min_valid_ratio=float(p["min_valid_ratio"]),
                 min_mouth_motion=float(p["min_mouth_motion"]))


def video_vad(path: str | Path, params: Mapping[str, Any] | None = None):
    """VAD segments of one media file, streamed. Raises MediaError no_audio / decode_error."""
    from dsbuilder.audio import iter_audio, vad_segments

    p = {**stage_defaults(STAGE), **(params or {})}
    return vad_segments(iter_audio(path, chunk_s=10.0, dtype="int16"), method=p["vad"],
                        frame_ms=int(p["vad_frame_ms"]), aggressiveness=int(p["vad_aggressiveness"]),
                        min_speech_s=float(p["min_speech_s"]), min_silence_s=float(p["min_silence_s"]))


def score_track(times: np.ndarray, landmarks: np.ndarray, yaw: np.ndarray | None,
                bbox: np.ndarray | None, audio: np.ndarray | None, audio_t0: float, rate: int,
                fps: float, vad_segs, params: Mapping[str, Any] | None = None,
                scorer=None, asd_logits: np.ndarray | None = None) -> dict[str, Any]:
    """Score one track; no workspace needed. Returns a JSON-able dict (the cache record's body).

    ``times``: frame times (s); ``landmarks``: (n, 68, 2); ``audio``: mono float32 from ``audio_t0``
    (None: no audio); ``vad_segs``: :class:`dsbuilder.audio.Segment` list covering the span.
    ``asd_logits``: Light-ASD's speaking logit at each frame (:mod:`dsbuilder.speaker.asd`); given,
    the model decides (:func:`asd_decision`) and the correlation scorer's offset and confidence are
    kept as diagnostics; None: the correlation scorer and its gates decide.
    """
    from dsbuilder.audio import frame_features, speech_ratio
    from dsbuilder.speaker.mouth import mouth_features
    from dsbuilder.speaker.sync import decide, load_scorer, speaking_probability

    p = {**stage_defaults(STAGE), **(params or {})}
    gates = gates_from(p)
    times = np.asarray(times, np.float64)
    n = len(times)
    half = 0.5 / fps
    start_s, end_s = float(times[0]), float(times[-1] + 2 * half)
    m = mouth_features(landmarks, yaw, bbox, max_yaw_deg=float(p["max_yaw_deg"]))
    vad_frames = np.array([any(s.speech and s.start_s <= t < s.end_s for s in vad_segs)
                           for t in times], bool)
    vad_ratio = speech_ratio(vad_segs, start_s, end_s)
    has_audio = audio is not None and len(audio) > 0
    scorer = scorer or load_scorer(p["sync_model"], window_s=float(p["window_s"]),
                                   hop_s=float(p["hop_s"]), max_offset=int(p["search_offset_frames"]))
    feats = (frame_features(audio, rate, audio_t0, times, fps) if has_audio
             else np.full((n, 4), np.nan, np.float32))
    res = scorer.score(m.signal(), feats, fps)
    motion = m.motion()
    valid_ratio = float(m.valid.mean()) if n else 0.0
    if asd_logits is not None:
        prob = asd_probability(asd_logits, vad_frames if p["asd_vad_gate"] else None,
                               smooth=int(p["smooth_frames"]))
        speaking, reason = asd_decision(prob, times, end_s, float(p["min_segment_s"]), vad_ratio,
                                        gates, has_audio, vad_frames)
        if (speaking and p["asd_offset_gate"] and res.n_windows
                and abs(res.offset) > gates.max_offset_frames):
            speaking, reason = False, "off_sync"
    else:
        speaking, reason = decide(res, vad_ratio, valid_ratio, gates, has_audio, motion)
        prob = speaking_probability(res.frame_confidence, vad_frames, gates.min_confidence,
                                    smooth=int(p["smooth_frames"]))
    if not speaking:
        prob = np.minimum(prob, 0.49).astype(np.float32)  # the track-level gates overrule frames
    # segments: runs of frames
    # segments partition the track: speaking runs (prob >= 0.5, at least min_segment_s) and the
    # frames between them (not speech clips: "silent" or "not_speaking")
    segs: list[dict[str, Any]] = []
    if speaking:
        keep = speaking_runs(prob, times, end_s, float(p["min_segment_s"]), vad_frames,
                             gates.min_vad_ratio)
        edges = np.flatnonzero(np.diff(keep.astype(np.int8))) + 1
        bounds = [0, *edges.tolist(), n]
        for a, b in zip(bounds, bounds[1:]):
            segs.append({"a": a, "b": b, "speaking": bool(keep[a]), "reason": None})
    else:
        segs = [{"a": 0, "b": n, "speaking": False, "reason": reason or "not_speaking"}]
    for s in segs:
        a, b = s["a"], s["b"]
        s_start, s_end = float(times[a]), float(times[b]) if b < n else end_s
        s["vad_ratio"] = speech_ratio(vad_segs, s_start, s_end)
        if speaking and not s["speaking"]:
            s["reason"] = "silent" if s["vad_ratio"] < gates.min_vad_ratio else "not_speaking"
        fc = res.frame_confidence[a:b]
        s["confidence"] = float(np.nanmean(fc)) if np.isfinite(fc).any() else None
        s["embedding"] = None
        if s["speaking"] and has_audio:
            i0 = max(0, int(round((s_start - audio_t0) * rate)))
            i1 = min(len(audio), int(round((s_end - audio_t0) * rate)))
            if i1 - i0 > rate // 2:
                from dsbuilder.speaker.voice import load_embedder

                emb = load_embedder(p["voice_embedder"])
                s["embedding"] = [round(float(x), 6) for x in emb.embed(audio[i0:i1], rate)]
                s["voice_model"] = emb.name

    def fl(a):
        return [None if not np.isfinite(x) else round(float(x), 6) for x in np.asarray(a, float)]

    return {
        "speaking": speaking, "reason": reason, "offset": res.offset,
        "confidence": round(float(res.confidence), 6), "curve": fl(res.curve),
        "n_windows": res.n_windows,
        "scorer": res.scorer if asd_logits is None else light_asd_name(),
        "vad_ratio": round(vad_ratio, 6),
        "valid_ratio": round(valid_ratio, 6), "mouth_motion": round(motion, 6),
        "gates": gates.as_dict(), "segments": segs,
        "frames": {"inner": fl(m.inner), "outer": fl(m.outer), "width": fl(m.width),
                   "valid": m.valid.tolist(), "turned": m.turned.tolist(),
                   "vad": vad_frames.tolist(), "conf": fl(res.frame_confidence),
                   "prob": fl(prob),
                   "asd": None if asd_logits is None else fl(asd_logits)},
    }


def _mean(values: list | None, a: int, b: int) -> float | None:
    vals = [v for v in (values or [])[a:b] if v is not None]
    return round(float(np.mean(vals)), 6) if vals else None


def light_asd_name() -> str:
    from dsbuilder.speaker.lightasd import MODEL_NAME

    return MODEL_NAME


def asd_probability(logits: np.ndarray, vad: np.ndarray | None, smooth: int = 5) -> np.ndarray:
    """Per-frame speaking probability from Light-ASD's logits: the logits averaged over ``smooth``
    frames centred on each (upstream's demo smooths its scores over 5 frames the same way), then the
    logistic ``1 / (1 + exp(-logit))`` -- the model's own softmax probability of "speaking"; times
    the VAD decision at the frame when ``vad`` is given."""
    x = np.asarray(logits, np.float64)
    if smooth > 1 and len(x) > 1:
        k = min(smooth, len(x))
        pad = np.pad(x, (k // 2, k - 1 - k // 2), mode="edge")
        x = np.convolve(pad, np.ones(k) / k, mode="valid")
    p = 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))
    if vad is not None:
        p = p * np.asarray(vad, np.float64)
    return p.astype(np.float32)


def speaking_runs(prob: np.ndarray, times: np.ndarray, end_s: float, min_segment_s: float,
                  vad: np.ndarray | None = None, min_vad_ratio: float = 0.0) -> np.ndarray:
    """Frames inside a speaking run: probability >= 0.5 throughout, at least ``min_segment_s`` long
    and, given the VAD decision per frame (``vad``), with speech heard in at least ``min_vad_ratio``
    of it (a moving mouth with nothing heard does not speak, whatever a model makes of the picture)."""
    on = np.asarray(prob) >= 0.5
    n = len(on)
    keep = np.zeros(n, bool)
    edges = [0, *(np.flatnonzero(np.diff(on.astype(np.int8))) + 1).tolist(), n]
    for a, b in zip(edges, edges[1:]):
        seg_end = float(times[b]) if b < n else end_s
        if not on[a] or seg_end - float(times[a]) < min_segment_s - 1e-9:
            continue
        if vad is not None and float(np.mean(vad[a:b])) < min_vad_ratio:
            continue
        keep[a:b] = True
    return keep


def asd_decision(prob: np.ndarray, times: np.ndarray, end_s: float, min_segment_s: float,
                 vad_ratio: float, gates, has_audio: bool, vad: np.ndarray | None = None
                 ) -> tuple[bool, str | None]:
    """A track speaks when Light-ASD finds a speaking run (:func:`speaking_runs`; ``vad``: the VAD
    decision per frame). Otherwise the reason: ``no_audio``; ``silent`` when the VAD hears speech in
    less than ``min_vad_ratio`` of the span (or of the model's speaking runs); else ``not_speaking``."""
    if not has_audio:
        return False, "no_audio"
    if speaking_runs(prob, times, end_s, min_segment_s, vad, gates.min_vad_ratio).any():
        return True, None
    if vad_ratio < gates.min_vad_ratio or (
            vad is not None and speaking_runs(prob, times, end_s, min_segment_s).any()):
        return False, "silent"
    return False, "not_speaking"


# --- the stage ------------------------------------------------------------------------------------

def resolve_scorer(params: Mapping[str, Any]) -> tuple[Any, str]:
    """``(Light-ASD model or None, scorer id for cache keys)``. Without usable weights the stage
    falls back to the correlation scorer and says so once (here, in the log; the report reads the
    ``scorer`` column)."""
    if params["scorer"] == "correlation":
        return None, "correlation"
    from dsbuilder.speaker import lightasd

    path, why = lightasd.installed_weights()
    if path is not None:
        try:
            return lightasd.load_runner(path), f"{lightasd.MODEL_NAME}:{lightasd.WEIGHTS_SHA256}"
        except (ValueError, RuntimeError, OSError) as exc:
            why = str(exc)
        except ImportError as exc:
            why = f"torch is not installed ({exc})"
    log.warning("speakers: %s; the correlation scorer decides instead (run `dsbuilder models "
                "pull light-asd` to use the learned active-speaker model)", why)
    return None, "correlation"


def asd_logits(ws: Workspace, tr: Mapping[str, Any], times: np.ndarray, net: Any,
               crop_size: int, crop_padding: float, params: Mapping[str, Any]) -> np.ndarray:
    """Light-ASD's speaking logit at each frame of a kept track, from its face clip and wav.
    Raises :class:`dsbuilder.speaker.asd.AsdInputError`."""
    from dsbuilder.speaker import asd

    if not tr.get("crop_path"):
        raise AsdInputError("decode_error", "the track has no face clip")
    x = asd.build_input(ws.abspath(tr["crop_path"]),
                        ws.abspath(tr["audio_path"]) if tr.get("audio_path") else None, times,
                        float(tr["start_s"]), float(tr["end_s"]), size=crop_size,
                        padding=crop_padding)
    logits = asd.score(net, x, float(params["asd_chunk_s"]))
    return asd.to_frames(x.times, logits, times)


@dataclass(frozen=True)
class _TrackContext:
    """What every track's work needs besides the track itself."""

    ws: Workspace
    params: Mapping[str, Any]
    scorer_id: str  # "correlation", or Light-ASD's name and weights hash
    crop_size: int
    crop_padding: float


_SCORERS: dict[str, Any] = {}  # per process: the Light-ASD runner, loaded once


def _scorer(ctx: _TrackContext) -> Any:
    if ctx.scorer_id == "correlation":
        return None
    if ctx.scorer_id not in _SCORERS:
        net, got = resolve_scorer(ctx.params)
        if got != ctx.scorer_id:  # the weights changed under us: a stage error, not a row
            raise StageError(f"speakers: this worker cannot load {ctx.scorer_id} ({got})",
                             "run `dsbuilder models pull light-asd` on every worker")
        _SCORERS[ctx.scorer_id] = net
    return _SCORERS[ctx.scorer_id]


def _vad_compute(params: Mapping[str, Any], path: str | None) -> tuple[dict[str, Any], bool]:
    """One work item: a video's VAD segments (``segments`` None when its audio cannot be read)."""
    rec, cacheable = {"at": now_utc(), "segments": None}, True
    try:
        if path is None:
            raise FileNotFoundError("no local_path")
        rec["segments"] = [[s.start_s, s.end_s, s.speech] for s in video_vad(path, params)]
    except MediaError as exc:
        rec["error"] = f"{exc.reason}: {exc.detail}"
    except OSError as exc:
        rec["error"], cacheable = f"cannot read: {exc}", False
    return rec, cacheable


def _track_compute(ctx: _TrackContext, payload) -> tuple[dict[str, Any], bool]:
    """One work item: a kept track's speaking record (scores per frame, segments, gates)."""
    from dsbuilder.audio import AudioChunk, Segment, read_audio, vad_segments

    tr, fr, src, vad = payload
    ws, params, tid = ctx.ws, ctx.params, tr["track_id"]
    rec: dict[str, Any] = {"at": now_utc()}
    if not fr:
        rec["rejected"] = {"reason": "not_speaking", "detail": "the track has no frames rows"}
        return rec, True
    times = np.array([f["t"] for f in fr])
    fps = float(src.get("fps") or 0) or (1.0 / float(np.median(np.diff(times)))
                                         if len(times) > 1 else 25.0)
    audio, t0 = None, float(tr["start_s"])
    try:
        if tr.get("audio_path"):
            audio, _ = read_audio(ws.abspath(tr["audio_path"]))
        elif src.get("local_path"):
            audio, t0 = read_audio(ws.abspath(src["local_path"]), start_s=tr["start_s"],
                                   end_s=tr["end_s"])
    except MediaError as exc:
        log.info("speakers: %s: %s", tid, exc)
        audio = None
    except OSError as exc:
        log.error("speakers: cannot read audio of %s: %s", tid, exc)
        audio = None
    vsegs = None if vad is None else [Segment(*v) for v in vad]
    if vsegs is None and audio is not None and len(audio):
        vsegs = vad_segments([AudioChunk(t0, audio, 16000)], method=params["vad"],
                             frame_ms=int(params["vad_frame_ms"]),
                             aggressiveness=int(params["vad_aggressiveness"]))
    logits = None
    net = _scorer(ctx)
    if net is not None:
        try:
            logits = asd_logits(ws, tr, times, net, ctx.crop_size, ctx.crop_padding, params)
        except AsdInputError as exc:
            rec["rejected"] = {"reason": exc.reason, "detail": f"light-asd: {exc.detail}"}
            return rec, True
    rec.update(score_track(times, np.array([f["landmarks"] for f in fr], np.float32),
                           np.array([np.nan if f["yaw"] is None else f["yaw"] for f in fr]),
                           np.array([f["bbox"] for f in fr], np.float32), audio, t0, 16000,
                           fps, vsegs or [], params, asd_logits=logits))
    return rec, True


def run(recipe: Recipe, ws: Workspace, *, force: bool = False, progress: bool = True,
        executor: Executor | None = None) -> StageResult:
    """Score every kept target track of the ``tracks`` manifest and publish the speech tables."""
    from dsbuilder.progress import media_bar
    from dsbuilder.speaker.voice import consensus_distances, load_embedder, voice_outliers

    params = recipe.stage_params(STAGE)
    phash = params_hash(params)
    result = StageResult(stage=STAGE, params_hash=phash)
    version = SPEC.code_version

    asd_net, scorer_id = resolve_scorer(params)
    if asd_net is not None:
        _SCORERS[scorer_id] = asd_net  # the local executor uses it; workers load their own
    tracks = [t for t in read_table(ws, "tracks").to_pylist() if t["kept"]]
    if not tracks:
        log.warning("speakers: no kept tracks; run the faces stage first")
    frames_tbl = read_table(ws, "frames").to_pylist()
    by_track: dict[str, list[dict]] = {}
    for f in frames_tbl:
        by_track.setdefault(f["track_id"], []).append(f)
    sources = {r["source_id"]: r for r in read_table(ws, "sources").to_pylist()}

    vad_items = []
    for sid in sorted({t["source_id"] for t in tracks}):
        src = sources.get(sid, {})
        vad_items.append(WorkItem(item_key("vad\0" + (src.get("sha256") or sid), phash, version),
                                  sid, str(ws.abspath(src["local_path"]))
                                  if src.get("local_path") else None))
    vad_records = run_items(STAGE, ws, vad_items, _vad_compute, params, result=result,
                            force=force, executor=executor)
    vad_rows: list[dict[str, Any]] = []
    vad_by_source: dict[str, list[list] | None] = {}
    for it in vad_items:
        sid, segs = it.name, vad_records[it.key].get("segments")
        vad_by_source[sid] = segs
        for i, (start_s, end_s, speech) in enumerate(segs or []):
            vad_rows.append({"vad_segment_id": f"{sid}-vad{i:05d}", "source_id": sid,
                             "segment_index": i, "start_s": start_s, "end_s": end_s,
                             "speech": speech, "method": params["vad"]})

    items = []
    for tr in sorted(tracks, key=lambda t: t["track_id"]):
        tid = tr["track_id"]
        fr = sorted(by_track.get(tid, []), key=lambda f: f["frame_index"])
        fingerprint = hashlib.sha256(json.dumps(
            [tid, tr.get("audio_sha256"), tr.get("crop_sha256"), scorer_id,
             [(f["frame_index"], f["t"]) for f in fr]]).encode()).hexdigest()
        src = sources.get(tr["source_id"], {})
        payload = (tr, fr, {"fps": src.get("fps"), "local_path": src.get("local_path")},
                   vad_by_source.get(tr["source_id"]))
        items.append(WorkItem(item_key(fingerprint, phash, version), tid, payload,
                              float(tr["end_s"]) - float(tr["start_s"])))
    faces = recipe.stages.get("faces") or stage_defaults("faces")  # where the clips' crops are cut
    context = _TrackContext(ws=ws, params=params, scorer_id=scorer_id,
                            crop_size=int(faces["crop_size"]),
                            crop_padding=float(faces["crop_padding"]))
    with media_bar("speakers", sum(it.weight for it in items), enabled=progress) as bar:
        by_key = run_items(STAGE, ws, items, _track_compute, context, result=result, force=force,
                           executor=executor, bar=bar)
    records = {it.name: by_key[it.key] for it in items}

    # voice consensus per person over speaking segments with an embedding
    by_person: dict[str, list[tuple[str, int, list[float]]]] = {}
    for tr in tracks:
        rec = records.get(tr["track_id"], {})
        for k, s in enumerate(rec.get("segments", [])):
            if s["speaking"] and s.get("embedding"):
                by_person.setdefault(tr["person_id"] or "", []).append(
                    (tr["track_id"], k, s["embedding"]))
    vdist: dict[tuple[str, int], tuple[float, bool]] = {}
    emb_name = None
    for pid, items in by_person.items():
        d = consensus_distances([np.array(e, np.float32) for _, _, e in items])
        emb_name = emb_name or load_embedder(params["voice_embedder"])
        limit = params["voice_max_distance"]
        limit = emb_name.default_max_distance if limit is None else float(limit)
        flags = voice_outliers(d, limit, float(params["voice_mad_k"]),
                               int(params["min_voice_segments"]))
        for (tid, k, _), dist, bad in zip(items, d, flags):
            vdist[(tid, k)] = (float(dist), bool(bad))

    speech_rows, frame_rows = [], []
    for tr in sorted(tracks, key=lambda t: t["track_id"]):
        tid, sid, pid = tr["track_id"], tr["source_id"], tr["person_id"]
        rec = records[tid]
        if "rejected" in rec or "segments" not in rec:
            rej = rec.get("rejected", {"reason": "not_speaking", "detail": "no result"})
            result.rejections.append(Rejection(STAGE, tid, rej["reason"], rej["detail"], sid, pid,
                                               rec["at"]))
            continue
        fr = sorted(by_track[tid], key=lambda f: f["frame_index"])
        F = rec["frames"]
        gates_json = json.dumps(rec["gates"], sort_keys=True)
        end_all = float(tr["end_s"])
        for k, s in enumerate(rec["segments"]):
            a, b = s["a"], s["b"]
            speech_id = f"{tid}-s{k:03d}"
            dist, bad = vdist.get((tid, k), (None, False))
            speaking, reason = s["speaking"], s["reason"]
            if speaking and bad:
                speaking, reason = False, "voice_mismatch"
            speech_rows.append({
                "speech_id": speech_id, "track_id": tid, "source_id": sid, "person_id": pid,
                "segment_index": k, "start_frame": fr[a]["frame_index"],
                "end_frame": fr[b - 1]["frame_index"] + 1, "start_s": fr[a]["t"],
                "end_s": fr[b]["t"] if b < len(fr) else end_all, "n_frames": b - a,
                "vad_ratio": s["vad_ratio"], "av_offset_frames": rec["offset"],
                "sync_confidence": rec["confidence"], "segment_confidence": s["confidence"],
                "mouth_motion": rec["mouth_motion"], "valid_ratio": rec["valid_ratio"],
                "speaking": speaking, "reason": reason, "voice_distance": dist,
                "voice_model": s.get("voice_model"), "scorer": rec["scorer"], "gates": gates_json,
                "asd_logit_mean": _mean(F.get("asd"), a, b)})
            if not speaking:
                detail = (f"vad_ratio {rec['vad_ratio']:.2f}, offset {rec['offset']} frames, "
                          f"confidence {rec['confidence']:.3f}, mouth motion "
                          f"{rec['mouth_motion']:.4f}, visible {rec['valid_ratio']:.2f}"
                          + (f", voice distance {dist:.3f}" if dist is not None else "")
                          + f"; gates {gates_json}")
                result.rejections.append(Rejection(STAGE, speech_id, reason, detail, sid, pid,
                                                   rec["at"]))
            for i in range(a, b):
                f = fr[i]
                frame_rows.append({
                    "frame_id": f["frame_id"], "speech_id": speech_id, "track_id": tid,
                    "source_id": sid, "frame_index": f["frame_index"], "t": f["t"],
                    "inner_gap": F["inner"][i], "outer_height": F["outer"][i],
                    "lip_width": F["width"][i], "mouth_visible": F["valid"][i],
                    "turned_away": F["turned"][i], "vad": F["vad"][i],
                    "sync_confidence": F["conf"][i], "speaking_prob": F["prob"][i] or 0.0,
                    "asd_logit": F["asd"][i] if F.get("asd") else None})
    result.rows = {"speech": speech_rows, "speaking_frames": frame_rows, "vad_segments": vad_rows}
    return publish(ws, result)
