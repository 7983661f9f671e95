"""Which differences between two run configurations change the science.

A run's stored configuration (``config.json``, a checkpoint's ``config``, a study's
``eval.json``) is compared with the one planned now to decide whether the run is still the same
experiment: whether a study may skip it as complete, whether a checkpoint may be resumed. Only
what changes what is computed counts. Where the run lives (``out_dir``, ``name``, the data's
``root`` folder), how often it logs, draws images or checkpoints, how many checkpoints it keeps,
the device, data-loader workers, ``train.compile`` and ``train.channels_last`` (execution
strategies, not different numbers to represent) do not: a run folder moved with ``mv``, or one
given once as an absolute and once as a relative path, is still the same run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Dotted configuration keys that never change what a run computes.
NON_SCIENCE_KEYS: frozenset[str] = frozenset(
    {
        "name",
        "out_dir",
        # The recipe's values are laid into the configuration; its name alone changes nothing.
        "recipe",
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
    }
)

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
    from agekit.config import ExperimentConfig, config_to_dict

    return _flatten(config_to_dict(ExperimentConfig()))


def science_differences(stored: Mapping[str, Any], planned: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two configuration dicts, sorted, leaving out
    :data:`NON_SCIENCE_KEYS` (and everything under them).

    Both are plain dicts as :func:`agekit.config.config_to_dict` writes them. A key that only one
    side has (a configuration written before the key existed) counts as that key's default value,
    so adding a field with a default does not make every earlier run differ.
    """
    left, right = _flatten(stored), _flatten(planned)
    defaults: dict[str, Any] | None = None
    differences = []
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
            differences.append(key)
    return differences


def _ignored(key: str) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in NON_SCIENCE_KEYS for i in range(1, len(parts) + 1))
