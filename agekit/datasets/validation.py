"""A validation split held out of any data set's train split (``data.heldout = "validation"``).

Tuning a setting against the test split would let the test split choose what it then judges.
:func:`hold_out_validation` wraps a data source so that its train split loses a fixed, stratified
``fraction`` and that part becomes the split every metric scores against (the metrics read
``"test"``, so none of them needs to know). The test split itself is not reachable through the
wrapper.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from agekit.components import DataSource
from agekit.datasets._common import check_split, split_indices

#: Seed of the train/validation partition: one partition for every run, so that every tuning
#: run of a study is scored on the same images.
VALIDATION_SEED = 7919


class ValidationHeldOut(DataSource):
    """``inner``'s train split cut into (train, validation); "test" names the validation part."""

    def __init__(self, inner: DataSource, fraction: float) -> None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(
                f"validation_fraction must lie strictly between 0 and 1, got {fraction!r}"
            )
        self.inner = inner
        self.fraction = float(fraction)
        labels = self._labels(inner)
        size = len(inner.split("train"))  # type: ignore[arg-type]  # every split is sized
        train, validation = split_indices(size, self.fraction, VALIDATION_SEED, labels)
        self._index = {"train": train, "test": validation}

    @staticmethod
    def _labels(inner: DataSource) -> np.ndarray | None:
        """Class labels to stratify by, when the split is in memory and labelled."""
        tensors = inner.tensors("train")
        if tensors is None:
            return None
        labels = tensors[1].numpy()
        return None if labels.ndim != 1 or (labels < 0).all() else labels

    def __getattr__(self, name: str) -> Any:
        # what a particular data set exposes beyond DataSource (a mixture's modes, mode_std)
        if name == "inner":  # not set yet: being unpickled or half-built
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.inner.shape

    @property
    def condition_shape(self) -> tuple[int, ...] | None:
        return self.inner.condition_shape

    def split(self, name: Literal["train", "test"]) -> Dataset[Any]:
        return Subset(self.inner.split("train"), self._index[check_split(name)].tolist())

    def tensors(self, name: Literal["train", "test"]) -> tuple[Tensor, Tensor] | None:
        whole = self.inner.tensors("train")
        if whole is None:
            return None
        index = torch.from_numpy(self._index[check_split(name)])
        return whole[0][index], whole[1][index]

    def conditions(self, name: Literal["train", "test"]) -> Tensor | None:
        whole = self.inner.conditions("train")
        if whole is None:
            return None
        return whole[torch.from_numpy(self._index[check_split(name)])]

    def display(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.inner.display(x, condition)

    def __repr__(self) -> str:
        return f"ValidationHeldOut({self.inner!r}, fraction={self.fraction})"


def hold_out_validation(source: DataSource, fraction: float) -> DataSource:
    """``source`` with a validation split in place of its test split (see the module).

    The wrapper's class carries ``source``'s declarations (kind, evaluation classifier, known
    modes, default metrics), which the metrics read from the class.
    """
    declarations = {
        "kind": source.kind,
        "evaluation_classifier": source.evaluation_classifier,
        "known_modes": source.known_modes,
        "default_metrics": source.default_metrics,
    }
    wrapper = type(f"{type(source).__name__}Validation", (ValidationHeldOut,), declarations)
    made: DataSource = wrapper(source, fraction)
    return made
