"""Which differences between two run configurations change the science.

A run's stored configuration (``config.json``, a checkpoint's ``config``, a study's
``eval.json``) is compared with the one planned now to decide whether the run is still the same
experiment: whether a study may skip it as complete, whether a checkpoint may be resumed. Only
what changes what is computed counts. Where the run lives (``out_dir``, ``name``, the data's
``root`` folder), how often it logs, draws images or checkpoints, how many checkpoints it keeps,
the device, data-loader workers, ``train.compile`` and ``train.channels_last`` (execution
strategies, not different numbers to represent) and the experiment trackers a run reports to
(``loggers``) do not: a run folder moved with ``mv``, or one given once as an absolute and once
as a relative path, is still the same run.

Resuming a checkpoint also allows a different budget (:data:`BUDGET_KEYS`): training longer
continues the same experiment. A study still counts the budget as science (a run evaluated after
1,000 steps is not the planned 2,000-step run); :func:`resume_refusal` leaves it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agekit.config.loading import config_to_dict
from agekit.config.sections import ExperimentConfig

#: Dotted configuration keys that never change what a run computes.
NON_SCIENCE_KEYS: frozenset[str] = frozenset(
    {
        "name",
        "out_dir",
        # The recipe's values are laid into the configuration; its name alone changes nothing.
        "recipe",
        # The versions a record was written with (agekit.runs.provenance), stored beside the
        # science.
        "provenance",
        "data.workers",
        "data.options.root",
        "train.device",
        "train.compile",
        "train.channels_last",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.log_every",
        "train.image_every",
        "train.grid_size",
        # Where the run's numbers are also sent (experiment trackers), not what they are.
        "loggers",
    }
)

#: Dotted keys that say how long a run trains, not what each step computes: a checkpoint may be
#: resumed under a different budget (a larger one trains longer).
BUDGET_KEYS: frozenset[str] = frozenset({"train.steps", "train.epochs", "train.max_minutes"})

_MISSING = object()


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = list(value) if isinstance(value, tuple) else value
    return flat


def _defaults() -> dict[str, Any]:
    return _flatten(config_to_dict(ExperimentConfig()))


def science_differences(stored: Mapping[str, Any], planned: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two configuration dicts, sorted, leaving out
    :data:`NON_SCIENCE_KEYS` (and everything under them).

    Both are plain dicts as :func:`agekit.config.config_to_dict` writes them. A key that only one
    side has (a configuration written before the key existed) counts as that key's default value,
    so adding a field with a default does not make every earlier run differ.
    """
    return [key for key, _, _ in science_changes(stored, planned)]


def science_changes(
    stored: Mapping[str, Any], planned: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """:func:`science_differences` with the values: ``(key, stored value, planned value)``, where a
    key that a side does not have at all (nor a default for it) has the value None."""
    left, right = _flatten(stored), _flatten(planned)
    defaults: dict[str, Any] | None = None
    changes = []
    for key in sorted(set(left) | set(right)):
        if _ignored(key):
            continue
        a, b = left.get(key, _MISSING), right.get(key, _MISSING)
        if a is _MISSING or b is _MISSING:
            if defaults is None:
                defaults = _defaults()
            a = defaults.get(key, _MISSING) if a is _MISSING else a
            b = defaults.get(key, _MISSING) if b is _MISSING else b
        if a is _MISSING or b is _MISSING or a != b:
            changes.append((key, None if a is _MISSING else a, None if b is _MISSING else b))
    return changes


def resume_refusal(stored: Mapping[str, Any], planned: Mapping[str, Any]) -> str | None:
    """Why a checkpoint written under ``stored`` may not be resumed under ``planned``, or None.

    Every science difference except the budget (:data:`BUDGET_KEYS`) forbids it; the reason names
    each differing key with its stored and new value: ``game.latent_weight: 1000.0 -> 1.0``.
    """
    changes = [c for c in science_changes(stored, planned) if c[0] not in BUDGET_KEYS]
    if not changes:
        return None
    return "; ".join(f"{key}: {a!r} -> {b!r}" for key, a, b in changes)


def _ignored(key: str) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in NON_SCIENCE_KEYS for i in range(1, len(parts) + 1))
