"""Built-in data sets: shapes, ranges, deterministic disjoint splits, registry creation, errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fake_mnist import write_fake_mnist
from PIL import Image

import agekit
from agekit.components import ClassifierSource, DataSource
from agekit.datasets import NO_LABEL, DatasetNotFoundError
from agekit.datasets._common import split_indices
from agekit.datasets.embedded import MNIST5k, StackedMNIST
from agekit.evaluation.scoring import default_metrics
from agekit.registry import REGISTRY, ComponentOptionsError

EMBEDDED = ["digits", "mnist5k", "stacked-mnist"]
TOY = ["ring8", "grid25"]
LOCAL = ["mnist", "stacked-mnist-local", "cifar10", "svhn", "celeba", "image-folder"]
ALL = EMBEDDED + TOY + LOCAL


def create(name: str, **options: Any) -> Any:
    return agekit.create("dataset", name, **options)


# registry ------------------------------------------------------------------------------------
def test_every_name_is_registered() -> None:
    assert set(ALL) <= set(agekit.available("dataset"))


@pytest.mark.parametrize("name", EMBEDDED + TOY)
def test_create_and_base_class(name: str) -> None:
    source = create(name)
    assert isinstance(source, agekit.components.DataSource)
    assert source.kind == ("vector" if name in TOY else "image")


# embedded image sets -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "options", "shape", "sizes"),
    [
        ("digits", {}, (1, 32, 32), (1797 - 359, 359)),
        ("mnist5k", {}, (1, 32, 32), (4000, 1000)),
        ("mnist5k", {"image_size": 28, "test_fraction": 0.1}, (1, 28, 28), (4500, 500)),
        ("digits", {"image_size": 16, "resize": "pad"}, (1, 16, 16), (1797 - 359, 359)),
        ("stacked-mnist", {"size": 3000, "test_size": 500}, (3, 32, 32), (3000, 500)),
    ],
)
def test_embedded_shapes_dtypes_range(
    name: str, options: dict, shape: tuple[int, ...], sizes: tuple[int, int]
) -> None:
    source = create(name, **options)
    assert source.shape == shape
    for split, size in zip(("train", "test"), sizes, strict=True):
        x, labels = source.tensors(split)
        assert x.shape == (size, *shape) and x.dtype == torch.float32
        assert labels.shape == (size,) and labels.dtype == torch.int64
        assert x.min() >= -1.0 and x.max() <= 1.0
        assert x.min() == -1.0 and x.max() > 0.9  # the full range is used
        item_x, item_label = source.split(split)[size - 1]
        assert torch.equal(item_x, x[-1]) and int(item_label) == int(labels[-1])
        assert len(source.split(split)) == size


def test_mnist5k_is_padded_by_two_and_loads_fast() -> None:
    import time

    from agekit.datasets import embedded

    embedded._mnist5k_raw.cache_clear()  # time a cold load (CSV parse + padding)
    embedded._processed.cache_clear()
    start = time.perf_counter()
    x, labels = MNIST5k(seed=123).tensors("train")
    assert time.perf_counter() - start < 2.0
    border = torch.cat([x[:, :, :2].flatten(), x[:, :, -2:].flatten(), x[..., :2].flatten()])
    assert bool((border == -1).all())
    assert sorted(labels.unique().tolist()) == list(range(10))
    assert torch.bincount(labels).tolist() == [400] * 10  # stratified


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_embedded_splits_deterministic_and_disjoint(name: str) -> None:
    a, b = create(name, seed=3), create(name, seed=3)
    for split in ("train", "test"):
        assert torch.equal(a.tensors(split)[0], b.tensors(split)[0])
        assert torch.equal(a.tensors(split)[1], b.tensors(split)[1])
    other = create(name, seed=4)
    assert not torch.equal(a.tensors("test")[0], other.tensors("test")[0])
    train = {bytes(v.numpy().tobytes()) for v in a.tensors("train")[0]}
    test = [bytes(v.numpy().tobytes()) for v in a.tensors("test")[0]]
    assert sum(t in train for t in test) <= 2  # distinct digits (the raw data holds a few twins)


def test_split_indices_partition_stratified() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 30, 41])
    train, test = split_indices(len(labels), 0.2, seed=0, labels=labels)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[test]).tolist() == [2, 4, 6, 8]
    again = split_indices(len(labels), 0.2, seed=0, labels=labels)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


def test_stacked_mnist_modes_and_test_digits() -> None:
    source = StackedMNIST(size=6000, test_size=1000, seed=1)
    x, labels = source.tensors("train")
    assert labels.min() >= 0 and labels.max() <= 999
    assert labels.unique().numel() > 950  # 6,000 draws of 1,000 equally likely modes
    # each channel is a digit from the matching MNIST5k split; the label spells their classes
    digits, digit_labels = source.digits.tensors("train")
    triples, _ = source._stacks_of("train")
    for i in (0, 17, 5999):
        for c in range(3):
            assert torch.equal(x[i, c], digits[triples[i, c], 0])
        d = digit_labels[triples[i]].tolist()
        assert int(labels[i]) == 100 * d[0] + 10 * d[1] + d[2]
    # test stacks only use test-split digits
    test_x, _ = source.tensors("test")
    test_digits = {t.numpy().tobytes() for t in source.digits.tensors("test")[0][:, 0]}
    assert all(test_x[i, c].numpy().tobytes() in test_digits for i in range(50) for c in range(3))
    again = StackedMNIST(size=6000, test_size=1000, seed=1)
    assert torch.equal(again.tensors("test")[1], source.tensors("test")[1])
    assert torch.equal(again.split("train")[42][0], x[42])


# toy mixtures -------------------------------------------------------------------------------
def test_ring8_has_eight_distinct_modes_on_the_unit_circle() -> None:
    ring = create("ring8", size=4000, test_size=800)
    assert ring.modes.shape == (8, 2) and ring.mode_std == 0.01
    assert torch.allclose(ring.modes.norm(dim=1), torch.ones(8), atol=1e-6)
    gaps = torch.cdist(ring.modes, ring.modes) + 10 * torch.eye(8)
    assert gaps.min() > 0.7  # 2 sin(pi/8) = 0.765: no repeated mode
    x, labels = ring.tensors("train")
    assert x.shape == (4000, 2) and x.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.bincount(labels).tolist() == [500] * 8
    assert (x - ring.modes[labels]).norm(dim=1).max() < 6 * 0.01


def test_grid25_has_25_distinct_modes() -> None:
    grid = create("grid25", size=2500, test_size=500)
    assert grid.modes.shape == (25, 2) and grid.mode_std == 0.05
    assert len({tuple(m.tolist()) for m in grid.modes}) == 25
    assert set(grid.modes.flatten().tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    x, labels = grid.tensors("test")
    assert x.shape == (500, 2) and grid.shape == (2,)
    nearest = torch.cdist(x, grid.modes).argmin(dim=1)
    assert torch.equal(nearest, labels)


@pytest.mark.parametrize("name", TOY)
def test_toy_deterministic_and_splits_differ(name: str) -> None:
    a, b = create(name, size=1000, seed=5), create(name, size=1000, seed=5)
    assert torch.equal(a.tensors("train")[0], b.tensors("train")[0])
    assert not torch.equal(a.tensors("train")[0][:100], a.tensors("test")[0][:100])
    assert not torch.equal(
        a.tensors("train")[0], create(name, size=1000, seed=6).tensors("train")[0]
    )
    x, label = a.split("test")[3]
    assert x.shape == (2,) and int(label) == int(a.tensors("test")[1][3])


# option errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("mnist5k", {"image_size": 0}, "image_size"),
        ("digits", {"image_size": -3}, "image_size"),
        ("mnist5k", {"test_fraction": 1.0}, "test_fraction"),
        ("mnist5k", {"resize": "stretch"}, "resize"),
        ("digits", {"colour": True}, "colour"),
        ("ring8", {"size": 0}, "size"),
        ("grid25", {"std": -1.0}, "std"),
        ("stacked-mnist", {"test_size": 0}, "test_size"),
        ("mnist", {}, "root"),
    ],
)
def test_bad_options_are_clear(name: str, options: dict, match: str) -> None:
    with pytest.raises(ComponentOptionsError, match=match):
        create(name, **options)


def test_bad_split_name() -> None:
    with pytest.raises(ValueError, match="train"):
        MNIST5k().tensors("validation")  # type: ignore[arg-type]


# local sets ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("mnist", "MNIST/raw/"),
        ("stacked-mnist-local", "MNIST/raw/"),
        ("cifar10", "cifar-10-batches-py/{data_batch_1..5, test_batch}"),
        ("svhn", "train_32x32.mat"),
        ("celeba", "img_align_celeba"),
        ("image-folder", "<class>"),
    ],
)
def test_missing_local_data_names_path_and_layout(tmp_path: Path, name: str, layout: str) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        create(name, root=str(root))
    message = str(info.value)
    assert str(root) in message and layout in message and "never downloads" in message
    assert isinstance(info.value, FileNotFoundError)


def _write_pngs(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    for i in range(count):
        pixels = generator.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")


def test_flat_image_folder(tmp_path: Path) -> None:
    _write_pngs(tmp_path, 10, (40, 30))
    (tmp_path / "notes.txt").write_text("not an image")
    source = create("image-folder", root=str(tmp_path), image_size=16, test_fraction=0.2)
    assert source.shape == (3, 16, 16)
    train, test = source.split("train"), source.split("test")
    assert (len(train), len(test)) == (8, 2)
    x, label = train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and label == NO_LABEL
    assert x.min() >= -1 and x.max() <= 1
    assert not set(source.files("train")) & set(source.files("test"))
    again = create("image-folder", root=str(tmp_path), image_size=16, test_fraction=0.2)
    assert again.files("test") == source.files("test")
    assert source.tensors("train") is None
    # torchvision's Resize(16) (shorter side) + CenterCrop(16) on the PIL image
    from torchvision.transforms import v2

    pipeline = v2.Compose([v2.Resize(16), v2.CenterCrop(16), v2.PILToTensor()])
    with Image.open(source.files("train")[0]) as image:
        expected = pipeline(image.convert("RGB")).float() / 127.5 - 1
    assert torch.allclose(x, expected, atol=1e-6)


def test_class_folders_and_official_split(tmp_path: Path) -> None:
    for cls in ("cat", "dog"):
        _write_pngs(tmp_path / "pool" / cls, 5, (20, 20))
        _write_pngs(tmp_path / "split" / "train" / cls, 3, (20, 20))
        _write_pngs(tmp_path / "split" / "val" / cls, 2, (20, 20))
    pooled = create("image-folder", root=str(tmp_path / "pool"), image_size=8, test_fraction=0.2)
    assert pooled.classes == ["cat", "dog"]
    assert sorted(label for _, label in pooled.split("test")) == [0, 1]  # stratified
    official = create("image-folder", root=str(tmp_path / "split"), image_size=8)
    assert (len(official.split("train")), len(official.split("test"))) == (6, 4)
    assert all(p.parent.parent.name == "val" for p in official.files("test"))
    assert official.split("test")[3][0].shape == (3, 8, 8)


def test_celeba_crop(tmp_path: Path) -> None:
    folder = tmp_path / "img_align_celeba"
    _write_pngs(folder, 4, (178, 218))
    source = create("celeba", root=str(tmp_path), test_fraction=0.25)
    assert source.shape == (3, 64, 64)
    x, _ = source.split("test")[0]
    assert x.shape == (3, 64, 64)
    small = create("celeba", root=str(folder), image_size=32, test_fraction=0.25)
    assert small.split("train")[0][0].shape == (3, 32, 32)
    # the crop is rows 7..71 of the 64x78 resize
    path = source.files("test")[0]
    expected = Image.open(path).convert("RGB").resize((64, 78), Image.Resampling.BILINEAR)
    pixels = np.asarray(expected)[7:71].astype(np.float32) / 127.5 - 1
    assert np.allclose(x.permute(1, 2, 0).numpy(), pixels, atol=1e-5)


def _skip_md5(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Let torchvision accept fake files of a set it md5-checks.

    torchvision's CIFAR10 and SVHN compare every file with the md5 sum of the official download,
    which small fake files cannot match; patching the class's ``_check_integrity`` (and, for
    CIFAR10, the module-level ``check_integrity`` its ``_load_meta`` calls for batches.meta) keeps
    the rest of the real loading path (torchvision reading the files, agekit's conversion) tested.
    """
    from torchvision import datasets

    monkeypatch.setattr(getattr(datasets, name), "_check_integrity", lambda self: True)
    if name == "CIFAR10":
        monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *args, **kwargs: True)


def _write_fake_cifar10(folder: Path) -> None:
    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    for name, count in [*((f"data_batch_{i}", 4) for i in range(1, 6)), ("test_batch", 3)]:
        entry = {
            "data": generator.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            "labels": generator.integers(0, 10, size=count).tolist(),
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)


def test_fake_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_fake_cifar10(folder)
    _skip_md5(monkeypatch, "CIFAR10")
    source = create("cifar10", root=str(tmp_path))
    assert source.shape == (3, 32, 32)
    x, labels = source.tensors("train")
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32 and labels.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    with open(folder / "data_batch_1", "rb") as handle:
        first = pickle.load(handle)
    assert torch.allclose(
        x[0, 1, 0, :3], torch.tensor(first["data"][0, 1024:1027]) / 127.5 - 1, atol=1e-6
    )
    assert labels[:4].tolist() == first["labels"]
    assert source.tensors("test")[0].shape == (3, 3, 32, 32)
    assert create("cifar10", root=str(tmp_path), image_size=64).split("test")[2][0].shape == (
        3,
        64,
        64,
    )
    # root may also be the batches folder itself
    inner = create("cifar10", root=str(folder))
    assert torch.equal(inner.tensors("train")[0], x)


def test_cifar10_missing_meta_is_reported_before_torchvision(tmp_path: Path) -> None:
    _write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"batches\.meta") as info:
        create("cifar10", root=str(tmp_path))
    assert str(tmp_path) in str(info.value) and "never downloads" in str(info.value)


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_files_torchvision_rejects_raise_dataset_not_found(tmp_path: Path, name: str) -> None:
    # fake files exist, so agekit's own check passes; torchvision's md5 check then rejects them
    if name == "cifar10":
        _write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    else:
        _write_fake_svhn(tmp_path)
    source = create(name, root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as info:
        source.tensors("train")
    message = str(info.value)
    assert str(tmp_path) in message and "never downloads" in message
    assert "torchvision" in message and "corrupted" in message  # torchvision's own reason
    assert isinstance(info.value.__cause__, RuntimeError)


def test_corrupt_mnist_raises_dataset_not_found(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(b"not an idx file")
    source = create("mnist", root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="torchvision could not load") as info:
        source.split("test")
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("size", "out", "mode"),
    [(28, 32, "pad"), (35, 32, "pad"), (32, 32, "pad"), (32, 64, "resize"), (32, 13, "resize")],
)
def test_torchvision_fit_matches_the_torch_only_helper(size: int, out: int, mode: str) -> None:
    from agekit.datasets._common import fit_images
    from agekit.datasets.local import fit_images_v2

    x = torch.rand(5, 3, size, size) * 2 - 1
    fitted = fit_images_v2(x.clone(), out, mode)  # type: ignore[arg-type]
    assert fitted.shape == (5, 3, out, out)
    assert torch.allclose(fitted, fit_images(x.clone(), out, mode), atol=1e-6)  # type: ignore[arg-type]


def test_importing_local_sets_does_not_import_torchvision() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agekit, agekit.datasets, agekit.datasets.local; "
        "agekit.available('dataset'); assert 'torchvision' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fake_mnist(tmp_path: Path) -> None:
    images, labels_written = write_fake_mnist(tmp_path, train=6, test=4)["test"]
    source = create("mnist", root=str(tmp_path))
    x, labels = source.tensors("test")
    assert x.shape == (4, 1, 32, 32) and labels.shape == (4,)
    assert torch.equal(labels, torch.from_numpy(labels_written.astype(np.int64)))
    assert torch.allclose(
        x[:, 0, 2:30, 2:30], torch.from_numpy(images / 127.5 - 1).float(), atol=1e-6
    )
    assert bool((x[:, :, :2] == -1).all())
    assert len(source.split("train")) == 6


def _write_fake_svhn(folder: Path) -> None:
    from scipy.io import savemat

    generator = np.random.default_rng(0)
    for name, count in (("train", 5), ("test", 3)):
        images = generator.integers(0, 256, size=(32, 32, 3, count), dtype=np.uint8)
        labels = np.array([[10], [1], [2], [3], [4]][:count], dtype=np.uint8)
        savemat(folder / f"{name}_32x32.mat", {"X": images, "y": labels})


def test_fake_svhn_and_lazy_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy.io import loadmat

    _write_fake_svhn(tmp_path)
    _skip_md5(monkeypatch, "SVHN")
    source = create("svhn", root=str(tmp_path), image_size=16)
    assert source.shape == (3, 16, 16) and source._raw == {}  # shape needs no data
    x, labels = source.tensors("test")
    assert x.shape == (3, 3, 16, 16) and labels.tolist() == [0, 1, 2]  # label 10 is digit 0
    item, label = source.split("train")[4]
    assert item.shape == (3, 16, 16) and label == 4
    full = create("svhn", root=str(tmp_path)).tensors("test")[0]  # 32x32: no resize
    pixels = loadmat(str(tmp_path / "test_32x32.mat"))["X"]  # (H, W, C, N)
    expected = torch.from_numpy(pixels.transpose(3, 2, 0, 1).astype(np.float32) / 127.5 - 1)
    assert torch.allclose(full, expected, atol=1e-6)


# what each data set declares -----------------------------------------------------------------
#: The name-keyed tables that the declarations replaced (evaluation.CLASSIFIER_DATASETS,
#: metrics.classifier.CLASSIFIER_SOURCES, metrics.modes.MIXTURE_DATASETS / STACKED_DATASETS).
CLASSIFIERS = {
    "digits": ClassifierSource("digits"),
    "mnist5k": ClassifierSource("mnist5k"),
    "stacked-mnist": ClassifierSource("mnist5k", per_channel=True),
    "stacked-mnist-local": ClassifierSource("mnist", per_channel=True, base="digits"),
}
KNOWN_MODES = {
    "ring8": "mixture",
    "grid25": "mixture",
    "stacked-mnist": "classifier",
    "stacked-mnist-local": "classifier",
}
DEFAULTS = {
    "digits": ["reconstruction", "sample-quality", "latent-divergence"],
    "mnist5k": ["reconstruction", "sample-quality", "latent-divergence"],
    "stacked-mnist": ["reconstruction", "sample-quality", "mode-coverage", "latent-divergence"],
    "stacked-mnist-local": [
        "reconstruction",
        "sample-quality",
        "mode-coverage",
        "latent-divergence",
    ],
    "ring8": ["reconstruction", "mode-coverage", "latent-divergence"],
    "grid25": ["reconstruction", "mode-coverage", "latent-divergence"],
}


@pytest.mark.parametrize("name", [*ALL, "colour-crops", "lab-folder"])
def test_capabilities_are_declared_on_the_class(name: str) -> None:
    cls = REGISTRY.load("dataset", name)
    assert cls.evaluation_classifier == CLASSIFIERS.get(name)
    assert cls.known_modes == KNOWN_MODES.get(name)
    expected = DEFAULTS.get(name, ["reconstruction", "latent-divergence"])
    assert default_metrics(name, cls.kind) == expected
    assert default_metrics(name) == expected
    assert default_metrics(cls) == expected


def test_default_metrics_follow_the_declarations() -> None:
    class Plain(DataSource):
        @property
        def shape(self) -> tuple[int, ...]:
            return (2,)

        def split(self, name: Any) -> Any:
            raise NotImplementedError

    class Vector(Plain):
        kind = "vector"

    class Classified(Plain):
        evaluation_classifier = ClassifierSource("digits")

    class Declared(Classified):
        default_metrics = ("reconstruction", "my-metric")

    assert default_metrics(Plain) == ["reconstruction", "latent-divergence"]
    assert default_metrics(Vector) == ["reconstruction", "mode-coverage", "latent-divergence"]
    assert default_metrics(Classified) == [
        "reconstruction",
        "sample-quality",
        "latent-divergence",
    ]
    assert default_metrics(Declared) == ["reconstruction", "my-metric"]
    assert default_metrics(Declared()) == ["reconstruction", "my-metric"]
