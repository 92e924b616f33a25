"""Do the Doc2Vec vectors carry meaning? Two retrieval tasks, each beside TF-IDF and chance.

    python -m tools.evaluate --data-dir DIR [--sidecar PATH] [--max-queries N]

1. Caption-level retrieval. For N sampled images, each image's captions are cut into two
   halves (the first floor(n/2) captions and the rest), each half made a document with the
   recipe of tools/text.py. Each first half queries the N second halves by cosine similarity;
   recall@1/5/10 is the share of queries whose own image's half ranks in the top k (chance:
   k/N). Doc2Vec vectors of the halves are inferred with the sidecar's model and settings.
2. Label-based mAP@all of text-to-text retrieval on the labeled images. N sampled labeled
   images query all other labeled images by the cosine of their text vectors (Doc2Vec: the
   sidecar's; TF-IDF: the whole documents'); relevant = sharing at least one label.

TF-IDF: raw counts times smoothed idf over the pool's documents, rows scaled to unit length.
"""

import argparse
import logging
import sys
from collections.abc import Sequence

import numpy as np

from coco_unified import CLASS_NAMES, CocoError, read_doc2vec_sidecar
from tools.lib.doc2vec_inference import InferenceSettings, default_workers, infer_all
from tools.lib.doc2vec_model import load_model
from tools.lib.pool import DEFAULT_SIDECAR, add_source_arguments, read_pool
from tools.lib.retrieval import fit_idf, label_map, recall_at, tfidf_vectors, unit_rows
from tools.lib.text import join_captions, tokenize_captions

logger = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)
DEFAULT_MAX_QUERIES = 1000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_source_arguments(parser)
    parser.add_argument(
        "--sidecar",
        default=DEFAULT_SIDECAR,
        metavar="PATH",
        help="the sidecar to judge (default: the dataset script's)",
    )
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="the gensim 4 model to infer the caption halves with (default: the one the sidecar's provenance names)",
    )
    parser.add_argument(
        "--max-queries",
        type=int,
        default=DEFAULT_MAX_QUERIES,
        metavar="N",
        help="images sampled for each task; the cost grows with it (2N inferences, N rankings of the labeled pool) (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the image sampling (default: %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="tokenising and inference processes (default: all cores)"
    )
    return parser.parse_args(argv)


def inference_recipe(provenance: dict, model_override: str | None, sidecar: str):
    """The model path and inference settings the sidecar was built with."""
    try:
        model_path = model_override or provenance["model"]["path"]
        recorded = provenance["inference"]
        settings = InferenceSettings(recorded["epochs"], recorded["alpha"], recorded["min_alpha"], recorded["seed"])
    except KeyError as missing:
        raise CocoError(
            f"{sidecar}: its provenance lacks {missing}; it was not written by tools/doc2vec.py. Rebuild it."
        ) from None
    load_model(model_path, mmap="r")  # fail now, with a clear message, rather than in every worker
    return model_path, settings


def caption_retrieval(
    captions, positions: np.ndarray, vocabulary, idf, model_path: str, settings: InferenceSettings, workers: int
) -> dict[str, dict[int, float]]:
    halves = [join_captions(captions[p][: len(captions[p]) // 2]) for p in positions]
    others = [join_captions(captions[p][len(captions[p]) // 2 :]) for p in positions]
    vectors = unit_rows(infer_all(model_path, halves + others, settings, workers, "caption halves"))
    doc2vec = vectors[: len(positions)] @ vectors[len(positions) :].T
    tfidf = (tfidf_vectors(halves, vocabulary, idf) @ tfidf_vectors(others, vocabulary, idf).T).toarray()
    return {
        "doc2vec": recall_at(doc2vec, RECALL_KS),
        "tf-idf": recall_at(tfidf, RECALL_KS),
        "chance": {k: min(1.0, k / len(positions)) for k in RECALL_KS},
    }


def label_retrieval(labels: np.ndarray, doc2vec: np.ndarray, tfidf, query_rows: np.ndarray) -> dict[str, float]:
    unit = unit_rows(doc2vec)
    doc2vec_map, chance = label_map(query_rows, labels, lambda rows: unit[rows] @ unit.T)
    tfidf_map, _ = label_map(query_rows, labels, lambda rows: (tfidf[rows] @ tfidf.T).toarray())
    return {"doc2vec": doc2vec_map, "tf-idf": tfidf_map, "chance": chance}


def evaluate(args: argparse.Namespace) -> dict:
    records = read_pool(args.data_dir, args.base_url)
    vectors, provenance = read_doc2vec_sidecar(args.sidecar, [record.image_id for record in records])
    model_path, settings = inference_recipe(provenance, args.model, args.sidecar)
    captions = tokenize_captions([record.captions for record in records], args.workers)
    vocabulary, idf = fit_idf([join_captions(image) for image in captions])
    rng = np.random.default_rng(args.seed)

    splittable = np.array([record.index for record in records if len(record.captions) >= 2])
    if len(splittable) < 2:
        raise CocoError("Caption retrieval needs at least two images with two captions or more.")
    caption_positions = rng.choice(splittable, min(args.max_queries, len(splittable)), replace=False)
    caption_results = caption_retrieval(
        captions, caption_positions, vocabulary, idf, model_path, settings, args.workers
    )

    labeled = np.array([record.index for record in records if record.labels])
    labels = np.zeros((len(labeled), len(CLASS_NAMES)), dtype=np.uint8)
    for row, position in enumerate(labeled):
        labels[row, records[position].labels] = 1
    tfidf = tfidf_vectors([join_captions(captions[position]) for position in labeled], vocabulary, idf)
    query_rows = rng.choice(len(labeled), min(args.max_queries, len(labeled)), replace=False)
    label_results = label_retrieval(labels, vectors[labeled], tfidf, query_rows)
    return {
        "caption_retrieval": {"images": len(caption_positions), **caption_results},
        "label_map": {"queries": len(query_rows), "database": len(labeled) - 1, **label_results},
    }


def format_report(results: dict) -> str:
    captions, labels = results["caption_retrieval"], results["label_map"]
    lines = [
        f"caption-level retrieval over {captions['images']:,} images (first half of the captions -> the other half)",
        f"  {'':8}" + "".join(f"{f'R@{k}':>8}" for k in RECALL_KS),
    ]
    lines += [
        f"  {name:8}" + "".join(f"{captions[name][k]:8.3f}" for k in RECALL_KS)
        for name in ("doc2vec", "tf-idf", "chance")
    ]
    lines.append(
        f"text-to-text mAP@all, {labels['queries']:,} queries over {labels['database']:,} labeled images (relevant: shares a label)"
    )
    lines += [f"  {name:8}{labels[name]:8.3f}" for name in ("doc2vec", "tf-idf", "chance")]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gensim").setLevel(logging.WARNING)
    try:
        results = evaluate(args)
    except CocoError as error:
        logger.error("%s", error)
        return 1
    print(format_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
