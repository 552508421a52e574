"""Make the engine test kit (tests/engine/engine_testkit.py) importable from this folder."""

from __future__ import annotations

import sys
from pathlib import Path

_KIT = str(Path(__file__).resolve().parents[1] / "engine")
if _KIT not in sys.path:
    sys.path.insert(0, _KIT)
