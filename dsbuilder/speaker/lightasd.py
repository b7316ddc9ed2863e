"""Light-ASD, a learned active-speaker model, in our own PyTorch code.

J. Liao, H. Duan, K. Feng, W. Zhao, Y. Yang, L. Chen, "A Light Weight Model for Active Speaker
Detection", CVPR 2023; code and weights github.com/Junhua-Liao/Light-ASD (MIT licence), commit
:data:`UPSTREAM_COMMIT`. We load its TalkSet fine-tuned weights (``weight/finetuning_TalkSet.model``,
a state dict) unchanged: the parameter names below are the state dict's keys. The port is checked
against the upstream code (``tests/test_lightasd.py``, fixture made by
``tools/lightasd_fixture.py``).

The network (read from the paper and ``model/Encoder.py``, ``model/Classifier.py``, ``loss.py``)
----------------------------------------------------------------------------------------------
Input per track window: ``T`` grey face crops 112x112 at 25 fps (uint8 values) and ``4T`` rows of 13
MFCCs at 100 Hz.

* **Visual encoder.** Pixels are normalised ``(x / 255 - 0.4161) / 0.1688``, shaped (B, 1, T, 112,
  112). Three blocks of 32, 64, 128 channels; each block runs two branches in parallel, a 3-wide and a
  5-wide one, each a *spatial* convolution (1 x k x k, the first block with stride 2 in space) then
  a *temporal* one (k x 1 x 1), each followed by batch norm and ReLU; the branches are added, then a
  1x1x1 convolution, batch norm, ReLU. Max pooling 3x3 stride 2 in space after blocks 1 and 2
  (112 -> 56 -> 28 -> 14 -> 14), then a spatial max over each frame: (B, T, 128).
* **Audio encoder.** MFCCs as an image (B, 1, 13, 4T) (coefficients x time). The same two-branch
  blocks in 2-D: a k x 1 convolution over the coefficients then a 1 x k one over time. Max pooling
  over time (kernel 3, stride 2) after blocks 1 and 2 (4T -> 2T -> T), then the mean over the
  coefficient axis: (B, T, 128), one vector per video frame.
* **Back end.** The two embeddings are *added*; a forward GRU (128 -> 128), GELU, then another GRU
  run over the time-reversed sequence (reversed back), GELU (upstream ``BGRU``).
* **Head.** ``lossAV.FC``, a linear layer 128 -> 2. Upstream's inference score is the second output
  (``lossAV.forward(x, labels=None)`` returns ``x[:, 1]``) and a frame counts as speaking when it is
  > 0; training uses the softmax of both outputs. :meth:`LightASD.forward` returns both; see
  :func:`speaking_logit` for the one we use. ``lossV.FC`` (a visual-only head used as an auxiliary
  loss in training) is loaded but not used.

All batch norms have eps 1e-3. Convolutions have no bias.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from dsbuilder.workspace import sha256_file

#: The upstream repository and the commit whose code and weights we follow.
UPSTREAM_REPO = "Junhua-Liao/Light-ASD"
UPSTREAM_COMMIT = "ed38c232de5efe0261dbd68627c0ade7cdfe14eb"
WEIGHTS_NAME = "finetuning_TalkSet.model"
WEIGHTS_SHA256 = "efc375833887eefa9d209dc92810e18519b04c3c73ea35a549f2a7f40b7d94d5"
WEIGHTS_BYTES = 4175289
LICENSE_SHA256 = "3c5b187c06d6c0fdcfe02ad73f51470eaa35045cc2e60749d805332d98441eb1"
WEIGHTS_URL = (f"https://github.com/{UPSTREAM_REPO}/raw/{UPSTREAM_COMMIT}/weight/{WEIGHTS_NAME}")
LICENSE_URL = f"https://github.com/{UPSTREAM_REPO}/raw/{UPSTREAM_COMMIT}/LICENSE"
#: Name recorded in the manifests (``speech.scorer``).
MODEL_NAME = "light-asd"

#: What the model was trained on: 25 fps video, 4 MFCC rows per video frame.
FPS = 25
AUDIO_PER_FRAME = 4
CROP = 112
PIXEL_MEAN, PIXEL_STD = 0.4161, 0.1688
BN_EPS = 1e-3


def _build():
    """The torch module classes (torch is imported only when a model is built)."""
    import torch
    from torch import nn

    class TwoBranchBlock(nn.Module):
        """Parallel 3- and 5-wide factorised convolutions, added, then a pointwise convolution.

        ``dims`` 3 (video: spatial k x k, then temporal k) or 2 (audio: over coefficients k, then
        over time k). Attribute names follow the upstream state dict: the first convolution of a
        branch is ``s_k`` (video) or ``m_k`` (audio), the second ``t_k``.
        """

        def __init__(self, dims: int, cin: int, cout: int, first: str, down: bool = False):
            super().__init__()
            conv = nn.Conv3d if dims == 3 else nn.Conv2d
            norm = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
            self.first = first
            for k in (3, 5):
                if dims == 3:
                    k1, p1, s1 = (1, k, k), (0, k // 2, k // 2), (1, 2, 2) if down else 1
                    k2, p2 = (k, 1, 1), (k // 2, 0, 0)
                else:
                    k1, p1, s1 = (k, 1), (k // 2, 0), 1
                    k2, p2 = (1, k), (0, k // 2)
                setattr(self, f"{first}_{k}", conv(cin, cout, k1, stride=s1, padding=p1, bias=False))
                setattr(self, f"bn_{first}_{k}", norm(cout, eps=BN_EPS))
                setattr(self, f"t_{k}", conv(cout, cout, k2, padding=p2, bias=False))
                setattr(self, f"bn_t_{k}", norm(cout, eps=BN_EPS))
            self.last = conv(cout, cout, 1, bias=False)
            self.bn_last = norm(cout, eps=BN_EPS)

        def branch(self, x, k: int):
            f = self.first
            x = torch.relu(getattr(self, f"bn_{f}_{k}")(getattr(self, f"{f}_{k}")(x)))
            return torch.relu(getattr(self, f"bn_t_{k}")(getattr(self, f"t_{k}")(x)))

        def forward(self, x):
            return torch.relu(self.bn_last(self.last(self.branch(x, 3) + self.branch(x, 5))))

    class VisualEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.block1 = TwoBranchBlock(3, 1, 32, "s", down=True)
            self.block2 = TwoBranchBlock(3, 32, 64, "s")
            self.block3 = TwoBranchBlock(3, 64, 128, "s")

        def forward(self, x):  # (B, 1, T, H, W) -> (B, T, 128)
            pool = dict(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
            x = nn.functional.max_pool3d(self.block1(x), **pool)
            x = nn.functional.max_pool3d(self.block2(x), **pool)
            x = self.block3(x)
            return x.amax(dim=(3, 4)).transpose(1, 2)

    class AudioEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.block1 = TwoBranchBlock(2, 1, 32, "m")
            self.block2 = TwoBranchBlock(2, 32, 64, "m")
            self.block3 = TwoBranchBlock(2, 64, 128, "m")

        def forward(self, x):  # (B, 1, 13, 4T) -> (B, T, 128)
            pool = dict(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1))
            x = nn.functional.max_pool2d(self.block1(x), **pool)
            x = nn.functional.max_pool2d(self.block2(x), **pool)
            x = self.block3(x)
            return x.mean(dim=2).transpose(1, 2)

    class Backend(nn.Module):
        """Upstream ``BGRU``: a forward GRU, then a second GRU over the reversed sequence."""

        def __init__(self, width: int = 128):
            super().__init__()
            self.gru_forward = nn.GRU(width, width, batch_first=True)
            self.gru_backward = nn.GRU(width, width, batch_first=True)

        def forward(self, x):
            x = nn.functional.gelu(self.gru_forward(x)[0])
            x = self.gru_backward(x.flip(1))[0].flip(1)
            return nn.functional.gelu(x)

    class Core(nn.Module):
        def __init__(self):
            super().__init__()
            self.visualEncoder = VisualEncoder()
            self.audioEncoder = AudioEncoder()
            self.GRU = Backend()

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.FC = nn.Linear(128, 2)

    class LightASD(nn.Module):
        """``forward(mfcc (B, 4T, 13) float32, faces (B, T, 112, 112) 0-255) -> (B, T, 2)``."""

        def __init__(self):
            super().__init__()
            self.model = Core()
            self.lossAV = Head()
            self.lossV = Head()

        def forward(self, mfcc, faces):
            b, t = faces.shape[:2]
            v = ((faces / 255.0 - PIXEL_MEAN) / PIXEL_STD).unsqueeze(1)
            v = self.model.visualEncoder(v)
            a = self.model.audioEncoder(mfcc.transpose(1, 2).unsqueeze(1))
            x = self.model.GRU(a + v)
            return self.lossAV.FC(x)

    return LightASD


_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def load_model(weights: str | Path):
    """The model with the upstream weights, in eval mode (cached per process and path).

    The file is checked against :data:`WEIGHTS_SHA256` and read with ``weights_only=True`` (no
    pickled code runs). Every key must match: a missing or unexpected tensor is an error, not a
    silently random layer. Raises ``ValueError`` for a wrong file.
    """
    import torch

    path = Path(weights)
    with _lock:
        if str(path) in _loaded:
            return _loaded[str(path)]
        digest = sha256_file(path)
        if digest != WEIGHTS_SHA256:
            raise ValueError(f"{path}: sha256 {digest[:12]}... is not the pinned "
                             f"{WEIGHTS_SHA256[:12]}... (corrupt or another file)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = _build()()
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: state dict does not fit Light-ASD (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        net.eval()
        _loaded[str(path)] = net
        return net


class OnnxLightASD:
    """The port exported to ONNX, run by onnxruntime: 1.7x faster than torch eager here (0.96 against
    1.65 s for a 4.3 s track on one thread; outputs equal to 3e-6). Same call as the torch module."""

    def __init__(self, path: Path, threads: int = 2):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path

    def run(self, mfcc: np.ndarray, faces: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {"mfcc": mfcc[None].astype(np.float32),
                                      "faces": faces[None].astype(np.float32)})[0]
        return np.asarray(out[0], np.float64)


def export_onnx(net, path: Path) -> None:
    """Export the torch port (dynamic length) to ``path``."""
    import warnings

    import torch

    a, v = torch.zeros(1, 4 * 50, 13), torch.zeros(1, 50, CROP, CROP)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (a, v), str(path), input_names=["mfcc", "faces"],
                          output_names=["out"], opset_version=17, dynamo=False,
                          dynamic_axes={"mfcc": {1: "rows"}, "faces": {1: "frames"},
                                        "out": {1: "frames"}})


def load_runner(weights: str | Path, threads: int = 2):
    """The fastest runner available for the pinned weights: onnxruntime on the ONNX export kept
    beside them (made once, atomically, when the ``onnx`` exporter is installed), else torch."""
    import importlib.util

    from dsbuilder.workspace import atomic_path

    weights = Path(weights)
    key = f"runner:{weights}:{threads}"
    net = load_model(weights)
    onnx_path = weights.with_name(f"light_asd_port-{WEIGHTS_SHA256[:12]}.onnx")
    with _lock:
        if key in _loaded:
            return _loaded[key]
        if not onnx_path.is_file() and importlib.util.find_spec("onnx") is not None:
            try:
                with atomic_path(onnx_path) as tmp:
                    export_onnx(net, tmp)
            except (OSError, RuntimeError) as exc:  # read-only cache, exporter failure: use torch
                import logging

                logging.getLogger(__name__).info("light-asd: no ONNX export (%s); torch runs it",
                                                 exc)
        runner = OnnxLightASD(onnx_path, threads) if onnx_path.is_file() else net
        _loaded[key] = runner
        return runner


def forward(net, mfcc: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """One window: ``mfcc`` (4T, 13), ``faces`` (T, 112, 112) uint8 -> (T, 2) head outputs.
    ``net``: the torch module or an :class:`OnnxLightASD`."""
    if isinstance(net, OnnxLightASD):
        return net.run(mfcc, faces)
    import torch

    with torch.inference_mode():
        a = torch.from_numpy(np.ascontiguousarray(mfcc, np.float32))[None]
        v = torch.from_numpy(np.ascontiguousarray(faces, np.float32))[None]
        return net(a, v)[0].numpy().astype(np.float64)


def speaking_logit(out: np.ndarray) -> np.ndarray:
    """The speaking logit of each frame from the head's two outputs: ``out[:, 1] - out[:, 0]``.

    The model was trained with a softmax over the two outputs, so the probability of speaking is
    ``sigmoid(out1 - out0)``. Upstream's demo thresholds ``out1`` alone at 0; with these weights
    the head is antisymmetric (``FC`` rows and biases nearly opposite: ``out0 ~ -out1``), so both
    rules agree in sign (tests/test_lightasd.py checks that).
    """
    out = np.asarray(out, np.float64)
    return out[:, 1] - out[:, 0]


def mfcc(samples_int16: np.ndarray, rate: int = 16000) -> np.ndarray:
    """13 MFCCs at 100 Hz (25 ms window, 10 ms step) as upstream computes them:
    ``python_speech_features.mfcc`` on the 16-bit sample values (not scaled to [-1, 1]: the log
    energies depend on the scale)."""
    import python_speech_features as psf

    x = np.asarray(samples_int16)
    return psf.mfcc(x, rate, numcep=13, winlen=0.025, winstep=0.010).astype(np.float32)


# --- weights: fetched from upstream (or a local folder), pinned by sha256 --------------------------

def weights_dir() -> Path:
    """Where ``dsbuilder models pull light-asd`` puts the weights (beside the FER teacher's)."""
    from dsbuilder.labels.fer import models_dir

    return models_dir() / f"light-asd-{UPSTREAM_COMMIT[:12]}"


def installed_weights() -> tuple[Path | None, str]:
    """``(path, "")`` when pulled weights with the pinned sha256 are present, else ``(None, why)``."""
    path = weights_dir() / WEIGHTS_NAME
    if not path.is_file():
        return None, f"Light-ASD weights not found in {path.parent}"
    digest = sha256_file(path)
    if digest != WEIGHTS_SHA256:
        return None, f"{path}: sha256 {digest[:12]}... is not the pinned {WEIGHTS_SHA256[:12]}..."
    return path, ""


def pull_weights(source_dir: str | Path | None = None, force: bool = False,
                 timeout_s: float = 120.0) -> Path:
    """Fetch the TalkSet weights and the repository's licence into :func:`weights_dir`.

    From the raw-file URLs at :data:`UPSTREAM_COMMIT`, or copied from ``source_dir`` (a folder with
    ``finetuning_TalkSet.model`` and ``LICENSE``). Both files are checked against their pinned sha256
    before the folder is renamed into place. Raises :class:`dsbuilder.labels.fer.ModelError`.
    """
    import json
    import os
    import shutil
    import tempfile

    from dsbuilder.labels.fer import ModelError

    target = weights_dir()
    if not force and installed_weights()[0] is not None and (target / "LICENSE").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    files = {WEIGHTS_NAME: (WEIGHTS_URL, WEIGHTS_SHA256), "LICENSE": (LICENSE_URL, LICENSE_SHA256)}
    with tempfile.TemporaryDirectory(prefix=".light-asd-", dir=target.parent) as tmp:
        staging = Path(tmp) / "out"
        staging.mkdir()
        for name, (url, sha) in files.items():
            dest = staging / name
            if source_dir is not None:
                src = Path(source_dir) / name
                if not src.is_file():
                    raise ModelError(f"{src} not found", f"--from needs a folder with {WEIGHTS_NAME} "
                                     "and LICENSE")
                shutil.copyfile(src, dest)
            else:
                _download(url, dest, timeout_s, max_bytes=WEIGHTS_BYTES * 2)
            digest = sha256_file(dest)
            if digest != sha:
                size = dest.stat().st_size
                raise ModelError(f"{name}: sha256 {digest[:12]}... ({size} bytes) is not the pinned "
                                 f"{sha[:12]}...", "the file is truncated or not the pinned "
                                 f"release; fetch it again from {url}")
        (staging / "SOURCE.json").write_text(json.dumps({
            "model": "Light-ASD (Liao et al., CVPR 2023), fine-tuned on TalkSet",
            "repository": f"https://github.com/{UPSTREAM_REPO}", "commit": UPSTREAM_COMMIT,
            "url": WEIGHTS_URL, "sha256": WEIGHTS_SHA256, "licence": "MIT (LICENSE beside it)",
            "fetched_from": str(source_dir) if source_dir is not None else WEIGHTS_URL},
            indent=1))
        if target.exists():
            os.replace(target, Path(tmp) / "old")
        os.replace(staging, target)
    return target


def _download(url: str, dest: Path, timeout_s: float, max_bytes: int) -> None:
    import requests

    from dsbuilder.labels.fer import ModelError

    try:
        with requests.get(url, stream=True, timeout=(10, timeout_s)) as r:
            r.raise_for_status()
            n = 0
            with open(dest, "wb") as fh:
                for block in r.iter_content(1 << 16):
                    n += len(block)
                    if n > max_bytes:
                        raise ModelError(f"{url}: more than {max_bytes} bytes", "not the pinned file")
                    fh.write(block)
    except requests.RequestException as exc:
        raise ModelError(f"cannot fetch {url}: {type(exc).__name__}",
                         "check the network, or use `dsbuilder models pull light-asd --from DIR` "
                         "with a folder holding finetuning_TalkSet.model and LICENSE") from None
