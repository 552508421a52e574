"""Plugin discovery through the `edge_agent.plugins` entry-point group.

A separately installed package ships a plugin by declaring, in its pyproject.toml,
`[project.entry-points."edge_agent.plugins"] name = "module:Class"`. Only the plugins a config
names are imported (so a broken or heavy unrelated plugin costs nothing); `discover()` imports
them all for listings, logging and skipping those that fail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

from agent.errors import PluginError
from agent.plugin.base import Plugin

log = logging.getLogger(__name__)

GROUP = "edge_agent.plugins"


class PluginRegistry:
    """Plugin classes by name: entry points of `group`, plus classes handed in directly."""

    def __init__(
        self, group: str = GROUP, *, extra: Mapping[str, type[Plugin]] | None = None
    ) -> None:
        self.group = group
        self._extra = dict(extra or {})
        self._loaded: dict[str, type[Plugin]] = {}

    def entry_points(self) -> dict[str, EntryPoint]:
        """The group's entry points by name (first one wins on duplicates)."""
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            found.setdefault(ep.name, ep)
        return found

    def names(self) -> list[str]:
        """Every plugin name known, without importing anything."""
        return sorted({*self.entry_points(), *self._extra})

    def load(self, name: str) -> type[Plugin]:
        """The plugin class called `name`; PluginError naming it and the reason otherwise."""
        cls = self._extra.get(name) or self._loaded.get(name)
        if cls is not None:
            return cls
        ep = self.entry_points().get(name)
        if ep is None:
            known = ", ".join(self.names()) or "none installed"
            raise PluginError(f"plugin {name!r} not found in entry points {self.group!r} ({known})")
        try:
            obj = ep.load()
        except Exception as exc:  # any import-time failure of third-party code
            raise PluginError(f"plugin {name!r} ({ep.value}) failed to import: {exc!r}") from exc
        if not (isinstance(obj, type) and issubclass(obj, Plugin)):
            raise PluginError(f"plugin {name!r} ({ep.value}) is not a subclass of Plugin")
        self._loaded[name] = obj
        return obj

    def discover(self) -> dict[str, type[Plugin]]:
        """Import every plugin; one that fails is logged and skipped, never fatal."""
        found: dict[str, type[Plugin]] = {}
        for name in self.names():
            try:
                found[name] = self.load(name)
            except PluginError as exc:
                log.warning("skipping plugin: %s", exc)
        return found
