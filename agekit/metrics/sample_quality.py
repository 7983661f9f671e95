"""Sample quality in agekit's classifier features: FD, KID, precision/recall, density/coverage."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from agekit.components import DataSource, Direction, EvaluationContext, Metric, MetricResult
from agekit.metrics.classifier import (
    classifier_for,
    datasets_with_classifier,
    generate_samples,
    load_split,
)
from agekit.metrics.features import (
    density_coverage,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)
from agekit.metrics.mode_coverage import kl_to_uniform
from agekit.util.filters import median_filter


def speckle_ratio(fake: Tensor, real: Tensor) -> float:
    """Pixel-scale roughness of ``fake`` relative to ``real``: mean |x - median3x3(x)|, as a ratio.

    A 3x3 median removes isolated pixels and keeps strokes, so the mean change it makes measures
    salt-and-pepper structure; real images change only along stroke ends and corners. Clean
    samples score about 1; speckled ones several times that (a feature-space FD barely sees it).
    """

    def roughness(images: Tensor) -> float:
        images = images.double()
        return float((images - median_filter(images)).abs().mean())

    return roughness(fake) / roughness(real)


class SampleQuality(Metric):
    """Compare ``n_samples`` generator samples with the TEST split in classifier feature space.

    The reference set is the test split (held out from both the AGE model and the classifier), a
    seeded random subset of at most ``n_samples`` images; its size is in the protocol. Features are
    the classifier's 128-d penultimate activations (Stacked MNIST: the three channels' features
    concatenated, 384-d). Values are only comparable between runs with the same classifier protocol,
    which is returned under ``protocol['classifier']``.

    Beside the feature-space scores, three that see defects a feature space can miss:

    - ``pixel_precision`` / ``pixel_recall``: the same k-NN precision/recall on raw pixels (a
      speckled sample lies off the real images' pixel manifold even when its features look right);
    - ``speckle_ratio``: :func:`speckle_ratio` of samples to test images (about 1 when clean);
    - ``class_kl_uniform`` and ``min_class_share``: the samples' predicted-class histogram against
      uniform (0 when balanced; the data sets here are balanced to within a few percent), and
      the rarest class's share (0.1 when balanced, 0 when a class is missing). For Stacked MNIST
      the classes are the three-digit modes (see ``mode-coverage`` for those counts).

    Supported data sets: those declaring an ``evaluation_classifier`` (built-in: 'digits',
    'mnist5k', 'stacked-mnist', 'stacked-mnist-local'); any other raises a ValueError that names
    it.
    """

    headline: ClassVar[dict[str, Direction]] = {
        "fd_classifier": "lower",
        "kid": "lower",
        "precision": "higher",
        "recall": "higher",
        "density": "higher",
        "coverage": "higher",
        "pixel_precision": "higher",
        "pixel_recall": "higher",
        "speckle_ratio": "lower",
        "class_kl_uniform": "lower",
        "min_class_share": "higher",
    }
    headline_order: ClassVar[int] = 20

    def __init__(
        self,
        n_samples: int = 2000,
        k: int = 5,
        kid_subsets: int = 10,
        kid_subset_size: int = 500,
        batch_size: int = 500,
        bn_mode: Literal["eval", "train"] = "eval",
    ) -> None:
        if min(n_samples, k, kid_subsets, kid_subset_size, batch_size) < 1:
            raise ValueError("all counts must be positive")
        self.n_samples = n_samples
        self.k = k
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.batch_size = batch_size
        self.bn_mode = bn_mode

    def refuses(self, data: DataSource) -> str | None:
        if getattr(data, "evaluation_classifier", None) is not None:
            return None
        supported = datasets_with_classifier()
        return (
            f"sample-quality scores samples in the features of a classifier of the data set's "
            f"digits; {type(data).__name__} declares none (data sets that do: "
            f"{', '.join(supported)})"
        )

    def __call__(self, context: EvaluationContext) -> MetricResult:
        classifier = classifier_for(context)
        x_real, _ = load_split(context.data, "test", self.n_samples, seed=context.seed)
        x_fake = generate_samples(context, self.n_samples, self.batch_size, self.bn_mode)
        if x_fake.shape[1:] != x_real.shape[1:]:
            raise ValueError(
                f"generator samples have shape {tuple(x_fake.shape[1:])} but the data set's images "
                f"have shape {tuple(x_real.shape[1:])}"
            )
        real = classifier.features(x_real)
        fake = classifier.features(x_fake)
        kid_mean, kid_std = kernel_inception_distance(
            real, fake, self.kid_subsets, self.kid_subset_size, seed=context.seed
        )
        precision, recall = precision_recall(real, fake, self.k)
        density, coverage = density_coverage(real, fake, self.k)
        pixel_precision, pixel_recall = precision_recall(
            x_real.flatten(1), x_fake.flatten(1), self.k
        )
        labels = classifier.predict(x_fake)
        num_classes = 10 ** (x_fake.shape[1] if classifier.per_channel else 1)
        counts = torch.bincount(labels, minlength=num_classes)
        values = {
            "fd_classifier": frechet_distance(real, fake),
            "kid": kid_mean,
            "kid_std": kid_std,
            "precision": precision,
            "recall": recall,
            "density": density,
            "coverage": coverage,
            "pixel_precision": pixel_precision,
            "pixel_recall": pixel_recall,
            "speckle_ratio": speckle_ratio(x_fake, x_real),
            "class_kl_uniform": kl_to_uniform(counts.numpy()),
            "min_class_share": float(counts.min()) / float(counts.sum()),
        }
        return MetricResult(
            values,
            protocol={
                "metric": "sample-quality",
                "dataset": context.dataset_name,
                "reference_split": "test",
                "n_real": int(x_real.shape[0]),
                "n_fake": int(x_fake.shape[0]),
                "seed": context.seed,
                "k": self.k,
                "kid_subsets": self.kid_subsets,
                "kid_subset_size": min(self.kid_subset_size, x_real.shape[0], x_fake.shape[0]),
                "kid_kernel": "(x.y/d + 1)^3, unbiased MMD^2",
                "feature_dim": int(real.shape[1]),
                "batch_size": self.batch_size,
                "bn_mode": self.bn_mode,
                "pixel_space": "flattened pixels in [-1, 1], same k",
                "speckle": "mean |x - median3x3(x)| of samples / of the reference images",
                "classes": "argmax of the classifier; KL(histogram || uniform) in nats",
                "classifier": classifier.protocol,
            },
        )
