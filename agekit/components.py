"""The contracts every component kind honours, built-in or plugin.

A plugin subclasses one of these bases and declares it in its package's entry points; the registry
checks the base class when it imports the plugin. Options are the keyword arguments of
``__init__`` (type-annotated; the registry validates them with pydantic and rejects unknown ones).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn


class ComponentInputError(ValueError):
    """A component was called with input it cannot serve (shape, dtype, support, batch size)."""


# Priors ------------------------------------------------------------------------------------------
class Prior(ABC):
    """A reference distribution Z in the latent space, with the statistics divergences need."""

    #: "sphere": codes lie on the unit sphere S^{M-1} in R^M; "euclidean": anywhere in R^M.
    support: ClassVar[Literal["sphere", "euclidean"]]

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        self.dim = int(dim)

    @abstractmethod
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``n`` independent draws, shape (n, dim)."""

    @abstractmethod
    def project(self, raw: Tensor) -> Tensor:
        """Map an encoder's raw output onto the prior's support (the encoder's last layer)."""

    @abstractmethod
    def mean(self) -> Tensor:
        """Analytic per-coordinate mean, shape (dim,), float64."""

    @abstractmethod
    def variance(self) -> Tensor:
        """Analytic per-coordinate variance, shape (dim,), float64."""

    @abstractmethod
    def entropy(self) -> float:
        """Differential entropy in nats, w.r.t. the support's own measure."""

    def check_support(self, codes: Tensor, *, atol: float | None = None) -> None:  # noqa: B027
        """Raise ComponentInputError when ``codes`` are not points of the support.

        Every point of R^M is in the support of a Euclidean prior, so the default accepts all.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


# Divergences -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DivergenceGuarantees:
    """What a divergence promises; the conformance kit checks exactly these.

    nonnegative: "exact" (every batch), "expectation" (sample estimators: the mean over batches is
    >= -tolerance) or "none".
    zero_at_equality: "exact" (0 whenever codes match the prior's statistics), "expectation"
    (unbiased at the prior within ``tolerance``), "population" (0 only in the infinite-batch limit;
    the kit allows ``tolerance`` at the batch sizes it draws) or "none".
    """

    nonnegative: Literal["exact", "expectation", "none"] = "exact"
    zero_at_equality: Literal["exact", "expectation", "population", "none"] = "population"
    tolerance: float = 0.0
    supports: tuple[str, ...] = ("sphere", "euclidean")


class Divergence(ABC):
    """D(codes || prior), estimated from one batch of codes.

    Call as ``divergence(codes, prior)``: codes is a (B, M) floating tensor on the prior's
    support; the result is a differentiable 0-dim tensor with the codes' dtype and device.
    Subclasses implement :meth:`compute`; :meth:`__call__` validates the input first.
    """

    guarantees: ClassVar[DivergenceGuarantees] = DivergenceGuarantees()

    def min_batch(self) -> int:
        """The smallest batch the estimator is defined for."""
        return 2

    @abstractmethod
    def compute(self, codes: Tensor, prior: Prior) -> Tensor: ...

    def validate(self, codes: Tensor, prior: Prior) -> None:
        name = type(self).__name__
        if not isinstance(codes, Tensor):
            raise ComponentInputError(f"{name}: codes must be a torch.Tensor, got {type(codes)}")
        if codes.ndim != 2:
            raise ComponentInputError(
                f"{name}: codes must have shape (batch, {prior.dim}), got {tuple(codes.shape)}"
            )
        if codes.shape[1] != prior.dim:
            raise ComponentInputError(
                f"{name}: codes have {codes.shape[1]} dimensions but the prior has "
                f"dim={prior.dim}; expected shape (batch, {prior.dim})"
            )
        if not codes.is_floating_point():
            raise ComponentInputError(f"{name}: codes must be floating point, got {codes.dtype}")
        if codes.shape[0] < self.min_batch():
            raise ComponentInputError(
                f"{name}: batch of {codes.shape[0]} codes is too small; this estimator needs "
                f"at least {self.min_batch()} codes"
            )
        if not bool(torch.isfinite(codes).all()):
            bad = int((~torch.isfinite(codes)).any(dim=1).sum())
            raise ComponentInputError(f"{name}: {bad} code(s) contain NaN or inf")
        if prior.support not in self.guarantees.supports:
            raise ComponentInputError(
                f"{name} cannot serve a prior with {prior.support!r} support "
                f"({type(prior).__name__}); it supports: {', '.join(self.guarantees.supports)}"
            )
        prior.check_support(codes)

    def __call__(self, codes: Tensor, prior: Prior) -> Tensor:
        self.validate(codes, prior)
        return self.compute(codes, prior)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# Reconstruction losses ---------------------------------------------------------------------------
class ReconstructionLoss(ABC):
    """A per-sample distance between a target and its reconstruction (data or latent space)."""

    @abstractmethod
    def per_sample(self, target: Tensor, reconstruction: Tensor) -> Tensor:
        """Shape (B,): one non-negative number per sample."""

    def __call__(self, target: Tensor, reconstruction: Tensor) -> Tensor:
        if target.shape != reconstruction.shape:
            raise ComponentInputError(
                f"{type(self).__name__}: target shape {tuple(target.shape)} differs from "
                f"reconstruction shape {tuple(reconstruction.shape)}"
            )
        return self.per_sample(target, reconstruction).mean()


# Backbones ---------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """x (and an optional condition) -> codes on the prior's support."""

    def __init__(self, prior: Prior) -> None:
        super().__init__()
        self._project = prior.project

    @abstractmethod
    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor: ...

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self._project(self.raw(x, condition))


class Generator(nn.Module):
    """codes (and an optional condition) -> data."""

    @abstractmethod
    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor: ...


@dataclass
class EncoderGenerator:
    encoder: Encoder
    generator: Generator


class Backbone(ABC):
    """Builds an encoder/generator pair for a data shape and a latent size."""

    @abstractmethod
    def build(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        prior: Prior,
        condition_shape: Sequence[int] | None = None,
    ) -> EncoderGenerator: ...


# Data sets ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassifierSource:
    """Where a data set's evaluation classifier comes from.

    dataset: the registered digit data set whose TRAIN split trains agekit's classifier (ten
    classes); when it is the evaluated data set itself, that instance is reused.
    per_channel: classify each channel of an image on its own (Stacked MNIST: one digit per
    channel; a sample's class is then sum_c digit_c * 10^(C-1-c)).
    base: the attribute of the evaluated data set's instance that holds the digit data set to
    train on, when its options are not the defaults ``dataset`` is created with (a local folder's
    ``root``); the classifier's cache key then includes that instance's repr. None: create
    ``dataset`` by name.
    """

    dataset: str
    per_channel: bool = False
    base: str | None = None


class DataSource(ABC):
    """A data set with deterministic train and test splits.

    Items of :meth:`split` are ``(x, label)``; images are float tensors (C, H, W) in [-1, 1],
    vectors are float tensors (D,). Data small enough to live in memory also offers
    :meth:`tensors`, which the trainer moves to the device in one piece.
    """

    kind: ClassVar[Literal["image", "vector"]] = "image"

    # What the data set supports, read by the metrics and by study planning; the defaults promise
    # nothing. See docs/plugins.md.

    #: The evaluation classifier behind classifier-based metrics (sample-quality, and mode coverage
    #: with ``known_modes = "classifier"``): None when the data set's labels cannot serve one.
    evaluation_classifier: ClassVar[ClassifierSource | None] = None
    #: Known modes for the mode-coverage metric: "mixture" (the instance exposes ``modes`` (K, 2)
    #: and ``mode_std``), "classifier" (the modes are the evaluation classifier's predicted
    #: classes, composed over channels when it is per-channel) or None (no known modes).
    known_modes: ClassVar[Literal["mixture", "classifier"] | None] = None
    #: The metrics a study runs when it names none; None derives them from ``kind`` and the
    #: capabilities above (see :func:`agekit.evaluation.scoring.default_metrics`).
    default_metrics: ClassVar[tuple[str, ...] | None] = None

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample x."""

    @abstractmethod
    def split(self, name: Literal["train", "test"]) -> torch.utils.data.Dataset[Any]: ...

    def tensors(self, name: Literal["train", "test"]) -> tuple[Tensor, Tensor] | None:
        """(x, labels) of a whole split when it fits in memory, else None."""
        return None

    # Conditional data (e.g. colorization: x = ab, condition = L). Unconditional sources keep
    # these defaults and nothing else changes for them.
    @property
    def condition_shape(self) -> tuple[int, ...] | None:
        """The shape of one sample's condition, or None for unconditional data.

        A conditional source's :meth:`split` items are ``(x, label, condition)`` triples, and
        :meth:`conditions` gives the whole split's conditions beside :meth:`tensors`.
        """
        return None

    def conditions(self, name: Literal["train", "test"]) -> Tensor | None:
        """The conditions of a whole split, row-aligned with :meth:`tensors`; else None."""
        return None

    def display(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Images to draw for samples x (with their conditions), in [-1, 1]; default x itself."""
        return x


# Metrics -----------------------------------------------------------------------------------------
#: Which way a headline number is better; "reference" marks a baseline shown beside the others.
Direction = Literal["lower", "higher", "reference"]

#: The key under which a stored metric entry keeps its protocol, beside the values.
RESULT_PROTOCOL_KEY = "protocol"


@dataclass(frozen=True)
class MetricResult:
    """What a metric returns: named numbers and the protocol that produced them.

    ``values`` are the numbers (int or float, NaN allowed) that reports tabulate and compare;
    ``details`` are JSON-serialisable results that are not one number (a histogram over modes),
    kept in the evaluation record but never compared; ``protocol`` records how the numbers were
    measured (split, sample sizes, seeds, options), since numbers are comparable only under the
    same protocol. The three are copied, so a metric's later edits to its own dicts do not reach
    the result. A value that is not a number raises TypeError: a bool, a tensor or a numpy
    integer would not reach evaluate.json as the number a report compares.
    """

    values: dict[str, float]
    protocol: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(
                    f"metric value {key!r} is a {type(value).__name__}, not an int or float; "
                    "put results that are not one number in `details`"
                )
        keys = [*self.values, *self.details]
        if RESULT_PROTOCOL_KEY in keys or len(set(keys)) != len(keys):
            raise ValueError(
                f"metric result keys must be unique across values and details and must not be "
                f"{RESULT_PROTOCOL_KEY!r}; got values {list(self.values)} and details "
                f"{list(self.details)}"
            )
        # The record is one flat JSON object, so every key must be a string.
        if not all(isinstance(key, str) for key in keys):
            raise TypeError(f"metric result keys must be strings, got {keys}")
        object.__setattr__(self, "values", dict(self.values))
        object.__setattr__(self, "protocol", dict(self.protocol))
        object.__setattr__(self, "details", dict(self.details))

    def to_record(self) -> dict[str, Any]:
        """The metric's entry in evaluate.json / eval.json: one flat object, the values, then the
        details, then ``"protocol"``; study reports and statistics read this shape."""
        return {**self.values, **self.details, RESULT_PROTOCOL_KEY: self.protocol}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MetricResult:
        """The result behind a stored entry (:meth:`to_record`'s inverse up to key order): numbers
        become values, everything else but ``"protocol"`` details."""
        rest = {key: value for key, value in record.items() if key != RESULT_PROTOCOL_KEY}
        numbers = {
            key: value
            for key, value in rest.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        details = {key: value for key, value in rest.items() if key not in numbers}
        return cls(numbers, dict(record.get(RESULT_PROTOCOL_KEY, {})), details)


class Metric(ABC):
    """An evaluation of a trained model: named numbers plus the protocol that produced them.

    ``__call__`` returns a :class:`MetricResult`; evaluation refuses anything else (a plain dict
    included) with a TypeError naming the metric.
    """

    #: The keys of ``MetricResult.values`` that study reports show first, in this order, with the
    #: direction that is better.
    #: Comparisons of "lower"/"higher" keys are tested (Holm-adjusted); "reference" keys are shown
    #: but not tested. Other numeric keys follow in alphabetical order.
    headline: ClassVar[dict[str, Direction]] = {}
    #: Where this metric's headline keys come in a report: smallest first, ties by metric name.
    #: The built-ins use 10-60; a plugin keeps the default and comes after them.
    headline_order: ClassVar[int] = 100
    #: What the generator decodes in this metric: prior samples ("prior", e.g. sample quality) or
    #: codes of real images ("codes", reconstructions). Evaluation loads the generator's
    #: batch-norm statistics re-estimated for that input (agekit.evaluation.batchnorm).
    generator_inputs: ClassVar[Literal["prior", "codes"]] = "prior"

    @abstractmethod
    def __call__(self, context: EvaluationContext) -> MetricResult:
        """Score the model in ``context``; raise a ValueError naming ``context.dataset_name`` when
        the data set cannot be scored."""

    def refuses(self, data: DataSource) -> str | None:
        """Why this metric cannot score ``data``, said before a study trains; None: it can."""
        return None


def log_sphere_area(dim: int) -> float:
    """log |S^{dim-1}|, the surface area of the unit sphere in R^dim."""
    return math.log(2.0) + (dim / 2) * math.log(math.pi) - math.lgamma(dim / 2)


@dataclass
class EvaluationContext:
    """Everything a metric may look at: the trained pair, the prior, the data and where to cache."""

    encoder: Encoder
    generator: Generator
    prior: Prior
    data: DataSource
    dataset_name: str
    device: torch.device
    seed: int
    cache_dir: Any  # pathlib.Path; Any keeps this module free of filesystem concerns
    divergences: dict[str, Divergence]
    #: The key of ``divergences`` that the run trained with, built with the run's options; the
    #: others have their defaults. None when the context was not built from a run.
    run_divergence: str | None = None
    #: The trained run's folder (pathlib.Path), for metrics that read what training left there;
    #: None when the context was not built from a run.
    run_dir: Any = None
