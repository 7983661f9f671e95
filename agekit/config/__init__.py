"""Experiment configuration: the sections (:mod:`.sections`), reading them from TOML with
overrides and recipes (:mod:`.loading`, :mod:`.recipes`), and which differences between two
configurations change the science (:mod:`.changes`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agekit.config.loading import TOMLDecodeError as TOMLDecodeError
    from agekit.config.loading import config_to_dict as config_to_dict
    from agekit.config.loading import format_errors as format_errors
    from agekit.config.loading import load_config as load_config
    from agekit.config.loading import load_toml as load_toml
    from agekit.config.loading import loads_toml as loads_toml
    from agekit.config.loading import parse_config as parse_config
    from agekit.config.loading import parse_overrides as parse_overrides
    from agekit.config.loading import set_dotted as set_dotted
    from agekit.config.loading import validate_components as validate_components
    from agekit.config.recipes import RECIPES as RECIPES
    from agekit.config.recipes import apply_recipe as apply_recipe
    from agekit.config.recipes import deep_merge as deep_merge
    from agekit.config.sections import REFERENCE_TH as REFERENCE_TH
    from agekit.config.sections import AdaptiveAdversary as AdaptiveAdversary
    from agekit.config.sections import BackboneConfig as BackboneConfig
    from agekit.config.sections import Component as Component
    from agekit.config.sections import ConfigError as ConfigError
    from agekit.config.sections import DataConfig as DataConfig
    from agekit.config.sections import DistributedConfig as DistributedConfig
    from agekit.config.sections import DivergenceConfig as DivergenceConfig
    from agekit.config.sections import ExperimentConfig as ExperimentConfig
    from agekit.config.sections import GameConfig as GameConfig
    from agekit.config.sections import OptimConfig as OptimConfig
    from agekit.config.sections import PriorConfig as PriorConfig
    from agekit.config.sections import Strict as Strict
    from agekit.config.sections import TrainConfig as TrainConfig
    from agekit.config.sections import (
        reference_adversary_threshold as reference_adversary_threshold,
    )
    from agekit.config.sections import reference_ideal_kl as reference_ideal_kl

#: Each public name -> the module that defines it. Loaded on first use: the sections import
#: nothing of agekit, while reading a file (:mod:`.loading`) needs the resolver, which itself
#: reads the sections; an eager import here would make ``import agekit.config.sections`` import
#: the resolver before the sections exist.
_HOMES: dict[str, str] = {
    "AdaptiveAdversary": "sections",
    "BackboneConfig": "sections",
    "Component": "sections",
    "ConfigError": "sections",
    "DataConfig": "sections",
    "DistributedConfig": "sections",
    "DivergenceConfig": "sections",
    "ExperimentConfig": "sections",
    "GameConfig": "sections",
    "OptimConfig": "sections",
    "PriorConfig": "sections",
    "RECIPES": "recipes",
    "REFERENCE_TH": "sections",
    "Strict": "sections",
    "TOMLDecodeError": "loading",
    "TrainConfig": "sections",
    "apply_recipe": "recipes",
    "config_to_dict": "loading",
    "deep_merge": "recipes",
    "format_errors": "loading",
    "load_config": "loading",
    "load_toml": "loading",
    "loads_toml": "loading",
    "parse_config": "loading",
    "parse_overrides": "loading",
    "reference_adversary_threshold": "sections",
    "reference_ideal_kl": "sections",
    "set_dotted": "loading",
    "validate_components": "loading",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'agekit.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"agekit.config.{_HOMES[name]}"), name)
