"""dlib's face-recognition ResNet in PyTorch: batched 128-d face descriptors that release the GIL.

dlib's ``face_recognition_model_v1.compute_face_descriptor`` runs one face at a time (about 150 ms on
a 2-core CPU) and holds Python's GIL while it does. This module reads the same weights file,
``dlib_face_recognition_resnet_model_v1.dat`` from the ``face_recognition_models`` wheel (Davis King,
CC0), into an equivalent :class:`torch.nn.Module`, so that chips are embedded in batches by torch,
which releases the GIL. The descriptors equal dlib's to float32 rounding (tests/test_resnet_torch.py).

Public functions: :func:`read_dlib_layers` (the file's layers, in forward order, as numpy),
:func:`load_dlib_resnet` (the torch module, cached per process) and :func:`embed_chips` (uint8 RGB
150x150 chips, as made by ``dlib.get_face_chip(img, shape5, size=150, padding=0.25)``, to (n, 128)).

The architecture
----------------
The network is ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``::

    template <template <int,template<typename>class,int,typename> class block, int N,
              template<typename>class BN, typename SUBNET>
    using residual = add_prev1<block<N,BN,1,tag1<SUBNET>>>;
    template <...> using residual_down
        = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>;
    template <int N, template <typename> class BN, int stride, typename SUBNET>
    using block = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>;
    template <int N, typename SUBNET> using ares      = relu<residual<block,N,affine,SUBNET>>;
    template <int N, typename SUBNET> using ares_down = relu<residual_down<block,N,affine,SUBNET>>;
    template <typename SUBNET> using alevel0 = ares_down<256,SUBNET>;
    template <typename SUBNET> using alevel1 = ares<256,ares<256,ares_down<256,SUBNET>>>;
    template <typename SUBNET> using alevel2 = ares<128,ares<128,ares_down<128,SUBNET>>>;
    template <typename SUBNET> using alevel3 = ares<64,ares<64,ares<64,ares_down<64,SUBNET>>>>;
    template <typename SUBNET> using alevel4 = ares<32,ares<32,ares<32,SUBNET>>>;
    using anet_type = loss_metric<fc_no_bias<128,avg_pool_everything<
                                alevel0<alevel1<alevel2<alevel3<alevel4<
                                max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,
                                input_rgb_image_sized<150>>>>>>>>>>>>>;

Read inside-out, the forward pass is:

* input: ``(pixel - mean) / 256`` per channel, R, G, B (means stored in the file: 122.782, 117.001,
  104.298);
* stem: conv 7x7 stride 2 (32 filters, with bias) -> affine -> relu -> max pool 3x3 stride 2;
* 14 residual blocks: 3 x 32, then 64 (down + 3), 128 (down + 2), 256 (down + 2), 256 (down). A block
  is ``x -> conv3x3(stride) -> affine -> relu -> conv3x3(1) -> affine``, plus ``x`` (or, in a "down"
  block, ``avg_pool 2x2 stride 2 (x)``), then relu;
* global average pool -> fully connected 256 -> 128 without bias. The loss layer (``loss_metric``)
  outputs that vector unchanged: no normalisation.

``affine`` is batch norm frozen into ``gamma[c] * x + beta[c]``. In dlib, convolutions and pooling
layers default to ``padding = stride != 1 ? 0 : size/2``: strided layers have **no** padding, 3x3
stride-1 convolutions have padding 1. Sizes from 150: 72 (stem conv) -> 35 (max pool) -> 17 -> 8 ->
then the "down" convolutions no longer meet their pooled shortcut: conv 3x3/2 of 8 gives 3 but avg
pool 2x2/2 of 8 gives 4 (then 1 vs 2). dlib's ``add_prev`` makes an output of the larger size in
every dimension (channels too: 32 vs 64 in a down block) and adds the two tensors as if the smaller
were zero-padded at the end (``tt::add`` reads 0 out of bounds). :func:`_add_zero_padded` does that.

The file format
---------------
dlib serialises a network by recursion from the loss layer down (``dlib/dnn/core.h``):

* ``add_loss_layer``: version ``1``, the loss details (``"loss_metric_2"``, margin, distance
  threshold), then the subnetwork;
* ``add_layer``: version ``2``, the subnetwork, then *its own* details, then state: three bools and
  three tensors (``x_grad``, ``cached_output``, and ``params_grad`` or ``grad_final``; empty here);
  the ``add_layer`` directly over the input layer may have version 3, which adds an unsigned int;
* ``add_tag_layer`` / ``add_skip_layer``: version ``1`` then the subnetwork, nothing after.

So the file is: all the versions (outermost first), then the input layer, then each layer's details
in **forward order**, each followed by its ``add_layer`` state. Layer details start with a string
naming their kind and format (``dlib/dnn/layers.h``, ``input.h``):

* ``"input_rgb_image_sized"``: avg_red, avg_green, avg_blue (floats), NR, NC;
* ``"con_4"``: params tensor (all filters then the biases), num_filters, nr, nc, stride_y, stride_x,
  padding_y, padding_x, the filters and biases alias shapes, four learning-rate/decay floats;
* ``"affine_"``: params tensor (gamma then beta), gamma and beta alias shapes, mode (int; in newer
  files only);
* ``"relu_"``, ``"add_prev_"``: nothing;
* ``"max_pool_2"`` / ``"avg_pool_2"``: nr, nc, stride_y, stride_x, padding_y, padding_x (nr = nc = 0
  is ``avg_pool_everything``);
* ``"fc_2"``: num_outputs, num_inputs, params tensor, weights alias (num_inputs x num_outputs: the
  output is ``input @ W``), biases alias, bias mode, four floats.

Primitive encodings (``dlib/serialize.h``, ``dlib/float_details.h``, ``dlib/dnn/tensor.h``):

* integers: one control byte -- low 4 bits the number of magnitude bytes that follow, bit 0x80 the
  sign -- then the magnitude, little-endian;
* strings: a packed length then the characters; bools: the character ``'1'`` or ``'0'``;
* float/double: ``float_details``, a packed int64 mantissa then a packed int16 exponent, value =
  mantissa * 2**exponent (exponents 32000/32001/32002 mean inf/-inf/nan);
* tensor: version (2), num_samples, k, nr, nc, then the values as 4-byte little-endian IEEE floats;
  alias_tensor (a shape only): version (1), num_samples, k, nr, nc.

Tag and skip layers leave no trace after the input, so the topology cannot be read from the file:
it comes from the network definition above, and :func:`read_dlib_layers`' output is checked against
the layer sequence that definition implies (:func:`expected_layer_kinds`).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Chip side expected by the network (``input_rgb_image_sized<150>``).
CHIP_SIZE = 150
#: Descriptor length.
EMBEDDING_DIM = 128

#: Residual blocks in forward order: (filters, is a "down" block), from alevel4 to alevel0.
RESIDUAL_BLOCKS: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),                  # alevel4
    (64, True), (64, False), (64, False), (64, False),      # alevel3
    (128, True), (128, False), (128, False),                # alevel2
    (256, True), (256, False), (256, False),                # alevel1
    (256, True),                                            # alevel0
)


# --- reading dlib's serialisation ---------------------------------------------------------------

class DlibFormatError(ValueError):
    """The file is not the dlib network this module knows."""


class _Reader:
    """Sequential reader of dlib's serialised primitives over a bytes object."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def string(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def peek_string(self) -> str | None:
        """The string at the current position if one plausibly starts here, without consuming it."""
        start = self.pos
        try:
            n = self.int()
            if not 0 < n < 64:
                return None
            text = self._take(n)
            return text.decode("ascii") if text.replace(b"_", b"").isalnum() else None
        except (DlibFormatError, UnicodeDecodeError):
            return None
        finally:
            self.pos = start

    def next_is_bool(self) -> bool:
        """Whether a bool (``'0'``/``'1'``) comes next; no packed integer starts with those bytes."""
        return self.data[self.pos:self.pos + 1] in (b"0", b"1")

    def bool(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {char!r} at byte {self.pos - 1}")
        return char == b"1"

    def float(self) -> float:
        """A float or double written as dlib's ``float_details`` (mantissa * 2**exponent)."""
        mantissa = self.int()
        exponent = self.int()
        specials = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        if exponent in specials:
            return specials[exponent]
        return float(mantissa) * 2.0 ** exponent

    def shape(self, expected_version: int) -> tuple[int, int, int, int]:
        version = self.int()
        if version != expected_version:
            raise DlibFormatError(f"tensor version {version} (expected {expected_version}) "
                                  f"at byte {self.pos}")
        return tuple(self.int() for _ in range(4))  # num_samples, k, nr, nc

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor``: its shape then its values as little-endian float32."""
        shape = self.shape(expected_version=2)
        count = int(np.prod(shape))
        values = np.frombuffer(self._take(4 * count), dtype="<f4")
        return values.astype(np.float32).reshape(shape)

    def alias_shape(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: a shape, no values."""
        return self.shape(expected_version=1)


@dataclass
class DlibLayer:
    """One layer's details as serialised: its kind (the format string), its parameters (numpy
    arrays) and its settings (ints and floats)."""

    kind: str
    params: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, float | int | tuple] = field(default_factory=dict)


def _read_input_rgb_image_sized(r: _Reader) -> DlibLayer:
    means = [r.float() for _ in range(3)]
    nr, nc = r.int(), r.int()
    return DlibLayer("input", params={"mean_rgb": np.array(means, dtype=np.float32)},
                     settings={"nr": nr, "nc": nc})


def _read_learning_rate_floats(r: _Reader) -> None:
    """learning_rate_multiplier, weight_decay_multiplier and their bias twins: training only."""
    for _ in range(4):
        r.float()


def _read_con(r: _Reader) -> DlibLayer:
    params = r.tensor()
    num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(7))
    filters_shape = r.alias_shape()
    biases_shape = r.alias_shape()
    _read_learning_rate_floats(r)
    flat = params.reshape(-1)
    n_filters = int(np.prod(filters_shape))
    n_biases = int(np.prod(biases_shape))
    if n_filters + n_biases != flat.size or filters_shape[0] != num_filters:
        raise DlibFormatError(f"con_ params {params.shape} do not fit filters {filters_shape} "
                              f"+ biases {biases_shape}")
    return DlibLayer(
        "con",
        params={"weight": flat[:n_filters].reshape(filters_shape),  # (out, in, kh, kw) like torch
                "bias": flat[n_filters:].copy()},
        settings={"kernel": (nr, nc), "stride": (stride_y, stride_x), "padding": (pad_y, pad_x)})


def _read_affine(r: _Reader) -> DlibLayer:
    params = r.tensor().reshape(-1)
    gamma_shape = r.alias_shape()
    beta_shape = r.alias_shape()
    settings = {}
    if not r.next_is_bool():  # newer files write the mode; this one may not
        settings["mode"] = r.int()  # 0 = CONV_MODE (per channel), 1 = FC_MODE
    n_gamma = int(np.prod(gamma_shape))
    if n_gamma + int(np.prod(beta_shape)) != params.size:
        raise DlibFormatError("affine_ params do not fit gamma + beta")
    return DlibLayer("affine", params={"gamma": params[:n_gamma].copy(),
                                       "beta": params[n_gamma:].copy()}, settings=settings)


def _read_pool(kind: str):
    def read(r: _Reader) -> DlibLayer:
        nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(6))
        return DlibLayer(kind, settings={"kernel": (nr, nc), "stride": (stride_y, stride_x),
                                         "padding": (pad_y, pad_x)})
    return read


def _read_fc(r: _Reader) -> DlibLayer:
    num_outputs, num_inputs = r.int(), r.int()
    params = r.tensor().reshape(-1)
    weights_shape = r.alias_shape()
    biases_shape = r.alias_shape()
    bias_mode = r.int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
    _read_learning_rate_floats(r)
    n_weights = num_inputs * num_outputs
    if int(np.prod(weights_shape)) != n_weights:
        raise DlibFormatError(f"fc_ weights {weights_shape} vs {num_inputs}x{num_outputs}")
    layer = DlibLayer("fc", params={"weight": params[:n_weights].reshape(num_inputs, num_outputs)},
                      settings={"bias_mode": bias_mode, "biases_shape": biases_shape})
    if params.size > n_weights:
        layer.params["bias"] = params[n_weights:].copy()
    return layer


_LAYER_READERS = {
    "input_rgb_image_sized": _read_input_rgb_image_sized,
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": lambda r: DlibLayer("relu"),
    "add_prev_": lambda r: DlibLayer("add_prev"),
    "max_pool_2": _read_pool("max_pool"),
    "avg_pool_2": _read_pool("avg_pool"),
    "fc_2": _read_fc,
}


def _read_add_layer_state(r: _Reader, version: int) -> None:
    """What ``add_layer`` writes after its details: three bools and three (empty) tensors, plus
    ``_sample_expansion_factor`` in version 3 of the layer over the input."""
    for _ in range(3):
        r.bool()
    for _ in range(3):
        r.tensor()
    if version >= 3:
        r.int()


def read_dlib_layers(path: str | Path | None = None) -> list[DlibLayer]:
    """Every layer of the face-recognition network file, input first, in forward order."""
    data = Path(path or default_model_path()).read_bytes()
    r = _Reader(data)

    if r.int() != 1 or r.string() != "loss_metric_2":
        raise DlibFormatError("not a dlib loss_metric network")
    r.float(), r.float()  # margin, distance threshold: training only

    # The versions of every add_layer / tag / skip, outermost first, until the input layer's name.
    versions = []
    while r.peek_string() != "input_rgb_image_sized":
        versions.append(r.int())
        if len(versions) > 10_000:
            raise DlibFormatError("input layer not found")
    if not versions or versions[-1] not in (2, 3):
        raise DlibFormatError(f"unexpected add_layer versions {versions[-3:]}")

    layers = []
    while not r.at_end():
        kind = r.string()
        reader = _LAYER_READERS.get(kind)
        if reader is None:
            raise DlibFormatError(f"unknown layer {kind!r} at byte {r.pos}")
        layers.append(reader(r))
        if kind == "input_rgb_image_sized":
            continue  # the first add_layer's details follow at once; its state after them
        _read_add_layer_state(r, versions[-1] if len(layers) == 2 else 2)
    n_add_layers = sum(v in (2, 3) for v in versions)
    if n_add_layers != len(layers) - 1:
        raise DlibFormatError(f"{n_add_layers} add_layer versions but {len(layers) - 1} layers")
    return layers


def expected_layer_kinds() -> list[str]:
    """The layer sequence that ``anet_type`` serialises to, in forward order (no tags or skips)."""
    kinds = ["input", "con", "affine", "relu", "max_pool"]
    for _filters, down in RESIDUAL_BLOCKS:
        kinds += ["con", "affine", "relu", "con", "affine"]
        kinds += ["avg_pool", "add_prev", "relu"] if down else ["add_prev", "relu"]
    return kinds + ["avg_pool", "fc"]


def default_model_path() -> Path:
    from dsbuilder.face.api import model_files

    return Path(model_files().face_recognition_model_location())


# --- the torch module -------------------------------------------------------------------------------

def _add_zero_padded(a, b):
    """dlib's ``add_prev``: ``a + b`` where the smaller tensor counts as zero-padded at the end of
    every dimension (channels, rows, columns); the result has the larger size of each."""
    import torch.nn.functional as F

    if a.shape == b.shape:
        return a + b
    size = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def pad(t):  # F.pad lists (left, right) pairs from the last dimension backwards
        return F.pad(t, (0, size[3] - t.shape[3], 0, size[2] - t.shape[2], 0, size[1] - t.shape[1]))

    return pad(a) + pad(b)


@functools.lru_cache(maxsize=None)
def _module_classes():
    """The ``nn.Module`` classes, defined on first use so that importing this module stays cheap."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def conv_from(layer: DlibLayer) -> nn.Conv2d:
        weight = layer.params["weight"]
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], layer.settings["kernel"],
                         stride=layer.settings["stride"], padding=layer.settings["padding"])
        conv.weight.data = torch.from_numpy(weight.copy())
        conv.bias.data = torch.from_numpy(layer.params["bias"].copy())
        return conv

    class Affine(nn.Module):
        """dlib's ``affine_`` in conv mode: frozen batch norm, ``gamma[c] * x + beta[c]``."""

        def __init__(self, layer: DlibLayer):
            super().__init__()
            if layer.settings.get("mode", 0) != 0:
                raise DlibFormatError("only per-channel (CONV_MODE) affine layers are supported")
            self.register_buffer("gamma", torch.from_numpy(layer.params["gamma"]).view(1, -1, 1, 1))
            self.register_buffer("beta", torch.from_numpy(layer.params["beta"]).view(1, -1, 1, 1))

        def forward(self, x):
            return x * self.gamma + self.beta

    class ResidualBlock(nn.Module):
        """``ares`` / ``ares_down``: two 3x3 convolutions with affine layers, plus the input (average
        pooled 2x2/2 in a down block), then relu."""

        def __init__(self, layers: list[DlibLayer], down: bool):
            super().__init__()
            con1, aff1, _relu, con2, aff2 = layers[:5]
            self.conv1, self.affine1 = conv_from(con1), Affine(aff1)
            self.conv2, self.affine2 = conv_from(con2), Affine(aff2)
            self.down = down

        def forward(self, x):
            y = F.relu(self.affine1(self.conv1(x)))
            y = self.affine2(self.conv2(y))
            shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
            return F.relu(_add_zero_padded(shortcut, y))

    class DlibFaceResNet(nn.Module):
        """``anet_type`` of dnn_face_recognition_ex.cpp. Input: float (n, 3, 150, 150), RGB pixel
        values 0..255; output: (n, 128) descriptors."""

        def __init__(self, layers: list[DlibLayer]):
            super().__init__()
            kinds = [layer.kind for layer in layers]
            if kinds != expected_layer_kinds():
                raise DlibFormatError("the file's layers are not dlib's face-recognition ResNet")
            self.register_buffer("mean_rgb",
                                 torch.from_numpy(layers[0].params["mean_rgb"]).view(1, 3, 1, 1))
            self.stem_conv, self.stem_affine = conv_from(layers[1]), Affine(layers[2])
            pool = layers[4].settings
            self.stem_pool = nn.MaxPool2d(pool["kernel"], pool["stride"], pool["padding"])
            blocks, i = [], 5
            for _filters, down in RESIDUAL_BLOCKS:
                n_layers = 8 if down else 7
                blocks.append(ResidualBlock(layers[i:i + n_layers], down))
                i += n_layers
            self.blocks = nn.Sequential(*blocks)
            self.register_buffer("fc_weight", torch.from_numpy(layers[-1].params["weight"]))

        def forward(self, rgb):
            x = (rgb - self.mean_rgb) / 256.0
            x = self.stem_pool(F.relu(self.stem_affine(self.stem_conv(x))))
            x = self.blocks(x)
            x = x.mean(dim=(2, 3))  # avg_pool_everything
            return x @ self.fc_weight  # fc_no_bias; loss_metric passes it through

    return DlibFaceResNet


_load_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _load_cached(path: str):
    module = _module_classes()(read_dlib_layers(path))
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_dlib_resnet(path: str | Path | None = None):
    """The face-recognition ResNet as a ``torch.nn.Module`` in eval mode, built once per process
    (per path). ``path``: dlib's .dat file; default: the ``face_recognition_models`` one."""
    with _load_lock:
        return _load_cached(str(path or default_model_path()))


def chips_to_tensor(chips: np.ndarray):
    """uint8 RGB chips (n, 150, 150, 3) -> float32 tensor (n, 3, 150, 150) of pixel values."""
    import torch

    chips = np.asarray(chips)
    if chips.ndim == 3:
        chips = chips[None]
    if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"expected chips (n, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {chips.shape}")
    return torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()


#: Torch threads for the embedding, whatever the process's default: a convolution's float sums
#: depend on how its work is split between threads (1 and 2 threads differ in the last bit), and the
#: manifests must not depend on the executor (a pool worker's default is 1 thread, this process's 2).
EMBED_THREADS = 2


def embed_chips(chips: np.ndarray, batch_size: int = 32, path: str | Path | None = None,
                num_threads: int = EMBED_THREADS) -> np.ndarray:
    """128-d descriptors of aligned face chips, as dlib's ``compute_face_descriptor(chip)`` gives.

    ``chips``: uint8 RGB (n, 150, 150, 3) from ``dlib.get_face_chip(img, shape5, size=150,
    padding=0.25)`` (a single (150, 150, 3) chip is accepted too). Returns float32 (n, 128). Runs in
    torch (the GIL is released during the computation), ``batch_size`` chips at a time, with
    ``num_threads`` torch threads for the call (then restored)."""
    import torch

    net = load_dlib_resnet(path)
    x = chips_to_tensor(chips)
    out = np.empty((x.shape[0], EMBEDDING_DIM), dtype=np.float32)
    from dsbuilder.torch_threads import torch_threads

    with torch_threads(num_threads), torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            out[start:start + batch_size] = net(x[start:start + batch_size]).numpy()
    return out
