"""tools.lib.retrieval: caption halves, their recall, and the TF-IDF baseline."""

import numpy as np
import pytest
import scipy.sparse

from tools.lib import retrieval
from tools.lib.retrieval import (
    caption_halves,
    chance_recall,
    fit_idf,
    halves_recall,
    own_item_ranks,
    recall_at,
    tfidf_document,
    tfidf_vectors,
    unit_rows,
)


def test_halves_are_the_first_floor_half_and_the_rest():
    captions = [["A dog.", "A cat.", "Two cats."], ["d", "e", "f", "g"]]
    firsts, seconds = caption_halves(captions)
    assert firsts == [["A dog."], ["d", "e"]]
    assert seconds == [["A cat.", "Two cats."], ["f", "g"]]
    with pytest.raises(ValueError, match="at least two captions"):
        caption_halves([["only one"]])


def test_tfidf_reads_lowercased_words():
    assert tfidf_document(["A man's dog, running.", "Two-tone CAT"]) == [
        "a",
        "man",
        "s",
        "dog",
        "running",
        "two",
        "tone",
        "cat",
    ]


def test_ranks_count_ties_against_the_query():
    queries = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    items = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, -1.0]])
    # Query 0 finds its item first; query 1's item ties with nothing above it; query 2's own item
    # scores lowest of all.
    assert own_item_ranks(queries, items).tolist() == [0, 0, 2]
    # An all-zero query ties with everything: ranked last, not first.
    assert own_item_ranks(np.zeros((2, 2)), items[:2]).tolist() == [1, 1]
    assert recall_at(np.array([0, 1, 2]), (1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 1.0}


def test_ranks_are_blockwise_the_same_dense_or_sparse(monkeypatch):
    rng = np.random.default_rng(0)
    queries, items = rng.standard_normal((40, 6)), rng.standard_normal((40, 6))
    whole = own_item_ranks(queries, items)
    monkeypatch.setattr(retrieval, "_ROWS_PER_BLOCK", 7)
    assert own_item_ranks(queries, items).tolist() == whole.tolist()
    assert own_item_ranks(scipy.sparse.csr_matrix(queries), scipy.sparse.csr_matrix(items)).tolist() == whole.tolist()


def test_halves_recall_finds_the_same_document_and_chance_is_k_over_n():
    documents = np.eye(5)
    assert halves_recall(documents, documents) == {1: 1.0, 5: 1.0, 10: 1.0}
    assert chance_recall(20) == {1: 0.05, 5: 0.25, 10: 0.5}


def test_unit_rows_keeps_zero_rows_zero():
    assert np.allclose(unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


def test_tfidf_rows_are_unit_length_and_ignore_unknown_words():
    vocabulary, idf = fit_idf([["a", "cat"], ["a", "dog"]])
    assert idf[vocabulary["a"]] == pytest.approx(1.0)  # in every document: weight 1, not 0
    assert idf[vocabulary["cat"]] == pytest.approx(np.log(3 / 2) + 1)
    vectors = tfidf_vectors([["a", "cat", "cat"], ["a", "zebra"], ["a", "cat", "cat"]], vocabulary, idf)
    similarity = (vectors @ vectors.T).toarray()
    assert np.allclose(np.diag(similarity), 1.0) and similarity[0, 2] == pytest.approx(1.0)
    assert vectors[1, vocabulary["a"]] == pytest.approx(1.0)
