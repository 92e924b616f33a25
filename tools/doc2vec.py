"""Build the Doc2Vec sidecar the loader reads: one 300-d vector per image of the pool.

    coco-unified doc2vec --data-dir DIR [--output PATH]

Reads the annotations (a local copy, a mirror or the official host), makes one document per
image (tools/lib/text.py), takes a model (--model, --jhlau-model, or trains one), infers every
document's vector in worker processes, chunk by chunk, and writes the Parquet sidecar with its
provenance. Vectors are bit-identical whatever the number of workers; an interrupted run started
again with the same arguments continues from its last finished chunk.
"""

import argparse
import os
import sys

if not __package__:  # run by path: `python tools/doc2vec.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from coco_unified import DOC2VEC_SIDECAR
from tools import cli, flags
from tools.lib.doc2vec_build import DEFAULT_CHUNK_IMAGES, DEFAULT_TRAIN_WORKERS, BuildOptions, build_sidecar
from tools.lib.doc2vec_inference import MAX_SEED
from tools.lib.doc2vec_presets import DEFAULT_PRESET, INFER_MIN_ALPHA, PRESETS
from tools.lib.pool import DEFAULT_SIDECAR

DEFAULT = PRESETS[DEFAULT_PRESET]

EPILOG = f"""\
presets (--preset; a flag given replaces the preset's value):
  default: {DEFAULT.description}: PV-DBOW with word training, window {DEFAULT.window},
      sample {DEFAULT.sample:g}, {DEFAULT.negative} negatives, --min-count {DEFAULT.min_count}, --epochs {DEFAULT.epochs},
      --infer-epochs {DEFAULT.infer_epochs} --infer-alpha {DEFAULT.infer_alpha}. On 8,092 real images' captions
      (Flickr8k, benchmarks/bench_text_features.py) a half of an image's captions finds the other
      half in the top 10 for 0.81 of the images, against 0.67 for TF-IDF and 0.55 for jhlau's
      recipe: jhlau's sample=1e-5 drops most words of short captions.
  jhlau: {PRESETS["jhlau"].description}: sample {PRESETS["jhlau"].sample:g}, --min-count {PRESETS["jhlau"].min_count},
      --epochs {PRESETS["jhlau"].epochs}, --infer-epochs {PRESETS["jhlau"].infer_epochs} --infer-alpha {PRESETS["jhlau"].infer_alpha}.
  --train-workers {DEFAULT_TRAIN_WORKERS}
      gensim trains reproducibly only with one thread; more threads are faster but give a
      different model (and vectors) on every run.
  --seed 0
      the reference run seeded the fork's generator with 0 before inferring.

published-style features (jhlau's enwiki_dbow, extracted from enwiki_dbow.tgz):
  coco-unified doc2vec --data-dir DIR --jhlau-model enwiki_dbow \\
      --infer-epochs 5 --infer-alpha 0.1
They match the published recipe, not its bits: the Python 2 fork hashed and drew random numbers
differently (the fork's own defaults were 5 inference steps at alpha 0.1).
"""


def seed(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is not in 0..{MAX_SEED} (it becomes the workers' PYTHONHASHSEED)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    flags.add_source_arguments(parser)
    parser.add_argument(
        "--output",
        default=DEFAULT_SIDECAR,
        metavar="PATH",
        help=f"the sidecar to write (default: {DOC2VEC_SIDECAR} next to coco_unified.py, where the loader "
        "looks). A trained or converted model is saved beside it as PATH without .parquet plus .model, and the "
        "chunks of an unfinished run are kept in PATH.parts/",
    )
    models = parser.add_mutually_exclusive_group()
    models.add_argument(
        "--model",
        metavar="PATH",
        help="use this gensim 4 Doc2Vec model (saved with Doc2Vec.save) instead of training one",
    )
    models.add_argument(
        "--jhlau-model",
        metavar="DIR",
        help="use jhlau's pretrained enwiki_dbow or apnews_dbow (the directory holding doc2vec.bin and its two .npy "
        "files), converted to gensim 4 as `coco-unified convert-jhlau` does",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help="the Doc2Vec settings the flags below default to (see 'presets' at the end; default: %(default)s)",
    )
    training = parser.add_argument_group("training (without --model and --jhlau-model)")
    training.add_argument("--epochs", type=flags.positive_int, help="training epochs (default: the preset's)")
    training.add_argument(
        "--min-count",
        type=flags.positive_int,
        help="ignore words seen fewer times in training (default: the preset's)",
    )
    training.add_argument(
        "--train-workers",
        type=flags.positive_int,
        help=f"training threads; only 1 is reproducible (default: {DEFAULT_TRAIN_WORKERS})",
    )
    training.add_argument(
        "--train-ids",
        metavar="FILE",
        help="train on these images only (one COCO image id per line), e.g. the database_image_ids.txt of "
        "`coco-unified protocol`, to keep query images out of training. Vectors are still inferred for the whole pool",
    )
    parser.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of training, of each inferred vector's random start and negative samples (default: %(default)s)",
    )
    inference = parser.add_argument_group("inference")
    inference.add_argument(
        "--infer-epochs", type=flags.positive_int, help="inference epochs per document (default: the preset's)"
    )
    inference.add_argument(
        "--infer-alpha",
        type=flags.positive_float,
        help=f"initial learning rate of inference, decaying to {INFER_MIN_ALPHA} (default: the preset's)",
    )
    inference.add_argument(
        "--per-caption", action="store_true", help="also write one vector per caption (column caption_doc2vec)"
    )
    flags.add_workers_argument(inference, "tokenising and inference processes")
    inference.add_argument(
        "--chunk-images",
        type=flags.positive_int,
        default=DEFAULT_CHUNK_IMAGES,
        help="images per chunk: the work an interruption can lose, per worker (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> None:
    build_sidecar(
        BuildOptions(
            data_dir=args.data_dir,
            base_url=args.base_url,
            output=args.output,
            model=args.model,
            jhlau_model=args.jhlau_model,
            preset=args.preset,
            epochs=args.epochs,
            min_count=args.min_count,
            train_workers=args.train_workers,
            train_ids=args.train_ids,
            seed=args.seed,
            infer_epochs=args.infer_epochs,
            infer_alpha=args.infer_alpha,
            per_caption=args.per_caption,
            workers=args.workers,
            chunk_images=args.chunk_images,
        )
    )


if __name__ == "__main__":
    cli.main_for(__file__)
