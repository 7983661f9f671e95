"""Built-in data sets: embedded (offline, in memory), toy 2-D mixtures, and local folders.

Create them through the registry, e.g. ``agekit.create("dataset", "mnist5k", image_size=32)``; the
submodules are imported lazily by their entry points, so importing this package stays cheap.
:mod:`agekit.datasets.stream` turns a data set into training batches and fixed test batches.
"""

from __future__ import annotations

from agekit.datasets._common import NO_LABEL, DatasetNotFoundError

__all__ = ["NO_LABEL", "DatasetNotFoundError"]
