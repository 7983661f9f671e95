"""agekit: Adversarial Generator-Encoder networks (Ulyanov, Vedaldi, Lempitsky, AAAI 2018)."""

from __future__ import annotations

from importlib import metadata

from agekit.registry import REGISTRY, available, create, register

try:
    __version__ = metadata.version("agekit")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["REGISTRY", "__version__", "available", "create", "register"]
