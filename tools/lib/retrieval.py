"""Retrieval measures and the TF-IDF baseline used to judge text vectors (numpy and scipy only)."""

from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse

# Queries ranked at once in mAP: a block of scores is queries x database floats.
_QUERY_BLOCK = 64


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


# ----------------------------------------------------------------------------- TF-IDF


def fit_idf(documents: Sequence[Sequence[str]]) -> tuple[dict[str, int], np.ndarray]:
    """Vocabulary (word -> column) and smoothed idf, ln((1 + N) / (1 + df)) + 1.

    The +1 keeps words found in every document at weight 1 instead of 0, as scikit-learn does.
    """
    document_frequency = Counter(word for words in documents for word in set(words))
    vocabulary = {word: column for column, word in enumerate(sorted(document_frequency))}
    counts = np.array([document_frequency[word] for word in vocabulary], dtype=np.float64)
    return vocabulary, np.log((1 + len(documents)) / (1 + counts)) + 1


def tfidf_vectors(
    documents: Sequence[Sequence[str]], vocabulary: dict[str, int], idf: np.ndarray
) -> scipy.sparse.csr_matrix:
    """Unit-length raw-count x idf rows; words outside the vocabulary are ignored."""
    rows, columns, values = [], [], []
    for row, words in enumerate(documents):
        for column, count in Counter(vocabulary[word] for word in words if word in vocabulary).items():
            rows.append(row)
            columns.append(column)
            values.append(count * idf[column])
    matrix = scipy.sparse.csr_matrix((values, (rows, columns)), shape=(len(documents), len(vocabulary)))
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return scipy.sparse.diags(1 / np.maximum(norms, np.finfo(np.float64).tiny)) @ matrix


# ----------------------------------------------------------------------------- measures


def recall_at(similarity: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Recall@k when query i's only relevant item is item i (the diagonal).

    An item scoring exactly as high as the right one counts as ranked above it: identical
    texts must not look like successes.
    """
    own = np.diag(similarity)[:, None]
    rank = (similarity >= own).sum(axis=1) - 1  # 0 = first
    return {k: float(np.mean(rank < k)) for k in ks}


def average_precisions(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """AP over the whole ranking of each row; a query with nothing relevant scores 0."""
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    precision_at_hit = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    return (precision_at_hit * hits).sum(axis=1) / np.maximum(hits.sum(axis=1), 1)


def label_map(query_rows: Sequence[int], labels: np.ndarray, similarity_of) -> tuple[float, float]:
    """(mAP@all, chance) of ranking every other row for each query row; relevant = shares a label.

    `similarity_of(rows)` gives the dense scores of those query rows against all rows. Chance
    is the mean share of relevant items, what a random ranking's AP averages to.
    """
    labels = labels.astype(np.float32)
    precisions: list[np.ndarray] = []
    shares: list[np.ndarray] = []
    for start in range(0, len(query_rows), _QUERY_BLOCK):
        rows = np.asarray(query_rows[start : start + _QUERY_BLOCK])
        relevant = (labels[rows] @ labels.T) > 0
        relevant[np.arange(len(rows)), rows] = False
        scores = np.asarray(similarity_of(rows), dtype=np.float64)
        scores[np.arange(len(rows)), rows] = -np.inf  # the query itself is not in its database
        precisions.append(average_precisions(scores, relevant))
        shares.append(relevant.sum(axis=1) / (labels.shape[0] - 1))
    return float(np.concatenate(precisions).mean()), float(np.concatenate(shares).mean())
