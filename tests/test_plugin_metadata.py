"""Components that describe themselves: a plugin metric's headline keys reach study reports, and a
plugin data set's default metrics are what a study runs, with no edit to agekit.

The plugin is installed the way pip would install it (a module plus a .dist-info folder with entry
points) on a temporary sys.path entry, as in test_registry.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_registry import _install_fake_distribution  # the same fake pip layout

from agekit.evaluation.scoring import default_metrics
from agekit.registry import REGISTRY
from agekit.studies.headline import headline
from agekit.studies.runner import run_study
from agekit.studies.spec import load_study, plan

PLUGIN = """
    from __future__ import annotations

    from typing import Any, ClassVar

    import torch
    from torch.utils.data import Dataset, TensorDataset

    from agekit.components import (
        DataSource,
        Direction,
        EvaluationContext,
        Metric,
        MetricResult,
    )
    from agekit.metrics.classifier import generate_samples


    class Blobs(DataSource):
        '''One 2-D Gaussian blob; its default metrics include the plugin's own metric.'''

        kind = "vector"
        default_metrics: ClassVar[tuple[str, ...] | None] = ("reconstruction", "sample-spread")

        def __init__(self, size: int = 256, test_size: int = 64, seed: int = 0) -> None:
            g = torch.Generator().manual_seed(seed)
            self._splits = {
                name: (0.5 * torch.randn(n, 2, generator=g), torch.zeros(n, dtype=torch.long))
                for name, n in (("train", size), ("test", test_size))
            }

        @property
        def shape(self) -> tuple[int, ...]:
            return (2,)

        def split(self, name: Any) -> Dataset[Any]:
            return TensorDataset(*self._splits[name])

        def tensors(self, name: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return self._splits[name]


    class SampleSpread(Metric):
        '''Mean per-coordinate standard deviation of generator samples, beside the data's.'''

        headline: ClassVar[dict[str, Direction]] = {
            "spread": "higher",
            "real_spread": "reference",
        }

        def __init__(self, n_samples: int = 128) -> None:
            self.n_samples = n_samples

        def __call__(self, context: EvaluationContext) -> MetricResult:
            fake = generate_samples(context, self.n_samples)
            real = context.data.tensors("test")[0]
            return MetricResult(
                values={
                    "spread": float(fake.std(0).mean()),
                    "real_spread": float(real.std(0).mean()),
                    "n_fake": int(fake.shape[0]),
                },
                protocol={"metric": "sample-spread", "n_samples": self.n_samples},
            )
"""

STUDY = """
name = "plugin-study"
seeds = [0, 1]

[base]
data = { name = "blobs", batch_size = 64 }
prior = { name = "sphere", dim = 3 }
backbone = { name = "mlp", options = { hidden = 16, depth = 2 } }
train = { steps = 6, checkpoint_every = 6, image_every = 6, log_every = 3, device = "cpu" }

[axes]
"divergence.name" = ["gaussian-kl", "kozachenko-leonenko"]
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(
        site,
        "agekit_blobs",
        "agekit_blobs",
        PLUGIN,
        {
            "agekit.datasets": {"blobs": "agekit_blobs:Blobs"},
            "agekit.metrics": {"sample-spread": "agekit_blobs:SampleSpread"},
        },
    )
    monkeypatch.syspath_prepend(str(site))
    REGISTRY.refresh()
    yield site
    sys.modules.pop("agekit_blobs", None)
    REGISTRY.refresh()


def test_plugin_declarations_are_read_through_the_registry(plugin: Path) -> None:
    assert REGISTRY.entry("metric", "sample-spread").distribution == "agekit_blobs"
    assert default_metrics("blobs") == ["reconstruction", "sample-spread"]
    directions = headline(["reconstruction", "sample-spread"])
    # Built-ins first (headline_order 10), the plugin's keys after them in its declared order.
    assert list(directions) == [
        "reconstruction.recon_l1",
        "reconstruction.mean_image_l1",
        "reconstruction.recon_mse",
        "reconstruction.mean_image_mse",
        "reconstruction.recon_label_accuracy",
        "reconstruction.label_accuracy_real",
        "sample-spread.spread",
        "sample-spread.real_spread",
    ]
    assert directions["sample-spread.spread"] == "higher"
    # Every registered metric's keys (the study runner's one-line summaries) include it too.
    assert headline()["sample-spread.spread"] == "higher"
    assert "sample-spread.n_fake" not in headline()


def test_plugin_metric_and_data_set_in_a_study_report(plugin: Path, tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    out = tmp_path / "out"

    # The study names no metrics: every run gets the data set's declared defaults.
    spec, source = load_study(path)
    runs = plan(spec, str(source), out)
    assert len(runs) == 4
    assert all([m.name for m in run.metrics] == ["reconstruction", "sample-spread"] for run in runs)

    run_study(path, out=out, progress=False)
    first = json.loads((out / "runs" / runs[0].run_id / "eval.json").read_text())
    assert list(first["metrics"]) == ["reconstruction", "sample-spread"]

    summary = json.loads((out / "summary.json").read_text())
    cell = summary["cells"]["plugin-study__divergence=gaussian-kl"]
    assert cell["metrics"]["sample-spread.spread"]["n"] == 2
    comparisons = {c["metric"]: c for c in summary["comparisons"]}
    # Headline keys with a direction are in the study's Holm family; the others are not.
    assert "p_holm" in comparisons["sample-spread.spread"]
    assert "p_holm" not in comparisons["sample-spread.real_spread"]
    assert "p_holm" not in comparisons["sample-spread.n_fake"]

    report = (out / "report.md").read_text()
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| metric | divergence="))
    end = lines.index("", start)
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines[start + 2 : end]] == [
        "reconstruction.recon_l1 (lower is better)",
        "reconstruction.mean_image_l1",
        "reconstruction.recon_mse (lower is better)",
        "reconstruction.mean_image_mse",
        "sample-spread.spread (higher is better)",
        "sample-spread.real_spread",
        # the rest, alphabetically
        "sample-spread.n_fake",
    ]
    paired = report.split("**Tested comparisons (Holm-adjusted)**")[1].split("##")[0]
    assert "| sample-spread.spread |" in paired
    assert "sample-spread.real_spread" not in paired and "sample-spread.n_fake" not in paired
    assert (out / "figures" / "metrics_plugin-study.png").stat().st_size > 0
