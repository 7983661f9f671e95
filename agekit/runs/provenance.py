"""The versions a result was made with: every record agekit writes carries :func:`provenance`.

A run's ``config.json``, its checkpoints, its ``eval.json`` and a study's ``study.json`` store
the same mapping under the key ``"provenance"``, so that a number can be tied to the code that
produced it. It is never part of the science (:mod:`agekit.config.changes` ignores it): a run
made by another agekit version, or one recorded without provenance, is the same experiment.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

#: The key under which every record stores :func:`provenance`.
PROVENANCE_KEY = "provenance"


def provenance() -> dict[str, Any]:
    """agekit's, torch's and Python's versions, each plugin distribution whose components this
    process has loaded, and the git revision of agekit's source tree (None unless agekit runs
    from a git checkout)."""
    import torch

    return {
        "agekit": _distribution_version("agekit"),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "plugins": loaded_plugins(),
        "source_revision": source_revision(),
    }


def loaded_plugins() -> dict[str, str]:
    """``{distribution: version}`` of the plugins whose components this process has imported;
    agekit's own built-ins and components registered in-process are not plugins."""
    from agekit.registry import BUILTIN, REGISTRY

    found: dict[str, str] = {}
    for entry in REGISTRY.entries():
        if entry.loaded is None or entry.entry_point is None or entry.distribution == BUILTIN:
            continue
        found[entry.distribution] = entry.version
    return dict(sorted(found.items()))


def describe(record: dict[str, Any]) -> str:
    """One line for people: ``agekit 0.1.0, torch 2.4.0, Python 3.11.9, ...``."""
    parts = [f"{name} {record.get(key, '?')}" for name, key in _SHOWN]
    plugins = record.get("plugins") or {}
    parts.append(
        "plugins " + ", ".join(f"{d} {v}" for d, v in plugins.items()) if plugins else "no plugins"
    )
    revision = record.get("source_revision")
    parts.append(f"source {revision}" if revision else "no source revision (not a git checkout)")
    return "; ".join(parts)


_SHOWN = (("agekit", "agekit"), ("torch", "torch"), ("Python", "python"))


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
        return None


@functools.lru_cache(maxsize=1)
def source_revision() -> str | None:
    """The commit of the tree agekit is imported from, with ``-dirty`` when tracked files differ
    from it, when that tree is itself the top of a git checkout; None otherwise (an installed
    wheel, no git).

    Asked once per process: the code a process runs is the code it imported at its start, even
    if the files are edited later. The top must be agekit's own tree: an installed copy inside
    some other repository's virtual environment would otherwise report that repository's commit.
    """
    root = Path(__file__).resolve().parent.parent
    try:
        top = _git(root, "rev-parse", "--show-toplevel")
        if top is None or Path(top).resolve() != root:
            return None
        commit = _git(root, "rev-parse", "HEAD")
        changed = _git(root, "status", "--porcelain", "--untracked-files=no")
    except OSError:  # git not installed
        return None
    if commit is None:
        return None
    return f"{commit}-dirty" if changed else commit


def _git(root: Path, *args: str) -> str | None:
    """A git command's output in ``root`` (None on failure). GIT_OPTIONAL_LOCKS=0: reading the
    revision must never take the index lock from someone committing in the same checkout."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
