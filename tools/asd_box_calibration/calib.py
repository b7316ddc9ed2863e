"""Calibrate a dlib-68-landmark -> WIDER-FACE-style box rule against MTCNN (facenet-pytorch ONet boxes).

The result is dsbuilder.speaker.asd.BOX_RULE (Light-ASD was trained on crops around S3FD boxes; S3FD
and MTCNN were both trained on WIDER FACE). Rerun:

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fnp-wheel
    unzip -q /tmp/fnp-wheel/facenet_pytorch-2.6.0-*.whl -d /tmp/calib/fnp
    FACENET_PYTORCH_DIR=/tmp/calib/fnp .venv/bin/python tools/asd_box_calibration/calib.py

``shim/`` is a tiny stand-in for the two torchvision functions facenet-pytorch imports
(ops.boxes.batched_nms, transforms.functional.to_tensor) in plain torch: torchvision is not
installed here. Reads the photos in ../shared/media (not in this repository).
"""
import sys, glob, os, csv, warnings
warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "shim"), os.environ.get("FACENET_PYTORCH_DIR", "/tmp/calib/fnp")]

import numpy as np
import torch
import dlib
import face_recognition_models
from PIL import Image
from facenet_pytorch import MTCNN

torch.set_grad_enabled(False)
SHARED = os.path.join(HERE, "..", "..", "..", "shared", "media")
IMGS = sorted(glob.glob(os.path.join(SHARED, "people", "*")) + glob.glob(os.path.join(SHARED, "expressions", "*.jpg")))
IMGS = [p for p in IMGS if p.lower().endswith((".jpg", ".jpeg", ".png"))]

mtcnn = MTCNN(keep_all=True, min_face_size=20, device="cpu")   # default thresholds [0.6,0.7,0.7]
hog = dlib.get_frontal_face_detector()
sp = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0])); iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


rows = []
for path in IMGS:
    pil = Image.open(path).convert("RGB")
    rgb = np.asarray(pil)
    mboxes, mprobs, mpts = mtcnn.detect(pil, landmarks=True)
    if mboxes is None:
        mboxes, mprobs, mpts = np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    dets = hog(rgb, 1)                      # upsample once (face_recognition default)
    used = set()
    for d in dets:
        hb = np.array([d.left(), d.top(), d.right(), d.bottom()], float)
        # match to MTCNN box with highest IoU
        best, bi = 0.0, -1
        for j, mb in enumerate(mboxes):
            if j in used or mprobs[j] < 0.9:
                continue
            v = iou(hb, mb)
            if v > best:
                best, bi = v, j
        if bi < 0 or best < 0.3:
            print(f"  unmatched dlib face in {os.path.basename(path)} (best IoU {best:.2f})")
            continue
        used.add(bi)
        mb = mboxes[bi].astype(float)
        L = np.array([[p.x, p.y] for p in sp(rgb, d).parts()], float)

        le, re = L[36:42].mean(0), L[42:48].mean(0)     # image-left eye, image-right eye
        mid = (le + re) / 2
        D = np.linalg.norm(re - le)
        th = np.arctan2(re[1] - le[1], re[0] - le[0])
        c, s = np.cos(th), np.sin(th)
        R = np.array([[c, s], [-s, c]])                  # image -> eye-aligned frame

        w, h = mb[2] - mb[0], mb[3] - mb[1]
        bc = np.array([(mb[0] + mb[2]) / 2, (mb[1] + mb[3]) / 2])
        dx, dy = R @ (bc - mid)

        # MTCNN's own 5-point eyes, for a sanity check of D
        mD = np.linalg.norm(mpts[bi][1] - mpts[bi][0])
        # eye-midpoint -> mouth-centre distance (less sensitive to yaw than D)
        EM = np.linalg.norm(L[48:68].mean(0) - mid)

        lm_l, lm_t = L.min(0); lm_r, lm_b = L.max(0)
        jaw_w = np.linalg.norm(L[16] - L[0])
        hw, hh = hb[2] - hb[0], hb[3] - hb[1]
        hc = np.array([(hb[0] + hb[2]) / 2, (hb[1] + hb[3]) / 2])
        hdx, hdy = R @ (hc - mid)

        rows.append(dict(
            img=os.path.basename(path), D=D, roll=np.degrees(th), iou=best, prob=mprobs[bi],
            w_D=w / D, h_D=h / D, dx=dx / D, dy=dy / D, s_D=max(w, h) / 2 / D,
            top_vs_lmtop=(mb[1] - lm_t) / D,          # + = box top below brow-top landmark
            bot_vs_chin=(mb[3] - L[8, 1]) / D,        # + = box bottom below chin landmark 8
            w_vs_jaw=w / jaw_w,                       # box width / |p16 - p0|
            w_vs_lmw=w / (lm_r - lm_l), h_vs_lmh=h / (lm_b - lm_t),
            left_vs_lml=(mb[0] - lm_l) / D, right_vs_lmr=(mb[2] - lm_r) / D,
            mD_D=mD / D, EM_D=EM / D, s_EM=max(w, h) / 2 / EM, dy_EM=dy / EM,
            hog_w_ratio=hw / w, hog_h_ratio=hh / h, hog_s_ratio=max(hw, hh) / max(w, h),
            hog_dx=hdx / D, hog_dy=hdy / D, hog_s_D=max(hw, hh) / 2 / D,
        ))

keys = [k for k in rows[0] if k != "img"]
with open("/tmp/calib/per_face.csv", "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=["img"] + keys); wr.writeheader(); wr.writerows(rows)

show = ["D", "roll", "iou", "w_D", "h_D", "dx", "dy", "s_D", "top_vs_lmtop", "bot_vs_chin", "w_vs_jaw",
        "mD_D", "hog_s_ratio"]
print(f"{'img':26s}" + "".join(f"{k[:11]:>12s}" for k in show))
for r in rows:
    print(f"{r['img'][:26]:26s}" + "".join(f"{r[k]:12.3f}" for k in show))
print(f"\nN faces = {len(rows)}")
print(f"{'quantity':16s}{'median':>9s}{'mean':>9s}{'std':>8s}{'IQR':>17s}{'min':>8s}{'max':>8s}")
for k in keys:
    v = np.array([r[k] for r in rows])
    q1, q3 = np.percentile(v, [25, 75])
    print(f"{k:16s}{np.median(v):9.3f}{v.mean():9.3f}{v.std():8.3f}   [{q1:6.3f},{q3:6.3f}]{v.min():8.3f}{v.max():8.3f}")

# robustness: drop faces with |dx| > 0.5 (strong yaw / partial face -> foreshortened D or bad landmarks)
keep = [r for r in rows if abs(r["dx"]) <= 0.5]
print(f"\nAfter dropping {len(rows)-len(keep)} faces with |dx|>0.5: N = {len(keep)}")
for k in ["w_D", "h_D", "dx", "dy", "s_D", "top_vs_lmtop", "bot_vs_chin", "w_vs_jaw", "hog_s_ratio", "EM_D", "s_EM"]:
    v = np.array([r[k] for r in keep]); q1, q3 = np.percentile(v, [25, 75])
    print(f"{k:16s}{np.median(v):9.3f}{v.mean():9.3f}{v.std():8.3f}   [{q1:6.3f},{q3:6.3f}]")
