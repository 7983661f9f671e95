"""PacGAN's 2-D Gaussian mixtures, the standard mode-collapse benchmarks for vector data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from agekit.components import DataSource
from agekit.datasets._common import SplitName, check_positive, check_split, rng


class _Mixture(DataSource):
    """An equal-weight mixture of isotropic Gaussians with known means.

    ``modes`` (K, 2) and ``mode_std`` are public: the mode-coverage metric scores samples against
    them (2,500 samples; high quality = within 3 ``mode_std`` of the nearest mode).
    """

    kind = "vector"
    known_modes = "mixture"

    def __init__(self, modes: Tensor, size: int, test_size: int, std: float, seed: int) -> None:
        self.size = check_positive("size", size)
        self.test_size = check_positive("test_size", test_size)
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"std must be a positive number, got {std!r}")
        self.modes = modes.to(torch.float32)
        self.mode_std = float(std)
        self.seed = int(seed)
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def num_modes(self) -> int:
        return len(self.modes)

    def tensors(self, name: SplitName) -> tuple[Tensor, Tensor]:
        name = check_split(name)
        if name not in self._splits:
            count = self.size if name == "train" else self.test_size
            generator = rng(self.seed, 1 if name == "train" else 2)
            # exactly balanced modes, so a split's empirical mixture weights are uniform
            labels = generator.permutation(np.arange(count) % self.num_modes)
            noise = generator.standard_normal((count, 2))
            means = self.modes.double().numpy()[labels]
            x = torch.from_numpy(means + self.mode_std * noise).to(torch.float32)
            self._splits[name] = (x, torch.from_numpy(labels.astype(np.int64)))
        return self._splits[name]

    def split(self, name: SplitName) -> Dataset[Any]:
        return TensorDataset(*self.tensors(name))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, test_size={self.test_size}, "
            f"std={self.mode_std}, seed={self.seed})"
        )


class Ring8(_Mixture):
    """8 Gaussians on the unit circle, means (cos 2 pi i/8, sin 2 pi i/8), std 0.01; label = i."""

    def __init__(
        self, size: int = 50000, test_size: int = 10000, std: float = 0.01, seed: int = 0
    ) -> None:
        # i / 8 for i < 8, not linspace(0, 2 pi, 8), which repeats the first mode as the last
        angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        modes = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        super().__init__(modes, size, test_size, std, seed)


class Grid25(_Mixture):
    """25 Gaussians on the grid {-4, -2, 0, 2, 4}^2, std 0.05; label = 5 * row + column."""

    def __init__(
        self, size: int = 50000, test_size: int = 10000, std: float = 0.05, seed: int = 0
    ) -> None:
        values = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
        modes = torch.cartesian_prod(values, values)
        super().__init__(modes, size, test_size, std, seed)
