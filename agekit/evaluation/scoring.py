"""Evaluate a trained run with registered metrics; every score is stored with its protocol."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch

from agekit.components import (
    ComponentInputError,
    DataSource,
    Divergence,
    EvaluationContext,
    Metric,
    MetricResult,
    Prior,
)
from agekit.config import Component
from agekit.evaluation.batchnorm import CONDITIONAL_PROTOCOL
from agekit.model import Model, load_trained
from agekit.registry import REGISTRY, RegistryError, create
from agekit.runs.layout import RunFolder
from agekit.runs.provenance import PROVENANCE_KEY, provenance
from agekit.util.atomic import write_json_atomic as write_json_atomic  # re-exported for the runner


def default_metrics(
    dataset: str | DataSource | type[DataSource], kind: str | None = None
) -> list[str]:
    """The metrics a study runs on ``dataset`` (a registered name, a class or an instance) when it
    names none.

    A data set that declares ``default_metrics`` gets exactly those. Otherwise they follow from
    what it declares: reconstruction; sample-quality when it has an ``evaluation_classifier``;
    mode-coverage when it has ``known_modes`` or is vector data; latent-divergence. ``kind``
    overrides the data set's own ``kind`` (for data sets registered as factories, whose class is
    not known before they are created).
    """
    source: Any = REGISTRY.load("dataset", dataset) if isinstance(dataset, str) else dataset
    declared = getattr(source, "default_metrics", None)
    if declared is not None:
        return list(declared)
    kind = kind if kind is not None else getattr(source, "kind", "image")
    if kind not in ("image", "vector"):
        raise ValueError(f"data kind must be 'image' or 'vector', got {kind!r}")
    names = ["reconstruction"]
    if getattr(source, "evaluation_classifier", None) is not None:
        names.append("sample-quality")
    if getattr(source, "known_modes", None) is not None or kind == "vector":
        names.append("mode-coverage")
    names.append("latent-divergence")
    return names


def latent_divergences(
    prior: Prior, run_divergence: Component | None = None
) -> tuple[dict[str, Divergence], dict[str, str]]:
    """Registered divergences that can serve ``prior``; why the others can't.

    ``run_divergence`` (a run's ``divergence`` section) is built with its own options, so that a
    run trained with, say, k = 5 is scored with k = 5; every other divergence has its defaults.
    """
    usable: dict[str, Divergence] = {}
    unusable: dict[str, str] = {}
    probe = prior.sample(16, torch.Generator().manual_seed(0), dtype=torch.float64)
    names = set(REGISTRY.available("divergence"))
    if run_divergence is not None:
        names.add(run_divergence.name)
    for name in sorted(names):
        options = (
            run_divergence.options
            if run_divergence is not None and name == run_divergence.name
            else {}
        )
        try:
            divergence = create("divergence", name, **options)
            divergence.validate(probe, prior)
        except (RegistryError, ComponentInputError, ValueError) as exc:
            unusable[name] = str(exc)
            continue
        usable[name] = divergence
    return usable, unusable


def evaluate(
    run_dir: str | Path,
    metrics: list[Component],
    seed: int = 0,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    batchnorm: Literal["real-data", "running"] = "real-data",
) -> dict[str, Any]:
    """Run ``metrics`` on the newest checkpoint of ``run_dir``; returns scores and protocols.

    ``batchnorm = "real-data"`` evaluates the networks with the batch-norm statistics estimated
    on real data that the checkpoint stores (:func:`agekit.model.load_trained`, the same ones
    ``agekit sample`` and :mod:`agekit.evaluation.inference` use: the encoder's from real training
    images, whereas training leaves them mostly from generated ones; the generator's for prior
    samples and for real codes, loaded per metric by its ``generator_inputs``). They do not depend
    on ``seed``, which seeds the metrics' sampling only. ``"running"`` keeps the statistics
    training left. Metrics that run the networks in eval mode use them; the choice is recorded
    under ``"batchnorm"``.

    Each metric's entry under ``"metrics"`` is its :meth:`MetricResult.to_record`: the values,
    the details and ``"protocol"`` in one flat object, the shape evaluate.json and a study's
    eval.json store.
    """
    if batchnorm not in ("real-data", "running"):
        raise ValueError(f"batchnorm must be 'real-data' or 'running', got {batchnorm!r}")
    model, state = load_trained(
        run_dir, device, batchnorm="evaluation" if batchnorm == "real-data" else "running"
    )
    batchnorm_protocol = _batchnorm_protocol(model, batchnorm)
    divergences, unusable = latent_divergences(model.prior, model.config.divergence)
    context = EvaluationContext(
        encoder=model.pair.encoder,
        generator=model.pair.generator,
        prior=model.prior,
        data=model.data,
        dataset_name=model.config.data.name,
        device=next(model.pair.generator.parameters()).device,
        seed=seed,
        cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        divergences=divergences,
        run_divergence=model.config.divergence.name,
        run_dir=None if model.checkpoint is None else RunFolder.of(model.checkpoint).root,
    )
    results: dict[str, Any] = {}
    for spec in metrics:
        metric = create("metric", spec.name, **spec.options)
        model.generator_for(metric.generator_inputs)
        torch.manual_seed(seed)
        results[spec.name] = score(spec.name, metric, context).to_record()
    return {
        "checkpoint": str(model.checkpoint),
        "step": int(state["step"]),
        "seed": seed,
        "metrics": results,
        "batchnorm": batchnorm_protocol,
        "divergences_not_applicable": unusable,
        # the metrics' "test" split is a validation split held out of train when this says so
        "heldout_split": model.config.data.heldout,
        PROVENANCE_KEY: provenance(),
    }


def score(name: str, metric: Metric, context: EvaluationContext) -> MetricResult:
    """``metric(context)`` for the metric registered as ``name``, checked against the contract.

    Anything but a :class:`MetricResult`, a plain dict with a ``"protocol"`` key included, is
    refused with a TypeError that names the metric and its class: guessing which keys are
    numbers to compare and which are protocol would put unchecked entries in every report.
    """
    result = metric(context)
    if not isinstance(result, MetricResult):
        cls = type(metric)
        raise TypeError(
            f"metric {name!r} ({cls.__module__}.{cls.__qualname__}) returned a "
            f"{type(result).__name__}, not an agekit.components.MetricResult; return "
            "MetricResult(values={...}, protocol={...}) (docs/plugins.md, 'Metric')"
        )
    return result


def _batchnorm_protocol(model: Model, batchnorm: str) -> dict[str, Any]:
    """Which batch-norm statistics the networks were evaluated with, for the record."""
    if model.statistics is not None:
        return dict(model.statistics.protocol)
    if batchnorm == "running":
        return {"batchnorm": "running statistics from training"}
    return {"batchnorm": CONDITIONAL_PROTOCOL}


def default_cache_dir() -> Path:
    """Where evaluation classifiers are cached: $AGEKIT_CACHE or ~/.cache/agekit."""
    return Path(os.environ.get("AGEKIT_CACHE", Path.home() / ".cache" / "agekit"))
