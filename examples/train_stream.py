"""Stream the pool into a PyTorch training loop: every image exactly once per epoch, on any number of workers and ranks.

    python examples/train_stream.py --parquet OUT_OR_USER/REPO [--epochs 2] [--workers 2]   # exported Parquet
    python examples/train_stream.py --data-dir DIR --doc2vec-path SIDECAR                   # the script builder
    torchrun --nproc-per-node 2 -m examples.train_stream --parquet USER/REPO                 # several ranks

Images are decoded and resized in the DataLoader workers; batches are dicts with `image` (uint8,
N x 3 x S x S), `doc2vec` (float32, N x 300), `multi_hot` (float32, N x 80) and `index`. The toy
model learns hash codes whose agreement follows label overlap, as cross-modal hashing methods do.
Needs torch, pinned in requirements-test.txt (scripts/test.sh installs it; scripts/sample.sh does not).
"""

import argparse
import logging
import os
import sys
from collections.abc import Sequence

if not __package__:  # run by path: `python examples/train_stream.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import datasets
import numpy as np
from datasets.distributed import split_dataset_by_node

from coco_unified import CocoError, CocoUnified
from tools import cli

try:
    import torch
except ModuleNotFoundError:
    raise SystemExit(
        "examples/train_stream.py needs torch (requirements-test.txt): "
        "bash scripts/setup_env.sh .venv requirements.txt requirements-test.txt"
    ) from None

logger = logging.getLogger(__name__)

COLUMNS = ["index", "image", "doc2vec", "multi_hot"]


def open_pool(
    parquet: str | None = None,
    data_dir: str | None = None,
    doc2vec_path: str | None = None,
    config: str = "default",
    cache_dir: str | None = None,
) -> datasets.IterableDataset:
    """The pool's `train` split streamed from an exported folder or Hub repo, or by the script builder."""
    if parquet:
        pool = datasets.load_dataset(parquet, config, split="train", streaming=True, cache_dir=cache_dir)
    else:
        pool = CocoUnified(
            config_name=config, data_dir=data_dir, doc2vec_path=doc2vec_path, cache_dir=cache_dir
        ).as_streaming_dataset("train")
    missing = [column for column in COLUMNS if column not in pool.column_names]
    if missing:
        raise CocoError(
            f"config {config!r} has no column(s) {missing}; use a config with images and build or export it with its Doc2Vec sidecar."
        )
    return pool.select_columns(COLUMNS)


class ToTensors:
    """Decode (datasets does, lazily, in the worker), resize and convert one example.

    A class rather than a closure so that DataLoader workers can pickle it under any start method.
    """

    def __init__(self, image_size: int):
        self.image_size = image_size

    def __call__(self, example: dict) -> dict:
        image = example["image"].convert("RGB").resize((self.image_size, self.image_size))
        return {
            "index": example["index"],
            # uint8 crosses the worker queue at a quarter of float32's size; normalise on the trainer's device.
            "image": torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1),
            "doc2vec": torch.tensor(example["doc2vec"], dtype=torch.float32),
            "multi_hot": torch.tensor(example["multi_hot"], dtype=torch.float32),
        }


def training_stream(
    pool: datasets.IterableDataset,
    rank: int = 0,
    world_size: int = 1,
    image_size: int = 224,
    shuffle_buffer: int = 1_000,
    seed: int = 0,
) -> datasets.IterableDataset:
    """This rank's part of the pool, shuffled through a buffer, as tensors.

    Every rank must use the same seed: the shard order is shuffled identically on all of them before
    they take their disjoint parts, so each example still lands on exactly one rank.
    """
    stream = pool.shuffle(seed=seed, buffer_size=shuffle_buffer)
    if world_size > 1:
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    return stream.map(ToTensors(image_size), remove_columns=COLUMNS)


def make_loader(stream: datasets.IterableDataset, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    # datasets hands each worker whole shards (n_shards >= workers) so no example is read twice.
    return torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=workers)


class HashingModel(torch.nn.Module):
    """Image and text encoders into a shared space of `bits` tanh-relaxed hash bits."""

    def __init__(self, bits: int = 64, text_dim: int = 300, pooled: int = 8):
        super().__init__()
        self.image = torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(pooled),
            torch.nn.Flatten(),
            torch.nn.Linear(3 * pooled * pooled, bits),
            torch.nn.Tanh(),
        )
        self.text = torch.nn.Sequential(torch.nn.Linear(text_dim, bits), torch.nn.Tanh())

    def loss(self, images: torch.Tensor, texts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        image_codes, text_codes = self.image(images.float() / 255), self.text(texts)
        shares_a_label = (labels @ labels.T > 0).float() * 2 - 1  # +1 similar, -1 dissimilar
        agreement = image_codes @ text_codes.T / image_codes.shape[1]
        return torch.nn.functional.mse_loss(agreement, shares_a_label)


def train(loader: torch.utils.data.DataLoader, stream: datasets.IterableDataset, epochs: int) -> HashingModel:
    model = HashingModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        stream.set_epoch(epoch)  # a new shuffle each epoch, identical on every rank
        seen = 0
        for batch in loader:
            loss = model.loss(batch["image"], batch["doc2vec"], batch["multi_hot"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(batch["index"])
        logger.info("epoch %d: %d images, last loss %.4f", epoch, seen, loss.item())
    return model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--parquet", metavar="DIR_OR_REPO", help="a folder written by `coco-unified push`, or its Hub repo id"
    )
    source.add_argument("--data-dir", metavar="DIR", help="a local COCO 2017 copy, streamed by the script builder")
    parser.add_argument(
        "--doc2vec-path",
        metavar="PATH",
        help="the Doc2Vec sidecar, with --data-dir (default: coco_unified_doc2vec.parquet next to coco_unified.py)",
    )
    parser.add_argument("--config", default="default", help="a config with images and doc2vec (default: %(default)s)")
    parser.add_argument("--cache-dir", metavar="DIR", help="the datasets cache (default: datasets' own)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the pool (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step, per rank (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default: %(default)s)")
    parser.add_argument(
        "--image-size", type=int, default=224, help="images are resized to S x S pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--shuffle-buffer",
        type=int,
        default=1_000,
        help="examples held for shuffling, per worker (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the shuffle; the same on every rank (default: %(default)s)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages, and show the traceback of an error"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.configure_logging(args.verbose)
    # torchrun sets RANK and WORLD_SIZE; a plain run is rank 0 of 1.
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        pool = open_pool(args.parquet, args.data_dir, args.doc2vec_path, args.config, args.cache_dir)
    except CocoError as error:
        if args.verbose:
            raise
        parser.exit(1, f"{parser.prog}: error: {cli.in_flag_words(str(error), cli.flags_of(parser))}\n")
    stream = training_stream(pool, rank, world_size, args.image_size, args.shuffle_buffer, args.seed)
    train(make_loader(stream, args.batch_size, args.workers), stream, args.epochs)
    return 0


if __name__ == "__main__":
    # Run the copy imported under the package's name: its logger is named for it, its classes pickle by it.
    from examples.train_stream import main as main_in_package

    sys.exit(main_in_package())
