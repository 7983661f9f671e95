"""Every record a run or study writes says which versions made it (agekit.runs.provenance)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from agekit.config import ExperimentConfig, config_to_dict
from agekit.config.changes import resume_refusal, science_differences
from agekit.runs import checkpoint as ckpt

STUDY = """\
name = "tiny"
seeds = [0]
[base]
data = { name = "ring8", batch_size = 32, options = { size = 256, test_size = 64 } }
prior = { name = "sphere", dim = 4 }
backbone = { name = "mlp", options = { hidden = 8, depth = 2 } }
train = { steps = 4, checkpoint_every = 4, image_every = 4, log_every = 2, device = "cpu" }
[[settings]]
name = "ring8"
metrics = [{ name = "reconstruction", options = { n_samples = 32 } }]
"""


def _check(record: object, where: str) -> None:
    assert isinstance(record, dict), where
    assert record["agekit"], where
    assert record["torch"] == str(torch.__version__), where
    assert record["python"] == platform.python_version(), where
    assert isinstance(record["plugins"], dict), where
    assert "source_revision" in record, where


def test_config_checkpoint_eval_and_study_records_carry_the_versions(tmp_path: Path) -> None:
    from agekit.studies.runner import run_study

    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    run_study(study, out=tmp_path / "out", progress=False)
    folder = tmp_path / "out"
    run = folder / "runs" / "ring8__seed0"
    _check(json.loads((run / "config.json").read_text()).get("provenance"), "config.json")
    _check(ckpt.load(run / "checkpoints" / "step_00000004.pt").get("provenance"), "checkpoint")
    _check(json.loads((run / "eval.json").read_text()).get("provenance"), "eval.json")
    _check(json.loads((folder / "study.json").read_text()).get("provenance"), "study.json")
    report = (folder / "report.md").read_text()
    protocols = report.split("## Protocols", 1)[1]
    assert f"torch {torch.__version__}" in protocols and "Python " in protocols


def test_provenance_is_not_science() -> None:
    # Run folders written before provenance existed (or by another agekit) stay complete and
    # resume: the versions are recorded beside the configuration, never compared.
    plain = config_to_dict(ExperimentConfig())
    stamped = {**plain, "provenance": {"agekit": "9.9", "torch": "0.1", "plugins": {"x": "1"}}}
    assert science_differences(plain, stamped) == []
    assert science_differences(stamped, plain) == []
    assert resume_refusal(stamped, plain) is None
