"""Helpers shared by the data sets: option checks, seeded splits, image scaling and fitting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

Fit = Literal["pad", "resize"]
SplitName = Literal["train", "test"]

#: File suffixes the folder-based data sets read as images.
READABLE_IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff"}
)
#: Label of samples from data sets without classes (a -1 fails loudly if used as a class index).
NO_LABEL = -1


class DatasetNotFoundError(FileNotFoundError):
    """The files of a local data set are not where the options say; agekit never downloads."""

    def __init__(
        self, dataset: str, path: str | Path, layout: str, *, detail: str | None = None
    ) -> None:
        self.dataset = dataset
        self.path = str(path)
        self.layout = layout
        self.detail = detail
        # detail: why files that are there were rejected (e.g. torchvision's md5 check)
        found = f"no data found at {self.path!r}"
        if detail is not None:
            found = f"the data at {self.path!r} could not be used ({detail})"
        super().__init__(
            f"{dataset}: {found}. Expected layout: {layout}. "
            "agekit never downloads data sets: put the files there yourself (for example with "
            "torchvision's download=True on a machine with internet access) and pass that folder "
            "as root."
        )


# option checks -----------------------------------------------------------------------------------
def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_fraction(test_fraction: float) -> float:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    return float(test_fraction)


def check_fit(resize: str) -> Fit:
    if resize not in ("pad", "resize"):
        raise ValueError(f"resize must be 'pad' or 'resize', got {resize!r}")
    return resize  # type: ignore[return-value]


def check_split(name: str) -> SplitName:
    if name not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {name!r}")
    return name  # type: ignore[return-value]


def rng(seed: int, stream: int) -> np.random.Generator:
    """A generator for one purpose of one seed; PCG64 gives the same numbers on every platform."""
    return np.random.default_rng([stream, seed])


# splits ------------------------------------------------------------------------------------------
def split_indices(
    n: int, test_fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (and, given labels, per-class stratified) train/test indices, each sorted."""
    generator = rng(seed, 0)
    if labels is None:
        groups = [np.arange(n)]
    else:
        labels = np.asarray(labels)
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for group in groups:
        perm = generator.permutation(group)
        # at least one test item per group when possible, so every class is evaluated
        n_test = min(max(round(len(group) * test_fraction), 1), len(group) - 1)
        test.append(perm[:n_test])
        train.append(perm[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# images ------------------------------------------------------------------------------------------
def to_signed_unit(x: Tensor, max_value: float) -> Tensor:
    """Scale values in [0, max_value] to float32 in [-1, 1]."""
    return x.to(torch.float32).mul_(2.0 / max_value).sub_(1.0)


def fit_images(x: Tensor, image_size: int, mode: Fit) -> Tensor:
    """Bring (N, C, H, W) images in [-1, 1] to (N, C, image_size, image_size).

    "pad" keeps the pixels and adds background (-1) around them, or centre-crops when the images
    are larger; "resize" rescales bilinearly (antialiased when shrinking).
    """
    # plain torch ops, the same ones torchvision's tensor pad/resize run: importing torchvision
    # costs seconds (it imports its model zoo), which would dominate loading the embedded sets.
    # The local sets use local.fit_images_v2 (transforms.v2); a test checks the two agree.
    height, width = x.shape[-2:]
    if height == image_size and width == image_size:
        return x
    if mode == "pad":
        top, left = (image_size - height) // 2, (image_size - width) // 2
        # negative padding crops, so larger images are centre-cropped
        padding = (left, image_size - width - left, top, image_size - height - top)
        return F.pad(x, padding, value=-1.0)
    out = F.interpolate(
        x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
    )
    return out.clamp_(-1.0, 1.0)


def in_chunks(x: Tensor, fn: Callable[[Tensor], Tensor], chunk: int = 8192) -> Tensor:
    """Apply a batched image transform in chunks, bounding the temporary memory."""
    if len(x) <= chunk:
        return fn(x)
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, len(x), chunk)])


class ImageArrayDataset(Dataset[tuple[Tensor, int]]):
    """Raw images kept as stored (uint8), processed one item at a time when read."""

    def __init__(self, raw: Tensor, labels: Tensor, process: Callable[[Tensor], Tensor]) -> None:
        self.raw = raw
        self.labels = labels
        self.process = process

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.process(self.raw[index : index + 1])[0], int(self.labels[index])


class ImageFilesDataset(Dataset[tuple[Tensor, int]]):
    """Images read from files on access (data sets too large to hold in memory)."""

    def __init__(
        self, files: Sequence[Path], labels: Sequence[int], load: Callable[[Path], Tensor]
    ) -> None:
        if len(files) != len(labels):
            raise ValueError("files and labels differ in length")
        self.files = list(files)
        self.labels = list(labels)
        self.load = load

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.load(self.files[index]), self.labels[index]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name so every process sees one order."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in READABLE_IMAGE_SUFFIXES and p.is_file()
    )


def root_path(root: str) -> Path:
    if not isinstance(root, str | Path) or not str(root).strip():
        raise ValueError(f"root must be a non-empty path, got {root!r}")
    return Path(root).expanduser()
