"""CNN-F ("VGG-F", Chatfield et al., BMVC 2014) fc7: the image features of DCMH and of the reference preparation.

The weights are MatConvNet's `imagenet-vgg-f.mat` (the file DCMH distributes, from
https://www.vlfeat.org/matconvnet/pretrained/), a `simplenn` network: a variable `layers`, one
struct per layer with `type`, `name` and the fields of its type (conv: `weights` = {filters
H x W x Cin x Cout, biases}, `stride`, `pad` [top bottom left right]; pool: `method`, `pool`
[h w], `stride`, `pad`; lrn: `param` [N kappa alpha beta]). They are read by type and field name,
up to the ReLU after fc7, checked against CNN-F's layer sizes, and run in PyTorch with
MatConvNet's definitions of each layer (https://www.vlfeat.org/matconvnet/functions/: vl_nnconv,
vl_nnpool, vl_nnnormalize).

Input, as the reference preparation: the RGB image resized to 224 x 224 (PIL bilinear, no crop),
0..255, minus the mean image of the pool over the same resized images. Output: 4096-d, fc7 after its ReLU.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image

from coco_unified import CocoError
from tools.lib.image_features.mean_image import INPUT_SIZE, check_mean_image
from tools.lib.image_features.models import DTYPES, FeatureModel, ModelOptions, WorkerSteps, file_sha256

FEATURE = "cnnf_fc7"
FEATURE_LAYER = "fc7"

# CNN-F's convolutions (fc6 and fc7 are convolutions in MatConvNet) as
# name: (filter height, filter width, input channels, output channels, stride) - Chatfield et al., table 1.
CNNF_CONVOLUTIONS = {
    "conv1": (11, 11, 3, 64, 4),
    "conv2": (5, 5, 64, 256, 1),
    "conv3": (3, 3, 256, 256, 1),
    "conv4": (3, 3, 256, 256, 1),
    "conv5": (3, 3, 256, 256, 1),
    "fc6": (6, 6, 256, 4096, 1),
    "fc7": (1, 1, 4096, 4096, 1),
}
DIM = CNNF_CONVOLUTIONS[FEATURE_LAYER][3]

_GET_THE_FILE = (
    "Pass MatConvNet's CNN-F, imagenet-vgg-f.mat (https://www.vlfeat.org/matconvnet/pretrained/, also "
    "distributed with DCMH), as weights=FILE."
)


# ----------------------------------------------------------------------------- reading the .mat


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    name: str
    filters: np.ndarray  # height x width x input channels x output channels, as MatConvNet stores them
    biases: np.ndarray
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]  # top, bottom, left, right


@dataclasses.dataclass(frozen=True)
class PoolLayer:
    name: str
    method: str
    size: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class LrnLayer:
    name: str
    depth: int  # N: channels in the window
    kappa: float
    alpha: float
    beta: float


@dataclasses.dataclass(frozen=True)
class ReluLayer:
    name: str


Layer = ConvLayer | PoolLayer | LrnLayer | ReluLayer


def read_simplenn(path: str, last: str = FEATURE_LAYER) -> list[Layer]:
    """The layers of a MatConvNet simplenn file, up to the ReLU that follows the layer named `last`."""
    try:
        contents = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise CocoError(f"{path} not found. {_GET_THE_FILE}") from None
    except Exception as error:  # noqa: BLE001 - scipy raises ValueError, TypeError, OSError... for a damaged file
        raise CocoError(
            f"{path}: not a readable MATLAB .mat file ({error}); it is truncated or of another format. {_GET_THE_FILE}"
        ) from None
    if "layers" not in contents:
        found = sorted(key for key in contents if not key.startswith("__"))
        raise CocoError(
            f"{path}: holds no variable `layers` (found {found}); not a MatConvNet simplenn network. {_GET_THE_FILE}"
        )
    layers: list[Layer] = []
    for position, record in enumerate(_layer_records(contents["layers"], path)):
        layer = _read_layer(record, f"{path}, layer {position + 1}")
        if layer is not None:
            layers.append(layer)
        if isinstance(layer, ReluLayer) and any(earlier.name == last for earlier in layers):
            return layers
    raise CocoError(f"{path}: no layer {last} followed by a ReLU; not the CNN-F file. {_GET_THE_FILE}")


def _layer_records(layers: np.ndarray, path: str) -> list[np.void]:
    """The struct of each layer, whether `layers` was saved as a cell array of structs or a struct array."""
    if layers.dtype.names is not None:
        return list(layers.ravel())
    records = []
    for cell in layers.ravel():
        record = np.asarray(cell).ravel()
        if record.size != 1 or record.dtype.names is None:
            raise CocoError(f"{path}: `layers` is not a list of structs; not a MatConvNet simplenn network.")
        records.append(record[0])
    return records


def _field(record: np.void, name: str, where: str):
    if name not in (record.dtype.names or ()):
        raise CocoError(f"{where}: has no field `{name}`; not a MatConvNet simplenn layer. {_GET_THE_FILE}")
    return record[name]


def _text(record: np.void, name: str, where: str) -> str:
    value = np.asarray(_field(record, name, where)).ravel()
    if value.size != 1 or not isinstance(value[0], str):
        raise CocoError(f"{where}: field `{name}` is not a string. {_GET_THE_FILE}")
    return str(value[0])


def _numbers(record: np.void, name: str, where: str, count: int) -> tuple:
    """A field of `count` numbers; MatConvNet writes a single number when they are all equal."""
    try:
        values = np.asarray(_field(record, name, where), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise CocoError(f"{where}: field `{name}` is not numeric. {_GET_THE_FILE}") from None
    if values.size == 1:
        values = np.repeat(values, count)
    if values.size != count:
        raise CocoError(f"{where}: field `{name}` holds {values.size} numbers, expected {count}. {_GET_THE_FILE}")
    return tuple(values.tolist())


def _integers(record: np.void, name: str, where: str, count: int) -> tuple:
    return tuple(int(value) for value in _numbers(record, name, where, count))


def _read_layer(record: np.void, where: str) -> Layer | None:
    """One layer; None for a dropout layer, which does nothing at inference."""
    kind = _text(record, "type", where)
    name = _text(record, "name", where)
    where = f"{where} ({name})"
    if kind == "conv":
        filters, biases = _weights(record, where)
        return ConvLayer(
            name, filters, biases, _integers(record, "stride", where, 2), _integers(record, "pad", where, 4)
        )
    if kind == "pool":
        method = _text(record, "method", where)
        if method != "max":
            raise CocoError(f"{where}: {method} pooling; CNN-F pools by max. {_GET_THE_FILE}")
        return PoolLayer(
            name,
            method,
            _integers(record, "pool", where, 2),
            _integers(record, "stride", where, 2),
            _integers(record, "pad", where, 4),
        )
    if kind == "lrn":
        depth, kappa, alpha, beta = _numbers(record, "param", where, 4)
        return LrnLayer(name, int(depth), kappa, alpha, beta)
    if kind == "relu":
        return ReluLayer(name)
    if kind == "dropout":
        return None
    raise CocoError(f"{where}: layer type {kind!r}, which CNN-F does not have; another network. {_GET_THE_FILE}")


def _weights(record: np.void, where: str) -> tuple[np.ndarray, np.ndarray]:
    cell = np.asarray(_field(record, "weights", where)).ravel()
    if cell.size != 2:
        raise CocoError(f"{where}: `weights` holds {cell.size} arrays, expected filters and biases. {_GET_THE_FILE}")
    filters = np.asarray(cell[0], dtype=np.float32)
    biases = np.asarray(cell[1], dtype=np.float32).ravel()
    if filters.ndim == 3:  # MATLAB drops a trailing singleton dimension: one output channel
        filters = filters[..., np.newaxis]
    if filters.ndim != 4 or biases.size != filters.shape[3]:
        raise CocoError(
            f"{where}: filters of shape {filters.shape} with {biases.size} biases; expected height x width x "
            f"input channels x output channels and one bias per output channel. {_GET_THE_FILE}"
        )
    return filters, biases


def check_cnnf(layers: list[Layer], path: str) -> None:
    """The convolutions must be CNN-F's: another network read the same way would give other features."""
    convolutions = [layer for layer in layers if isinstance(layer, ConvLayer)]
    names = [layer.name for layer in convolutions]
    if names != list(CNNF_CONVOLUTIONS):
        raise CocoError(
            f"{path}: convolutions {names}, CNN-F's are {list(CNNF_CONVOLUTIONS)}; another network. {_GET_THE_FILE}"
        )
    for layer in convolutions:
        found = (*layer.filters.shape, layer.stride[0])
        if found != CNNF_CONVOLUTIONS[layer.name] or layer.stride[0] != layer.stride[1]:
            height, width, inputs, outputs, stride = CNNF_CONVOLUTIONS[layer.name]
            raise CocoError(
                f"{path}: layer {layer.name} has filters {layer.filters.shape} with stride {layer.stride}, CNN-F's "
                f"has {height} x {width} x {inputs} x {outputs} with stride {stride}; another network "
                f"(e.g. VGG-M or AlexNet). {_GET_THE_FILE}"
            )


# ----------------------------------------------------------------------------- the network


class MatConvNetConv(torch.nn.Module):
    """vl_nnconv: zero padding [top bottom left right], then a correlation (as torch's conv2d)."""

    def __init__(self, layer: ConvLayer):
        super().__init__()
        height, width, inputs, outputs = layer.filters.shape
        self.padding = _torch_padding(layer.pad)
        self.conv = torch.nn.Conv2d(inputs, outputs, (height, width), stride=layer.stride)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(layer.filters.transpose(3, 2, 0, 1).copy()))
            self.conv.bias.copy_(torch.from_numpy(layer.biases))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class MatConvNetMaxPool(torch.nn.Module):
    """vl_nnpool, max: padding takes no part in the maximum."""

    def __init__(self, layer: PoolLayer):
        super().__init__()
        self.padding = _torch_padding(layer.pad)
        self.size, self.stride = layer.size, layer.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, self.padding, value=float("-inf")), self.size, self.stride)


class MatConvNetLrn(torch.nn.Module):
    """vl_nnnormalize: y = x (kappa + alpha * sum of x^2 over the channel window)^-beta.

    The window of channel d is [d - floor((N-1)/2), d + ceil((N-1)/2)]. Unlike torch's
    LocalResponseNorm, alpha is not divided by N, and for an even N the window leans the other way.
    """

    def __init__(self, layer: LrnLayer):
        super().__init__()
        self.depth, self.kappa, self.alpha, self.beta = layer.depth, layer.kappa, layer.alpha, layer.beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = (self.depth - 1) // 2, self.depth // 2
        squares = F.pad(x * x, (0, 0, 0, 0, before, after))
        channels = x.shape[1]
        window = sum(squares[:, offset : offset + channels] for offset in range(self.depth))
        return x * (self.kappa + self.alpha * window).pow(-self.beta)


def _torch_padding(pad: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    top, bottom, left, right = pad
    return (left, right, top, bottom)


def build_network(layers: list[Layer]) -> torch.nn.Sequential:
    modules = []
    for layer in layers:
        if isinstance(layer, ConvLayer):
            modules.append(MatConvNetConv(layer))
        elif isinstance(layer, PoolLayer):
            modules.append(MatConvNetMaxPool(layer))
        elif isinstance(layer, LrnLayer):
            modules.append(MatConvNetLrn(layer))
        else:
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules).eval()


# ----------------------------------------------------------------------------- the model


@dataclasses.dataclass(frozen=True)
class ResizeWhole:
    """The whole image to size x size, PIL bilinear, no crop; uint8 height x width x 3."""

    size: int

    def __call__(self, image: Image.Image) -> np.ndarray:
        return np.array(image.resize((self.size, self.size), Image.Resampling.BILINEAR))


class CnnF(FeatureModel):
    image_feature = FEATURE
    dim = DIM
    needs_mean_image = True

    def __init__(self, network: torch.nn.Module, device: torch.device, dtype: torch.dtype, provenance: dict):
        self.network = network.to(device=device, dtype=dtype)
        self.device, self.dtype = device, dtype
        self.worker_steps = WorkerSteps(ResizeWhole(INPUT_SIZE))
        self.provenance = provenance
        self._mean_image: torch.Tensor | None = None

    def set_mean_image(self, mean_image: np.ndarray, sha256: str) -> None:
        mean_image = check_mean_image(mean_image, "the mean image")
        self._mean_image = torch.from_numpy(mean_image.astype(np.float32).transpose(2, 0, 1)).to(self.device)
        self.provenance["mean_image_sha256"] = sha256

    @torch.inference_mode()
    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._mean_image is None:
            raise RuntimeError("CNN-F needs its mean image before the forward")
        return self.network((pixels.float() - self._mean_image).to(self.dtype)).flatten(1)


def load(options: ModelOptions) -> CnnF:
    if options.weights is None:
        raise CocoError(f"CNN-F needs its weights file. {_GET_THE_FILE}")
    layers = read_simplenn(options.weights)
    check_cnnf(layers, options.weights)
    provenance = {
        "model": "cnnf",
        "network": "CNN-F (VGG-F), Chatfield et al. 2014, MatConvNet simplenn",
        "layer": "fc7 after its ReLU",
        "weights": os.path.basename(options.weights),
        "weights_sha256": file_sha256(options.weights),
        "preprocessing": f"RGB; PIL bilinear resize to {INPUT_SIZE}x{INPUT_SIZE}, no crop; 0..255 minus the mean image",
        "mean_image": os.path.basename(options.mean_image) if options.mean_image else "the pool's, computed first",
    }
    return CnnF(build_network(layers), torch.device(options.device), DTYPES[options.dtype], provenance)
