"""Data sets with an official train/test split read by torchvision's classes from a local
folder (MNIST, CIFAR-10, SVHN; ``download=False`` always). torchvision is imported inside the
functions that use it: it takes seconds to import, and creating components must not pay for it.
"""

from __future__ import annotations

import pickle
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from agekit.components import ClassifierSource, DataSource
from agekit.datasets._common import (
    DatasetNotFoundError,
    Fit,
    ImageArrayDataset,
    SplitName,
    check_fit,
    check_positive,
    check_split,
    in_chunks,
    root_path,
    to_signed_unit,
)
from agekit.datasets.embedded import StackedDigits

#: What torchvision raises on files that exist but do not load (bad md5, truncated, wrong format).
_LOAD_ERRORS = (
    RuntimeError,
    ValueError,
    OSError,
    AssertionError,
    EOFError,
    KeyError,
    pickle.UnpicklingError,
)


def fit_images_v2(x: Tensor, image_size: int, mode: Fit) -> Tensor:
    """Bring (N, C, H, W) images in [-1, 1] to (N, C, image_size, image_size) with torchvision.

    "pad" centres the pixels on a background of -1 (``transforms.v2.functional.pad``), or
    centre-crops an image larger than ``image_size``; "resize" rescales bilinearly with antialias
    (``transforms.v2.functional.resize``). Same offsets and results as ``_common.fit_images``,
    the torch-only twin the embedded sets use so that loading them never imports torchvision.
    """
    height, width = x.shape[-2:]
    if height == image_size and width == image_size:
        return x
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    if mode == "resize":
        out = TF.resize(
            x, [image_size, image_size], interpolation=InterpolationMode.BILINEAR, antialias=True
        )
        return out.clamp_(-1.0, 1.0)
    top, left = (image_size - height) // 2, (image_size - width) // 2
    padding = [left, top, image_size - width - left, image_size - height - top]  # l, t, r, b
    if any(p > 0 for p in padding):
        x = TF.pad(x, [max(p, 0) for p in padding], fill=-1.0)
    if any(p < 0 for p in padding):  # larger than image_size: keep the centre
        x = TF.crop(x, max(-top, 0), max(-left, 0), image_size, image_size)
    return x


# Arrays with an official split -------------------------------------------------------------------
class _ArraySource(DataSource):
    """A set with an official train/test split whose raw uint8 images fit in memory.

    Files are checked when the source is created (so a missing file raises agekit's
    DatasetNotFoundError, never torchvision's generic error), but read only when a split is first
    used, by torchvision's class for the set with ``download=False``.
    """

    channels: int

    def __init__(self, root: str, image_size: int, resize: Fit) -> None:
        self.root = root_path(root)
        self.image_size = check_positive("image_size", image_size)
        self.resize = check_fit(resize)
        self._check_files()
        self._raw: dict[str, tuple[Tensor, Tensor]] = {}
        self._tensors: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    @property
    @abstractmethod
    def layout(self) -> str:
        """The expected files, for error messages."""

    @abstractmethod
    def _check_files(self) -> None:
        """Raise DatasetNotFoundError unless every file the set needs exists."""

    @abstractmethod
    def _load(self, name: SplitName) -> tuple[Tensor, Tensor]:
        """(uint8 images (N, C, H, W), int64 labels) of one split."""

    def _raw_split(self, name: SplitName) -> tuple[Tensor, Tensor]:
        name = check_split(name)
        if name not in self._raw:
            self._raw[name] = self._load(name)
        return self._raw[name]

    def _process(self, raw: Tensor) -> Tensor:
        return fit_images_v2(to_signed_unit(raw, 255.0), self.image_size, self.resize)

    def split(self, name: SplitName) -> Dataset[Any]:
        raw, labels = self._raw_split(name)
        return ImageArrayDataset(raw, labels, self._process)

    def tensors(self, name: SplitName) -> tuple[Tensor, Tensor]:
        name = check_split(name)
        if name not in self._tensors:
            raw, labels = self._raw_split(name)
            self._tensors[name] = (in_chunks(raw, self._process).contiguous(), labels)
        return self._tensors[name]

    def _missing(self, folder: Path, names: Sequence[str]) -> None:
        if not all((folder / n).is_file() for n in names):
            raise DatasetNotFoundError(type(self).__name__, self.root, self.layout)

    def _torchvision(self, make: Callable[[], Any]) -> Any:
        """``make()`` (a torchvision data set), its errors re-raised as DatasetNotFoundError."""
        try:
            return make()
        except _LOAD_ERRORS as error:  # files present but rejected, e.g. an md5 mismatch
            detail = f"torchvision could not load them: {error}"
            raise DatasetNotFoundError(
                type(self).__name__, self.root, self.layout, detail=detail
            ) from error

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, image_size={self.image_size}, "
            f"resize={self.resize!r})"
        )


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class MNIST(_ArraySource):
    """The full MNIST (60,000 train / 10,000 test) read by ``torchvision.datasets.MNIST``.

    28x28 digits are padded to 32x32 by default, like MNIST5k.
    """

    channels = 1

    def __init__(self, root: str, image_size: int = 32, resize: Fit = "pad") -> None:
        super().__init__(root, image_size, resize)

    @property
    def layout(self) -> str:
        names = [n for pair in _MNIST_FILES.values() for n in pair]
        return f"{self.root}/MNIST/raw/{{{', '.join(names)}}} (uncompressed, torchvision's layout)"

    def _check_files(self) -> None:
        self._missing(self.root / "MNIST" / "raw", [n for p in _MNIST_FILES.values() for n in p])

    def _load(self, name: SplitName) -> tuple[Tensor, Tensor]:
        from torchvision import datasets

        data = self._torchvision(
            lambda: datasets.MNIST(str(self.root), train=name == "train", download=False)
        )
        images, labels = torch.as_tensor(data.data), torch.as_tensor(data.targets)
        return images.to(torch.uint8).unsqueeze(1), labels.to(torch.int64)


class StackedMNISTLocal(StackedDigits):
    """Stacked MNIST under the published protocol (Metz et al.'s unrolled GAN, VEEGAN, PacGAN):
    three digits of the full MNIST in ``root`` (torchvision's layout, as the ``mnist`` data set
    reads it) stacked as the R, G, B channels, 1,000 modes, label ``100 * d_R + 10 * d_G + d_B``.

    Train stacks draw from the 60,000 train digits, test stacks from the 10,000 test digits only.
    The default ``size`` is the 128,000 training stacks of PacGAN's code. The evaluation
    classifier is agekit's, trained on the full train split of this folder's MNIST (the stand-in
    for the published pretrained MNIST classifiers) and cached under its path.
    """

    # classifier_for trains on `self.digits`, this folder's MNIST, one channel at a time.
    evaluation_classifier = ClassifierSource("mnist", per_channel=True, base="digits")
    digits: MNIST

    def __init__(
        self,
        root: str,
        size: int = 128000,
        test_size: int = 10000,
        image_size: int = 32,
        resize: Fit = "pad",
        seed: int = 0,
    ) -> None:
        # An absolute root: the classifier's cache key holds the digits' repr, and a relative
        # path would name different folders from different working directories.
        absolute = str(root_path(root).absolute())
        super().__init__(MNIST(absolute, image_size, resize), size, test_size, seed)

    def __repr__(self) -> str:
        d = self.digits
        return (
            f"StackedMNISTLocal(root={str(d.root)!r}, size={self.size}, "
            f"test_size={self.test_size}, image_size={d.image_size}, resize={d.resize!r}, "
            f"seed={self.seed})"
        )


class CIFAR10(_ArraySource):
    """CIFAR-10 (50,000 train / 10,000 test, 32x32 RGB) read by ``torchvision.datasets.CIFAR10``
    from the python pickle batches (torchvision checks their md5 sums)."""

    channels = 3
    _folder = "cifar-10-batches-py"
    _files: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
    }
    _meta = "batches.meta"

    def __init__(self, root: str, image_size: int = 32, resize: Fit = "resize") -> None:
        super().__init__(root, image_size, resize)

    def _parent(self) -> Path:
        """The root torchvision wants: root may also be the cifar-10-batches-py folder itself."""
        nested = self.root / self._folder
        if not nested.is_dir() and self.root.name == self._folder:
            return self.root.parent
        return self.root

    @property
    def layout(self) -> str:
        return (
            f"{self.root}/{self._folder}/{{data_batch_1..5, test_batch}} and {self._meta} (the "
            "python version, as torchvision's CIFAR10 unpacks it)"
        )

    def _check_files(self) -> None:
        names = [*self._files["train"], *self._files["test"], self._meta]
        self._missing(self._parent() / self._folder, names)

    def _load(self, name: SplitName) -> tuple[Tensor, Tensor]:
        from torchvision import datasets

        data = self._torchvision(
            lambda: datasets.CIFAR10(str(self._parent()), train=name == "train", download=False)
        )
        images = torch.from_numpy(np.asarray(data.data, dtype=np.uint8))  # (N, H, W, C)
        return images.permute(0, 3, 1, 2).contiguous(), torch.tensor(
            data.targets, dtype=torch.int64
        )


class SVHN(_ArraySource):
    """SVHN cropped digits (73,257 train / 26,032 test, 32x32 RGB) read by
    ``torchvision.datasets.SVHN`` (which checks md5 sums and maps label 10 to 0)."""

    channels = 3
    _files: ClassVar[dict[str, str]] = {"train": "train_32x32.mat", "test": "test_32x32.mat"}

    def __init__(self, root: str, image_size: int = 32, resize: Fit = "resize") -> None:
        super().__init__(root, image_size, resize)

    @property
    def layout(self) -> str:
        names = ", ".join(self._files.values())
        return f"{self.root}/{{{names}}} (torchvision's SVHN layout)"

    def _check_files(self) -> None:
        self._missing(self.root, list(self._files.values()))

    def _load(self, name: SplitName) -> tuple[Tensor, Tensor]:
        from torchvision import datasets

        data = self._torchvision(lambda: datasets.SVHN(str(self.root), split=name, download=False))
        images = torch.from_numpy(np.ascontiguousarray(data.data, dtype=np.uint8))  # (N, C, H, W)
        return images, torch.from_numpy(np.asarray(data.labels, dtype=np.int64).reshape(-1))
