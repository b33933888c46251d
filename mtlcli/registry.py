"""Name -> component registries, one per kind, extended by other packages through entry points.

Built-ins register with the same decorator a plugin author would use, and third-party components
are found through the entry-point group ``mtlcli.<kind>``. Entry points are read (metadata only)
when a name is looked up or listed; a plugin's code is imported only when it is asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterator

from mtlcli.errors import UserError

KINDS = ("poolers", "heads", "loss_combiners", "schedulers")


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


class Registry:
    """Components of one kind: ``register(name)`` (a decorator), ``get(name)``, ``names()``, ``in``."""

    def __init__(self, kind: str, check: Callable[[Any], str | None] | None = None):
        self.kind = kind
        self.group = f"mtlcli.{kind}"
        self._check = check  # returns why an object does not fit this kind, or None
        self._entries: dict[str, Entry] = {}
        self._discovered = False

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, obj: Any = None):
        """Register ``obj`` under ``name``; without ``obj`` this is a decorator."""

        def add(target: Any) -> Any:
            self._add(Entry(self.kind, name, "built-in", _own_version(), obj=target))
            return target

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _add(self, entry: Entry) -> None:
        old = self._entries.get(entry.name)
        if old is not None and old.source != entry.source:
            raise UserError(
                f"two {self.kind} are named '{entry.name}': one from {old.source}, "
                f"one from {entry.source}; uninstall one of them"
            )
        self._entries[entry.name] = entry

    # -- discovery ----------------------------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for ep in metadata.entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            source = dist.metadata["Name"] if dist is not None else ep.module
            version = dist.version if dist is not None else "?"
            self._add(Entry(self.kind, ep.name, source, version, entry_point=ep))

    def _load(self, entry: Entry) -> None:
        if entry.loaded or entry.error is not None:
            return
        try:
            obj = entry.entry_point.load()  # type: ignore[union-attr]
        except Exception as exc:  # a plugin may fail in any way; it must not take the CLI down
            entry.error = f"{type(exc).__name__}: {exc}"
            return
        problem = self._check(obj) if self._check else None
        if problem:
            entry.error = problem
        else:
            entry.obj = obj

    # -- lookup -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def entry(self, name: str) -> Entry:
        self._discover()
        if name not in self._entries:
            available = ", ".join(self.names()) or "none"
            raise UserError(f"unknown {self.kind[:-1].replace('_', ' ')} '{name}' (available: {available})")
        entry = self._entries[name]
        self._load(entry)
        return entry

    def get(self, name: str) -> Any:
        entry = self.entry(name)
        if entry.error is not None:
            raise UserError(f"{self.kind[:-1].replace('_', ' ')} '{name}' from {entry.source} failed to load: {entry.error}")
        return entry.obj

    def entries(self, load: bool = False) -> Iterator[Entry]:
        for name in self.names():
            entry = self._entries[name]
            if load:
                self._load(entry)
            yield entry


def _own_version() -> str:
    from mtlcli import __version__

    return __version__


def strict_plugins() -> bool:
    return os.environ.get("MTL_STRICT_PLUGINS", "") not in ("", "0")


# All extension points, declared in one place.
poolers = Registry("poolers")
heads = Registry("heads")
loss_combiners = Registry("loss_combiners")
schedulers = Registry("schedulers")

REGISTRIES = {r.kind: r for r in (poolers, heads, loss_combiners, schedulers)}
