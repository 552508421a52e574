"""The agent's plugin contract over SquareWatch: `pytest` in this folder runs all of it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from squarewatch import SquareWatch

from agent.testing import PluginContract


class TestSquareWatch(PluginContract):
    plugin_class = SquareWatch
    # Where the waveform_classifier folder is: an edge-agent checkout's models/, or your own.
    models_dir = Path(os.environ.get("EDGE_AGENT_MODELS", "models"))
    changed_params: ClassVar[dict[str, Any] | None] = {"on_above": 0.9}
