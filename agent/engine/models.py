"""How the engine gets a model by name: the model store, then the runtime loader."""

from __future__ import annotations

from collections.abc import Callable

from agent.config.sections import AgentConfig
from agent.runtime.base import Model

ModelLoader = Callable[[str], Model]
"""Loads the active version of the named model, raising ModelError with the reason."""


def store_loader(config: AgentConfig) -> ModelLoader:
    """A loader resolving names through `ModelStore` (OTA's active version first)."""

    def load(name: str) -> Model:
        # Imported here: the loader imports only the runtime the chosen file needs.
        from agent.runtime.folders import ModelStore
        from agent.runtime.loader import load_model

        folder = ModelStore(config.models_dir, config.state_dir).resolve(name)
        return load_model(folder, config.runtime)

    return load
