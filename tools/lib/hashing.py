"""Classic unsupervised hashing baselines: PCA-ITQ for one modality, CCA-ITQ across two.

Gong, Lazebnik, Gordo and Perronnin, "Iterative Quantization: A Procrustean Approach to Learning
Binary Codes for Large-Scale Image Retrieval" (TPAMI 2013): project the centred features onto c
directions (PCA for one modality; CCA for paired image and text features, so that both land in one
space), then learn an orthogonal rotation R that brings the projected data V close to the
vertices of the hypercube: alternately B = sign(V R) and R from the SVD of B^T V (orthogonal
Procrustes). The code of a feature vector is sign((x - mean) W R): c bits. For two modalities the
rotation is learned on both modalities' projections stacked, so their codes are comparable.
Only numpy and scipy; the directions and rotation come from a training subset, the codes are
computed for every row. The projection is fitted once (PcaFit, CcaFit) for every code length: a
c-bit code takes its first c directions.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg
import scipy.sparse

DEFAULT_BITS = (16, 32, 64, 128)
ITQ_ITERATIONS = 50  # Gong et al. report the quantization loss levelling off after ~50
# Added to the diagonal of each covariance, relative to its mean variance: keeps CCA's whitening
# finite when features are collinear (e.g. many more dimensions than training pairs).
CCA_REGULARIZATION = 1e-4


@dataclasses.dataclass(frozen=True)
class LinearHash:
    """codes(x) = (x - mean) @ projection > 0, as 0/1 bits."""

    mean: np.ndarray
    projection: np.ndarray  # features x bits: the directions times the rotation

    @property
    def bits(self) -> int:
        return self.projection.shape[1]

    def codes(self, features) -> np.ndarray:
        """The codes of dense or sparse rows (sparse ones are not centred first, to stay sparse).

        In float32, like the features: the product for the whole pool then takes half the time.
        """
        projection = self.projection.astype(np.float32)
        projected = features @ projection - (self.mean @ self.projection).astype(np.float32)
        return (np.asarray(projected) > 0).astype(np.uint8)


def itq_rotation(projected: np.ndarray, iterations: int = ITQ_ITERATIONS, seed: int = 0) -> np.ndarray:
    """The c x c orthogonal rotation of ITQ for projected data (rows: samples, c columns).

    The products with the data are float32 (half the time of float64 on 10,000 x 128 rows); the
    c x c rotation and its SVD stay float64.
    """
    bits = projected.shape[1]
    data = np.asarray(projected, dtype=np.float32)
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((bits, bits)))
    for _ in range(iterations):
        signs = np.where(data @ rotation.astype(np.float32) >= 0, np.float32(1), np.float32(-1))
        left, _, right_t = np.linalg.svd((signs.T @ data).astype(np.float64))
        rotation = (left @ right_t).T
    return rotation


@dataclasses.dataclass(frozen=True)
class PcaFit:
    """PCA of the training rows, done once for every code length: each takes its leading directions."""

    mean: np.ndarray
    centred: np.ndarray  # the training rows minus their mean
    directions: np.ndarray  # features x the widest code length, largest variance first

    @classmethod
    def of(cls, train, widest: int) -> PcaFit:
        train = _dense(train)
        mean = train.mean(axis=0)
        centred = train - mean
        dimensions = train.shape[1]
        widest = min(widest, dimensions)
        _, vectors = scipy.linalg.eigh(centred.T @ centred, subset_by_index=(dimensions - widest, dimensions - 1))
        return cls(mean, centred, vectors[:, ::-1])

    def itq(self, bits: int, seed: int = 0) -> LinearHash:
        """PCA to `bits` directions, then ITQ."""
        _check_bits(bits, self.centred.shape[1], "features")
        if bits > self.directions.shape[1]:
            raise ValueError(f"{bits} bits: this PCA was fitted for at most {self.directions.shape[1]}")
        directions = self.directions[:, :bits]
        return LinearHash(self.mean, directions @ itq_rotation(self.centred @ directions, seed=seed))


def pca_itq(train, bits: int, seed: int = 0) -> LinearHash:
    """PCA to `bits` directions, then ITQ; `train` rows dense or sparse."""
    return PcaFit.of(train, bits).itq(bits, seed)


@dataclasses.dataclass(frozen=True)
class CcaFit:
    """CCA of paired training rows, done once for every code length: each takes its leading pairs
    of directions (the most correlated first)."""

    mean_x: np.ndarray
    mean_y: np.ndarray
    centred_x: np.ndarray
    centred_y: np.ndarray
    directions_x: np.ndarray  # features of x x min(features of x, of y)
    directions_y: np.ndarray

    @classmethod
    def of(cls, train_x, train_y) -> CcaFit:
        train_x, train_y = _dense(train_x), _dense(train_y)
        if len(train_x) != len(train_y):
            raise ValueError(f"{len(train_x)} and {len(train_y)} training rows: CCA needs pairs")
        mean_x, mean_y = train_x.mean(axis=0), train_y.mean(axis=0)
        centred_x, centred_y = train_x - mean_x, train_y - mean_y
        whiten_x = _inverse_square_root(_covariance(centred_x, centred_x))
        whiten_y = _inverse_square_root(_covariance(centred_y, centred_y))
        left, _, right_t = np.linalg.svd(whiten_x @ _covariance(centred_x, centred_y) @ whiten_y)
        pairs = min(train_x.shape[1], train_y.shape[1])
        return cls(mean_x, mean_y, centred_x, centred_y, whiten_x @ left[:, :pairs], whiten_y @ right_t[:pairs].T)

    def itq(self, bits: int, seed: int = 0) -> tuple[LinearHash, LinearHash]:
        """CCA to `bits` pairs of directions, then one ITQ rotation for both modalities."""
        _check_bits(bits, self.directions_x.shape[1], "features of either modality")
        directions_x, directions_y = self.directions_x[:, :bits], self.directions_y[:, :bits]
        rotation = itq_rotation(np.vstack([self.centred_x @ directions_x, self.centred_y @ directions_y]), seed=seed)
        return LinearHash(self.mean_x, directions_x @ rotation), LinearHash(self.mean_y, directions_y @ rotation)


def cca_itq(train_x, train_y, bits: int, seed: int = 0) -> tuple[LinearHash, LinearHash]:
    """CCA to `bits` pairs of directions, then one ITQ rotation for both modalities.

    Rows of train_x and train_y (dense or sparse) are paired: the same image's features and text.
    """
    return CcaFit.of(train_x, train_y).itq(bits, seed)


def _dense(rows) -> np.ndarray:
    return np.asarray(rows.toarray() if scipy.sparse.issparse(rows) else rows, dtype=np.float64)


def _covariance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    covariance = a.T @ b / len(a)
    if a is b:
        covariance[np.diag_indices_from(covariance)] += CCA_REGULARIZATION * np.trace(covariance) / len(covariance)
    return covariance


def _inverse_square_root(symmetric: np.ndarray) -> np.ndarray:
    values, vectors = scipy.linalg.eigh(symmetric)
    return (vectors / np.sqrt(np.maximum(values, np.finfo(np.float64).tiny))) @ vectors.T


def _check_bits(bits: int, dimensions: int, what: str) -> None:
    if bits > dimensions:
        raise ValueError(f"{bits} bits need at least {bits} dimensions; the {what} have {dimensions}")
