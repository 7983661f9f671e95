"""Distances between two sets of feature vectors, computed in float64.

Every function takes two 2-D arrays (a torch tensor or anything numpy accepts), one row per sample,
and returns plain Python floats so results can go straight into a JSON report.

* :func:`frechet_distance`: the Frechet (2-Wasserstein) distance between Gaussian fits.
* :func:`kernel_inception_distance`: unbiased MMD^2 with the cubic polynomial kernel, over subsets.
* :func:`precision_recall`: improved precision and recall (Kynkaanniemi et al. 2019).
* :func:`density_coverage`: density and coverage (Naeem et al. 2020, as the package ``prdc``).

"Inception" is kept in the KID name because that is what the statistic is called; the features
themselves come from whatever network the caller used (agekit trains its own classifier).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

Float64Array = NDArray[np.float64]

#: Rows of the first set processed per block in the kNN computations: a (block x n) float64 distance
#: matrix is 2048 * 26000 * 8 B ~ 0.4 GB at the largest set agekit evaluates, acceptable on CPU.
_BLOCK = 2048


def as_float64(features: Any, name: str = "features") -> Float64Array:
    """A (N, D) float64 numpy copy of ``features``; 1-D input is N samples of dimension 1."""
    if isinstance(features, torch.Tensor):
        array = features.detach().to("cpu", torch.float64).numpy()
    else:
        array = np.asarray(features, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, dimensions), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf")
    return array


def _check_pair(a: Any, b: Any) -> tuple[Float64Array, Float64Array]:
    x, y = as_float64(a, "first feature set"), as_float64(b, "second feature set")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    return x, y


# Frechet distance --------------------------------------------------------------------------------
def gaussian_frechet_distance(mu_a: Any, sigma_a: Any, mu_b: Any, sigma_b: Any) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) for two Gaussians.

    The trace of the matrix square root is computed as sum_i sqrt(lambda_i) with lambda the
    eigenvalues of the symmetric PSD matrix S_a^{1/2} S_b S_a^{1/2}, which is similar to S_a S_b.
    Unlike ``scipy.linalg.sqrtm`` on the non-symmetric product this never returns complex values or
    needs an epsilon on the diagonal when a covariance is singular (fewer samples than dimensions,
    or a collapsed generator); tiny negative eigenvalues from round-off are clipped to 0.
    """
    m_a = np.atleast_1d(np.asarray(mu_a, dtype=np.float64))
    m_b = np.atleast_1d(np.asarray(mu_b, dtype=np.float64))
    s_a = np.atleast_2d(np.asarray(sigma_a, dtype=np.float64))
    s_b = np.atleast_2d(np.asarray(sigma_b, dtype=np.float64))
    root_a = _psd_sqrt(s_a)
    middle = root_a @ s_b @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = m_a - m_b
    value = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * trace_sqrt)
    # Round-off can leave identical inputs at -1e-13; a distance is never negative.
    return max(value, 0.0)


def _psd_sqrt(matrix: Float64Array) -> Float64Array:
    sym = (matrix + matrix.T) / 2
    eigenvalues, vectors = np.linalg.eigh(sym)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """Frechet distance between Gaussian fits (mean, unbiased covariance) of two feature sets.

    This is FID's formula; with agekit's own classifier features it is reported as
    ``fd_classifier`` because numbers are only comparable under the same feature network.
    """
    x, y = _check_pair(feats_a, feats_b)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("the Frechet distance needs at least 2 samples in each set")
    cov_x = np.atleast_2d(np.cov(x, rowvar=False))
    cov_y = np.atleast_2d(np.cov(y, rowvar=False))
    return gaussian_frechet_distance(x.mean(0), cov_x, y.mean(0), cov_y)


# Kernel inception distance -----------------------------------------------------------------------
def polynomial_mmd2_unbiased(x: Float64Array, y: Float64Array) -> float:
    """Unbiased MMD^2 with k(u, v) = (u.v / d + 1)^3 (Binkowski et al. 2018).

    The unbiased estimator drops the diagonals k(x_i, x_i), k(y_j, y_j), so it is 0 in expectation
    when both sets come from one distribution and can be slightly negative on a given draw.
    """
    d = x.shape[1]
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("unbiased MMD^2 needs at least 2 samples in each set")
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    sum_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    sum_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(sum_xx + sum_yy - 2.0 * k_xy.mean())


def kernel_inception_distance(
    a: Any, b: Any, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) of unbiased polynomial-kernel MMD^2 over ``subsets`` random subsets.

    Each subset draws ``subset_size`` rows of each set without replacement (capped at the set
    sizes), from a numpy generator seeded with ``seed`` so that the value is reproducible. The std
    is the spread over subsets (ddof 0, as the reference implementation reports it), not a
    standard error of the mean.
    """
    x, y = _check_pair(a, b)
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    size = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(subsets, dtype=np.float64)
    for s in range(subsets):
        ix = rng.choice(x.shape[0], size, replace=False)
        iy = rng.choice(y.shape[0], size, replace=False)
        values[s] = polynomial_mmd2_unbiased(x[ix], y[iy])
    return float(values.mean()), float(values.std())


# kNN manifolds -----------------------------------------------------------------------------------
def _distances(x: Float64Array, y: Float64Array) -> Float64Array:
    """Euclidean distances (len x, len y), in row blocks to bound the temporary memory.

    Uses |u|^2 + |v|^2 - 2 u.v in float64: a duplicate point comes out at ~1e-8 instead of exactly
    0, which is far below any kNN radius of distinct points, and it is ~20x faster than the direct
    difference formula on CPU.
    """
    out = np.empty((x.shape[0], y.shape[0]), dtype=np.float64)
    y_sq = np.einsum("ij,ij->i", y, y)
    for start in range(0, x.shape[0], _BLOCK):
        block = x[start : start + _BLOCK]
        sq = np.einsum("ij,ij->i", block, block)[:, None] + y_sq[None, :] - 2.0 * (block @ y.T)
        out[start : start + _BLOCK] = np.sqrt(np.clip(sq, 0.0, None))
    return out


def knn_radii(features: Any, k: int) -> Float64Array:
    """Distance of each row to its k-th nearest *other* row (the row itself is not counted)."""
    x = as_float64(features)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if x.shape[0] <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {x.shape[0]}")
    radii = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], _BLOCK):
        dist = _distances(x[start : start + _BLOCK], x)
        # Index 0 of the sorted row is the point itself (distance 0), so index k is the k-th
        # neighbour, exactly as in both reference implementations.
        radii[start : start + _BLOCK] = np.partition(dist, k, axis=1)[:, k]
    return radii


def _inside_counts(
    centres: Float64Array, radii: Float64Array, queries: Float64Array, strict: bool
) -> NDArray[np.int64]:
    """For each query, how many balls (centre_i, radius_i) contain it."""
    counts = np.zeros(queries.shape[0], dtype=np.int64)
    for start in range(0, queries.shape[0], _BLOCK):
        dist = _distances(queries[start : start + _BLOCK], centres)
        inside = dist < radii[None, :] if strict else dist <= radii[None, :]
        counts[start : start + _BLOCK] = inside.sum(axis=1)
    return counts


def precision_recall(real: Any, fake: Any, k: int = 5) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    The real manifold is the union of balls around each real sample with radius its distance to its
    k-th nearest real neighbour; likewise for fake. precision = fraction of fake samples inside the
    real manifold, recall = fraction of real samples inside the fake manifold. Ball membership uses
    ``<=`` as in the authors' code.
    """
    x, y = _check_pair(real, fake)
    real_radii, fake_radii = knn_radii(x, k), knn_radii(y, k)
    precision = float((_inside_counts(x, real_radii, y, strict=False) > 0).mean())
    recall = float((_inside_counts(y, fake_radii, x, strict=False) > 0).mean())
    return precision, recall


def density_coverage(real: Any, fake: Any, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), matching the package ``prdc``.

    density = (1 / (k M)) sum_j sum_i 1[fake_j in B(real_i, r_i)] (M fakes; may exceed 1 when fakes
    crowd dense real regions), coverage = fraction of real i whose ball contains at least one fake.
    Both use only the real kNN radii; ball membership is strict (``<``) as in ``prdc``. For two
    independent samples of one distribution, coverage is about 1 - 2^-k for large equal sets and
    density about 1.
    """
    x, y = _check_pair(real, fake)
    real_radii = knn_radii(x, k)
    density = float(_inside_counts(x, real_radii, y, strict=True).sum() / (k * y.shape[0]))
    covered = np.zeros(x.shape[0], dtype=bool)
    for start in range(0, x.shape[0], _BLOCK):
        # Coverage needs each real ball's nearest fake, so block over real rows instead.
        dist = _distances(x[start : start + _BLOCK], y)
        covered[start : start + _BLOCK] = dist.min(axis=1) < real_radii[start : start + _BLOCK]
    return density, float(covered.mean())
