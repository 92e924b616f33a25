"""CLIP (open_clip) embeddings of the images and, with `text`, of the captions: both modalities from one model.

The architecture is an open_clip name (`ViT-B-32`, 512-d) with a pretrained tag (downloaded once
into open_clip's cache) or a checkpoint file, or `local-dir:DIR` (open_clip's own folder format:
open_clip_config.json beside the checkpoint). The images are prepared by the model's own
preprocessing (for ViT-B-32: shorter side resized to 224 bicubic, centre crop, normalised by
CLIP's mean and std): its PIL steps run in the workers, the scaling and normalisation on the
device. Captions are tokenised in the workers. The embeddings are stored as the model outputs
them, not L2-normalised; per image, the text feature is the mean of its captions' embeddings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import open_clip
import torch
import torchvision.transforms as T
from PIL import Image

from coco_unified import CocoError
from tools.lib.image_features.models import (
    DTYPES,
    LOCAL_DIR,
    FeatureModel,
    ModelOptions,
    WorkerSteps,
    file_sha256,
    normalised,
)

IMAGE_FEATURE = "clip_image"
TEXT_FEATURE = "clip_text"
CAPTION_FEATURE = "caption_clip_text"


@dataclasses.dataclass(frozen=True)
class PilSteps:
    """The model's preprocessing up to the tensor (resize, crop, RGB); uint8 height x width x 3."""

    steps: T.Compose

    def __call__(self, image: Image.Image) -> np.ndarray:
        return np.array(self.steps(image))


class Clip(FeatureModel):
    image_feature = IMAGE_FEATURE

    def __init__(self, model, preprocess: T.Compose, tokenizer, options: ModelOptions, dim: int, provenance: dict):
        self.dtype = DTYPES[options.dtype]
        self.model = model.to(device=torch.device(options.device), dtype=self.dtype).eval()
        pil_steps, self.mean, self.std = split_preprocessing(preprocess, options.arch)
        self.dim = dim
        if options.text:
            self.text_feature, self.caption_feature = TEXT_FEATURE, CAPTION_FEATURE
        self.worker_steps = WorkerSteps(pil_steps, tokenizer if options.text else None)
        self.provenance = provenance

    @torch.inference_mode()
    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(normalised(pixels, self.mean, self.std, self.dtype))

    @torch.inference_mode()
    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


def split_preprocessing(preprocess: T.Compose, arch: str) -> tuple[PilSteps, tuple, tuple]:
    """The PIL steps before ToTensor (for the workers), and the Normalize after it (for the device)."""
    steps = list(preprocess.transforms)
    to_tensor = next((i for i, step in enumerate(steps) if isinstance(step, T.ToTensor)), None)
    after = steps[to_tensor + 1 :] if to_tensor is not None else []
    if to_tensor is None or len(after) != 1 or not isinstance(after[0], T.Normalize):
        raise CocoError(
            f"open_clip's preprocessing of {arch} is {steps}; this tool handles the ones that end in ToTensor "
            "then Normalize. Choose another architecture."
        )
    return PilSteps(T.Compose(steps[:to_tensor])), tuple(after[0].mean), tuple(after[0].std)


def _weights_sha256(options: ModelOptions) -> tuple[str, str]:
    """What the weights are called in the provenance, and their sha256 (a folder's: over its files)."""
    if options.arch.startswith(LOCAL_DIR):
        folder = options.arch[len(LOCAL_DIR) :]
        if not os.path.isdir(folder):
            raise CocoError(f"{folder} is not a folder; local-dir: takes an open_clip folder (open_clip_config.json).")
        digest = hashlib.sha256()
        for name in sorted(os.listdir(folder)):
            if os.path.isfile(os.path.join(folder, name)):
                digest.update(f"{name} {file_sha256(os.path.join(folder, name))}\n".encode())
        return os.path.basename(os.path.normpath(folder)), digest.hexdigest()
    if options.pretrained is None:
        raise CocoError(f"CLIP {options.arch} needs its weights: pretrained=TAG (open_clip's) or pretrained=FILE.")
    if os.path.isfile(options.pretrained):
        return os.path.basename(options.pretrained), file_sha256(options.pretrained)
    tag = open_clip.get_pretrained_cfg(options.arch, options.pretrained)
    if not tag:
        raise CocoError(
            f"{options.pretrained!r} is neither a file nor a pretrained tag of open_clip's {options.arch} "
            f"(its tags: {open_clip.list_pretrained_tags_by_model(options.arch)}); check the name or the path."
        )
    try:
        path = open_clip.download_pretrained(tag)
    except Exception as error:  # noqa: BLE001 - no network, a refused download
        raise CocoError(
            f"open_clip could not download the {options.arch} weights {options.pretrained!r} ({error!r}). Download "
            "the checkpoint on a machine with network and pass it as pretrained=FILE."
        ) from None
    return f"open_clip {options.arch} {options.pretrained}", file_sha256(path)


def load(options: ModelOptions) -> Clip:
    if options.arch.startswith(LOCAL_DIR) and options.pretrained is not None:
        raise CocoError(f"{options.arch} holds its own checkpoint; pass no pretrained=FILE with it.")
    known = open_clip.list_models()
    if not options.arch.startswith(LOCAL_DIR) and options.arch not in known:
        raise CocoError(f"{options.arch!r} is not an open_clip architecture; choose one of {known}, or local-dir:DIR.")
    weights, sha256 = _weights_sha256(options)
    pretrained = None if options.arch.startswith(LOCAL_DIR) else options.pretrained
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(options.arch, pretrained=pretrained)
    except Exception as error:  # noqa: BLE001 - open_clip asserts, or torch raises, on a foreign checkpoint
        details = " ".join(str(error).split())[:300]
        raise CocoError(
            f"{weights}: not a checkpoint of open_clip's {options.arch} ({details}...). Pass the checkpoint of that "
            "architecture, or the architecture of that checkpoint."
        ) from None
    config = open_clip.get_model_config(options.arch)
    provenance = {
        "model": "clip",
        "network": f"open_clip {open_clip.__version__} {options.arch}",
        "weights": weights,
        "weights_sha256": sha256,
        "outputs": "encode_image / encode_text, not L2-normalised; per image text = mean of its captions' embeddings",
        "preprocessing": f"RGB; {preprocess}",
    }
    tokenizer = open_clip.get_tokenizer(options.arch) if options.text else None
    return Clip(model, preprocess, tokenizer, options, config["embed_dim"], provenance)
