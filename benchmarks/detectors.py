"""Compare BlazeFace (short/full range) with dlib HOG on the shared media, time
them, and calibrate a BlazeFace-box -> dlib-HOG-box mapping for dlib's 68-point
shape predictor.  Run:  .venv/bin/python benchmarks/detectors.py [--timing-only]
(needs ../shared/media; the figures are in benchmarks/RESULTS.md, "faces: BlazeFace").

Ground truth is hand-made (see GT_* below): I looked at every image and at
the video frames with all detectors' boxes drawn (exploration scripts in this
directory).  Video reference boxes follow each face from a manual seed box
using a chosen detector's boxes (held through gaps), and are used only to
decide IoU >= 0.3 matches.  Writes detectors.json to the temporary folder.
"""
import glob
import json
import os
import statistics
import sys
import time

import av
import cv2
import dlib
import face_recognition_models
import numpy as np

from dsbuilder.face.blazeface import BlazeFace  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MEDIA = os.path.join(HERE, "..", "..", "shared", "media")
VIDEO = f"{MEDIA}/video/short_hamilton_clip.mp4"
IOU_MATCH = 0.3
METHODS = ["hog0", "hog1", "short", "full", "full+short", "short_aa", "full_aa"]

# ---- ground truth -----------------------------------------------------------
# Images: every face is found by dlib HOG (upsample 1) with no false
# positives (checked by eye), so HOG-up1 boxes serve as image GT boxes.
# Category per image (default "frontal"):
GT_IMAGE_CATEGORY = {
    "45-m7-di-ph.jpg": "turned",           # ~30-40 deg yaw
    "obama_partial_face.jpg": "turned",    # face cut by the image edge
    "obama_and_biden.jpg": "several",      # 3 faces, one a child looking down
    "two_people.jpg": "several",
}
# Video: (name, category, t0, t1, reference method or None, seed box).
# Reference box per frame = that method's detection with best IoU against the
# previous reference box (>= 0.3), else the previous box is held.
GT_VIDEO = [
    ("lin_wide", "small", 0.80, 1.50, "full", (519, 54, 561, 96)),
    ("lacamoire_piano", "small", 0.80, 1.50, None, None),  # manual keyframes
    ("lacamoire_profile", "profile", 1.50, 2.47, "short", (418, 22, 630, 234)),
    ("lin_close", "frontal", 3.58, 7.88, "full", (133, 62, 230, 159)),
    ("audience_topleft", "small", 7.88, 10.1, "full", (31, 71, 96, 137)),
    ("audience_left_woman", "several", 7.88, 10.1, "full", (152, 101, 221, 170)),
    ("michelle", "several", 7.88, 10.1, "full", (366, 102, 429, 165)),
    ("barack", "several", 7.88, 10.1, "full", (311, 59, 373, 120)),
]
# Lacamoire's ~24 px face at the piano: nobody detects it; boxes read off
# enlarged frames, interpolated between the keyframes.
PIANO_KEYS = [(0.99, (54, 186, 78, 214)), (1.45, (51, 182, 75, 211))]
# Out-of-focus audience faces behind Lacamoire (1.5-3.6 s, hand-held camera
# pans): real faces, but not in GT; a detection lying at least half inside one
# of these regions is ignored (neither TP nor FP).
IGNORE_VIDEO = [((1.50, 3.58), (140, 50, 265, 160)),
                ((2.40, 3.20), (435, 140, 530, 240)),
                ((2.50, 2.60), (397, 164, 455, 222))]
# 2.48-3.58 s: Lacamoire's face leaves the frame (only nose/chin/ear show);
# not GT, so boxes on those fragments count as false positives.


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def inside_frac(d, region):
    """Fraction of box d's area that lies inside region."""
    ix = max(0.0, min(d[2], region[2]) - max(d[0], region[0]))
    iy = max(0.0, min(d[3], region[3]) - max(d[1], region[1]))
    return ix * iy / max(1e-9, (d[2] - d[0]) * (d[3] - d[1]))


def match(gt, dets, thr=IOU_MATCH):
    """Greedy IoU matching; returns list of (gt_index, det_index)."""
    pairs = sorted(((iou(g, d), i, j) for i, g in enumerate(gt)
                    for j, d in enumerate(dets)), reverse=True)
    used_g, used_d, out = set(), set(), []
    for v, i, j in pairs:
        if v < thr:
            break
        if i not in used_g and j not in used_d:
            used_g.add(i); used_d.add(j); out.append((i, j))
    return out


# ---- detectors --------------------------------------------------------------
HOG = dlib.get_frontal_face_detector()
BLAZE = {m: BlazeFace(m.split("_")[0], threads=1, antialias=m.endswith("_aa"))
         for m in ["short", "full", "short_aa", "full_aa"]}


def run_hog(rgb, up):
    return [(r.left(), r.top(), r.right() + 1, r.bottom() + 1) for r in HOG(rgb, up)]


def full_plus_short(full, short):
    """Full-range detections, plus short-range ones that neither overlap a
    full-range box (IoU > 0.3) nor contain one (a loose/merged short box)."""
    extra = [s for s in short if not any(
        iou(s.box, f.box) > 0.3 or inside_frac(f.box, s.box) >= 0.5 for f in full)]
    return list(full) + extra


def run_all(rgb, min_score=0.5, hog=True):
    out = {"hog0": run_hog(rgb, 0), "hog1": run_hog(rgb, 1)} if hog else {}
    for m, bf in BLAZE.items():
        out[m] = bf.detect(rgb, min_score=min_score)
    out["full+short"] = full_plus_short(out["full"], out["short"])
    return out


def boxes(dets):
    return [d.box if hasattr(d, "box") else d for d in dets]


def load_image(path):
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


_FRAMES = None


def video_frames():
    """All (time, rgb) frames of the Hamilton clip, decoded once."""
    global _FRAMES
    if _FRAMES is None:
        _FRAMES = [(f.time, f.to_ndarray(format="rgb24"))
                   for f in av.open(VIDEO).decode(video=0)]
    return _FRAMES


# ---- 1. detection comparison ------------------------------------------------
def evaluate_detection():
    rows = []          # (source, category, method, found(bool)) per GT face
    fps = {m: {"images": 0, "video": 0} for m in METHODS}
    n_dets = {m: {"images": 0, "video": 0} for m in METHODS}
    pairs = []         # (rgb-id, hog box, blaze box per model) for calibration
    per_image, per_segment, image_gt = {}, {}, []
    kp_order = {"short": [0, 0], "full": [0, 0]}
    images = sorted(glob.glob(f"{MEDIA}/people/*.jpg") + glob.glob(f"{MEDIA}/people/*.png")
                    + glob.glob(f"{MEDIA}/expressions/*.jpg"))
    for path in images:
        name = os.path.basename(path)
        rgb = load_image(path)
        res = run_all(rgb)
        gt = res["hog1"]
        cat = GT_IMAGE_CATEGORY.get(name, "frontal")
        per_image[name] = {"size": rgb.shape[1::-1], "gt": len(gt),
                           **{m: len(res[m]) for m in METHODS}}
        for m in METHODS:
            mm = match(gt, boxes(res[m]))
            hit = {i for i, _ in mm}
            for i in range(len(gt)):
                rows.append(("images", "several" if cat == "several" else cat, m, i in hit))
            fps[m]["images"] += len(res[m]) - len(mm)
            n_dets[m]["images"] += len(res[m])
            per_image[name][m + "_matched"] = len(mm)
        for m in ("short", "full"):
            for d in res[m]:
                kp_order[m][0] += d.keypoints[0, 0] < d.keypoints[1, 0]
                kp_order[m][1] += 1
        pairs.append((path, res))
        image_gt.append((path, gt))

    ref = {g[0]: (g[5] and tuple(g[5])) for g in GT_VIDEO}
    frame_results = []
    for t, rgb in video_frames():
        res = run_all(rgb)
        gt, gt_meta = [], []
        for name, cat, t0, t1, method, _ in GT_VIDEO:
            if not t0 <= t < t1:
                continue
            if method is None:    # piano keyframes
                (ta, ba), (tb, bb) = PIANO_KEYS
                a = min(max((t - ta) / (tb - ta), 0.0), 1.0)
                box = tuple((1 - a) * np.array(ba) + a * np.array(bb))
            else:
                cands = boxes(res[method])
                best = max(cands, key=lambda b: iou(b, ref[name]), default=None)
                if best is not None and iou(best, ref[name]) >= IOU_MATCH:
                    ref[name] = tuple(best)
                box = ref[name]
            gt.append(box); gt_meta.append((name, cat))
        ign = [b for (t0, t1), b in IGNORE_VIDEO if t0 <= t < t1]
        seg = ("wide 0.85-1.5" if t < 1.5 else "lacamoire 1.5-3.6" if t < 3.58
               else "lin close 3.6-7.9" if t < 7.88 else "audience 7.9-10")
        s = per_segment.setdefault(seg, {"frames": 0, **{m: {"tp": 0, "fp": 0, "ign": 0}
                                                          for m in METHODS}})
        s["frames"] += 1
        for m in METHODS:
            b = boxes(res[m])
            mm = match(gt, b)
            hit = {i for i, _ in mm}
            for i, (name, cat) in enumerate(gt_meta):
                rows.append(("video:" + name, cat, m, i in hit))
            matched_d = {j for _, j in mm}
            n_ign = sum(1 for j, d in enumerate(b) if j not in matched_d
                        and any(inside_frac(d, g) >= 0.5 for g in ign))
            fp = len(b) - len(mm) - n_ign
            fps[m]["video"] += fp
            n_dets[m]["video"] += len(b) - n_ign
            s[m]["tp"] += len(mm); s[m]["fp"] += fp; s[m]["ign"] += n_ign
        frame_results.append((t, gt, res))
    return (rows, fps, n_dets, per_image, per_segment, pairs, frame_results,
            kp_order, image_gt)


def threshold_sweep(frame_results, image_gt, thresholds=(0.5, 0.6, 0.7)):
    """Recall and false positives of the BlazeFace variants vs min_score
    (same GT as above)."""
    out = {}
    for thr in thresholds:
        tot = {m: [0, 0, 0] for m in ("short", "full", "full+short")}  # tp, gt, fp
        items = [(load_image(p), gt, []) for p, gt in image_gt]
        items += [(rgb, gt, [b for (t0, t1), b in IGNORE_VIDEO if t0 <= t < t1])
                  for (t, rgb), (_, gt, _) in zip(video_frames(), frame_results)]
        for rgb, gt, ign in items:
            res = run_all(rgb, thr, hog=False)
            for m in tot:
                b = boxes(res[m]); mm = match(gt, b); md = {j for _, j in mm}
                fp = sum(1 for j, d in enumerate(b) if j not in md
                         and not any(inside_frac(d, g) >= 0.5 for g in ign))
                tot[m][0] += len(mm); tot[m][1] += len(gt); tot[m][2] += fp
        out[thr] = tot
    return out


def recall_table(rows):
    def agg(pred):
        out = {}
        for m in METHODS:
            sel = [r[3] for r in rows if r[2] == m and pred(r)]
            out[m] = (sum(sel), len(sel))
        return out
    groups = {
        "images frontal (1 face)": lambda r: r[0] == "images" and r[1] == "frontal",
        "images turned/partial": lambda r: r[0] == "images" and r[1] == "turned",
        "images several faces": lambda r: r[0] == "images" and r[1] == "several",
    }
    for name, cat, *_ in GT_VIDEO:
        groups[f"video {name} ({cat})"] = (lambda n: lambda r: r[0] == "video:" + n)(name)
    groups["ALL video faces"] = lambda r: r[0].startswith("video")
    return {g: agg(p) for g, p in groups.items()}


# ---- 2. timing --------------------------------------------------------------
def timing(frames):
    fns = {"hog0": lambda x: HOG(x, 0), "hog1": lambda x: HOG(x, 1)}
    for m, bf in BLAZE.items():
        fns[m] = bf.detect
    fns["full+short"] = lambda x: full_plus_short(BLAZE["full"].detect(x),
                                                  BLAZE["short"].detect(x))
    for m in ("short", "full"):
        bf = BLAZE[m]
        fns[m + " preprocess"] = bf.preprocess
        tensor = bf.preprocess(frames[0])[0]
        fns[m + " invoke"] = lambda x, bf=bf, tensor=tensor: bf.raw(tensor)
    out = {}
    for m, fn in fns.items():
        fn(frames[0])  # warm-up
        ts = []
        for f in frames:
            t0 = time.perf_counter(); fn(f); ts.append(1e3 * (time.perf_counter() - t0))
        out[m] = round(statistics.median(ts), 2)
    return out


# ---- 3. box mapping for the dlib shape predictor ---------------------------
SP = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())


def to_rect(b):
    return dlib.rectangle(int(round(b[0])), int(round(b[1])),
                          int(round(b[2])) - 1, int(round(b[3])) - 1)


def shape(rgb, b):
    s = SP(rgb, to_rect(b))
    return np.array([(p.x, p.y) for p in s.parts()], float)


def box_params(b):
    """centre x, centre y, size (mean of width and height)"""
    w, h = b[2] - b[0], b[3] - b[1]
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (w + h) / 2


def fit_mapping(samples):
    """samples: (hog_box, blaze_box) pairs.  Median centre offset in units of
    the BlazeFace box size, and median size ratio HOG/BlazeFace."""
    dx, dy, sc = [], [], []
    for hb, bb in samples:
        hx, hy, hs = box_params(hb)
        bx, by, bs = box_params(bb)
        dx.append((hx - bx) / bs); dy.append((hy - by) / bs); sc.append(hs / bs)
    return dict(dx=round(float(np.median(dx)), 4), dy=round(float(np.median(dy)), 4),
                scale=round(float(np.median(sc)), 4), n=len(samples))


def apply_mapping(b, mp):
    """BlazeFace box -> square box in dlib-HOG convention."""
    x, y, s = box_params(b)
    x += mp["dx"] * s; y += mp["dy"] * s; half = mp["scale"] * s / 2
    return (x - half, y - half, x + half, y + half)


def landmark_error(p_ref, p):
    """mean point distance / inter-ocular distance (eye centres of p_ref)"""
    iod = np.linalg.norm(p_ref[36:42].mean(0) - p_ref[42:48].mean(0))
    return float(np.linalg.norm(p_ref - p, axis=1).mean() / iod)


def stats(v):
    v = np.asarray(v)
    return dict(median=round(float(np.median(v)), 3), mean=round(float(v.mean()), 3),
                p90=round(float(np.percentile(v, 90)), 3)) if len(v) else {}


def calibrate(pairs, frame_results, still_pairs):
    """Faces found by both HOG (upsample 0, else 1) and BlazeFace (IoU>=0.3).
    still_pairs: extra (hog, blaze) pairs from the rescaled stills, used only
    for the "stills" fit (many independent faces over 45-260 px)."""
    frames = [f for _, f in video_frames()]
    samples = {"short": [], "full": []}     # (source, rgb getter, hog, blaze)
    for path, res in pairs:
        hogb = res["hog0"] or res["hog1"]
        for m in samples:
            for i, j in match(hogb, boxes(res[m])):
                samples[m].append(("images", lambda p=path: load_image(p), hogb[i], res[m][j].box))
    for k, (t, gt, res) in enumerate(frame_results):
        hogb = res["hog0"] or res["hog1"]
        for m in samples:
            for i, j in match(hogb, boxes(res[m])):
                samples[m].append(("video", lambda k=k: frames[k], hogb[i], res[m][j].box))
    out = {}
    for m, smp in samples.items():
        mp = {src: fit_mapping([(h, b) for s, _, h, b in smp if src in ("all", s)])
              for src in ("all", "images", "video")}
        mp["stills"] = fit_mapping(still_pairs[m] + [(h, b) for s, _, h, b in smp if s == "images"])
        err = {k: {"images": [], "video": []} for k in ("plain", "mapped", "cross", "stills")}
        for src, get, hb, bb in smp:
            rgb = get()
            ref = shape(rgb, hb)
            err["plain"][src].append(landmark_error(ref, shape(rgb, bb)))
            err["mapped"][src].append(landmark_error(ref, shape(rgb, apply_mapping(bb, mp["all"]))))
            # held-out: constants fitted on the other source only
            other = mp["images" if src == "video" else "video"]
            err["cross"][src].append(landmark_error(ref, shape(rgb, apply_mapping(bb, other))))
            err["stills"][src].append(landmark_error(ref, shape(rgb, apply_mapping(bb, mp["stills"]))))
        out[m] = dict(mapping=mp, landmark_error={
            k: {**{src: stats(v[src]) for src in v}, "all": stats(v["images"] + v["video"])}
            for k, v in err.items()})
    # noise floor: landmarks from HOG upsample-0 box vs HOG upsample-1 box
    base = {"images": [], "video": []}
    items = [("images", lambda p=p: load_image(p), r) for p, r in pairs]
    items += [("video", lambda k=k: frames[k], r) for k, (_, _, r) in enumerate(frame_results)]
    for src, get, res in items:
        mm = match(res["hog0"], res["hog1"])
        if mm:
            rgb = get()
            for i, j in mm:
                base[src].append(landmark_error(shape(rgb, res["hog0"][i]), shape(rgb, res["hog1"][j])))
    out["hog0_vs_hog1"] = {**{k: stats(v) for k, v in base.items()},
                           "all": stats(base["images"] + base["video"])}
    return out


def size_sweep(image_gt, targets=(45, 60, 80, 110, 160, 250)):
    """Rescale the single-face stills so the HOG face is ~target px and fit
    the mapping per size (does the ratio depend on face size?)."""
    out, still_pairs = {}, {"short": [], "full": []}
    singles = [(p, gt[0]) for p, gt in image_gt if len(gt) == 1]
    for target in targets:
        row = {}
        smp = {"short": [], "full": []}
        for p, g in singles:
            s = target / (g[2] - g[0])
            if s > 1.5:
                continue
            img = cv2.resize(load_image(p), None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            hogb = run_hog(img, 0) or run_hog(img, 1)
            for m in smp:
                d = BLAZE[m].detect(img)
                for i, j in match(hogb, boxes(d)):
                    ref = shape(img, hogb[i])
                    smp[m].append((hogb[i], d[j].box, landmark_error(ref, shape(img, d[j].box))))
                    still_pairs[m].append((hogb[i], d[j].box))
        for m, v in smp.items():
            row[m] = dict(fit_mapping([(h, b) for h, b, _ in v]),
                          hog_px=float(np.median([h[2] - h[0] for h, _, _ in v])),
                          plain_err_median=round(float(np.median([e for *_, e in v])), 3))
        out[target] = row
    return out, still_pairs


def main():
    if "--timing-only" in sys.argv:   # quick re-run of the timing alone
        print(json.dumps(timing([f for _, f in video_frames()][::5])))
        return
    (rows, fps, n_dets, per_image, per_segment, pairs, frame_results,
     kp_order, image_gt) = evaluate_detection()
    table = recall_table(rows)
    sweep = threshold_sweep(frame_results, image_gt)
    timing_frames = [f for _, f in video_frames()][::5]
    times = timing(timing_frames)
    sizes, still_pairs = size_sweep(image_gt)
    calib = calibrate(pairs, frame_results, still_pairs)
    result = dict(recall=table, false_positives=fps, detections=n_dets,
                  per_image=per_image, per_segment=per_segment, timing_ms=times,
                  timing_frames=len(timing_frames), calibration=calib,
                  size_sweep=sizes, threshold_sweep=sweep,
                  keypoint0_left_of_keypoint1={k: [int(a), b] for k, (a, b) in kp_order.items()})
    import tempfile

    with open(os.path.join(tempfile.gettempdir(), "detectors.json"), "w") as fh:
        json.dump(result, fh, indent=1, default=float)

    w = 11
    print("recall (found/GT faces), IoU>=0.3, min_score 0.5")
    print("group".ljust(40) + "".join(m.rjust(w) for m in METHODS))
    for g, d in table.items():
        print(g.ljust(40) + "".join(f"{d[m][0]}/{d[m][1]}".rjust(w) for m in METHODS))
    print("false positives images".ljust(40) + "".join(str(fps[m]["images"]).rjust(w) for m in METHODS))
    print("false positives video".ljust(40) + "".join(str(fps[m]["video"]).rjust(w) for m in METHODS))
    print("precision (all)".ljust(40) + "".join(
        f"{1 - (fps[m]['images'] + fps[m]['video']) / max(1, n_dets[m]['images'] + n_dets[m]['video']):.3f}".rjust(w)
        for m in METHODS))
    print("\nper video segment: tp/fp (ignored background-face detections)")
    for seg, s in per_segment.items():
        print(f"{seg:18s} {s['frames']:3d} fr " + " ".join(
            f"{m}:{s[m]['tp']}/{s[m]['fp']}({s[m]['ign']})" for m in METHODS))
    print("\nper image: GT faces, detections per method (matched)")
    for n, d in per_image.items():
        print(f"{n:24s} {d['size'][0]}x{d['size'][1]} gt={d['gt']} " + " ".join(
            f"{m}={d[m]}({d[m + '_matched']})" for m in METHODS))
    print("\nmin_score sweep, all images+video: found/GT, FP")
    for thr, tot in sweep.items():
        print(f"  {thr}: " + "  ".join(f"{m} {a}/{b} fp={c}" for m, (a, b, c) in tot.items()))
    print(f"\ntiming, median ms per 640x360 frame, 1 thread ({len(timing_frames)} frames):")
    print("  " + json.dumps(times))
    print("keypoint 0 (right eye) left of keypoint 1 in image:", result["keypoint0_left_of_keypoint1"])
    print("\nbox mapping HOG<-BlazeFace (dx, dy in BlazeFace box sizes; scale = HOG/Blaze size)")
    print("  landmark noise floor, HOG up0 box vs HOG up1 box:", json.dumps(calib["hog0_vs_hog1"]))
    for m, c in calib.items():
        if m == "hog0_vs_hog1":
            continue
        for src, mp in c["mapping"].items():
            print(f"  {m:5s} fit on {src:6s}: {json.dumps(mp)}")
        for k, v in c["landmark_error"].items():
            print(f"  {m:5s} landmark error {k:6s}: " + "  ".join(f"{s}={json.dumps(x)}" for s, x in v.items()))
    print("\nsize sweep (rescaled single-face stills): target px -> fit, plain-box landmark err")
    for t, row in sizes.items():
        print(f"  {t:3d}: " + "  ".join(
            f"{m} hog={r['hog_px']:.0f}px n={r['n']} dx={r['dx']:+.3f} dy={r['dy']:+.3f} sc={r['scale']:.3f} err={r['plain_err_median']}"
            for m, r in row.items()))


if __name__ == "__main__":
    main()
