"""`edge-agent config` (not built yet)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Nothing to register until this command exists."""
    _ = (sub, argparse)
