"""The bundled PyTorch Dataset over clips.parquet, on the offline demo's workspace."""

from __future__ import annotations

import numpy as np
import pytest

from dsbuilder.manifest.io import read_table
from dsbuilder.train.data import ClipDataset


def test_items_hold_the_clip_its_audio_and_the_teachers_soft_labels(demo_workspace):
    _, ws = demo_workspace
    clips = read_table(ws, "clips").to_pylist()
    ds = ClipDataset(ws.root, split=None)
    assert len(ds) == len(clips) > 0
    item = ds[0]
    row = next(c for c in clips if c["clip_id"] == item["clip_id"])
    assert item["face"].dtype == np.uint8 and item["face"].shape[1:] == (224, 224, 3)
    assert len(item["face"]) == row["n_frames"]
    assert item["audio"].dtype == np.float32
    assert len(item["audio"]) == pytest.approx(row["duration_s"] * 16000, abs=2)
    assert item["probs"].shape == (7,) and abs(item["probs"].sum() - 1) < 1e-4
    assert item["person_id"] == row["person_id"] and item["split"] == row["split"]


def test_split_filter_grey_and_frame_cap(demo_workspace):
    _, ws = demo_workspace
    clips = read_table(ws, "clips").to_pylist()
    train = ClipDataset(ws, split="train", modalities=("face",), grey=True, max_frames=4)
    assert len(train) == sum(c["split"] == "train" for c in clips)
    assert train[0]["face"].shape == (4, 224, 224) and "audio" not in train[0]
    first = clips[0]["clip_id"]
    only = ClipDataset(ws, split=None, filter=lambda r: r["clip_id"] == first)
    assert [r["clip_id"] for r in only.rows] == [first]
    with pytest.raises(ValueError, match="modalities"):
        ClipDataset(ws, modalities=("video",))


def test_works_with_a_torch_dataloader(demo_workspace):
    from torch.utils.data import DataLoader

    _, ws = demo_workspace
    ds = ClipDataset(ws, split=None, modalities=("face",), grey=True, max_frames=2)
    (batch,) = list(DataLoader(ds, batch_size=len(ds)))
    assert tuple(batch["face"].shape) == (len(ds), 2, 224, 224)
    assert tuple(batch["probs"].shape) == (len(ds), 7)


def test_missing_values_do_not_break_collation(demo_workspace):
    from torch.utils.data import default_collate

    _, ws = demo_workspace
    ds = ClipDataset(ws, split=None, modalities=())
    for r in ds.rows:
        r["licence"] = r["valence"] = r["au_emotion"] = None
    batch = default_collate([ds[i] for i in range(len(ds))])
    assert batch["licence"] == [""] * len(ds) and batch["valence"].isnan().all()


def test_windows_batch_with_workers_and_channels_first(demo_workspace):
    """Fixed windows over the clips: equal shapes, so a DataLoader batches 4 at a time with 2
    workers; faces channels-first; a transform runs on each item."""
    from torch.utils.data import DataLoader

    _, ws = demo_workspace
    seen = []
    ds = ClipDataset(ws, split=None, grey=True, window_s=0.4, stride_s=0.4, channels_first=True,
                     transform=lambda it: {**it, "tag": 1})
    assert len(ds) >= 4
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    for b in batches:
        assert tuple(b["face"].shape[1:]) == (10, 1, 224, 224)
        assert tuple(b["audio"].shape[1:]) == (6400,)
        assert (b["face_valid"] <= 10).all() and (b["audio_valid"] <= 6400).all()
        assert (b["tag"] == 1).all()
        seen.append(len(b["clip_id"]))
    assert sum(seen) == len(ds) and seen[0] == 4


def test_collate_pads_whole_clips_of_different_lengths(demo_workspace):
    from torch.utils.data import DataLoader

    from dsbuilder.train.data import collate

    _, ws = demo_workspace
    ds = ClipDataset(ws, split=None, grey=True, max_frames=None)
    (batch,) = list(DataLoader(ds, batch_size=len(ds), collate_fn=collate))
    lengths = [len(ds[i]["face"]) for i in range(len(ds))]
    assert tuple(batch["face"].shape[:2]) == (len(ds), max(lengths))
    assert batch["face_mask"].sum(dim=1).tolist() == lengths
    assert batch["audio_mask"].shape == batch["audio"].shape


def test_not_a_workspace_is_an_error_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dsbuilder workspace"):
        ClipDataset(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
