"""Colour data for conditional AGE (colorization): x = the ab channels, condition = L.

Both sources give x = ab / 110 (2, S, S) and condition = L / 50 - 1 (1, S, S) (see
:mod:`agekit.util.lab`); split items are ``(x, label, condition)`` and ``display`` turns (x, L) back
into RGB in [-1, 1] for grids.

``colour-crops`` (embedded, offline): random square crops of the colour photographs shipped inside
scikit-image (astronaut, chelsea, coffee, rocket, hubble_deep_field, ihc, retina, motorcycle_left)
and scikit-learn (china, flower); only files present in the installed packages are used.
``lab-folder``: any RGB folder of images (``image-folder``'s layouts and split), e.g. Stanford
Cars at 64 px as in the paper, converted to (ab, L) on access.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from agekit.components import DataSource
from agekit.datasets._common import (
    SplitName,
    check_fraction,
    check_positive,
    check_split,
    rng,
)
from agekit.util.lab import network_to_rgb, rgb_to_network

#: (package, file inside the package) of every colour photograph colour-crops may use.
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "ihc": ("skimage", "data/ihc.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
}


def _photo_path(name: str) -> Path | None:
    package, relative = PHOTOS[name]
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location, relative)
        if path.is_file():
            return path
    return None


def available_photos() -> list[str]:
    """The photographs present offline in the installed packages, in PHOTOS order."""
    return [name for name in PHOTOS if _photo_path(name) is not None]


@functools.lru_cache(maxsize=32)
def _photo_lab(name: str, short_side: int) -> tuple[Tensor, Tensor]:
    """(x, condition) of a whole photograph resized (bilinear) so its shorter side is short_side."""
    from PIL import Image

    path = _photo_path(name)
    assert path is not None
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        width, height = rgb.size
        scale = short_side / min(width, height)
        size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        array = np.asarray(rgb, dtype=np.float64) / 255.0
    x, condition = rgb_to_network(torch.from_numpy(array).permute(2, 0, 1))
    return x.float(), condition.float()


def _display(x: Tensor, condition: Tensor | None) -> Tensor:
    if condition is None:
        raise ValueError("colour data are drawn from (ab, L): pass the conditions")
    return network_to_rgb(x.float(), condition.float()) * 2.0 - 1.0


class _LabSource(DataSource):
    """Colorization data: x is ab / 110 (2 channels), the condition L / 50 - 1 (1 channel)."""

    image_size: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (2, self.image_size, self.image_size)

    @property
    def condition_shape(self) -> tuple[int, ...]:
        return (1, self.image_size, self.image_size)

    def display(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return _display(x, condition)


class ColourCrops(_LabSource):
    """Random ``image_size`` crops of the embedded colour photographs, as (ab, L).

    Each photograph is first resized (bilinear) so that its shorter side is ``source_size``
    (default ``4 * image_size``, so a crop shows about a quarter of the photo's width), then
    ``crops_per_image`` crops are drawn at seeded random positions. The label is the photo's index.

    ``holdout = "images"`` (default): ``test_images`` whole photographs, chosen by a seeded
    permutation, give the test crops and are never seen in training. ``holdout = "regions"``:
    every photograph contributes; test crops come from its right-most ``test_fraction`` of columns
    and train crops from the rest (no pixel is shared).
    """

    def __init__(
        self,
        image_size: int = 64,
        source_size: int | None = None,
        crops_per_image: int = 400,
        holdout: Literal["images", "regions"] = "images",
        test_images: int = 2,
        test_fraction: float = 0.25,
        seed: int = 0,
    ) -> None:
        self.image_size = check_positive("image_size", image_size)
        self.source_size = check_positive("source_size", source_size or 4 * image_size)
        if self.source_size < self.image_size:
            raise ValueError(f"source_size {source_size} is smaller than image_size {image_size}")
        self.crops_per_image = check_positive("crops_per_image", crops_per_image)
        if holdout not in ("images", "regions"):
            raise ValueError(f"holdout must be 'images' or 'regions', got {holdout!r}")
        self.holdout = holdout
        self.test_fraction = check_fraction(test_fraction)
        self.seed = int(seed)
        self.photos = available_photos()
        if len(self.photos) < 2:
            raise FileNotFoundError(
                "colour-crops: fewer than 2 of the colour photographs of scikit-image / "
                f"scikit-learn are installed (looked for {', '.join(PHOTOS)})"
            )
        self.test_images = check_positive("test_images", test_images)
        if holdout == "images" and self.test_images >= len(self.photos):
            raise ValueError(
                f"test_images = {test_images} leaves no training photo ({len(self.photos)} found)"
            )
        order = rng(self.seed, 3).permutation(len(self.photos))
        held = set(order[: self.test_images].tolist()) if holdout == "images" else set()
        self.test_photos = [p for i, p in enumerate(self.photos) if i in held]
        self.train_photos = [p for i, p in enumerate(self.photos) if i not in held]
        self._splits: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    def _build(self, name: SplitName) -> tuple[Tensor, Tensor, Tensor]:
        size = self.image_size
        photos = self.test_photos if self.holdout == "images" and name == "test" else None
        if photos is None:
            photos = self.train_photos if self.holdout == "images" else self.photos
        generator = rng(self.seed, 4 if name == "train" else 5)
        xs, conditions, labels = [], [], []
        for photo in photos:
            x, condition = _photo_lab(photo, self.source_size)
            height, width = x.shape[-2:]
            low, high = 0, width - size  # range of a crop's left column
            if self.holdout == "regions":
                boundary = round(width * (1.0 - self.test_fraction))
                if width - boundary < size or boundary < size:
                    raise ValueError(
                        f"colour-crops: {photo} is {width} px wide at source_size "
                        f"{self.source_size}; too narrow for {size} px crops on both sides of "
                        "the held-out region (raise source_size or lower test_fraction)"
                    )
                low, high = (0, boundary - size) if name == "train" else (boundary, width - size)
            lefts = generator.integers(low, high + 1, size=self.crops_per_image)
            tops = generator.integers(0, height - size + 1, size=self.crops_per_image)
            for left, top in zip(lefts.tolist(), tops.tolist(), strict=True):
                xs.append(x[:, top : top + size, left : left + size])
                conditions.append(condition[:, top : top + size, left : left + size])
            labels += [self.photos.index(photo)] * self.crops_per_image
        return (
            torch.stack(xs).contiguous(),
            torch.tensor(labels, dtype=torch.int64),
            torch.stack(conditions).contiguous(),
        )

    def _split(self, name: SplitName) -> tuple[Tensor, Tensor, Tensor]:
        name = check_split(name)
        if name not in self._splits:
            self._splits[name] = self._build(name)
        return self._splits[name]

    def tensors(self, name: SplitName) -> tuple[Tensor, Tensor]:
        x, labels, _ = self._split(name)
        return x, labels

    def conditions(self, name: SplitName) -> Tensor:
        return self._split(name)[2]

    def split(self, name: SplitName) -> Dataset[Any]:
        return torch.utils.data.TensorDataset(*self._split(name))

    def __repr__(self) -> str:
        return (
            f"ColourCrops(image_size={self.image_size}, source_size={self.source_size}, "
            f"crops_per_image={self.crops_per_image}, holdout={self.holdout!r}, "
            f"test_images={self.test_images}, test_fraction={self.test_fraction}, "
            f"seed={self.seed})"
        )


class _LabItems(Dataset[tuple[Tensor, int, Tensor]]):
    """(RGB in [-1, 1], label) items -> (ab / 110, label, L / 50 - 1)."""

    def __init__(self, base: Dataset[Any]) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        rgb, label = self.base[index]
        x, condition = rgb_to_network((rgb.double() + 1.0) / 2.0)
        return x.float(), label, condition.float()


class LabFolder(_LabSource):
    """``image-folder`` (same options, layouts and split) for colorization: items (ab, label, L).

    Read from files on access (no :meth:`tensors`); e.g. Stanford Cars resized to 64 px.
    """

    def __init__(
        self, root: str, image_size: int = 64, seed: int = 0, test_fraction: float = 0.1
    ) -> None:
        from agekit.datasets.local import ImageFolder

        self.folder = ImageFolder(root, image_size, seed, test_fraction)
        self.image_size = self.folder.image_size

    def split(self, name: SplitName) -> Dataset[Any]:
        return _LabItems(self.folder.split(name))

    def __repr__(self) -> str:
        return f"LabFolder({self.folder!r})"
