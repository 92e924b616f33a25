"""Publish the pool on the Hugging Face Hub: as Parquet data files (default) or as the loading script.

    coco-unified push --data-dir DIR --output OUT --repo-id USER/REPO [--configs ...] [--private]
    coco-unified push --data-dir DIR --output OUT --dry-run          # write OUT, upload nothing
    coco-unified push --mode script --output OUT --repo-id USER/REPO

Mode `parquet` builds each chosen config with coco_unified.py and writes a Hub-ready folder:

    OUT/README.md                                        dataset card: configs, features, provenance
    OUT/data/<config>/<split>-00000-of-00004.parquet     images embedded, ~--shard-size each

`datasets` >= 4 and the dataset viewer read only such data files; `load_dataset("USER/REPO", config)`
then works with any `datasets` version, streaming included. Without --configs every config is
exported, less a `protocol` config the pool is too small for (a small sample): that one is
skipped, saying which --config-kwarg sizes would fit. Each --feature COLUMN=PATH becomes a column
of every config's data files, and the card records its sidecar's provenance.

Mode `script` uploads coco_unified.py, dataset_infos.json, a card, the Doc2Vec sidecar and the
Karpathy id lists the script reads (data/karpathy_*_image_ids.txt), for
`load_dataset("USER/REPO", trust_remote_code=True)` with `datasets` < 4. Feature sidecars are not
uploaded there: the card shows users how to pass their own as feature_sidecars.

OUT is written under a temporary name beside it and renamed when complete: an error leaves no
half-written folder (and an earlier OUT as it was). The upload reads the token from HF_TOKEN or
the login cache (`hf auth login`).
"""

import argparse
import dataclasses
import json
import logging
import os
import sys

if not __package__:  # run by path: `python tools/push.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from datasets import BuilderConfig

from coco_unified import CocoError, CocoUnified, CocoUnifiedConfig, number_of
from tools import cli, flags
from tools.lib.publish import DEFAULT_SHARD_SIZE, MODES, PublishOptions, shard_bytes, upload, write_folder

logger = logging.getLogger(__name__)

# The loader's config fields with a flag of their own; every other field of CocoUnifiedConfig is
# set with --config-kwarg, and the loader's messages naming it are translated so.
_OWN_FLAGS = {"base_url", "doc2vec", "doc2vec_path", "feature_sidecars"} | {
    field.name for field in dataclasses.fields(BuilderConfig)
}
KWARG_FLAGS = {
    field.name: f"--config-kwarg {field.name}="
    for field in dataclasses.fields(CocoUnifiedConfig)
    if field.name not in _OWN_FLAGS
}


def config_kwarg(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value read as JSON when it is JSON (numbers, booleans) and as a string otherwise."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. num_query=5000")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def shard_size(text: str) -> str:
    try:
        shard_bytes(text)
    except CocoError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write it like 500MB or 1GB") from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=MODES[0],
        help="parquet: build and upload Parquet data files (any datasets version, dataset viewer); "
        "script: upload the loading script (datasets < 4 only) (default: %(default)s)",
    )
    flags.add_source_arguments(parser)
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=list(CocoUnified.builder_configs),
        metavar="NAME",
        help=f"configs to export, among {list(CocoUnified.builder_configs)} (default: all the pool can hold)",
    )
    parser.add_argument(
        "--config-kwarg",
        dest="config_kwargs",
        type=config_kwarg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a CocoUnifiedConfig field set in every exported config, e.g. num_shards=32 or num_query=50 (repeatable)",
    )
    flags.add_sidecar_arguments(parser)
    flags.add_feature_arguments(parser)
    flags.add_cache_dir_argument(parser)
    parser.add_argument(
        "--num-proc", type=flags.positive_int, metavar="N", help="processes preparing each config (default: one)"
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="the folder written and uploaded: created, or replaced if an earlier run wrote it",
    )
    parser.add_argument(
        "--shard-size",
        type=shard_size,
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


def run(args: argparse.Namespace) -> None:
    if not args.dry_run and not args.repo_id:
        raise CocoError("Nowhere to upload to: pass --repo-id USER/REPO, or --dry-run to only write the folder.")
    options = PublishOptions(
        output=args.output,
        mode=args.mode,
        data_dir=args.data_dir,
        base_url=args.base_url,
        configs=tuple(args.configs or ()),
        config_kwargs=dict(args.config_kwargs),
        doc2vec=not args.no_doc2vec,
        doc2vec_path=args.doc2vec_path,
        cache_dir=args.cache_dir,
        num_proc=args.num_proc,
        shard_size=args.shard_size,
        repo_id=args.repo_id,
        feature_sidecars=args.feature_sidecars,
    )
    folder = write_folder(options)
    logger.info("wrote %s, %.1f MB, in %s", number_of(len(folder.files), "file"), folder.num_bytes / 1e6, folder.path)
    if args.dry_run:
        print("\n".join(folder.files))
        return
    upload(folder, args.repo_id, args.private)


if __name__ == "__main__":
    cli.main_for(__file__)
