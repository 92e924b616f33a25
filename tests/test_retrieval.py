"""tools.lib.retrieval: the retrieval measures."""

import numpy as np
import pytest

from tools.lib.retrieval import average_precisions, fit_idf, label_map, recall_at, tfidf_vectors


def test_recall_counts_ties_against_the_query():
    similarity = np.array([[1.0, 0.5, 0.2], [0.9, 0.9, 0.1], [0.3, 0.2, 0.1]])
    # Ranks of the right items: 0, 1 (tied with a wrong one), 2.
    assert recall_at(similarity, (1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 1.0}


def test_average_precision_over_the_whole_ranking():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    relevant = np.array([[True, False, True], [False, False, False]])
    assert np.allclose(average_precisions(scores, relevant), [(1 + 2 / 3) / 2, 0.0])


def test_label_map_leaves_the_query_out_of_its_database():
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.uint8)
    perfect = labels.astype(float) @ labels.T.astype(float)  # each query scores itself highest
    mean_ap, chance = label_map([0, 2], labels, lambda rows: perfect[rows])
    assert mean_ap == pytest.approx(1.0) and chance == pytest.approx(1 / 3)


def test_tfidf_rows_are_unit_length_and_ignore_unknown_words():
    vocabulary, idf = fit_idf([["a", "cat"], ["a", "dog"]])
    assert idf[vocabulary["a"]] == pytest.approx(1.0)  # in every document: weight 1, not 0
    vectors = tfidf_vectors([["a", "cat", "cat"], ["a", "zebra"], ["a", "cat", "cat"]], vocabulary, idf)
    similarity = (vectors @ vectors.T).toarray()
    assert np.allclose(np.diag(similarity), 1.0) and similarity[0, 2] == pytest.approx(1.0)
    assert vectors[1, vocabulary["a"]] == pytest.approx(1.0)
