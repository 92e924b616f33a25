"""Compute image features of the pool (CNN-F fc7, VGG-19 fc7, CLIP) into a Parquet sidecar keyed by image_id.

    coco-unified image-features --model cnnf --weights imagenet-vgg-f.mat --data-dir DIR --output cnnf.parquet
    coco-unified image-features --model vgg19 --data-dir DIR --output vgg19.parquet
    coco-unified image-features --model clip --arch ViT-B-32 --pretrained openai --text --data-dir DIR --output clip.parquet
    torchrun --nproc-per-node 8 -m tools.image_features --model vgg19 --data-dir DIR --output vgg19.parquet

Images are streamed from the COCO zips by the loader's own reader (no extraction), decoded and
resized in --num-workers DataLoader processes, and run through the model on --device in batches.
Models:
  cnnf   CNN-F (VGG-F) fc7, 4096-d, as DCMH and the reference preparation: MatConvNet's
         imagenet-vgg-f.mat (--weights); 224x224 bilinear, no crop, minus the pool's mean image
         (computed in a first pass and written beside the output as OUTPUT.meanpix.npy and .mat,
         key `meanpix`; or --mean-image). Column cnnf_fc7.
  vgg19  torchvision's VGG-19 fc7 (classifier[:5]), 4096-d, as UCCH and DCHN: ImageNet weights
         downloaded once into the torch cache, or --weights (a state_dict). Column vgg19_fc7.
  clip   open_clip --arch with --pretrained (a tag or a checkpoint); 512-d for ViT-B-32. Column
         clip_image; with --text also clip_text (per image, the mean of its captions' embeddings)
         and caption_clip_text (one vector per caption). Not L2-normalised.

Greyscale and PNG-behind-.jpg images are converted to RGB. An image that cannot be decoded stops
the run, naming it, unless --on-bad-image skip (then it is left out and the sidecar lists it).
With torchrun, the ranks share the shards and rank 0 writes the file (the same file one process
writes); with several nodes, OUTPUT's folder must be shared. Each finished shard is kept in
OUTPUT.parts/ until the end: the same command started again after an interruption resumes there.
Float32 output on a CPU is bit-identical whatever --num-workers and the number of ranks, given
the same torch threads per process: torchrun gives each rank one (OMP_NUM_THREADS=1), and more
threads round sums differently in the last bit.
"""

import argparse
import os
import sys

if not __package__:  # run by path: `python tools/image_features.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from coco_unified import CocoError
from tools import cli, flags
from tools.lib.image_features.extract import (
    BAD_IMAGE_POLICIES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_NUM_SHARDS,
    DEVICES,
    ExtractOptions,
    extract,
)
from tools.lib.image_features.models import DTYPES, LOCAL_DIR, MODELS, ModelOptions
from tools.lib.image_features.pipeline import POOL_CONFIGS, PoolSource
from tools.lib.image_features.sidecar import STORE_TYPES

# Flags that only some models take, and which.
MODEL_FLAGS = {
    "weights": ("cnnf", "vgg19"),
    "mean_image": ("cnnf",),
    "arch": ("clip",),
    "pretrained": ("clip",),
    "text": ("clip",),
}
CLIP_DEFAULTS = {"arch": "ViT-B-32", "pretrained": "openai"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=list(MODELS), help="the features to compute (see above)")
    flags.add_source_arguments(parser)
    parser.add_argument(
        "--config",
        choices=POOL_CONFIGS,
        default="default",
        help="which images: default, the whole pool (123,287), or labeled, those with a label (122,218) "
        "(default: %(default)s)",
    )
    parser.add_argument("--output", required=True, metavar="PATH", help="the Parquet sidecar to write")
    weights = parser.add_argument_group("weights")
    weights.add_argument(
        "--weights",
        metavar="FILE",
        help="cnnf: imagenet-vgg-f.mat (required); vgg19: a state_dict of torchvision.models.vgg19() "
        "(default: torchvision's ImageNet weights, downloaded once into the torch cache)",
    )
    weights.add_argument(
        "--mean-image",
        metavar="FILE",
        help="cnnf: a 224x224x3 mean image (.npy, or .mat with key meanpix) instead of the pool's own",
    )
    weights.add_argument(
        "--arch",
        help=f"clip: an open_clip architecture, or local-dir:DIR (default: {CLIP_DEFAULTS['arch']}). "
        "OpenAI's original weights as a file need the -quickgelu architecture (ViT-B-32-quickgelu)",
    )
    weights.add_argument(
        "--pretrained",
        metavar="TAG_OR_FILE",
        help=f"clip: an open_clip pretrained tag (downloaded once into its cache) or a checkpoint file "
        f"(default: {CLIP_DEFAULTS['pretrained']})",
    )
    weights.add_argument("--text", action="store_true", help="clip: also embed every caption")
    compute = parser.add_argument_group("computation")
    compute.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto: a GPU when torch sees one, else the CPU; with torchrun each rank takes GPU LOCAL_RANK "
        "(default: %(default)s)",
    )
    compute.add_argument(
        "--dtype", choices=list(DTYPES), default="float32", help="precision of the forward (default: %(default)s)"
    )
    compute.add_argument(
        "--batch-size",
        type=flags.positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="images per forward (default: %(default)s)",
    )
    compute.add_argument(
        "--num-workers",
        type=flags.non_negative_int,
        default=min(4, os.cpu_count() or 1),
        help="DataLoader processes reading, decoding and resizing images, per rank; 0 does it in the main "
        "process (default: %(default)s, up to 4 of this machine's cores)",
    )
    compute.add_argument(
        "--num-shards",
        type=flags.positive_int,
        default=DEFAULT_NUM_SHARDS,
        help="pieces train2017.zip is streamed in (val2017.zip gets its share too): the work units workers and "
        "ranks share out, and the most an interruption loses per worker (default: %(default)s)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--store",
        choices=list(STORE_TYPES),
        default="float32",
        help="value type in the sidecar; float16 halves the 2 GB of 4096-d float32 pool features "
        "(default: %(default)s)",
    )
    output.add_argument(
        "--on-bad-image",
        choices=BAD_IMAGE_POLICIES,
        default="stop",
        help="an image that cannot be decoded: stop with an error naming it, or skip it (logged, and listed "
        "in the sidecar's metadata) (default: %(default)s)",
    )


def model_options(args: argparse.Namespace) -> ModelOptions:
    """The model's options; a flag of another model is a mistake worth a message, not silence."""
    for name, models in MODEL_FLAGS.items():
        if getattr(args, name) not in (None, False) and args.model not in models:
            flag = "--" + name.replace("_", "-")
            raise CocoError(f"{flag} applies to --model {' or '.join(models)}, not to --model {args.model}.")
    arch = args.arch or CLIP_DEFAULTS["arch"]
    # An open_clip folder holds its own checkpoint: no default tag for it.
    pretrained = args.pretrained or (None if arch.startswith(LOCAL_DIR) else CLIP_DEFAULTS["pretrained"])
    return ModelOptions(
        weights=args.weights,
        mean_image=args.mean_image,
        arch=arch,
        pretrained=pretrained,
        text=args.text,
        device=args.device,
        dtype=args.dtype,
    )


def run(args: argparse.Namespace) -> None:
    source = PoolSource(args.data_dir, args.base_url, args.config, args.num_shards)
    options = ExtractOptions(
        output=args.output,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        store=args.store,
        on_bad_image=args.on_bad_image,
    )
    extract(args.model, model_options(args), source, options)


if __name__ == "__main__":
    cli.main_for(__file__)
