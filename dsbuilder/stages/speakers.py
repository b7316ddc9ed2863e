"""Stage ``speakers``: which kept face tracks speak, and where (VoxCeleb/LRS-style active speaker).

For every video with kept target tracks (table ``tracks``, frames in ``frames``):

1. VAD over the whole video's audio, streamed (:func:`dsbuilder.audio.vad_segments`) -> ``vad_segments``.
2. Per track: mouth features from the landmarks (:mod:`dsbuilder.speaker.mouth`), audio features at the
   frame times from the track's wav (or the video's audio over the same span), sync scoring
   (:mod:`dsbuilder.speaker.sync`), per-frame speaking probabilities and the gated decision.
3. A speaking track is split into speaking segments (runs of probability >= 0.5 at least
   ``min_segment_s`` long); each gets a speaker embedding. A track judged not speaking is one segment
   with ``speaking`` False and a reason.
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
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dsbuilder.config import stage_defaults
from dsbuilder.manifest.io import read_table
from dsbuilder.media import MediaError
from dsbuilder.recipe import Recipe, params_hash
from dsbuilder.speaker.asd import AsdInputError
from dsbuilder.stages import CODE_VERSIONS
from dsbuilder.stages.base import Rejection, StageResult, now_utc, publish
from dsbuilder.workspace import Workspace, item_key

log = logging.getLogger(__name__)

STAGE = "speakers"


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
                                        gates, has_audio)
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
        on = prob >= 0.5
        edges = np.flatnonzero(np.diff(on.astype(np.int8))) + 1
        bounds = [0, *edges.tolist(), n]
        keep = np.zeros(n, bool)
        for a, b in zip(bounds, bounds[1:]):
            seg_end = float(times[b]) if b < n else end_s
            if on[a] and seg_end - float(times[a]) >= float(p["min_segment_s"]) - 1e-9:
                keep[a:b] = True
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


def asd_decision(prob: np.ndarray, times: np.ndarray, end_s: float, min_segment_s: float,
                 vad_ratio: float, gates, has_audio: bool) -> tuple[bool, str | None]:
    """A track speaks when Light-ASD finds a speaking run (probability >= 0.5) of at least
    ``min_segment_s``. Otherwise the reason: ``no_audio``; ``silent`` when the VAD hears speech in
    less than ``min_vad_ratio`` of the span; else ``not_speaking``."""
    if not has_audio:
        return False, "no_audio"
    on = np.asarray(prob) >= 0.5
    n = len(on)
    edges = [0, *(np.flatnonzero(np.diff(on.astype(np.int8))) + 1).tolist(), n]
    for a, b in zip(edges, edges[1:]):
        seg_end = float(times[b]) if b < n else end_s
        if on[a] and seg_end - float(times[a]) >= min_segment_s - 1e-9:
            return True, None
    return False, ("silent" if vad_ratio < gates.min_vad_ratio else "not_speaking")


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
               recipe: Recipe, params: Mapping[str, Any]) -> np.ndarray:
    """Light-ASD's speaking logit at each frame of a kept track, from its face clip and wav.
    Raises :class:`dsbuilder.speaker.asd.AsdInputError`."""
    from dsbuilder.speaker import asd

    if not tr.get("crop_path"):
        raise AsdInputError("decode_error", "the track has no face clip")
    faces = recipe.stage_params("faces")
    x = asd.build_input(ws.abspath(tr["crop_path"]),
                        ws.abspath(tr["audio_path"]) if tr.get("audio_path") else None, times,
                        float(tr["start_s"]), float(tr["end_s"]), size=int(faces["crop_size"]),
                        padding=float(faces["crop_padding"]))
    logits = asd.score(net, x, float(params["asd_chunk_s"]))
    return asd.to_frames(x.times, logits, times)


def run(recipe: Recipe, ws: Workspace, *, force: bool = False, progress: bool = True) -> StageResult:
    """Score every kept target track of the ``tracks`` manifest and publish the speech tables."""
    from dsbuilder.progress import over as progress_over

    from dsbuilder.audio import Segment, read_audio
    from dsbuilder.speaker.voice import consensus_distances, load_embedder, voice_outliers

    params = recipe.stage_params(STAGE)
    phash = params_hash(params)
    result = StageResult(stage=STAGE, params_hash=phash)
    version = CODE_VERSIONS[STAGE]

    asd_net, scorer_id = resolve_scorer(params)
    tracks = [t for t in read_table(ws, "tracks").to_pylist() if t["kept"]]
    if not tracks:
        log.warning("speakers: no kept tracks; run the faces stage first")
    frames_tbl = read_table(ws, "frames").to_pylist()
    by_track: dict[str, list[dict]] = {}
    for f in frames_tbl:
        by_track.setdefault(f["track_id"], []).append(f)
    sources = {r["source_id"]: r for r in read_table(ws, "sources").to_pylist()}

    vad_rows: list[dict[str, Any]] = []
    vad_by_source: dict[str, list[Segment] | None] = {}
    for sid in sorted({t["source_id"] for t in tracks}):
        src = sources.get(sid, {})
        key = item_key("vad\0" + (src.get("sha256") or sid), phash, version)
        rec = None if force else ws.get_record(STAGE, key)
        if rec is None:
            path = ws.abspath(src["local_path"]) if src.get("local_path") else None
            rec, cacheable = {"at": now_utc(), "segments": None}, True
            try:
                if path is None:
                    raise FileNotFoundError("no local_path")
                rec["segments"] = [[s.start_s, s.end_s, s.speech] for s in video_vad(path, params)]
            except MediaError as exc:
                rec["error"] = f"{exc.reason}: {exc.detail}"
            except OSError as exc:
                rec["error"], cacheable = f"cannot read: {exc}", False
            if cacheable:
                ws.put_record(STAGE, key, rec)
            result.computed += 1
        else:
            result.cached += 1
        segs = None if rec["segments"] is None else [Segment(*s) for s in rec["segments"]]
        vad_by_source[sid] = segs
        for i, s in enumerate(segs or []):
            vad_rows.append({"vad_segment_id": f"{sid}-vad{i:05d}", "source_id": sid,
                             "segment_index": i, "start_s": s.start_s, "end_s": s.end_s,
                             "speech": s.speech, "method": params["vad"]})

    records: dict[str, dict[str, Any]] = {}
    for tr in progress_over(sorted(tracks, key=lambda t: t["track_id"]), "speakers",
                            lambda t: t["end_s"] - t["start_s"], enabled=progress):
        tid = tr["track_id"]
        fr = sorted(by_track.get(tid, []), key=lambda f: f["frame_index"])
        fingerprint = hashlib.sha256(json.dumps(
            [tid, tr.get("audio_sha256"), tr.get("crop_sha256"), scorer_id,
             [(f["frame_index"], f["t"]) for f in fr]]).encode()).hexdigest()
        key = item_key(fingerprint, phash, version)
        rec = None if force else ws.get_record(STAGE, key)
        if rec is not None:
            result.cached += 1
            records[tid] = rec
            continue
        rec = {"at": now_utc()}
        if not fr:
            rec["rejected"] = {"reason": "not_speaking", "detail": "the track has no frames rows"}
        else:
            times = np.array([f["t"] for f in fr])
            src = sources.get(tr["source_id"], {})
            fps = float(src.get("fps") or 0) or (1.0 / float(np.median(np.diff(times)))
                                                  if len(times) > 1 else 25.0)
            audio, t0 = None, float(tr["start_s"])
            try:
                if tr.get("audio_path"):
                    audio, _ = read_audio(ws.abspath(tr["audio_path"]))
                    t0 = float(tr["start_s"])
                elif src.get("local_path"):
                    audio, t0 = read_audio(ws.abspath(src["local_path"]), start_s=tr["start_s"],
                                           end_s=tr["end_s"])
            except MediaError as exc:
                log.info("speakers: %s: %s", tid, exc)
                audio = None
            except OSError as exc:
                log.error("speakers: cannot read audio of %s: %s", tid, exc)
                audio = None
            vsegs = vad_by_source.get(tr["source_id"])
            if vsegs is None and audio is not None and len(audio):
                from dsbuilder.audio import AudioChunk, vad_segments

                p = params
                vsegs = vad_segments([AudioChunk(t0, audio, 16000)], method=p["vad"],
                                     frame_ms=int(p["vad_frame_ms"]),
                                     aggressiveness=int(p["vad_aggressiveness"]))
            logits = None
            if asd_net is not None:
                try:
                    logits = asd_logits(ws, tr, times, asd_net, recipe, params)
                except AsdInputError as exc:
                    rec["rejected"] = {"reason": exc.reason, "detail": f"light-asd: {exc.detail}"}
            if "rejected" not in rec:
                body = score_track(times, np.array([f["landmarks"] for f in fr], np.float32),
                                   np.array([np.nan if f["yaw"] is None else f["yaw"] for f in fr]),
                                   np.array([f["bbox"] for f in fr], np.float32), audio, t0, 16000,
                                   fps, vsegs or [], params, asd_logits=logits)
                rec.update(body)
        ws.put_record(STAGE, key, rec)
        result.computed += 1
        records[tid] = rec

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
