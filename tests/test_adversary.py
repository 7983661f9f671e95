"""The adaptive adversary (``game.adaptive_adversary``): the cAGE branch's update, a threshold in
the configured divergence's units, and the refusal of a threshold exceeded at the prior."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from agekit.config import (
    ConfigError,
    ExperimentConfig,
    parse_config,
    reference_adversary_threshold,
)
from agekit.games.adversary import check_adaptive_adversary
from agekit.games.age import AdaptiveAdversaryWeight
from agekit.registry import create
from agekit.resolve import Resolver

ROOT = Path(__file__).resolve().parents[1]


def test_update_adds_the_increase_every_iteration_then_subtracts_the_decrease() -> None:
    # The branch: w += 0.001 r; then, above the threshold, w -= 0.02 r and w = max(0, w).
    weight = AdaptiveAdversaryWeight(0.001, 0.02, threshold=0.5, initial=1.0)
    steps = [  # (kl_real, kl_fake, lr / start lr) -> weight, by hand
        ((0.1, 0.1, 1.0), 1.001),
        ((0.6, 0.1, 1.0), 1.001 + 0.001 - 0.02),
        ((0.1, 0.7, 0.5), 0.982 + 0.0005 - 0.01),
        ((0.1, 0.1, 0.5), 0.9725 + 0.0005),
    ]
    for (kl_real, kl_fake, ratio), expected in steps:
        assert weight.update(kl_real, kl_fake, ratio) == pytest.approx(expected, abs=1e-12)
    # The increase comes before the floor: 0.0195 + 0.001 - 0.02 stays above 0.
    near_zero = AdaptiveAdversaryWeight(0.001, 0.02, threshold=0.5, initial=0.0195)
    assert near_zero.update(0.6, 0.0, 1.0) == pytest.approx(0.0005, abs=1e-12)
    assert near_zero.update(0.6, 0.0, 1.0) == 0.0  # floored at 0
    capped = AdaptiveAdversaryWeight(0.001, 0.02, threshold=0.5, initial=1.0, maximum=1.0005)
    assert capped.update(0.1, 0.1, 1.0) == pytest.approx(1.0005)
    assert capped.update(0.6, 0.1, 1.0) == pytest.approx(1.0005 - 0.02)


def test_the_gaussian_kl_threshold_is_the_branchs_translated() -> None:
    # M = 16: 0.05 x (log 16 - 1/2 + 1/512) / 2, the branch's 1.05 x ideal on gaussian-kl's scale.
    assert reference_adversary_threshold(16) == pytest.approx(0.05 * 2.274541 / 2, rel=1e-6)
    assert reference_adversary_threshold(128) == pytest.approx(0.1088, abs=1e-4)
    weight = AdaptiveAdversaryWeight(0.001, 0.02, threshold=0.06, initial=1.0)
    for _ in range(500):  # below the threshold: grows without a cap
        weight.update(0.01, 0.05, lr_ratio=1.0)
    assert weight.weight == pytest.approx(1.5)
    for _ in range(200):
        weight.update(0.2, 0.0, lr_ratio=1.0)
    assert weight.weight == 0.0  # floored at 0


def _validated(raw: dict[str, Any], source: str = "configuration") -> Any:
    """A configuration as training and study validation accept it: parsed, then its adaptive
    adversary's threshold checked against the divergence at the prior."""
    config = parse_config(raw, source)
    check_adaptive_adversary(config, source)
    return config


def test_the_default_threshold_needs_the_sphere() -> None:
    raw: dict[str, Any] = {"prior": {"name": "gaussian", "dim": 4}, "game": {}}
    raw["game"]["adaptive_adversary"] = {}
    with pytest.raises(ConfigError, match=r"adaptive_adversary\.threshold"):
        parse_config(raw)
    raw["game"] = {"adaptive_adversary": {"threshold": 0.1}}
    assert parse_config(raw).game.adaptive_adversary.threshold == 0.1  # type: ignore[union-attr]


def _reference(recipe: str, tmp_path: Path, **adaptive: float) -> dict[str, Any]:
    return {
        "recipe": recipe,
        "data": {"options": {"root": str(tmp_path)}},
        "game": {"adaptive_adversary": adaptive},
    }


def build_adversary(config: ExperimentConfig) -> AdaptiveAdversaryWeight:
    """The adaptive adversary the age game resolved from ``config`` plays with."""
    settings = Resolver().component(config, "game").adaptive_adversary
    return AdaptiveAdversaryWeight(**settings)


@pytest.mark.parametrize(
    "recipe", ["reference-celeba", "reference-cifar10", "reference-tiny-imagenet"]
)
def test_a_reference_recipe_keeps_its_weight_at_the_prior(recipe: str, tmp_path: Path) -> None:
    config = parse_config(_reference(recipe, tmp_path))
    adversary = build_adversary(config)
    assert adversary is not None
    dim = config.prior.dim
    prior = create("prior", config.prior.name, dim=dim)
    divergence = create("divergence", config.divergence.name, **config.divergence.options)
    generator = torch.Generator().manual_seed(0)
    batch = config.data.batch_size
    for _ in range(50):
        kl_real, kl_fake = (
            float(divergence(prior.sample(batch, generator), prior)) for _ in range(2)
        )
        adversary.update(kl_real, kl_fake, lr_ratio=1.0)
    # Codes distributed like the prior never cross the threshold: the weight only grows.
    assert adversary.weight == pytest.approx(1.0 + 50 * 0.001)
    # The branch's threshold: 1.05 x get_ideal_KL(nz), in the reference formula's own units.
    assert adversary.threshold == pytest.approx(1.05 * (math.log(dim) - 0.5 + 0.5 / dim**2))


def test_the_summed_kl_gets_the_threshold_in_its_units() -> None:
    raw: dict[str, Any] = {
        "prior": {"name": "sphere", "dim": 16},
        "divergence": {"name": "kozachenko-leonenko", "options": {"per_dimension": False}},
        "game": {"adaptive_adversary": {}},
    }
    adversary = build_adversary(parse_config(raw))
    assert adversary is not None
    assert adversary.threshold == pytest.approx(16 * reference_adversary_threshold(16))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        # The reference formula reads 3.69 at the prior (M = 64, B = 64).
        ({"recipe": "reference-celeba", "game": {"adaptive_adversary": {"threshold": 3.0}}}, "3"),
        # gaussian-kl's batch bias, about 1/B per dimension, exceeds the default 0.057 at B = 16.
        (
            {
                "prior": {"dim": 16},
                "data": {"batch_size": 16},
                "game": {"adaptive_adversary": {}},
            },
            "the default for this divergence, 0.05686,",
        ),
        # The summed kNN KL spreads by about 0.1 nats at the prior (M = 16, B = 64).
        (
            {
                "prior": {"dim": 16},
                "divergence": {"name": "kozachenko-leonenko", "options": {"per_dimension": False}},
                "game": {"adaptive_adversary": {"threshold": 0.1}},
            },
            "0.1",
        ),
    ],
    ids=["reference-formula", "small-batch-default", "summed-knn"],
)
def test_a_threshold_exceeded_at_the_prior_is_refused(
    raw: dict[str, Any], shown: str, tmp_path: Path
) -> None:
    if "recipe" in raw:
        raw = {**raw, "data": {"options": {"root": str(tmp_path)}}}
    with pytest.raises(ConfigError) as caught:
        _validated(raw, "run.toml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"run.toml: game.adaptive_adversary.threshold: {shown} is exceeded at the prior"
    )
    expected = re.search(r"expected a threshold of at least ([-+.e\d]+) \(", message)
    assert expected is not None, message
    # The level the message asks for is accepted.
    raw = {**raw, "game": {"adaptive_adversary": {"threshold": float(expected.group(1))}}}
    assert _validated(raw).game.adaptive_adversary is not None


def test_a_threshold_above_the_prior_level_is_accepted(tmp_path: Path) -> None:
    config = _validated(_reference("reference-celeba", tmp_path, threshold=3.75))
    assert config.game.adaptive_adversary is not None
    assert config.game.adaptive_adversary.threshold == 3.75
    # The weight never falls when it gains at least what it loses, whatever the threshold.
    raw = _reference("reference-celeba", tmp_path, threshold=0.1, increase=0.02, decrease=0.02)
    assert _validated(raw).game.adaptive_adversary is not None


def test_the_docs_state_where_the_controller_comes_from() -> None:
    method = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    assert "## The adaptive adversary" in method
    section = method.split("## The adaptive adversary", 1)[1].split("\n## ", 1)[0]
    assert "`cAGE`" in section
    assert "058cdf90b9570d692fce52c30b089c1ecf4d8961" in section
    assert "never merged" in section
    assert "not in the code the reference README runs" in section


def test_a_saved_configuration_with_a_refused_threshold_still_loads(tmp_path: Path) -> None:
    # A run trained before a threshold was refused keeps its checkpoint usable: only training
    # and study validation check it.
    from agekit.model import build_model

    raw = {
        "prior": {"dim": 16},
        "data": {"name": "ring8", "batch_size": 16},
        "backbone": {"name": "mlp"},
        "game": {"adaptive_adversary": {}},
    }
    config = parse_config(raw, "saved")
    with pytest.raises(ConfigError, match="exceeded at the prior"):
        build_model(config, torch.device("cpu"))
    assert build_model(config, torch.device("cpu"), check_adversary=False).game is not None
