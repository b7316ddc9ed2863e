"""A FER CNN trained on the dataset's own face crops, from the teacher's soft labels.

The student is the teacher itself (the FER2013 mini-Xception, our PyTorch port in
:mod:`dsbuilder.labels.fer`, from its weights), fine-tuned: adapted to these people, this lighting
and these cameras, and steadier over time. Its inputs are the frames the label stage labelled, cut and scaled exactly as the
teacher saw them (grey, the central ``crop_fraction`` of the aligned crop, 64 px); its targets are
the teacher's probabilities smoothed over time (``labels.fer_probs_smoothed``, ``target: smoothed``:
a frame's label borrows from its neighbours, which removes the teacher's frame-to-frame jitter) or
the raw per-frame ones (``target: frame``). Training is the distillation of
:mod:`dsbuilder.train.distil` (KL at a temperature, best epoch on val, else test). No flips: the
targets are the teacher's on the frames as they are, and the teacher is not mirror-symmetric.

At most ``max_frames_per_clip`` frames per clip (evenly spread) are used, and they are held in memory
as 64x64 bytes (4 KiB a frame).

Writes ``<workspace>/models/fer/``: ``model.pt`` (state dict), ``model.onnx`` (when the ``onnx``
package is installed: the label stage runs it with ``stages.label.fer_model: <that path>``),
``config.json``, ``metrics.json``, ``model_card.md``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from dsbuilder import __version__
from dsbuilder.train.distil import (DistilOptions, TrainingError, fit, kl, score_table, scores,
                                    write_model)
from dsbuilder.workspace import Workspace

log = logging.getLogger(__name__)

MODEL_DIR = Path("models") / "fer"


@dataclass(frozen=True)
class FerTrainConfig(DistilOptions):
    """Training options (defaults and ranges: ``TRAIN_PARAMS["fer"]`` in dsbuilder.config)."""

    TRAINER: ClassVar[str] = "fer"

    target: str
    max_frames_per_clip: int


@dataclass
class Frames:
    """Faces (n, 64, 64) uint8 and the teacher's targets (n, 7), with the clip of each face."""

    faces: np.ndarray
    targets: np.ndarray
    clip_ids: list[str]

    def __len__(self) -> int:
        return len(self.faces)


def load_frames(ws: Workspace, split: str, cfg: FerTrainConfig, crop_fraction: float) -> Frames:
    """The labelled frames of the ``split`` clips, as the teacher saw them."""
    from dsbuilder.manifest.io import read_table
    from dsbuilder.media import iter_frames
    from dsbuilder.labels.clip import crop_to_gray64

    clips = {c["clip_id"]: c for c in read_table(ws, "clips").to_pylist() if c["split"] == split}
    column = "fer_probs_smoothed" if cfg.target == "smoothed" else "fer_probs"
    by_track: dict[str, list[tuple[int, list[float]]]] = {}
    tracks = {c["track_id"] for c in clips.values()}
    if clips:
        for r in read_table(ws, "labels").select(["track_id", "crop_frame", column]).to_pylist():
            if r["track_id"] in tracks and r[column] is not None:
                by_track.setdefault(r["track_id"], []).append((r["crop_frame"], r[column]))
    by_clip = {cid: [(k, p) for k, p in by_track.get(c["track_id"], [])
                     if c["crop_start_frame"] <= k < c["crop_end_frame"]]
               for cid, c in clips.items()}
    faces, targets, ids = [], [], []
    for clip_id in sorted(k for k, v in by_clip.items() if v):
        rows = sorted(by_clip[clip_id])
        if len(rows) > cfg.max_frames_per_clip:
            pick = np.linspace(0, len(rows) - 1, cfg.max_frames_per_clip).round().astype(int)
            rows = [rows[i] for i in sorted(set(pick.tolist()))]
        wanted = dict(rows)
        path = ws.abspath(clips[clip_id]["video_path"])
        if not path.is_file():
            raise TrainingError(f"clips {clip_id}: crop clip missing: {clips[clip_id]['video_path']}",
                                "rerun the faces stage (dsbuilder run RECIPE)")
        for index, _, grey in iter_frames(path, fmt="gray"):
            if index in wanted:
                faces.append(crop_to_gray64(grey, crop_fraction))
                targets.append(wanted[index])
                ids.append(clip_id)
    return Frames(np.stack(faces) if faces else np.zeros((0, 64, 64), np.uint8),
                  np.asarray(targets, np.float32).reshape(-1, 7), ids)


def build_student():
    """The teacher's network and weights, made trainable: every weight, bias and batch-norm scale
    and shift; the batch-norm statistics stay the teacher's (the port normalises with them)."""
    from dsbuilder.labels.fer import TorchFer

    module = TorchFer().module  # its "same" paddings are fixed for 64 px inputs
    for name, p in module.named_parameters():
        p.requires_grad = not name.endswith((".mean", ".var"))
    return module


def _inputs(faces: np.ndarray):
    import torch

    from dsbuilder.labels.fer import preprocess

    return torch.from_numpy(preprocess(faces))[:, None]


def predict(model, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        out = [model(_inputs(faces[i:i + batch_size])).numpy()
               for i in range(0, len(faces), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 7), np.float32)


def train(ws: Workspace, options: Mapping[str, Any] | FerTrainConfig | None = None, *,
          crop_fraction: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the FER student on the workspace's clips; write the model files; return the metrics.
    ``crop_fraction``: as the label stage's (its default when None)."""
    import torch

    from dsbuilder.config import stage_defaults
    from dsbuilder.labels.fer import FER_CLASSES
    from dsbuilder.torch_threads import torch_threads

    cfg = options if isinstance(options, FerTrainConfig) else FerTrainConfig.from_mapping(options)
    crop_fraction = float(crop_fraction or stage_defaults("label")["crop_fraction"])
    tr = load_frames(ws, "train", cfg, crop_fraction)
    if not len(tr):
        raise TrainingError("no labelled frame of a training clip",
                            "run the pipeline to the report stage first (dsbuilder run RECIPE)")
    held_split, held = None, None
    for split in ("val", "test"):
        frames = load_frames(ws, split, cfg, crop_fraction)
        if len(frames):
            held_split, held = split, frames
            break
    prior = tr.targets.mean(axis=0)

    def batch(idx: np.ndarray, rng):
        # no flips: the targets are the teacher's on the frames as they are, and the teacher is not
        # mirror-symmetric (flipped demo faces: KL 0.15 to their own labels, against 0.01)
        return _inputs(tr.faces[idx])

    def log_probs(model, x):
        # the network ends in a softmax: its log is the logits up to a constant
        return torch.log_softmax(torch.log(model(x).clamp_min(1e-8)) / cfg.temperature, dim=1)

    def held_kl(model) -> float:
        return kl(held.targets, predict(model, held.faces))

    model = build_student()
    before = scores(tr.targets, predict(model, tr.faces), prior)
    with torch_threads(2):
        history, best_epoch = fit(
            model, tr.targets, batch, log_probs, held_kl if held is not None else None,
            **cfg.fit_args(), desc="train fer", progress=progress)
    metrics: dict[str, Any] = {"train": scores(tr.targets, predict(model, tr.faces), prior),
                               "train_before": before, "history": history,
                               "best_epoch": best_epoch}
    if held is not None:
        metrics[held_split] = scores(held.targets, predict(model, held.faces), prior)
    config = {**asdict(cfg), "classes": list(FER_CLASSES), "crop_fraction": crop_fraction,
              "input": "grey 64x64, (x / 255 - 0.5) * 2, NCHW", "output": "probabilities",
              "train_frames": len(tr), "train_clips": sorted(set(tr.clip_ids)),
              "held_out_split": held_split,
              "held_out_clips": sorted(set(held.clip_ids)) if held is not None else [],
              "dsbuilder_version": __version__}
    out = ws.root / MODEL_DIR
    write_model(out, model, config, metrics, model_card(config, metrics))
    _export_onnx(model, out / "model.onnx")
    return metrics


def _export_onnx(model, path: Path, size: int = 64) -> None:
    """The trained network (grey ``size`` x ``size`` faces in, probabilities out) as ONNX: what
    ``stages.label.fer_model`` can name. Skipped, with a warning, without the onnx package."""
    import importlib.util
    import warnings

    import torch

    from dsbuilder.workspace import atomic_path

    if importlib.util.find_spec("onnx") is None:
        log.warning("train fer: the onnx package is not installed; no model.onnx (model.pt is there)")
        return
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, size, size), str(tmp), dynamo=False,
                          input_names=["x"], output_names=["probs"],
                          dynamic_axes={"x": {0: "n"}, "probs": {0: "n"}})


def model_card(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    held = config["held_out_split"]
    splits = ["train_before", "train"] + ([held] if held else [])
    return "\n".join([
        "# Model card: FER student", "",
        f"dsbuilder {config['dsbuilder_version']}. The FER2013 mini-Xception teacher, fine-tuned"
        f" on {config['train_frames']} face crops of {len(config['train_clips'])} "
        f"clips to reproduce the teacher's {config['target']} soft labels (distillation at "
        f"temperature {config['temperature']:g}, {config['epochs']} epochs, lr {config['lr']:g}, "
        f"seed {config['seed']}; best epoch {metrics['best_epoch']}). Classes: "
        + ", ".join(config["classes"]) + ".", "",
        "## How close to the teacher", "",
        "KL(teacher ‖ student) per frame in nats (lower is better) and agreement of the argmax, "
        "next to always answering the training frames' mean distribution (`prior`); "
        "`train_before` is the student before training."
        + ("" if held else " No val or test clip had labelled frames: train figures only."), "",
        *score_table(metrics, splits, "frames"), "",
        "## Limits", "",
        "- The targets are the teacher's own guesses on these frames: the student can only get as "
        "good as the teacher, adapted to this data and steadier over time; it is not checked "
        "against human labels here.",
        "- Clips of few people: the student may learn the people rather than the expressions.", ""])
