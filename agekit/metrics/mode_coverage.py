"""Mode coverage: the PacGAN protocol on 2-D mixtures and the Stacked-MNIST 1,000-mode count.

Which protocol applies is declared by the data set (``DataSource.known_modes``). Definitions used
throughout (estimators.md, "Mode-coverage protocols and published numbers"):

* 2-D mixtures (ring8, grid25): 2,500 samples; a sample is *high quality* when its Euclidean
  distance to the nearest mode is at most ``quality_std`` (3) mode standard deviations; a mode is
  *captured* when it is the nearest mode of at least one high-quality sample.
* Stacked MNIST: 26,000 samples; each channel is classified by agekit's digit classifier (trained
  on mnist5k for ``stacked-mnist``, on the full MNIST train split for ``stacked-mnist-local``); the
  mode is 100*d1 + 10*d2 + d3; a mode is captured when at least one sample falls in it.
* ``reverse_kl`` = KL(p || u) = sum_k p_k log(K p_k) in nats, with p the normalised histogram of
  samples over the K modes (high-quality samples only for 2-D mixtures) and u uniform over the K
  modes. "Reverse" because the model's distribution comes first. Empty bins contribute 0 by the
  convention 0 log 0 = 0, so the value is always finite and lies in [0, log K]; it is NaN only when
  there are no samples to histogram at all (no high-quality sample).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from agekit.components import DataSource, Direction, EvaluationContext, Metric, MetricResult
from agekit.metrics.classifier import (
    classifier_for,
    generate_samples,
    network_mode,
    registered_datasets_where,
)


def kl_to_uniform(counts: Any) -> float:
    """KL(p || uniform), nats, histogram ``counts`` over K bins (0 log 0 = 0; NaN if empty)."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    if (c < 0).any():
        raise ValueError("histogram counts must be non-negative")
    total = c.sum()
    if total == 0:
        return math.nan
    p = c[c > 0] / total
    return float(np.sum(p * np.log(p * c.size)))


def mode_coverage_2d(
    samples: Tensor | np.ndarray,
    modes: Tensor | np.ndarray,
    std: float,
    quality_std: float = 3.0,
) -> dict[str, Any]:
    """PacGAN mode statistics of 2-D ``samples`` (N, 2) against mixture ``modes`` (K, 2).

    Returns ``modes_captured`` (int), ``num_modes``, ``high_quality_fraction`` and
    ``high_quality_percent``, ``reverse_kl`` (see the module docstring) and ``mode_counts`` (the
    number of high-quality samples per mode, a list of K ints).
    """
    x = torch.as_tensor(samples, dtype=torch.float64).reshape(-1, 2)
    centres = torch.as_tensor(modes, dtype=torch.float64).reshape(-1, 2)
    if x.shape[0] == 0:
        raise ValueError("no samples")
    distances = torch.cdist(x, centres)
    nearest_distance, nearest = distances.min(dim=1)
    high_quality = nearest_distance <= quality_std * std
    counts = torch.bincount(nearest[high_quality], minlength=centres.shape[0])
    fraction = float(high_quality.double().mean())
    return {
        "modes_captured": int((counts > 0).sum()),
        "num_modes": int(centres.shape[0]),
        "high_quality_fraction": fraction,
        "high_quality_percent": 100.0 * fraction,
        "reverse_kl": kl_to_uniform(counts.numpy()),
        "mode_counts": [int(c) for c in counts],
    }


def stacked_mode_statistics(modes: Tensor | np.ndarray, num_modes: int = 1000) -> dict[str, Any]:
    """Modes covered and KL(histogram || uniform) of predicted Stacked-MNIST modes in [0, K)."""
    m = torch.as_tensor(modes, dtype=torch.long).ravel()
    if m.numel() == 0:
        raise ValueError("no predicted modes")
    if int(m.min()) < 0 or int(m.max()) >= num_modes:
        raise ValueError(f"predicted modes must lie in [0, {num_modes})")
    counts = torch.bincount(m, minlength=num_modes)
    return {
        "modes_captured": int((counts > 0).sum()),
        "num_modes": num_modes,
        "reverse_kl": kl_to_uniform(counts.numpy()),
    }


class ModeCoverage(Metric):
    """Mode coverage of generator samples on ring8 / grid25 (PacGAN) and Stacked MNIST.

    The data set says which protocol applies through its ``known_modes`` declaration.
    2-D mixtures ("mixture", or any data set exposing ``modes`` and ``mode_std``) use the data
    set's own ``modes`` and ``mode_std`` attributes, so the reference is exactly the mixture the
    model was trained on. Classifier modes ("classifier", Stacked MNIST) use
    ``n_samples_stacked`` samples (26,000 as in VEEGAN / PacGAN) and the data set's evaluation
    classifier (per channel for Stacked MNIST: 10^3 modes); the classifier's protocol and test
    accuracy are returned under ``protocol['classifier']``: mode counts are only as good as it.
    Any other data set raises a ValueError naming it.
    """

    headline: ClassVar[dict[str, Direction]] = {
        "modes_captured": "higher",
        "high_quality_percent": "higher",
        "reverse_kl": "lower",
    }
    headline_order: ClassVar[int] = 30

    def __init__(
        self,
        n_samples: int = 2500,
        quality_std: float = 3.0,
        n_samples_stacked: int = 26000,
        batch_size: int = 500,
        bn_mode: Literal["eval", "train"] = "eval",
    ) -> None:
        if n_samples < 1 or n_samples_stacked < 1 or batch_size < 1:
            raise ValueError("n_samples, n_samples_stacked and batch_size must be positive")
        if quality_std <= 0:
            raise ValueError("quality_std must be positive")
        self.n_samples = n_samples
        self.quality_std = quality_std
        self.n_samples_stacked = n_samples_stacked
        self.batch_size = batch_size
        self.bn_mode = bn_mode

    def __call__(self, context: EvaluationContext) -> MetricResult:
        name = context.dataset_name
        base = {
            "metric": "mode-coverage",
            "dataset": name,
            "seed": context.seed,
            "batch_size": self.batch_size,
            "bn_mode": self.bn_mode,
            "reverse_kl": "KL(p_model || uniform) over modes, nats, 0 log 0 = 0",
        }
        protocol = _protocol(context.data)
        if protocol == "mixture":
            return self._mixture(context, base)
        if protocol == "classifier":
            return self._classified(context, base)
        raise ValueError(_unsupported(repr(name)))

    def refuses(self, data: DataSource) -> str | None:
        return None if _protocol(data) is not None else _unsupported(type(data).__name__)

    def _mixture(self, context: EvaluationContext, base: dict[str, Any]) -> MetricResult:
        """The PacGAN 2-D protocol against the data set's own ``modes`` and ``mode_std``."""
        modes = getattr(context.data, "modes", None)
        std = getattr(context.data, "mode_std", None)
        if modes is None or std is None:
            raise ValueError(
                f"data set {context.dataset_name!r} does not expose `modes` and `mode_std`; mode "
                "coverage needs them"
            )
        samples = generate_samples(context, self.n_samples, self.batch_size, self.bn_mode)
        values = mode_coverage_2d(samples, modes, float(std), self.quality_std)
        # The per-mode histogram is a list, not one number: reports must not compare it.
        details = {"mode_counts": values.pop("mode_counts")}
        protocol = {
            **base,
            "protocol": "PacGAN 2-D",
            "n_samples": self.n_samples,
            "quality_std": self.quality_std,
            "mode_std": float(std),
        }
        return MetricResult(values, protocol, details)

    def _classified(self, context: EvaluationContext, base: dict[str, Any]) -> MetricResult:
        """Modes as the evaluation classifier's classes (Stacked MNIST: per channel)."""
        classifier = classifier_for(context)
        # Ten digit classes, composed over the channels by a per-channel classifier.
        channels = int(context.data.shape[0]) if classifier.per_channel else 1
        predicted: list[Tensor] = []
        # Generate and classify chunk by chunk: 26,000 3x32x32 images would be 320 MB at once.
        chunk = 5000
        z_all = context.prior.sample(
            self.n_samples_stacked, generator=torch.Generator().manual_seed(context.seed)
        )
        with network_mode([context.generator], self.bn_mode):
            for start in range(0, self.n_samples_stacked, chunk):
                images = [
                    context.generator(z.to(context.device)).float().cpu()
                    for z in z_all[start : start + chunk].split(self.batch_size)
                ]
                predicted.append(classifier.predict(torch.cat(images)))
        values = stacked_mode_statistics(torch.cat(predicted), 10**channels)
        protocol = {
            **base,
            "protocol": (
                "Stacked MNIST, per-channel classifier"
                if classifier.per_channel
                else "classifier classes"
            ),
            "n_samples": self.n_samples_stacked,
            "classifier": classifier.protocol,
        }
        return MetricResult(values, protocol)


def _protocol(data: DataSource) -> str | None:
    """Which protocol counts ``data``'s modes: "mixture", "classifier", or None (neither)."""
    known = getattr(data, "known_modes", None)
    if known == "mixture" or (known is None and hasattr(data, "modes")):
        return "mixture"
    return "classifier" if known == "classifier" else None


def _unsupported(dataset: str) -> str:
    supported = registered_datasets_where(lambda cls: cls.known_modes is not None)
    return (
        f"mode coverage is not defined for data set {dataset}: it supports "
        f"{', '.join(supported)} (data sets that declare `known_modes`, or any data set "
        "exposing `modes` and `mode_std`)"
    )
