"""agekit.evaluation.inference: the tensor work behind sample, reconstruct, interpolate, colorize,
transfer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import agekit
from agekit.config import parse_config
from agekit.evaluation import inference
from agekit.evaluation.inference import InferenceError
from agekit.model import Model, build_model

SIZE = 16


def _vector_model() -> Model:
    raw = {
        "name": "tiny",
        "data": {"name": "ring8", "batch_size": 32, "options": {"size": 256, "test_size": 64}},
        "prior": {"name": "sphere", "dim": 4},
        "backbone": {"name": "mlp", "options": {"hidden": 16, "depth": 2}},
        "train": {"steps": 1, "device": "cpu"},
    }
    return build_model(parse_config(raw), torch.device("cpu"))


def _colour_model() -> Model:
    raw = {
        "name": "cond",
        "data": {
            "name": "colour-crops",
            "batch_size": 8,
            "options": {"image_size": SIZE, "crops_per_image": 2},
        },
        "prior": {"name": "sphere", "dim": 3},
        "backbone": {
            "name": "cond-resnet",
            "options": {"generator_width": 4, "encoder_width": 4, "blocks": 1},
        },
        "train": {"steps": 1, "device": "cpu"},
    }
    return build_model(parse_config(raw), torch.device("cpu"))


@pytest.fixture(scope="module")
def vector() -> Model:
    return _vector_model()


@pytest.fixture(scope="module")
def colour() -> Model:
    return _colour_model()


def _image(path: Path, shape: tuple[int, ...], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
    return path


# unconditional models -----------------------------------------------------------------------------
def test_sample_shape_determinism_and_modes_restored(vector: Model) -> None:
    vector.pair.generator.train()
    first = inference.sample(vector, 10, seed=3)
    assert first.shape == (10, 2) and first.device.type == "cpu"
    assert torch.equal(first, inference.sample(vector, 10, seed=3))
    assert not torch.equal(first, inference.sample(vector, 10, seed=4))
    assert vector.pair.generator.training  # its mode before the call, restored
    assert not first.requires_grad
    with pytest.raises(InferenceError, match="at least 1"):
        inference.sample(vector, 0)


def test_encode_reconstruct_and_interpolate(vector: Model) -> None:
    x = vector.data.tensors("test")[0][:6]
    codes = inference.encode(vector, x)
    assert codes.shape == (6, 4)
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(6))  # on the sphere
    recon = inference.reconstruct(vector, x)
    assert recon.shape == x.shape
    assert torch.equal(recon, inference.reconstruct(vector, x))

    paths = inference.interpolate(vector, x[:3], x[3:], steps=5)
    assert paths.shape == (3, 5, 2)
    # the ends of each path decode the two codes themselves
    torch.testing.assert_close(paths[:, 0], recon[:3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(paths[:, -1], recon[3:], atol=1e-5, rtol=1e-5)
    with pytest.raises(InferenceError, match="differ in shape"):
        inference.interpolate(vector, x[:3], x[3:5], steps=5)
    with pytest.raises(InferenceError, match="at least 2"):
        inference.interpolate(vector, x[:3], x[3:], steps=1)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: inference.sample(m, 2),
        lambda m: inference.reconstruct(m, torch.zeros(2, 2, SIZE, SIZE)),
        lambda m: inference.interpolate(
            m, torch.zeros(1, 2, SIZE, SIZE), torch.zeros(1, 2, SIZE, SIZE), 3
        ),
    ],
    ids=["sample", "reconstruct", "interpolate"],
)
def test_unconditional_functions_refuse_a_colorization_model(colour: Model, call: Any) -> None:
    with pytest.raises(InferenceError, match=r"needs an unconditional model.*colorize"):
        call(colour)


# image files --------------------------------------------------------------------------------------
def test_read_rgb_resizes_crops_and_names_bad_files(tmp_path: Path) -> None:
    rgb = inference.read_rgb(_image(tmp_path / "a.png", (30, 40, 3)), SIZE)
    assert rgb.shape == (3, SIZE, SIZE) and rgb.dtype == torch.float32
    assert float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0
    grey = inference.read_rgb(_image(tmp_path / "g.jpg", (25, 25)), SIZE)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    batch = inference.read_rgb_batch([tmp_path / "a.png", tmp_path / "g.jpg"], SIZE)
    assert batch.shape == (2, 3, SIZE, SIZE)

    with pytest.raises(InferenceError, match=r"nope\.png: no such image file"):
        inference.read_rgb(tmp_path / "nope.png", SIZE)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(InferenceError, match=r"broken\.png: cannot read this file as an image"):
        inference.read_rgb(broken, SIZE)
    with pytest.raises(InferenceError, match="no image files"):
        inference.read_rgb_batch([], SIZE)


# colorization models ------------------------------------------------------------------------------
def test_colorize_shapes_range_and_determinism(colour: Model, tmp_path: Path) -> None:
    assert inference.condition_size(colour) == SIZE
    rgb = torch.stack(
        [inference.read_rgb(_image(tmp_path / f"{i}.png", (20, 20, 3), i), SIZE) for i in range(2)]
    )
    out = inference.colorize(colour, rgb, n=3, seed=1)
    assert out.shape == (2, 3, 3, SIZE, SIZE)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, inference.colorize(colour, rgb, n=3, seed=1))
    grey = inference.lightness_only(rgb)
    assert grey.shape == rgb.shape
    torch.testing.assert_close(grey[:, 0], grey[:, 1], atol=2e-3, rtol=0)  # no colour left
    with pytest.raises(InferenceError, match=r"expected RGB images of shape \(N, 3, 16, 16\)"):
        inference.colorize(colour, torch.rand(1, 3, 8, 8), n=2)


def test_transfer_single_image_and_batch(colour: Model) -> None:
    generator = torch.Generator().manual_seed(0)
    source, target = torch.rand(2, 3, SIZE, SIZE, generator=generator)
    single = inference.transfer(colour, source, target)
    assert single.shape == (3, SIZE, SIZE)
    batch = inference.transfer(
        colour, source[None].repeat(2, 1, 1, 1), target[None].repeat(2, 1, 1, 1)
    )
    assert batch.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(batch[0], single)
    with pytest.raises(InferenceError, match="differ in shape"):
        inference.transfer(colour, source[None], target[None].repeat(2, 1, 1, 1))


@pytest.mark.parametrize(
    "call",
    [
        lambda m: inference.colorize(m, torch.rand(1, 3, SIZE, SIZE), 2),
        lambda m: inference.transfer(m, torch.rand(3, SIZE, SIZE), torch.rand(3, SIZE, SIZE)),
        lambda m: inference.condition_size(m),
    ],
    ids=["colorize", "transfer", "condition_size"],
)
def test_colorization_functions_refuse_an_unconditional_model(vector: Model, call: Any) -> None:
    with pytest.raises(InferenceError, match=r"unconditional data \(ring8\).*colorization model"):
        call(vector)


def test_the_package_exposes_inference_lazily() -> None:
    assert agekit.evaluation.inference is inference
