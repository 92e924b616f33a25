"""Load the pool with the loading script, prepared and streamed, and print what came out.

    python examples/load_pool.py --data-dir DIR [--config default] [--doc2vec-path PATH]

Needs datasets 3.6 (the last release that runs loading scripts); with a newer one use the
CocoUnified class directly (see README.md).
"""

import argparse
import logging
import os
import time
from collections import Counter

from datasets import Image, load_dataset

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "coco_unified.py")
logger = logging.getLogger("load_pool")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        required=True,
        help="a COCO 2017 copy: the three official zips, or the folders extracted from them",
    )
    parser.add_argument(
        "--config",
        default="default",
        help="default, labeled, no_images, labeled_no_images or protocol (default: default)",
    )
    parser.add_argument(
        "--doc2vec-path", help="the Doc2Vec sidecar (default: coco_unified_doc2vec.parquet next to the script)"
    )
    parser.add_argument("--cache-dir", help="where datasets keeps the prepared Arrow files (default: its own cache)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    options = {"data_dir": args.data_dir, "trust_remote_code": True, "split": "train", "cache_dir": args.cache_dir}
    if args.doc2vec_path:
        options["doc2vec_path"] = args.doc2vec_path
    start = time.perf_counter()
    prepared = load_dataset(SCRIPT, args.config, **options)
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

    streamed = load_dataset(SCRIPT, args.config, streaming=True, **options)
    if "image" in streamed.column_names:
        streamed = streamed.cast_column("image", Image(decode=False))
    seen = Counter(row["index"] for row in streamed)
    if sorted(seen) != prepared["index"] or max(seen.values()) != 1:
        raise SystemExit("the streamed rows differ from the prepared ones")
    logger.info("streamed the same %d rows from %d shards", len(seen), streamed.n_shards)


if __name__ == "__main__":
    main()
