"""Text features on real captions: Doc2Vec presets, BoW and TF-IDF by caption-half retrieval.

    python -m benchmarks.bench_text_features --captions flickr8k_captions.txt [--images 2000]

The captions file holds lines `<image>#<n>\\t<caption>` (the Flickr8k token file's format: 5 real
captions per image). Every image's document is tokenised as `coco-unified doc2vec` does
(tools/lib/text.py); each image's captions are cut into two halves (tools/lib/retrieval.py) and
each first half retrieves its own image's second half among all images' second halves by cosine
similarity: recall@1/5/10 for each representation, beside TF-IDF and chance, in the same run.

Doc2Vec is trained on the images' whole documents with one preset of tools/lib/doc2vec_presets.py
(or a variant: --variant 'name:epochs=100,sample=1e-4'), then the halves are inferred with
tools/lib/doc2vec_inference.py (worker processes, reproducible). Times are wall-clock seconds;
the training rate (documents x epochs per second) and the inference rate of whole documents are
extrapolated to the 123,287-image COCO pool, assuming its documents as long as these (the tokens
per document are printed: COCO's captions are a little shorter than Flickr8k's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

if not __package__:  # run by path: `python benchmarks/bench_text_features.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from gensim.models.doc2vec import Doc2Vec, TaggedDocument

from coco_unified import REAL_COUNTS
from tools import cli
from tools.lib.bow import DEFAULT_VOCABULARY_SIZE, BowOptions, bow_matrix, fit_vocabulary
from tools.lib.doc2vec_inference import InferenceSettings, infer_document, infer_in_new_processes
from tools.lib.doc2vec_presets import INFER_MIN_ALPHA, PRESETS, Doc2VecPreset
from tools.lib.retrieval import (
    RECALL_KS,
    caption_halves,
    chance_recall,
    fit_idf,
    halves_documents,
    halves_recall,
    tfidf_document,
    tfidf_vectors,
)
from tools.lib.text import join_captions, tokenize_captions

logger = logging.getLogger("bench_text_features")

# Whole documents whose inference is timed to extrapolate the pool's inference time.
TIMED_DOCUMENTS = 200


@dataclasses.dataclass
class Row:
    name: str
    recall: dict[int, float]
    train_s: float | None = None
    infer_s: float | None = None
    extra: dict = dataclasses.field(default_factory=dict)


def read_captions(path: str) -> list[list[str]]:
    """Per image, in order of first appearance, its captions ordered by their number."""
    by_image: dict[str, dict[int, str]] = {}
    with open(path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, 1):
            if not line.strip():
                continue
            key, separator, caption = line.rstrip("\n").partition("\t")
            image, hash_sign, number = key.rpartition("#")
            if not separator or not hash_sign or not number.isdigit():
                raise SystemExit(f"{path}, line {line_number}: expected `<image>#<n>\\t<caption>`, got {line[:80]!r}")
            captions = by_image.setdefault(image, {})
            if int(number) in captions:
                raise SystemExit(f"{path}, line {line_number}: caption {key} appears twice")
            captions[int(number)] = caption
    return [[captions[number] for number in sorted(captions)] for captions in by_image.values()]


def timed(action: Callable):
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def parse_variant(text: str) -> tuple[str, Doc2VecPreset]:
    """`name:key=value,...` over the default preset, or `name:base=jhlau,key=value,...`."""
    name, _, settings = text.partition(":")
    changes = dict(item.split("=", 1) for item in settings.split(",") if item)
    base = PRESETS[changes.pop("base", "default")]
    types = {field.name: field.type for field in dataclasses.fields(Doc2VecPreset)}
    unknown = sorted(changes.keys() - types.keys())
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown Doc2Vec settings {unknown}; known: {sorted(types)}")
    converted = {key: (float if types[key] == "float" else int)(value) for key, value in changes.items()}
    return name, base.replace(description=f"{name}: {text}", **converted)


def doc2vec_row(
    name: str,
    preset: Doc2VecPreset,
    documents: list[list[str]],
    halves: tuple[list, list],
    workers: int,
    seed: int,
    directory: str,
) -> Row:
    corpus = [TaggedDocument(words, [tag]) for tag, words in enumerate(documents)]
    model = Doc2Vec(**preset.model_parameters(), seed=seed, workers=workers)
    model.build_vocab(corpus)
    _, train_s = timed(lambda: model.train(corpus, total_examples=len(corpus), epochs=model.epochs))
    model_path = os.path.join(directory, f"{name}.model")
    model.save(model_path)
    settings = InferenceSettings(preset.infer_epochs, preset.infer_alpha, INFER_MIN_ALPHA, seed)
    firsts, seconds = halves
    vectors, infer_s = timed(lambda: infer_in_new_processes(model_path, firsts + seconds, settings, workers, name))
    # In this process, so that no worker start-up is counted: the rate of one core.
    timed_documents = documents[:TIMED_DOCUMENTS]
    _, whole_s = timed(lambda: [infer_document(model, words, settings) for words in timed_documents])
    pool = REAL_COUNTS.images
    return Row(
        name,
        halves_recall(vectors[: len(firsts)], vectors[len(firsts) :]),
        train_s,
        infer_s,
        {
            "vocabulary": len(model.wv),
            "pool_train_min": pool * preset.epochs / (len(documents) * preset.epochs / train_s) / 60,
            "pool_infer_min_one_core": pool / (len(timed_documents) / whole_s) / 60,
            "settings": dataclasses.asdict(preset),
        },
    )


def baseline_rows(captions: list[list[str]], documents: list[list[str]], halves: tuple[list, list], bow_size: int):
    """TF-IDF (its own word tokens, tools/lib/retrieval.py), BoW variants and chance."""
    vocabulary, idf = fit_idf([tfidf_document(image) for image in captions])
    tfidf_halves = [
        tfidf_vectors([tfidf_document(half) for half in part], vocabulary, idf) for part in caption_halves(captions)
    ]
    rows = [Row("tf-idf", halves_recall(*tfidf_halves))]
    firsts, seconds = halves
    for label, options in (
        ("bow", BowOptions(size=bow_size)),
        ("bow counts", BowOptions(size=bow_size, counts=True)),
        ("bow +stop words", BowOptions(size=bow_size, keep_stop_words=True)),
    ):
        words = fit_vocabulary(documents, options)
        recall = halves_recall(bow_matrix(firsts, words, options.counts), bow_matrix(seconds, words, options.counts))
        rows.append(Row(label, recall))
    rows.append(Row("chance", chance_recall(len(firsts))))
    return rows


def format_table(rows: Sequence[Row], tfidf_r10: float) -> str:
    header = f"{'':24}" + "".join(f"{f'R@{k}':>7}" for k in RECALL_KS)
    header += f"{'R@10/tfidf':>11}{'train s':>9}{'infer s':>9}{'pool train':>11}{'pool infer':>11}"
    lines = [header]
    for row in rows:
        line = f"{row.name:24}" + "".join(f"{row.recall[k]:7.3f}" for k in RECALL_KS)
        line += f"{row.recall[10] / tfidf_r10:11.2f}"
        if row.train_s is not None:
            line += f"{row.train_s:9.1f}{row.infer_s:9.1f}"
            line += f"{row.extra['pool_train_min']:10.1f}m{row.extra['pool_infer_min_one_core']:10.1f}m"
        lines.append(line)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_text_features",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--captions", required=True, metavar="PATH", help="the captions file: lines `<image>#<n>\\t<caption>`"
    )
    parser.add_argument(
        "--images", type=int, metavar="N", help="a seeded random subset of N images, for quick tuning (default: all)"
    )
    parser.add_argument(
        "--presets",
        default=",".join(PRESETS),
        help="comma-separated presets of tools/lib/doc2vec_presets.py to run; empty for none (default: %(default)s)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        type=parse_variant,
        metavar="NAME:KEY=VALUE,...",
        help="also run the default preset with these settings changed (base=jhlau to start from jhlau's); repeatable",
    )
    parser.add_argument(
        "--bow-size", type=int, default=DEFAULT_VOCABULARY_SIZE, help="BoW vocabulary (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="training threads and inference processes (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the subset, training and inference (default: %(default)s)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log gensim's progress too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format=cli.LOG_FORMAT, datefmt=cli.LOG_DATE_FORMAT
    )
    if not args.verbose:
        logging.getLogger("gensim").setLevel(logging.WARNING)
    captions = read_captions(args.captions)
    # Flickr8k's token file lists one caption under a misspelt name (`...jpg.1#0`): an image of a
    # single caption, which cannot be cut into halves.
    splittable = [image for image in captions if len(image) >= 2]
    if len(splittable) < len(captions):
        logger.info("left out %d image(s) with fewer than two captions", len(captions) - len(splittable))
    captions = splittable
    if args.images:
        chosen = np.sort(np.random.default_rng(args.seed).choice(len(captions), args.images, replace=False))
        captions = [captions[index] for index in chosen]
    tokenized = tokenize_captions(captions, args.workers)
    documents = [join_captions(image) for image in tokenized]
    halves = halves_documents(tokenized)
    tokens = sum(len(words) for words in documents) / len(documents)
    print(f"{len(documents):,} images, {sum(map(len, captions)):,} captions, {tokens:.1f} tokens per document")

    rows = baseline_rows(captions, documents, halves, args.bow_size)
    presets = [(name, PRESETS[name]) for name in args.presets.split(",") if name] + args.variant
    with tempfile.TemporaryDirectory() as directory:
        for name, preset in presets:
            rows.append(doc2vec_row(name, preset, documents, halves, args.workers, args.seed, directory))
            logger.info("%s: %s", name, rows[-1].recall)
    print(format_table(rows, rows[0].recall[10]))
    print(
        f"pool train: minutes to train on the {REAL_COUNTS.images:,}-image pool at the measured rate "
        f"({args.workers} thread(s)); pool infer: minutes to infer its documents on one core; documents of "
        f"{tokens:.0f} tokens"
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump([dataclasses.asdict(row) for row in rows], file, indent=2)


if __name__ == "__main__":
    main()
