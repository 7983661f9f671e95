"""A fake full MNIST in torchvision's raw layout (``ROOT/MNIST/raw/*-ubyte``), for the local MNIST
data sets' tests.

Imported by the data set test modules (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

#: torchvision's file name prefix of each split.
PREFIXES = {"train": "train", "test": "t10k"}


def digit_images(labels: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """(N, 28, 28) uint8: dim noise plus a bright bar whose place spells the label, so that a
    classifier can learn the labels in a few epochs; no two images are equal."""
    images = generator.integers(0, 64, size=(len(labels), 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels.tolist(), strict=True):
        row, col = 3 + 12 * (label // 5), 2 + 5 * (label % 5)
        image[row : row + 10, col : col + 4] = 255
    return images


def write_fake_mnist(
    root: Path, train: int = 200, test: int = 100, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``train`` and ``test`` digits with random labels 0-9 under ``root``; returns the
    (images (N, 28, 28) uint8, labels (N,) uint8) written per split ("train", "test")."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    written = {}
    for split, count in (("train", train), ("test", test)):
        labels = generator.integers(0, 10, size=count, dtype=np.uint8)
        images = digit_images(labels, generator)
        prefix = PREFIXES[split]
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, count) + labels.tobytes()
        )
        written[split] = (images, labels)
    return written
