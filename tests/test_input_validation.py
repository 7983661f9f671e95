"""Input that cannot mean what was asked is refused before any work, naming its key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from agekit.config import ConfigError, load_config, parse_config

DATA = {"name": "ring8", "batch_size": 8, "options": {"size": 64, "test_size": 16}}


def _refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        parse_config({"data": DATA, **raw})
    return str(error.value)


@pytest.mark.parametrize("text", ["", "# nothing set\n", "[train]\nsteps = 5\n"])
def test_a_file_naming_no_data_set_or_recipe_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bare.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "configs/" in message and "recipe" in message and "paper" in message


def test_a_data_set_or_a_recipe_is_a_starting_point(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[data]\nname = "ring8"\n')
    assert load_config(path).data.name == "ring8"
    path.write_text("")
    assert load_config(path, {"data": {"name": "ring8"}}).data.name == "ring8"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("optim", "lr"),
        ("game", "latent_weight"),
        ("game", "data_weight"),
        ("game", "generator_data_weight"),
        ("game", "encoder_latent_weight"),
    ],
)
def test_infinite_rates_and_weights_are_refused(section: str, key: str) -> None:
    message = _refused({section: {key: math.inf}})
    assert f"{section}.{key}: " in message and "finite" in message


def test_an_infinite_fake_margin_still_turns_the_cap_off() -> None:
    config = parse_config({"data": DATA, "game": {"fake_margin": math.inf}})
    assert config.game.fake_margin == math.inf


def test_k_at_or_above_the_batch_is_refused_naming_both_keys() -> None:
    message = _refused({"divergence": {"name": "kozachenko-leonenko", "options": {"k": 8}}})
    assert "divergence.options.k = 8" in message and "data.batch_size (8)" in message
    parse_config({"data": DATA, "divergence": {"name": "kozachenko-leonenko", "options": {"k": 7}}})


@pytest.mark.parametrize("betas", [[0.5, 1.0], [-0.1, 0.9], [1.5, 0.999]])
def test_betas_outside_zero_to_one_are_refused(betas: list[float]) -> None:
    message = _refused({"optim": {"betas": betas}})
    assert "optim.betas: " in message and "[0, 1)" in message


def test_a_seed_beyond_64_bits_is_refused() -> None:
    assert "train.seed: " in _refused({"train": {"steps": 1, "seed": 2**64}})
    assert parse_config({"data": DATA, "train": {"steps": 1, "seed": 2**64 - 1}}).train.seed


def test_agekit_train_refuses_an_empty_file_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agekit.cli import main

    path = tmp_path / "empty.toml"
    path.write_text("")
    assert main(["train", str(path), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: the configuration file is empty" in err and "configs/" in err
    assert not (tmp_path / "runs").exists()
