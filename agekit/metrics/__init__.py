"""Evaluation metrics for trained AGE models and the pure functions behind them.

The metric classes (``reconstruction``, ``sample-quality``, ``mode-coverage``,
``latent-divergence``) are created through the registry; importing this package imports only the
feature-space and mode-statistics functions.
"""

from __future__ import annotations

from agekit.metrics.features import (
    density_coverage,
    frechet_distance,
    gaussian_frechet_distance,
    kernel_inception_distance,
    knn_radii,
    polynomial_mmd2_unbiased,
    precision_recall,
)
from agekit.metrics.mode_coverage import kl_to_uniform, mode_coverage_2d, stacked_mode_statistics

__all__ = [
    "density_coverage",
    "frechet_distance",
    "gaussian_frechet_distance",
    "kernel_inception_distance",
    "kl_to_uniform",
    "knn_radii",
    "mode_coverage_2d",
    "polynomial_mmd2_unbiased",
    "precision_recall",
    "stacked_mode_statistics",
]
