"""One registry for every kind of agekit component.

Built-ins and third-party plugins are found the same way: through package entry points, one group
per kind (``agekit.priors``, ``agekit.divergences``, ...). Listing names reads package metadata
only; a component's module is imported the first time it is created, and a plugin that fails to
import is reported by name without breaking the others.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

#: Notes for the person running agekit (a plugin reusing a built-in's name); commands print them.
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """One kind of component: the whole of what agekit needs to know to find, check and configure
    it. Adding a kind is one row in :data:`KINDS`, its entry-point group and its own folder."""

    name: str
    #: The entry-point group built-ins and plugins declare it in.
    group: str
    #: ``module:Class`` of the base every component of the kind subclasses (imported on first
    #: check, so that listing names imports nothing).
    base: str
    #: The configuration keys (dotted, relative to the file's top) whose table names one, as
    #: ``name`` with ``options``.
    sections: tuple[str, ...] = ()
    #: Its name in the plural, as ``agekit list`` also accepts it.
    plural: str = ""
    #: The configuration keys (top-level) that hold a list of tables, each naming one as
    #: ``name`` with ``options`` (``[[loggers]]``).
    lists: tuple[str, ...] = ()


#: Every component kind.
KINDS: tuple[Kind, ...] = (
    Kind("prior", "agekit.priors", "agekit.components:Prior", ("prior",), "priors"),
    Kind("divergence", "agekit.divergences", "agekit.components:Divergence", ("divergence",)),
    Kind("backbone", "agekit.backbones", "agekit.components:Backbone", ("backbone",)),
    Kind(
        "loss",
        "agekit.losses",
        "agekit.components:ReconstructionLoss",
        ("game.data_loss", "game.latent_loss"),
        "losses",
    ),
    Kind("dataset", "agekit.datasets", "agekit.components:DataSource", ("data",)),
    Kind("metric", "agekit.metrics", "agekit.components:Metric"),
    Kind("game", "agekit.games", "agekit.games.base:Game", ("game",)),
    Kind("logger", "agekit.loggers", "agekit.loggers.base:Logger", lists=("loggers",)),
)

#: kind -> entry-point group.
GROUPS: dict[str, str] = {kind.name: kind.group for kind in KINDS}

#: Configuration key -> the kind of component its table names (``divergence`` -> divergence).
SECTION_KINDS: dict[str, str] = {section: kind.name for kind in KINDS for section in kind.sections}

#: Configuration key -> the kind of component each table of its list names (``loggers`` -> logger).
LIST_KINDS: dict[str, str] = {key: kind.name for kind in KINDS for key in kind.lists}

#: Accepted spellings of each kind on the command line (``agekit list divergences``).
KIND_ALIASES: dict[str, str] = {
    **{kind.name: kind.name for kind in KINDS},
    **{(kind.plural or kind.name + "s"): kind.name for kind in KINDS},
}


#: Distributions known to provide components that agekit itself does not ship, so that an unknown
#: name can say what to install.
KNOWN_PROVIDERS: dict[tuple[str, str], str] = {
    ("divergence", "mmd"): "agekit-mmd (plugins/agekit-mmd)",
    ("divergence", "sliced-wasserstein"): "agekit-sliced (plugins/agekit-sliced)",
    ("prior", "gaussian-mixture"): "agekit-priors (plugins/agekit-priors)",
    ("game", "wae-mmd"): "agekit-wae (plugins/agekit-wae)",
}


#: The distribution of agekit's own components; its names win over a plugin's.
BUILTIN = "agekit"


class RegistryError(LookupError):
    """A component could not be found, loaded or configured."""


class UnknownComponentError(RegistryError):
    pass


class BrokenComponentError(RegistryError):
    pass


class DuplicateComponentError(RegistryError):
    pass


class ComponentOptionsError(RegistryError, ValueError):
    pass


@dataclass
class Entry:
    """One registered component: where it comes from and, once imported, what it is."""

    kind: str
    name: str
    target: str
    distribution: str
    version: str
    entry_point: metadata.EntryPoint | None = None
    loaded: Any = None
    error: str | None = None
    duplicates: list[str] = field(default_factory=list)
    #: Plugins ("name version") that register this built-in's name too; the built-in is used.
    shadowed: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.duplicates:
            return "broken: name registered by " + " and ".join(self.duplicates)
        if self.error is not None:
            return f"broken: {self.error}"
        status = "ok" if self.loaded is not None else "not checked (agekit list --check imports it)"
        if self.shadowed:
            status += "; the same name from " + " and ".join(self.shadowed) + " is ignored"
        return status


class Registry:
    """Lazily discovers entry points and creates configured components."""

    def __init__(self, kinds: Sequence[Kind] = KINDS) -> None:
        self.kinds: dict[str, Kind] = {kind.name: kind for kind in kinds}
        self._aliases = {
            **{kind.name: kind.name for kind in kinds},
            **{(kind.plural or kind.name + "s"): kind.name for kind in kinds},
        }
        self._entries: dict[str, dict[str, Entry]] | None = None
        # Components registered in-process (tests, notebooks): same lookup path as entry points.
        self._local: dict[str, dict[str, Entry]] = {kind: {} for kind in self.kinds}

    def _normalise_kind(self, kind: str) -> str:
        try:
            return self._aliases[kind]
        except KeyError:
            raise RegistryError(
                f"unknown component kind {kind!r}; kinds are: {', '.join(self.kinds)}"
            ) from None

    # discovery -------------------------------------------------------------------------------
    def _discover(self) -> dict[str, dict[str, Entry]]:
        if self._entries is not None:
            return self._entries
        entries: dict[str, dict[str, Entry]] = {kind: {} for kind in self.kinds}
        all_points = metadata.entry_points()
        for kind, group in ((k.name, k.group) for k in self.kinds.values()):
            seen: set[tuple[str, str, str]] = set()
            for ep in all_points.select(group=group):
                dist = ep.dist
                dist_name = dist.metadata["Name"] if dist is not None else "<unknown>"
                dist_version = dist.version if dist is not None else "?"
                key = (ep.name, ep.value, dist_name)
                if key in seen:  # the same distribution seen twice on sys.path
                    continue
                seen.add(key)
                entry = Entry(kind, ep.name, ep.value, dist_name, dist_version, entry_point=ep)
                existing = entries[kind].get(ep.name)
                clash = existing is not None and existing.distribution != dist_name
                if existing is not None and clash and BUILTIN in (existing.distribution, dist_name):
                    # A plugin may not take over a built-in's name: every configuration naming
                    # the built-in would silently change, or break for everyone.
                    keep, drop = (existing, entry) if dist_name != BUILTIN else (entry, existing)
                    others = [d for d in drop.duplicates if d != drop.distribution]
                    dropped = [f"{drop.distribution} {drop.version}", *others]
                    keep.shadowed = sorted({*keep.shadowed, *drop.shadowed, *dropped})
                    entries[kind][ep.name] = keep
                    continue
                if existing is not None and clash:
                    providers = sorted({existing.distribution, dist_name, *existing.duplicates})
                    existing.duplicates = providers
                    continue
                entries[kind][ep.name] = entry
        self._entries = entries
        return entries

    def refresh(self) -> None:
        """Forget discovered entry points (after installing a plugin in the same process)."""
        self._entries = None

    def _all(self, kind: str) -> dict[str, Entry]:
        merged = dict(self._discover()[kind])
        merged.update(self._local[kind])
        return merged

    # public API --------------------------------------------------------------------------------
    def available(self, kind: str) -> list[str]:
        """Names registered for ``kind``; imports nothing."""
        return sorted(self._all(self._normalise_kind(kind)))

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [self._normalise_kind(kind)] if kind else list(self.kinds)
        return [entry for k in kinds for _, entry in sorted(self._all(k).items())]

    def register(self, kind: str, name: str, obj: Any, *, distribution: str = "<local>") -> None:
        """Register a component in this process only (no entry point needed)."""
        kind = self._normalise_kind(kind)
        target = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', obj)!s}"
        self._local[kind][name] = Entry(kind, name, target, distribution, "-", loaded=obj)

    def unregister(self, kind: str, name: str) -> None:
        self._local[self._normalise_kind(kind)].pop(name, None)

    def entry(self, kind: str, name: str) -> Entry:
        kind = self._normalise_kind(kind)
        entries = self._all(kind)
        if name not in entries:
            raise UnknownComponentError(self._unknown_message(kind, name, entries))
        return entries[name]

    def load(self, kind: str, name: str) -> Any:
        """Import the component's object (class or factory), reporting failures by name."""
        entry = self.entry(kind, name)
        if entry.shadowed and entry.loaded is None and entry.error is None:
            log.warning(
                "%s %r: ignoring the same name registered by %s; agekit's built-in is used",
                entry.kind,
                name,
                " and ".join(entry.shadowed),
            )
        if entry.duplicates:
            raise DuplicateComponentError(
                f"{entry.kind} {name!r} is registered by more than one distribution: "
                f"{', '.join(entry.duplicates)}; uninstall one of them"
            )
        if entry.loaded is None and entry.error is None:
            assert entry.entry_point is not None
            try:
                obj = entry.entry_point.load()
            except Exception as exc:
                entry.error = f"import of {entry.target} failed: {type(exc).__name__}: {exc}"
            else:
                problem = _check_component(self.kinds[entry.kind], obj)
                if problem:
                    entry.error = problem
                else:
                    entry.loaded = obj
        if entry.error is not None:
            raise BrokenComponentError(
                f"{entry.kind} {name!r} from distribution {entry.distribution} "
                f"{entry.version} is broken: {entry.error}"
            )
        return entry.loaded

    def create(self, kind: str, name: str | Callable[..., Any], /, **options: Any) -> Any:
        """Return a configured component. ``name`` may be a registered name or a class/factory."""
        kind = self._normalise_kind(kind)
        if isinstance(name, str):
            factory = self.load(kind, name)
            label = f"{kind} {name!r}"
        else:
            factory = name
            problem = _check_component(self.kinds[kind], factory)
            if problem:
                raise BrokenComponentError(f"{kind} {_qualname(factory)}: {problem}")
            label = f"{kind} {_qualname(factory)}"
        validated = validate_options(factory, options, label)
        try:
            return factory(**validated)
        except (ValueError, TypeError) as exc:
            raise ComponentOptionsError(f"{label} rejected its options {options}: {exc}") from exc

    def check(self, kind: str | None = None) -> list[Entry]:
        """Import every component (for ``agekit list``) and return the entries with their status."""
        entries = self.entries(kind)
        for entry in entries:
            with contextlib.suppress(RegistryError):  # the entry records why it is broken
                self.load(entry.kind, entry.name)
        return entries

    def _unknown_message(self, kind: str, name: str, entries: dict[str, Entry]) -> str:
        names = sorted(entries)
        message = f"no {kind} named {name!r}. Available {kind}s: {', '.join(names) or '(none)'}."
        close = difflib.get_close_matches(name, names, n=1)
        if close:
            message += f" Did you mean {close[0]!r}?"
        provider = KNOWN_PROVIDERS.get((kind, name))
        if provider:
            message += f" {name!r} is provided by the distribution {provider}: pip install it."
        message += f" Run `agekit list {kind}` to see what is installed."
        return message


def _qualname(obj: Any) -> str:
    return getattr(obj, "__qualname__", repr(obj))


def _check_component(kind: Kind, obj: Any) -> str | None:
    """A plugin's object must be the right kind of thing; say what is wrong if not."""
    base = _base_class(kind)
    if inspect.isclass(obj):
        if not issubclass(obj, base):
            return (
                f"{obj.__module__}.{obj.__qualname__} does not subclass "
                f"{base.__module__}.{base.__qualname__}"
            )
        return None
    if callable(obj):  # a factory function; its product is checked when created
        return None
    return f"{obj!r} is neither a {base.__qualname__} subclass nor a factory"


def _base_class(kind: Kind) -> type:
    """The kind's base class, imported on first use: the bases import torch, and listing names
    must not."""
    module, _, name = kind.base.partition(":")
    base: type = getattr(importlib.import_module(module), name)
    return base


def _option_fields(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    signature = inspect.signature(target)
    try:
        hints = inspect.get_annotations(target, eval_str=True)
    except Exception:
        hints = {}
    fields: dict[str, Any] = {}
    for pname, param in signature.parameters.items():
        if pname == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(pname, Any)
        default = ... if param.default is param.empty else param.default
        fields[pname] = (annotation, default)
    return fields


@functools.cache
def _options_model(factory: Callable[..., Any]) -> tuple[dict[str, Any], type[BaseModel]]:
    """The factory's option fields and their pydantic model, built once per factory: a study
    validates thousands of components, and building a model costs far more than using it."""
    fields = _option_fields(factory)
    model = create_model(
        "Options", __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True), **fields
    )
    return fields, model


def validate_options(factory: Callable[..., Any], options: dict[str, Any], label: str) -> dict:
    """Validate ``options`` against the factory's keyword signature, rejecting unknown keys."""
    fields, model = _options_model(factory)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        accepted = ", ".join(sorted(fields)) or "(none)"
        raise ComponentOptionsError(
            f"{label} does not accept option(s) {', '.join(map(repr, unknown))}; "
            f"accepted options: {accepted}"
        )
    try:
        parsed = model(**options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in exc.errors()
        )
        raise ComponentOptionsError(f"{label}: invalid options: {problems}") from None
    return {key: getattr(parsed, key) for key in options}


REGISTRY = Registry()
available = REGISTRY.available
create = REGISTRY.create
register = REGISTRY.register
