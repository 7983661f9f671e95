"""Running networks in a given train/eval mode and putting each submodule back as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

__all__ = ["network_mode"]


@contextlib.contextmanager
def network_mode(modules: list[nn.Module], mode: Literal["eval", "train"]) -> Iterator[None]:
    """Put every submodule in ``mode`` under ``torch.no_grad()``, then restore each one's own flag.

    Flags are restored per submodule (not with one ``.train(flag)``) because a caller may have left
    a network in a mixed state on purpose, e.g. a frozen batch-norm inside a training network.
    """
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.train(mode == "train")
        with torch.no_grad():
            yield
    finally:
        for m, flag in saved:
            m.training = flag
