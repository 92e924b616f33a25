"""From the COCO zips to batches of prepared pixels: the builder's streaming shards, decoded in DataLoader workers.

The images are read by the builder's own streaming reader (`CocoUnified.as_streaming_dataset`:
one sequential read of whole zip entries per shard, no extraction, no `zip://`), as raw bytes. A
shard is the unit of work: a DataLoader worker takes whole shards and turns each into batches of
at most `batch_size` images of that shard only, so a batch's composition, and with it the
features, does not depend on how many workers or ranks share the work, and a finished shard can
be stored and skipped by a resumed run.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator

import datasets
import fsspec
import numpy as np
import torch
from PIL import Image

import coco_unified
from coco_unified import DEFAULT_NUM_SHARDS, CocoError, CocoUnified
from tools.lib.image_features.models import WorkerSteps
from tools.lib.pool import read_pool

# The configs whose rows are one pool of images; the protocol's splits are subsets of `labeled`.
POOL_CONFIGS = ("default", "labeled")
IMAGE_COLUMNS = ["image_id", "file_name", "image"]

# PIL's complaints about a file it cannot decode.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclasses.dataclass(frozen=True)
class PoolSource:
    """Where COCO is read from and which images: the loader's data_dir / base_url, a config, shards."""

    data_dir: str | None = None
    base_url: str | None = None
    config: str = "default"
    num_shards: int = DEFAULT_NUM_SHARDS

    def describe(self) -> dict:
        """As the sidecar's provenance records it: no password or token of base_url goes in."""
        return {**dataclasses.asdict(self), "base_url": coco_unified.redact_url(self.base_url)}

    def open_stream(self, with_captions: bool) -> datasets.IterableDataset:
        """The config's rows in archive order, the image column as undecoded bytes."""
        builder = CocoUnified(
            config_name=self.config,
            data_dir=self.data_dir,
            base_url=self.base_url,
            doc2vec=False,
            num_shards=self.num_shards,
        )
        stream = builder.as_streaming_dataset("train")
        columns = IMAGE_COLUMNS + (["captions"] if with_captions else [])
        return stream.select_columns(columns).cast_column("image", datasets.Image(decode=False))

    def expected_image_ids(self) -> np.ndarray:
        """The image ids of the config's pool, ascending; only the annotations are read."""
        labeled_only = next(config for config in CocoUnified.BUILDER_CONFIGS if config.name == self.config).labeled_only
        records = read_pool(self.data_dir, self.base_url)
        return np.array([record.image_id for record in records if record.labels or not labeled_only], dtype=np.int64)


class BadImage(Exception):
    """An image file PIL cannot decode."""


def decode_rgb(content: bytes) -> Image.Image:
    """The image in RGB: greyscale, CMYK and palette images converted, the format read from the bytes (PNG behind .jpg)."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            image.load()
            return image.convert("RGB")
    except _DECODE_ERRORS as error:
        raise BadImage(f"{type(error).__name__}: {error}") from None


class ShardBatches(torch.utils.data.IterableDataset):
    """Batches of whole shards; in DataLoader workers, each worker takes every num_workers-th shard.

    A batch is a dict: `shard`, `last` (the shard's final batch), `image_ids` (int64), `pixels`
    (uint8 N x 3 x H x W, None when no image of the batch decoded), `bad` (image_id, file_name
    and error of each image that did not decode), and for text models `tokens` and
    `caption_counts` (the captions of the decoded images, in row order).
    """

    def __init__(self, stream: datasets.IterableDataset, shards: list[int], batch_size: int, steps: WorkerSteps):
        super().__init__()
        self.stream, self.shards, self.batch_size, self.steps = stream, shards, batch_size, steps

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        shards = self.shards
        if worker is not None:
            shards = shards[worker.id :: worker.num_workers]
            # As datasets does in its own workers: the fsspec event loop inherited by fork must not be reused.
            fsspec.asyn.reset_lock()
        try:
            for shard in shards:
                yield from self.shard_batches(shard)
        except CocoError as error:
            # Passed on as a batch: DataLoader would re-raise it with the worker's traceback in its message.
            yield {"error": str(error)}

    def shard_batches(self, shard: int) -> Iterator[dict]:
        # `iter` rather than iterating the stream: in a worker, datasets would split its shards again.
        rows = self.stream.shard(num_shards=self.stream.num_shards, index=shard).iter(batch_size=self.batch_size)
        pending = None
        for batch_rows in rows:
            if pending is not None:
                yield pending
            pending = self.prepare(shard, batch_rows)
        if pending is None:  # a shard without rows still reports that it is done
            pending = self.prepare(shard, {"image_id": [], "file_name": [], "image": [], "captions": []})
        pending["last"] = True
        yield pending

    def prepare(self, shard: int, rows: dict) -> dict:
        image_ids, arrays, bad, captions = [], [], [], []
        for row, (image_id, file_name, image) in enumerate(zip(rows["image_id"], rows["file_name"], rows["image"])):
            try:
                arrays.append(self.steps.prepare_image(decode_rgb(image["bytes"])))
            except BadImage as error:
                bad.append({"image_id": image_id, "file_name": file_name, "error": str(error)})
                continue
            image_ids.append(image_id)
            if self.steps.tokenize is not None:
                captions.append(rows["captions"][row])
        batch = {
            "shard": shard,
            "last": False,
            "image_ids": torch.tensor(image_ids, dtype=torch.int64),
            "pixels": torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous() if arrays else None,
            "bad": bad,
            "tokens": None,
            "caption_counts": None,
        }
        if self.steps.tokenize is not None:
            batch["caption_counts"] = torch.tensor([len(texts) for texts in captions], dtype=torch.int64)
            batch["tokens"] = self.steps.tokenize([text for texts in captions for text in texts]) if captions else None
        return batch


def batches(
    stream: datasets.IterableDataset,
    shards: list[int],
    steps: WorkerSteps,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
) -> Iterator[dict]:
    """The batches of `shards`, decoded in `num_workers` DataLoader workers (0: in this process)."""
    loader = torch.utils.data.DataLoader(
        ShardBatches(stream, shards, batch_size, steps),
        batch_size=None,  # the workers batch by shard themselves
        num_workers=min(num_workers, len(shards)),
        pin_memory=pin_memory,
    )
    yield from loader
