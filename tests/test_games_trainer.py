"""Every built-in game through the whole path a user takes: its configuration validates, trains
with the one trainer, checkpoints, and its saved configuration loads for evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from agekit.config import Component, config_to_dict, parse_config
from agekit.evaluation.scoring import evaluate
from agekit.games.base import check_networks
from agekit.registry import REGISTRY
from agekit.resolve import Resolver
from agekit.training.trainer import Trainer

BUILT_IN_GAMES = ["age", "vae", "aae", "ali", "introvae", "soft-introvae"]


def _raw(game: str, tmp_path: Path) -> dict:
    return {
        "name": game,
        "out_dir": str(tmp_path),
        "data": {"name": "ring8", "batch_size": 64},
        "prior": {"name": "gaussian", "dim": 2},
        "backbone": {"name": "mlp", "options": {"hidden": 32, "depth": 2}},
        "game": {"name": game},
        "train": {"steps": 6, "log_every": 3, "checkpoint_every": 6, "image_every": 1000},
    }


def test_the_built_in_games_are_registered() -> None:
    assert set(BUILT_IN_GAMES) <= set(REGISTRY.available("game"))


@pytest.mark.parametrize("game", BUILT_IN_GAMES)
def test_a_saved_configuration_of_every_game_loads_again(game: str, tmp_path: Path) -> None:
    # A saved configuration lists every default of [game], the age game's keys included.
    config = parse_config(_raw(game, tmp_path))
    assert parse_config(config_to_dict(config)).game.game_name == game


@pytest.mark.parametrize("game", BUILT_IN_GAMES)
def test_every_game_trains_resumes_and_evaluates(game: str, tmp_path: Path) -> None:
    config = parse_config(_raw(game, tmp_path))
    trainer = Trainer(config)
    result = trainer.fit()
    assert result.status == "complete" and result.step == 6
    assert all(math.isfinite(value) for value in result.last.values())
    longer = parse_config(
        {**_raw(game, tmp_path), "train": {**_raw(game, tmp_path)["train"], "steps": 8}}
    )
    resumed = Trainer(longer)
    assert resumed.fit(resume=True).step == 8
    scores = evaluate(trainer.run_dir, [Component(name="reconstruction")], seed=0, device="cpu")
    assert math.isfinite(scores["metrics"]["reconstruction"]["recon_mse"])


def test_a_study_check_builds_each_games_own_networks(tmp_path: Path) -> None:
    # One resolver serves a whole study: a game's networks must not be taken from another's.
    resolver = Resolver()
    built = []
    original = Resolver.check
    for game in ("age", "aae"):
        config = parse_config(_raw(game, tmp_path))
        original(resolver, config, game)
        built.append(sum(1 for key in resolver._built if key.startswith('["networks"')))
    assert built == [1, 2]


def test_a_games_networks_and_optimisers_must_fit() -> None:
    nets = {"encoder": torch.nn.Linear(1, 1), "generator": torch.nn.Linear(1, 1)}
    check_networks("Fine", nets, {"encoder": ("encoder",), "generator": ("generator",)})
    with pytest.raises(ValueError, match="game Twice steps networks with two optimisers: encoder"):
        check_networks("Twice", nets, {"a": ("encoder",), "b": ("encoder", "generator")})
    with pytest.raises(ValueError, match="over networks it does not build: critic"):
        check_networks("Missing", nets, {"critic": ("critic",)})
    with pytest.raises(ValueError, match="checkpoint's own keys: step"):
        check_networks("Clash", {**nets, "step": torch.nn.Linear(1, 1)}, {})


def test_the_regression_game_plays_wrapped_networks(tmp_path: Path) -> None:
    # Under torchrun or compile the trainer hands a game its wrapped networks.
    config = parse_config({**_raw("regression", tmp_path), "game": {"name": "regression"}})
    play = Trainer(config).model.game
    wrapper = torch.nn.Sequential()
    rebound = play.with_networks(wrapper, wrapper, trained_generator=wrapper)  # type: ignore[attr-defined]
    assert rebound.generator is wrapper
