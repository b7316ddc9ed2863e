"""The offline demo: media made from what the install brings, and ``recipes/demo.yaml`` over it.

Everything here is generated, nothing is downloaded and nothing comes from ``../shared``:

* ``grace_hopper.jpg`` ships inside matplotlib (``matplotlib/mpl-data/sample_data``). It is an official
  US Navy photograph of Rear Admiral Grace M. Hopper (1984), a work of the US federal government and so
  in the **public domain**. The demo crops, flips and re-lights it into reference photos, and pans over
  it in video shots.
* ``astronaut.png`` ships inside scikit-image (``skimage/data``): NASA photograph of astronaut Eileen
  Collins, a work of the US federal government, **public domain**. It plays the bystander: a face in
  the videos that is nobody in the recipe, so the faces stage must never store it.
* The other shots are seeded colour textures drawn by :mod:`dsbuilder.synth` (ours, CC0), and the sound
  is a synthetic voiced signal (ours, CC0).

The media land in ``recipes/demo-media/`` (git-ignored); they are made when missing or when
:data:`MEDIA_VERSION` changes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dsbuilder.errors import UsageError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "demo.yaml"
MEDIA = REPO / "recipes" / "demo-media"
#: Bump when make_media's output changes: old media are then replaced.
MEDIA_VERSION = "2"


def make_media(dest: Path = MEDIA) -> list[Path]:
    """Write the demo media into ``dest`` (skipping files that exist); return the paths."""
    import numpy as np

    from dsbuilder import synth
    from dsbuilder.workspace import atomic_path, atomic_write_bytes

    import shutil

    stamp = dest / "VERSION"
    if dest.exists() and (not stamp.exists() or stamp.read_text().strip() != MEDIA_VERSION):
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    hopper = synth.grace_hopper()
    astronaut = synth.astronaut()
    h, w = hopper.shape[:2]
    photos = {
        "photos/hopper-full.jpg": hopper,
        "photos/hopper-face.jpg": hopper[: h * 2 // 3, w // 6: w * 5 // 6],
        "photos/hopper-mirror.jpg": hopper[:, ::-1],
        "photos/hopper-dim.jpg": (hopper * 0.7).astype(np.uint8),
    }
    written = []
    for rel, pic in photos.items():
        p = dest / rel
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(p) as tmp:
                synth.write_photo(tmp, np.ascontiguousarray(pic), fmt="JPEG")
        written.append(p)
    S = synth.Shot
    videos = {
        # four shots joined by hard cuts, with a voiced soundtrack; the third shows a bystander
        "videos/hopper-talk.mp4": dict(shots=[S(hopper, 50), S(synth.texture(11), 40),
                                              S(astronaut, 45), S(hopper[:, ::-1], 60)],
                                       audio="tone"),
        # a fade and a dissolve
        "videos/hopper-transitions.mp4": dict(
            shots=[S(synth.texture(21), 45), S(hopper, 50, "fade", 12),
                   S(synth.texture(22), 45, "dissolve", 10)], audio="tone"),
        # no soundtrack: the recipe requires audio, so scrape rejects it (no_audio)
        "videos/hopper-silent-film.mp4": dict(shots=[S(hopper, 40)], audio=None),
    }
    for rel, spec in videos.items():
        p = dest / rel
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(p) as tmp:
                synth.write_video(tmp, spec["shots"], fps=25.0, size=(360, 480), audio=spec["audio"],
                                  container_format="mp4")
        written.append(p)
    atomic_write_bytes(stamp, MEDIA_VERSION.encode())
    return written


def prepare() -> Path:
    """Make the demo media if needed and return the demo recipe's path."""
    if not RECIPE.exists():
        raise UsageError(f"demo recipe not found at {RECIPE}",
                         "run the demo from a git checkout installed with `pip install -e .`")
    log.info("making demo media in %s", MEDIA)
    make_media(MEDIA)
    return RECIPE
