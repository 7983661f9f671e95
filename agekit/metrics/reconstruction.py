"""Reconstruction error of g(e(x)) on held-out data, next to a 'mean image' baseline."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from agekit.components import Direction, EvaluationContext, Metric, MetricResult
from agekit.metrics.classifier import classifier_for, load_split, network_mode


class Reconstruction(Metric):
    """L1 and MSE of g(e(x)) against x on the TEST split, and of the train mean image.

    The baseline predicts the train split's mean x for every test x. An encoder that has collapsed
    (same code for every input) cannot beat it, so ``recon_l1 >= mean_image_l1`` flags collapse at a
    glance. Both errors are means over every element of every sample.

    On data sets that declare an evaluation classifier (the digit sets), ``recon_label_accuracy``
    is the share of test reconstructions that the classifier assigns to the test image's own
    label (does g(e(x)) keep the digit's identity?), beside ``label_accuracy_real``, its accuracy
    on the test images themselves.

    ``bn_mode`` sets the networks' mode while reconstructing: 'eval' uses running batch-norm
    statistics; 'train' uses batch statistics as the reference AGE code does (then results depend
    on ``batch_size``, which is why it is in the protocol). The networks' own modes are restored.
    """

    headline: ClassVar[dict[str, Direction]] = {
        "recon_l1": "lower",
        "mean_image_l1": "reference",
        "recon_mse": "lower",
        "mean_image_mse": "reference",
        "recon_label_accuracy": "higher",
        "label_accuracy_real": "reference",
    }
    headline_order: ClassVar[int] = 10
    generator_inputs: ClassVar[Literal["prior", "codes"]] = "codes"

    def __init__(
        self,
        n_samples: int = 1000,
        batch_size: int = 256,
        bn_mode: Literal["eval", "train"] = "eval",
    ) -> None:
        if n_samples < 1 or batch_size < 1:
            raise ValueError("n_samples and batch_size must be positive")
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.bn_mode = bn_mode

    def __call__(self, context: EvaluationContext) -> MetricResult:
        x_test, labels = load_split(context.data, "test", self.n_samples, seed=context.seed)
        x_train, _ = load_split(context.data, "train")
        mean_image = x_train.double().mean(0)

        abs_sum = sq_sum = base_abs = base_sq = 0.0
        reconstructions: list[Tensor] = []
        with network_mode([context.encoder, context.generator], self.bn_mode):
            for start in range(0, x_test.shape[0], self.batch_size):
                x = x_test[start : start + self.batch_size]
                recon = context.generator(context.encoder(x.to(context.device)))
                recon = recon.float().cpu().reshape(x.shape)
                reconstructions.append(recon)
                diff = recon.double() - x.double()
                abs_sum += float(diff.abs().sum())
                sq_sum += float(diff.square().sum())
                base = mean_image - x.double()
                base_abs += float(base.abs().sum())
                base_sq += float(base.square().sum())
        elements = x_test.numel()
        scores = {
            "recon_l1": abs_sum / elements,
            "recon_mse": sq_sum / elements,
            "mean_image_l1": base_abs / elements,
            "mean_image_mse": base_sq / elements,
        }
        if getattr(context.data, "evaluation_classifier", None) is not None:
            classifier = classifier_for(context)
            truth = labels.long()
            predicted = classifier.predict(torch.cat(reconstructions))
            scores["recon_label_accuracy"] = float((predicted == truth).double().mean())
            real = classifier.predict(x_test)
            scores["label_accuracy_real"] = float((real == truth).double().mean())
        return MetricResult(
            scores,
            protocol={
                "metric": "reconstruction",
                "split": "test",
                "n_samples": int(x_test.shape[0]),
                "subset_seed": context.seed,
                "batch_size": self.batch_size,
                "bn_mode": self.bn_mode,
                "baseline": "mean of the train split",
                "reduction": "mean over all elements",
            },
        )


__all__ = ["Reconstruction"]
