"""The models `coco-unified image-features` can run, and the interface each implements.

Each model is a module of this package with a `load(options) -> FeatureModel`. A model is split in
two: `WorkerSteps` run in the DataLoader workers on one decoded image at a time (resize, crop, to
uint8; caption tokens), and `FeatureModel.embed_images` / `embed_texts` run on the device on whole
batches (normalise, forward). Only uint8 pixels cross the worker queue and the host-to-device copy:
a quarter of float32's bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from coco_unified import CocoError

# --model name -> the module implementing it, in the order --help lists them.
MODELS = {
    "cnnf": "tools.lib.image_features.cnnf",
    "vgg19": "tools.lib.image_features.vgg19",
    "clip": "tools.lib.image_features.clip",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# open_clip's prefix of an architecture given as a folder (open_clip_config.json and its checkpoint).
LOCAL_DIR = "local-dir:"


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """What a model is made from; each model reads the fields that apply to it.

    Attributes:
        weights: cnnf: MatConvNet's imagenet-vgg-f.mat; vgg19: a torchvision state_dict (None:
            torchvision's ImageNet weights, downloaded once into the torch cache).
        mean_image: cnnf: a 224x224x3 mean image (.npy, or .mat with key `meanpix`) instead of the
            pool's own, computed in a first pass.
        arch: clip: an open_clip architecture name, or `local-dir:DIR` (open_clip_config.json and
            the checkpoint in DIR).
        pretrained: clip: an open_clip pretrained tag (downloaded once into its cache) or a checkpoint file.
        text: clip: also embed the captions.
        device: a torch device ("cpu", "cuda", "cuda:1").
        dtype: the forward's precision: "float32", "bfloat16" or "float16".
    """

    weights: str | None = None
    mean_image: str | None = None
    arch: str = "ViT-B-32"
    pretrained: str | None = None
    text: bool = False
    device: str = "cpu"
    dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class WorkerSteps:
    """What a DataLoader worker does for a model; picklable, without the weights.

    `prepare_image` takes an RGB PIL image and returns uint8 pixels, height x width x 3;
    `tokenize` (text models) turns captions into the token tensor `embed_texts` takes.
    """

    prepare_image: Callable[[Image.Image], np.ndarray]
    tokenize: Callable[[list[str]], torch.Tensor] | None = None


class FeatureModel:
    """A loaded model: the columns it makes, its worker steps, and its forward on the device."""

    image_feature: str  # the sidecar column of the image features
    text_feature: str | None = None  # the column of the per-image mean caption feature, if any
    caption_feature: str | None = None  # the column of the per-caption features, if any
    dim: int
    worker_steps: WorkerSteps
    provenance: dict  # model, weights and their sha256, preprocessing: recorded in the sidecar
    needs_mean_image: bool = False

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W on the device -> N x dim features."""
        raise NotImplementedError

    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tokens of N captions on the device -> N x dim features."""
        raise NotImplementedError(f"{type(self).__name__} makes no text features")

    def set_mean_image(self, mean_image: np.ndarray, sha256: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} subtracts no mean image")


def load_model(name: str, options: ModelOptions) -> FeatureModel:
    """The model registered as `name`, loaded onto `options.device`."""
    if name not in MODELS:
        raise CocoError(f"Unknown image feature model {name!r}; choose one of {', '.join(MODELS)}.")
    if options.dtype not in DTYPES:
        raise CocoError(f"Unknown dtype {options.dtype!r}; choose one of {', '.join(DTYPES)}.")
    return importlib.import_module(MODELS[name]).load(options)


def file_sha256(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def normalised(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
    """uint8 pixels -> (x / 255 - mean) / std per channel, as torchvision's ToTensor then Normalize.

    Computed in float32 (as on the CPU in a worker), then cast to the forward's dtype.
    """
    mean_tensor = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(-1, 1, 1)
    return ((pixels.float() / 255 - mean_tensor) / std_tensor).to(dtype)
