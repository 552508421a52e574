"""Where things are in the repository, and the environment of a child process that imports
`tests.support`."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root: the sys.path entry under which `tests.support` imports."""
MODELS = REPO / "models"
OTA_DATA = REPO / "tests" / "ota" / "data"


def child_env(*entries: Path) -> dict[str, str]:
    """os.environ with `entries` and the repository root in front of PYTHONPATH."""
    path = [*map(str, entries), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
