"""Pictures for report.html: a gallery of each person's kept clips with small timelines, the yield
funnel, rejections by reason, and the dictionary's reference faces.

Everything is drawn with matplotlib (Agg) or cut from files the workspace already holds, into
``report/figures/``; the page links them by relative paths, so the report folder opens from disk.
Only target clips and reference faces are drawn: a rejected non-target track has no file to draw from,
and reference faces rejected for being someone else (``identity_outlier``, ``many_faces``) are listed,
never shown.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dsbuilder.workspace import Workspace, atomic_path

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"
#: Clips shown per person in the gallery (the clips table lists them all).
GALLERY_PER_PERSON = 24
#: Reference-face reasons that may show another person: never drawn.
NOT_SHOWN = ("identity_outlier", "many_faces")
FER_COLOURS = ("#d62728", "#8c564b", "#9467bd", "#2ca02c", "#1f77b4", "#ff7f0e", "#7f7f7f")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=80)
    plt.close(fig)


def _thumb(ws: Workspace, clip: Mapping[str, Any], path: Path, size: int = 112) -> bool:
    """The clip's middle frame, ``size`` px."""
    import cv2

    from dsbuilder.media import MediaError, sample_frames

    try:
        src = ws.abspath(clip["video_path"])
        if clip.get("crop_start_s") is not None and clip.get("crop_end_s") is not None:
            mid = (float(clip["crop_start_s"]) + float(clip["crop_end_s"])) / 2  # in the track's clip
        else:
            mid = (float(clip["end_s"]) - float(clip["start_s"])) / 2
        got = next(sample_frames(src, [max(0.0, mid)], fmt="bgr24"), None)
    except (MediaError, OSError, KeyError) as exc:
        log.warning("report: no thumbnail for %s: %s", clip.get("clip_id"), exc)
        return False
    if got is None:
        return False
    img = cv2.resize(got[2], (size, size), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return bool(ok)


def _timeline(clip: Mapping[str, Any], labels: Sequence[Mapping[str, Any]],
              speaking: Sequence[Mapping[str, Any]], segments: Sequence[Mapping[str, Any]],
              path: Path) -> None:
    """FER probabilities (stacked), valence/arousal, speaking probability and HMM segments."""
    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(3.6, 2.0), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 1]})
    t0 = float(clip["start_s"])
    if labels:
        t = np.array([r["t"] for r in labels]) - t0
        p = np.array([r["fer_probs_smoothed"] or r["fer_probs"] or [0] * 7 for r in labels], float)
        axes[0].stackplot(t, p.T, colors=FER_COLOURS, linewidth=0)
        va = [(r.get("valence"), r.get("arousal")) for r in labels]
        axes[1].plot(t, [v if v is not None else np.nan for v, _ in va], color="#2ca02c", lw=1)
        axes[1].plot(t, [a if a is not None else np.nan for _, a in va], color="#d62728", lw=1)
    if speaking:
        ts = np.array([r["t"] for r in speaking]) - t0
        axes[1].plot(ts, [r["speaking_prob"] for r in speaking], color="#1f77b4", lw=1, ls="--")
    for s in segments:
        axes[2].axvspan(float(s["start_s"]) - t0, float(s["end_s"]) - t0,
                        color=plt.cm.tab10(int(s["state"]) % 10), lw=0)
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(-1.08, 1.08)  # a speaking probability of 1 stays above the frame line
    axes[2].set_yticks([])
    axes[0].set_yticks([])
    axes[1].set_yticks([])
    axes[2].set_xlim(0, max(float(clip["end_s"]) - t0, 1e-3))
    axes[2].tick_params(labelsize=6)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.98, bottom=0.15, hspace=0.08)
    _save(fig, path)


def _bars(items: Sequence[tuple[str, float]], path: Path, title: str, colour: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.3 * max(len(items), 2) + 0.6))
    names = [k for k, _ in items][::-1]
    ax.barh(names, [v for _, v in items][::-1], color=colour)
    for y, v in enumerate([v for _, v in items][::-1]):
        ax.text(v, y, f" {v:g}", va="center", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    _save(fig, path)


def _reference_faces(ws: Workspace, faces: Sequence[Mapping[str, Any]],
                     sources: Mapping[str, Mapping[str, Any]], out: Path) -> list[dict[str, Any]]:
    import cv2

    shown = []
    for f in faces:
        reason = f.get("reason")
        if reason in NOT_SHOWN or not f.get("bbox"):
            shown.append({"face_id": f["face_id"], "kept": f["kept"], "reason": reason,
                          "image": None})
            continue
        src = sources.get(f["source_id"], {})
        try:
            img = cv2.imread(str(ws.abspath(src["local_path"])))
        except (KeyError, TypeError, OSError):
            img = None
        if img is None:
            continue
        x0, y0, x1, y1 = (int(v) for v in f["bbox"])
        crop = img[max(0, y0):y1, max(0, x0):x1]
        if crop.size == 0:
            continue
        crop = cv2.resize(crop, (72, 72), interpolation=cv2.INTER_AREA)
        colour = (60, 170, 60) if f["kept"] else (40, 40, 200)
        crop = cv2.copyMakeBorder(crop, 4, 4, 4, 4, cv2.BORDER_CONSTANT, value=colour)
        name = f"ref_{f['face_id']}.jpg"
        ok, buf = cv2.imencode(".jpg", crop)
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(buf.tobytes())
        shown.append({"face_id": f["face_id"], "kept": f["kept"], "reason": reason,
                      "image": f"{FIGURES_DIR}/{name}"})
    return shown


def make_figures(ws: Workspace, report: Mapping[str, Any], clips: Sequence[Mapping[str, Any]],
                 out_dir: Path) -> dict[str, Any]:
    """Draw everything into ``out_dir/figures``; return what :func:`render_html` links, by path
    relative to ``out_dir``. Old figures not drawn this time are removed (a clip that left)."""
    from dsbuilder.manifest.io import read_table

    fig_dir = out_dir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    drawn: set[str] = set()

    def rel(name: str) -> str:
        drawn.add(name)
        return f"{FIGURES_DIR}/{name}"

    by_person: dict[str, list[Mapping[str, Any]]] = {}
    for c in sorted(clips, key=lambda c: (c["person_id"] or "", c["clip_id"])):
        by_person.setdefault(c["person_id"] or "", []).append(c)
    shown_tracks = {c["track_id"] for cs in by_person.values() for c in cs[:GALLERY_PER_PERSON]}
    labels: dict[str, list] = {}
    if shown_tracks:
        for r in read_table(ws, "labels").select(
                ["track_id", "t", "fer_probs", "fer_probs_smoothed", "valence", "arousal"]).to_pylist():
            if r["track_id"] in shown_tracks:
                labels.setdefault(r["track_id"], []).append(r)
    speaking: dict[str, list] = {}
    for r in read_table(ws, "speaking_frames").select(["track_id", "t", "speaking_prob"]).to_pylist():
        if r["track_id"] in shown_tracks:
            speaking.setdefault(r["track_id"], []).append(r)
    segments: dict[str, list] = {}
    for r in read_table(ws, "segments").to_pylist():
        if r["track_id"] in shown_tracks:
            segments.setdefault(r["track_id"], []).append(r)

    gallery: dict[str, list[dict[str, Any]]] = {}
    for person, cs in by_person.items():
        for c in cs[:GALLERY_PER_PERSON]:
            a, b = float(c["start_s"]), float(c["end_s"])
            inside = lambda r: a - 1e-6 <= float(r["t"]) < b  # noqa: E731
            thumb = f"clip_{c['clip_id']}.jpg"
            has_thumb = _thumb(ws, c, fig_dir / thumb)
            line = f"timeline_{c['clip_id']}.png"
            _timeline(c, sorted(filter(inside, labels.get(c["track_id"], [])), key=lambda r: r["t"]),
                      sorted(filter(inside, speaking.get(c["track_id"], [])), key=lambda r: r["t"]),
                      [s for s in segments.get(c["track_id"], [])
                       if float(s["end_s"]) > a and float(s["start_s"]) < b], fig_dir / line)
            gallery.setdefault(person, []).append({
                "clip_id": c["clip_id"], "thumb": rel(thumb) if has_thumb else None,
                "timeline": rel(line), "video": "../" + c["video_path"], "argmax": c["argmax"],
                "speaking": c["speaking"], "split": c["split"],
                "seconds": round(b - a, 2)})

    funnel = [("sources kept", sum(1 for s in report["sources"] if s["status"] == "ok")),
              ("shots", report["counts"]["shots"]), ("face tracks", report["counts"]["tracks"]),
              ("target tracks kept", report["counts"]["tracks_kept"]),
              ("clips", report["counts"]["clips"]),
              ("speaking clips", report["counts"]["speaking_clips"])]
    _bars(funnel, fig_dir / "funnel.png", "Yield, stage by stage", "#4c72b0")
    rej = sorted(((f"{stage}/{reason}", info["count"]) for stage, reasons in
                  report["rejections"].items() for reason, info in reasons.items()),
                 key=lambda kv: -kv[1])
    figures: dict[str, Any] = {"gallery": gallery, "funnel": rel("funnel.png"),
                               "gallery_limit": GALLERY_PER_PERSON}
    if rej:
        _bars(rej, fig_dir / "rejections.png", "Rejections by stage and reason", "#c44e52")
        figures["rejections"] = rel("rejections.png")
    sources = {s["source_id"]: s for s in read_table(ws, "sources").to_pylist()}
    refs = _reference_faces(ws, read_table(ws, "faces_dictionary").to_pylist(), sources, fig_dir)
    for r in refs:
        if r["image"]:
            drawn.add(r["image"].split("/", 1)[1])
    figures["references"] = refs
    for f in fig_dir.iterdir():  # figures of clips that are gone (a takedown, a review)
        if f.is_file() and f.name not in drawn:
            f.unlink()
    return figures
