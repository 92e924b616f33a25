"""Evaluate features the way cross-modal hashing papers do: retrieval by shared labels, beside baselines.

    coco-unified evaluate --data-dir DIR [--doc2vec-path PATH] [--bow PATH] [--image FILE] [--output-dir OUT]
    coco-unified evaluate --labels labels.npy --image-codes img_codes.npy --text-codes txt_codes.npy

Label-based retrieval. The labeled images are split with the protocol of `coco-unified protocol`
(coco_unified.sample_protocol, --seed): --num-query queries, the rest the database, and a
training set of --train-size drawn from it for the hashing baselines. Each query ranks the whole
database; an item is relevant when it shares at least one label with the query. Every feature set
retrieves within its modality (text->text, image->image), and image and text sets of the same
kind and size also across (image->text, text->image). Real-valued features rank by cosine
similarity, binary codes ({0,1} or {-1,+1}) by Hamming distance.
  mAP@all and mAP@k  AP@k = the mean, over the relevant items in the top k, of the precision at
                     each one's rank (0 if the top k hold none), as DPSH/ADSH's CalcTopMap.
                     A query with no relevant item at all has AP 0 and is kept in the mean, as
                     the DCMH/UCCH calc_map code does.
  precision@k        the share of relevant items in the top k (the curve: the PNG files).
  PR curve (codes)   precision and recall of the items within Hamming radius 0..bits; precision
                     averaged over the queries that retrieve something at that radius.
  ties               equal scores or distances are ranked by pool index, lowest first (papers'
                     numpy argsort leaves their order arbitrary).
Baselines beside every figure: chance (the label-overlap base rate: what a random ranking's
precision averages to), TF-IDF of the captions for text, and unsupervised hashing learned on the
training set at --bits: CCA-ITQ (Gong et al., TPAMI 2013) across each image and text feature
pair, or PCA-ITQ of each feature set when only one modality has real-valued features.

Caption halves. For --caption-images images, the first half of each image's captions retrieves
the other halves by cosine similarity (recall@1/5/10; chance k/images): Doc2Vec (the halves
inferred with the sidecar's model and settings), BoW (with --bow) and TF-IDF.

Sources: a pool (--data-dir or --base-url: its labels and captions; sidecars matched by image id)
or a label matrix alone (--labels: then features come from .npy/.mat files with one row per
label row, e.g. the files of `coco-unified export`). A FILE is PATH or PATH:NAME: a feature sidecar
of `coco-unified image-features` with its column (vgg19.parquet:vgg19_fc7), a .mat file with its
variable (coco_unified.mat:texts), or a .npy matrix.

Prints a table per direction and one sentence on how to read it; with --output-dir also writes
evaluation.json and the figures (precision_at_k_*.png, pr_curve_*.png, caption_halves.png).
"""

import argparse
import logging
import os
import sys

if not __package__:  # run by path: `python tools/evaluate.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from coco_unified import CocoError
from tools import cli, flags
from tools.lib.evaluation import DEFAULT_MAP_KS
from tools.lib.evaluation_report import (
    DEFAULT_CAPTION_IMAGES,
    IMAGE,
    MAX_QUERIES,
    MAX_TRAIN,
    TEXT,
    EvaluateOptions,
    FeatureSource,
    evaluate,
    format_report,
    write_outputs,
)
from tools.lib.hashing import DEFAULT_BITS
from tools.lib.pool import DEFAULT_SIDECAR

logger = logging.getLogger(__name__)


def _comma_separated(text: str) -> tuple[int, ...]:
    return tuple(flags.positive_int(item) for item in text.split(",") if item)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_source_arguments(parser)
    parser.add_argument(
        "--labels",
        metavar="FILE",
        help="a label matrix (.npy, or .mat:VARIABLE; rows x classes, nonzero = has the class) to use instead "
        "of the pool's; alone (without --data-dir/--base-url) the features are .npy/.mat files with its rows",
    )
    flags.add_sidecar_arguments(parser)
    parser.add_argument(
        "--sidecar", dest="doc2vec_path", metavar="PATH", help="the same as --doc2vec-path (its earlier name)"
    )
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="the gensim Doc2Vec model to infer the caption halves with (default: the one the sidecar's provenance names)",
    )
    parser.add_argument("--bow", metavar="PATH", help="a BoW sidecar of `coco-unified bow`: text features too")
    features = parser.add_argument_group("more features (repeatable; FILE: PATH or PATH:NAME)")
    features.add_argument("--image", action="append", default=[], metavar="FILE", help="real-valued image features")
    features.add_argument("--text", action="append", default=[], metavar="FILE", help="real-valued text features")
    features.add_argument(
        "--image-codes",
        action="append",
        default=[],
        metavar="FILE",
        help="binary codes of the images ({0,1} or {-1,+1})",
    )
    features.add_argument("--text-codes", action="append", default=[], metavar="FILE", help="binary codes of the texts")
    protocol = parser.add_argument_group("protocol and measures")
    protocol.add_argument(
        "--seed", type=flags.non_negative_int, default=0, help="seed of the split and of ITQ (default: 0)"
    )
    protocol.add_argument(
        "--num-query",
        type=flags.positive_int,
        metavar="N",
        help=f"queries drawn from the labeled images (default: {MAX_QUERIES:,}, or a fifth of the labeled images if fewer)",
    )
    protocol.add_argument(
        "--train-size",
        type=flags.positive_int,
        metavar="N",
        help=f"training set of the hashing baselines, drawn from the database (default: {MAX_TRAIN:,}, or the whole "
        "database if smaller)",
    )
    protocol.add_argument(
        "--bits",
        type=_comma_separated,
        default=DEFAULT_BITS,
        metavar="B,B,...",
        help=f"code lengths of the hashing baselines; empty for none (default: {','.join(map(str, DEFAULT_BITS))})",
    )
    protocol.add_argument(
        "--map-k",
        type=_comma_separated,
        default=DEFAULT_MAP_KS,
        metavar="K,K,...",
        help=f"the k of mAP@k besides mAP@all (default: {','.join(map(str, DEFAULT_MAP_KS))})",
    )
    protocol.add_argument(
        "--caption-images",
        type=flags.positive_int,
        default=DEFAULT_CAPTION_IMAGES,
        metavar="N",
        help="images sampled for caption halves; each costs two Doc2Vec inferences (default: %(default)s)",
    )
    parser.add_argument("--output-dir", metavar="DIR", help="write evaluation.json and the PNG figures here")
    flags.add_workers_argument(parser, "ranking threads and tokenising processes")


def options_from(args: argparse.Namespace) -> EvaluateOptions:
    sources = [FeatureSource(TEXT, args.bow)] if args.bow else []
    sources += [FeatureSource(IMAGE, path) for path in args.image]
    sources += [FeatureSource(TEXT, path) for path in args.text]
    sources += [FeatureSource(IMAGE, path, codes=True) for path in args.image_codes]
    sources += [FeatureSource(TEXT, path, codes=True) for path in args.text_codes]
    if args.no_doc2vec and args.doc2vec_path != DEFAULT_SIDECAR:
        raise CocoError("--no-doc2vec and --sidecar/--doc2vec-path contradict each other; pass one of them.")
    # Without a pool there is no sidecar to read: a lone --labels evaluates the files given.
    pool = args.data_dir or args.base_url or not args.labels
    return EvaluateOptions(
        data_dir=args.data_dir,
        base_url=args.base_url,
        labels=args.labels,
        doc2vec_path=None if args.no_doc2vec or not pool else args.doc2vec_path,
        model=args.model,
        features=tuple(sources),
        seed=args.seed,
        num_query=args.num_query,
        train_size=args.train_size,
        bits=args.bits,
        map_ks=args.map_k,
        caption_images=args.caption_images,
        workers=args.workers,
    )


def run(args: argparse.Namespace) -> None:
    evaluation = evaluate(options_from(args))
    print(format_report(evaluation))
    if args.output_dir:
        written = write_outputs(evaluation, args.output_dir)
        logger.info("wrote %s", ", ".join(written))


if __name__ == "__main__":
    cli.main_for(__file__)
