"""The bundled impostor set: faces of people who are (almost surely) not in a recipe.

A match threshold needs impostor distances: the person's faces against other people's. The other
people of the recipe supply some; a one-person recipe supplies none. So we add faces that need no
download and whose rights are clear. The only ones available offline are pictures shipped inside our
dependencies:

=================  ========================================================  ==========================
name               picture                                                   rights
=================  ========================================================  ==========================
grace_hopper       Rear Admiral Grace Hopper, official portrait;             US Navy photo, public
                   matplotlib sample data ``grace_hopper.jpg``               domain (work of the US
                   (:func:`dsbuilder.synth.grace_hopper`)                    federal government)
eileen_collins     Astronaut Eileen Collins; ``skimage.data.astronaut()``    NASA photo, public domain
                   (:func:`dsbuilder.synth.astronaut`)                       (skimage: "no known
                                                                             copyright restrictions")
cameraman          A man behind a film camera on a tripod, looking down;     CC0 by the photographer,
                   ``skimage.data.camera()`` (the image since skimage 0.18)  Lav Varshney (skimage docs)
=================  ========================================================  ==========================

The cameraman looks down into his camera and the HOG detector misses him; the CNN detector finds him,
so each face names the detector that finds it. ``skimage.data`` also ships ``lfw_subset.npy``
(25x25-pixel grey crops from Labeled Faces in the Wild): far too small for the embedding network, and
LFW's pictures are news photos of unclear rights, so they are not used.

**Three identities, one embedding each.** Mirrored or re-cropped copies would give more embeddings
but not more identities: their distances to a person are nearly the same numbers again and would only
make the impostor statistics look more certain than they are. We do not add them.

A bundled face that matches the person whose threshold is fitted (a recipe about Grace Hopper) is
left out of that person's impostors (see :func:`dsbuilder.stages.dictionary.run`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

#: Bump when the set or how its faces are found changes (it is part of the cache key).
IMPOSTOR_SET_VERSION = "1"


def _camera() -> np.ndarray:
    from skimage import data

    grey = data.camera()
    return np.ascontiguousarray(np.stack([grey] * 3, axis=-1))


def _grace() -> np.ndarray:
    from dsbuilder import synth

    return synth.grace_hopper()


def _astronaut() -> np.ndarray:
    from dsbuilder import synth

    return synth.astronaut()


@dataclass(frozen=True)
class BundledFace:
    name: str
    credit: str
    detector: str  # the detector that finds it, at upsample 0
    load: Callable[[], np.ndarray]


BUNDLED: tuple[BundledFace, ...] = (
    BundledFace("grace_hopper", "Grace Hopper, US Navy photo, public domain (matplotlib sample data)",
                "hog", _grace),
    BundledFace("eileen_collins", "Eileen Collins, NASA photo, public domain (skimage.data.astronaut)",
                "hog", _astronaut),
    BundledFace("cameraman", "cameraman, CC0, photo by Lav Varshney (skimage.data.camera)",
                "cnn", _camera),
)


def image_digest(img: np.ndarray) -> str:
    """sha256 of the decoded pixels and shape (a dependency upgrade that changes a picture changes
    it)."""
    h = hashlib.sha256(repr(img.shape).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _loaded(name: str) -> tuple[np.ndarray, str]:
    face = next(f for f in BUNDLED if f.name == name)
    img = face.load()
    img.setflags(write=False)
    return img, image_digest(img)


def bundled_digest(name: str) -> str:
    return _loaded(name)[1]


@functools.lru_cache(maxsize=None)
def bundled_embedding(name: str, jitters: int) -> tuple[float, ...] | None:
    """The embedding of the largest face of bundled picture ``name`` (as a tuple of float32 values),
    or ``None`` if it is not found (a changed picture: logged)."""
    from dsbuilder.face import api

    face = next(f for f in BUNDLED if f.name == name)
    img, _ = _loaded(name)
    dets = api.detect(img, face.detector, 0)
    if not dets:
        log.warning("bundled impostor %s: no face found by %s; left out", name, face.detector)
        return None
    emb = api.embed(img, dets[0].box, int(jitters))
    return tuple(float(v) for v in np.asarray(emb, np.float32))
