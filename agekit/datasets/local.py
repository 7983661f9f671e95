"""Data sets read from a local folder. agekit never downloads: a missing file is an error that says
which path was searched and what layout it should have."""

from __future__ import annotations

import pickle
from abc import abstractmethod
from collections.abc import Sequence
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
    fit_images,
    in_chunks,
    list_images,
    pil_to_tensor,
    split_indices,
    to_signed_unit,
)


def _root(root: str) -> Path:
    if not isinstance(root, str | Path) or not str(root).strip():
        raise ValueError(f"root must be a non-empty path, got {root!r}")
    return Path(root).expanduser()


# Arrays with an official split -------------------------------------------------------------------
class _ArraySource(DataSource):
    """A set with an official train/test split whose raw uint8 images fit in memory.

    Files are checked when the source is created, but read only when a split is first used.
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
        return fit_images(to_signed_unit(raw, 255.0), self.image_size, self.resize)

    def split(self, name: SplitName) -> Dataset[Any]:
        raw, labels = self._raw_split(name)
        return ImageArrayDataset(raw, labels, self._process)

    def tensors(self, name: SplitName) -> tuple[Tensor, Tensor]:
        name = check_split(name)
        if name not in self._tensors:
            raw, labels = self._raw_split(name)
            self._tensors[name] = (in_chunks(raw, self._process).contiguous(), labels)
        return self._tensors[name]

    def _missing(self, folder: Path, names: Sequence[str], layout: str) -> None:
        if not all((folder / n).is_file() for n in names):
            raise DatasetNotFoundError(type(self).__name__, self.root, layout)

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
    """The full MNIST (60,000 train / 10,000 test) in torchvision's layout.

    28x28 digits are padded to 32x32 by default, like MNIST5k.
    """

    channels = 1

    def __init__(self, root: str, image_size: int = 32, resize: Fit = "pad") -> None:
        super().__init__(root, image_size, resize)

    def _check_files(self) -> None:
        names = [n for pair in _MNIST_FILES.values() for n in pair]
        layout = (
            f"{self.root}/MNIST/raw/{{{', '.join(names)}}} (uncompressed, torchvision's layout)"
        )
        self._missing(self.root / "MNIST" / "raw", names, layout)

    def _load(self, name: SplitName) -> tuple[Tensor, Tensor]:
        # the idx format is a few lines to read; torchvision's MNIST class costs seconds to import
        images_file, labels_file = _MNIST_FILES[name]
        raw = self.root / "MNIST" / "raw"
        images = _read_idx(raw / images_file)
        labels = _read_idx(raw / labels_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"MNIST: {raw} holds inconsistent files for the {name} split")
        x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)
        return x, torch.from_numpy(labels.astype(np.int64))


def _read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte idx file (MNIST's format): magic 0x08 0x0N, N big-endian sizes, data."""
    data = path.read_bytes()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class CIFAR10(_ArraySource):
    """CIFAR-10 (50,000 train / 10,000 test, 32x32 RGB) from the python pickle batches."""

    channels = 3
    _folder = "cifar-10-batches-py"
    _files: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
    }

    def __init__(self, root: str, image_size: int = 32, resize: Fit = "resize") -> None:
        super().__init__(root, image_size, resize)

    def _folder_path(self) -> Path:
        # root may also be the batches folder itself
        nested = self.root / self._folder
        return nested if nested.is_dir() else self.root

    def _check_files(self) -> None:
        names = [*self._files["train"], *self._files["test"]]
        layout = (
            f"{self.root}/{self._folder}/{{data_batch_1..5, test_batch}} (the python version, "
            "as torchvision's CIFAR10 unpacks it)"
        )
        self._missing(self._folder_path(), names, layout)

    def _load(self, name: SplitName) -> tuple[Tensor, Tensor]:
        # read the pickles directly: torchvision's class would also demand batches.meta and md5s
        images, labels = [], []
        for file in self._files[name]:
            with open(self._folder_path() / file, "rb") as handle:
                entry = pickle.load(handle, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8))
            labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        x = torch.from_numpy(np.concatenate(images).reshape(-1, 3, 32, 32))
        return x, torch.tensor(labels, dtype=torch.int64)


class SVHN(_ArraySource):
    """SVHN cropped digits (73,257 train / 26,032 test, 32x32 RGB); label 10 is mapped to 0."""

    channels = 3
    _files: ClassVar[dict[str, str]] = {"train": "train_32x32.mat", "test": "test_32x32.mat"}

    def __init__(self, root: str, image_size: int = 32, resize: Fit = "resize") -> None:
        super().__init__(root, image_size, resize)

    def _check_files(self) -> None:
        names = list(self._files.values())
        layout = f"{self.root}/{{{', '.join(names)}}} (torchvision's SVHN layout)"
        self._missing(self.root, names, layout)

    def _load(self, name: SplitName) -> tuple[Tensor, Tensor]:
        from scipy.io import loadmat

        mat = loadmat(str(self.root / self._files[name]))
        x = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8)
        labels = mat["y"].astype(np.int64).reshape(-1)
        labels[labels == 10] = 0
        return torch.from_numpy(x), torch.from_numpy(labels)


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
        return ImageFilesDataset(files, labels, self._load_image)

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

        with Image.open(path) as image:
            face = image.convert("RGB").resize((64, 78), Image.Resampling.BILINEAR)
            face = face.crop((0, 7, 64, 71))
            if self.image_size != 64:
                size = (self.image_size, self.image_size)
                face = face.resize(size, Image.Resampling.BILINEAR)
            return pil_to_tensor(face)


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
        from PIL import Image

        size = self.image_size
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            width, height = rgb.size
            scale = size / min(width, height)
            new = (max(size, round(width * scale)), max(size, round(height * scale)))
            rgb = rgb.resize(new, Image.Resampling.BILINEAR)
            left, top = (new[0] - size) // 2, (new[1] - size) // 2
            return pil_to_tensor(rgb.crop((left, top, left + size, top + size)))


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
