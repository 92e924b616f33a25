"""Publish the pool on the Hugging Face Hub: as Parquet data files (default) or as the loading script.

    python -m tools.push --data-dir DIR --output OUT --repo-id USER/REPO [--configs ...] [--private]
    python -m tools.push --data-dir DIR --output OUT --dry-run          # write OUT, upload nothing
    python -m tools.push --mode script --output OUT --repo-id USER/REPO

Mode `parquet` builds each chosen config with coco_unified.py and writes a Hub-ready folder:

    OUT/README.md                                        dataset card: configs, features, provenance
    OUT/data/<config>/<split>-00000-of-00004.parquet     images embedded, ~--shard-size each

`datasets` >= 4 and the dataset viewer read only such data files; `load_dataset("USER/REPO", config)`
then works with any `datasets` version, streaming included. The shards are copied record batch by
record batch from the prepared Arrow files, so memory stays flat however large the pool.

Mode `script` uploads coco_unified.py, dataset_infos.json, a card and the Doc2Vec sidecar, for
`load_dataset("USER/REPO", trust_remote_code=True)` with `datasets` < 4.

The upload reads the token from HF_TOKEN or the login cache (`hf auth login`). With hf_xet
installed (a huggingface_hub dependency), `upload_folder` commits a large folder in several
batches and resumes an interrupted upload when run again.
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCardData, HfApi
from tqdm import tqdm

import coco_unified
from coco_unified import CocoError, CocoUnified
from tools.lib.pool import DEFAULT_SIDECAR, add_source_arguments

logger = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = "500MB"
# A streaming reader fetches whole row groups: 100 images (~16 MB of real COCO JPEGs) keep the
# first example quick; rows without images are ~1.5 KB, so larger groups cost little.
ROW_GROUP_ROWS_WITH_IMAGES = 100
ROW_GROUP_ROWS_WITHOUT_IMAGES = 10_000
INFOS_FILE = os.path.join(os.path.dirname(os.path.abspath(coco_unified.__file__)), "dataset_infos.json")
SCRIPT_FILE = os.path.abspath(coco_unified.__file__)


# ----------------------------------------------------------------------------- Parquet shards


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """How one split is cut: contiguous shards of near-equal rows, each in row groups."""

    num_rows: int
    num_shards: int
    row_group_rows: int

    @classmethod
    def for_split(cls, num_rows: int, num_bytes: int, shard_size: int, row_group_rows: int) -> "ShardPlan":
        num_shards = min(max(1, math.ceil(num_bytes / shard_size)), max(1, num_rows))
        return cls(num_rows, num_shards, row_group_rows)

    def shard_rows(self, shard: int) -> int:
        return (shard + 1) * self.num_rows // self.num_shards - shard * self.num_rows // self.num_shards

    def row_groups(self, shard: int) -> list[int]:
        """The row counts of the row groups of one shard."""
        rows = self.shard_rows(shard)
        full, rest = divmod(rows, self.row_group_rows)
        return [self.row_group_rows] * full + ([rest] if rest else [])


def shard_file_name(split: str, shard: int, num_shards: int) -> str:
    return f"{split}-{shard:05d}-of-{num_shards:05d}.parquet"


def read_record_batches(arrow_files: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The rows of a prepared split in order, one record batch in memory at a time.

    Read with plain file reads rather than through the dataset's memory map: mapped pages would
    count toward the process's RSS until the whole split had been touched.
    """
    for path in arrow_files:
        with pa.OSFile(path) as source:
            yield from pa.ipc.open_stream(source)


def recut(batches: Iterable[pa.RecordBatch], sizes: Iterable[int]) -> Iterator[pa.Table]:
    """Tables of exactly `sizes` rows each, sliced (without copying) from a stream of record batches."""
    batches = iter(batches)
    pending: pa.RecordBatch | None = None
    for size in sizes:
        pieces, missing = [], size
        while missing:
            if pending is None or pending.num_rows == 0:
                pending = next(batches, None)
                if pending is None:
                    raise CocoError(
                        "The prepared Arrow files hold fewer rows than their split info says; delete the cache and rebuild."
                    )
            piece = pending.slice(0, missing)
            pieces.append(piece)
            missing -= piece.num_rows
            pending = pending.slice(piece.num_rows)
        yield pa.Table.from_batches(pieces)


def write_split(dataset: datasets.Dataset, split_dir: str, split: str, plan: ShardPlan) -> list[str]:
    """Write the shards of one split; returns their paths."""
    schema = dataset.data.schema  # carries datasets' feature metadata, read back by load_dataset
    groups = recut(
        read_record_batches([file["filename"] for file in dataset.cache_files]),
        (size for shard in range(plan.num_shards) for size in plan.row_groups(shard)),
    )
    paths = []
    with tqdm(total=plan.num_rows, unit="rows", desc=f"{os.path.basename(split_dir)}/{split}") as progress:
        for shard in range(plan.num_shards):
            path = os.path.join(split_dir, shard_file_name(split, shard, plan.num_shards))
            # Content-defined pages let the Hub's Xet storage deduplicate a re-export against the last upload.
            with pq.ParquetWriter(path, schema, use_content_defined_chunking=True, write_page_index=True) as writer:
                for size in plan.row_groups(shard):
                    writer.write_table(next(groups), row_group_size=size)
                    progress.update(size)
            paths.append(path)
    return paths


# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass
class ExportedConfig:
    name: str
    info: datasets.DatasetInfo
    data_files: dict[str, str]  # split -> glob relative to the folder
    shards: list[str]


def build_config(args: argparse.Namespace, config: str) -> CocoUnified:
    kwargs = dict(args.config_kwargs)
    kwargs.update({"doc2vec": False} if args.no_doc2vec else {"doc2vec_path": args.doc2vec_path})
    builder = CocoUnified(
        config_name=config, data_dir=args.data_dir, base_url=args.base_url, cache_dir=args.cache_dir, **kwargs
    )
    builder.download_and_prepare(num_proc=args.num_proc)
    return builder


def export_config(args: argparse.Namespace, config: str) -> ExportedConfig:
    """Build one config and write its splits under data/<config>/."""
    builder = build_config(args, config)
    config_dir = os.path.join(args.output, "data", config)
    shutil.rmtree(config_dir, ignore_errors=True)  # shards of an earlier export with another count
    os.makedirs(config_dir)
    shard_size = convert_file_size_to_int(args.shard_size)
    data_files, shards = {}, []
    for split, split_info in builder.info.splits.items():
        dataset = builder.as_dataset(split)
        row_group_rows = ROW_GROUP_ROWS_WITH_IMAGES if "image" in dataset.features else ROW_GROUP_ROWS_WITHOUT_IMAGES
        plan = ShardPlan.for_split(split_info.num_examples, split_info.num_bytes, shard_size, row_group_rows)
        shards += write_split(dataset, config_dir, split, plan)
        data_files[split] = f"data/{config}/{split}-*"
    logger.info("%s: %d splits, %d shards in %s", config, len(data_files), len(shards), config_dir)
    return ExportedConfig(config, builder.info, data_files, shards)


def chosen_configs(names: Sequence[str] | None) -> list[str]:
    available = list(CocoUnified.builder_configs)
    unknown = [name for name in names or [] if name not in available]
    if unknown:
        raise CocoError(f"Unknown config(s) {unknown}; choose among {available}.")
    return list(names) if names else available


# ----------------------------------------------------------------------------- dataset cards


def card_header(card_data: DatasetCardData) -> str:
    return f"---\n{card_data.to_yaml()}\n---\n"


def base_card_data() -> DatasetCardData:
    return DatasetCardData(
        pretty_name="COCO 2017 unified pool (train2017 + val2017)",
        license="cc-by-4.0",
        task_categories=["image-to-text", "text-to-image", "image-classification"],
        size_categories=["100K<n<1M"],
    )


def provenance_section(provenance: dict | None) -> str:
    if provenance is None:
        return "## Doc2Vec vectors\n\nThis export has no `doc2vec` column.\n"
    return (
        "## Doc2Vec vectors\n\nThe `doc2vec` column is a 300-d Doc2Vec embedding of each image's captions, read from "
        f"the sidecar `{coco_unified.DOC2VEC_SIDECAR}`. Its provenance, as recorded in the sidecar:\n\n"
        f"```json\n{json.dumps(provenance, indent=2, sort_keys=True)}\n```\n"
    )


def common_sections(info: datasets.DatasetInfo, provenance: dict | None) -> str:
    return (
        f"{info.description}\nHomepage: {info.homepage}\n\n"
        f"{provenance_section(provenance)}\n"
        f"## License\n\n{info.license}\n\n"
        f"## Citation\n\n```bibtex\n{info.citation}```\n"
    )


def parquet_card(repo_id: str, exported: Sequence[ExportedConfig], provenance: dict | None) -> str:
    """README.md with the `configs` and `dataset_info` YAML that the Hub and `datasets` read."""
    card_data = base_card_data()
    MetadataConfigs(
        {
            config.name: {
                "data_files": [{"split": split, "path": pattern} for split, pattern in config.data_files.items()]
            }
            for config in exported
        }
    ).to_dataset_card_data(card_data)
    DatasetInfosDict({config.name: config.info for config in exported}).to_dataset_card_data(card_data)
    rows = "\n".join(
        f"| `{config.name}` | {', '.join(f'{split}: {config.info.splits[split].num_examples:,}' for split in config.data_files)} | "
        f"{CocoUnified.builder_configs[config.name].description} |"
        for config in exported
    )
    usage = (
        f"```python\nfrom datasets import load_dataset\n\n"
        f'pool = load_dataset("{repo_id}", "{exported[0].name}", split="train", streaming=True)\n```\n'
    )
    return (
        card_header(card_data)
        + f"\n# COCO 2017 unified pool\n\n{common_sections(exported[0].info, provenance)}\n"
        + f"## Configs\n\n| config | rows | contents |\n|---|---|---|\n{rows}\n\n## Usage\n\n{usage}"
    )


def script_card(repo_id: str, provenance: dict | None) -> str:
    card_data = base_card_data()
    usage = (
        "This repository holds the loading script; it runs with `datasets` < 4 only:\n\n"
        f"```python\nfrom datasets import load_dataset\n\n"
        f'pool = load_dataset("{repo_id}", "default", trust_remote_code=True)\n```\n'
    )
    info = CocoUnified(config_name=CocoUnified.DEFAULT_CONFIG_NAME, doc2vec=False).info
    return (
        card_header(card_data)
        + f"\n# COCO 2017 unified pool (loading script)\n\n{common_sections(info, provenance)}\n## Usage\n\n{usage}"
    )


# ----------------------------------------------------------------------------- modes


def sidecar_path(args: argparse.Namespace) -> str | None:
    return None if args.no_doc2vec else args.doc2vec_path or DEFAULT_SIDECAR


def write_parquet_folder(args: argparse.Namespace) -> list[str]:
    """Export every chosen config into args.output; returns the files written."""
    exported = [export_config(args, config) for config in chosen_configs(args.configs)]
    sidecar = sidecar_path(args)
    provenance = coco_unified.read_doc2vec_provenance(sidecar) if sidecar else None
    card = os.path.join(args.output, "README.md")
    with open(card, "w", encoding="utf-8") as file:
        file.write(parquet_card(args.repo_id or "USER/REPO", exported, provenance))
    return [card] + [path for config in exported for path in config.shards]


def write_script_folder(args: argparse.Namespace) -> list[str]:
    """Stage the loading script and what it reads next to itself in args.output."""
    os.makedirs(args.output, exist_ok=True)
    sources = {os.path.basename(SCRIPT_FILE): SCRIPT_FILE, "dataset_infos.json": INFOS_FILE}
    sidecar = sidecar_path(args)
    if sidecar:
        if not os.path.isfile(sidecar):
            raise coco_unified.missing_sidecar_error(sidecar)
        sources[coco_unified.DOC2VEC_SIDECAR] = sidecar
    written = []
    for name, source in sources.items():
        target = os.path.join(args.output, name)
        shutil.copyfile(source, target)
        written.append(target)
    card = os.path.join(args.output, "README.md")
    with open(card, "w", encoding="utf-8") as file:
        file.write(
            script_card(args.repo_id or "USER/REPO", coco_unified.read_doc2vec_provenance(sidecar) if sidecar else None)
        )
    return [card] + written


def upload(folder: str, repo_id: str, private: bool, replaced: Sequence[str] = ()) -> None:
    """Upload the folder; remote files matching `replaced` and absent from it are deleted in the same commit."""
    api = HfApi()
    # private=None keeps an existing repo's visibility (or the organisation's default for a new one).
    api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="dataset",
        commit_message="Upload COCO 2017 unified pool with tools/push.py",
        delete_patterns=list(replaced) or None,
    )
    logger.info("uploaded %s to https://huggingface.co/datasets/%s", folder, repo_id)


def replaced_remote_files(args: argparse.Namespace) -> list[str]:
    """In parquet mode, stale shards of the exported configs must go (their `-of-N` count may differ)."""
    if args.mode != "parquet":
        return []
    return [f"data/{config}/*" for config in chosen_configs(args.configs)]


def parse_config_kwarg(text: str) -> tuple:
    """KEY=VALUE, the value read as JSON when it is JSON (numbers, booleans) and as a string otherwise."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. num_query=5000")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.push", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        choices=("parquet", "script"),
        default="parquet",
        help="parquet: build and upload Parquet data files (any datasets version, dataset viewer); "
        "script: upload the loading script (datasets < 4 only) (default: %(default)s)",
    )
    add_source_arguments(parser)
    parser.add_argument(
        "--configs",
        nargs="+",
        metavar="NAME",
        help=f"configs to export (default: all of {list(CocoUnified.builder_configs)})",
    )
    parser.add_argument(
        "--config-kwarg",
        dest="config_kwargs",
        type=parse_config_kwarg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a CocoUnifiedConfig field set in every exported config, e.g. num_shards=32 (repeatable)",
    )
    parser.add_argument("--doc2vec-path", metavar="PATH", help=f"the Doc2Vec sidecar (default: {DEFAULT_SIDECAR})")
    parser.add_argument(
        "--no-doc2vec", action="store_true", help="export without the doc2vec column (script mode: upload no sidecar)"
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="the datasets cache the configs are prepared in (default: datasets' own)"
    )
    parser.add_argument("--num-proc", type=int, metavar="N", help="processes preparing each config (default: one)")
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="the folder written and uploaded (created if missing)"
    )
    parser.add_argument(
        "--shard-size",
        default=DEFAULT_SHARD_SIZE,
        metavar="SIZE",
        help="target Parquet shard size, e.g. 500MB (default: %(default)s)",
    )
    parser.add_argument(
        "--repo-id", metavar="USER/REPO", help="the Hub dataset repo to upload to (needed unless --dry-run)"
    )
    parser.add_argument(
        "--private",
        action="store_true",
        help="create the repo private (an existing repo keeps its visibility otherwise)",
    )
    parser.add_argument("--dry-run", action="store_true", help="write --output and list its files; upload nothing")
    args = parser.parse_args(argv)
    if not args.dry_run and not args.repo_id:
        parser.error("--repo-id is required unless --dry-run")
    try:
        convert_file_size_to_int(args.shard_size)
    except ValueError:
        parser.error(f"--shard-size {args.shard_size!r} is not a size; write it like 500MB or 1GB")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        written = write_parquet_folder(args) if args.mode == "parquet" else write_script_folder(args)
    except CocoError as error:
        logger.error("%s", error)
        return 1
    total = sum(os.path.getsize(path) for path in written)
    logger.info("wrote %d files, %.1f MB, in %s", len(written), total / 1e6, args.output)
    if args.dry_run:
        for path in written:
            print(os.path.relpath(path, args.output))
        return 0
    upload(args.output, args.repo_id, args.private, replaced_remote_files(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
