"""The small pure pieces behind the Doc2Vec tools: text recipe, retrieval measures, protocol sampling."""

import numpy as np
import pytest

from coco_unified import CocoError, sample_protocol
from tools.protocol import protocol_files
from tools.retrieval import average_precisions, fit_idf, label_map, recall_at, tfidf_vectors
from tools.text import caption_tokens, documents_sha256, join_captions, tokenize_captions


@pytest.mark.parametrize(
    "caption, tokens",
    [
        ("  A man riding a horse ", ["a", "man", "riding", "a", "horse", "."]),
        ("Two dogs, playing in the snow.", ["two", "dogs", ",", "playing", "in", "the", "snow", "."]),
        ("A girl's kite", ["a", "girl", "'s", "kite", "."]),
        ("Is it raining?", ["is", "it", "raining", "?", "."]),
        ('A "STOP" sign', ["a", "``", "stop", "''", "sign", "."]),
    ],
)
def test_caption_recipe(caption, tokens):
    assert caption_tokens(caption) == tokens


def test_a_document_joins_its_captions_in_order():
    captions = ["A dog.", "Grass"]
    assert join_captions([caption_tokens(caption) for caption in captions]) == ["a", "dog", ".", "grass", "."]


def test_tokenising_in_processes_gives_what_one_process_gives():
    # More images than one task holds, so that two processes share them.
    images = [[f"Picture {i} of a cat.", "A cat"] for i in range(4_100)]
    assert tokenize_captions(images, workers=2) == tokenize_captions(images, workers=1)


def test_document_digest_sees_token_boundaries():
    digests = {documents_sha256(documents) for documents in ([["a", "b"]], [["a"], ["b"]], [["ab"]], [["a b"]])}
    assert len(digests) == 4


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


def test_protocol_splits_the_labeled_pool():
    labeled = np.arange(0, 3_000, 3)
    protocol = sample_protocol(labeled, seed=4, num_query=100, train_sizes=(200, 400))
    assert len(protocol.query) == 100 and len(protocol.database) == 900
    assert np.array_equal(np.sort(np.concatenate([protocol.query, protocol.database])), labeled)
    assert set(protocol.train[200]) < set(protocol.train[400]) < set(protocol.database)
    assert all(np.array_equal(indices, np.sort(indices)) for indices in protocol_files(protocol).values())


def test_protocol_is_reproducible_by_its_documented_recipe():
    labeled = np.arange(500)
    protocol = sample_protocol(labeled, seed=11, num_query=50, train_sizes=(100,))
    rng = np.random.default_rng(11)
    shuffled = rng.permutation(labeled)
    assert np.array_equal(protocol.query, np.sort(shuffled[:50]))
    assert np.array_equal(protocol.train[100], np.sort(rng.permutation(np.sort(shuffled[50:]))[:100]))
    other = sample_protocol(labeled, seed=12, num_query=50, train_sizes=(100,))
    assert not np.array_equal(protocol.query, other.query)


def test_protocol_needs_enough_labeled_images():
    with pytest.raises(CocoError, match="cannot hold 50 queries and a database of at least 100"):
        sample_protocol(np.arange(120), seed=0, num_query=50, train_sizes=(100,))
