"""The registry: entry-point discovery, laziness, broken plugins, duplicates, options."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import agekit
from agekit.components import Divergence
from agekit.registry import (
    REGISTRY,
    BrokenComponentError,
    ComponentOptionsError,
    DuplicateComponentError,
    UnknownComponentError,
)


def _install_fake_distribution(
    site: Path, dist: str, module: str, source: str, entry_points: dict[str, dict[str, str]]
) -> None:
    """Lay out a distribution the way pip installs one: a module plus a .dist-info folder."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = []
    for group, names in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in names.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


GOOD_PLUGIN = """
    import torch
    from agekit.components import Divergence, DivergenceGuarantees

    class MeanSquare(Divergence):
        '''Squared distance between the batch mean and the prior's mean.'''
        guarantees = DivergenceGuarantees(nonnegative="exact", zero_at_equality="population",
                                          tolerance=0.1)

        def __init__(self, scale: float = 1.0) -> None:
            if scale <= 0:
                raise ValueError("scale must be positive")
            self.scale = scale

        def compute(self, codes, prior):
            mean = prior.mean().to(codes)
            return self.scale * ((codes.mean(0) - mean) ** 2).sum()
"""

BROKEN_PLUGIN = """
    raise ImportError("this plugin needs a library that is not installed")
"""

WRONG_BASE_PLUGIN = """
    class NotADivergence:
        pass
"""


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(
        site,
        "agekit_goodplugin",
        "agekit_goodplugin",
        GOOD_PLUGIN,
        {"agekit.divergences": {"mean-square": "agekit_goodplugin:MeanSquare"}},
    )
    _install_fake_distribution(
        site,
        "agekit_brokenplugin",
        "agekit_brokenplugin",
        BROKEN_PLUGIN,
        {"agekit.divergences": {"needs-missing-lib": "agekit_brokenplugin:Anything"}},
    )
    _install_fake_distribution(
        site,
        "agekit_wrongbase",
        "agekit_wrongbase",
        WRONG_BASE_PLUGIN,
        {"agekit.divergences": {"wrong-base": "agekit_wrongbase:NotADivergence"}},
    )
    monkeypatch.syspath_prepend(str(site))
    REGISTRY.refresh()
    yield site
    for module in ("agekit_goodplugin", "agekit_brokenplugin", "agekit_wrongbase"):
        sys.modules.pop(module, None)
    REGISTRY.refresh()


def test_builtins_are_found_through_entry_points() -> None:
    assert {"sphere", "gaussian"} <= set(agekit.available("prior"))
    assert {"gaussian-kl", "kozachenko-leonenko"} <= set(agekit.available("divergence"))
    entry = REGISTRY.entry("divergence", "gaussian-kl")
    assert entry.distribution == "agekit"
    assert entry.entry_point is not None  # found through the same mechanism as a plugin


def test_plugin_is_found_created_and_broken_ones_are_isolated(plugin_site: Path) -> None:
    names = agekit.available("divergence")
    assert {"mean-square", "needs-missing-lib", "wrong-base"} <= set(names)

    divergence = agekit.create("divergence", "mean-square", scale=2.0)
    assert isinstance(divergence, Divergence)
    prior = agekit.create("prior", "sphere", dim=4)
    assert float(divergence(prior.sample(64), prior)) >= 0

    with pytest.raises(
        BrokenComponentError,
        match=r"needs-missing-lib.*agekit_brokenplugin.*"
        r"ImportError.*library that is not installed",
    ):
        agekit.create("divergence", "needs-missing-lib")
    with pytest.raises(BrokenComponentError, match=r"does not subclass .*Divergence"):
        agekit.create("divergence", "wrong-base")

    # Everything else keeps working beside the broken plugins.
    assert agekit.create("divergence", "gaussian-kl") is not None
    statuses = {e.name: e.status for e in REGISTRY.check("divergence")}
    assert statuses["mean-square"] == "ok"
    assert statuses["gaussian-kl"] == "ok"
    assert statuses["needs-missing-lib"].startswith("broken: import of")
    assert statuses["wrong-base"].startswith("broken:")


def test_factory_rejecting_its_options_is_reported(plugin_site: Path) -> None:
    with pytest.raises(ComponentOptionsError, match=r"mean-square.*scale must be positive"):
        agekit.create("divergence", "mean-square", scale=-1.0)


def test_listing_imports_nothing(plugin_site: Path) -> None:
    code = (
        "import sys, agekit; names = agekit.available('divergence'); "
        "assert 'mean-square' in names, names; "
        "loaded = [m for m in ('torch', 'agekit_goodplugin', 'agekit_brokenplugin', "
        "'agekit.divergences') if m in sys.modules]; "
        "print(loaded); assert not loaded, loaded"
    )
    env_path = f"{plugin_site}"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_cli_list_shows_broken_plugin_without_failing(plugin_site: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agekit", "list", "divergences", "--check"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(plugin_site), "PATH": "/usr/bin:/bin", "COLUMNS": "250"},
    )
    assert result.returncode == 0, result.stderr
    assert "mean-square" in result.stdout
    assert "agekit_brokenplugin" in result.stdout
    assert "broken" in result.stdout
    assert "gaussian-kl" in result.stdout


def test_two_distributions_with_one_name_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "dupes"
    site.mkdir()
    for dist in ("agekit_first", "agekit_second"):
        _install_fake_distribution(
            site, dist, dist, GOOD_PLUGIN, {"agekit.divergences": {"clash": f"{dist}:MeanSquare"}}
        )
    monkeypatch.syspath_prepend(str(site))
    REGISTRY.refresh()
    try:
        with pytest.raises(DuplicateComponentError, match=r"agekit_first.*agekit_second"):
            agekit.create("divergence", "clash")
        assert agekit.create("divergence", "gaussian-kl") is not None
    finally:
        REGISTRY.refresh()


def test_agekit_list_reads_names_without_importing_components(plugin_site: Path) -> None:
    # Importing torch and every plugin took seconds; names, distributions and versions are in
    # the packages' metadata.
    code = (
        "import sys; from agekit.cli import main; assert main(['list']) == 0; "
        "loaded = [m for m in ('torch', 'agekit_goodplugin', 'agekit_brokenplugin', "
        "'agekit.divergences') if m in sys.modules]; assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(plugin_site), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "mean-square" in result.stdout and "gaussian-kl" in result.stdout


def test_a_plugin_reusing_a_built_in_name_is_ignored_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "impostor"
    site.mkdir()
    _install_fake_distribution(
        site,
        "agekit_impostor",
        "agekit_impostor",
        GOOD_PLUGIN,
        {"agekit.divergences": {"gaussian-kl": "agekit_impostor:MeanSquare"}},
    )
    monkeypatch.syspath_prepend(str(site))
    REGISTRY.refresh()
    try:
        with caplog.at_level("WARNING", logger="agekit"):
            divergence = agekit.create("divergence", "gaussian-kl")
        assert type(divergence).__module__.startswith("agekit.divergences")
        assert "agekit_impostor" in caplog.text
        entry = REGISTRY.entry("divergence", "gaussian-kl")
        assert entry.distribution == "agekit"
        assert entry.status.startswith("ok") and "agekit_impostor 0.1" in entry.status
    finally:
        sys.modules.pop("agekit_impostor", None)
        REGISTRY.refresh()


def test_unknown_name_lists_names_and_closest_match() -> None:
    with pytest.raises(UnknownComponentError) as info:
        agekit.create("divergence", "gausian-kl")
    message = str(info.value)
    assert "gaussian-kl" in message and "kozachenko-leonenko" in message
    assert "Did you mean 'gaussian-kl'" in message


def test_unknown_name_of_a_known_plugin_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a provider that is certainly not installed (the example plugins may be, in a developer's
    # environment or under `nox -s plugins`)
    from agekit.registry import KNOWN_PROVIDERS

    provider = "agekit-nowhere (plugins/agekit-nowhere)"
    monkeypatch.setitem(KNOWN_PROVIDERS, ("divergence", "nowhere"), provider)
    with pytest.raises(UnknownComponentError, match=r"agekit-nowhere \(plugins/agekit-nowhere\)"):
        agekit.create("divergence", "nowhere")


def test_unknown_and_invalid_options_are_rejected_with_the_accepted_ones() -> None:
    with pytest.raises(ComponentOptionsError, match=r"'kk'.*accepted options: .*\bk\b"):
        agekit.create("divergence", "kozachenko-leonenko", kk=3)
    with pytest.raises(ComponentOptionsError, match="dim"):
        agekit.create("prior", "sphere", dim="many")


def test_a_class_can_be_passed_instead_of_a_name() -> None:
    from agekit.priors import GaussianPrior

    prior = agekit.create("prior", GaussianPrior, dim=3)
    assert prior.dim == 3
    with pytest.raises(BrokenComponentError, match="does not subclass"):
        agekit.create("divergence", GaussianPrior, dim=3)


def test_unknown_kind() -> None:
    with pytest.raises(LookupError, match="unknown component kind 'widget'"):
        agekit.available("widget")
