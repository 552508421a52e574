"""What a config reload changes for the engine: a pure comparison of two configs."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.config.sections import AgentConfig, PluginConfig

LIVE_PLUGIN_FIELDS = ("enabled", "rate_hz", "params", "model")
"""Plugin settings applied to a running plugin without restarting it (enabled starts/stops)."""
RESTART_PLUGIN_FIELDS = ("cpu_affinity", "realtime_priority", "wait")
"""Plugin settings applied by restarting the plugin's loop."""
PROCESS_SECTIONS = ("hal", "runtime", "models_dir", "state_dir")
"""Sections the engine reads only at process start."""


@dataclass
class PluginChange:
    """The fields of one plugin that differ, old config and new."""

    old: PluginConfig
    new: PluginConfig
    fields: list[str]

    @property
    def needs_restart(self) -> bool:
        """True when the loop must be restarted to apply the change."""
        return any(f in RESTART_PLUGIN_FIELDS for f in self.fields)


@dataclass
class ConfigDiff:
    """Plugins added, removed and changed, and the process-level sections that changed."""

    added: list[PluginConfig] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, PluginChange] = field(default_factory=dict)
    engine_changed: bool = False
    restart_required: list[str] = field(default_factory=list)


def diff_configs(old: AgentConfig, new: AgentConfig) -> ConfigDiff:
    """Compare two configs as the engine sees them."""
    before = {p.name: p for p in old.plugins}
    after = {p.name: p for p in new.plugins}
    diff = ConfigDiff(
        added=[p for name, p in after.items() if name not in before],
        removed=[name for name in before if name not in after],
        engine_changed=old.engine != new.engine,
        restart_required=[s for s in PROCESS_SECTIONS if getattr(old, s) != getattr(new, s)],
    )
    for name, new_pc in after.items():
        old_pc = before.get(name)
        if old_pc is None:
            continue
        fields = [
            f
            for f in (*LIVE_PLUGIN_FIELDS, *RESTART_PLUGIN_FIELDS)
            if getattr(old_pc, f) != getattr(new_pc, f)
            or (f == "rate_hz" and _rate_set(old_pc) != _rate_set(new_pc))
        ]
        if old_pc.isolate or new_pc.isolate:
            # An isolated plugin's model is loaded in its child only (no slot in the host to swap
            # into), and in or out of a child is a different kind of runner: the next start.
            for key in ("model", "isolate"):
                if getattr(old_pc, key) != getattr(new_pc, key):
                    diff.restart_required.append(f"plugins[{name}].{key}")
            fields = [f for f in fields if f != "model"]
        if fields:
            diff.changed[name] = PluginChange(old_pc, new_pc, fields)
    return diff


def _rate_set(pc: PluginConfig) -> bool:
    return "rate_hz" in pc.model_fields_set
