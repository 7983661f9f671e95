"""The ``logger`` kind: each built-in experiment tracker trains a tiny run and the test reads back
what it wrote with the tracker's own reader; a run imports only the trackers it names; a name, an
option or a library that is missing is refused when the configuration is read. Nothing here
reaches the network: wandb runs offline, MLflow on a SQLite file, and a connection attempt to
anything but this machine fails the test."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agekit.config import ConfigError, config_to_dict, parse_config, parse_overrides
from agekit.config.changes import science_differences
from agekit.loggers.base import Logger, RunInfo, RunStatus
from agekit.registry import REGISTRY
from agekit.training.progress import read_records
from agekit.training.trainer import Trainer

# MLflow's SQLite store, on the SQLAlchemy installed here: not agekit's to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
#: What a test may talk to: this machine (wandb's Python side talks to its own core process).
LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", "", None}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[Any]]:
    """Trackers kept off the network and out of the home folder; an attempt to connect anywhere
    but this machine fails (and is counted: the test fails on any). The test runs in an empty
    folder, which must stay empty: a tracker writes under the run folder only (MLflow's default
    artifact root is ./mlruns)."""
    home = tmp_path / "tracker-home"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for variable, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }.items():
        monkeypatch.setenv(variable, value)
    attempts: list[Any] = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL_HOSTS:
            attempts.append(address)
            raise OSError(f"tests do not reach the network ({address})")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        guard(self, address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        guard(self, address)
        return connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    yield attempts
    assert attempts == []
    assert list(cwd.iterdir()) == []


def _raw(tmp_path: Path, *loggers: Mapping[str, Any], steps: int = 4) -> dict[str, Any]:
    """A tiny run (ring8, a small MLP, a few steps) logging every 2 steps; its image grids are
    written at its last step."""
    return {
        "name": "tiny",
        "out_dir": str(tmp_path),
        "data": {"name": "ring8", "batch_size": 64},
        "prior": {"name": "gaussian", "dim": 2},
        "backbone": {"name": "mlp", "options": {"hidden": 16, "depth": 2}},
        "train": {
            "steps": steps,
            "log_every": 2,
            "checkpoint_every": 4,
            "image_every": 1000,
            "device": "cpu",
        },
        "loggers": list(loggers),
    }


def _logged(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The run folder's own record: each number of ``metrics.jsonl`` as (step, value) pairs."""
    records, torn = read_records(run_dir / "metrics.jsonl")
    assert records and not torn
    keys = [key for key in records[0] if key != "step"]
    return {key: [(r["step"], float(r[key])) for r in records] for key in keys}


# TensorBoard -------------------------------------------------------------------------------------
def test_tensorboard_writes_every_scalar_and_both_grids_under_the_run_folder(
    tmp_path: Path,
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(parse_config(_raw(tmp_path, {"name": "tensorboard"}))).fit()
    run_dir = tmp_path / "tiny"
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    logged = _logged(run_dir)
    assert set(events.Tags()["scalars"]) == set(logged)
    for key, pairs in logged.items():
        read = [(event.step, event.value) for event in events.Scalars(key)]
        assert read == [(step, pytest.approx(value, rel=1e-6)) for step, value in pairs], key
    assert set(events.Tags()["images"]) == {"samples", "reconstructions"}
    for name in ("samples", "reconstructions"):
        [image] = events.Images(name)
        assert image.step == 4 and image.width > 0 and image.height > 0
        assert image.encoded_image_string.startswith(b"\x89PNG")


# MLflow ------------------------------------------------------------------------------------------
def test_mlflow_tracks_metrics_params_and_grids_offline_and_a_resumed_run_continues_it(
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient

    Trainer(parse_config(_raw(tmp_path, {"name": "mlflow"}))).fit()
    longer = parse_config(_raw(tmp_path, {"name": "mlflow"}, steps=6))
    Trainer(longer).fit(resume=True)
    run_dir = tmp_path / "tiny"
    uri = f"sqlite:///{(run_dir / 'mlflow' / 'mlflow.db').as_posix()}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])  # the resumed session continued it
    assert (run.info.run_name, run.info.status) == ("tiny", "FINISHED")
    logged = _logged(run_dir)
    for key, pairs in logged.items():
        read = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(read) == [(step, pytest.approx(value)) for step, value in pairs], key
    assert [step for step, _ in logged["kl_real"]] == [2, 4, 6]
    assert run.data.params["game.latent_weight"] == str(longer.game.latent_weight)
    images = sorted(item.path for item in client.list_artifacts(run.info.run_id, "images"))
    assert images == [
        f"images/{name}_{step:08d}.png"
        for name in ("reconstructions", "samples")
        for step in (4, 6)
    ]
    # Offline: the database and the artifacts are files in the run folder.
    stored = run_dir / "mlflow" / "artifacts"
    assert len(list(stored.rglob("samples_*.png"))) == 2
    assert {"mlflow.db", "artifacts", "run_id"} <= {p.name for p in (run_dir / "mlflow").iterdir()}

    # Another run sent to that database under its own experiment and run name (the database
    # exists: MLflow's set-up of a new one takes seconds).
    options = {"tracking_uri": uri, "experiment": "shared", "run_name": "first"}
    other = {**_raw(tmp_path, {"name": "mlflow", "options": options}, steps=2), "name": "other"}
    Trainer(parse_config(other)).fit()
    shared = client.get_experiment_by_name("shared")
    assert shared is not None
    [run] = client.search_runs([shared.experiment_id])
    assert run.info.run_name == "first"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "kl_real")] == [2]
    assert len(list((tmp_path / "other" / "mlflow" / "artifacts").rglob("samples_*.png"))) == 1


# Weights & Biases --------------------------------------------------------------------------------
def _wandb_records(path: Path) -> Iterator[Any]:
    """The records of a ``.wandb`` file, parsed with wandb's own protobuf ``Record``.

    The file is wandb's header (``:W&B``, magic 0xBEE1, version 0) and then LevelDB-log framing:
    32 KiB blocks of chunks, each with a CRC, a length and a type (full, first, middle, last).
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00"
    block, position, parts = 32768, 7, []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk is padding
            position += block - position % block
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        parts.append(data[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def test_wandb_runs_offline_in_the_run_folder_with_every_scalar_and_both_grids(
    tmp_path: Path,
) -> None:
    Trainer(parse_config(_raw(tmp_path, {"name": "wandb"}))).fit()
    run_dir = tmp_path / "tiny"
    [offline] = (run_dir / "wandb").glob("offline-run-*")
    [log] = offline.glob("run-*.wandb")
    records = list(_wandb_records(log))
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.display_name) == ("tiny", "tiny")
    rows = [
        {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in r.history.item
        }
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    logged = _logged(run_dir)
    for key, pairs in logged.items():
        read = [(row["_step"], row[key]) for row in rows if key in row]
        assert read == [(step, pytest.approx(value)) for step, value in pairs], key
    [grids] = [row for row in rows if "samples/path" in row]
    assert grids["_step"] == 4
    for name in ("samples", "reconstructions"):
        assert grids[f"{name}/_type"] == "image-file"
        assert (offline / "files" / grids[f"{name}/path"]).is_file()


# Which trackers a run imports ---------------------------------------------------------------------
PROBE = """
import json, sys
from agekit.config import parse_config
from agekit.registry import REGISTRY
from agekit.training.trainer import Trainer

def trackers():
    return sorted({name.split(".")[0] for name in sys.modules} & {"mlflow", "tensorboard", "wandb"})

REGISTRY.check("logger")  # agekit list logger --check: the loggers' modules, not their libraries
seen = [trackers()]
for raw in json.loads(sys.argv[1]):
    Trainer(parse_config(raw)).fit()
    seen.append(trackers())
print(json.dumps(seen))
"""


@pytest.mark.parametrize("named", [["", "tensorboard"], ["mlflow"], ["wandb"]])
def test_a_run_imports_only_the_trackers_it_names(named: list[str], tmp_path: Path) -> None:
    runs = []
    for index, name in enumerate(named):
        raw = _raw(tmp_path, *([{"name": name}] if name else []), steps=2)
        runs.append({**raw, "name": f"run{index}"})
    found = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(runs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert found.returncode == 0, found.stderr[-2000:]
    seen = json.loads(found.stdout.strip().splitlines()[-1])
    assert seen == [[], *([name] if name else [] for name in named)]


# Errors before any work ---------------------------------------------------------------------------
def test_an_unknown_logger_is_refused_naming_the_entry_and_the_installed_ones(
    tmp_path: Path,
) -> None:
    raw = _raw(tmp_path, {"name": "tensorboard"}, {"name": "tensorbord"})
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, "tiny.toml")
    message = str(caught.value)
    assert message.startswith("tiny.toml: loggers[1]: no logger named 'tensorbord'.")
    assert "Available loggers: mlflow, tensorboard, wandb." in message
    assert "Did you mean 'tensorboard'?" in message and "\n" not in message
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize(
    ("logger", "expected"),
    [
        (
            {"name": "mlflow", "options": {"uri": "sqlite:///x.db"}},
            "loggers[0]: logger 'mlflow' does not accept option(s) 'uri'; accepted options: "
            "artifact_location, experiment, images, run_name, tags, tracking_uri",
        ),
        (
            {"name": "wandb", "options": {"mode": "sometimes"}},
            "loggers[0]: logger 'wandb': invalid options: mode: Input should be 'offline', "
            "'online' or 'disabled'",
        ),
        (
            {"name": "mlflow", "options": {"tracking_uri": " "}},
            "loggers[0]: logger 'mlflow' rejected its options {'tracking_uri': ' '}: "
            "tracking_uri is empty",
        ),
    ],
)
def test_a_bad_logger_option_is_refused_naming_the_entry(
    logger: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"^tiny\.toml: ") as caught:
        parse_config(_raw(tmp_path, logger), "tiny.toml")
    assert expected in str(caught.value)


def test_a_logger_listed_twice_is_refused(tmp_path: Path) -> None:
    raw = _raw(tmp_path, {"name": "wandb"}, {"name": "wandb", "options": {"mode": "disabled"}})
    with pytest.raises(ConfigError, match="loggers: Value error, 'wandb' listed more than once"):
        parse_config(raw)


def test_a_missing_tracking_library_is_one_line_naming_the_logger_and_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name)
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(_raw(tmp_path, {"name": "tensorboard"}, {"name": "wandb"}), "tiny.toml")
    assert str(caught.value) == (
        "tiny.toml: loggers[1]: logger 'wandb' needs wandb, which is not installed: "
        "pip install 'agekit[tracking]'"
    )
    assert not (tmp_path / "tiny").exists()


def test_loggers_can_be_set_on_the_command_line_and_change_no_science(tmp_path: Path) -> None:
    overrides = parse_overrides(['loggers=[{name = "tensorboard"}]'])
    with_logger = parse_config({**_raw(tmp_path), **overrides})
    assert [logger.name for logger in with_logger.loggers] == ["tensorboard"]
    plain = parse_config(_raw(tmp_path))
    assert plain.loggers == []
    # A logger added to a run (or a study) later resumes it and keeps its study results.
    assert science_differences(config_to_dict(plain), config_to_dict(with_logger)) == []


# The contract, as a plugin implements it ----------------------------------------------------------
class Recorder(Logger):
    """A plugin's logger: remembers what it is sent (no library)."""

    requires: ClassVar[tuple[str, ...]] = ()
    events: ClassVar[list[tuple[Any, ...]]] = []

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at

    def start(self, run: RunInfo) -> None:
        self.events.append(("start", run.experiment, run.name, run.step, run.config["name"]))

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        if step == self.fail_at:
            raise RuntimeError("the tracker went away")
        self.events.append(("scalars", step, sorted(values)))

    def log_images(self, images: Mapping[str, Path], step: int) -> None:
        self.events.append(("images", step, {n: p.is_file() for n, p in images.items()}))

    def finish(self, status: RunStatus) -> None:
        self.events.append(("finish", status))


@pytest.fixture
def recorder() -> Iterator[type[Recorder]]:
    REGISTRY.register("logger", "recorder", Recorder)
    Recorder.events.clear()
    yield Recorder
    REGISTRY.unregister("logger", "recorder")


def test_a_plugin_logger_hears_the_start_each_entry_the_grids_and_the_end(
    tmp_path: Path, recorder: type[Recorder]
) -> None:
    Trainer(parse_config(_raw(tmp_path, {"name": "recorder"}))).fit()
    keys = sorted(_logged(tmp_path / "tiny"))
    grids = {"samples": True, "reconstructions": True}
    assert recorder.events == [
        ("start", "tiny", "tiny", 0, "tiny"),
        ("scalars", 2, keys),
        ("scalars", 4, keys),
        ("images", 4, grids),
        ("finish", "complete"),
    ]


def test_a_logger_that_fails_mid_run_stops_it_and_hears_that_it_failed(
    tmp_path: Path, recorder: type[Recorder]
) -> None:
    raw = _raw(tmp_path, {"name": "recorder", "options": {"fail_at": 4}})
    with pytest.raises(RuntimeError, match="the tracker went away"):
        Trainer(parse_config(raw)).fit()
    assert recorder.events[-1] == ("finish", "failed")
