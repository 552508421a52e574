"""What the in-process fault tests share: the all-plugins agent (generic-x86) against a broker."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.config.sections import AgentConfig
from tests.support.sync import agent_config

REPO = Path(__file__).resolve().parents[2]
GENERIC = REPO / "firmware-configs" / "generic-x86.toml"


def all_plugins_config(
    port: int,
    device_id: str,
    state_dir: Path,
    *,
    extra_plugins: Iterable[dict[str, Any]] = (),
    **sections: Any,
) -> AgentConfig:
    """generic-x86's plugins (smart_home 10 Hz, energy 50 Hz, robot 500 Hz), models, runtime and
    simulated HAL, syncing to 127.0.0.1:`port` with the test defaults of `agent_config`; extra
    plugins appended, the given sections merged in."""
    generic = load_config(GENERIC, env={})
    plugins = [p.model_dump() for p in generic.plugins] + list(extra_plugins)
    config: AgentConfig = agent_config(
        port,
        device_id,
        state_dir,
        models_dir=generic.models_dir,
        runtime=generic.runtime.model_dump(),
        hal=generic.hal.model_dump(),
        plugins=plugins,
        **sections,
    )
    return config
