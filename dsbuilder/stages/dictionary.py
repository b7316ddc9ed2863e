"""Stage ``dictionary``: each recipe person's purified face dictionary and match threshold.

Input: the ``sources`` manifest (photos and videos with status ``ok``; ``person_ids`` says whose they
are). Output: ``manifests/faces_dictionary.parquet`` (every face found in a person's photos, kept or
not, plus faces added from their videos), ``manifests/people.parquet`` (one row per recipe person, with
the fitted threshold) and ``manifests/rejections/dictionary.parquet``.

For each person:

1. **Photos.** Every photo is analysed once (:func:`dsbuilder.face.candidates.analyse_photo`:
   detection, landmarks, pose, sharpness, embedding of every face) and the result is cached per photo
   content, keyed by the photo's sha256 and only the parameters the analysis depends on. Then
   :func:`~dsbuilder.face.candidates.choose_face` takes one face per photo or none (``no_face``,
   ``many_faces``, ``too_small``, ``blurry``, ``extreme_pose``); a photo that cannot be decoded is
   ``decode_error``.
2. **Purification** (:func:`dsbuilder.face.identity.purify`) keeps the dominant identity among the
   usable faces; the others are ``identity_outlier``. A tie for the largest identity is decided by
   the person's videos (the bootstrap sample of their frames votes, :func:`_break_ties`); without a
   clear winner nothing is kept, and ``dsbuilder run`` ends with exit status 3.
3. **Bootstrap.** With fewer than ``min_photos`` kept faces (and ``bootstrap`` on, and at least one
   kept face), the person's videos are sampled (one frame every ``max(1 s, duration / 30)``, at most
   :data:`BOOTSTRAP_MAX_FRAMES` frames, streamed) and the faces found are cached per video content
   and analysis parameters (not per dictionary: choosing among them is cheap and redone each run). In
   each sampled frame, the face closest to the person's kept mean is added (origin
   ``video_bootstrap``) if it passes the photo quality checks, is within ``bootstrap_max_distance`` of
   that mean, and is closer to it than to any other recipe person's mean.
4. **Threshold** (:func:`dsbuilder.face.identity.fit_threshold`). Genuine distances: pairs of the
   person's kept faces from different sources (two frames of one video are not independent
   evidence). Impostor distances: the person's kept faces against every other recipe person's kept
   faces and the bundled public-domain faces of :mod:`dsbuilder.face.impostors`, except a bundled face
   within ``cluster_distance`` of one of the person's kept faces (it is the person). A person without
   a kept face gets a ``people`` row with a null threshold and a ``no_kept_face`` rejection.

Ids: ``<source_id>-face<k>`` with ``k`` the face's rank by box area in the photo; a photo listed for
several people gives each of them a row, ``<source_id>-<person_id>-face<k>``; bootstrap faces are
``<video source_id>-t<frame index>-face<k>``.

A rerun with nothing changed analyses nothing and writes byte-identical manifests: purification and
the fit are recomputed from cached numbers, deterministically.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from dsbuilder.config import Param
from dsbuilder.errors import PhotoError
from dsbuilder.face.candidates import (ANALYSIS_PARAMS, FaceCandidate, FrameFaces, choose_face,
                                       quality_verdict)
from dsbuilder.face.identity import fit_threshold, purify
from dsbuilder.manifest.io import read_table
from dsbuilder.recipe import Person, Recipe, params_hash
from dsbuilder.stages.base import (Rejection, StageResult, WorkItem, first_time, now_utc, publish,
                                   run_items)
from dsbuilder.stages.spec import StageSpec
from dsbuilder.workspace import Workspace, item_key

if TYPE_CHECKING:
    from dsbuilder.executors import Executor

log = logging.getLogger(__name__)

STAGE = "dictionary"

#: The stage's contract (see :mod:`dsbuilder.stages.spec`).
SPEC = StageSpec(
    name=STAGE,
    help="Build each person's purified face dictionary and fit a match threshold.",
    reads=('sources',),
    writes=('faces_dictionary', 'people'),
    code_version='1',
    params={
"detector": Param(str, "hog", "face detector for photos (cnn: dlib MMOD, slower, better on "
                  "small and turned faces)", choices=("hog", "cnn")),
"upsample": Param(int, 1, "times to upsample a photo before detection (finds smaller faces)",
                  min=0, max=3),
"max_side_px": Param(int, 1600, "photos are downscaled so their longer side is at most this",
                     min=160),
"min_det_score": Param((int, float), 0.3, "detections scoring lower are ignored (HOG SVM "
                       "margin or MMOD confidence; dlib's own cut is 0; a mission patch on the "
                       "bundled astronaut photo scores 0.12, real faces 0.8-2.8)", min=0.0),
"min_face_px": Param(int, 60, "reject faces whose box is smaller (too_small)", min=8),
"min_sharpness": Param((int, float), 25.0, "variance of the Laplacian of the face resized to "
                       "128 px; below is blurry", min=0.0),
"max_yaw_deg": Param((int, float), 45.0, "reject faces turned further (extreme_pose)",
                     min=0.0, max=90.0),
"dominance_ratio": Param((int, float), 2.5, "in a photo with several faces, keep the largest "
                         "when its area is at least this many times the next one's", min=1.0),
"jitters": Param(int, 1, "embedding re-samplings (dlib num_jitters); more is slower and "
                 "steadier", min=0, max=100),
"purification": Param(str, "chinese_whispers", "how the dominant identity is found",
                      choices=("chinese_whispers", "agglomerative", "none")),
"cluster_distance": Param((int, float), 0.6, "embedding distance that links two faces into "
                          "one identity during purification (0.6: dlib's documented same-person "
                          "threshold)", min=0.05, max=1.5),
"threshold_cap": Param((int, float), 0.6, "a fitted match threshold is never above this",
                       min=0.1, max=1.5),
"target_far": Param((int, float), 0.001, "false-accept rate the fitted threshold aims for "
                    "(estimated on impostor distances)", min=0.0, max=0.5),
"min_photos": Param(int, 3, "with fewer kept photos, bootstrap faces from the person's "
                    "videos (if bootstrap is on)", min=1),
"bootstrap": Param(bool, True, "add high-confidence video faces when photos are few"),
"bootstrap_max_distance": Param((int, float), 0.4, "a video face must be this close to the "
                                "dictionary to be added", min=0.05, max=1.0),
},
    reasons={
        'no_face': 'no face found in the photo',
        'many_faces': 'several faces and none dominant (dominance_ratio)',
        'too_small': 'the face box is smaller than min_face_px',
        'blurry': 'the face is sharper than nothing: variance of the Laplacian below min_sharpness',
        'extreme_pose': 'the face is turned further than max_yaw_deg',
        'identity_outlier': "purification put the face outside the person's dominant identity",
        'decode_error': 'the photo (or a bootstrap video) cannot be decoded or read',
        'no_kept_face': 'the person has no kept reference face (the run exits with status 3)',
    },
    options=(),
)

#: Bootstrap sampling: at most this many frames per video, at least this interval between them.
BOOTSTRAP_MAX_FRAMES = 30
BOOTSTRAP_MIN_INTERVAL_S = 1.0


@dataclass
class DictFace:
    """One face of a person's dictionary (a ``faces_dictionary`` row in the making)."""

    face_id: str
    person_id: str
    source_id: str
    origin: str  # photo | video_bootstrap
    cand: FaceCandidate
    at: str  # when the face's source was analysed (rejection time)
    usable: bool = False  # passed the photo checks
    kept: bool = False
    reason: str | None = None
    detail: str | None = None
    distance: float | None = None
    t: float | None = None

    def row(self) -> dict[str, Any]:
        c = self.cand
        return {
            "face_id": self.face_id, "person_id": self.person_id, "source_id": self.source_id,
            "origin": self.origin, "t": self.t, "bbox": [float(v) for v in c.box],
            "landmarks": [float(v) for v in c.landmarks.ravel()],
            "embedding": [float(v) for v in c.embedding], "det_score": c.score,
            "face_px": c.face_px, "sharpness": c.sharpness, "yaw": c.yaw, "pitch": c.pitch,
            "n_faces_in_photo": c.n_faces, "distance_to_identity": self.distance,
            "kept": self.kept, "reason": None if self.kept else self.reason,
        }


@dataclass
class PersonDictionary:
    """Everything the stage decided for one person."""

    person: Person
    faces: list[DictFace]
    n_photos: int = 0
    mean: np.ndarray | None = None  # mean embedding of the kept photo faces
    ambiguous: str | None = None

    @property
    def kept(self) -> list[DictFace]:
        return [f for f in self.faces if f.kept]

    def kept_embeddings(self) -> np.ndarray:
        k = self.kept
        return np.stack([f.cand.embedding for f in k]).astype(np.float64) if k else \
            np.zeros((0, 128))


# --- the stage ------------------------------------------------------------------------------------

def run(recipe: Recipe, ws: Workspace, *, force: bool = False, progress: bool = True,
        executor: Executor | None = None) -> StageResult:
    """Build every recipe person's dictionary and threshold and publish the tables (module docstring).

    ``force`` re-analyses every photo and video. One bad photo or video never stops the run: it
    becomes a rejection row.
    """
    from dsbuilder.progress import media_bar

    params = recipe.stage_params(STAGE)
    phash = params_hash(params)
    ahash = params_hash({k: params[k] for k in ANALYSIS_PARAMS})
    result = StageResult(stage=STAGE, params_hash=phash)
    wanted = {p.id for p in recipe.people}

    sources = read_table(ws, "sources").to_pylist()
    if not sources:
        log.warning("dictionary: the sources manifest is empty or missing; run the scrape stage "
                    "first")
    ok = sorted((r for r in sources if r["status"] == "ok" and wanted & set(r["person_ids"] or ())),
                key=lambda r: r["source_id"])
    photos = [r for r in ok if r["kind"] == "photo"]
    videos = [r for r in ok if r["kind"] == "video"]

    items = [WorkItem(item_key(src["sha256"] or src["source_id"], ahash, SPEC.code_version),
                      src["source_id"], str(ws.abspath(src["local_path"]))
                      if src["local_path"] else None, 1.0) for src in photos]
    with media_bar("dictionary", len(items), unit="photo", enabled=progress) as bar:
        by_key = run_items(STAGE, ws, items, _photo_compute, params, result=result, force=force,
                           executor=executor, bar=bar)
    records = {it.name: by_key[it.key] for it in items}

    dicts = [_person_from_photos(p, photos, records, params, wanted, result)
             for p in recipe.people]
    videos_work = _VideoWork(ws, params, ahash, force, result, executor, progress)
    _break_ties(dicts, photos, videos, records, params, wanted, videos_work, result)

    if params["bootstrap"]:
        _bootstrap(dicts, videos, params, videos_work, result)

    bundled = _bundled_embeddings(ws, params, force)
    people_rows = [_fit_person(d, dicts, bundled, params, phash, ws, force, result) for d in dicts]

    result.rows = {"faces_dictionary": [f.row() for d in dicts for f in d.faces],
                   "people": people_rows}
    return publish(ws, result)


# --- photos ---------------------------------------------------------------------------------------

def analyse_photo_file(path: str | Path, params: Mapping[str, Any] | None = None
                       ) -> list[FaceCandidate]:
    """Decode a photo file and analyse it (:func:`~dsbuilder.face.candidates.analyse_photo`).
    Raises :class:`~dsbuilder.face.candidates.PhotoError` (``decode_error``) or :class:`OSError`."""
    from dsbuilder.face.candidates import analyse_photo, load_photo

    return analyse_photo(load_photo(path), params)


def _photo_compute(params: Mapping[str, Any], path: str | None) -> tuple[dict[str, Any], bool]:
    """One work item (runs in any executor): the analysis of one photo, ``{"at", "faces": [...]}``
    or ``{"at", "rejected": ...}``, and whether to cache it."""
    at = now_utc()
    try:
        if path is None:
            raise FileNotFoundError("the sources row has no local_path")
        faces = analyse_photo_file(path, params)
        log.info("dictionary: %s: %d face(s)", path, len(faces))
        return {"at": at, "faces": [c.record() for c in faces]}, True
    except PhotoError as exc:
        log.warning("dictionary: %s rejected: %s: %s", path, exc.reason, exc.detail)
        return {"at": at, "rejected": {"reason": exc.reason, "detail": exc.detail}}, True
    except OSError as exc:  # missing or unreadable: may be back next run, so not cached
        log.error("dictionary: cannot read %s: %s", path, exc)
        return {"at": at, "rejected": {"reason": "decode_error",
                                       "detail": f"cannot read file: {exc}"}}, False


def _break_ties(dicts: list[PersonDictionary], photos: list[dict[str, Any]],
                videos: list[dict[str, Any]], records: Mapping[str, dict[str, Any]],
                params: Mapping[str, Any], wanted: set[str], videos_work: "_VideoWork",
                result: StageResult) -> None:
    """Persons whose photos split into equal clusters: let their videos decide (module docstring)."""
    from dsbuilder.face.identity import decide_by_votes, video_votes

    for i, d in enumerate(dicts):
        pid = d.person.id
        mine = [v for v in videos if pid in v["person_ids"]]
        if not d.ambiguous or not mine:
            continue
        frames: list[list[np.ndarray]] = []
        recs = videos_work.records(mine, "dictionary tie-break")
        for v in mine:
            rec = recs[v["source_id"]]
            for fr in rec.get("frames", []):
                ff = FrameFaces.from_record(fr)
                frames.append([c.embedding for c in ff.faces
                               if quality_verdict(c, params) is None])
        others = [o.mean for o in dicts if o is not d and o.mean is not None]

        def tie_break(embs, pur, frames=frames, others=others):
            votes = video_votes(embs, pur, frames, others)
            detail = ("video evidence: " + ", ".join(f"cluster {k} in {n} sampled frame(s)"
                                                      for k, n in sorted(votes.items()))
                      + f" of {len(frames)} in {len(mine)} video(s)")
            return decide_by_votes(votes), detail

        result.rejections = [r for r in result.rejections if r.person_id != pid]
        dicts[i] = _person_from_photos(d.person, photos, records, params, wanted, result,
                                       tie_break=tie_break)


def _person_from_photos(person: Person, photos: list[dict[str, Any]],
                        records: Mapping[str, dict[str, Any]], params: Mapping[str, Any],
                        wanted: set[str], result: StageResult,
                        tie_break=None) -> PersonDictionary:
    """Photo decisions and purification for one person. ``tie_break(embeddings, purification) ->
    (label or None, detail)`` decides between equal clusters (:func:`_break_ties`)."""
    pid = person.id
    d = PersonDictionary(person, [])
    for src in photos:
        if pid not in src["person_ids"]:
            continue
        sid = src["source_id"]
        d.n_photos += 1
        rec = records[sid]
        if "rejected" in rec:
            result.rejections.append(Rejection(
                stage=STAGE, item_id=sid, reason=rec["rejected"]["reason"],
                detail=rec["rejected"]["detail"], source_id=sid, person_id=pid, at=rec["at"]))
            continue
        cands = [FaceCandidate.from_record(c) for c in rec["faces"]]
        decision = choose_face(cands, params)
        if not cands:
            result.rejections.append(Rejection(
                stage=STAGE, item_id=sid, reason="no_face", detail=decision.detail, source_id=sid,
                person_id=pid, at=rec["at"]))
            continue
        shared = len(wanted & set(src["person_ids"])) > 1
        by_index = {c.index: c for c in cands}
        for v in decision.faces:
            face_id = f"{sid}-{pid}-face{v.index}" if shared else f"{sid}-face{v.index}"
            d.faces.append(DictFace(face_id=face_id, person_id=pid, source_id=sid, origin="photo",
                                    cand=by_index[v.index], at=rec["at"], usable=v.usable,
                                    reason=v.reason, detail=v.detail))

    d.faces.sort(key=lambda f: f.face_id)
    usable = [f for f in d.faces if f.usable]
    embs = [f.cand.embedding for f in usable]
    pur = purify(embs, params)
    decided_by, evidence = None, "no video of this person to decide by"
    if pur.ambiguous and tie_break is not None:
        from dsbuilder.face.identity import keep_cluster

        label, evidence = tie_break(embs, pur)
        if label is not None:
            pur, decided_by = keep_cluster(embs, pur, label), evidence
            log.info("dictionary: %s: equal photo clusters (%s); %s: cluster %d kept", pid,
                     pur.describe(), evidence, label)
    for f, keep in zip(usable, pur.kept):
        f.kept = bool(keep)
    if pur.mean is not None:
        d.mean = pur.mean
        dist = np.sqrt(((np.stack([f.cand.embedding for f in d.faces]).astype(np.float64)
                         - pur.mean) ** 2).sum(axis=1))
        for f, x in zip(d.faces, dist):
            f.distance = float(x)
    n_kept = int(pur.kept.sum())
    for f in usable:
        if f.kept:
            continue
        f.reason = "identity_outlier"
        if pur.ambiguous:
            f.detail = (f"ambiguous identity: no single largest cluster among {len(usable)} usable "
                        f"faces ({pur.describe()}; {evidence}); nothing kept: add photos of "
                        f"{person.name}")
        else:
            f.detail = (f"not in the dominant identity ({n_kept} of {len(usable)} faces; "
                        f"{pur.describe()}"
                        + (f"; equal photo clusters decided by {decided_by}" if decided_by else "")
                        + f"); distance {f.distance:.3f} to its mean")
    if pur.ambiguous:
        d.ambiguous = pur.describe()
        log.warning("dictionary: %s: the photos show %d identities of equal size (%s); cannot tell "
                    "which is %s, so no photo is kept. Add more photos of them.", pid,
                    len(pur.sizes), pur.describe(), person.name)
    for f in d.faces:
        if not f.kept:
            result.rejections.append(Rejection(
                stage=STAGE, item_id=f.face_id, reason=f.reason, detail=f.detail,
                source_id=f.source_id, person_id=pid, at=f.at))
    return d


# --- bootstrap from videos ------------------------------------------------------------------------

def _bootstrap(dicts: list[PersonDictionary], videos: list[dict[str, Any]],
               params: Mapping[str, Any], videos_work: "_VideoWork", result: StageResult) -> None:
    means = {d.person.id: d.mean for d in dicts if d.mean is not None}
    todo = []
    for d in dicts:
        has_video = any(d.person.id in v["person_ids"] for v in videos)
        if d.mean is None:
            if has_video:
                log.warning("dictionary: %s has no kept photo face: cannot bootstrap from video "
                            "(a video face is only added when it is close to a kept photo face)",
                            d.person.id)
        elif len(d.kept) < params["min_photos"]:
            if has_video:
                todo.append(d)
            else:
                log.warning("dictionary: %s has %d kept photo face(s) < min_photos %d and no "
                            "video to bootstrap from", d.person.id, len(d.kept),
                            params["min_photos"])
    if not todo:
        return
    need = sorted({v["source_id"] for v in videos for d in todo if d.person.id in v["person_ids"]})
    by_id = {v["source_id"]: v for v in videos}
    frames = videos_work.records([by_id[sid] for sid in need], "dictionary bootstrap")

    bmax = float(params["bootstrap_max_distance"])
    for d in todo:
        pid = d.person.id
        others = {q: m for q, m in means.items() if q != pid}
        added = 0
        for sid in need:
            if pid not in by_id[sid]["person_ids"]:
                continue
            rec = frames[sid]
            if "rejected" in rec:
                result.rejections.append(Rejection(
                    stage=STAGE, item_id=sid, reason=rec["rejected"]["reason"],
                    detail="bootstrap: " + rec["rejected"]["detail"], source_id=sid,
                    person_id=pid, at=rec["at"]))
                continue
            for fr in (FrameFaces.from_record(x) for x in rec["frames"]):
                best = None
                for c in fr.faces:
                    if quality_verdict(c, params) is not None:
                        continue
                    e = c.embedding.astype(np.float64)
                    own = float(np.linalg.norm(e - d.mean))
                    if own > bmax:
                        continue
                    if any(float(np.linalg.norm(e - m)) <= own for m in others.values()):
                        continue
                    if best is None or own < best[0]:
                        best = (own, c)
                if best is None:
                    continue
                own, c = best
                d.faces.append(DictFace(
                    face_id=f"{sid}-t{fr.frame_index}-face{c.index}", person_id=pid, source_id=sid,
                    origin="video_bootstrap", cand=c, at=rec["at"], usable=True, kept=True,
                    distance=own, t=fr.t))
                added += 1
        log.info("dictionary: %s: %d photo face(s) kept, %d added from video", pid,
                 len(d.kept) - added, added)


@dataclass
class _VideoWork:
    """Faces sampled from the people's videos (tie-breaks and bootstrap), one work item per video,
    each computed at most once per run."""

    ws: Workspace
    params: Mapping[str, Any]
    ahash: str
    force: bool
    result: StageResult
    executor: Any
    progress: bool
    done: dict[str, dict[str, Any]] = field(default_factory=dict)

    def records(self, videos: list[Mapping[str, Any]], desc: str) -> dict[str, dict[str, Any]]:
        from dsbuilder.progress import media_bar

        items = []
        for src in videos:
            if src["source_id"] in self.done:
                continue
            duration = src.get("duration") or 0.0
            interval = max(BOOTSTRAP_MIN_INTERVAL_S, float(duration) / BOOTSTRAP_MAX_FRAMES)
            vhash = params_hash({"analysis": self.ahash, "interval_s": interval,
                                 "max_frames": BOOTSTRAP_MAX_FRAMES})
            key = item_key("bootstrap\0" + (src["sha256"] or src["source_id"]), vhash,
                           SPEC.code_version)
            path = str(self.ws.abspath(src["local_path"])) if src["local_path"] else None
            items.append(WorkItem(key, src["source_id"], (path, interval), float(duration)))
        with media_bar(desc, sum(it.weight for it in items), enabled=self.progress) as bar:
            by_key = run_items(STAGE, self.ws, items, _video_compute, self.params,
                               result=self.result, force=self.force, executor=self.executor,
                               bar=bar)
        self.done.update({it.name: by_key[it.key] for it in items})
        return {src["source_id"]: self.done[src["source_id"]] for src in videos}


def _video_compute(params: Mapping[str, Any], payload: tuple[str | None, float]
                   ) -> tuple[dict[str, Any], bool]:
    """One work item: the faces of one video's sampled frames, ``{"at", "frames": [...]}`` or a
    rejection."""
    from dsbuilder.face.candidates import sample_video_faces
    from dsbuilder.media import MediaError

    path, interval = payload
    at = now_utc()
    try:
        if path is None:
            raise FileNotFoundError("the sources row has no local_path")
        got = list(sample_video_faces(path, params, interval_s=interval,
                                      max_frames=BOOTSTRAP_MAX_FRAMES))
        log.info("dictionary: bootstrap %s: %d frames sampled, %d faces", path, len(got),
                 sum(len(f.faces) for f in got))
        return {"at": at, "frames": [f.record() for f in got]}, True
    except MediaError as exc:
        log.warning("dictionary: bootstrap %s rejected: %s: %s", path, exc.reason, exc.detail)
        return {"at": at, "rejected": {"reason": "decode_error", "detail": exc.detail}}, True
    except OSError as exc:
        log.error("dictionary: cannot read %s: %s", path, exc)
        return {"at": at, "rejected": {"reason": "decode_error",
                                       "detail": f"cannot read file: {exc}"}}, False


# --- impostors and thresholds ---------------------------------------------------------------------

def _bundled_embeddings(ws: Workspace, params: Mapping[str, Any], force: bool
                        ) -> list[tuple[str, np.ndarray]]:
    """The bundled impostor faces' embeddings, through the workspace cache (so that a rerun uses the
    very same numbers)."""
    from dsbuilder.face.impostors import (BUNDLED, IMPOSTOR_SET_VERSION, bundled_digest,
                                          bundled_embedding)

    out = []
    for face in BUNDLED:
        try:
            digest = bundled_digest(face.name)
        except Exception as exc:  # noqa: BLE001 - a missing sample file must not stop the run
            log.warning("dictionary: bundled impostor %s unavailable: %s", face.name, exc)
            continue
        key = item_key(f"impostor\0{face.name}\0{digest}",
                       params_hash({"jitters": params["jitters"], "detector": face.detector,
                                    "set": IMPOSTOR_SET_VERSION}), SPEC.code_version)
        record = None if force else ws.get_record(STAGE, key)
        if record is None:
            emb = bundled_embedding(face.name, int(params["jitters"]))
            record = {"name": face.name, "credit": face.credit,
                      "embedding": list(emb) if emb is not None else None}
            ws.put_record(STAGE, key, record)
        if record["embedding"] is not None:
            out.append((face.name, np.asarray(record["embedding"], np.float32)))
    return out


def _pairwise_genuine(d: PersonDictionary) -> np.ndarray:
    kept = d.kept
    if len(kept) < 2:
        return np.zeros(0)
    from dsbuilder.face.api import distance

    e = d.kept_embeddings()
    dm = distance(e, e)
    src = [f.source_id for f in kept]
    return np.array([dm[i, j] for i in range(len(kept)) for j in range(i + 1, len(kept))
                     if src[i] != src[j]])


def _fit_person(d: PersonDictionary, dicts: list[PersonDictionary],
                bundled: list[tuple[str, np.ndarray]], params: Mapping[str, Any], phash: str,
                ws: Workspace, force: bool, result: StageResult) -> dict[str, Any]:
    from dsbuilder.face.api import distance

    pid = d.person.id
    kept = d.kept
    row: dict[str, Any] = {
        "person_id": pid, "name": d.person.name, "source_id": None,
        "source_ids": sorted({f.source_id for f in kept}), "n_faces": len(d.faces),
        "n_kept": len(kept), "n_bootstrapped": sum(f.origin == "video_bootstrap" for f in kept),
        "threshold": None, "threshold_method": None, "est_far": None, "est_frr": None,
        "n_genuine_pairs": 0, "n_impostor_pairs": 0,
    }
    if not kept:
        reasons = Counter(f.reason for f in d.faces)
        rejected_photos = [r for r in result.rejections
                           if r.person_id == pid and r.item_id == r.source_id]
        reasons.update(r.reason for r in rejected_photos)
        why = ", ".join(f"{k} {n}" for k, n in sorted(reasons.items())) or "nothing to look at"
        detail = (f"no kept face: {d.n_photos} photo(s) with status ok, {len(d.faces)} face(s) "
                  f"found ({why})")
        if d.ambiguous:
            detail += f"; ambiguous identity ({d.ambiguous})"
        log.warning("dictionary: %s: %s; this person will not be identified in videos", pid,
                    detail)
        at = first_time(ws, STAGE, f"person\0{pid}", phash, force=force)
        result.rejections.append(Rejection(stage=STAGE, item_id=pid, reason="no_kept_face",
                                           detail=detail, person_id=pid, at=at))
        return row

    mine = d.kept_embeddings()
    genuine = _pairwise_genuine(d)
    imp = []
    for other in dicts:
        if other is d or not other.kept:
            continue
        dm = distance(mine, other.kept_embeddings())
        close = float(dm.min())
        if close < params["cluster_distance"]:
            log.warning("dictionary: %s and %s have kept faces only %.3f apart (< cluster_distance "
                        "%g): the same person twice, or a wrong photo?", pid, other.person.id, close,
                        params["cluster_distance"])
        imp.append(dm.ravel())
    for name, emb in bundled:
        dm = distance(mine, emb[None, :].astype(np.float64))
        if float(dm.min()) < params["cluster_distance"]:
            log.info("dictionary: %s matches bundled impostor %s (distance %.3f); left out of "
                     "their impostors", pid, name, float(dm.min()))
            continue
        imp.append(dm.ravel())
    impostor = np.concatenate(imp) if imp else np.zeros(0)
    fit = fit_threshold(genuine, impostor, params["threshold_cap"], params["target_far"])
    log.info("dictionary: %s: threshold %.3f (%s), est. FAR %s, FRR %s, %d genuine / %d impostor "
             "pairs", pid, fit.threshold, fit.threshold_method, _fmt(fit.est_far),
             _fmt(fit.est_frr), fit.n_genuine_pairs, fit.n_impostor_pairs)
    row.update(threshold=fit.threshold, threshold_method=fit.threshold_method,
               est_far=fit.est_far, est_frr=fit.est_frr, n_genuine_pairs=fit.n_genuine_pairs,
               n_impostor_pairs=fit.n_impostor_pairs)
    return row


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2g}"
