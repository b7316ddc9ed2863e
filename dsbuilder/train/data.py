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


class ClipDataset:
    """Clips of one split (or all: ``split=None``) of a workspace, as training items."""

    def __init__(self, workspace: str | Path | Workspace, split: str | None = "train", *,
                 modalities: Sequence[str] = MODALITIES, grey: bool = False,
                 max_frames: int | None = None,
                 filter: Callable[[Mapping[str, Any]], bool] | None = None):
        from dsbuilder.manifest.io import read_table

        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; use {MODALITIES}")
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
        self.modalities = tuple(modalities)
        self.grey = grey
        self.max_frames = max_frames
        rows = read_table(self.ws, "clips").to_pylist()
        self.rows = [r for r in rows if (split is None or r["split"] == split)
                     and (filter is None or filter(r))
                     and ("audio" not in self.modalities or r["audio_path"])]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        # no None in an item (torch's default collate refuses it): NaN for numbers, "" for text
        item: dict[str, Any] = {
            k: (float("nan") if k in _NUMBERS else "") if row[k] is None else row[k]
            for k in PASSED}
        item["probs"] = np.asarray(row["probs"], np.float32)
        if "face" in self.modalities:
            item["face"] = self.frames(row)
        if "audio" in self.modalities:
            from dsbuilder.train.speech import read_wav

            rate = 16000  # the faces stage's audio_rate: the wav beside each crop
            a = int(round(float(row["crop_start_s"]) * rate))
            b = int(round(float(row["crop_end_s"]) * rate))
            item["audio"] = read_wav(self.ws.abspath(row["audio_path"]), a, b - a)
        return item

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
