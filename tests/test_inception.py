"""Inception score / FID from local weights: known answers and the no-download contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import agekit
from agekit.components import EvaluationContext
from agekit.metrics.inception import inception_score, load_inception


def test_inception_score_known_answers() -> None:
    # Confident, evenly spread predictions over 10 classes: IS = 10; identical ones: IS = 1.
    confident = np.tile(np.eye(10), (20, 1))  # every split holds all 10 classes equally
    assert inception_score(confident, splits=2)[0] == pytest.approx(10.0, rel=1e-6)
    same = np.tile(np.full(10, 0.1), (200, 1))
    assert inception_score(same, splits=4)[0] == pytest.approx(1.0, abs=1e-9)


def test_missing_weights_say_agekit_never_downloads(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_inception(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a torchvision inception_v3 state dict"):
        load_inception(bad)


def test_metric_runs_end_to_end_with_local_weights(tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    # Random weights: the values mean nothing, but the whole path (load, resize, features,
    # softmax, scores, protocol) runs as it would with real weights.
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict(), weights)
    prior = agekit.create("prior", "sphere", dim=8)
    data = agekit.create("dataset", "digits")
    pair = agekit.create("backbone", "dcgan", width=8).build(data.shape, 8, prior)
    context = EvaluationContext(
        pair.encoder, pair.generator, prior, data, "digits", torch.device("cpu"), 0, tmp_path, {}
    )
    metric = agekit.create("metric", "inception", weights=str(weights), n_samples=8, splits=2,
                           batch_size=8)  # fmt: skip
    result = metric(context)
    assert 1.0 <= result.values["inception_score"] <= 1000.0
    assert result.values["fid_inception"] >= 0
    assert result.protocol["n_fake"] == 8
