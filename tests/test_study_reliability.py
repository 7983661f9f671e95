"""A study folder holds one configuration's results: an edited study is refused before training
(or its old runs archived), the report leaves other configurations' evaluations out, a study's
name cannot point outside its folder, repeated seeds and axis values are named, and the closing
table follows the study's own metric order."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from test_study_runner import _study

from agekit.cli import main
from agekit.config import ConfigError
from agekit.studies.spec import load_study, plan

TWO_SEEDS = """
name = "edited"
seeds = [0, 1]
[[settings]]
name = "ring"
metrics = ["reconstruction"]
"""


def _eval(out: Path, run_id: str) -> dict:
    return json.loads((out / "runs" / run_id / "eval.json").read_text())


def test_an_edited_study_is_refused_before_training_and_archive_moves_the_old_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path, TWO_SEEDS)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    path.write_text(path.read_text().replace("hidden = 16", "hidden = 8"))
    capsys.readouterr()

    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "ring__seed0, ring__seed1 (backbone.options.hidden 16 -> 8)" in err
    assert str(out / "runs") in err and "--out" in err and "--archive" in err
    # Nothing trained, nothing rewritten: the earlier results are as they were.
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == stamps

    assert main(["run", str(path), "--out", str(out), "--quiet", "--archive"]) == 0
    archived = next((out / "archive").iterdir())
    assert _eval(archived, "ring__seed0")["config"]["backbone"]["options"]["hidden"] == 16
    assert (archived / "report.md").exists()  # the earlier configuration's report goes with them
    for seed in (0, 1):
        assert _eval(out, f"ring__seed{seed}")["config"]["backbone"]["options"]["hidden"] == 8
    report = (out / "report.md").read_text()
    assert "2 runs evaluated." in report and "another configuration" not in report
    # The same command again has nothing to refuse or to do.
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0


def test_the_report_leaves_out_evaluations_of_another_configuration(tmp_path: Path) -> None:
    from agekit.studies.report import write_report

    path = _study(tmp_path, TWO_SEEDS)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    # seed 1's evaluation made under another learning rate (an edited study, a copied folder)
    record = _eval(out, "ring__seed1")
    record["config"]["optim"]["lr"] = 0.5
    (out / "runs" / "ring__seed1" / "eval.json").write_text(json.dumps(record))

    summary = write_report(out)
    assert summary["evaluated_runs"] == ["ring__seed0"]
    report = (out / "report.md").read_text()
    assert "1 runs evaluated; 1 planned runs not evaluated yet: ring__seed1." in report
    assert "## Left out: runs of another configuration" in report
    assert "- `ring__seed1`: made with other values of optim.lr" in report
    cells = json.loads((out / "summary.json").read_text())["cells"]
    assert cells["ring"]["metrics"]["reconstruction.recon_l1"]["n"] == 1


@pytest.mark.parametrize("name", ["../../escaped", "ABSOLUTE"])
def test_a_study_name_cannot_point_outside_the_study_folder(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    target = tmp_path / "escaped"
    name = str(target) if name == "ABSOLUTE" else name
    path = _study(
        tmp_path, TWO_SEEDS.replace('name = "edited"', f"name = {json.dumps(name)}"), steps=2
    )
    monkeypatch.chdir(tmp_path)  # runs/studies/../../escaped is tmp_path/escaped
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{path}: name {name!r}:" in err and "letters, digits" in err
    assert not target.exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("seeds = [0, 1, 0]\n", r"study\.toml: seeds: seed 0 is listed twice$"),
        (
            'seeds = [0]\n[[settings]]\nname = "ring"\nseeds = [3, 3]\n',
            r"study\.toml: settings 'ring': seeds: seed 3 is listed twice$",
        ),
        (
            'seeds = [0]\n[axes]\n"game.latent_weight" = [10.0, 20.0, 10.0]\n',
            r"study\.toml: axes 'game\.latent_weight': value 10\.0 is listed twice$",
        ),
        (
            'seeds = [0]\n[axes]\n"data.options.tag" = ["a b", "a_b"]\n',
            r"axes 'data\.options\.tag': values 'a b' and 'a_b' both name the folder part 'a_b'$",
        ),
    ],
)
def test_a_repeated_seed_or_axis_value_is_named(tmp_path: Path, body: str, message: str) -> None:
    path = _study(tmp_path, f'name = "repeats"\n{body}')
    spec, source = load_study(path)
    with pytest.raises(ConfigError, match=message):
        plan(spec, str(source), tmp_path / "out", check=False)


def test_the_closing_table_follows_the_studys_metrics_and_keeps_axis_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rich.console import Console

    from agekit.studies.headline import headline
    from agekit.studies.report import closing_table
    from agekit.studies.statistics import summarise

    records = [
        {
            "setting": "ring8",
            "cell": f"ring8__latent_weight={lam}__margin={margin}",
            "train_seed": seed,
            "metrics": {
                "reconstruction": {"recon_l1": 0.1 + seed / 100, "recon_mse": 0.12},
                "mode-coverage": {
                    "modes_captured": 7.0 + seed,
                    "high_quality_percent": 80.0,
                    "reverse_kl": 0.3,
                },
            },
        }
        for lam in (125.0, 500.0)
        for margin in (0.5, 1.0)
        for seed in (0, 1, 2)
    ]
    metrics = ["mode-coverage", "reconstruction"]
    primary = {"ring8": "mode-coverage.reverse_kl"}
    summary = summarise(records, headline(metrics), primary)
    summary["study"] = "modes"
    summary["declared_metrics"] = {"ring8": metrics}
    out = io.StringIO()
    monkeypatch.setattr(closing_table, "console", Console(file=out, width=80))
    closing_table.print_table(summary, Path("study/report.md"))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "cell" in line)
    # The primary first, then the study's first metric (the mode count), not reconstruction.
    assert header.index("reverse_kl") < header.index("modes_captured")
    assert "recon_l1" not in header
    assert any("latent_weight=125.0, margin=0.5" in line for line in lines)
