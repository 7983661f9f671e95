"""Reading an experiment configuration: TOML, ``--set`` overrides, recipes, and validation of
every section and every component it names, before any work starts; an error names the file, the
key and what was expected."""

from __future__ import annotations

import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agekit.config.recipes import RECIPES, apply_recipe, deep_merge
from agekit.config.sections import ConfigError, ExperimentConfig
from agekit.resolve import Resolver

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: What :func:`loads_toml` raises on text that is not TOML.
TOMLDecodeError = tomllib.TOMLDecodeError


def loads_toml(text: str) -> dict[str, Any]:
    """Parse TOML text (``tomllib``; ``tomli`` on Python 3.10). Raises :data:`TOMLDecodeError`."""
    return tomllib.loads(text)


def load_toml(path: str | Path, what: str = "TOML file") -> dict[str, Any]:
    """Read and parse a TOML file; every failure is a one-line :class:`ConfigError` naming it.

    ``what`` names the file's role in the messages ("configuration file", "study file").
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a {what}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected a {what}") from None
    except OSError as exc:  # permission denied, an unreadable disk, ...
        raise ConfigError(f"{path}: cannot read this {what} ({exc.strerror or exc})") from None
    try:
        return loads_toml(text)
    except TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``tree["a"]["b"]["c"] = value`` for ``dotted = "a.b.c"``, creating missing tables.

    The one setter behind ``--set KEY=VALUE`` and a study's axes and profiles; a key below a value
    that is not a table is a :class:`ConfigError`.
    """
    parts = dotted.split(".")
    if not all(part.strip() for part in parts):
        raise ConfigError(f"{dotted!r}: not a dotted key (e.g. train.steps)")
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            above = ".".join(parts[: depth + 1])
            raise ConfigError(f"{dotted}: {above} is a value ({child!r}), not a table")
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: Sequence[str], option: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` pairs (``train.steps=100``) as one nested mapping to lay over a configuration.

    Values are parsed as TOML (``3``, ``1e-4``, ``true``, ``[1, 2]``, ``"text"``); a bare word that
    is not TOML is a string. A pair that sets a configuration section to a value (``train=5``), or
    a key below a value (``train.steps.x=1``), is a :class:`ConfigError` naming the pair.
    """
    merged: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{option} expects KEY=VALUE (e.g. train.steps=200), got {pair!r}")
        try:
            value = loads_toml(f"v = {text}")["v"]
        except TOMLDecodeError:
            value = text.strip()  # a bare word is a string
        try:
            set_dotted(merged, key, value)
            _check_shape(ExperimentConfig, {key.split(".")[0]: merged[key.split(".")[0]]}, "")
        except ConfigError as exc:
            raise ConfigError(f"{option} {pair}: {exc}") from None
    return merged


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of a field that is a section (``Model`` or ``Model | None``); a list
    of tables (``[[loggers]]``) is a value."""
    if typing.get_origin(annotation) in (list, tuple):
        return None
    candidates = typing.get_args(annotation) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _check_shape(model: type[BaseModel], tree: dict[str, Any], prefix: str) -> None:
    """Sections get tables and values get values; unknown keys are left to validation."""
    for key, value in tree.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        dotted = f"{prefix}{key}"
        section = _section_model(field.annotation)
        if section is not None:
            if isinstance(value, dict):
                _check_shape(section, value, f"{dotted}.")
                continue
            keys = list(section.model_fields)
            shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
            raise ConfigError(
                f"{dotted} is a section ({shown}), not a value: set one of its keys, "
                f"e.g. {dotted}.{keys[0]}=..."
            )
        mapping = typing.get_origin(field.annotation) is dict or field.annotation is dict
        if isinstance(value, dict) and not mapping:
            raise ConfigError(f"{dotted} is a value, not a section: set it as {dotted}=VALUE")


def format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {err['msg']}{shown}")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate a mapping (recipe applied) and every component it names."""
    try:
        raw = apply_recipe(raw)
    except KeyError as exc:
        raise ConfigError(f"{source}: recipe: {exc.args[0]}") from None
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, source)) from None
    validate_components(config, source)
    return config


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load, override (a mapping like :func:`parse_overrides` returns) and validate a TOML file."""
    path = Path(path)
    raw = load_toml(path, "configuration file")
    empty = not raw
    if overrides:
        raw = deep_merge(raw, overrides)
    _require_a_starting_point(raw, path, empty)
    return parse_config(raw, str(path))


def _require_a_starting_point(raw: dict[str, Any], path: Path, empty: bool) -> None:
    """A file (with its overrides) must name its data set or a recipe: the library defaults
    alone (mnist5k, 1,000 steps) are neither the paper's game nor a recipe, so training them is
    never what was meant."""
    data = raw.get("data")
    if raw.get("recipe") is not None or (isinstance(data, dict) and "name" in data):
        return
    what = "is empty" if empty else "names neither a data set (data.name) nor a recipe"
    raise ConfigError(
        f"{path}: the configuration file {what}; the library defaults are neither the paper's "
        "game nor a recipe: start from a shipped configuration in configs/ or set recipe = one "
        f"of {', '.join(sorted(RECIPES))}"
    )


def validate_components(config: ExperimentConfig, source: str) -> None:
    """Every named component exists, imports and accepts its options (:mod:`agekit.resolve`):
    before any training, so that a typo in a plugin name or option fails in a second, not after
    an hour of a study's first run."""
    Resolver().validate(config, source)


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")
