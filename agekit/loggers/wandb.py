"""The ``wandb`` logger: a run's scalars and image grids in a Weights & Biases run, offline by
default (written under the run folder's ``wandb/``, sent later with ``wandb sync`` if wanted)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from agekit.loggers.base import (
    Logger,
    RunInfo,
    RunStatus,
    folder_option,
    remember_id,
    remembered_id,
)
from agekit.runs.layout import WANDB

__all__ = ["WandB"]

#: The id file a resumed run reads to continue the same W&B run.
_ID_FILE = "agekit_run_id"


class WandB(Logger):
    """Scalars under their training-log keys with ``wandb.log``, the image grids as
    ``wandb.Image`` (``samples``, ``reconstructions``), the resolved configuration as the run's
    config.

    ``mode``: ``offline`` (the default: nothing leaves the machine), ``online`` or ``disabled``.
    ``dir``: the folder wandb makes its ``wandb/`` folder in; relative paths are inside the run
    folder, which is the default. ``project`` defaults to the run's name, ``name`` to its
    folder's name; ``entity``, ``group`` and ``tags`` are passed on. wandb does not capture the
    terminal (``console="off"``): the progress display keeps it. A resumed run continues the same
    W&B run id.
    """

    requires: ClassVar[tuple[str, ...]] = ("wandb",)

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        mode: Literal["offline", "online", "disabled"] = "offline",
        dir: str | None = None,
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        images: bool = True,
    ) -> None:
        self.project = project
        self.name = name
        self.mode = mode
        self.dir = dir
        self.entity = entity
        self.group = group
        self.tags = list(tags or [])
        self.images = images
        self._run: Any = None

    def start(self, run: RunInfo) -> None:
        # Imported here: only a run that names this logger imports wandb.
        import wandb

        folder = folder_option(run, self.dir, ".")
        kept = folder / WANDB / _ID_FILE  # wandb's own folder, which it makes inside ``dir``
        kept.parent.mkdir(parents=True, exist_ok=True)
        run_id = remembered_id(kept, run)
        self._run = wandb.init(
            project=self.project or run.experiment,
            name=self.name or run.name,
            dir=str(folder),
            mode=self.mode,
            entity=self.entity,
            group=self.group,
            tags=self.tags or None,
            config=dict(run.config),
            id=run_id,
            resume="allow" if run_id is not None else None,
            reinit="create_new",
            settings=wandb.Settings(console="off"),
        )
        remember_id(kept, str(self._run.id))

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        self._run.log(dict(values), step=step)

    def log_images(self, images: Mapping[str, Path], step: int) -> None:
        if not self.images:
            return
        import wandb

        self._run.log({name: wandb.Image(str(path)) for name, path in images.items()}, step=step)

    def finish(self, status: RunStatus) -> None:
        if self._run is not None:
            self._run.finish(exit_code=0 if status in ("complete", "time-limit") else 1)
            self._run = None
