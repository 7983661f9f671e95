"""Per-cell tuning on a validation split: the held-out split, the plan, the choice, the runner
and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from test_study_runner import _study

from agekit.config import ConfigError, ExperimentConfig
from agekit.datasets.validation import hold_out_validation
from agekit.model import build_model
from agekit.registry import create
from agekit.studies.runner import run_study
from agekit.studies.spec import load_study, plan
from agekit.studies.tuning import Tuning, choose

TUNED = """
name = "tuned"
seeds = [0, 1]
[[settings]]
name = "ring"
metrics = ["reconstruction"]
[settings.tuning]
grid = { "game.latent_weight" = [1.0, 1000.0] }
metric = "reconstruction.recon_l1"
goal = "min"
seeds = [7]
[axes]
"divergence.name" = ["gaussian-kl", "kozachenko-leonenko"]
"""


# the held-out split ------------------------------------------------------------------------------
def test_validation_split_is_carved_from_train_and_never_shows_the_test_split() -> None:
    source = create("dataset", "mnist5k")
    held = hold_out_validation(source, 0.2)
    train_x, _ = source.tensors("train")
    test_x, _ = source.tensors("test")
    fit_x, _ = held.tensors("train")
    validation_x, validation_labels = held.tensors("test")
    assert len(fit_x) + len(validation_x) == len(train_x)
    assert len(validation_x) == round(0.2 * len(train_x))
    # stratified: the 4,000 train digits hold 400 per class, so 80 of each are held out
    assert validation_labels.bincount().tolist() == [80] * 10

    def rows(x: torch.Tensor) -> set[bytes]:
        return {row.numpy().tobytes() for row in x.flatten(1)}

    validation, fit, test = rows(validation_x), rows(fit_x), rows(test_x)
    assert not validation & fit
    assert not validation & test  # the test split is out of reach
    assert validation <= rows(train_x)
    # one partition for every run: a second wrapper holds out the same images
    assert torch.equal(hold_out_validation(source, 0.2).tensors("test")[0], validation_x)
    # the class's declarations follow the wrapped set (metrics read them from the class)
    assert type(held).evaluation_classifier == type(source).evaluation_classifier
    assert held.split("test")[0][0].shape == source.shape


def test_a_mixture_keeps_its_modes_and_the_config_switches_the_split() -> None:
    config = ExperimentConfig.model_validate(
        {
            "data": {"name": "ring8", "options": {"size": 240, "test_size": 50}},
            "prior": {"name": "sphere", "dim": 3},
            "backbone": {"name": "mlp", "options": {"hidden": 8, "depth": 1}},
            "train": {"device": "cpu", "steps": 1},
        }
    )
    plain = build_model(config, torch.device("cpu")).data
    assert len(plain.split("test")) == 50
    config.data.heldout = "validation"
    config.data.validation_fraction = 0.1
    held = build_model(config, torch.device("cpu")).data
    # stratified by mode: 3 of each mode's 30 points
    assert len(held.split("test")) == 24 and len(held.split("train")) == 216
    assert type(held).known_modes == "mixture" and held.modes.shape == (8, 2)


def test_the_judge_classifier_learns_from_the_full_train_split(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from agekit.components import EvaluationContext
    from agekit.metrics import classifier

    seen: dict[str, Any] = {}

    def fake_load_or_train(source: str, cache_dir: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(classifier, "load_or_train", fake_load_or_train)
    source = create("dataset", "mnist5k")
    context = EvaluationContext(
        encoder=None,
        generator=None,
        prior=None,
        data=hold_out_validation(source, 0.2),
        dataset_name="mnist5k",
        device=torch.device("cpu"),
        seed=0,
        cache_dir=tmp_path,
        divergences={},
    )
    with pytest.raises(RuntimeError, match="stop here"):
        classifier.classifier_for(context)
    # a classifier trained on the smaller train split would be cached under the same key
    assert seen["data"] is source


# the choice --------------------------------------------------------------------------------------
def _record(**scores: float) -> dict[str, Any]:
    metrics: dict[str, dict[str, float]] = {}
    for key, value in scores.items():
        metric, name = key.split("__")
        metrics.setdefault(metric, {})[name] = value
    return {"metrics": metrics}


def test_choose_takes_the_best_mean_within_limits_and_waits_for_every_run() -> None:
    tuning = Tuning(
        grid={"game.latent_weight": [1.0, 2.0, 3.0]},
        metric="q.fd",
        goal="min",
        seeds=[5, 6],
        at_most={"r.mse": 0.5},
    )
    points = {f"p{i}": (("game.latent_weight", float(i)),) for i in (1, 2, 3)}
    records: dict[str, list[dict[str, Any] | None]] = {
        "p1": [_record(q__fd=1.0, r__mse=0.9), _record(q__fd=1.0, r__mse=0.9)],  # best, too blurry
        "p2": [_record(q__fd=4.0, r__mse=0.1), _record(q__fd=2.0, r__mse=0.1)],  # mean 3
        "p3": [_record(q__fd=3.5, r__mse=0.2), _record(q__fd=3.5, r__mse=0.2)],
    }
    choice = choose(tuning, records, points)
    assert choice is not None and choice.within_limits
    assert choice.values == (("game.latent_weight", 2.0),)
    assert choice.table["p1"]["within_limits"] is False and choice.table["p2"]["chosen"]
    # the other goal picks the other end
    maximise = tuning.model_copy(update={"goal": "max", "at_most": {}})
    chosen = choose(maximise, records, points)
    assert chosen is not None and chosen.values == (("game.latent_weight", 3.0),)
    # no point within the limits: the best by the metric, and the choice says so
    strict = tuning.model_copy(update={"at_most": {"r.mse": 0.01}})
    fallback = choose(strict, records, points)
    assert fallback is not None and not fallback.within_limits
    assert fallback.values == (("game.latent_weight", 1.0),)
    # a run not evaluated yet: no choice
    assert choose(tuning, {**records, "p3": [records["p3"][0], None]}, points) is None


# the plan ----------------------------------------------------------------------------------------
def test_plan_adds_validation_tuning_runs_and_holds_the_cells_runs(tmp_path: Path) -> None:
    spec, source = load_study(_study(tmp_path, TUNED))
    runs = plan(spec, str(source), tmp_path / "out", check=False)
    tune = [r for r in runs if r.phase == "tune"]
    final = [r for r in runs if r.phase == "final"]
    assert len(tune) == 2 * 2 * 1 and len(final) == 2 * 2  # estimators x grid x tuning seeds
    assert {r.config.data.heldout for r in tune} == {"validation"}
    assert {r.config.data.heldout for r in final} == {"test"}
    assert {r.seed for r in tune} == {7}
    assert all(r.awaiting_tuning and not r.grid_values for r in final)
    knn = [r for r in tune if r.tunes == "ring__divergence=kozachenko-leonenko"]
    assert sorted(r.config.game.latent_weight for r in knn) == [1.0, 1000.0]
    assert knn[0].run_id.startswith("ring__divergence=kozachenko-leonenko__tune__latent_weight=")


def test_tuning_seeds_must_differ_from_the_study_seeds(tmp_path: Path) -> None:
    spec, source = load_study(_study(tmp_path, TUNED.replace("seeds = [7]", "seeds = [1, 7]")))
    with pytest.raises(ConfigError, match=r"tuning.seeds \[1\] are also the study's seeds"):
        plan(spec, str(source), tmp_path / "out", check=False)


def test_a_tuning_metric_the_setting_does_not_run_is_refused(tmp_path: Path) -> None:
    spec, source = load_study(
        _study(tmp_path, TUNED.replace('"reconstruction.recon_l1"', '"fid.x"'))
    )
    with pytest.raises(ConfigError, match=r"tuning.metric 'fid.x' names a metric the setting"):
        plan(spec, str(source), tmp_path / "out", check=False)


def test_a_bad_tuning_table_names_the_key(tmp_path: Path) -> None:
    path = _study(tmp_path, TUNED.replace('goal = "min"', 'goal = "smallest"'))
    with pytest.raises(ConfigError, match=r"settings\.0\.tuning\.goal"):
        load_study(path)


# the whole study ---------------------------------------------------------------------------------
def test_a_tuned_study_trains_tuning_first_and_reports_the_choice(tmp_path: Path) -> None:
    path = _study(tmp_path, TUNED, steps=6, checkpoint_every=6)
    out = tmp_path / "out"
    result = run_study(path, out=out, jobs=1, progress=False)
    assert not result.failed and len(result.finished) == 8
    evaluations = {
        p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/eval.json")
    }
    finals = {k: v for k, v in evaluations.items() if v["phase"] == "final"}
    for run_id, record in finals.items():
        cell = record["cell"]
        scores = {
            json.dumps(v["grid"]): v["metrics"]["reconstruction"]["recon_l1"]
            for v in evaluations.values()
            if v["tunes"] == cell
        }
        best = min(scores, key=lambda point: scores[point])
        # the cell's runs use the grid point with the best validation score, on the test split
        assert record["grid"] == json.loads(best), run_id
        assert record["config"]["game"]["latent_weight"] == json.loads(best)["game.latent_weight"]
        assert record["config"]["data"]["heldout"] == "test"
    report = (out / "report.md").read_text()
    assert "## Tuning on the validation split" in report
    assert report.count("**yes**") == 2  # one choice per cell
    summary = json.loads((out / "summary.json").read_text())
    assert all("__tune__" not in cell for cell in summary["cells"])  # not results
    assert not any("__tune__" in run for run in summary["planned_runs"])
    # a second call finds everything complete
    again = run_study(path, out=out, jobs=1, progress=False)
    assert again.skipped == 8 and not again.finished


def test_a_cell_whose_tuning_failed_fails_its_runs_and_names_the_tuning_run(
    tmp_path: Path,
) -> None:
    body = TUNED.replace('"divergence.name" = ["gaussian-kl", "kozachenko-leonenko"]', "").replace(
        "[axes]", ""
    )
    path = _study(tmp_path, body, steps=6, checkpoint_every=6)
    out = tmp_path / "out"
    spec, source = load_study(path)
    tune_ids = [r.run_id for r in plan(spec, str(source), out, check=False) if r.phase == "tune"]
    # only the first tuning run and the final runs are selected: the cell cannot choose
    finals = [f"ring__seed{s}" for s in (0, 1)]
    result = run_study(path, out=out, jobs=1, progress=False, only=[tune_ids[0], *finals])
    assert result.finished == [tune_ids[0]]
    assert set(result.failed) == set(finals)
    assert all(tune_ids[1] in reason for reason in result.failed.values())
    report = (out / "report.md").read_text()
    assert "(tuning not finished)" in report


def test_nan_scores_cannot_be_chosen() -> None:
    tuning = Tuning(grid={"a.b": [1, 2]}, metric="q.fd", goal="min", seeds=[3])
    points = {"x": (("a.b", 1),), "y": (("a.b", 2),)}
    choice = choose(tuning, {"x": [_record(q__fd=math.nan)], "y": [_record(q__fd=9.0)]}, points)
    assert choice is not None and choice.values == (("a.b", 2),)


def test_a_setting_may_name_its_own_seeds_and_a_profile_replaces_them(tmp_path: Path) -> None:
    body = TUNED.replace('name = "ring"\n', 'name = "ring"\nseeds = [3, 4, 5]\n')
    body += "[profiles.one]\nseeds = [9]\n"
    spec, source = load_study(_study(tmp_path, body))
    finals = [r for r in plan(spec, str(source), tmp_path, check=False) if r.phase == "final"]
    assert sorted({r.seed for r in finals}) == [3, 4, 5]
    finals = [
        r for r in plan(spec, str(source), tmp_path, "one", check=False) if r.phase == "final"
    ]
    assert {r.seed for r in finals} == {9}


def test_a_tuning_key_no_evaluation_holds_fails_the_cells_runs_saying_so(tmp_path: Path) -> None:
    body = (
        TUNED.replace('"reconstruction.recon_l1"', '"reconstruction.no_such_key"')
        .replace('"game.latent_weight" = [1.0, 1000.0]', '"game.latent_weight" = [1.0]')
        .replace('"divergence.name" = ["gaussian-kl", "kozachenko-leonenko"]', "")
        .replace("[axes]", "")
    )
    path = _study(tmp_path, body, steps=6, checkpoint_every=6)
    result = run_study(path, out=tmp_path / "out", jobs=1, progress=False)
    assert len(result.finished) == 1 and set(result.failed) == {"ring__seed0", "ring__seed1"}
    assert all(
        "no trial has a finite mean reconstruction.no_such_key" in reason
        for reason in result.failed.values()
    )


# the search: optuna's samplers, successive halving, edges, schedules ----------------------------
SEARCHED = """
name = "searched"
seeds = [0, 1]
[[settings]]
name = "ring"
primary = "reconstruction.recon_l1"
metrics = ["reconstruction"]
[settings.tuning]
space = { "game.latent_weight" = { low = 1.0, high = 1000.0, log = true }, \
"optim.lr" = { low = 1e-4, high = 1e-3 } }
trials = 4
metric = "reconstruction.recon_l1"
goal = "min"
seeds = [7, 8]
halving = { steps = 6, keep = 0.5 }
[axes]
"divergence.name" = ["gaussian-kl", "kozachenko-leonenko"]
[profiles.wide]
[profiles.wide.tuning.ring]
trials = 6
"""


def _evaluate(out: Path, run: Any, score: float) -> None:
    """An evaluation record for ``run`` as the runner writes it (science and scores)."""
    from agekit.config import config_to_dict
    from agekit.studies.layout import EVAL_FILE, run_dir

    folder = run_dir(out, run)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "config": config_to_dict(run.config),
        "metrics": {"reconstruction": {"recon_l1": score}},
    }
    (folder / EVAL_FILE).write_text(json.dumps(record))


def test_every_cell_gets_the_same_reproducible_trials_inside_the_ranges(tmp_path: Path) -> None:
    spec, source = load_study(_study(tmp_path, SEARCHED, steps=12))
    runs = plan(spec, str(source), tmp_path / "out", check=False)
    trials: dict[str, set[Any]] = {}
    for run in (r for r in runs if r.phase == "tune"):
        trials.setdefault(str(run.tunes), set()).add(run.grid_values)
    assert len(trials) == 2 and len({frozenset(t) for t in trials.values()}) == 1  # paired budget
    points = next(iter(trials.values()))
    assert len(points) == 4
    for point in points:
        values = dict(point)
        assert 1.0 <= values["game.latent_weight"] <= 1000.0 and 1e-4 <= values["optim.lr"] <= 1e-3
    tuning = spec.settings[0].tuning
    assert (
        tuning is not None
        and tuning.points() == Tuning.model_validate(tuning.model_dump()).points()
    )


def test_a_grid_is_crossed_in_its_listed_order() -> None:
    tuning = Tuning(grid={"a.b": [1, 2], "c.d": [0.5]}, metric="q.x", goal="min")
    assert [dict(point) for _, point in tuning.points()] == [
        {"a.b": 1, "c.d": 0.5},
        {"a.b": 2, "c.d": 0.5},
    ]


def test_halving_trains_a_short_rung_then_promotes_the_best_to_the_full_budget(
    tmp_path: Path,
) -> None:
    spec, source = load_study(_study(tmp_path, SEARCHED, steps=12))
    out = tmp_path / "out"
    runs = plan(spec, str(source), out, check=False)
    short = [r for r in runs if r.phase == "tune"]
    assert {r.config.train.steps for r in short} == {6} and all(r.rung for r in short)
    # rung 0 scored: trial k scores k in one cell and -k in the other
    for run in short:
        index = int(run.run_id.split("trial")[1][:2])
        _evaluate(out, run, index if "gaussian" in run.cell else -index)
    runs = plan(spec, str(source), out, check=False)
    full = [r for r in runs if r.phase == "tune" and not r.rung]
    assert {r.config.train.steps for r in full} == {12}
    promoted = {(r.tunes, r.run_id.split("__tune__")[1][:7]) for r in full}
    assert promoted == {
        ("ring__divergence=gaussian-kl", "trial00"),
        ("ring__divergence=gaussian-kl", "trial01"),
        ("ring__divergence=kozachenko-leonenko", "trial02"),
        ("ring__divergence=kozachenko-leonenko", "trial03"),
    }
    assert all(r.awaiting_tuning for r in runs if r.phase == "final")
    # only the full budget chooses: reverse the order there
    for run in full:
        _evaluate(out, run, -int(run.run_id.split("trial")[1][:2]))
    runs = plan(spec, str(source), out, check=False)
    finals = [r for r in runs if r.phase == "final"]
    assert not any(r.awaiting_tuning for r in finals)
    tuning = spec.settings[0].tuning
    assert tuning is not None
    chosen = {r.cell: r.grid_values for r in finals}
    trials = dict(tuning.points())
    assert chosen["ring__divergence=gaussian-kl"] == trials["trial01"]
    assert chosen["ring__divergence=kozachenko-leonenko"] == trials["trial03"]


def test_a_profile_can_widen_the_search(tmp_path: Path) -> None:
    spec, source = load_study(_study(tmp_path, SEARCHED, steps=12))
    runs = plan(spec, str(source), tmp_path / "out", profile="wide", check=False)
    assert len({r.grid_values for r in runs if r.phase == "tune"}) == 6


def test_an_epoch_schedule_in_a_tuned_setting_is_refused(tmp_path: Path) -> None:
    body = SEARCHED.replace(
        'metrics = ["reconstruction"]',
        'metrics = ["reconstruction"]\nconfig = { optim = { lr_drop_every = 2 } }',
    )
    spec, source = load_study(_study(tmp_path, body, steps=12))
    with pytest.raises(ConfigError, match="counts its schedule in iterations"):
        plan(spec, str(source), tmp_path / "out", check=False)


def test_a_halving_rung_as_long_as_the_budget_is_refused(tmp_path: Path) -> None:
    spec, source = load_study(_study(tmp_path, SEARCHED, steps=6))
    with pytest.raises(ConfigError, match=r"tuning.halving.steps \(6\) must be below"):
        plan(spec, str(source), tmp_path / "out", check=False)


def test_a_choice_at_the_edge_of_its_range_is_flagged() -> None:
    tuning = Tuning(
        space={"a.b": {"low": 1.0, "high": 1000.0, "log": True}},  # type: ignore[dict-item]
        trials=2,
        metric="q.x",
        goal="min",
    )
    labels = {"edge": (("a.b", 1.5),), "inside": (("a.b", 30.0),)}
    record = {"metrics": {"q": {"x": 0.0}}}
    worse = {"metrics": {"q": {"x": 1.0}}}
    at_edge = choose(tuning, {"edge": [record], "inside": [worse]}, labels)
    inside = choose(tuning, {"edge": [worse], "inside": [record]}, labels)
    # 1.5 is 6 % of the way up [1, 1000] on its log scale, 30 is 49 %
    assert at_edge is not None and at_edge.edges == ("a.b",)
    assert inside is not None and inside.edges == ()
    # a listed grid: the smallest or largest of three or more values is an edge too
    grid = Tuning(grid={"a.b": [1.0, 2.0, 3.0]}, metric="q.x", goal="min")
    points = {"low": (("a.b", 1.0),), "middle": (("a.b", 2.0),)}
    low = choose(grid, {"low": [record], "middle": [worse]}, points)
    middle = choose(grid, {"low": [worse], "middle": [record]}, points)
    assert low is not None and low.edges == ("a.b",)
    assert middle is not None and middle.edges == ()


def test_a_primary_the_setting_does_not_measure_is_refused(tmp_path: Path) -> None:
    body = SEARCHED.replace('primary = "reconstruction.recon_l1"', 'primary = "fid.x"')
    spec, source = load_study(_study(tmp_path, body, steps=12))
    with pytest.raises(ConfigError, match=r"primary 'fid\.x' names a metric"):
        plan(spec, str(source), tmp_path / "out", check=False)


def test_a_halving_study_runs_its_rungs_in_order_and_reports_them(tmp_path: Path) -> None:
    body = SEARCHED.replace("trials = 4", "trials = 2").replace("keep = 0.5", "keep = 0.4")
    path = _study(tmp_path, body, steps=8, checkpoint_every=8)
    out = tmp_path / "out"
    result = run_study(path, out=out, jobs=1, progress=False)
    # per cell: 2 trials x 2 seeds at 6 iterations, the best 1 x 2 seeds at 8, then 2 final runs
    assert not result.failed and len(result.finished) == 2 * (4 + 2 + 2)
    assert result.selected == len(result.finished)
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*/eval.json")]
    full = [r for r in records if r["phase"] == "tune" and not r["rung"]]
    assert {r["config"]["train"]["steps"] for r in full} == {8}
    finals = [r for r in records if r["phase"] == "final"]
    for record in finals:  # each cell's final runs use the trial its full rung trained
        assert any(r["grid"] == record["grid"] and r["tunes"] == record["cell"] for r in full)
    report = (out / "report.md").read_text()
    assert "## Answer" in report and "Successive halving" in report
    assert report.count("not promoted") == 2  # one trial per cell stopped at rung 0
