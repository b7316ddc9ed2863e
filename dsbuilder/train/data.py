"""The bundled PyTorch Dataset over ``clips.parquet``: one training example per clip.

    from torch.utils.data import DataLoader
    from dsbuilder.train.data import ClipDataset

    train = ClipDataset("workspaces/demo", split="train", modalities=("face", "audio"))
    item = train[0]   # {"clip_id", "person_id", "probs", "face", "audio", ...}

Each item decodes its clip when asked (nothing is held in memory between items), so it works with
``DataLoader(num_workers=...)``. A clip is a frame range of its track's crop files
(``crop_start_frame``/``crop_end_frame``, ``crop_start_s``/``crop_end_s``). ``face``: the aligned crop
frames, ``(T, H, W, 3)`` uint8 RGB (or
``(T, H, W)`` grey with ``grey=True``), at most ``max_frames`` spread evenly over the clip; ``audio``:
the clip's 16 kHz mono samples, float32. ``probs`` (7, float32) are the face teacher's clip-level soft
labels in :data:`dsbuilder.labels.fer.FER_CLASSES` order; ``valence``/``arousal`` and the rest of the
clip row come along as plain values (a missing value is NaN or "", so that batches collate).
``filter`` (a callable on the row) selects clips, e.g. by licence.
The dataset does not need torch to be used as a plain sequence; ``DataLoader`` needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dsbuilder.workspace import Workspace

MODALITIES = ("face", "audio")

#: Clip row columns passed through in every item.
PASSED = ("clip_id", "person_id", "source_id", "split", "argmax", "valence", "arousal",
          "au_emotion", "speaking", "start_s", "end_s", "licence")


_NUMBERS = {"valence", "arousal", "start_s", "end_s"}


#: The faces stage's audio rate: the wav beside each crop.
AUDIO_RATE = 16000


class ClipDataset:
    """Clips of one split (or all: ``split=None``) of a workspace, as training items.

    ``window_s``: items are fixed-length windows over the clips instead of whole clips (every
    ``stride_s``, default ``window_s``; a clip shorter than a window gives one window), each with
    ``round(window_s * fps)`` face frames (the frame on screen at each instant) and
    ``window_s * 16000`` audio samples, zero-padded past the clip's end (``face_valid`` and
    ``audio_valid`` count the real ones): equal shapes, so the default collate batches them.
    Without windows, items differ in length: :func:`collate` pads a batch and adds the masks.
    ``channels_first``: faces as ``(T, C, H, W)`` (grey: ``(T, 1, H, W)``). ``transform``: a callable
    on each item (a dict) before it is returned, e.g. augmentation or tensor conversion.
    """

    def __init__(self, workspace: str | Path | Workspace, split: str | None = "train", *,
                 modalities: Sequence[str] = MODALITIES, grey: bool = False,
                 max_frames: int | None = None,
                 filter: Callable[[Mapping[str, Any]], bool] | None = None,
                 window_s: float | None = None, stride_s: float | None = None, fps: float = 25.0,
                 channels_first: bool = False,
                 transform: Callable[[dict[str, Any]], Any] | None = None):
        from dsbuilder.manifest.io import read_table

        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; use {MODALITIES}")
        if window_s is not None and window_s <= 0:
            raise ValueError("window_s must be positive")
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
        if not (self.ws.root / "manifests").is_dir():
            raise FileNotFoundError(f"{self.ws.root} is not a dsbuilder workspace (no manifests/)")
        self.modalities = tuple(modalities)
        self.grey = grey
        self.max_frames = max_frames
        self.window_s, self.fps = window_s, float(fps)
        self.channels_first = channels_first
        self.transform = transform
        rows = read_table(self.ws, "clips").to_pylist()
        self.rows = [r for r in rows if (split is None or r["split"] == split)
                     and (filter is None or filter(r))
                     and ("audio" not in self.modalities or r["audio_path"])]
        # (row index, window start in seconds from the clip's start) per item
        self.items: list[tuple[int, float]] = []
        for i, r in enumerate(self.rows):
            if window_s is None:
                self.items.append((i, 0.0))
                continue
            length = float(r["crop_end_s"]) - float(r["crop_start_s"])
            step = float(stride_s or window_s)
            n = max(1, int(np.floor((length - window_s) / step + 1e-9)) + 1)
            self.items.extend((i, k * step) for k in range(n))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        index, offset = self.items[i]
        row = self.rows[index]
        # no None in an item (torch's default collate refuses it): NaN for numbers, "" for text
        item: dict[str, Any] = {
            k: (float("nan") if k in _NUMBERS else "") if row[k] is None else row[k]
            for k in PASSED}
        item["probs"] = np.asarray(row["probs"], np.float32)
        item["window_start_s"] = float(offset)
        if "face" in self.modalities:
            face = self.frames(row) if self.window_s is None else self._window_frames(row, offset)
            if self.window_s is not None:
                face, item["face_valid"] = face
            if self.channels_first and face.ndim >= 3:
                face = face[:, None] if face.ndim == 3 else face.transpose(0, 3, 1, 2)
            item["face"] = np.ascontiguousarray(face)
        if "audio" in self.modalities:
            from dsbuilder.train.speech import read_wav

            a = int(round((float(row["crop_start_s"]) + offset) * AUDIO_RATE))
            end = int(round(float(row["crop_end_s"]) * AUDIO_RATE))
            n = end - a if self.window_s is None else int(round(self.window_s * AUDIO_RATE))
            audio = read_wav(self.ws.abspath(row["audio_path"]), a, max(0, min(n, end - a)))
            if self.window_s is not None:
                item["audio_valid"] = len(audio)
                audio = np.pad(audio, (0, n - len(audio)))
            item["audio"] = audio
        return self.transform(item) if self.transform is not None else item

    def frames(self, row: Mapping[str, Any]) -> np.ndarray:
        """The clip's crop frames (at most ``max_frames``, evenly spread)."""
        from dsbuilder.media import iter_frames

        first, end = int(row["crop_start_frame"]), int(row["crop_end_frame"])
        n = end - first
        keep = set(range(first, end))
        if self.max_frames and n > self.max_frames:
            keep = set((first + np.linspace(0, n - 1, self.max_frames).round().astype(int)).tolist())
        fmt = "gray" if self.grey else "rgb24"
        frames = []
        for k, _, img in iter_frames(self.ws.abspath(row["video_path"]), fmt=fmt):
            if k in keep:
                frames.append(img)
            if k >= end - 1:
                break
        return np.stack(frames) if frames else np.zeros((0,), np.uint8)

    def _window_frames(self, row: Mapping[str, Any], offset: float) -> tuple[np.ndarray, int]:
        """``round(window_s * fps)`` frames from ``offset`` s into the clip: the frame on screen at
        each instant; past the clip's end, zeros. Returns (frames, how many are real)."""
        from dsbuilder.media import iter_frames

        n = max(1, int(round(self.window_s * self.fps)))
        start = float(row["crop_start_s"]) + offset
        clip_end = float(row["crop_end_s"])
        want = start + np.arange(n) / self.fps
        fmt = "gray" if self.grey else "rgb24"
        out: list[np.ndarray | None] = [None] * n
        last = None
        for _, t, img in iter_frames(self.ws.abspath(row["video_path"]), fmt=fmt):
            for j in np.flatnonzero((want >= t - 1e-6) & (want < clip_end)):
                out[j] = img
            last = img
            if t > want[-1] or t >= clip_end:
                break
        shape = last.shape if last is not None else ((224, 224) if self.grey else (224, 224, 3))
        real = sum(x is not None for x in out)
        return np.stack([x if x is not None else np.zeros(shape, np.uint8) for x in out]), real


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch items of different lengths (whole clips): faces and audio are zero-padded to the
    longest in the batch, with ``face_mask`` (B, T) and ``audio_mask`` (B, S) marking the real
    frames and samples; numbers become tensors, text stays lists. Needs torch."""
    import torch

    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key in ("face", "audio"):
            lengths = [len(v) for v in values]
            longest = max(lengths)
            padded = np.zeros((len(values), longest, *np.asarray(values[0]).shape[1:]),
                              np.asarray(values[0]).dtype)
            mask = np.zeros((len(values), longest), bool)
            for j, (v, n) in enumerate(zip(values, lengths)):
                padded[j, :n] = v
                mask[j, :n] = True
            out[key] = torch.from_numpy(padded)
            out[f"{key}_mask"] = torch.from_numpy(mask)
        elif isinstance(values[0], np.ndarray):
            out[key] = torch.from_numpy(np.stack(values))
        elif isinstance(values[0], (bool, int, float, np.number)):
            out[key] = torch.tensor(values)
        else:
            out[key] = list(values)
    return out
