"""The ``tensorboard`` logger: a run's scalars and image grids as TensorBoard event files, written
by ``torch.utils.tensorboard``'s ``SummaryWriter`` into the run folder's ``tensorboard/`` (or
``log_dir``). ``tensorboard --logdir runs`` then shows every run under ``runs/``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from agekit.loggers.base import Logger, RunInfo, RunStatus, folder_option
from agekit.runs.layout import TENSORBOARD

__all__ = ["TensorBoard"]


class TensorBoard(Logger):
    """Scalars under their training-log keys (``kl_real``, ``lr``, ...) and the image grids as
    images (``samples``, ``reconstructions``).

    ``log_dir``: the event files' folder; relative paths are inside the run folder (default
    ``tensorboard``). ``images``: send the image grids too. A resumed run hides the events an
    interrupted session logged after its checkpoint (``purge_step``), as its ``metrics.jsonl``
    drops them.
    """

    requires: ClassVar[tuple[str, ...]] = ("tensorboard",)

    def __init__(self, log_dir: str | None = None, images: bool = True) -> None:
        self.log_dir = log_dir
        self.images = images
        self._writer: Any = None

    def start(self, run: RunInfo) -> None:
        # Imported here: only a run that names this logger imports tensorboard.
        from torch.utils.tensorboard import SummaryWriter

        folder = folder_option(run, self.log_dir, TENSORBOARD)
        purge = run.step + 1 if run.step > 0 else None
        self._writer = SummaryWriter(str(folder), purge_step=purge)

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def log_images(self, images: Mapping[str, Path], step: int) -> None:
        if not self.images:
            return
        import numpy as np
        from PIL import Image

        for name, path in images.items():
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self._writer.add_image(name, pixels, step, dataformats="HWC")
        self._writer.flush()

    def finish(self, status: RunStatus) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
