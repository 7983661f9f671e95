"""Conditional AGE (colorization): data, backbone, trainer plumbing, metric, commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from agekit.cli import main
from agekit.components import ComponentInputError, EvaluationContext
from agekit.config import parse_config
from agekit.evaluation.scoring import evaluate
from agekit.games.age import AGEGame
from agekit.metrics.colorization import Colorization, colourfulness, pairwise_ab_distance
from agekit.registry import create
from agekit.training.trainer import Trainer
from agekit.util.lab import AB_SCALE, rgb_to_network

SIZE = 16
DATA: dict[str, Any] = {
    "name": "colour-crops",
    "batch_size": 8,
    "options": {"image_size": SIZE, "crops_per_image": 6},
}


def _raw(objective: str = "age", steps: int = 3) -> dict[str, Any]:
    return {
        "name": "cond",
        "data": json.loads(json.dumps(DATA)),
        "prior": {"name": "sphere", "dim": 3},
        "backbone": {
            "name": "cond-resnet",
            "options": {"generator_width": 4, "encoder_width": 4, "blocks": 1},
        },
        "game": {"objective": objective},
        "train": {
            "steps": steps,
            "checkpoint_every": steps,
            "image_every": steps,
            "log_every": 1,
            "device": "cpu",
            "grid_size": 4,
        },
    }


# data ---------------------------------------------------------------------------------------------
def test_colour_crops_split_by_source_photo_and_deterministic() -> None:
    data = create("dataset", "colour-crops", **DATA["options"])
    assert data.shape == (2, SIZE, SIZE) and data.condition_shape == (1, SIZE, SIZE)
    x, labels = data.tensors("train")
    conditions = data.conditions("train")
    assert x.shape[1:] == (2, SIZE, SIZE) and conditions.shape == (len(x), 1, SIZE, SIZE)
    assert float(x.abs().max()) <= 1.0 and float(conditions.abs().max()) <= 1.0 + 1e-6
    test_labels = data.tensors("test")[1]
    # held-out photographs: no test crop comes from a training photo
    assert not set(labels.tolist()) & set(test_labels.tolist())
    assert len(set(test_labels.tolist())) == 2
    again = create("dataset", "colour-crops", **DATA["options"])
    assert torch.equal(again.tensors("train")[0], x)
    item = data.split("test")[0]
    assert len(item) == 3 and item[2].shape == (1, SIZE, SIZE)
    rgb = data.display(x[:2], conditions[:2])
    assert rgb.shape == (2, 3, SIZE, SIZE) and float(rgb.min()) >= -1 and float(rgb.max()) <= 1


def test_colour_crops_region_holdout_uses_every_photo() -> None:
    data = create("dataset", "colour-crops", image_size=SIZE, crops_per_image=3, holdout="regions")
    train, test = data.tensors("train")[1], data.tensors("test")[1]
    assert set(train.tolist()) == set(test.tolist()) == set(range(len(data.photos)))


def test_lab_folder_converts_any_rgb_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    data = create("dataset", "lab-folder", root=str(tmp_path), image_size=SIZE, test_fraction=0.25)
    assert data.shape == (2, SIZE, SIZE) and data.tensors("train") is None
    x, label, condition = data.split("train")[0]
    assert x.shape == (2, SIZE, SIZE) and condition.shape == (1, SIZE, SIZE) and label == -1
    rgb = (data.folder.split("train")[0][0].double() + 1) / 2
    ex, ec = rgb_to_network(rgb)
    assert torch.allclose(x.double(), ex, atol=1e-6) and torch.allclose(condition.double(), ec)


# backbone ---------------------------------------------------------------------------------------
def _pair() -> Any:
    prior = create("prior", "sphere", dim=3)
    backbone = create("backbone", "cond-resnet", generator_width=4, encoder_width=4, blocks=1)
    return prior, backbone.build((2, SIZE, SIZE), 3, prior, condition_shape=(1, SIZE, SIZE))


def test_cond_resnet_shapes_condition_and_noise() -> None:
    torch.manual_seed(0)
    prior, pair = _pair()
    condition = torch.rand(5, 1, SIZE, SIZE) * 2 - 1
    z = prior.sample(5, torch.Generator().manual_seed(0))
    out = pair.generator(z, condition).detach()
    assert out.shape == (5, 2, SIZE, SIZE) and float(out.abs().max()) <= 1.0
    other = pair.generator(prior.sample(5, torch.Generator().manual_seed(1)), condition)
    assert not torch.allclose(out, other)  # z reaches the output
    codes = pair.encoder(out, condition)
    assert torch.allclose(codes.norm(dim=1), torch.ones(5), atol=1e-5)  # on the sphere
    with pytest.raises(ComponentInputError, match="conditional"):
        pair.generator(z, None)
    with pytest.raises(ComponentInputError, match="conditional"):
        pair.encoder(out)
    with pytest.raises(ValueError, match="condition"):
        create("backbone", "cond-resnet").build((2, SIZE, SIZE), 3, prior)
    with pytest.raises(ValueError, match="unconditional"):
        create("backbone", "dcgan").build((2, 32, 32), 3, prior, condition_shape=(1, 32, 32))


def test_game_passes_conditions_to_both_networks() -> None:
    torch.manual_seed(0)
    prior, pair = _pair()
    game = AGEGame(
        pair.encoder,
        pair.generator,
        prior,
        create("divergence", "gaussian-kl"),
        create("loss", "l1"),
        create("loss", "l2"),
    )
    x = torch.rand(6, 2, SIZE, SIZE) - 0.5
    condition = torch.rand(6, 1, SIZE, SIZE) * 2 - 1
    z = prior.sample(6, torch.Generator().manual_seed(0))
    enc = game.encoder_step(x, z, condition=condition)
    gen = game.generator_step(z, condition=condition)
    assert bool(torch.isfinite(enc.loss)) and bool(torch.isfinite(gen.loss))


# metric ------------------------------------------------------------------------------------------
def test_metric_known_answers() -> None:
    same = torch.rand(3, 1, 2, 4, 4).expand(3, 5, 2, 4, 4)
    assert torch.allclose(pairwise_ab_distance(same), torch.zeros(3, dtype=torch.float64))
    two = torch.zeros(1, 2, 2, 4, 4)
    two[0, 1, 0], two[0, 1, 1] = 3.0, 4.0  # a 3-4-5 triangle in every pixel
    assert torch.allclose(pairwise_ab_distance(two), torch.tensor([5.0], dtype=torch.float64))
    grey = torch.full((2, 3, 8, 8), 0.3)
    assert torch.allclose(colourfulness(grey), torch.zeros(2, dtype=torch.float64))
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1.0  # rg = 255, yb = 127.5, no spread
    expected = 0.3 * (255.0**2 + 127.5**2) ** 0.5
    assert float(colourfulness(red)) == pytest.approx(expected)


class _Fixed:
    """A data source with given test (x, condition), for the metric on known models."""

    condition_shape = (1, 4, 4)

    def __init__(self, x: torch.Tensor, c: torch.Tensor) -> None:
        self.x, self.c = x, c

    def tensors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, torch.zeros(len(self.x), dtype=torch.int64)

    def conditions(self, name: str) -> torch.Tensor:
        return self.c


class _Echo(torch.nn.Module):
    """Perfect reconstruction: encoder returns ab as 'codes', generator returns them."""

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return x


def test_colorization_metric_on_a_model_that_ignores_z() -> None:
    x = torch.rand(6, 2, 4, 4) * 0.4 - 0.2
    c = torch.rand(6, 1, 4, 4) * 2 - 1
    prior = create("prior", "sphere", dim=3)

    class Constant(torch.nn.Module):
        def forward(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> Any:
            if z.shape[1] == 2:  # reconstruction path: codes are the ab maps themselves
                return z
            return torch.zeros(len(z), 2, 4, 4)

    context = EvaluationContext(
        encoder=_Echo(),  # type: ignore[arg-type]
        generator=Constant(),  # type: ignore[arg-type]
        prior=prior,
        data=_Fixed(x, c),  # type: ignore[arg-type]
        dataset_name="fixed",
        device=torch.device("cpu"),
        seed=0,
        cache_dir=None,
        divergences={},
    )
    result = Colorization(n_images=6, n_codes=4)(context)
    assert result.values["diversity"] == 0.0
    assert result.values["colourfulness"] == pytest.approx(0.0, abs=0.1)  # grey colorizations
    assert result.values["ab_recon_l1"] == 0.0
    zero_ab = float(x.abs().mean()) * AB_SCALE
    assert result.values["zero_ab_l1"] == pytest.approx(zero_ab, rel=1e-5)
    assert result.protocol["n_codes"] == 4


# trainer, evaluation, commands ------------------------------------------------------------------
def test_conditional_training_both_objectives_evaluate_and_commands(
    tmp_path: Path, capsys: Any
) -> None:
    run = tmp_path / "age"
    trainer = Trainer(parse_config(_raw("age")), run)
    result = trainer.fit()
    assert result.step == 3
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"kl_real", "kl_fake", "data_rec", "latent_rec"} <= set(record)
    assert (run / "images" / "samples_00000003.png").exists()
    assert (run / "images" / "reconstructions_00000003.png").exists()

    base = tmp_path / "regression"
    trainer = Trainer(parse_config(_raw("regression")), base)
    encoder_before = {k: v.clone() for k, v in trainer.encoder.state_dict().items()}
    trainer.fit()
    record = json.loads((base / "metrics.jsonl").read_text().splitlines()[-1])
    assert "regression_l1" in record and "kl_real" not in record
    for key, value in trainer.encoder.state_dict().items():  # the encoder never trains
        assert torch.equal(value, encoder_before[key])

    scores = evaluate(run, [create_spec("colorization", n_images=8, n_codes=3)], device="cpu")
    colour = scores["metrics"]["colorization"]
    assert colour["diversity"] >= 0 and colour["ab_recon_l1"] >= 0

    rng = np.random.default_rng(0)
    rgb_file, grey_file = tmp_path / "rgb.png", tmp_path / "grey.jpg"
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(rgb_file)
    Image.fromarray(rng.integers(0, 255, (25, 25), dtype=np.uint8), mode="L").save(grey_file)
    out = tmp_path / "grid.png"
    args = ["colorize", str(run), str(rgb_file), str(grey_file), "--n", "3", "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    with Image.open(out) as grid:  # 2 rows of 1 + 3 images, 2 px padding
        assert grid.size == (4 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)
    out = tmp_path / "transfer.png"
    assert main(["transfer", str(run), str(rgb_file), str(grey_file), "--out", str(out)]) == 0
    assert out.exists()

    capsys.readouterr()
    missing = tmp_path / "nope.png"
    assert main(["colorize", str(run), str(missing), "--out", str(tmp_path / "x.png")]) == 2
    assert "nope.png" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    assert main(["transfer", str(run), str(broken), str(rgb_file), "--out", str(out)]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png")]) == 2
    assert "colorize" in capsys.readouterr().err


def create_spec(name: str, **options: Any) -> Any:
    from agekit.config import Component

    return Component(name=name, options=options)


def test_unconditional_models_are_refused_by_colorize(tmp_path: Path, capsys: Any) -> None:
    raw = {
        "name": "u",
        "data": {"name": "ring8", "batch_size": 32, "options": {"size": 256, "test_size": 64}},
        "prior": {"name": "sphere", "dim": 3},
        "backbone": {"name": "mlp", "options": {"hidden": 8, "depth": 1}},
        "train": {"steps": 1, "device": "cpu", "grid_size": 4},
    }
    Trainer(parse_config(raw), tmp_path / "u").fit()
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    assert main(["colorize", str(tmp_path / "u"), str(image), "--out", str(tmp_path / "g")]) == 2
    assert "unconditional" in capsys.readouterr().err


@pytest.mark.parametrize("objective", ["age", "regression"])
def test_conditional_resume_is_exact(tmp_path: Path, objective: str) -> None:
    raw = _raw(objective, steps=4)
    raw["train"].update(checkpoint_every=2, keep_checkpoints=5)
    first = Trainer(parse_config(raw), tmp_path / "run")
    first.fit()
    full = {k: v.clone() for k, v in first.generator.state_dict().items()}
    (tmp_path / "run" / "checkpoints" / "step_00000004.pt").unlink()
    again = Trainer(parse_config(raw), tmp_path / "run")
    again.fit(resume=True)
    for key, value in again.generator.state_dict().items():
        assert torch.equal(value, full[key]), key
