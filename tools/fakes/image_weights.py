"""Random weights in the real file formats of the image feature models, for tests and benchmarks.

No pretrained weights can be downloaded where the tests run, so these files stand in for them:
the real loading code reads them exactly as it reads the published files.

- `write_simplenn`: a MatConvNet simplenn network saved with scipy (`layers`: a cell array of
  structs with `type`, `name` and their fields), e.g. `cnnf_layers()`: CNN-F's layer list
  (the sizes of imagenet-vgg-f.mat, Chatfield et al. 2014) with He-initialised random filters.
- `write_vgg19_state_dict`: a state_dict of torchvision.models.vgg19() with its random initialisation.
- `write_open_clip_folder`: an open_clip `local-dir:` folder (open_clip_config.json and
  open_clip_pytorch_model.bin) of a small CLIP of the given widths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io

# CNN-F (imagenet-vgg-f.mat) as (type, name, fields): conv filters as (height, width, in, out).
_CNNF = (
    ("conv", "conv1", {"filters": (11, 11, 3, 64), "stride": 4, "pad": 0}),
    ("relu", "relu1", {}),
    ("lrn", "norm1", {"param": (5, 2.0, 1e-4, 0.75)}),
    ("pool", "pool1", {"pool": (3, 3), "stride": 2, "pad": (0, 1, 0, 1)}),
    ("conv", "conv2", {"filters": (5, 5, 64, 256), "stride": 1, "pad": 2}),
    ("relu", "relu2", {}),
    ("lrn", "norm2", {"param": (5, 2.0, 1e-4, 0.75)}),
    ("pool", "pool2", {"pool": (3, 3), "stride": 2, "pad": (0, 1, 0, 1)}),
    ("conv", "conv3", {"filters": (3, 3, 256, 256), "stride": 1, "pad": 1}),
    ("relu", "relu3", {}),
    ("conv", "conv4", {"filters": (3, 3, 256, 256), "stride": 1, "pad": 1}),
    ("relu", "relu4", {}),
    ("conv", "conv5", {"filters": (3, 3, 256, 256), "stride": 1, "pad": 1}),
    ("relu", "relu5", {}),
    ("pool", "pool5", {"pool": (3, 3), "stride": 2, "pad": (0, 1, 0, 1)}),
    ("conv", "fc6", {"filters": (6, 6, 256, 4096), "stride": 1, "pad": 0}),
    ("relu", "relu6", {}),
    ("conv", "fc7", {"filters": (1, 1, 4096, 4096), "stride": 1, "pad": 0}),
    ("relu", "relu7", {}),
    ("conv", "fc8", {"filters": (1, 1, 4096, 1000), "stride": 1, "pad": 0}),
    ("softmax", "prob", {}),
)


def simplenn_layers(spec, seed: int = 0) -> list[dict]:
    """Layer dicts of a (type, name, fields) list; conv filters He-initialised so activations keep their scale."""
    rng = np.random.default_rng(seed)
    layers = []
    for kind, name, fields in spec:
        layer = {"type": kind, "name": name}
        if kind == "conv":
            height, width, inputs, outputs = fields["filters"]
            scale = np.sqrt(2.0 / (height * width * inputs))
            filters = (rng.standard_normal(fields["filters"]) * scale).astype(np.float32)
            biases = (rng.standard_normal((1, outputs)) * 0.01).astype(np.float32)
            layer.update(weights=[filters, biases], stride=fields["stride"], pad=fields["pad"])
        elif kind == "pool":
            layer.update(method="max", pool=fields["pool"], stride=fields["stride"], pad=fields["pad"])
        elif kind == "lrn":
            layer.update(param=fields["param"])
        layers.append(layer)
    return layers


def cnnf_layers(seed: int = 0) -> list[dict]:
    return simplenn_layers(_CNNF, seed)


def write_simplenn(path: str | Path, layers: list[dict]) -> None:
    """Save as MatConvNet does: `layers` a 1 x N cell array of structs, `weights` a 1 x 2 cell."""
    cells = np.empty((1, len(layers)), dtype=object)
    for position, layer in enumerate(layers):
        struct = {}
        for field, value in layer.items():
            if field == "weights":
                weights = np.empty((1, len(value)), dtype=object)
                for index, array in enumerate(value):
                    weights[0, index] = array
                value = weights
            elif not isinstance(value, str):
                value = np.atleast_2d(np.asarray(value, dtype=np.float64))
            struct[field] = value
        cells[0, position] = struct
    scipy.io.savemat(str(path), {"layers": cells})


def write_vgg19_state_dict(path: str | Path, seed: int = 0) -> None:
    import torch
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.vgg19().state_dict(), str(path))


def write_open_clip_folder(
    folder: str | Path, seed: int = 0, embed_dim: int = 32, width: int = 64, layers: int = 2, image_size: int = 224
) -> Path:
    """A small CLIP (ViT image tower, transformer text tower) as open_clip's local-dir: folder."""
    import open_clip
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": 4, "layers": layers},
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder
