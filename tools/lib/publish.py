"""Publish the pool on the Hugging Face Hub: as Parquet data files (default) or as the loading script.

`write_folder(PublishOptions(...))` writes a Hub-ready folder; `upload` sends it.

Mode `parquet` builds each chosen config with coco_unified.py and writes:

    OUT/README.md                                        dataset card: configs, features, provenance
    OUT/data/<config>/<split>-00000-of-00004.parquet     images embedded, ~shard_size each

`datasets` >= 4 and the dataset viewer read only such data files; `load_dataset("USER/REPO", config)`
then works with any `datasets` version, streaming included. Feature columns (`feature_sidecars`)
are columns of the data files like any other; the card records each sidecar's provenance. The shards are copied record batch by
record batch from the prepared Arrow files, so memory stays flat however large the pool.

Mode `script` stages coco_unified.py, dataset_infos.json, a card, the Doc2Vec sidecar and the
Karpathy id lists (data/karpathy_*_image_ids.txt, which the script reads relative to itself), for
`load_dataset("USER/REPO", trust_remote_code=True)` with `datasets` < 4. Feature sidecars are not
staged: the loader joins them from the paths its user passes as feature_sidecars (local paths
resolve against the user's folder, not the repo), so the card says how to pass them instead.

The folder is written beside OUT under a temporary name and renamed to OUT when complete, so OUT is
never left half-written: on an error the temporary folder is removed and an earlier OUT stays.
"""

import dataclasses
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCardData, HfApi

import coco_unified
from coco_unified import PROTOCOLS, CocoError, CocoUnified, ConfigError, number_of
from tools.lib.builder import pool_builder
from tools.lib.dataset_infos import INFOS_PATH
from tools.lib.pool import DEFAULT_SIDECAR, read_pool
from tools.lib.progress import Progress

logger = logging.getLogger(__name__)

MODES = ("parquet", "script")
DEFAULT_SHARD_SIZE = "500MB"
# A streaming reader fetches whole row groups: 100 images (~16 MB of real COCO JPEGs) keep the
# first example quick; rows without images are ~1.5 KB, so larger groups cost little.
ROW_GROUP_ROWS_WITH_IMAGES = 100
ROW_GROUP_ROWS_WITHOUT_IMAGES = 10_000
SCRIPT_FILE = os.path.abspath(coco_unified.__file__)
CARD_FILE = "README.md"
DATA_DIR = "data"
# Everything either mode writes at the top of its folder: an existing folder holding anything
# else is not one of ours, and is not replaced.
FOLDER_ENTRIES = {CARD_FILE, DATA_DIR, os.path.basename(SCRIPT_FILE), INFOS_PATH.name, coco_unified.DOC2VEC_SIDECAR}


def shard_bytes(shard_size: str) -> int:
    """The bytes of a size written like 500MB or 1GB."""
    try:
        return convert_file_size_to_int(shard_size)
    except ValueError:
        raise CocoError(f"shard_size={shard_size} is not a size; write it like 500MB or 1GB.") from None


@dataclasses.dataclass(frozen=True)
class PublishOptions:
    """What is built and where the folder goes; the defaults are the command's."""

    output: str
    mode: str = "parquet"
    data_dir: str | None = None
    base_url: str | None = None
    configs: tuple[str, ...] = ()  # empty: every config the pool can hold
    config_kwargs: Mapping[str, object] = dataclasses.field(default_factory=dict)  # set in every config
    doc2vec: bool = True
    doc2vec_path: str = DEFAULT_SIDECAR
    cache_dir: str | None = None
    num_proc: int | None = None
    shard_size: str = DEFAULT_SHARD_SIZE
    repo_id: str | None = None  # named in the card's usage example
    # column -> feature sidecar, joined in every config as the loader's feature_sidecars
    feature_sidecars: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise CocoError(f"mode={self.mode!r} is not a mode; choose one of {list(MODES)}.")
        if "feature_sidecars" in self.config_kwargs:
            raise ConfigError("config_kwargs holds feature_sidecars: pass them as feature_sidecars= instead.")
        coco_unified.check_feature_sidecars(dict(self.feature_sidecars), self.doc2vec)
        unknown = [name for name in self.configs if name not in CocoUnified.builder_configs]
        if unknown:
            raise CocoError(f"Unknown config(s) {unknown}; choose among {list(CocoUnified.builder_configs)}.")
        shard_bytes(self.shard_size)  # checked now rather than after the first config is built

    @property
    def shard_bytes(self) -> int:
        return shard_bytes(self.shard_size)

    @property
    def sidecar(self) -> str | None:
        return self.doc2vec_path if self.doc2vec else None


@dataclasses.dataclass(frozen=True)
class Folder:
    """A written folder: its path, its files relative to it, and the configs it holds."""

    path: str
    files: list[str]
    configs: list[str]

    @property
    def num_bytes(self) -> int:
        return sum(os.path.getsize(os.path.join(self.path, name)) for name in self.files)


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
    with Progress(total=plan.num_rows, unit="rows", desc=f"{os.path.basename(split_dir)}/{split}") as progress:
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


@dataclasses.dataclass(frozen=True)
class ExportedConfig:
    name: str
    info: datasets.DatasetInfo
    data_files: dict[str, str]  # split -> glob relative to the folder
    shards: list[str]


def build_config(options: PublishOptions, config: str) -> CocoUnified:
    """Prepare one config in the datasets cache."""
    builder = pool_builder(
        config,
        data_dir=options.data_dir,
        base_url=options.base_url,
        doc2vec=options.doc2vec,
        doc2vec_path=options.doc2vec_path,
        cache_dir=options.cache_dir,
        feature_sidecars=dict(options.feature_sidecars),
        **options.config_kwargs,
    )
    builder.download_and_prepare(num_proc=options.num_proc)
    return builder


def export_config(options: PublishOptions, config: str, folder: str) -> ExportedConfig:
    """Build one config and write its splits under folder/data/<config>/."""
    builder = build_config(options, config)
    config_dir = os.path.join(folder, DATA_DIR, config)
    os.makedirs(config_dir)
    data_files, shards = {}, []
    for split, split_info in builder.info.splits.items():
        dataset = builder.as_dataset(split)
        row_group_rows = ROW_GROUP_ROWS_WITH_IMAGES if "image" in dataset.features else ROW_GROUP_ROWS_WITHOUT_IMAGES
        plan = ShardPlan.for_split(split_info.num_examples, split_info.num_bytes, options.shard_bytes, row_group_rows)
        shards += write_split(dataset, config_dir, split, plan)
        data_files[split] = f"{DATA_DIR}/{config}/{split}-*"
    logger.info("%s: %s, %s", config, number_of(len(data_files), "split"), number_of(len(shards), "shard"))
    return ExportedConfig(config, builder.info, data_files, shards)


def protocol_sizes(options: PublishOptions, config: str) -> tuple[int, int]:
    """num_query and num_train of a protocol config, as this export sets them."""
    defaults = CocoUnified.builder_configs[config]
    return (
        options.config_kwargs.get("num_query", defaults.num_query),
        options.config_kwargs.get("num_train", defaults.num_train),
    )


def configs_to_export(options: PublishOptions) -> list[str]:
    """The chosen configs; by default every config, less the protocol ones the pool is too small for.

    A skipped config is logged with the sizes that would fit it; a config named in `configs` that
    does not fit fails before anything is built.
    """
    names = list(options.configs) or list(CocoUnified.builder_configs)
    protocols = {
        name: PROTOCOLS[CocoUnified.builder_configs[name].protocol]
        for name in names
        if CocoUnified.builder_configs[name].protocol is not None
    }
    if not protocols:
        return names
    labeled = sum(1 for record in read_pool(options.data_dir, options.base_url) if record.labels)
    too_small = []
    for name, protocol in protocols.items():
        try:
            protocol.check_fits(labeled, *protocol_sizes(options, name), whose=f"Config {name}")
        except ConfigError as error:
            if options.configs:
                raise
            logger.warning("%s Skipped; to export it, pass configs=['%s'] with such sizes.", error, name)
            too_small.append(name)
    return [name for name in names if name not in too_small]


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


def features_section(features: Mapping[str, dict], script_repo_id: str | None = None) -> str:
    """The feature columns and each sidecar's provenance; for a script repo, how to pass the sidecars."""
    in_data_files = script_repo_id is None
    if in_data_files and not features:
        return ""
    sidecars = {column: entry["sidecar"] for column, entry in features.items()} or {"vgg19_fc7": "vgg19.parquet"}
    if in_data_files:
        how = (
            "The data files hold these feature columns, joined by `image_id` from sidecars written by "
            "`coco-unified image-features`."
        )
    else:
        how = (
            "The loading script joins image features (CNN-F / VGG-19 fc7, CLIP) as float32 columns from Parquet "
            "sidecars written by `coco-unified image-features`; this repository does not hold them. Make (or "
            "download) the sidecars and pass their local paths or URLs:\n\n"
            f'```python\npool = load_dataset("{script_repo_id}", "default", trust_remote_code=True, '
            f"feature_sidecars={sidecars!r})\n```\n"
        )
    columns = "".join(
        f"\n### `{column}` ({entry['dim']}-d, from `{entry['sidecar']}`)\n\n"
        f"```json\n{json.dumps(entry['provenance'], indent=2, sort_keys=True)}\n```\n"
        for column, entry in features.items()
    )
    return f"## Feature columns\n\n{how}\n{columns}\n"


def common_sections(info: datasets.DatasetInfo, provenance: dict | None, features_text: str) -> str:
    return (
        f"{info.description}\nHomepage: {info.homepage}\n\n"
        f"{provenance_section(provenance)}\n"
        f"{features_text}"
        f"## License\n\n{info.license}\n\n"
        f"## Citation\n\n```bibtex\n{info.citation}```\n"
    )


def parquet_card(
    repo_id: str, exported: Sequence[ExportedConfig], provenance: dict | None, features: Mapping[str, dict]
) -> str:
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
        + f"\n# COCO 2017 unified pool\n\n{common_sections(exported[0].info, provenance, features_section(features))}\n"
        + f"## Configs\n\n| config | rows | contents |\n|---|---|---|\n{rows}\n\n## Usage\n\n{usage}"
    )


def script_card(repo_id: str, provenance: dict | None, features: Mapping[str, dict]) -> str:
    card_data = base_card_data()
    usage = (
        "This repository holds the loading script; it runs with `datasets` < 4 only:\n\n"
        f"```python\nfrom datasets import load_dataset\n\n"
        f'pool = load_dataset("{repo_id}", "default", trust_remote_code=True)\n```\n'
    )
    info = CocoUnified(config_name=CocoUnified.DEFAULT_CONFIG_NAME, doc2vec=False).info
    return (
        card_header(card_data)
        + f"\n# COCO 2017 unified pool (loading script)\n\n{common_sections(info, provenance, features_section(features, repo_id))}\n## Usage\n\n{usage}"
    )


# ----------------------------------------------------------------------------- folders


def _write_card(folder: str, text: str) -> None:
    with open(os.path.join(folder, CARD_FILE), "w", encoding="utf-8") as file:
        file.write(text)


def _provenance(options: PublishOptions) -> dict | None:
    return coco_unified.read_doc2vec_provenance(options.sidecar) if options.sidecar else None


def feature_provenance(options: PublishOptions) -> dict[str, dict]:
    """Per feature column: its dimension, its sidecar's file name and provenance (footers only are read)."""
    described = {}
    for column, path in options.feature_sidecars.items():
        path = os.fspath(path)
        dim = coco_unified.feature_column(column, path).dim
        provenance = coco_unified.sidecar_provenance(coco_unified.read_sidecar_schema(path))
        described[column] = {"dim": dim, "sidecar": os.path.basename(path), "provenance": provenance}
    return described


def write_parquet_files(options: PublishOptions, folder: str) -> list[str]:
    """Export every config in `configs_to_export` into `folder`; returns the configs written."""
    configs = configs_to_export(options)
    features = feature_provenance(options)  # a missing sidecar or column fails before any config is built
    exported = [export_config(options, config, folder) for config in configs]
    _write_card(folder, parquet_card(options.repo_id or "USER/REPO", exported, _provenance(options), features))
    return configs


def write_script_files(options: PublishOptions, folder: str) -> list[str]:
    """Stage the loading script and what it reads next to itself in `folder`; returns no config."""
    sources = {os.path.basename(SCRIPT_FILE): SCRIPT_FILE, INFOS_PATH.name: str(INFOS_PATH)}
    # The protocols' id lists, which the script fetches relative to itself (Karpathy's).
    for protocol in PROTOCOLS.values():
        sources.update({path: os.path.join(os.path.dirname(SCRIPT_FILE), path) for path in protocol.id_lists.values()})
    if options.sidecar:
        if not os.path.isfile(options.sidecar):
            raise coco_unified.missing_sidecar_error(options.sidecar)
        sources[coco_unified.DOC2VEC_SIDECAR] = options.sidecar
    for name, source in sources.items():
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        shutil.copyfile(source, os.path.join(folder, name))
    features = feature_provenance(options)
    if features:
        logger.warning(
            "Script mode does not upload feature sidecars (%s): the card tells users to pass feature_sidecars",
            ", ".join(features),
        )
    _write_card(folder, script_card(options.repo_id or "USER/REPO", _provenance(options), features))
    return []


def check_replaceable(output: str) -> None:
    """An existing output folder is replaced only when it holds nothing but what this module writes."""
    if not os.path.exists(output):
        return
    if not os.path.isdir(output):
        raise CocoError(f"{output} is a file; pass a folder (new or written by an earlier run) as output.")
    foreign = sorted(set(os.listdir(output)) - FOLDER_ENTRIES)
    if foreign:
        raise CocoError(
            f"{output} holds {', '.join(foreign[:5])}, which this export does not write, and would be replaced; "
            "pass a new folder as output, or empty this one."
        )


def write_folder(options: PublishOptions) -> Folder:
    """Write the whole folder under a temporary name beside options.output, then put it in place."""
    check_replaceable(options.output)
    parent, name = os.path.split(os.path.abspath(options.output))
    os.makedirs(parent, exist_ok=True)
    # Made with mkdir (mkdtemp would make it private to the user) under a name of its own.
    staging = os.path.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.partial")
    os.mkdir(staging)
    try:
        write = write_parquet_files if options.mode == "parquet" else write_script_files
        configs = write(options, staging)
        files = sorted(
            os.path.relpath(os.path.join(directory, file), staging)
            for directory, _, names in os.walk(staging)
            for file in names
        )
        _replace(staging, options.output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Folder(options.output, files, configs)


def _replace(staging: str, output: str) -> None:
    """Rename `staging` to `output`; an earlier `output` is moved aside first and removed after."""
    if not os.path.exists(output):
        os.rename(staging, output)
        return
    previous = f"{staging.removesuffix('.partial')}.previous"
    os.rename(output, previous)
    try:
        os.rename(staging, output)
    except BaseException:
        os.rename(previous, output)
        raise
    shutil.rmtree(previous)


# ----------------------------------------------------------------------------- upload


def replaced_remote_files(folder: Folder) -> list[str]:
    """Remote files that go when the folder is uploaded: the old shards of the configs it holds
    (their `-of-N` count may differ). Configs it does not hold are left as they are."""
    return [f"{DATA_DIR}/{config}/*" for config in folder.configs]


def upload(folder: Folder, repo_id: str, private: bool) -> None:
    """Upload the folder; remote files of `replaced_remote_files` absent from it are deleted in the same commit.

    The token comes from HF_TOKEN or the login cache (`hf auth login`). With hf_xet installed (a
    huggingface_hub dependency), `upload_folder` commits a large folder in several batches and
    resumes an interrupted upload when run again.
    """
    api = HfApi()
    # private=None keeps an existing repo's visibility (or the organisation's default for a new one).
    api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=folder.path,
        repo_type="dataset",
        commit_message="Upload COCO 2017 unified pool with coco-unified push",
        delete_patterns=replaced_remote_files(folder) or None,
    )
    logger.info("uploaded %s to https://huggingface.co/datasets/%s", folder.path, repo_id)
