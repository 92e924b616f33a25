"""tools.lib.evaluation: the blockwise measures against a naive reference written here."""

import numpy as np
import pytest
import scipy.sparse

from tools.lib.evaluation import CosineScorer, HammingScorer, RankingOptions, Relevance, as_bits, rank
from tools.lib.hashing import cca_itq, itq_rotation, pca_itq


def reference_ranking(query_labels, database_labels, score_of, higher_is_better, ks, radii=None):
    """One query at a time, sorting (score, position) pairs in Python: the definitions, plainly."""
    average_precision = {k: [] for k in ks}
    precision = {k: [] for k in ks}
    pr_precision = {r: [] for r in radii or ()}
    pr_recall = {r: [] for r in radii or ()}
    for query in range(len(query_labels)):
        relevant = [bool(np.any(query_labels[query] & database_labels[item])) for item in range(len(database_labels))]
        scores = [score_of(query, item) for item in range(len(database_labels))]
        order = sorted(range(len(scores)), key=lambda item: (-scores[item] if higher_is_better else scores[item], item))
        hits = [relevant[item] for item in order]
        for k in ks:
            top = hits[:k]
            ranks_of_hits = [position + 1 for position, hit in enumerate(top) if hit]
            average_precision[k].append(
                np.mean([found / at for found, at in enumerate(ranks_of_hits, 1)]) if ranks_of_hits else 0.0
            )
            precision[k].append(sum(top) / k)
        for r in radii or ():
            retrieved = [item for item in range(len(scores)) if scores[item] <= r]
            if retrieved:
                pr_precision[r].append(sum(relevant[item] for item in retrieved) / len(retrieved))
            if any(relevant):
                pr_recall[r].append(sum(relevant[item] for item in retrieved) / sum(relevant))
    return (
        {k: np.mean(values) for k, values in average_precision.items()},
        {k: np.mean(values) for k, values in precision.items()},
        [np.mean(pr_precision[r]) if pr_precision[r] else 0.0 for r in radii or ()],
        [np.mean(pr_recall[r]) for r in radii or ()],
    )


def random_labels(rng, rows, classes=6, density=0.25):
    return (rng.random((rows, classes)) < density).astype(np.uint8)


def few_hot(rng, rows, dim=10, ones=4):
    """Rows of `ones` ones: unit rows are exactly 1/2 per entry, cosines exact multiples of 1/4 (many ties)."""
    vectors = np.zeros((rows, dim), dtype=np.float32)
    for row in vectors:
        row[rng.choice(dim, ones, replace=False)] = 1
    return vectors


@pytest.mark.parametrize("seed", range(4))
def test_codes_equal_the_reference(seed):
    rng = np.random.default_rng(seed)
    queries, database, bits = 9, 40, 6  # 6 bits over 40 items: many equal distances
    query_codes, database_codes = rng.integers(0, 2, (queries, bits)), rng.integers(0, 2, (database, bits))
    query_labels, database_labels = random_labels(rng, queries), random_labels(rng, database)
    ks = (1, 5, 17, database)
    result = rank(
        HammingScorer(query_codes, database_codes),
        Relevance(query_labels, database_labels),
        RankingOptions(map_ks=ks, precision_ks=ks),
    )
    expected_ap, expected_precision, expected_pr_precision, expected_pr_recall = reference_ranking(
        query_labels,
        database_labels,
        lambda q, d: int(np.sum(query_codes[q] != database_codes[d])),
        False,
        ks,
        radii=range(bits + 1),
    )
    assert result.map_all == pytest.approx(expected_ap[database])
    assert result.map_at == pytest.approx(expected_ap)
    assert result.precision_at == pytest.approx(expected_precision)
    assert result.pr_curve.precision == pytest.approx(expected_pr_precision)
    assert result.pr_curve.recall == pytest.approx(expected_pr_recall)
    assert result.pr_curve.recall[-1] == pytest.approx(1.0)  # everything lies within radius `bits`


@pytest.mark.parametrize("vectors", ["gaussian", "few-hot"])
def test_cosine_equals_the_reference(vectors):
    rng = np.random.default_rng(3)
    queries, database = 11, 50
    make = (lambda rows: rng.standard_normal((rows, 8))) if vectors == "gaussian" else (lambda rows: few_hot(rng, rows))
    query_vectors, database_vectors = make(queries), make(database)
    query_labels, database_labels = random_labels(rng, queries), random_labels(rng, database)
    ks = (1, 3, 10, database)
    result = rank(
        CosineScorer(query_vectors, database_vectors),
        Relevance(query_labels, database_labels),
        RankingOptions(map_ks=ks, precision_ks=ks),
    )

    def cosine(q, d):
        a, b = np.float64(query_vectors[q]), np.float64(database_vectors[d])
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    expected_ap, expected_precision, _, _ = reference_ranking(query_labels, database_labels, cosine, True, ks)
    assert result.map_at == pytest.approx(expected_ap) and result.map_all == pytest.approx(expected_ap[database])
    assert result.precision_at == pytest.approx(expected_precision)
    assert result.pr_curve is None


def test_ties_are_broken_by_database_position():
    # Four items at the same distance, only the last relevant: ranked last, AP = 1/4. A sort
    # that put it first would give 1.
    labels = np.array([[0, 1], [1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.uint8)
    codes = np.array([[1, 1], [0, 1], [0, 1], [0, 1], [0, 1]])
    result = rank(HammingScorer(codes[:1], codes[1:]), Relevance(labels[:1], labels[1:]), RankingOptions(map_ks=(2,)))
    assert result.map_all == pytest.approx(1 / 4)
    assert result.map_at == {2: 0.0}
    assert result.precision_at == {1: 0.0}
    cosine = rank(
        CosineScorer(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]] * 4)),
        Relevance(labels[:1], labels[1:]),
        RankingOptions(),
    )
    assert cosine.map_all == pytest.approx(1 / 4)


def test_blocks_equal_one_block():
    rng = np.random.default_rng(5)
    query_codes, database_codes = rng.integers(0, 2, (37, 16)), rng.integers(0, 2, (300, 16))
    query_vectors, database_vectors = rng.standard_normal((37, 12)), rng.standard_normal((300, 12))
    query_labels, database_labels = random_labels(rng, 37), random_labels(rng, 300)
    whole = 1 << 30
    for scorer in (HammingScorer(query_codes, database_codes), CosineScorer(query_vectors, database_vectors)):
        one = rank(scorer, Relevance(query_labels, database_labels), RankingOptions(memory_bytes=whole, map_ks=(50,)))
        # 300 items x 8 bytes: 1 query row per cosine block, then 5 rows per block, with 1 and 3 threads.
        for memory, workers in ((1, 1), (300 * 8 * 5, 1), (300 * 8 * 5, 3)):
            options = RankingOptions(memory_bytes=memory, workers=workers, map_ks=(50,))
            blocked = rank(scorer, Relevance(query_labels, database_labels), options)
            assert blocked == one


def test_queries_without_relevant_items_count_as_zero():
    labels = np.array([[1, 0], [0, 0], [1, 0], [1, 0]], dtype=np.uint8)  # the second query has no label
    codes = np.array([[1, 1], [1, 1], [1, 1], [0, 0]])
    result = rank(HammingScorer(codes[:2], codes[2:]), Relevance(labels[:2], labels[2:]), RankingOptions())
    assert result.queries_without_relevant == 1
    assert result.map_all == pytest.approx((1 + 0) / 2)  # AP 1 and AP 0, both in the mean
    assert result.base_rate == pytest.approx((1 + 0) / 2)
    assert result.pr_curve.recall == pytest.approx([0.5, 0.5, 1.0])  # over the one query with relevant items


def test_ks_beyond_the_database_are_left_out():
    rng = np.random.default_rng(0)
    result = rank(
        CosineScorer(rng.standard_normal((3, 4)), rng.standard_normal((20, 4))),
        Relevance(random_labels(rng, 3), random_labels(rng, 20)),
        RankingOptions(map_ks=(10, 1000), precision_ks=(1, 20, 21)),
    )
    assert list(result.map_at) == [10] and list(result.precision_at) == [1, 20]


def test_codes_must_be_binary():
    assert as_bits(np.array([[0, 1]])).tolist() == [[False, True]]
    assert as_bits(np.array([[-1, 1]])).tolist() == [[False, True]]
    with pytest.raises(ValueError, match="binary codes"):
        as_bits(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="binary codes"):
        as_bits(np.array([[-1, 0, 1]]))


# ----------------------------------------------------------------------------- hashing baselines


def paired_features(rng, rows: int, classes: int = 8):
    """Labels, and image and text features that both carry them (through a shared latent) plus noise."""
    labels = (rng.random((rows, classes)) < 0.2).astype(np.uint8)
    latent = labels @ rng.standard_normal((classes, 12))
    image = latent @ rng.standard_normal((12, 40)) + 2.0 * rng.standard_normal((rows, 40))
    text = latent @ rng.standard_normal((12, 30)) + 2.0 * rng.standard_normal((rows, 30))
    return labels, image, text


def test_cca_itq_codes_find_the_other_modality_beyond_chance():
    rng = np.random.default_rng(0)
    labels, image, text = paired_features(rng, 1_200)
    train, query, database = slice(0, 600), slice(600, 700), slice(700, None)
    image_hash, text_hash = cca_itq(image[train], text[train], bits=16)
    image_codes, text_codes = image_hash.codes(image), text_hash.codes(text)
    assert set(np.unique(image_codes)) == {0, 1} and image_codes.shape == (1_200, 16)
    for query_codes, database_codes in ((image_codes, text_codes), (text_codes, image_codes)):
        result = rank(
            HammingScorer(query_codes[query], database_codes[database]), Relevance(labels[query], labels[database])
        )
        assert result.map_all > result.base_rate + 0.1  # measured: 0.46 against 0.29
    # Unpaired rows (the text of other images) carry no such signal: the pairing is what CCA learns.
    shuffled_hash, _ = cca_itq(image[train], text[train][rng.permutation(600)], bits=16)
    shuffled = shuffled_hash.codes(image)
    unpaired = rank(HammingScorer(shuffled[query], text_codes[database]), Relevance(labels[query], labels[database]))
    assert unpaired.map_all < result.map_all - 0.1


def test_pca_itq_codes_beat_chance_within_a_modality():
    rng = np.random.default_rng(1)
    labels, image, _ = paired_features(rng, 1_000)
    hashing = pca_itq(image[:500], bits=32)
    codes = hashing.codes(image)
    result = rank(HammingScorer(codes[500:600], codes[600:]), Relevance(labels[500:600], labels[600:]))
    assert result.map_all > result.base_rate + 0.15


def test_itq_rotation_is_orthogonal_and_lowers_the_quantization_loss():
    rng = np.random.default_rng(2)
    projected = rng.standard_normal((500, 8)) * np.linspace(3, 0.5, 8)
    rotation = itq_rotation(projected)
    assert np.allclose(rotation @ rotation.T, np.eye(8))

    def loss(matrix):
        rotated = projected @ matrix
        return np.sum((np.sign(rotated) - rotated) ** 2)

    assert loss(rotation) < loss(np.eye(8))


def test_more_bits_than_dimensions_is_refused():
    with pytest.raises(ValueError, match="32 bits need at least 32 dimensions"):
        pca_itq(np.zeros((50, 20)), bits=32)


def test_codes_of_sparse_rows_equal_those_of_dense_rows():
    rng = np.random.default_rng(3)
    counts = (rng.random((200, 30)) < 0.1).astype(np.uint8)
    hashing = pca_itq(scipy.sparse.csr_matrix(counts[:100]), bits=8)
    assert np.array_equal(hashing.codes(scipy.sparse.csr_matrix(counts)), hashing.codes(counts))
    assert np.array_equal(pca_itq(counts[:100], bits=8).projection, hashing.projection)
