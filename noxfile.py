"""Developer sessions. ``nox`` alone runs the tests and the linters.

The tests, lint, slow and bench sessions run in the environment the README's install command
prepared (torch is a multi-gigabyte install, so it is not repeated per session); ``plugins``
builds fresh environments that see that one, installs each example plugin into its own, and runs
the plugin's tests there.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The default suite (everything not marked slow): under 10 minutes on 2 CPU cores."""
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=False)
def slow(session: nox.Session) -> None:
    """Long checks: end-to-end training quality, reference-scale estimator checks."""
    session.run("python", "-m", "pytest", "-m", "slow", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", "agekit", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "agekit", "tests", "benchmarks", "noxfile.py")
    session.run("mypy", "agekit")


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: each prints its ratio against a reference measured in the same run."""
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        if script.name == "gpu.py":
            continue
        session.run("python", str(script), *session.posargs)


@nox.session(venv_params=["--system-site-packages"])
def plugins(session: nox.Session) -> None:
    """Install each example plugin beside agekit in a fresh environment and run its tests."""
    folders = [p.parent for p in sorted((ROOT / "plugins").glob("*/pyproject.toml"))]
    # All first, so the cross-plugin tests (a plugin divergence on a plugin prior) run too.
    for folder in folders:
        session.install("--no-build-isolation", "-e", str(folder))
    for folder in folders:
        session.run("python", "-m", "pytest", str(folder / "tests"), "-q", "-p", "no:cacheprovider")
