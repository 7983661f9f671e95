"""Data sets read from a local folder. agekit never downloads: a missing file is an error that says
which path was searched and what layout it should have.

MNIST, CIFAR-10 and SVHN are read by torchvision's data set classes (``download=False`` always;
Stacked MNIST under the published protocol stacks the full MNIST read that way), and images are
padded, cropped and resized with ``torchvision.transforms.v2``. torchvision is imported inside the
functions that use it: it takes seconds to import, and listing or creating components must not pay
for it.
"""

from __future__ import annotations

# The data sets' entry points (pyproject.toml) and callers name this module; the sets live in
# agekit.datasets.arrays (an official split, read by torchvision) and agekit.datasets.folders
# (image files read on access).
from agekit.datasets.arrays import CIFAR10, MNIST, SVHN, StackedMNISTLocal, fit_images_v2
from agekit.datasets.folders import CelebA, ImageFolder, UnreadableImageError, load_square_rgb

__all__ = [
    "CIFAR10",
    "MNIST",
    "SVHN",
    "CelebA",
    "ImageFolder",
    "StackedMNISTLocal",
    "UnreadableImageError",
    "fit_images_v2",
    "load_square_rgb",
]
