"""Which scores a study leads with: each metric's headline keys, in report order, with the
direction that is better. The report's tables and figures and a run's one-line summary read them.
"""

from __future__ import annotations

from collections.abc import Iterable

from agekit.components import Direction
from agekit.registry import REGISTRY, RegistryError


def headline(metrics: Iterable[str] | None = None) -> dict[str, Direction]:
    """'metric.key' -> the direction that is better ("lower", "higher" or "reference"), in report
    order, for the named metrics (default: every registered metric).

    Each metric class declares its own keys (``Metric.headline``) and where they come
    (``Metric.headline_order``, ties by name), so a plugin metric's headline keys reach reports
    without any change here. A metric that is not installed, or is broken, has none.
    """
    names = REGISTRY.available("metric") if metrics is None else sorted(set(metrics))
    declared: list[tuple[int, str, dict[str, Direction]]] = []
    for name in names:
        try:
            component = REGISTRY.load("metric", name)
        except RegistryError:
            continue
        keys = dict(getattr(component, "headline", None) or {})
        if keys:
            declared.append((int(getattr(component, "headline_order", 100)), name, keys))
    return {
        f"{name}.{key}": direction
        for _, name, keys in sorted(declared, key=lambda item: item[:2])
        for key, direction in keys.items()
    }
