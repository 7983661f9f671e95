"""Data sets of image files in a local folder (CelebA, any class-per-folder image folder), read
on access; an image that does not decode raises :class:`UnreadableImageError` naming the file.
torchvision and PIL are imported inside the functions that use them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from agekit.components import DataSource
from agekit.datasets._common import (
    NO_LABEL,
    READABLE_IMAGE_SUFFIXES,
    DatasetNotFoundError,
    ImageFilesDataset,
    SplitName,
    check_fraction,
    check_positive,
    check_split,
    list_images,
    root_path,
    split_indices,
    to_signed_unit,
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


# Folders of image files --------------------------------------------------------------------------
class _FileSource(DataSource):
    """Images read from files on access, split with a seeded (per-class) permutation of the sorted
    file list, so the same options give the same split in every process."""

    def __init__(
        self, root: str, image_size: int, seed: int, test_fraction: float, name: str
    ) -> None:
        self.root = root_path(root)
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
            p for p in sub.rglob("*") if p.suffix.lower() in READABLE_IMAGE_SUFFIXES and p.is_file()
        )
        if images:
            classes[sub.name] = images
    return classes or {None: list_images(folder)}
