"""VGG-19 fc7 (torchvision): the 4096-d image features of UCCH, DCHN and the feature-based hashing methods.

fc7 is the classifier up to its second ReLU (`classifier[:5]`: Linear, ReLU, Dropout, Linear, ReLU)
in eval mode, after `features` and `avgpool`. The weights are torchvision's ImageNet weights
(`VGG19_Weights.IMAGENET1K_V1`, downloaded once into the torch cache) or a state_dict file of the
same network. The input is prepared by those weights' own transforms: shorter side resized to 256
(bilinear, antialiased), centre crop 224, scaled to 0..1, normalised by ImageNet's mean and std;
the resize and crop run in the workers, the scaling and normalisation on the device.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

from coco_unified import CocoError
from tools.lib.image_features.models import DTYPES, FeatureModel, ModelOptions, WorkerSteps, file_sha256, normalised

FEATURE = "vgg19_fc7"
DIM = 4096
WEIGHTS = torchvision.models.VGG19_Weights.IMAGENET1K_V1
FC7_END = 5  # classifier[:5] ends after the ReLU of the second 4096-d layer

_GET_THE_FILE = (
    f"Pass torchvision's VGG-19 ImageNet weights ({os.path.basename(WEIGHTS.url)}, from {WEIGHTS.url}) or "
    "another state_dict of torchvision.models.vgg19() as weights=FILE."
)


@dataclasses.dataclass(frozen=True)
class ResizeCentreCrop:
    """torchvision's classification preset up to the tensor: resize the shorter side, crop the centre."""

    resize_size: int
    crop_size: int
    interpolation: TF.InterpolationMode
    antialias: bool

    def __call__(self, image: Image.Image) -> np.ndarray:
        resized = TF.resize(image, [self.resize_size], self.interpolation, antialias=self.antialias)
        return np.array(TF.center_crop(resized, [self.crop_size]))


class Vgg19Fc7(FeatureModel):
    image_feature = FEATURE
    dim = DIM

    def __init__(self, network: torch.nn.Module, device: torch.device, dtype: torch.dtype, provenance: dict):
        self.network = network.to(device=device, dtype=dtype)
        self.dtype = dtype
        preset = WEIGHTS.transforms()
        self.mean, self.std = preset.mean, preset.std
        self.worker_steps = WorkerSteps(
            ResizeCentreCrop(preset.resize_size[0], preset.crop_size[0], preset.interpolation, preset.antialias)
        )
        self.provenance = provenance

    @torch.inference_mode()
    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network(normalised(pixels, self.mean, self.std, self.dtype))


def fc7_network(vgg: torchvision.models.VGG) -> torch.nn.Sequential:
    return torch.nn.Sequential(vgg.features, vgg.avgpool, torch.nn.Flatten(1), vgg.classifier[:FC7_END]).eval()


def _read_state_dict(options: ModelOptions) -> tuple[dict, str]:
    """The state_dict and the file it came from: the weights file, or torchvision's download."""
    if options.weights is not None:
        path = options.weights
        try:
            return torch.load(path, map_location="cpu", weights_only=True), path
        except FileNotFoundError:
            raise CocoError(f"{path} not found. {_GET_THE_FILE}") from None
        except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged or foreign file
            raise CocoError(
                f"{path}: not a readable PyTorch state_dict ({type(error).__name__}: {str(error).splitlines()[0]}); "
                f"it is truncated or of another format. {_GET_THE_FILE}"
            ) from None
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(WEIGHTS.url))
    try:
        return WEIGHTS.get_state_dict(progress=True, check_hash=True), cached
    except Exception as error:  # noqa: BLE001 - no network, a refused download, a damaged cached file
        raise CocoError(
            f"torchvision's VGG-19 weights could not be read from {WEIGHTS.url} or {cached} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            f"Download the file on a machine with network, then put it at {cached} or pass it as weights=FILE."
        ) from None


def load(options: ModelOptions) -> Vgg19Fc7:
    state_dict, path = _read_state_dict(options)
    vgg = torchvision.models.vgg19()
    if not isinstance(state_dict, dict):
        raise CocoError(f"{path}: holds a {type(state_dict).__name__}, not a state_dict. {_GET_THE_FILE}")
    try:
        vgg.load_state_dict(state_dict)
    except RuntimeError as error:
        details = " ".join(str(error).split())[:300]
        raise CocoError(f"{path}: not the weights of torchvision's VGG-19 ({details}...). {_GET_THE_FILE}") from None
    preset = WEIGHTS.transforms()
    provenance = {
        "model": "vgg19",
        "network": f"torchvision {torchvision.__version__} vgg19",
        "layer": "fc7: classifier[:5], after the second ReLU, eval mode",
        "weights": "torchvision VGG19_Weights.IMAGENET1K_V1" if options.weights is None else os.path.basename(path),
        "weights_sha256": file_sha256(path),
        "preprocessing": f"RGB; shorter side resized to {preset.resize_size[0]} ({preset.interpolation.value}, "
        f"antialias={preset.antialias}), centre crop {preset.crop_size[0]}, /255, normalised by mean {preset.mean} "
        f"and std {preset.std}",
    }
    return Vgg19Fc7(fc7_network(vgg), torch.device(options.device), DTYPES[options.dtype], provenance)
