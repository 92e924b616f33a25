"""What image features cost: per model, images/s of reading+decoding+resizing, of the forward, and end to end.

    python benchmarks/bench_image_features.py [--images 40] [--models cnnf vgg19 clip] [--workers 1 2] [--device cuda]

Makes a COCO-shaped sample (tools/fakes/sample_coco.py) whose image entries are re-encoded as
640x427 JPEGs, the size of a typical COCO image (the sample's own are 16-40 px), and random
weights in each model's real file format (tools/fakes/image_weights.py). Then, per model and per
DataLoader worker count:

  decode     the tool's pipeline alone (streamed read, decode, resize/crop in the workers), no model
  forward    the model alone on random uint8 batches already in memory (on --device)
  end to end the tool's feature pass (tools/lib/image_features/extract.py): workers feeding the model

and the full pool's cost derived from the end-to-end rate (123,287 images). On a GPU the goal is
that the model is never the bottleneck: end to end >= 0.8x the decode rate with the same workers.
CNN-F's run is timed with a given mean image; computing the pool's costs one more decode pass.
"""

import argparse
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

if not __package__:  # run by path: `python benchmarks/bench_image_features.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch
from PIL import Image

from coco_unified import REAL_COUNTS
from tools.fakes.image_weights import cnnf_layers, write_simplenn, write_vgg19_state_dict
from tools.fakes.sample_coco import generate
from tools.lib.image_features.extract import ExtractOptions, FeatureRows, PassRunner, resolve_device
from tools.lib.image_features.models import ModelOptions, load_model
from tools.lib.image_features.pipeline import PoolSource, batches
from tools.lib.image_features.resume import Ranks, ShardStore

COCO_IMAGE_SIZE = (640, 427)  # width x height of the most common COCO image
JPEG_QUALITY = 90
MIN_IMAGES = 20  # the sample generator's minimum: 10 per split


# ----------------------------------------------------------------------------- data and weights


def coco_sized_sample(out: Path, images: int) -> Path:
    """A sample of about `images` images, each re-encoded as a 640x427 JPEG of natural-looking detail."""
    generate(out, max(images, MIN_IMAGES) / REAL_COUNTS.images, seed=0)
    rng = np.random.default_rng(0)
    for split in ("train2017", "val2017"):
        path = out / f"{split}.zip"
        with zipfile.ZipFile(path) as source:
            entries = [(info.filename, source.read(info)) for info in source.infolist()]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
            for name, content in entries:
                target.writestr(name, _coco_sized(content, rng) if name.endswith(".jpg") else content)
    return out


def _coco_sized(content: bytes, rng: np.random.Generator) -> bytes:
    """The small image scaled up, with noise so that it compresses like a photo (~100-200 KB)."""
    image = Image.open(io.BytesIO(content)).convert("RGB").resize(COCO_IMAGE_SIZE, Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-24, 25, (*COCO_IMAGE_SIZE[::-1], 3))
    encoded = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(encoded, "JPEG", quality=JPEG_QUALITY)
    return encoded.getvalue()


def model_options(name: str, folder: Path, device: str, dtype: str) -> ModelOptions:
    if name == "cnnf":
        weights = folder / "imagenet-vgg-f.mat"
        write_simplenn(weights, cnnf_layers())
        mean_image = folder / "mean.npy"
        np.save(mean_image, np.full((224, 224, 3), 112.0))  # a flat grey: any mean image costs the same
        return ModelOptions(weights=str(weights), mean_image=str(mean_image), device=device, dtype=dtype)
    if name == "vgg19":
        weights = folder / "vgg19.pth"
        write_vgg19_state_dict(weights)
        return ModelOptions(weights=str(weights), device=device, dtype=dtype)
    import open_clip

    checkpoint = folder / "ViT-B-32.pt"
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), checkpoint)
    return ModelOptions(arch="ViT-B-32", pretrained=str(checkpoint), device=device, dtype=dtype)


# ----------------------------------------------------------------------------- the three stages


def decode_rate(source: PoolSource, model, batch_size: int, workers: int) -> tuple[int, float]:
    stream = source.open_stream(with_captions=False)
    start, images = time.perf_counter(), 0
    for batch in batches(stream, list(range(stream.num_shards)), model.worker_steps, batch_size, workers, False):
        images += len(batch["image_ids"])
    return images, time.perf_counter() - start


def forward_rate(model, device: str, batch_size: int, repeats: int) -> tuple[int, float]:
    pixels = torch.randint(0, 256, (batch_size, 3, 224, 224), dtype=torch.uint8, device=device)
    model.embed_images(pixels)  # warm-up: kernels chosen, memory allocated
    synchronise(device)
    start = time.perf_counter()
    for _ in range(repeats):
        model.embed_images(pixels).float().cpu()
    synchronise(device)
    return batch_size * repeats, time.perf_counter() - start


def end_to_end_rate(source: PoolSource, model, device: str, options: ExtractOptions, work: Path) -> tuple[int, float]:
    stream = source.open_stream(with_captions=False)
    runner = PassRunner(stream, source, model, device, options, Ranks(), images=0)
    store = ShardStore(str(work), runner.inputs("features", model.provenance))
    start = time.perf_counter()
    runner.run("features", store, FeatureRows(model, device))
    elapsed = time.perf_counter() - start
    images = sum(len(store.load(shard)["image_ids"]) for shard in store.finished())
    store.remove()
    return images, elapsed


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="images in the sample (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=["cnnf", "vgg19", "clip"], choices=["cnnf", "vgg19", "clip"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="DataLoader worker counts to time")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--forward-batches", type=int, default=2, help="batches timed for the forward alone")
    # Few shards: a batch never spans two, and the sample's shards must hold full batches as the pool's
    # (1,900 images each at the tool's default of 64) do.
    parser.add_argument("--num-shards", type=int, default=2, help="train2017 shards (the work units of workers)")
    args = parser.parse_args(argv)

    device = resolve_device(args.device, Ranks())
    cpu_name = f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"
    print(f"device: {torch.cuda.get_device_name(device) if device.startswith('cuda') else cpu_name}; {args.dtype}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = coco_sized_sample(folder / "coco", args.images)
        source = PoolSource(str(data), num_shards=args.num_shards)
        print(f"{'model':6} {'stage':11} {'workers':>7} {'images':>6} {'seconds':>8} {'images/s':>9}")
        for name in args.models:
            model = load_model(name, model_options(name, folder, device, args.dtype))
            if model.needs_mean_image:
                model.set_mean_image(np.load(folder / "mean.npy"), "benchmark")
            images, seconds = forward_rate(model, device, args.batch_size, args.forward_batches)
            print(f"{name:6} {'forward':11} {'-':>7} {images:6d} {seconds:8.2f} {images / seconds:9.1f}")
            for workers in args.workers:
                options = ExtractOptions(
                    output=str(folder / "out.parquet"), batch_size=args.batch_size, num_workers=workers
                )
                decoded, decode_seconds = decode_rate(source, model, args.batch_size, workers)
                print(
                    f"{name:6} {'decode':11} {workers:7d} {decoded:6d} {decode_seconds:8.2f} {decoded / decode_seconds:9.1f}"
                )
                done, seconds = end_to_end_rate(source, model, device, options, folder / "parts")
                rate = done / seconds
                pool_hours = REAL_COUNTS.images / rate / 3600
                ratio = rate / (decoded / decode_seconds)
                print(
                    f"{name:6} {'end to end':11} {workers:7d} {done:6d} {seconds:8.2f} {rate:9.1f}"
                    f"   = {ratio:.2f}x decode; full pool {pool_hours:.1f} h (derived)"
                )
            del model


if __name__ == "__main__":
    main()
