"""The package's shape: no import cycles (imports inside functions included), functions and
modules short enough to read, one table of kinds that a new kind is added to, and a game that can
be swapped without touching the rest of a run's configuration."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import agekit
from agekit.config import config_to_dict, parse_config
from agekit.registry import KINDS, BrokenComponentError, Kind, Registry

PACKAGE = Path(agekit.__file__).parent
#: The longest function and the largest module the package keeps to (the engineering standard:
#: a function reads on one screen, a module in one sitting).
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every agekit module ``name`` imports, at its top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {target for target in found if target in modules and target != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_not_even_inside_functions() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


FIRST_IMPORT = """
import importlib, sys
bad = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "agekit" or m.startswith("agekit.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        bad.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(bad))
"""


def test_every_module_imports_first() -> None:
    # A package's __init__ runs before any of its modules: a cycle through it (a module that
    # imports a package whose __init__ imports, in turn, that module) breaks only when the module
    # is the first agekit import of a process, which the graph above cannot see.
    names = [name for name in _modules() if not name.endswith("__main__")]
    found = subprocess.run(
        [sys.executable, "-c", FIRST_IMPORT, *names], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == ""


def test_the_cycle_finder_sees_an_import_inside_a_function() -> None:
    graph = {"a": {"b"}, "b": {"a"}, "c": set()}
    assert _cycles(graph) == [["a", "b"]]
    tree = {"pkg.a": Path("a.py"), "pkg.b": Path("b.py")}
    source = "def late():\n    from pkg.b import thing\n"
    path = Path(__file__).parent / "_cycle_probe.py"
    try:
        path.write_text(source)
        assert _imports("pkg.a", path, {**tree, "pkg.b": path}) == {"pkg.b"}
    finally:
        path.unlink()


def _long_functions() -> Iterator[tuple[str, int]]:
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    yield f"{path.relative_to(PACKAGE)}:{node.name}", length


def test_functions_read_on_one_screen() -> None:
    assert sorted(_long_functions()) == []


def test_modules_read_in_one_sitting() -> None:
    large = {
        str(path.relative_to(PACKAGE)): count
        for path in PACKAGE.rglob("*.py")
        if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert large == {}


def test_the_top_of_the_package_holds_the_contracts_and_assembly_only() -> None:
    top = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "components", "model", "registry", "resolve"]


# A new kind: one row of the table, an entry-point group, and its own base class ------------------
SAMPLER_KIND_MODULE = """
    class Sampler:
        '''The throwaway kind's contract.'''

    class Halton(Sampler):
        def __init__(self, base: int = 2) -> None:
            self.base = base
"""


def _fake_distribution(site: Path, dist: str, module: str, source: str, group: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{group}]\n"
        + "".join(
            f"{name} = {target}\n"
            for name, target in (
                ("halton", f"{module}:Halton"),
                ("broken", f"{module}_missing:Nothing"),
            )
        )
    )


def test_a_new_kind_is_one_row_in_the_table_of_kinds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_distribution(tmp_path, "samplers", "samplers_plugin", SAMPLER_KIND_MODULE, "x.samplers")
    monkeypatch.syspath_prepend(str(tmp_path))
    sampler = Kind("sampler", "x.samplers", "samplers_plugin:Sampler", plural="samplers")
    registry = Registry((*KINDS, sampler))
    assert registry.available("samplers") == ["broken", "halton"]
    assert registry.create("sampler", "halton", base=3).base == 3
    with pytest.raises(BrokenComponentError, match="sampler 'broken' from distribution samplers"):
        registry.create("sampler", "broken")
    assert registry.available("divergence")  # the other kinds are found as before
    sys.modules.pop("samplers_plugin", None)


# Swapping the game -------------------------------------------------------------------------------
def test_swapping_the_game_changes_nothing_else_in_the_configuration() -> None:
    raw = {"data": {"name": "ring8"}, "prior": {"name": "gaussian", "dim": 2}}
    base = config_to_dict(parse_config(raw))
    for game in ("aae", "ali", "introvae"):
        swapped = config_to_dict(parse_config({**raw, "game": {"name": game}}))
        differing = {k for k in base if base[k] != swapped[k]}
        assert differing == {"game"}
        assert {k for k in base["game"] if base["game"][k] != swapped["game"][k]} == {"name"}
