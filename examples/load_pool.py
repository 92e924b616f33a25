"""Load the pool with the loading script, prepared and streamed, and log what came out.

    python examples/load_pool.py --data-dir DIR [--config default] [--doc2vec-path PATH] [--cache-dir DIR]

Needs datasets 3.6 (the last release that runs loading scripts); with a newer one use the
CocoUnified class directly (see README.md). Checks that streaming yields the prepared rows.
"""

import argparse
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence

if not __package__:  # run by path: `python examples/load_pool.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from datasets import Image, load_dataset

from coco_unified import CocoError
from tools import cli

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "coco_unified.py")
logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        required=True,
        metavar="DIR",
        help="a COCO 2017 copy: the three official zips, or the folders extracted from them",
    )
    parser.add_argument(
        "--config",
        default="default",
        help="default, labeled, no_images, labeled_no_images or protocol (default: %(default)s)",
    )
    parser.add_argument(
        "--doc2vec-path",
        metavar="PATH",
        help="the Doc2Vec sidecar (default: coco_unified_doc2vec.parquet next to coco_unified.py)",
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="where datasets keeps the prepared Arrow files (default: its own cache)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages, and show the traceback of an error"
    )
    return parser


def load_pool(data_dir: str, config: str, doc2vec_path: str | None, cache_dir: str | None) -> None:
    """Prepare the pool, log its first row, then stream it and check it yields the same rows."""
    options = {"data_dir": data_dir, "trust_remote_code": True, "split": "train", "cache_dir": cache_dir}
    if doc2vec_path:
        options["doc2vec_path"] = doc2vec_path
    start = time.perf_counter()
    prepared = load_dataset(SCRIPT, config, **options)
    logger.info(
        "prepared %d rows in %.1f s; columns: %s",
        len(prepared),
        time.perf_counter() - start,
        ", ".join(prepared.column_names),
    )
    first = prepared[0]
    logger.info(
        "row 0: index %d, image %d (%s, %s), %d captions, labels %s, doc2vec[:3] %s",
        first["index"],
        first["image_id"],
        first["file_name"],
        prepared.features["coco_split"].int2str(first["coco_split"]),
        len(first["captions"]),
        [prepared.features["labels"].feature.int2str(label) for label in first["labels"]],
        [round(value, 4) for value in first["doc2vec"][:3]] if "doc2vec" in first else "(no doc2vec column)",
    )

    streamed = load_dataset(SCRIPT, config, streaming=True, **options)
    if "image" in streamed.column_names:
        streamed = streamed.cast_column("image", Image(decode=False))
    seen = Counter(row["index"] for row in streamed)
    if sorted(seen) != prepared["index"] or max(seen.values()) != 1:
        raise CocoError(f"the {len(seen)} streamed rows differ from the {len(prepared)} prepared ones")
    logger.info("streamed the same %d rows from %d shards", len(seen), streamed.n_shards)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.configure_logging(args.verbose)
    try:
        load_pool(args.data_dir, args.config, args.doc2vec_path, args.cache_dir)
    # load_dataset runs its own copy of coco_unified.py, whose CocoError is not this one: catch the
    # ValueError it derives from (datasets' own mistakes, an unknown config, are ValueErrors too).
    except (ValueError, OSError) as error:
        if args.verbose:
            raise
        parser.exit(1, f"{parser.prog}: error: {cli.in_flag_words(str(error), cli.flags_of(parser))}\n")
    return 0


if __name__ == "__main__":
    # Run the copy imported under the package's name, so that its logger is named for it.
    from examples.load_pool import main as main_in_package

    sys.exit(main_in_package())
