"""The offline demo: media made from what the install brings, and ``recipes/demo.yaml`` over it.

Everything here is generated, nothing is downloaded and nothing comes from ``../shared``:

* ``grace_hopper.jpg`` ships inside matplotlib (``matplotlib/mpl-data/sample_data``). It is an official
  US Navy photograph of Rear Admiral Grace M. Hopper (1984), a work of the US federal government and so
  in the **public domain**. The demo crops, flips and re-lights it into reference photos, and makes it
  talk in five videos.
* ``astronaut.png`` ships inside scikit-image (``skimage/data``): NASA photograph of astronaut Eileen
  Collins, a work of the US federal government, **public domain**. The second person, talking in two
  videos (one shared with Grace Hopper).
* ``camera.png`` ships inside scikit-image: a man with a film camera, photographed by Lav Varshney,
  **CC0**. He plays the bystander: a face in a video that is nobody in the recipe, so the faces stage
  must never store it.
* The other shots are seeded colour textures drawn by :mod:`dsbuilder.synth`, and the voices are
  synthesised by :mod:`dsbuilder.talking`, which also moves the portraits' jaw and lips (ours, CC0).

The media land in ``recipes/demo-media/`` (git-ignored); they are made when missing or when
:data:`MEDIA_VERSION` changes.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from dsbuilder.errors import UsageError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "demo.yaml"
MEDIA = REPO / "recipes" / "demo-media"
#: Bump when make_media's output changes: old media are then replaced.
MEDIA_VERSION = "4"


#: The demo's videos (see :func:`_videos`).
VIDEO_NAMES = ("hopper-talk.mp4", "hopper-mute.mp4", "hopper-dubbed.mp4", "hopper-transitions.mp4",
               "collins-talk.mp4", "interview.mp4", "hopper-silent-film.mp4")


#: Frame rate and size of the demo videos.
FPS, SIZE = 25.0, (360, 480)

#: The two voices (mean pitch in Hz, formant scale): one per person, and a man's voice for the dub.
VOICES = {"grace-hopper": (185.0, 1.0), "eileen-collins": (225.0, 1.1), "dub": (105.0, 0.86)}


def cameraman():
    """The bystander: the photographer of scikit-image's ``camera`` (CC0, Lav Varshney), his head and
    shoulders enlarged so that the face is found in a 480x360 frame."""
    import cv2
    import numpy as np
    from skimage import data

    grey = data.camera()[40:300, 60:360]
    big = cv2.resize(grey, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(np.stack([big] * 3, axis=-1))


def _photos(dest: Path, name: str, picture) -> list[Path]:
    """Four reference photos of one portrait: whole, face, mirrored, dimmed."""
    import numpy as np

    from dsbuilder import synth
    from dsbuilder.workspace import atomic_path

    h, w = picture.shape[:2]
    photos = {f"{name}-full.jpg": picture,
              f"{name}-face.jpg": picture[: h * 2 // 3, w // 6: w * 5 // 6],
              f"{name}-mirror.jpg": picture[:, ::-1],
              f"{name}-dim.jpg": (picture * 0.7).astype(np.uint8)}
    out = []
    for rel, pic in photos.items():
        p = dest / rel
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(p) as tmp:
                synth.write_photo(tmp, np.ascontiguousarray(pic), fmt="JPEG")
        out.append(p)
    return out


def _videos() -> dict[str, dict]:
    """name -> how to make it: ``shots`` (who is on screen, for how many frames, talking or not) and
    ``audio`` (the voice heard; None: no audio stream)."""
    import numpy as np

    from dsbuilder import synth, talking

    hopper, collins = synth.grace_hopper(), synth.astronaut()
    hopper_mirrored = np.ascontiguousarray(hopper[:, ::-1])
    collins_mirrored = np.ascontiguousarray(collins[:, ::-1])
    S = synth.Shot

    def voice(who: str, frames: int, seed: int) -> talking.Voice:
        f0, tract = VOICES[who]
        return talking.Voice.make(frames / FPS, seed=seed, f0=f0, tract=tract)

    def film(parts: list[tuple], seed: int) -> dict:
        """``parts``: (picture, frames, speaker or None, transition, transition frames); each
        speaking part has its own voice, silence elsewhere; the picture talks with its voice."""
        shots, sound = [], []
        for k, (pic, frames, who, *tr) in enumerate(parts):
            if who:
                v = voice(who, frames, seed * 10 + k)
                shots.append(S(pic, frames, *tr, animate=talking.talking(pic, v, FPS)))
                sound.append(v.samples)
            else:
                shots.append(S(pic, frames, *tr))
                sound.append(np.zeros(int(round(frames / FPS * 16000)), np.float32))
        return {"shots": shots, "audio": np.concatenate(sound)}

    talk = film([(hopper, 100, "grace-hopper"), (synth.texture(11), 40, None),
                 (cameraman(), 50, None), (hopper_mirrored, 75, "grace-hopper")], seed=1)
    talk_frames = sum(shot.n_frames for shot in talk["shots"])
    return {
        # Grace Hopper speaks in two shots; between them a colour field and a bystander (the
        # cameraman, nobody in the recipe: his face must never be stored)
        "hopper-talk.mp4": talk,
        # the same picture (copied, not re-encoded) with an audio stream of silence: the mouth
        # moves, nothing is heard
        "hopper-mute.mp4": {"copy_of": "hopper-talk.mp4", "audio": np.zeros_like(talk["audio"])},
        # the same picture dubbed with a man's voice: lips and sound do not belong together
        "hopper-dubbed.mp4": {"copy_of": "hopper-talk.mp4",
                              "audio": voice("dub", talk_frames, 99).samples},
        # a fade in and a dissolve out around her speaking
        "hopper-transitions.mp4": film([(synth.texture(21), 45, None),
                                        (hopper, 80, "grace-hopper", "fade", 12),
                                        (synth.texture(22), 45, None, "dissolve", 10)], seed=2),
        # Eileen Collins speaks in two shots
        "collins-talk.mp4": film([(collins, 100, "eileen-collins"), (synth.texture(31), 40, None),
                                  (collins_mirrored, 75, "eileen-collins")], seed=3),
        # both, one after the other: a video with two recipe people
        "interview.mp4": film([(collins, 80, "eileen-collins"),
                               (hopper_mirrored, 80, "grace-hopper")], seed=4),
        # no soundtrack at all: the recipe requires audio, so scrape rejects it (no_audio)
        "hopper-silent-film.mp4": {"shots": [S(hopper, 40)], "audio": None},
    }


def make_media(dest: Path = MEDIA, videos: Sequence[str] | None = None) -> list[Path]:
    """Write the demo media into ``dest`` (skipping files that exist); return the paths.
    ``videos``: only these of :data:`VIDEO_NAMES` (and what they are copied from)."""
    import shutil

    from dsbuilder import synth
    from dsbuilder.workspace import atomic_path, atomic_write_bytes

    stamp = dest / "VERSION"
    if dest.exists() and (not stamp.exists() or stamp.read_text().strip() != MEDIA_VERSION):
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = [*_photos(dest / "photos" / "grace-hopper", "hopper", synth.grace_hopper()),
               *_photos(dest / "photos" / "eileen-collins", "collins", synth.astronaut())]
    wanted = set(VIDEO_NAMES if videos is None else videos)
    unknown = wanted - set(VIDEO_NAMES)
    if unknown:
        raise ValueError(f"not demo videos: {sorted(unknown)}")
    todo = {name: dest / "videos" / name for name in VIDEO_NAMES}
    if not all(todo[name].exists() for name in wanted):
        specs = _videos()
        wanted |= {specs[name]["copy_of"] for name in wanted if "copy_of" in specs[name]}
        for name, spec in specs.items():
            p = todo[name]
            if name in wanted and not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(p) as tmp:
                    if "copy_of" in spec:  # made before it: VIDEO_NAMES lists originals first
                        synth.dub_video(todo[spec["copy_of"]], tmp, spec["audio"],
                                        container_format="mp4")
                    else:
                        synth.write_video(tmp, spec["shots"], fps=FPS, size=SIZE,
                                          audio=spec["audio"], container_format="mp4")
    written.extend(todo[name] for name in VIDEO_NAMES if name in wanted)
    atomic_write_bytes(stamp, MEDIA_VERSION.encode())
    return written


def make_recipe(dest: Path, videos: Sequence[str] = VIDEO_NAMES) -> Path:
    """The demo recipe in ``dest`` with its media in ``dest/demo-media``, keeping only ``videos``
    (the tests run smaller demos); returns the recipe's path."""
    make_media(dest / "demo-media", videos)
    dropped = set(VIDEO_NAMES) - set(videos)
    lines = [line for line in RECIPE.read_text().splitlines(keepends=True)
             if not any(f"demo-media/videos/{name}" in line for name in dropped)]
    path = dest / "demo.yaml"
    path.write_text("".join(lines))
    return path


def prepare() -> Path:
    """Make the demo media if needed and return the demo recipe's path."""
    if not RECIPE.exists():
        raise UsageError(f"demo recipe not found at {RECIPE}",
                         "run the demo from a git checkout installed with `pip install -e .`")
    log.info("making demo media in %s", MEDIA)
    make_media(MEDIA)
    return RECIPE


def _dropped(rejections: list[dict[str, Any]], stage: str) -> str:
    counts = Counter(r["reason"] for r in rejections if r["stage"] == stage)
    if not counts:
        return "dropped nothing"
    return f"dropped {sum(counts.values())} (" + ", ".join(
        f"{reason} {n}" for reason, n in sorted(counts.items())) + ")"


def stage_lines(ws: Any) -> list[str]:
    """One line per stage: what it kept and what it dropped, with the reasons (from the manifests)."""
    from dsbuilder.manifest.io import count_rows, read_table

    def rows(name: str) -> list[dict[str, Any]]:
        return read_table(ws, name).to_pylist()

    rej = rows("rejections")
    sources = [r for r in rows("sources") if r["status"] == "ok"]
    faces = rows("faces_dictionary")
    tracks = rows("tracks")
    speech = rows("speech")
    clips = rows("clips")
    kept_tracks = [t for t in tracks if t["kept"]]
    by_person = Counter(t["person_id"] for t in kept_tracks)
    splits = Counter(c["split"] for c in clips)
    kinds = Counter(r["kind"] for r in sources)
    # speakers: per track, speaking when any of its segments speaks; a track that never does is
    # named by the reason of its segments (it stays a clip, marked not speaking); tracks the stage
    # could not score (no speech rows) are dropped with their own rejection
    segs: dict[str, list[dict[str, Any]]] = {}
    for r in speech:
        segs.setdefault(r["track_id"], []).append(r)
    speaking = [t for t, rs in segs.items() if any(r["speaking"] for r in rs)]
    quiet = Counter(next((r["reason"] for r in rs if r["reason"]), "not_speaking")
                    for t, rs in segs.items() if t not in speaking)
    speech_ids = {r["speech_id"] for r in speech}  # a segment's rejection names its speech row
    unscored = [r for r in rej if r["stage"] == "speakers" and r["item_id"] not in speech_ids]
    lines = {
        "scrape": (f"{kinds['photo']} photos and {kinds['video']} videos stored with provenance",
                   _dropped(rej, "scrape")),
        "dictionary": (f"{sum(f['kept'] for f in faces)} of {len(faces)} reference faces kept "
                       f"for {len({f['person_id'] for f in faces})} people",
                       _dropped(rej, "dictionary")),
        "shots": (f"{count_rows(ws, 'shots')} shots in {kinds['video']} videos",
                  _dropped(rej, "shots")),
        "faces": (f"{len(kept_tracks)} target face tracks cropped ("
                  + ", ".join(f"{p} {n}" for p, n in sorted(by_person.items()))
                  + "); others' tracks are boxes in the manifest, never pixels",
                  _dropped(rej, "faces")),
        "speakers": (f"{len(speaking)} of {len(segs)} tracks speaking"
                     + (f", {sum(quiet.values())} not (kept as non-speech clips: "
                        + ", ".join(f"{k} {n}" for k, n in sorted(quiet.items())) + ")"
                        if quiet else ""),
                     _dropped(unscored, "speakers")),
        "label": (f"{count_rows(ws, 'labels')} frames labelled (FER, valence/arousal, "
                  f"AUs), {count_rows(ws, 'segments')} HMM segments",
                  _dropped(rej, "label")),
        "report": (f"{len(clips)} clips ({sum(bool(c['speaking']) for c in clips)} speaking): "
                   + ", ".join(f"{s} {splits[s]}" for s in ("train", "val", "test")),
                   _dropped(rej, "report")),
    }
    return [f"  {stage:<11} {kept}; {dropped}" for stage, (kept, dropped) in lines.items()]


def next_steps(ws: Any, recipe_path: Path, program: str, workspace_given: bool = False
               ) -> list[str]:
    """Where the report is, and the commands to review the clips and train both students (with
    ``-w`` when the demo ran in a workspace of the user's choosing)."""
    target = _shown(recipe_path) + (f" -w {_shown(ws.root)}" if workspace_given else "")
    return [
        f"Report:  {ws.root / 'report' / 'report.html'}  (open it in a browser; report.json, "
        "dataset_card.md and croissant.json beside it)",
        f"Review:  {program} review {target}  (a page on http://127.0.0.1:8765/ to play, accept "
        "and reject clips; the next run applies the decisions)",
        f"Train:   {program} train speech {target} --epochs 10   (speech-emotion student, "
        "distilled from the face teacher on the speaking clips)",
        f"         {program} train fer {target} --epochs 2   (the FER teacher fine-tuned on the "
        "clips' crops)",
    ]


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def program_name(argv0: str) -> str:
    """How to call dsbuilder again: ``dsbuilder`` when that is what PATH finds, else the path of
    the program that is running (``.venv/bin/dsbuilder`` after ``make demo``)."""
    import shutil

    found = shutil.which("dsbuilder")
    here = Path(argv0).resolve() if argv0 else None
    if found and here and Path(found).resolve() == here:
        return "dsbuilder"
    return _shown(here) if here and here.name == "dsbuilder" else "dsbuilder"
