"""Studies: planning and validation before work, running, skipping, --only, the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agekit.config import ConfigError, load_config, parse_config
from agekit.studies.headline import headline
from agekit.studies.planned import PlannedRun
from agekit.studies.runner import run_study
from agekit.studies.schema import StudySpec
from agekit.studies.spec import load_study, plan
from agekit.studies.statistics import summarise

STUDY = """
name = "tiny"
question = "Does the divergence matter on a tiny ring?"
seeds = [0, 1]

[base]
data = { name = "ring8", batch_size = 64, options = { size = 1024, test_size = 256 } }
prior = { name = "sphere", dim = 4 }
backbone = { name = "mlp", options = { hidden = 16, depth = 2 } }
train = { steps = 12, checkpoint_every = 6, image_every = 12, log_every = 3, device = "cpu" }

[[settings]]
name = "ring8"
metrics = ["reconstruction", { name = "mode-coverage", options = { n_samples = 300 } }]

[axes]
"divergence.name" = ["gaussian-kl", "kozachenko-leonenko"]

[profiles.longer]
set = { "train.steps" = 24 }
"""


def _write(tmp_path: Path, text: str = STUDY) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_plan_expands_settings_axes_and_seeds(tmp_path: Path) -> None:
    spec, source = load_study(_write(tmp_path))
    runs = plan(spec, str(source), tmp_path / "out")
    assert [r.run_id for r in runs] == [
        "ring8__divergence=gaussian-kl__seed0",
        "ring8__divergence=gaussian-kl__seed1",
        "ring8__divergence=kozachenko-leonenko__seed0",
        "ring8__divergence=kozachenko-leonenko__seed1",
    ]
    assert runs[1].config.train.seed == 1
    assert runs[2].config.divergence.name == "kozachenko-leonenko"
    longer = plan(spec, str(source), tmp_path / "out", profile="longer")
    assert longer[0].config.train.steps == 24


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('"kozachenko-leonenko"]', '"kozachenko-leonenkoo"]'),
            "Did you mean 'kozachenko-leonenko'",
        ),
        (("hidden = 16", "hiddden = 16"), "hiddden"),
        (("question =", "questionn ="), "questionn: unknown key"),
        (('"mode-coverage"', '"mode-covrage"'), "no metric named 'mode-covrage'"),
        (("steps = 12", "steps = -1"), "train.steps"),
    ],
)
def test_every_run_is_validated_before_any_training(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    path = _write(tmp_path, STUDY.replace(*edit))
    with pytest.raises(ConfigError, match=message) as info:
        run_study(path, out=tmp_path / "out")
    assert str(path) in str(info.value)
    assert not (tmp_path / "out" / "runs").exists()  # nothing was trained


def test_unknown_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no profile 'gpu'; profiles: longer"):
        run_study(_write(tmp_path), out=tmp_path / "out", profile="gpu")


def test_run_skip_only_and_report(tmp_path: Path) -> None:
    path = _write(tmp_path)
    out = tmp_path / "out"
    first = "ring8__divergence=gaussian-kl__seed0"
    run_study(path, out=out, only=[first], progress=False)
    evaluation = json.loads((out / "runs" / first / "eval.json").read_text())
    assert evaluation["step"] == 12
    assert set(evaluation["metrics"]) == {"reconstruction", "mode-coverage"}
    assert evaluation["metrics"]["mode-coverage"]["protocol"]
    before = (out / "runs" / first / "eval.json").stat().st_mtime_ns

    run_study(path, out=out, progress=False)  # the finished run is skipped, the rest run
    assert (out / "runs" / first / "eval.json").stat().st_mtime_ns == before
    assert len(list((out / "runs").glob("*/eval.json"))) == 4

    summary = json.loads((out / "summary.json").read_text())
    cell = summary["cells"]["ring8__divergence=gaussian-kl"]
    assert cell["metrics"]["reconstruction.recon_l1"]["n"] == 2
    assert any(c["metric"] == "reconstruction.recon_l1" for c in summary["comparisons"])
    report = (out / "report.md").read_text()
    assert "Does the divergence matter" in report and "paired" in report
    for figure in ("curves_ring8.png", "metrics_ring8.png", "grids_ring8.png"):
        assert (out / "figures" / figure).stat().st_size > 0
    assert (out / "summary.csv").read_text().startswith("setting,cell,metric")


def test_only_rejects_unknown_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no run named nope"):
        run_study(_write(tmp_path), out=tmp_path / "out", only=["nope"])


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    from agekit.training.trainer import Trainer

    path = _write(tmp_path)
    out = tmp_path / "out"
    spec, source = load_study(path)
    run = plan(spec, str(source), out)[0]
    Trainer(run.config, out / "runs" / run.run_id).save_checkpoint()  # as if killed at step 0
    run_study(path, out=out, only=[run.run_id], progress=False)
    record = json.loads((out / "runs" / run.run_id / "eval.json").read_text())
    assert record["resumed"] is True and record["step"] == 12


def test_optional_axis_leaves_out_uninstalled_components(tmp_path: Path) -> None:
    text = STUDY.replace(
        '"divergence.name" = ["gaussian-kl", "kozachenko-leonenko"]',
        '"divergence.name" = ["gaussian-kl", "not-installed-divergence"]',
    ).replace("seeds = [0, 1]", 'seeds = [0, 1]\noptional = ["divergence.name"]')
    spec, source = load_study(_write(tmp_path, text))
    runs = plan(spec, str(source), tmp_path / "out")
    assert {r.config.divergence.name for r in runs} == {"gaussian-kl"}


def test_a_missing_plugin_named_by_a_study_says_what_provides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a provider that is certainly not installed (the example plugins may be)
    from agekit.registry import KNOWN_PROVIDERS

    monkeypatch.setitem(KNOWN_PROVIDERS, ("divergence", "nowhere"), "agekit-nowhere")
    text = STUDY.replace('"kozachenko-leonenko"]', '"nowhere"]')
    with pytest.raises(ConfigError, match=r"agekit-nowhere.*agekit list divergence"):
        run_study(_write(tmp_path, text), out=tmp_path / "out")


def _shipped_and_studied(
    config_name: str, study_name: str, out: Path
) -> tuple[dict[str, Any], StudySpec, list[PlannedRun]]:
    """configs/CONFIG.toml as a dict, and studies/STUDY.toml with its planned runs."""
    root = Path(__file__).resolve().parent.parent
    shipped = load_config(root / "configs" / f"{config_name}.toml").model_dump()
    spec, source = load_study(root / "studies" / f"{study_name}.toml")
    return shipped, spec, plan(spec, str(source), out)


def test_mnist5k_study_trains_the_shipped_configuration_and_the_paper_game_beside_it(
    tmp_path: Path,
) -> None:
    # README quotes studies/mnist5k.toml as the result of configs/mnist5k.toml: same science. Its
    # paper setting is the bare game on the same data, networks and budget, so only the game (and
    # the optimiser the recipe names, which equals the default) may differ.
    shipped, _, runs = _shipped_and_studied("mnist5k", "mnist5k", tmp_path)
    assert {run.setting for run in runs} == {"mnist5k", "paper"}
    for run in runs:
        studied = run.config.model_dump()
        same = ("data", "prior", "divergence", "backbone", "optim")
        for key in (*same, "game") if run.setting == "mnist5k" else same:
            assert studied[key] == shipped[key], (run.setting, key)
        assert studied["train"]["steps"] == shipped["train"]["steps"]
        if run.setting == "paper":
            paper = parse_config({"recipe": "paper"}).game.model_dump()
            assert studied["game"] == paper


def test_the_long_mnist5k_study_is_the_shipped_configuration_at_four_times_its_steps(
    tmp_path: Path,
) -> None:
    # docs/method.md quotes studies/mnist5k_long.toml as what happens when a user raises
    # configs/mnist5k.toml's train.steps: only the step budget and checkpoint cadence may differ.
    shipped, _, runs = _shipped_and_studied("mnist5k", "mnist5k_long", tmp_path)
    assert sorted(run.config.train.seed for run in runs) == [0, 1, 2]
    for run in runs:
        studied = run.config.model_dump()
        for key in ("data", "prior", "divergence", "backbone", "optim", "game"):
            assert studied[key] == shipped[key], key
        assert studied["train"]["steps"] == 4 * shipped["train"]["steps"]
        assert studied["train"]["steps"] % studied["train"]["checkpoint_every"] == 0


@pytest.mark.parametrize(
    ("config_name", "study_name"),
    [("ring8", "ring8"), ("grid25", "grid25_encoder_weight")],
)
def test_the_study_quoted_for_a_shipped_configuration_trains_exactly_it(
    config_name: str, study_name: str, tmp_path: Path
) -> None:
    # README quotes studies/STUDY.toml (for grid25, the cell whose game is the shipped one) as the
    # result of configs/NAME.toml: every key but the run's name, output folder and seed must agree
    # in every seed, or the figures describe another model.
    shipped, spec, planned = _shipped_and_studied(config_name, study_name, tmp_path)
    runs = [run for run in planned if run.config.model_dump()["game"] == shipped["game"]]
    assert sorted(run.config.train.seed for run in runs) == sorted(spec.seeds)
    for run in runs:
        studied = run.config.model_dump()
        for key in shipped:
            if key in ("name", "out_dir", "train"):
                continue
            assert studied[key] == shipped[key], key
        shipped_train = {k: v for k, v in shipped["train"].items() if k != "seed"}
        assert {k: v for k, v in studied["train"].items() if k != "seed"} == shipped_train


BUILT_IN_METRICS = [
    "reconstruction",
    "sample-quality",
    "mode-coverage",
    "latent-divergence",
    "inception",
    "colorization",
]


def test_headline_keys_come_from_the_metric_classes_in_report_order() -> None:
    # The order and directions of the table that the classes' declarations replaced, plus the
    # reconstruction keys (recon_mse ... label_accuracy_real) and sample-quality keys
    # (pixel_precision ... min_class_share) added with them.
    expected = {
        "reconstruction.recon_l1": "lower",
        "reconstruction.mean_image_l1": "reference",
        "reconstruction.recon_mse": "lower",
        "reconstruction.mean_image_mse": "reference",
        "reconstruction.recon_label_accuracy": "higher",
        "reconstruction.label_accuracy_real": "reference",
        "sample-quality.fd_classifier": "lower",
        "sample-quality.kid": "lower",
        "sample-quality.precision": "higher",
        "sample-quality.recall": "higher",
        "sample-quality.density": "higher",
        "sample-quality.coverage": "higher",
        "sample-quality.pixel_precision": "higher",
        "sample-quality.pixel_recall": "higher",
        "sample-quality.speckle_ratio": "lower",
        "sample-quality.class_kl_uniform": "lower",
        "sample-quality.min_class_share": "higher",
        "mode-coverage.modes_captured": "higher",
        "mode-coverage.high_quality_percent": "higher",
        "mode-coverage.reverse_kl": "lower",
        "colorization.diversity": "higher",
        "colorization.ab_recon_l1": "lower",
        "colorization.zero_ab_l1": "reference",
        "colorization.colourfulness": "higher",
        "colorization.real_colourfulness": "reference",
    }
    directions = headline(BUILT_IN_METRICS)
    assert list(directions.items()) == list(expected.items())
    # A study's metric order does not change the report's, and unknown metrics have no keys.
    shuffled = headline(["colorization", "mode-coverage", "not-installed", "reconstruction"])
    assert list(shuffled.items()) == [
        (k, v)
        for k, v in expected.items()
        if k.split(".")[0] in ("reconstruction", "mode-coverage", "colorization")
    ]
    # Without names: every registered metric, built-ins in the same order.
    assert [k for k in headline() if k.split(".")[0] in BUILT_IN_METRICS] == list(expected)


def test_closing_table_fits_80_columns_without_cutting_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from rich.console import Console

    from agekit.studies.report import closing_table

    records = [
        {
            "setting": "mnist5k",
            "cell": f"mnist5k__latent_weight={lam}__generator_data_weight={w}",
            "train_seed": seed,
            "metrics": {
                "reconstruction": {"recon_l1": 0.1 + seed / 100, "recon_mse": 0.12},
                "sample-quality": {"fd_classifier": 30.0 + seed, "speckle_ratio": 2.0},
            },
        }
        for lam in (125.0, 500.0)
        for w in (2.0, 10.0)
        for seed in (0, 1, 2)
    ]
    summary = summarise(records, headline(["reconstruction", "sample-quality"]))
    summary["study"] = "recipe"
    out = io.StringIO()
    monkeypatch.setattr(closing_table, "console", Console(file=out, width=80))
    closing_table.print_table(summary, Path("study/report.md"))
    text = out.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "0.11 [0.0852, 0.135]" in text  # recon_l1 of a cell: mean [t interval], uncut
    assert "more metrics in study/report.md" in text
