"""Evaluate a trained run with registered metrics; every score is stored with its protocol."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch

from agekit import checkpoint as ckpt
from agekit.atomic import write_json_atomic as write_json_atomic  # re-exported for the runner
from agekit.batchnorm import reestimate_batchnorm
from agekit.components import (
    ComponentInputError,
    DataSource,
    Divergence,
    EvaluationContext,
    Prior,
)
from agekit.config import Component
from agekit.model import load_trained
from agekit.registry import REGISTRY, RegistryError, create


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


def latent_divergences(prior: Prior) -> tuple[dict[str, Divergence], dict[str, str]]:
    """Registered divergences (default options) that can serve ``prior``; why the others can't."""
    usable: dict[str, Divergence] = {}
    unusable: dict[str, str] = {}
    probe = prior.sample(16, torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in REGISTRY.available("divergence"):
        try:
            divergence = create("divergence", name)
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

    ``batchnorm = "real-data"`` first re-estimates the networks' batch-norm statistics
    (:mod:`agekit.batchnorm`: the encoder's from real training images, whereas training leaves them
    mostly from generated ones; the generator's for prior samples and for real codes, loaded per
    metric by its ``generator_inputs``); ``"running"`` keeps the statistics training left. Metrics
    that run the networks in eval mode use them; the choice is recorded under ``"batchnorm"``.
    """
    path = ckpt.resolve(run_dir)
    model, state = load_trained(path, device)
    generator_statistics = None
    if batchnorm == "real-data":
        batchnorm_protocol, generator_statistics = reestimate_batchnorm(
            model.pair.encoder, model.pair.generator, model.prior, model.data, seed=seed
        )
    elif batchnorm == "running":
        batchnorm_protocol = {"batchnorm": "running statistics from training"}
    else:
        raise ValueError(f"batchnorm must be 'real-data' or 'running', got {batchnorm!r}")
    divergences, unusable = latent_divergences(model.prior)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    context = EvaluationContext(
        encoder=model.pair.encoder,
        generator=model.pair.generator,
        prior=model.prior,
        data=model.data,
        dataset_name=model.config.data.name,
        device=next(model.pair.generator.parameters()).device,
        seed=seed,
        cache_dir=cache,
        divergences=divergences,
    )
    results: dict[str, Any] = {}
    for spec in metrics:
        metric = create("metric", spec.name, **spec.options)
        if generator_statistics is not None:
            generator_statistics.load(model.pair.generator, metric.generator_inputs)
        torch.manual_seed(seed)
        results[spec.name] = metric(context)
    return {
        "checkpoint": str(path),
        "step": int(state["step"]),
        "seed": seed,
        "metrics": results,
        "batchnorm": batchnorm_protocol,
        "divergences_not_applicable": unusable,
        # the metrics' "test" split is a validation split held out of train when this says so
        "heldout_split": model.config.data.heldout,
    }


def default_cache_dir() -> Path:
    """Where evaluation classifiers are cached: $AGEKIT_CACHE or ~/.cache/agekit."""
    return Path(os.environ.get("AGEKIT_CACHE", Path.home() / ".cache" / "agekit"))
