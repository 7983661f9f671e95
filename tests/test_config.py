"""Configuration files: every shipped one validates; every bad one fails early and precisely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agekit.cli import main
from agekit.config import (
    ConfigError,
    deep_merge,
    load_config,
    load_toml,
    loads_toml,
    parse_config,
    parse_overrides,
    set_dotted,
)
from agekit.studies.spec import load_study, plan

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    config = load_config(path)
    assert config.train.steps or config.train.epochs


def _plan_shipped(spec: Any, source: Path, out: Path, profile: str | None = None) -> list[Any]:
    """plan(), checking values; for runs of local data sets (CelebA, CIFAR-10, Stanford Cars, ...)
    absent from this machine, the configurations only (their files cannot be checked)."""
    try:
        return plan(spec, str(source), out, profile=profile)
    except ConfigError as exc:
        if "agekit never downloads" not in str(exc):
            raise
        return plan(spec, str(source), out, profile=profile, check=False)


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_studies_plan(path: Path, tmp_path: Path) -> None:
    spec, source = load_study(path)
    assert _plan_shipped(spec, source, tmp_path)
    for name in spec.profiles:
        assert _plan_shipped(spec, source, tmp_path, profile=name)


BASE = 'name = "x"\n[data]\nname = "ring8"\n[backbone]\nname = "mlp"\n[train]\nsteps = 5\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE + "[optim]\nlrr = 0.1\n", r"optim\.lrr: unknown key"),
        (BASE + "[optim]\nlr = -1\n", r"optim\.lr: Input should be greater than 0"),
        (BASE.replace('name = "mlp"', 'name = "mpl"'), r"backbone: no backbone named 'mpl'.*'mlp'"),
        (
            BASE + '[divergence]\nname = "gaussian-kl"\noptions = { k = 3 }\n',
            r"divergence: divergence 'gaussian-kl' does not accept option\(s\) 'k'",
        ),
        (BASE + "[game]\ngen_steps_per_encoder_step = 0\n", r"game\.gen_steps_per_encoder_step"),
        (BASE.replace("steps = 5", 'device = "cpu"'), r"set a budget"),
        (BASE + 'recipe = "nope"\n', r"recipe"),
        ("name = \n", r"not valid TOML"),
        (BASE + '[prior]\nname = "sphere"\ndim = "big"\n', r"prior\.dim"),
    ],
)
def test_bad_configs_name_file_key_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_unknown_recipe_lists_recipes() -> None:
    with pytest.raises(ConfigError, match="recipes: paper, reference-celeba"):
        parse_config({"recipe": "nope"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config("/nonexistent/agekit.toml")


def test_cli_reports_config_errors_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BASE + "[optim]\nlrr = 0.1\n")
    assert main(["train", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr: unknown key" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_reference_recipe_reproduces_the_reference_code_settings() -> None:
    config = parse_config({"recipe": "reference-cifar10", "data": {"options": {"root": "x"}}})
    assert config.prior.dim == 128 and config.data.batch_size == 64
    assert config.game.latent_loss.name == "cosine"
    # The reference latent loss is 2 - mean(cos)/nz: match_z 1000 is 1000/nz on agekit's scale.
    assert config.game.latent_weight == pytest.approx(1000 / 128)
    assert config.divergence.options == {"reference_code_variance": True}
    assert config.optim.lr_drop_every == 40 and config.train.epochs == 150


def test_file_keys_override_the_recipe() -> None:
    config = parse_config({"recipe": "paper", "game": {"latent_weight": 500.0}})
    assert config.game.latent_weight == 500.0
    assert config.game.data_weight == 5.0  # the paper's mu = 10 on agekit's KL scale


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../sibling", "runs/../../up", "C:\\\\runs"])
def test_a_run_name_cannot_escape_out_dir(name: str) -> None:
    with pytest.raises(ConfigError, match=r"name: .*relative folder name inside out_dir"):
        parse_config({"name": name})
    assert parse_config({"name": "group/run"}).run_dir() == Path("runs/group/run")


# one TOML loader, one dotted setter ---------------------------------------------------------------


def test_load_toml_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a folder; expected a configuration file"):
        load_config(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("a = [")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_toml(bad, "study file")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary\.toml: not a text file"):
        load_toml(binary)
    assert loads_toml("a = 1\n[b]\nc = 'x'") == {"a": 1, "b": {"c": "x"}}


def test_set_dotted_creates_tables_and_refuses_keys_below_values() -> None:
    tree: dict[str, Any] = {"train": {"steps": 5}}
    set_dotted(tree, "data.options.size", 3)
    set_dotted(tree, "train.epochs", 2)
    assert tree == {"train": {"steps": 5, "epochs": 2}, "data": {"options": {"size": 3}}}
    with pytest.raises(ConfigError, match=r"train\.steps is a value \(5\), not a table"):
        set_dotted(tree, "train.steps.x", 1)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["train=5"], r"--set train=5: train is a section \(steps, .*e\.g\. train\.steps="),
        (["game.data_loss=l2"], r"game\.data_loss is a section \(name, options\)"),
        (["train.steps.x=1"], r"train\.steps is a value, not a section"),
        (["train.steps"], r"--set expects KEY=VALUE"),
        (["a..b=1"], r"not a dotted key"),
    ],
)
def test_overrides_of_the_wrong_shape_are_config_errors(pairs: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_overrides(pairs)


def test_overrides_parse_toml_values_and_bare_words() -> None:
    merged = parse_overrides(["train.steps=5", "train.device=cuda:1", "data.options.flag=true"])
    assert merged["train"] == {"steps": 5, "device": "cuda:1"}
    assert merged["data"] == {"options": {"flag": True}}
    config = parse_config(deep_merge(loads_toml(BASE), parse_overrides(["train.steps=7"])))
    assert config.train.steps == 7


def test_study_axes_use_the_same_setter() -> None:
    from agekit.studies import builder

    assert builder.set_dotted is set_dotted
