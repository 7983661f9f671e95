"""A setting that borrows another setting's tuning choice (``tuned_by``): the same trial at
another budget, e.g. every game at an equal wall clock, without a second search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_study_runner import _study
from test_study_tuning import TUNED

from agekit.config import ConfigError
from agekit.studies.builder import RunBuilder
from agekit.studies.runner import run_study
from agekit.studies.schema import Setting
from agekit.studies.spec import load_study, plan
from agekit.studies.tuning import Tuning

#: test_study_tuning's tuned study at one seed, with a setting that borrows its choice.
BORROWING = TUNED.replace("seeds = [0, 1]\n", "seeds = [0]\n", 1).replace(
    "[axes]",
    '[[settings]]\nname = "ring-short"\ntuned_by = "ring"\nmetrics = ["reconstruction"]\n'
    "config = { train = { steps = 3 } }\n[axes]",
)


def test_a_borrowing_setting_plans_no_search_and_waits_for_the_lenders_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, source = load_study(_study(tmp_path, BORROWING))
    built: list[str] = []
    plan_tuning = RunBuilder._plan_tuning

    def counted(self: RunBuilder, setting: Setting, tuning: Tuning, cell: str, *rest: Any) -> Any:
        built.append(cell)
        return plan_tuning(self, setting, tuning, cell, *rest)

    monkeypatch.setattr(RunBuilder, "_plan_tuning", counted)
    runs = plan(spec, str(source), tmp_path / "out", check=False)
    # the borrower reads the choice of each lender cell that the lender's planning built
    assert sorted(built) == sorted({r.tunes for r in runs if r.phase == "tune"})
    short = [r for r in runs if r.setting == "ring-short"]
    assert len(short) == 2 and all(r.phase == "final" for r in short)
    assert all(r.awaiting_tuning and not r.grid_values for r in short)
    # the lender's tuning runs are planned once, under the lender
    assert {r.setting for r in runs if r.phase == "tune"} == {"ring"}
    assert len([r for r in runs if r.phase == "tune"]) == 2 * 2


def test_a_borrowing_setting_runs_the_lenders_choice_at_its_own_budget(tmp_path: Path) -> None:
    path = _study(tmp_path, BORROWING, steps=6, checkpoint_every=6)
    out = tmp_path / "out"
    result = run_study(path, out=out, jobs=1, progress=False)
    assert not result.failed and len(result.finished) == 4 + 2 + 2
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*/eval.json")]
    finals = {r["cell"]: r for r in records if r["phase"] == "final"}
    for divergence in ("gaussian-kl", "kozachenko-leonenko"):
        lender = finals[f"ring__divergence={divergence}"]
        borrower = finals[f"ring-short__divergence={divergence}"]
        assert borrower["grid"] == lender["grid"] and lender["grid"]
        assert borrower["config"]["game"] == lender["config"]["game"]
        assert borrower["config"]["train"]["steps"] == 3
        assert lender["config"]["train"]["steps"] == 6
    report = (out / "report.md").read_text()
    assert "### ring-short" in report and "No search of its own" in report


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('tuned_by = "ring"', r"tuned_by 'nowhere': expected the name of a setting with a"),
        ("[axes]", r"settings 'ring-short': tuned_by 'ring': a setting either tunes itself"),
    ],
)
def test_a_borrowing_setting_must_name_a_tuned_setting_and_not_tune_itself(
    tmp_path: Path, change: str, message: str
) -> None:
    replacement = {
        'tuned_by = "ring"': 'tuned_by = "nowhere"',
        "[axes]": (
            '[settings.tuning]\ngrid = { "game.latent_weight" = [1.0] }\n'
            'metric = "reconstruction.recon_l1"\ngoal = "min"\nseeds = [8]\n[axes]'
        ),
    }[change]
    with pytest.raises(ConfigError, match=message):
        load_study(_study(tmp_path, BORROWING.replace(change, replacement)))


def test_a_borrowing_setting_may_not_run_a_seed_its_lender_tuned_on(tmp_path: Path) -> None:
    body = BORROWING.replace('tuned_by = "ring"', 'tuned_by = "ring"\nseeds = [7]')
    spec, source = load_study(_study(tmp_path, body))
    with pytest.raises(ConfigError, match=r"'ring-short': tuned_by 'ring': tuning.seeds \[7\]"):
        plan(spec, str(source), tmp_path / "out", check=False)


def test_a_borrowing_run_whose_lender_did_not_finish_tuning_names_the_missing_runs(
    tmp_path: Path,
) -> None:
    body = BORROWING.replace('"divergence.name" = ["gaussian-kl", "kozachenko-leonenko"]', "")
    path = _study(tmp_path, body.replace("[axes]", ""), steps=6, checkpoint_every=6)
    out = tmp_path / "out"
    spec, source = load_study(path)
    tune_ids = [r.run_id for r in plan(spec, str(source), out, check=False) if r.phase == "tune"]
    result = run_study(
        path, out=out, jobs=1, progress=False, only=[tune_ids[0], "ring-short__seed0"]
    )
    assert result.finished == [tune_ids[0]]
    assert list(result.failed) == ["ring-short__seed0"]
    assert tune_ids[1] in result.failed["ring-short__seed0"]
