"""Name -> component registries, one per kind, extended by other packages through entry points.

Built-ins register with the same decorator a plugin author could use, and third-party components
are found through the entry-point group ``mtlcli.<kind>``. Entry points are read (metadata only)
when a name is looked up or listed; a plugin's code is imported only when it is asked for by name
or a listing asks for details, so ``mtl --help`` never imports a plugin.

A plugin that fails to import, does not fit its kind's interface, or takes a name that another
package already uses does not take the CLI down: it is reported once through a warning (naming
the plugin, its package and the error) and the other components keep working. Using it by name is
an error that says why. ``MTL_STRICT_PLUGINS=1`` turns those warnings into errors and makes every
lookup load all installed plugins of its kind first, so a broken installation fails at once.
"""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterator

from mtlcli.errors import UserError

BUILTIN = "built-in"
STRICT_ENV = "MTL_STRICT_PLUGINS"


@dataclass(frozen=True)
class Contract:
    """What a component of one kind must be: how it is called, and whether it builds an nn.Module."""

    call: str  # how mtlcli calls it, for messages: 'Name(positional, ..., **options)'
    module: bool  # True: a torch.nn.Module subclass or a factory that returns one

    @property
    def arguments(self) -> tuple[str, ...]:
        """The positional arguments mtlcli passes, as ``call`` names them."""
        inside = self.call[self.call.index("(") + 1:self.call.rindex(")")]
        return tuple(a for a in (part.strip() for part in inside.split(",")) if a and not a.startswith("*"))


CONTRACTS: dict[str, Contract] = {}  # kind -> its contract, filled by declare() at the end of this module


def singular(kind: str) -> str:
    """'loss_combiners' -> 'loss_combiner': one component of the kind, as checkpoints record it."""
    return kind[:-1] if kind.endswith("s") else kind


def spoken(kind: str) -> str:
    """'loss_combiners' -> 'loss combiner', for messages."""
    return singular(kind).replace("_", " ")


def check_component(kind: str, obj: Any) -> str | None:
    """Why ``obj`` cannot serve as a component of ``kind``, or None when it fits.

    Poolers, heads and loss combiners are ``torch.nn.Module`` subclasses or factories (callables
    that return a module); schedulers are callables. Either must accept the positional arguments
    mtlcli passes. Plugin authors can call this in their tests.
    """
    contract = CONTRACTS.get(kind)
    if contract is None:
        return None
    if contract.module:
        from torch import nn  # a plugin being checked has imported torch already

        if isinstance(obj, nn.Module):
            return f"is a {type(obj).__name__} object, not a class or factory; point the entry point at the class"
        if isinstance(obj, type) and not issubclass(obj, nn.Module):
            return "is a class but not a torch.nn.Module subclass"
    if not callable(obj):
        return f"is a {type(obj).__name__}, not a class or function"
    try:
        inspect.signature(obj).bind(*contract.arguments)
    except TypeError as exc:
        return f"cannot be called as {contract.call}: {exc}"
    except ValueError:  # no signature to inspect (a C function); it will tell at call time
        pass
    return None


class PluginWarning(UserWarning):
    """A plugin could not be loaded; the other components keep working."""


def _warn_python(message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=4)


_warning_handler: Callable[[str], None] = _warn_python


def set_warning_handler(handler: Callable[[str], None] | None) -> None:
    """Where plugin warnings go: the CLI prints them on stderr; the default is ``warnings.warn``."""
    global _warning_handler
    _warning_handler = handler or _warn_python


def strict_plugins() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


@dataclass
class Entry:
    """One registered component and where it came from."""

    kind: str
    name: str
    source: str  # "built-in" or the distribution name of the plugin package
    version: str
    obj: Any = None  # the constructor, once loaded
    entry_point: metadata.EntryPoint | None = None
    error: str | None = None  # why loading failed, if it did

    @property
    def loaded(self) -> bool:
        return self.obj is not None

    @property
    def builtin(self) -> bool:
        return self.source == BUILTIN

    @property
    def origin(self) -> str:
        """'mtlcli 0.1.0 (built-in)' or 'mtl-plugin-example 0.1.0': where it comes from, for people."""
        return f"mtlcli {self.version} (built-in)" if self.builtin else f"{self.source} {self.version}"

    @property
    def target(self) -> str:
        """What the name points at: 'package.module:attr'."""
        if self.entry_point is not None:
            return self.entry_point.value
        obj = self.obj
        return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"


class Registry:
    """Components of one kind: ``register(name)`` (a decorator), ``get(name)``, ``names()``, ``in``."""

    def __init__(self, kind: str):
        self.kind = kind
        self.group = f"mtlcli.{kind}"
        self._entries: dict[str, list[Entry]] = {}  # name -> every package that claims it
        self._discovered = False
        self._reported: set[tuple[str, str]] = set()  # (name, source) already warned about

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, obj: Any = None):
        """Register ``obj`` under ``name``; without ``obj`` this is a decorator."""

        def add(target: Any) -> Any:
            problem = check_component(self.kind, target)
            if problem:
                raise TypeError(f"{spoken(self.kind)} '{name}' {problem}")
            self._add(Entry(self.kind, name, BUILTIN, _own_version(), obj=target))
            return target

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        claims = [e for e in self._entries.pop(name, []) if not e.builtin]
        if claims:
            self._entries[name] = claims

    def refresh(self) -> None:
        """Forget what entry points provided; the next lookup reads them again (after an install)."""
        for name in list(self._entries):
            self._entries[name] = [e for e in self._entries[name] if e.builtin]
            if not self._entries[name]:
                del self._entries[name]
        self._discovered = False
        self._reported.clear()

    def _add(self, entry: Entry) -> None:
        claims = [e for e in self._entries.get(entry.name, []) if e.source != entry.source]
        self._entries[entry.name] = claims + [entry]
        if claims:
            self._report(entry, self._conflict(entry.name))

    def _conflict(self, name: str) -> str | None:
        claims = self._entries.get(name, [])
        if len(claims) < 2:
            return None
        return (f"two or more {self.kind.replace('_', ' ')} are named '{name}': from "
                f"{' and from '.join(e.origin for e in claims)}; uninstall all but one of these packages")

    # -- discovery ----------------------------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        try:
            for ep in metadata.entry_points(group=self.group):
                dist = getattr(ep, "dist", None)
                source = dist.metadata["Name"] if dist is not None else ep.module.split(".")[0]
                version = dist.version if dist is not None else "?"
                self._add(Entry(self.kind, ep.name, source, version, entry_point=ep))
            if strict_plugins():  # find broken plugins now, not when someone happens to use one
                for entry in self._all():
                    self._load(entry)
                    if entry.error:
                        self._report(entry, entry.error)
        except UserError:
            self._discovered = False  # strict mode: the next lookup fails the same way
            raise

    def _load(self, entry: Entry) -> None:
        if entry.loaded or entry.error is not None or entry.entry_point is None:
            return
        try:
            obj = entry.entry_point.load()
        except Exception as exc:  # a plugin may fail in any way; it must not take the CLI down
            entry.error = f"{type(exc).__name__}: {exc}"
            return
        problem = check_component(self.kind, obj)
        if problem:
            entry.error = f"{entry.entry_point.value} {problem}"
        else:
            entry.obj = obj

    def _report(self, entry: Entry, problem: str) -> None:
        """Warn once about a plugin that cannot be used; in strict mode, stop instead."""
        message = f"{spoken(self.kind)} '{entry.name}' from {entry.origin}: {problem}"
        if strict_plugins():
            raise UserError(f"{message} ({STRICT_ENV}=1 makes this an error)")
        key = (entry.name, entry.source)
        if key not in self._reported:
            self._reported.add(key)
            _warning_handler(f"skipping plugin {message}")

    def _all(self) -> Iterator[Entry]:
        for name in sorted(self._entries):
            yield from self._entries[name]

    # -- lookup -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def entry(self, name: str) -> Entry:
        """The entry for ``name``, loaded; unknown and ambiguous names are errors."""
        self._discover()
        if name not in self._entries:
            available = ", ".join(self.names()) or "none"
            raise UserError(f"unknown {spoken(self.kind)} '{name}' (available: {available})")
        conflict = self._conflict(name)
        if conflict:
            raise UserError(conflict)
        (entry,) = self._entries[name]
        self._load(entry)
        return entry

    def get(self, name: str) -> Any:
        """The class or factory registered as ``name``; a plugin that failed to load is an error."""
        entry = self.entry(name)
        if entry.error is not None:
            raise UserError(f"{spoken(self.kind)} '{name}' from {entry.origin} failed to load: {entry.error}")
        return entry.obj

    def entries(self, load: bool = False) -> Iterator[Entry]:
        """Every registered component, by name, conflicting claims included.

        With ``load``, plugins are imported and checked, and each one that fails is warned about.
        """
        self._discover()
        for entry in list(self._all()):
            if load:
                self._load(entry)
                if entry.error:
                    self._report(entry, entry.error)
            yield entry

    def problem(self, entry: Entry) -> str | None:
        """Why ``entry`` cannot be used (a name clash or a load failure), or None."""
        return self._conflict(entry.name) or entry.error


def _own_version() -> str:
    from mtlcli import __version__

    return __version__


REGISTRIES: dict[str, Registry] = {}  # kind -> its registry, in the order declared


def declare(kind: str, call: str, module: bool) -> Registry:
    """A kind of component: its registry (entry-point group ``mtlcli.<kind>``) and its contract."""
    CONTRACTS[kind] = Contract(call, module)
    REGISTRIES[kind] = Registry(kind)
    return REGISTRIES[kind]


# All extension points, declared in one place, one line per kind: what mtlcli calls, and whether
# that builds a torch.nn.Module. KINDS, the entry-point groups and the names in messages follow.
poolers = declare("poolers", "Pooler(hidden_size, **pooler_options)", module=True)
heads = declare("heads", "Head(in_features, num_labels, **head_options)", module=True)
loss_combiners = declare("loss_combiners", "LossCombiner(tasks, weights)", module=True)
schedulers = declare("schedulers", "scheduler(optimizer, num_training_steps, num_warmup_steps)", module=False)
trackers = declare("trackers", "Tracker()", module=False)
task_types = declare("task_types", "TaskType()", module=False)

KINDS = tuple(REGISTRIES)


def refresh_all() -> None:
    """Read entry points again in every registry, after packages were installed or removed."""
    for registry in REGISTRIES.values():
        registry.refresh()
