"""Linear-probe error of the encoder's codes: how linearly the learnt features separate classes.

The paper's unsupervised feature-learning yardstick (AGE, section 3, SVHN; the protocol of ALI):
fit a linear classifier on the codes e(x) of labelled TRAIN images and report its error on the
TEST images. Beside it, in the same call, the same probe on raw pixels and on the codes of a
randomly initialised encoder of the same architecture, so that a number is read against what
needs no training at all.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, ClassVar, Literal, cast

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from agekit.components import DataSource, Direction, EvaluationContext, Metric, MetricResult
from agekit.metrics.classifier import load_split, network_mode

__all__ = ["LinearProbe", "fit_probe", "random_encoder"]

SplitName = Literal["train", "test"]


def fit_probe(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    C: float,
    max_iter: int,
    seed: int,
) -> tuple[float, int]:
    """Test error (percent) of a standardised logistic regression fitted on ``train``, and the
    solver's iteration count (``max_iter`` means it stopped before converging)."""
    probe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("logistic", LogisticRegression(C=C, max_iter=max_iter, random_state=seed)),
        ]
    )
    # Non-convergence is reported in the result's details, where a report keeps it; a warning on
    # stderr would be lost among a study's runs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train, train_labels)
    error = float(np.mean(probe.predict(test) != test_labels)) * 100.0
    iterations = int(np.max(probe.named_steps["logistic"].n_iter_))
    return error, iterations


def random_encoder(
    encoder: nn.Module, x_train: Tensor, seed: int, batch_size: int, device: torch.device
) -> nn.Module:
    """A copy of ``encoder`` with every parameter re-drawn from its layer's initialiser.

    Parameters are drawn on the CPU from ``seed`` (the caller's random state is left alone), so
    the copy is the same on every device. Its batch-norm statistics are re-estimated on
    ``x_train``, as the trained encoder's are on real images, so that the baseline differs from
    the trained encoder in its weights only.
    """
    model = copy.deepcopy(encoder).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    model.to(device)
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if layers:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average: every batch weighs the same
        dtype = _dtype_of(model)
        model.train()
        with torch.no_grad():
            for batch in x_train.split(batch_size):
                # a batch of one has no batch statistics (batch norm refuses it in train mode)
                if batch.shape[0] > 1:
                    model(batch.to(device, dtype))
    return model.eval()


def _dtype_of(module: nn.Module) -> torch.dtype:
    """The networks' own dtype (a run may train in float64 on float32 data); float32 when the
    module has no parameters."""
    parameter = next(module.parameters(), None)
    return parameter.dtype if parameter is not None else torch.float32


def _read_split(
    data: DataSource, name: SplitName, limit: int | None, seed: int
) -> tuple[Tensor, Tensor]:
    """(x, labels) of at most ``limit`` rows of a split, a seeded random subset.

    Data sets held in memory go through :func:`load_split`. A lazy split is indexed at random
    rather than read from the start as :func:`load_split` does, because folder-based splits are
    sorted by class: their first rows could all be one class.
    """
    if data.tensors(name) is not None or limit is None:
        return load_split(data, name, limit, seed=seed)
    dataset = cast("Any", data.split(name))
    size = len(dataset)
    if limit >= size:
        return load_split(data, name)
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    items = [dataset[int(i)] for i in order[:limit].sort().values]
    return (
        torch.stack([torch.as_tensor(item[0]) for item in items]),
        torch.stack([torch.as_tensor(item[1]) for item in items]),
    )


def _class_labels(labels: Tensor, dataset: str, split: str) -> np.ndarray:
    """Labels as int64 class indices; a ValueError naming the data set when they are not."""
    if labels.ndim != 1 or (
        labels.is_floating_point() and not bool((labels == labels.round()).all())
    ):
        raise ValueError(
            f"linear-probe needs one integer class label per sample, but data set {dataset!r} "
            f"gives labels of shape {tuple(labels.shape)} and dtype {labels.dtype} in its "
            f"{split} split"
        )
    classes = labels.long()
    if bool((classes < 0).any()):
        raise ValueError(
            f"linear-probe needs class labels, but data set {dataset!r} has unlabelled samples "
            f"(label -1) in its {split} split; use a labelled data set (digits, mnist5k, mnist, "
            "svhn, cifar10, an image-folder of class sub-folders)"
        )
    return classes.numpy()


class LinearProbe(Metric):
    """Test error (percent) of a linear classifier on the encoder's codes, with two baselines.

    The probe is scikit-learn's L2-regularised logistic regression (lbfgs; the multinomial
    softmax loss for three or more classes) with inverse regularisation ``C`` and at most
    ``max_iter`` iterations, on features standardised with the train features' mean and
    standard deviation. It is fitted on at most ``n_train`` TRAIN samples (a subset drawn with
    ``context.seed``) and scored on at most ``n_test`` TEST samples (all by default).

    ``error_percent`` probes the codes e(x) (after the prior's projection, as a user gets them),
    computed with the encoder in eval mode in batches of ``batch_size``.
    ``raw_pixels_error_percent`` probes the flattened images themselves, and
    ``random_encoder_error_percent`` the codes of the same architecture with its parameters
    re-initialised from ``context.seed`` (:func:`random_encoder`): learning helped the features
    only where ``error_percent`` is below both.

    Conditional data and data sets without class labels (label -1) are refused with a
    ValueError naming the data set.
    """

    headline: ClassVar[dict[str, Direction]] = {
        "error_percent": "lower",
        "raw_pixels_error_percent": "reference",
        "random_encoder_error_percent": "reference",
    }
    headline_order: ClassVar[int] = 45

    def __init__(
        self,
        n_train: int | None = 5000,
        n_test: int | None = None,
        C: float = 1.0,
        max_iter: int = 1000,
        batch_size: int = 256,
    ) -> None:
        if n_train is not None and n_train < 2:
            raise ValueError(f"n_train must be at least 2 (two classes), got {n_train}")
        if n_test is not None and n_test < 1:
            raise ValueError(f"n_test must be positive, got {n_test}")
        if not C > 0 or max_iter < 1 or batch_size < 1:
            raise ValueError("C, max_iter and batch_size must be positive")
        self.n_train = n_train
        self.n_test = n_test
        self.C = float(C)
        self.max_iter = max_iter
        self.batch_size = batch_size

    def _encode(self, encoder: nn.Module, x: Tensor, device: torch.device) -> np.ndarray:
        dtype = _dtype_of(encoder)
        codes: list[Tensor] = []
        with network_mode([encoder], "eval"):
            for batch in x.split(self.batch_size):
                codes.append(encoder(batch.to(device, dtype)).double().cpu())
        return torch.cat(codes).flatten(1).numpy()

    def _load(self, context: EvaluationContext) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
        name = context.dataset_name
        if context.data.condition_shape is not None:
            raise ValueError(
                f"linear-probe scores unconditional encoders; data set {name!r} is conditional"
            )
        x_train, y_train = _read_split(context.data, "train", self.n_train, context.seed)
        x_test, y_test = _read_split(context.data, "test", self.n_test, context.seed)
        train_labels = _class_labels(y_train, name, "train")
        test_labels = _class_labels(y_test, name, "test")
        classes = np.unique(train_labels).size
        if classes < 2 or test_labels.size == 0:
            raise ValueError(
                f"linear-probe needs train samples of at least two classes and some test "
                f"samples; data set {name!r} gives {train_labels.size} train samples of "
                f"{classes} class(es) and {test_labels.size} test samples"
            )
        return x_train, train_labels, x_test, test_labels

    def __call__(self, context: EvaluationContext) -> MetricResult:
        x_train, train_labels, x_test, test_labels = self._load(context)
        device = context.device

        def probe(train: np.ndarray, test: np.ndarray) -> tuple[float, int]:
            return fit_probe(
                train, train_labels, test, test_labels, self.C, self.max_iter, context.seed
            )

        pixels = probe(x_train.flatten(1).double().numpy(), x_test.flatten(1).double().numpy())
        codes = probe(
            self._encode(context.encoder, x_train, device),
            self._encode(context.encoder, x_test, device),
        )
        untrained = random_encoder(context.encoder, x_train, context.seed, self.batch_size, device)
        baseline = probe(
            self._encode(untrained, x_train, device), self._encode(untrained, x_test, device)
        )
        runs = {"codes": codes, "raw_pixels": pixels, "random_encoder": baseline}
        return MetricResult(
            values={
                "error_percent": codes[0],
                "raw_pixels_error_percent": pixels[0],
                "random_encoder_error_percent": baseline[0],
            },
            protocol=self._protocol(context, train_labels, test_labels),
            details={
                "probe_iterations": {key: run[1] for key, run in runs.items()},
                "probe_converged": {key: run[1] < self.max_iter for key, run in runs.items()},
            },
        )

    def _protocol(
        self, context: EvaluationContext, train_labels: np.ndarray, test_labels: np.ndarray
    ) -> dict[str, Any]:
        return {
            "metric": "linear-probe",
            "train_split": "train",
            "test_split": "test",
            "n_train": int(train_labels.size),
            "n_test": int(test_labels.size),
            "n_classes": int(np.unique(train_labels).size),
            "subset": "seeded random subset when a split is larger than n_train / n_test",
            "seed": context.seed,
            "classifier": (
                f"scikit-learn {sklearn.__version__} LogisticRegression (lbfgs, L2 penalty, "
                "multinomial for 3+ classes)"
            ),
            "C": self.C,
            "max_iter": self.max_iter,
            "standardisation": "StandardScaler fitted on the train features",
            "features": "encoder codes e(x) after the prior's projection, float64",
            "bn_mode": "eval",
            "batch_size": self.batch_size,
            "raw_pixels_baseline": "flattened x",
            "random_encoder_baseline": (
                "deep copy of the encoder, reset_parameters() on every submodule with torch "
                f"seed {context.seed} (CPU), batch-norm statistics re-estimated on the train "
                "samples, eval mode"
            ),
        }
