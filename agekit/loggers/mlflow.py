"""The ``mlflow`` logger: a run's scalars as MLflow metrics and its image grids as artifacts, in a
local SQLite tracking database inside the run folder unless ``tracking_uri`` names another
(``mlflow ui --backend-store-uri sqlite:///runs/NAME/mlflow/mlflow.db`` shows it)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from agekit.loggers.base import (
    Logger,
    RunInfo,
    RunStatus,
    folder_option,
    remember_id,
    remembered_id,
)
from agekit.runs.layout import MLFLOW

__all__ = ["MLflow"]

#: The MLflow run status each way training ends gives.
_STATUSES: dict[str, str] = {
    "complete": "FINISHED",
    "time-limit": "FINISHED",
    "interrupted": "KILLED",
    "failed": "FAILED",
}
#: Tracking URI schemes of a server, which chooses where a new experiment's artifacts go.
_SERVERS = frozenset({"http", "https", "databricks", "databricks-uc", "uc"})
#: The most parameters one ``log_batch`` call takes.
_PARAMS_PER_BATCH = 100


class MLflow(Logger):
    """Metrics under their training-log keys, the image grids under the artifacts' ``images/``,
    the resolved configuration as flattened parameters and as ``config.json``.

    ``tracking_uri``: None keeps everything in the run folder's ``mlflow/`` (``mlflow.db``, and
    ``artifacts/`` for a new experiment), offline; any other MLflow URI (a server, another
    database) is used as given. ``experiment`` defaults to the run's name, ``run_name`` to its
    folder's name. ``artifact_location`` sets a new experiment's artifact root (default: the run
    folder's ``mlflow/artifacts``, unless a tracking server decides). A resumed run continues the
    same MLflow run (its id is kept in the run folder's ``mlflow/run_id``).
    """

    requires: ClassVar[tuple[str, ...]] = ("mlflow",)

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        artifact_location: str | None = None,
        tags: dict[str, str] | None = None,
        images: bool = True,
    ) -> None:
        if tracking_uri is not None and not tracking_uri.strip():
            raise ValueError("tracking_uri is empty; leave it out for the run folder's database")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.artifact_location = artifact_location
        self.tags = dict(tags or {})
        self.images = images
        self._client: Any = None
        self._run_id: str | None = None

    def start(self, run: RunInfo) -> None:
        # Imported here: only a run that names this logger imports mlflow.
        from mlflow.tracking import MlflowClient

        folder = folder_option(run, None, MLFLOW)
        folder.mkdir(parents=True, exist_ok=True)
        uri = self.tracking_uri or f"sqlite:///{folder.resolve().as_posix()}/mlflow.db"
        artifacts = self.artifact_location
        if artifacts is None and uri.partition(":")[0].lower() not in _SERVERS:
            # Without a server to store them, MLflow would put them in ./mlruns, wherever the
            # run happens to be started from.
            artifacts = (folder / "artifacts").resolve().as_uri()
        self._client = MlflowClient(tracking_uri=uri)
        run_id = remembered_id(folder / "run_id", run)
        if run_id is not None and self._reopen(run_id):
            return
        experiment = self._experiment_id(self.experiment or run.experiment, artifacts)
        created = self._client.create_run(
            experiment, run_name=self.run_name or run.name, tags=self.tags
        )
        self._run_id = created.info.run_id
        remember_id(folder / "run_id", created.info.run_id)
        self._log_config(run.config)

    def _reopen(self, run_id: str) -> bool:
        """Continue the MLflow run of an earlier session; False when it is gone."""
        from mlflow.exceptions import MlflowException

        try:
            self._client.update_run(run_id, status="RUNNING")
        except MlflowException:
            return False
        self._run_id = run_id
        return True

    def _experiment_id(self, name: str, artifacts: str | None) -> str:
        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        return str(self._client.create_experiment(name, artifact_location=artifacts))

    def _log_config(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)) for key, value in _flatten(config).items()]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            chunk = params[start : start + _PARAMS_PER_BATCH]
            self._client.log_batch(self._run_id, params=chunk)
        self._client.log_dict(self._run_id, dict(config), "config.json")

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        self._client.log_batch(self._run_id, metrics=metrics)

    def log_images(self, images: Mapping[str, Path], step: int) -> None:
        if not self.images:
            return
        for path in images.values():
            self._client.log_artifact(self._run_id, str(path), artifact_path="images")

    def finish(self, status: RunStatus) -> None:
        if self._run_id is not None:
            self._client.set_terminated(self._run_id, status=_STATUSES[status])
            self._run_id = None


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
