"""Arms (an axis value's own keys and search space), many-to-one comparisons and a profile's
metrics: planned, validated and summarised."""

from __future__ import annotations

from pathlib import Path

import pytest

from agekit.config import ConfigError
from agekit.datasets.validation import hold_out_validation
from agekit.registry import create
from agekit.studies.spec import load_study, plan
from agekit.studies.statistics import summarise

STUDY = """
name = "arms"
seeds = [0, 1]
compare_to = { "game.name" = "age" }

[base]
data = { name = "ring8", batch_size = 64, options = { size = 1024, test_size = 256 } }
prior = { name = "gaussian", dim = 3 }
backbone = { name = "mlp", options = { hidden = 16, depth = 2 } }
train = { steps = 12, checkpoint_every = 6, image_every = 12, log_every = 3, device = "cpu" }

[[settings]]
name = "ring8"
metrics = ["reconstruction"]
[settings.tuning]
space = { "optim.lr" = { low = 1e-4, high = 1e-3, log = true } }
trials = 2
metric = "reconstruction.recon_mse"
goal = "min"
seeds = [100]

[axes]
"game.name" = ["age", "vae"]

[arms."game.name".age]
set = { "prior.name" = "sphere", "game.latent_weight" = 50.0 }

[arms."game.name".vae]
settings.ring8 = { "game.options.beta" = 0.5 }
tuning.ring8 = { space = { "game.options.beta" = { low = 0.1, high = 2.0 } } }

[profiles.short]
metrics.ring8 = ["reconstruction", { name = "mode-coverage", options = { n_samples = 300 } }]
"""


def _write(tmp_path: Path, text: str = STUDY) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_an_arm_sets_its_keys_and_searches_its_own_space(tmp_path: Path) -> None:
    spec, source = load_study(_write(tmp_path))
    runs = plan(spec, str(source), tmp_path / "out")
    age = [r for r in runs if r.axis_values == (("game.name", "age"),)]
    vae = [r for r in runs if r.axis_values == (("game.name", "vae"),)]
    assert {r.config.prior.name for r in age} == {"sphere"}
    assert {r.config.game.latent_weight for r in age} == {50.0}
    assert {r.config.prior.name for r in vae} == {"gaussian"}
    # the arm's own space: the vae's trials vary its option, the age cell's the learning rate
    age_trials = [dict(r.grid_values) for r in age if r.phase == "tune"]
    vae_trials = [dict(r.grid_values) for r in vae if r.phase == "tune"]
    assert age_trials and all(set(t) == {"optim.lr"} for t in age_trials)
    assert vae_trials and all(set(t) == {"game.options.beta"} for t in vae_trials)
    assert {r.config.game.options["beta"] for r in vae if r.phase == "tune"} == {
        t["game.options.beta"] for t in vae_trials
    }
    # the same budget for both arms
    assert len(age_trials) == len(vae_trials) == 2


def test_a_profile_replaces_a_settings_metrics(tmp_path: Path) -> None:
    spec, source = load_study(_write(tmp_path))
    runs = plan(spec, str(source), tmp_path / "out", profile="short")
    assert [m.name for m in runs[0].metrics] == ["reconstruction", "mode-coverage"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('[arms."game.name".vae]', '[arms."game.name".aae]'), r"\['aae'\] are not values"),
        (('[arms."game.name".age]', '[arms."prior.name".age]'), "are not axes"),
        (
            ('compare_to = { "game.name" = "age" }', 'compare_to = { "game.name" = "ali" }'),
            "not a value",
        ),
        (("settings.ring8 = {", "settings.ring9 = {"), r"unknown settings \['ring9'\]"),
        (("low = 0.1, high = 2.0", "low = 2.0, high = 0.1"), "low < high"),
        (("metrics.ring8 =", "metrics.ring9 ="), r"profiles.short.metrics: unknown \['ring9'\]"),
    ],
)
def test_arms_and_comparisons_are_checked_against_the_axes(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    path = _write(tmp_path, STUDY.replace(*edit))
    with pytest.raises(ConfigError, match=message):
        spec, source = load_study(path)
        plan(spec, str(source), tmp_path / "out", profile="short", check=False)


def _records() -> list[dict[str, object]]:
    # three games on two data sizes; the reference is age
    records = []
    for size in ("small", "large"):
        for game, offset in (("age", 0.0), ("vae", 1.0), ("aae", 2.0)):
            for seed in range(3):
                records.append(
                    {
                        "setting": "s",
                        "cell": f"s__game={game}__size={size}",
                        "train_seed": seed,
                        "axes": {"game.name": game, "data.size": size},
                        "metrics": {"q": {"fd": offset + 0.1 * seed * (1 + offset)}},
                    }
                )
    return records


def test_compare_to_keeps_each_cells_comparison_with_its_reference_only() -> None:
    everything = summarise(_records(), {"q.fd": "lower"}, {"s": "q.fd"})
    # 6 cells: every pair
    assert len(everything["comparisons"]) == 15
    summary = summarise(_records(), {"q.fd": "lower"}, {"s": "q.fd"}, {"game.name": "age"})
    pairs = {(c["a"], c["b"]) for c in summary["comparisons"]}
    assert pairs == {
        (f"s__game={game}__size={size}", f"s__game=age__size={size}")
        for game in ("vae", "aae")
        for size in ("small", "large")
    }
    # the smaller family is Holm's
    assert {c["family_size"] for c in summary["comparisons"]} == {4}
    vae_small = next(c for c in summary["comparisons"] if c["a"] == "s__game=vae__size=small")
    assert vae_small["mean_diff"] == pytest.approx(1.0 + 0.1)  # mean of 1.0 + 0.1 * seed


def test_an_arm_may_replace_its_search_but_not_its_budget(tmp_path: Path) -> None:
    text = STUDY.replace(
        'tuning.ring8 = { space = { "game.options.beta" = { low = 0.1, high = 2.0 } } }',
        'tuning.ring8 = { trials = 5, seeds = [0], space = { "game.options.beta" = '
        "{ low = 0.1, high = 2.0 } } }",
    )
    with pytest.raises(
        ConfigError, match=r"an arm replaces its search .* not \['seeds', 'trials'\]"
    ):
        load_study(_write(tmp_path, text))


def test_a_reference_left_out_as_not_installed_is_an_error(tmp_path: Path) -> None:
    text = STUDY.replace("seeds = [0, 1]\n", 'seeds = [0, 1]\noptional = ["game.name"]\n', 1)
    text = text.replace('"game.name" = ["age", "vae"]', '"game.name" = ["age", "vae", "nowhere"]')
    text = text.replace(
        'compare_to = { "game.name" = "age" }', 'compare_to = { "game.name" = "nowhere" }'
    )
    spec, source = load_study(_write(tmp_path, text))
    with pytest.raises(
        ConfigError, match=r"compare_to 'game\.name' = 'nowhere': that value is not"
    ):
        plan(spec, str(source), tmp_path / "out", check=False)


def test_compare_to_names_a_value_as_the_axis_holds_it_or_by_its_label() -> None:
    records = [
        {
            "setting": "s",
            "cell": f"s__weight={weight}",
            "train_seed": seed,
            "axes": {"game.latent_weight": weight},
            "metrics": {"q": {"fd": weight + seed}},
        }
        for weight in (0.5, 1.0, 2.0)
        for seed in range(3)
    ]
    for reference in (0.5, "0.5"):
        summary = summarise(
            records, {"q.fd": "lower"}, {"s": "q.fd"}, {"game.latent_weight": reference}
        )
        assert {(c["a"], c["b"]) for c in summary["comparisons"]} == {
            ("s__weight=1.0", "s__weight=0.5"),
            ("s__weight=2.0", "s__weight=0.5"),
        }


def test_a_metric_that_cannot_score_the_data_set_is_refused_before_training(
    tmp_path: Path,
) -> None:
    text = STUDY.replace(
        'metrics = ["reconstruction"]', 'metrics = ["reconstruction", "sample-quality"]'
    )
    spec, source = load_study(_write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"metrics \(sample-quality\): .* Ring8 declares none"):
        plan(spec, str(source), tmp_path / "out")


def test_mode_coverage_refuses_a_data_set_without_modes_and_accepts_the_mixtures() -> None:
    metric = create("metric", "mode-coverage")
    reason = metric.refuses(create("dataset", "mnist5k"))
    assert reason is not None and "mode coverage is not defined for data set MNIST5k" in reason
    ring8 = create("dataset", "ring8")
    assert metric.refuses(ring8) is None
    assert metric.refuses(hold_out_validation(ring8, 0.2)) is None  # a tuning run's data
