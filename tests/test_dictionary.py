"""The dictionary stage: photo checks, purification, bootstrap from video, threshold fit, the cache.

Synthetic workspaces are built from the public-domain portraits that ship in our dependencies (Grace
Hopper, Eileen Collins); the real-photo tests use ../shared/media/people and skip without it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from dsbuilder import synth
from dsbuilder.config import STAGES, stage_defaults
from dsbuilder.face import api
from dsbuilder.face.candidates import (FaceCandidate, PhotoError, analyse_photo, choose_face,
                                       load_photo)
from dsbuilder.face.identity import SIGMA_FLOOR, fit_threshold, purify
from dsbuilder.face.impostors import BUNDLED, bundled_embedding
from dsbuilder.manifest.io import read_table, table_path, write_table
from dsbuilder.manifest.schema import REASONS
from dsbuilder.recipe import Person, Recipe
from dsbuilder.stages import dictionary
from dsbuilder.workspace import Workspace, sha256_file

SHARED_PEOPLE = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "people"
DEFAULTS = stage_defaults("dictionary")


# --- helpers --------------------------------------------------------------------------------------

def make_recipe(ws: Workspace, people: list[tuple[str, str]], **params) -> Recipe:
    stages = {s: stage_defaults(s) for s in STAGES}
    stages["dictionary"].update(params)
    return Recipe(path=ws.root / "recipe.yaml", name="t", workspace=ws.root,
                  people=[Person(pid, name, (), ()) for pid, name in people], licences={},
                  limits={}, stages=stages)


def add_source(ws: Workspace, src: Path, source_id: str, person_ids: list[str],
               kind: str = "photo", **extra) -> dict:
    """Copy ``src`` into the workspace as scrape would; return its ``sources`` row."""
    dest = ws.raw / f"{kind}s" / f"{source_id}{src.suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return {"source_id": source_id, "kind": kind, "status": "ok", "person_ids": person_ids,
            "request_ids": [f"req-{source_id}"], "sha256": sha256_file(dest),
            "local_path": ws.relpath(dest), **extra}


def manifest_bytes(ws: Workspace) -> dict[str, str]:
    paths = [table_path(ws, "faces_dictionary"), table_path(ws, "people"),
             table_path(ws, "rejections", "dictionary")]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def rejections(ws: Workspace) -> dict[str, tuple[str, str]]:
    """item_id@person -> (reason, detail) of the dictionary stage's rejections."""
    rows = read_table(ws, "rejections").to_pylist()
    return {f"{r['item_id']}@{r['person_id']}": (r["reason"], r["detail"]) for r in rows
            if r["stage"] == "dictionary"}


def rows_by_id(ws: Workspace, table: str) -> dict[str, dict]:
    id_col = {"faces_dictionary": "face_id", "people": "person_id"}[table]
    return {r[id_col]: r for r in read_table(ws, table).to_pylist()}


def pad_to(img: np.ndarray, h: int) -> np.ndarray:
    return np.pad(img, ((0, h - img.shape[0]), (0, 0), (0, 0)), constant_values=255)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """The synthetic photos, by name (made once)."""
    d = tmp_path_factory.mktemp("dict-photos")
    g, a = synth.grace_hopper(), synth.astronaut()
    pics = {
        "grace": g,
        "grace_flip": g[:, ::-1],
        "grace_crop": cv2.resize(g[40:560, 20:500], None, fx=0.9, fy=0.9,
                                 interpolation=cv2.INTER_AREA),
        # Grace with Eileen Collins small beside her: Grace's face dominates (area ratio ~4)
        "grace_dominant": np.hstack([g, pad_to(a, g.shape[0])]),
        "grace_blur": cv2.GaussianBlur(g, (0, 0), 4),  # detected, sharpness ~15 < 25
        "grace_tiny": cv2.resize(g, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA),  # 52 px
        "pair": np.hstack([g, g[:, ::-1]]),  # two equal faces
        "texture": synth.texture(3),
        "astro": a,
        "astro_flip": a[:, ::-1],
        "astro_crop": a[20:400, 60:440],
        "mixed_grace": cv2.resize(g, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA),
        "mixed_astro": cv2.resize(a, None, fx=1.2, fy=1.2, interpolation=cv2.INTER_CUBIC),
        "ghost": synth.texture(7),
    }
    out = {}
    for name, pic in pics.items():
        out[name] = d / f"{name}.jpg"
        synth.write_photo(out[name], np.ascontiguousarray(pic), quality=92)
    out["broken"] = d / "broken.jpg"
    out["broken"].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" + bytes(range(256)) * 20)
    return out


# --- the stage on synthetic photos ----------------------------------------------------------------

@pytest.fixture(scope="module")
def main_ws(tmp_path_factory, photos) -> tuple[Workspace, Recipe, object]:
    """Four people: grace (good photos, bad photos, one photo of Eileen Collins also listed for
    eileen), eileen, mixed (one photo of each: ambiguous), ghost (no face at all)."""
    ws = Workspace.open(tmp_path_factory.mktemp("dict-ws"))
    grace = ["grace", "grace_flip", "grace_crop", "grace_dominant", "grace_blur", "grace_tiny",
             "pair", "texture", "broken"]
    rows = [add_source(ws, photos[n], f"src-{n}", ["grace"]) for n in grace]
    rows.append(add_source(ws, photos["astro"], "src-astro", ["grace", "eileen"]))
    rows += [add_source(ws, photos[n], f"src-{n}", ["eileen"]) for n in ("astro_flip", "astro_crop")]
    rows += [add_source(ws, photos[n], f"src-{n}", ["mixed"]) for n in ("mixed_grace", "mixed_astro")]
    rows.append(add_source(ws, photos["ghost"], "src-ghost", ["ghost"]))
    rows.append({"source_id": "src-scrape-rejected", "kind": "photo", "status": "rejected",
                 "person_ids": ["grace"], "request_ids": ["req-x"]})
    write_table(ws, "sources", rows, "h")
    recipe = make_recipe(ws, [("grace", "Grace Hopper"), ("eileen", "Eileen Collins"),
                              ("mixed", "Mixed"), ("ghost", "Ghost")])
    result = dictionary.run(recipe, ws, progress=False)
    return ws, recipe, result


def test_photo_reasons(main_ws):
    ws, _, result = main_ws
    assert result.computed == 15 and result.cached == 0
    rej = rejections(ws)
    assert {k: v[0] for k, v in rej.items()} == {
        "src-grace_blur-face0@grace": "blurry",
        "src-grace_tiny-face0@grace": "too_small",
        "src-pair-face0@grace": "many_faces",
        "src-pair-face1@grace": "many_faces",
        "src-grace_dominant-face1@grace": "many_faces",  # the bystander of a kept photo
        "src-texture@grace": "no_face",
        "src-broken@grace": "decode_error",
        "src-astro-grace-face0@grace": "identity_outlier",
        "src-mixed_astro-face0@mixed": "identity_outlier",
        "src-mixed_grace-face0@mixed": "identity_outlier",
        "mixed@mixed": "no_kept_face",
        "src-ghost@ghost": "no_face",
        "ghost@ghost": "no_kept_face",
    }
    assert set(v[0] for v in rej.values()) <= set(REASONS["dictionary"])
    assert rej["src-grace_blur-face0@grace"][1].startswith("sharpness 1")
    assert "< min_sharpness 25" in rej["src-grace_blur-face0@grace"][1]
    assert rej["src-grace_tiny-face0@grace"][1] == "face 52 px < min_face_px 60"
    assert "area ratio 1.0" in rej["src-pair-face0@grace"][1]
    assert "distance 0.6" in rej["src-astro-grace-face0@grace"][1]
    assert "ambiguous" in rej["src-mixed_astro-face0@mixed"][1]


def test_faces_dictionary_rows(main_ws):
    ws, _, _ = main_ws
    faces = rows_by_id(ws, "faces_dictionary")
    kept = sorted(k for k, r in faces.items() if r["kept"])
    assert kept == ["src-astro-eileen-face0", "src-astro_crop-face0", "src-astro_flip-face0",
                    "src-grace-face0", "src-grace_crop-face0", "src-grace_dominant-face0",
                    "src-grace_flip-face0"]
    # the same photo is an outlier for Grace and a reference for Eileen, with distinct ids
    assert faces["src-astro-grace-face0"]["reason"] == "identity_outlier"
    assert faces["src-astro-grace-face0"]["distance_to_identity"] > 0.6
    for r in faces.values():
        assert r["origin"] == "photo" and r["t"] is None
        assert len(r["bbox"]) == 4 and len(r["landmarks"]) == 136 and len(r["embedding"]) == 128
        assert (r["reason"] is None) == r["kept"]
        assert r["det_score"] >= DEFAULTS["min_det_score"]
    g = faces["src-grace-face0"]
    assert g["n_faces_in_photo"] == 1 and g["face_px"] > 150 and abs(g["yaw"]) < 15
    assert g["distance_to_identity"] < 0.2
    assert faces["src-grace_dominant-face0"]["n_faces_in_photo"] == 2
    # boxes are in the original photo's pixels
    assert faces["src-grace_dominant-face1"]["bbox"][0] > 512
    # the ambiguous person has no identity to measure distances to
    assert faces["src-mixed_grace-face0"]["distance_to_identity"] is None


def test_people_thresholds(main_ws):
    ws, recipe, _ = main_ws
    people = rows_by_id(ws, "people")
    assert list(people) == ["eileen", "ghost", "grace", "mixed"]
    cap, far = DEFAULTS["threshold_cap"], DEFAULTS["target_far"]
    for pid in ("grace", "eileen"):
        p = people[pid]
        assert 0.3 < p["threshold"] <= cap + 1e-6
        assert p["est_far"] is not None and p["est_far"] <= far * 1.0001
        assert p["est_frr"] is not None and p["threshold_method"].startswith("normal_fit:")
    g = people["grace"]
    assert (g["n_faces"], g["n_kept"], g["n_bootstrapped"]) == (10, 4, 0)
    assert g["source_ids"] == ["src-grace", "src-grace_crop", "src-grace_dominant",
                               "src-grace_flip"]
    assert g["n_genuine_pairs"] == 6
    # impostors: 3 kept faces of eileen, bundled astronaut and cameraman (bundled Grace is Grace)
    assert g["n_impostor_pairs"] == 4 * (3 + 2)
    e = people["eileen"]
    assert e["n_impostor_pairs"] == 3 * (4 + 2)  # grace's 4, bundled Grace and cameraman
    for pid in ("ghost", "mixed"):
        p = people[pid]
        assert p["threshold"] is None and p["n_kept"] == 0 and p["est_far"] is None


def test_manifests_validate(main_ws):
    from dsbuilder.manifest.qa import validate

    problems, counts = validate(main_ws[0])
    assert problems == [] and counts["faces_dictionary"] == 15 and counts["people"] == 4


def test_rerun_is_cached_and_byte_identical(main_ws):
    ws, recipe, _ = main_ws
    before = manifest_bytes(ws)
    again = dictionary.run(recipe, ws, progress=False)
    # the broken photo's record is cached (a decode error is a property of the content)
    assert again.computed == 0 and again.cached == 15
    assert manifest_bytes(ws) == before


def test_decision_params_reuse_the_analysis(main_ws, tmp_path):
    """Changing a decision threshold re-decides from the cache; nothing is re-detected."""
    ws, recipe, _ = main_ws
    copy = Workspace.open(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root, dirs_exist_ok=True)
    strict = make_recipe(copy, [(p.id, p.name) for p in recipe.people], min_sharpness=10.0,
                         min_face_px=40, purification="agglomerative")
    res = dictionary.run(strict, copy, progress=False)
    assert res.computed == 0
    faces = rows_by_id(copy, "faces_dictionary")
    assert faces["src-grace_blur-face0"]["kept"] and faces["src-grace_tiny-face0"]["kept"]
    assert faces["src-astro-grace-face0"]["reason"] == "identity_outlier"


def test_bootstrap_from_video(photos, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    video = tmp_path / "grace.mp4"
    g = synth.grace_hopper()
    synth.write_video(video, [synth.Shot(g, 60, zoom=1.05), synth.Shot(synth.texture(5), 30)],
                      fps=25.0, size=(360, 320), audio=None)
    rows = [add_source(ws, photos["grace"], "src-grace", ["grace"]),
            add_source(ws, photos["astro"], "src-astro", ["eileen"]),
            add_source(ws, video, "src-video", ["grace", "eileen"], kind="video", duration=3.6)]
    write_table(ws, "sources", rows, "h")
    recipe = make_recipe(ws, [("grace", "Grace Hopper"), ("eileen", "Eileen Collins")])
    res = dictionary.run(recipe, ws, progress=False)
    assert res.computed == 3  # two photos, one video (sampled once for both people)
    faces = rows_by_id(ws, "faces_dictionary")
    boot = {k: r for k, r in faces.items() if r["origin"] == "video_bootstrap"}
    # 1 frame per second over 3.6 s: t = 0, 1, 2 show Grace, t = 3 the texture
    assert sorted(boot) == ["src-video-t0-face0", "src-video-t25-face0", "src-video-t50-face0"]
    for r in boot.values():
        assert r["person_id"] == "grace" and r["source_id"] == "src-video" and r["kept"]
        assert r["distance_to_identity"] <= DEFAULTS["bootstrap_max_distance"]
    assert [boot[k]["t"] for k in sorted(boot)] == pytest.approx([0.0, 1.0, 2.0])
    people = rows_by_id(ws, "people")
    assert (people["grace"]["n_kept"], people["grace"]["n_bootstrapped"]) == (4, 3)
    assert people["grace"]["source_ids"] == ["src-grace", "src-video"]
    # genuine pairs only across sources: the photo against each of the three frames
    assert people["grace"]["n_genuine_pairs"] == 3
    assert people["eileen"]["n_bootstrapped"] == 0  # Grace's frames are not Eileen's
    before = manifest_bytes(ws)
    again = dictionary.run(recipe, ws, progress=False)
    assert again.computed == 0 and manifest_bytes(ws) == before
    # bootstrap off: only the photo
    off = dictionary.run(make_recipe(ws, [("grace", "G"), ("eileen", "E")], bootstrap=False), ws,
                         progress=False)
    assert off.computed == 0
    assert rows_by_id(ws, "people")["grace"]["n_bootstrapped"] == 0


def test_missing_sources_and_file(tmp_path, photos):
    ws = Workspace.open(tmp_path / "ws")
    recipe = make_recipe(ws, [("grace", "Grace Hopper")])
    res = dictionary.run(recipe, ws, progress=False)  # no sources table at all
    assert rows_by_id(ws, "people")["grace"]["threshold"] is None
    assert [r.reason for r in res.rejections] == ["no_kept_face"]
    row = add_source(ws, photos["grace"], "src-gone", ["grace"])
    ws.abspath(row["local_path"]).unlink()
    write_table(ws, "sources", [row], "h")
    res = dictionary.run(recipe, ws, progress=False)
    assert {r.reason for r in res.rejections} == {"decode_error", "no_kept_face"}
    # an unreadable file is not cached: it may be back next run
    assert dictionary.run(recipe, ws, progress=False).computed == 1


# --- library functions ----------------------------------------------------------------------------

def test_load_photo_errors(photos, tmp_path):
    with pytest.raises(PhotoError) as exc:
        load_photo(photos["broken"])
    assert exc.value.reason == "decode_error"
    with pytest.raises(FileNotFoundError):
        load_photo(tmp_path / "nope.jpg")
    assert load_photo(photos["grace"]).shape == (600, 512, 3)
    # a phone photo stored on its side with an EXIF orientation is read upright
    from PIL import Image

    g = synth.grace_hopper()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(np.ascontiguousarray(np.rot90(g))).save(tmp_path / "side.jpg", exif=exif,
                                                            quality=95)
    upright = load_photo(tmp_path / "side.jpg")
    assert upright.shape == g.shape
    assert np.abs(upright.astype(int) - g).mean() < 5


def test_analyse_photo_downscales_and_maps_boxes_back():
    g = synth.grace_hopper()
    big = cv2.resize(g, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)  # 1200 x 1024
    small = analyse_photo(big, {"max_side_px": 600})
    full = analyse_photo(g)
    assert len(small) == len(full) == 1
    # same face, at twice the coordinates
    assert np.allclose(np.array(small[0].box) / 2, full[0].box, atol=12)
    assert float(api.distance(small[0].embedding, full[0].embedding)[0, 0]) < 0.15
    rec = small[0].record()
    back = FaceCandidate.from_record(rec)
    assert back.record() == rec and np.array_equal(back.embedding, small[0].embedding)


def cand(index: int, side: int, *, yaw: float = 0.0, sharp: float = 100.0, n: int = 1,
         x: int = 0) -> FaceCandidate:
    return FaceCandidate(index=index, box=(x, 0, x + side, side), score=1.0,
                         landmarks=np.zeros((68, 2), np.float32),
                         embedding=np.zeros(128, np.float32), sharpness=sharp, yaw=yaw, pitch=0.0,
                         n_faces=n)


def test_choose_face_rules():
    assert choose_face([]).reason == "no_face"
    # dominance: 100 px vs 60 px is an area ratio of 2.78 >= 2.5
    d = choose_face([cand(0, 100, n=2), cand(1, 60, n=2, x=200)])
    assert d.chosen == 0 and d.usable.index == 0
    assert [(v.index, v.reason) for v in d.faces] == [(0, None), (1, "many_faces")]
    d = choose_face([cand(0, 100, n=2), cand(1, 70, n=2, x=200)])  # ratio 2.04
    assert d.chosen is None and d.reason == "many_faces" and d.usable is None
    assert choose_face([cand(0, 100, yaw=-50)]).reason == "extreme_pose"
    assert "|yaw| 50.0 deg > max_yaw_deg 45" in choose_face([cand(0, 100, yaw=-50)]).detail
    # order of the checks: too small before blurry before pose
    assert choose_face([cand(0, 40, sharp=1, yaw=80)]).reason == "too_small"
    assert choose_face([cand(0, 100, sharp=1, yaw=80)]).reason == "blurry"
    assert choose_face([cand(0, 100, yaw=80)], {"max_yaw_deg": 90}).usable is not None


def clusters(rng, centres: list[np.ndarray], sizes: list[int], spread: float = 0.15) -> np.ndarray:
    """Points around each centre with pairwise distances of about ``spread``."""
    pts = [c + rng.normal(0, spread / np.sqrt(2 * 128), (n, 128)) for c, n in zip(centres, sizes)]
    return np.concatenate(pts)


@pytest.mark.parametrize("method", ["chinese_whispers", "agglomerative"])
def test_purify_keeps_the_dominant_identity(method):
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(0, 1 / np.sqrt(128), 128) * 0.8 for _ in range(3))  # ~0.8 apart
    params = {"purification": method, "cluster_distance": 0.5}
    emb = clusters(rng, [a, b], [5, 2])
    kept, dist = purify(emb, params)
    assert kept.tolist() == [True] * 5 + [False] * 2
    assert (dist[:5] < 0.2).all() and (dist[5:] > 0.6).all()
    # interleaved input: the same faces are kept
    order = np.array([5, 0, 1, 6, 2, 3, 4])
    assert purify(emb[order], params).kept.tolist() == [i < 5 for i in order]
    # a tie for the largest identity keeps nothing
    tie = purify(clusters(rng, [a, b, c], [2, 2, 1]), params)
    assert tie.ambiguous and not tie.kept.any() and np.isnan(tie.distances).all()
    assert tie.sizes == (2, 2, 1)
    two = purify(clusters(rng, [a, b], [1, 1]), params)  # two photos, two people: which one?
    assert two.ambiguous and not two.kept.any()
    assert purify(clusters(rng, [a], [2]), params).kept.all()  # two photos, one person
    one = purify(clusters(rng, [a], [1]), params)
    assert one.kept.tolist() == [True] and one.distances[0] == pytest.approx(0.0, abs=1e-9)
    assert len(purify(np.zeros((0, 128)), params).kept) == 0
    assert purify(emb, {"purification": "none"}).kept.all()


def test_fit_threshold():
    rng = np.random.default_rng(1)
    genuine = rng.normal(0.35, 0.05, 30)
    far_away = rng.normal(0.85, 0.06, 200)
    fit = fit_threshold(genuine, far_away, cap=0.6, target_far=0.001)
    assert fit.threshold == pytest.approx(0.6) and fit.threshold_method == "normal_fit:cap"
    assert fit.est_far < 1e-4 and fit.est_frr < 1e-3
    assert (fit.n_genuine_pairs, fit.n_impostor_pairs) == (30, 200)
    # close impostors: the normal fit sets the threshold at its 0.1 % quantile
    close = rng.normal(0.7, 0.07, 200)
    fit = fit_threshold(genuine, close, cap=0.6, target_far=0.001)
    mu, sd = close.mean(), close.std(ddof=1)
    assert sd > SIGMA_FLOOR
    assert fit.threshold_method == "normal_fit:target_far"
    assert fit.threshold == pytest.approx(mu - 3.0902 * sd, abs=0.002)
    assert fit.threshold < mu - 3.0902 * sd + 1e-9  # rounded down: FAR stays within target
    assert 0.0009 < fit.est_far <= 0.001
    # an observed impostor closer than the fit allows: stay below it
    fit = fit_threshold(genuine, np.r_[far_away[:50], 0.3], cap=0.6, target_far=0.001)
    assert fit.limited_by == "observed_impostor" and fit.threshold < 0.3
    assert fit.est_far <= 0.001 and fit.est_frr > 0.5
    # few impostor pairs: the standard deviation is floored
    fit = fit_threshold([0.3], [0.8, 0.8, 0.8], cap=1.0, target_far=0.001)
    assert fit.impostor_sigma == SIGMA_FLOOR
    assert fit.threshold == pytest.approx(0.8 - 3.0902 * SIGMA_FLOOR, abs=0.002)
    # nothing to estimate from
    fit = fit_threshold([], [], cap=0.6, target_far=0.001)
    assert (fit.threshold, fit.threshold_method, fit.est_far, fit.est_frr) == \
        (0.6, "cap_only:no_impostors", None, None)


def test_bundled_impostors_are_three_distinct_faces():
    embs = {f.name: bundled_embedding(f.name, 1) for f in BUNDLED}
    assert all(e is not None for e in embs.values()), embs
    e = np.array(list(embs.values()))
    d = api.distance(e, e)
    assert (d[np.triu_indices(3, 1)] > 0.6).all()  # three different people


# --- real photos ----------------------------------------------------------------------------------

PEOPLE_FILES = {
    "obama": ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama_small.jpg", "biden.jpg",
              "biden2.jpg", "two_people.jpg", "obama_and_biden.jpg"],
    "kit": ["kit_harington_john1.jpeg", "kit_harington_john2.jpeg"],
    "rose": ["rose_leslie_img1.jpg", "rose_leslie_img2.jpg"],
}


def sid(name: str) -> str:
    return "src-" + Path(name).stem.replace("_", "-").lower()


@pytest.fixture(scope="module")
def real_ws(tmp_path_factory) -> Workspace:
    if not SHARED_PEOPLE.is_dir():
        pytest.skip(f"real media not found at {SHARED_PEOPLE} (a checkout without ../shared)")
    ws = Workspace.open(tmp_path_factory.mktemp("dict-real"))
    rows = [add_source(ws, SHARED_PEOPLE / f, sid(f), [pid])
            for pid, files in PEOPLE_FILES.items() for f in files]
    write_table(ws, "sources", rows, "h")
    recipe = make_recipe(ws, [("obama", "Barack Obama"), ("kit", "Kit Harington"),
                              ("rose", "Rose Leslie")])
    dictionary.run(recipe, ws, progress=False)
    return ws


@pytest.mark.realmedia
def test_real_purification_rejects_exactly_the_biden_photos(real_ws):
    faces = rows_by_id(real_ws, "faces_dictionary")
    outliers = sorted(k for k, r in faces.items() if r["reason"] == "identity_outlier")
    assert outliers == ["src-biden-face0", "src-biden2-face0"]
    kept = sorted(k for k, r in faces.items() if r["kept"] and r["person_id"] == "obama")
    assert kept == ["src-obama-face0", "src-obama-small-face0", "src-obama2-face0",
                    "src-obama3-face0"]
    for k in outliers:
        assert faces[k]["distance_to_identity"] > 0.6


@pytest.mark.realmedia
def test_real_group_photos_are_many_faces(real_ws):
    """Documented behaviour: two similar-sized faces are ``many_faces`` (no face is taken); the child
    in obama_and_biden.jpg scores below min_det_score (0.24) and is not a face at all."""
    faces = rows_by_id(real_ws, "faces_dictionary")
    rej = rejections(real_ws)
    for photo, n in (("two-people", 2), ("obama-and-biden", 2)):
        ids = [f"src-{photo}-face{k}" for k in range(n)]
        assert [faces[i]["reason"] for i in ids] == ["many_faces"] * n
        assert all(faces[i]["n_faces_in_photo"] == n for i in ids)
        assert all(rej[f"{i}@obama"][0] == "many_faces" for i in ids)
    # each face is measured anyway: one of each group photo is Obama (close to his identity)
    for photo in ("two-people", "obama-and-biden"):
        d = sorted(faces[f"src-{photo}-face{k}"]["distance_to_identity"] for k in range(2))
        assert d[0] < 0.45 < 0.6 < d[1]


@pytest.mark.realmedia
def test_real_two_people_thresholds_separate_them(real_ws):
    faces = read_table(real_ws, "faces_dictionary").to_pylist()
    people = rows_by_id(real_ws, "people")
    cap = DEFAULTS["threshold_cap"]
    emb = {pid: [(f["face_id"], np.array(f["embedding"])) for f in faces
                 if f["person_id"] == pid and f["kept"]] for pid in ("kit", "rose", "obama")}
    assert len(emb["kit"]) == 2 and len(emb["rose"]) == 2
    for pid, other in (("kit", "rose"), ("rose", "kit")):
        p = people[pid]
        assert p["threshold"] is not None and 0.45 <= p["threshold"] <= cap + 1e-6
        assert p["est_far"] <= DEFAULTS["target_far"] and p["n_genuine_pairs"] == 1
        # impostors: rose's 2 (or kit's) + obama's 4 + the 3 bundled faces, per kept face
        assert p["n_impostor_pairs"] == 2 * (2 + 4 + 3)
        for face_id, e in emb[pid]:
            own = [x for fid, x in emb[pid] if fid != face_id]  # leave the photo itself out
            d_own = float(api.distance(e, np.stack(own)).min())
            d_other = float(api.distance(e, np.stack([x for _, x in emb[other]])).min())
            assert d_own <= p["threshold"] < d_other
            assert d_other > people[other]["threshold"]


@pytest.mark.realmedia
def test_real_pose_and_low_resolution(shared_media):
    """The 45-degree photo of the expression set: its yaw estimate, and the decision at defaults."""
    img = load_photo(shared_media / "expressions" / "45-m7-di-ph.jpg")
    faces = analyse_photo(img)
    assert len(faces) == 1
    assert 25 < abs(faces[0].yaw) < 70
    assert choose_face(faces, {"max_yaw_deg": 20}).reason == "extreme_pose"
    small = analyse_photo(load_photo(SHARED_PEOPLE / "obama_small.jpg"))
    assert len(small) == 1 and small[0].face_px > DEFAULTS["min_face_px"]


# --- linking distance, ties decided by video, people lost (issue 11) ----------------------------------

def test_default_links_two_genuine_photos_half_a_unit_apart():
    """dlib's same-person threshold is 0.6: two photos of one person 0.55 apart (crying, laughing)
    are one identity at the default cluster_distance, and both are kept."""
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 128)
    a *= 0.3 / np.linalg.norm(a)
    step = rng.normal(0, 1, 128)
    step *= 0.55 / np.linalg.norm(step)
    pur = purify(np.stack([a, a + step]), {"purification": DEFAULTS["purification"]})
    assert DEFAULTS["cluster_distance"] == 0.6
    assert not pur.ambiguous and pur.kept.all()


def test_video_votes_decide_a_tie():
    from dsbuilder.face.identity import decide_by_votes, keep_cluster, video_votes

    rng = np.random.default_rng(2)
    a, b, other = (rng.normal(0, 1 / np.sqrt(128), 128) for _ in range(3))
    emb = np.stack([a, b])  # two photos, two people, about 1.4 apart: a tie
    pur = purify(emb, DEFAULTS)
    assert pur.ambiguous

    def near(x):
        return x + rng.normal(0, 0.01, 128)

    # 5 frames show a, 1 shows b, 2 show a third person whom another recipe person matches
    frames = [[near(a)]] * 5 + [[near(b)]] + [[near(other)]] * 2
    votes = video_votes(emb, pur, frames, others=[])
    assert votes == {0: 5, 1: 1}
    assert decide_by_votes(votes) == 0
    kept = keep_cluster(emb, pur, 0)
    assert kept.kept.tolist() == [True, False] and not kept.ambiguous
    # faces nearer to another recipe person's mean do not vote
    assert video_votes(emb, pur, frames, others=[a])[0] == 0
    # no clear winner: no decision
    assert decide_by_votes({0: 2, 1: 2}) is None and decide_by_votes({0: 1, 1: 0}) is None


@pytest.mark.realmedia
def test_real_tie_decided_by_the_persons_video_and_a_lost_person_fails_the_run(shared_media,
                                                                                  tmp_path):
    """Lin's recipe entry holds his photo and, by mistake, Alex Lacamoire's: one face each, a tie.
    His video (the Hamilton clip) shows him, so his photo is kept and Alex's is the outlier. "ghost"
    holds one photo of Obama and one of Biden and no video: nothing can be decided, nothing is kept,
    and the run says so with exit status 3."""
    from tests.conftest import run_cli

    people = shared_media / "people"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: ties\npeople:\n"
        f"  - id: lin\n    photos: [{people / 'lin-manuel-miranda.png'}, "
        f"{people / 'alex-lacamoire.png'}]\n"
        f"    videos: [{shared_media / 'video' / 'short_hamilton_clip.mp4'}]\n"
        f"  - id: ghost\n    photos: [{people / 'obama.jpg'}, {people / 'biden.jpg'}]\n")
    r = run_cli("run", str(recipe), "--workspace", str(tmp_path / "ws"), "--until", "dictionary",
                "--no-progress")
    assert r.returncode == 3, r.stderr
    assert "ghost" in r.stderr and "no kept reference face" in r.stderr and "hint:" in r.stderr
    assert "Manifests:" in r.stdout  # the summary came first
    ws = Workspace.open(tmp_path / "ws")
    faces = read_table(ws, "faces_dictionary").to_pylist()
    lin = {f["face_id"]: f for f in faces if f["person_id"] == "lin" and f["origin"] == "photo"}
    kept = [f for f in lin.values() if f["kept"]]
    out = [f for f in lin.values() if f["reason"] == "identity_outlier"]
    assert len(kept) == 1 and len(out) == 1
    lin_emb = np.array(kept[0]["embedding"])
    alex_emb = analyse_photo(load_photo(people / "alex-lacamoire.png"), DEFAULTS)[0].embedding
    assert np.linalg.norm(np.array(out[0]["embedding"]) - alex_emb) < 1e-4
    assert np.linalg.norm(lin_emb - alex_emb) > 0.6
    detail = rejections(ws)[f"{out[0]['face_id']}@lin"][1]
    assert "video evidence" in detail
    assert rows_by_id(ws, "people")["ghost"]["n_kept"] == 0
    ghost = [d for k, (reason, d) in rejections(ws).items() if k.endswith("@ghost")
             and reason == "identity_outlier"]
    assert ghost and all("no video of this person" in d for d in ghost)
