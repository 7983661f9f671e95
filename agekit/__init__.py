"""agekit: Adversarial Generator-Encoder networks (Ulyanov, Vedaldi, Lempitsky, AAAI 2018).

``agekit.evaluation.inference`` (sampling, reconstruction, interpolation, colorization and colour
transfer
with a trained model) is loaded on first use: it imports torch, and ``import agekit`` stays light
so that the command line starts at once.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from agekit.registry import REGISTRY, available, create, register

try:
    __version__ = metadata.version("agekit")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["REGISTRY", "__version__", "available", "create", "inference", "register"]

_LAZY_SUBMODULES = {"inference": "agekit.evaluation.inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(_LAZY_SUBMODULES[name])
    raise AttributeError(f"module 'agekit' has no attribute {name!r}")
