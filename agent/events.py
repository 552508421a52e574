"""The event type: what a plugin (or the agent itself) raises, shared by every layer above."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """An event a plugin raised: what, when (wall clock, ns) and how strongly."""

    plugin: str
    kind: str
    ts_ns: int
    score: float
    data: dict[str, Any] = field(default_factory=dict)
