"""Data sets read from a local folder. agekit never downloads: a missing file is an error that says
which path was searched and what layout it should have.

MNIST, CIFAR-10 and SVHN are read by torchvision's data set classes (``download=False`` always),
and images are padded, cropped and resized with ``torchvision.transforms.v2``. torchvision is
imported inside the functions that use it: it takes seconds to import, and listing or creating
components must not pay for it.
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

from agekit.components import DataSource
from agekit.datasets._common import (
    IMAGE_SUFFIXES,
    NO_LABEL,
    DatasetNotFoundError,
    Fit,
    ImageArrayDataset,
    ImageFilesDataset,
    SplitName,
    check_fit,
    check_fraction,
    check_positive,
    check_split,
    in_chunks,
    list_images,
    split_indices,
    to_signed_unit,
)

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


class UnreadableImageError(ValueError):
    """An image file of a folder data set exists but cannot be decoded; the message names it."""


def _read_image(path: Path, load: Callable[[Path], Tensor]) -> Tensor:
    """``load(path)``, with PIL's and the OS's errors on a bad file raised as
    :class:`UnreadableImageError` naming the file (a DataLoader worker re-raises it as is)."""
    from PIL import UnidentifiedImageError

    try:
        return load(path)
    except UnreadableImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        # PIL raises OSError for truncated files, SyntaxError for some broken headers.
        reason = str(exc).replace(repr(str(path)), "").replace(str(path), "").strip(" :")
        reason = reason or type(exc).__name__
        raise UnreadableImageError(
            f"{path}: cannot read this file as an image ({reason}); repair or remove it"
        ) from exc


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


def _root(root: str) -> Path:
    if not isinstance(root, str | Path) or not str(root).strip():
        raise ValueError(f"root must be a non-empty path, got {root!r}")
    return Path(root).expanduser()


# Arrays with an official split -------------------------------------------------------------------
class _ArraySource(DataSource):
    """A set with an official train/test split whose raw uint8 images fit in memory.

    Files are checked when the source is created (so a missing file raises agekit's
    DatasetNotFoundError, never torchvision's generic error), but read only when a split is first
    used, by torchvision's class for the set with ``download=False``.
    """

    channels: int

    def __init__(self, root: str, image_size: int, resize: Fit) -> None:
        self.root = _root(root)
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


# Folders of image files --------------------------------------------------------------------------
class _FileSource(DataSource):
    """Images read from files on access, split with a seeded (per-class) permutation of the sorted
    file list, so the same options give the same split in every process."""

    def __init__(
        self, root: str, image_size: int, seed: int, test_fraction: float, name: str
    ) -> None:
        self.root = _root(root)
        self.image_size = check_positive("image_size", image_size)
        self.seed = int(seed)
        self.test_fraction = check_fraction(test_fraction)
        self.name = name
        self._splits: dict[str, tuple[list[Path], list[int]]] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def _set_pool(self, files: list[Path], labels: list[int]) -> None:
        """Split one pool of files into train and test."""
        stratify = np.asarray(labels) if labels and labels[0] != NO_LABEL else None
        train, test = split_indices(len(files), self.test_fraction, self.seed, stratify)
        for split, index in (("train", train), ("test", test)):
            self._splits[split] = ([files[i] for i in index], [labels[i] for i in index])

    @abstractmethod
    def _load_image(self, path: Path) -> Tensor: ...

    def split(self, name: SplitName) -> Dataset[Any]:
        files, labels = self._splits[check_split(name)]
        return ImageFilesDataset(files, labels, self._read)

    def _read(self, path: Path) -> Tensor:
        return _read_image(path, self._load_image)

    def files(self, name: SplitName) -> list[Path]:
        """The image files of a split, in order."""
        return list(self._splits[check_split(name)][0])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, image_size={self.image_size}, "
            f"seed={self.seed}, test_fraction={self.test_fraction})"
        )


class CelebA(_FileSource):
    """CelebA's aligned faces (img_align_celeba, 178x218) with the ALI/AGE crop.

    Each image is resized to 64x78 (W x H), rows 7-71 are kept (a 64x64 face) and the result is
    resized to ``image_size``. Unlabelled (label -1); a seeded split of the sorted file names.
    """

    def __init__(
        self, root: str, image_size: int = 64, seed: int = 0, test_fraction: float = 0.1
    ) -> None:
        super().__init__(root, image_size, seed, test_fraction, "CelebA")
        nested = self.root / "img_align_celeba"
        files = list_images(nested) or list_images(self.root)
        if len(files) < 2:
            raise DatasetNotFoundError(
                "CelebA",
                self.root,
                f"{self.root}/img_align_celeba/*.jpg or {self.root}/*.jpg (a flat folder of the "
                "aligned and cropped CelebA images, at least 2)",
            )
        self._set_pool(files, [NO_LABEL] * len(files))

    def _load_image(self, path: Path) -> Tensor:
        from PIL import Image
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        # on PIL images, v2's resize runs PIL's own bilinear resize: the reference crop exactly
        with Image.open(path) as image:
            face = TF.resize(image.convert("RGB"), [78, 64], InterpolationMode.BILINEAR)
        face = TF.crop(face, top=7, left=0, height=64, width=64)
        if self.image_size != 64:
            size = [self.image_size, self.image_size]
            face = TF.resize(face, size, InterpolationMode.BILINEAR)
        return to_signed_unit(TF.pil_to_tensor(face), 255.0)


class ImageFolder(_FileSource):
    """Any folder of images, resized (shorter side) and centre-cropped to ``image_size``.

    Layouts, tried in order: ``<root>/train`` with ``<root>/val`` (or ``test``) is an official
    split (ImageNet style); sub-folders of images are classes (torchvision's ImageFolder, labels in
    sorted folder order, a stratified seeded split); otherwise a flat folder of unlabelled images
    (label -1, a seeded split).
    """

    def __init__(
        self, root: str, image_size: int = 64, seed: int = 0, test_fraction: float = 0.1
    ) -> None:
        super().__init__(root, image_size, seed, test_fraction, "ImageFolder")
        self.classes: list[str] = []
        test_dir = next((self.root / d for d in ("val", "test") if (self.root / d).is_dir()), None)
        if (self.root / "train").is_dir() and test_dir is not None:
            pools = [_scan(self.root / "train"), _scan(test_dir)]
            if all(any(pool.values()) for pool in pools):
                train, test = self._labelled(pools)
                self._splits = {"train": train, "test": test}
                return
        ((files, labels),) = self._labelled([_scan(self.root)])
        if len(files) < 2:
            raise DatasetNotFoundError(
                "ImageFolder",
                self.root,
                f"{self.root}/<class>/*.png|jpg (class folders), {self.root}/*.png|jpg (flat), "
                f"or {self.root}/train/ with {self.root}/val/ in either form; at least 2 images",
            )
        self._set_pool(files, labels)

    def _labelled(
        self, pools: list[dict[str | None, list[Path]]]
    ) -> list[tuple[list[Path], list[int]]]:
        """Files and labels of each pool, with one class numbering (sorted names) shared by all."""
        self.classes = sorted({c for pool in pools for c in pool if c is not None})
        index = {name: i for i, name in enumerate(self.classes)}
        out = []
        for pool in pools:
            files = [p for name in sorted(pool, key=str) for p in pool[name]]
            labels = [
                NO_LABEL if name is None else index[name]
                for name in sorted(pool, key=str)
                for _ in pool[name]
            ]
            out.append((files, labels))
        return out

    def _load_image(self, path: Path) -> Tensor:
        return to_signed_unit(load_square_rgb(path, self.image_size), 255.0)


def load_square_rgb(path: Path, size: int) -> Tensor:
    """An image file as uint8 RGB (3, size, size): torchvision's Resize(size) (shorter side,
    bilinear) then CenterCrop(size), on the PIL image. Grayscale files are repeated to RGB.
    A file that does not decode raises :class:`UnreadableImageError` naming it."""
    from PIL import Image
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    def load(path: Path) -> Tensor:
        with Image.open(path) as image:
            rgb = TF.resize(image.convert("RGB"), size, InterpolationMode.BILINEAR)
        return TF.pil_to_tensor(TF.center_crop(rgb, [size, size]))

    return _read_image(Path(path), load)


def _scan(folder: Path) -> dict[str | None, list[Path]]:
    """Class name -> images (recursively) for sub-folders that hold images; else {None: flat}."""
    classes: dict[str | None, list[Path]] = {}
    if not folder.is_dir():
        return {None: []}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = sorted(
            p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if images:
            classes[sub.name] = images
    return classes or {None: list_images(folder)}
