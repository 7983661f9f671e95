"""A run folder's layout: every file and folder a training run, its evaluation and its lock leave
there, named once. :mod:`agekit.studies.layout` lays out the study folder around run folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The folder of a run's checkpoints (``step_00001000.pt``, newest last).
CHECKPOINTS = "checkpoints"
#: The configuration a run was started with, and the versions it was made with.
CONFIG = "config.json"
#: The training log, one JSON record a line.
METRICS = "metrics.jsonl"
#: The samples and reconstructions a run writes as it trains.
IMAGES = "images"
#: TensorBoard's event files (the ``tensorboard`` logger's default folder).
TENSORBOARD = "tensorboard"
#: The ``mlflow`` logger's default tracking database and artifacts.
MLFLOW = "mlflow"
#: The folder wandb keeps its runs in, inside the folder it is given (by default the run folder).
WANDB = "wandb"
#: ``agekit evaluate``'s scores of a run.
EVALUATION = "evaluate.json"
#: The writer's lock (:mod:`agekit.runs.lock`).
LOCK = "run.lock"
#: Where ``agekit train`` puts a run folder when the configuration names no ``out_dir``, and where
#: a study folder keeps its runs.
RUNS = "runs"


@dataclass(frozen=True)
class RunFolder:
    """The paths inside one run folder."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def images(self) -> Path:
        return self.root / IMAGES

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def evaluation(self) -> Path:
        return self.root / EVALUATION

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @classmethod
    def of(cls, path: str | Path) -> RunFolder:
        """The run folder of ``path``: the folder itself, or a checkpoint file inside it."""
        path = Path(path)
        if path.parent.name == CHECKPOINTS and path.is_file():
            return cls(path.parent.parent)
        return cls(path)
