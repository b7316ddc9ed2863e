"""Make tests/data/lightasd_fixture.npz: the upstream Light-ASD code's outputs on fixed inputs.

Our port (dsbuilder/speaker/lightasd.py) must reproduce these numbers (tests/test_lightasd.py). This
script runs the *upstream* modules (``model/Model.py``, ``loss.py`` of Junhua-Liao/Light-ASD at the
pinned commit), never our port, and upstream's own MFCC call.

Inputs (all free to commit): 3 s of grey 112x112 face crops at 25 fps cut from ``grace_hopper.jpg``
(US Navy photograph, public domain, shipped inside matplotlib), the crop window drifting and its lower
half (mouth) stretched a little with the synthetic voice's envelope; audio: 3 s of our synthetic
voiced sound (``dsbuilder.synth.speech_like``, CC0) as 16-bit samples at 16 kHz.

Outputs: upstream's MFCCs of the audio, the head's two outputs for the whole window in one forward
pass, and per-frame scores from upstream's evaluation loop (``Columbia_test.evaluate_network``:
non-overlapping chunks of 1..6 s, the ``durationSet`` {1,1,1,2,2,2,3,3,4,5,6}, scores averaged; we keep
them unrounded).

Rerun (needs torch, numpy, scipy, opencv, matplotlib, python_speech_features: the project's .venv):

    git -C <mirror of Junhua-Liao/Light-ASD> archive ed38c232de5efe0261dbd68627c0ade7cdfe14eb \\
        | tar -x -C /tmp/lightasd-upstream
    .venv/bin/python tools/lightasd_fixture.py --upstream /tmp/lightasd-upstream \\
        --weights ../shared/models/light-asd/finetuning_TalkSet.model
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SECONDS = 3
FPS = 25


def make_inputs() -> tuple[np.ndarray, np.ndarray]:
    """(faces (75, 112, 112) uint8, audio (48000,) int16), deterministic."""
    import cv2

    sys.path.insert(0, str(REPO))
    from dsbuilder.synth import grace_hopper, speech_like

    rate = 16000
    audio = speech_like(SECONDS, rate, seed=3)
    audio16 = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
    env = np.abs(audio).reshape(SECONDS * FPS, -1).mean(axis=1)
    env = env / (env.max() + 1e-9)
    grey = cv2.cvtColor(grace_hopper(), cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    faces = []
    for i in range(SECONDS * FPS):
        # a square around the lower face, drifting by a few pixels; the mouth half stretched by the
        # envelope (a crude talking motion; the fixture needs realistic pixels, not real speech)
        cx, cy, side = 0.48 * w + 3 * math.sin(i / 7), 0.42 * h + 2 * math.cos(i / 5), 0.34 * w
        x0, y0 = int(cx - side / 2), int(cy - side / 2)
        crop = grey[y0:y0 + int(side), x0:x0 + int(side)]
        crop = cv2.resize(crop, (112, 112), interpolation=cv2.INTER_AREA)
        top, bottom = crop[:56], crop[56:]
        stretch = int(56 * (1 + 0.25 * env[i]))
        bottom = cv2.resize(bottom, (112, stretch))[:56]
        faces.append(np.concatenate([top, bottom]))
    return np.stack(faces).astype(np.uint8), audio16


def upstream_outputs(upstream: Path, weights: Path, faces: np.ndarray, audio16: np.ndarray):
    import python_speech_features
    import torch

    sys.path.insert(0, str(upstream))
    from loss import lossAV  # upstream
    from model.Model import ASD_Model  # upstream

    model, head = ASD_Model(), lossAV()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict({k[len("model."):]: v for k, v in state.items()
                           if k.startswith("model.")})
    head.load_state_dict({k[len("lossAV."):]: v for k, v in state.items()
                          if k.startswith("lossAV.")})
    model.eval()
    head.eval()
    # upstream Columbia_test.evaluate_network, lines 215-244, without .cuda() and the final rounding
    mfcc = python_speech_features.mfcc(audio16, 16000, numcep=13, winlen=0.025, winstep=0.010)
    length = min((mfcc.shape[0] - mfcc.shape[0] % 4) / 100, faces.shape[0])
    mfcc = mfcc[:int(round(length * 100)), :]
    video = faces[:int(round(length * 25)), :, :]

    def run(a, v):
        ea = model.forward_audio_frontend(torch.FloatTensor(a).unsqueeze(0))
        ev = model.forward_visual_frontend(torch.FloatTensor(v).unsqueeze(0))
        return model.forward_audio_visual_backend(ea, ev)

    with torch.no_grad():
        whole = head.FC(run(mfcc, video)).numpy()
        all_scores = []
        for duration in [1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6]:
            scores = []
            for i in range(int(math.ceil(length / duration))):
                out = run(mfcc[i * duration * 100:(i + 1) * duration * 100],
                          video[i * duration * 25:(i + 1) * duration * 25])
                scores.extend(head.forward(out, labels=None))
            all_scores.append(scores)
    return mfcc.astype(np.float32), whole.astype(np.float64), np.mean(all_scores, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", type=Path, required=True, help="checkout of Light-ASD at the pin")
    ap.add_argument("--weights", type=Path, required=True, help="finetuning_TalkSet.model")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "lightasd_fixture.npz")
    args = ap.parse_args()
    faces, audio16 = make_inputs()
    mfcc, whole, eval_scores = upstream_outputs(args.upstream, args.weights, faces, audio16)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, faces=faces, audio16=audio16, mfcc=mfcc, whole=whole,
                        eval_scores=eval_scores)
    print(f"{args.out}: faces {faces.shape}, mfcc {mfcc.shape}, whole {whole.shape}, "
          f"eval scores {eval_scores.shape}, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
