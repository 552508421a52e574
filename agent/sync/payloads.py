"""JSON payloads of the agent's topics (see docs/mqtt.md): compact, strict JSON (no NaN)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.events import Event

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
MAX_TELEMETRY_ROWS = 500
"""Rows per telemetry message; longer batches are split so no message grows without bound."""


def clean(value: Any) -> Any:
    """`value` made JSON-safe: numpy types to Python, non-finite floats to None, tuples to lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, np.generic):
        return clean(value.item())
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def to_json(value: Any) -> bytes:
    """Compact UTF-8 JSON of an already clean value."""
    return _encode(value).encode()


def ts_seconds(ts_ns: int) -> float:
    """Wall-clock nanoseconds as Unix seconds with microsecond resolution."""
    return round(ts_ns / 1e9, 6)


@functools.lru_cache(maxsize=1024)
def _quoted(text: str) -> str:
    return _encode(text)


def _plain(data: dict[str, Any]) -> bool:
    """True when `data` is flat and JSON-safe as it is (the common case: skip `clean`)."""
    for k, v in data.items():
        if type(k) is not str:
            return False
        t = type(v)
        if t is float:
            if not math.isfinite(v):
                return False
        elif t is not str and t is not int and t is not bool and v is not None:
            return False
    return True


def event_payload(event: Event, *, event_id: str, seq: int) -> bytes:
    """One event: id (unique), seq (per plugin, monotonic across restarts), ts and what happened.

    Formatted by hand around `json.dumps` of the data: this runs once per event on the sync
    thread and is a third of the cost of the generic encoder.
    """
    data = event.data
    if not data:
        data_json = "{}"
    else:
        body = data if _plain(data) else clean(data)
        data_json = _encode(body)
    score = event.score
    score_json = repr(float(score)) if math.isfinite(score) else "null"
    return (
        f'{{"id":{_quoted(event_id)},"seq":{seq:d},"ts":{event.ts_ns / 1e9:.6f},'
        f'"plugin":{_quoted(event.plugin)},"kind":{_quoted(event.kind)},"score":{score_json},'
        f'"data":{data_json}}}'
    ).encode()


def telemetry_payloads(
    fields: Sequence[str],
    ts_ns: npt.NDArray[np.int64],
    rows: npt.NDArray[np.float64],
    *,
    dropped: int = 0,
    max_rows: int = MAX_TELEMETRY_ROWS,
) -> list[bytes]:
    """Telemetry batches: field names, one timestamp and one row per sample, the latest values.

    `dropped` is the plugin's running count of rows its ring had to drop.
    """
    out: list[bytes] = []
    names = list(fields)
    for start in range(0, len(ts_ns), max_rows):
        part = rows[start : start + max_rows]
        clean_rows = [[v if math.isfinite(v) else None for v in row] for row in part.tolist()]
        out.append(
            to_json(
                {
                    "fields": names,
                    "ts": [ts_seconds(int(t)) for t in ts_ns[start : start + max_rows]],
                    "rows": clean_rows,
                    "last": dict(zip(names, clean_rows[-1], strict=False)),
                    "dropped": dropped,
                }
            )
        )
    return out
