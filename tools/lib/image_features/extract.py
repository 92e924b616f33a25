"""One run of `coco-unified image-features`: the mean image (CNN-F), the features, the merge, the sidecar.

Each pass goes over this rank's shards (all of them in a single process), storing every finished
shard at once (tools/lib/image_features/resume.py); after a barrier, rank 0 merges the stored
shards, checks that every image of the pool came out exactly once, sorts by image id and writes
the sidecar. The file is the same whatever the number of workers and ranks: a batch never mixes
shards, and the merge orders rows by image id.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform

import datasets
import numpy as np
import PIL
import torch

import coco_unified
from coco_unified import CocoError
from tools.lib.image_features.mean_image import MEAN_IMAGE_SUFFIX, mean_image_sha256, read_mean_image, write_mean_image
from tools.lib.image_features.models import FeatureModel, ModelOptions, load_model
from tools.lib.image_features.pipeline import PoolSource, batches
from tools.lib.image_features.resume import Ranks, ShardStore
from tools.lib.image_features.sidecar import STORE_TYPES, write_feature_sidecar
from tools.lib.progress import Progress

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
# More shards than the builder's default: a shard is the work an interruption can lose (per
# worker), and the unit that workers and ranks share out.
DEFAULT_NUM_SHARDS = 64
BAD_IMAGE_POLICIES = ("stop", "skip")
DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
    """How the run goes. Of these, only `batch_size` can touch the features (rounding, in the last bits)."""

    output: str
    batch_size: int = DEFAULT_BATCH_SIZE
    num_workers: int = 2
    store: str = "float32"
    on_bad_image: str = "stop"

    def __post_init__(self):
        if self.store not in STORE_TYPES:
            raise CocoError(f"store {self.store!r} is not one of {list(STORE_TYPES)}.")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise CocoError(f"on_bad_image {self.on_bad_image!r} is not one of {list(BAD_IMAGE_POLICIES)}.")


@dataclasses.dataclass(frozen=True)
class ExtractResult:
    output: str | None  # None on the ranks that do not merge
    images: int
    skipped: list[dict]
    mean_image_files: list[str]


def extract(model_name: str, model_options: ModelOptions, source: PoolSource, options: ExtractOptions) -> ExtractResult:
    """Compute the features of every image of the source's pool and write the sidecar at `options.output`."""
    ranks = Ranks.from_environment()
    ranks.start()
    try:
        return _extract(model_name, model_options, source, options, ranks)
    finally:
        ranks.stop()


def resolve_device(device: str, ranks: Ranks) -> str:
    if device not in DEVICES:
        raise CocoError(f"device {device!r} is not one of {list(DEVICES)}.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise CocoError(
                f"device=cuda: torch {torch.__version__} sees no GPU here; pass device=cpu, or install a CUDA build of torch."
            )
        return f"cuda:{ranks.local_rank}"
    return device


def _extract(
    model_name: str, model_options: ModelOptions, source: PoolSource, options: ExtractOptions, ranks: Ranks
) -> ExtractResult:
    device = resolve_device(model_options.device, ranks)
    model = load_model(model_name, dataclasses.replace(model_options, device=device))
    os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
    work = options.output + ".parts"
    stream = source.open_stream(with_captions=model.text_feature is not None)
    expected = source.expected_image_ids()
    runner = PassRunner(stream, source, model, device, options, ranks, len(expected))
    stores, mean_image_files = [], []
    if model.needs_mean_image:
        if model_options.mean_image:
            mean_image = read_mean_image(model_options.mean_image)
        else:
            stores.append(ShardStore(os.path.join(work, "mean"), runner.inputs("mean image")))
            mean_image = runner.mean_image(stores[-1])
            if ranks.merges:
                mean_image_files = write_mean_image(mean_image, os.path.splitext(options.output)[0] + MEAN_IMAGE_SUFFIX)
        model.set_mean_image(mean_image, mean_image_sha256(mean_image))
    stores.append(ShardStore(os.path.join(work, "features"), runner.inputs("features", model.provenance)))
    runner.run("features", stores[-1], FeatureRows(model, device))
    ranks.barrier()
    if not ranks.merges:
        return ExtractResult(None, 0, [], [])
    image_ids, features, caption_features, skipped = merge_features(stores[-1], stream.num_shards, model)
    check_coverage(image_ids, skipped, expected, options.output)
    provenance = {
        **model.provenance,
        "tool": "coco-unified image-features",
        "source": source.describe(),
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else device,
        "dtype": model_options.dtype,
        "batch_size": options.batch_size,
        "skipped_images": skipped,
        "versions": library_versions(model_name),
    }
    write_feature_sidecar(options.output, image_ids, features, provenance, options.store, caption_features)
    _remove(stores, work)
    if skipped:
        logger.warning("left out %d images that could not be decoded (listed in the sidecar's metadata)", len(skipped))
    logger.info("wrote the %s of %d images to %s", ", ".join(features), len(image_ids), options.output)
    return ExtractResult(options.output, len(image_ids), skipped, mean_image_files)


def _remove(stores: list[ShardStore], work: str) -> None:
    """The finished shards are no longer needed once the sidecar is written."""
    for store in stores:
        store.remove()
    if os.path.isdir(work) and not os.listdir(work):
        os.rmdir(work)


def _where(source: PoolSource) -> str:
    return coco_unified.redact_url(source.data_dir or source.base_url or coco_unified.OFFICIAL_BASE_URL)


def library_versions(model_name: str) -> dict:
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "datasets": datasets.__version__,
        "coco_unified": str(coco_unified.VERSION),
    }
    if model_name == "cnnf":
        import scipy

        versions["scipy"] = scipy.__version__
    if model_name == "vgg19":
        import torchvision

        versions["torchvision"] = torchvision.__version__
    if model_name == "clip":
        import open_clip

        versions["open_clip"] = open_clip.__version__
    return versions


# ----------------------------------------------------------------------------- passes


class MeanImageSums:
    """Per shard: the int64 sum of the prepared pixels and their count (exact: any order gives the same sums)."""

    def __init__(self):
        self._sums, self._counts, self._bad = {}, {}, {}

    def add(self, batch: dict) -> None:
        shard = batch["shard"]
        self._bad.setdefault(shard, []).extend(batch["bad"])
        self._counts[shard] = self._counts.get(shard, 0) + len(batch["image_ids"])
        if batch["pixels"] is not None:
            self._sums[shard] = self._sums.get(shard, 0) + batch["pixels"].sum(dim=0, dtype=torch.int64).numpy()

    def finish(self, shard: int) -> dict[str, np.ndarray]:
        return {
            "sum": np.asarray(self._sums.pop(shard, 0), dtype=np.int64),
            "count": np.int64(self._counts.pop(shard)),
            "bad": np.array(json.dumps(self._bad.pop(shard))),
        }


class FeatureRows:
    """Per shard: the image ids and features, and with text the captions' features and counts."""

    def __init__(self, model: FeatureModel, device: str):
        self.model, self.device = model, torch.device(device)
        self._parts: dict[int, dict[str, list]] = {}

    def add(self, batch: dict) -> None:
        parts = self._parts.setdefault(
            batch["shard"], {"image_ids": [], "features": [], "caption_counts": [], "caption_features": [], "bad": []}
        )
        parts["bad"].extend(batch["bad"])
        if batch["pixels"] is None:
            return
        parts["image_ids"].append(batch["image_ids"].numpy())
        pixels = batch["pixels"].to(self.device, non_blocking=True)
        parts["features"].append(self.model.embed_images(pixels).float().cpu().numpy())
        if self.model.text_feature is not None:
            tokens = batch["tokens"].to(self.device, non_blocking=True)
            parts["caption_counts"].append(batch["caption_counts"].numpy())
            parts["caption_features"].append(self.model.embed_texts(tokens).float().cpu().numpy())

    def finish(self, shard: int) -> dict[str, np.ndarray]:
        parts = self._parts.pop(shard)
        arrays = {
            "image_ids": _concatenate(parts["image_ids"], np.int64, (0,)),
            "features": _concatenate(parts["features"], np.float32, (0, self.model.dim)),
            "bad": np.array(json.dumps(parts["bad"])),
        }
        if self.model.text_feature is not None:
            arrays["caption_counts"] = _concatenate(parts["caption_counts"], np.int64, (0,))
            arrays["caption_features"] = _concatenate(parts["caption_features"], np.float32, (0, self.model.dim))
        return arrays


def _concatenate(parts: list[np.ndarray], dtype, empty_shape: tuple) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(empty_shape, dtype=dtype)


class PassRunner:
    """Runs a pass over this rank's unfinished shards, storing each finished shard at once."""

    def __init__(
        self,
        stream,
        source: PoolSource,
        model: FeatureModel,
        device: str,
        options: ExtractOptions,
        ranks: Ranks,
        images: int,
    ):
        self.stream, self.source, self.model, self.device, self.options = stream, source, model, device, options
        self.ranks, self.images, self.where = ranks, images, _where(source)

    def inputs(self, name: str, model_provenance: dict | None = None) -> dict:
        """What the stored shards of a pass depend on: a resumed run must agree on all of it."""
        return {
            "pass": name,
            "shards": self.stream.num_shards,
            "source": self.source.describe(),
            "prepare_image": repr(self.model.worker_steps.prepare_image),
            "pillow": PIL.__version__,
            "on_bad_image": self.options.on_bad_image,
            "model": model_provenance,
            "device": torch.device(self.device).type,
            "batch_size": self.options.batch_size if model_provenance else None,
            "torch": torch.__version__,
        }

    def mean_image(self, store: ShardStore) -> np.ndarray:
        """The mean of the prepared images over the pool (all ranks' shards), height x width x 3, float64."""
        self.run("mean image", store, MeanImageSums())
        self.ranks.barrier()
        shards = [store.load(shard) for shard in range(self.stream.num_shards)]
        count = sum(int(shard["count"]) for shard in shards)
        if count == 0:
            raise CocoError(f"{self.where}: no image of the pool could be decoded; the mean image needs at least one.")
        total = sum(shard["sum"] for shard in shards if shard["sum"].ndim == 3)
        return (total / count).transpose(1, 2, 0)

    def run(self, name: str, store: ShardStore, accumulator) -> None:
        if self.ranks.merges:
            store.prepare()
        self.ranks.barrier()
        store.check()
        mine = self.ranks.owned(self.stream.num_shards)
        finished = store.finished()
        pending = [shard for shard in mine if shard not in finished]
        if len(pending) < len(mine):
            logger.info(
                "%s: resuming, %d of %d shards were finished by an earlier run",
                name,
                len(mine) - len(pending),
                len(mine),
            )
        # Shards are about equal in bytes, not in images: the total, and so the ETA, is an estimate.
        estimate = round(self.images * len(pending) / self.stream.num_shards)
        label = f"{name} (rank {self.ranks.rank})" if self.ranks.distributed else name
        with Progress(total=estimate, unit="image", desc=label, smoothing=0.1) as progress:
            for batch in batches(
                self.stream,
                pending,
                self.model.worker_steps,
                self.options.batch_size,
                self.options.num_workers,
                pin_memory=self.device.startswith("cuda"),
            ):
                if "error" in batch:
                    raise CocoError(batch["error"])
                self._check_bad(batch["bad"])
                accumulator.add(batch)
                progress.update(len(batch["image_ids"]) + len(batch["bad"]))
                if batch["last"]:
                    store.save(batch["shard"], accumulator.finish(batch["shard"]))
            progress.total = progress.n

    def _check_bad(self, bad: list[dict]) -> None:
        for entry in bad:
            what = f"{self.where}: {entry['file_name']} (image id {entry['image_id']}) cannot be decoded ({entry['error']})"
            if self.options.on_bad_image == "stop":
                raise CocoError(
                    f"{what}; the copy of COCO is damaged: download it again, or pass on_bad_image=skip to leave "
                    "such images out (the sidecar lists them)."
                )
            logger.warning("%s; left out", what)


# ----------------------------------------------------------------------------- merge


def merge_features(
    store: ShardStore, num_shards: int, model: FeatureModel
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, list[np.ndarray]] | None, list[dict]]:
    """Every shard's rows, sorted by image id: ids, feature columns, caption columns, skipped images."""
    shards = [store.load(shard) for shard in range(num_shards)]
    image_ids = np.concatenate([shard["image_ids"] for shard in shards])
    order = np.argsort(image_ids, kind="stable")
    features = {model.image_feature: np.concatenate([shard["features"] for shard in shards])[order]}
    skipped = sorted(
        (entry for shard in shards for entry in json.loads(str(shard["bad"]))), key=lambda e: e["image_id"]
    )
    caption_features = None
    if model.text_feature is not None:
        counts = np.concatenate([shard["caption_counts"] for shard in shards])
        rows = np.concatenate([shard["caption_features"] for shard in shards])
        per_image = np.split(rows, np.cumsum(counts)[:-1]) if len(counts) else []
        per_image = [per_image[position] for position in order]
        features[model.text_feature] = np.stack([captions.mean(axis=0) for captions in per_image]).astype(np.float32)
        caption_features = {model.caption_feature: per_image}
    return image_ids[order], features, caption_features, skipped


def check_coverage(image_ids: np.ndarray, skipped: list[dict], expected: np.ndarray, output: str) -> None:
    """Every image of the pool exactly once: computed, or skipped as undecodable."""
    repeated = np.unique(image_ids[:-1][np.diff(image_ids) == 0])
    if len(repeated):
        raise CocoError(
            f"{output}: images {repeated[:5].tolist()} were read twice; delete {output}.parts and run again."
        )
    covered = set(image_ids.tolist()) | {entry["image_id"] for entry in skipped}
    wanted = set(expected.tolist())
    missing, extra = sorted(wanted - covered), sorted(covered - wanted)
    if missing or extra:
        raise CocoError(
            f"{output}: the stream gave {len(missing)} images too few (e.g. {missing[:5]}) and {len(extra)} too many "
            f"(e.g. {extra[:5]}) against the annotations; the archives and annotations disagree. Download them again."
        )
