"""ONNX Runtime execution providers: which of the wanted ones this ORT build has."""

from __future__ import annotations

import functools
import logging

from agent.runtime.accelerators.base import Placement
from agent.runtime.manifest import ModelFile
from agent.runtime.onnx import CPU_PROVIDER

_log = logging.getLogger(__name__)


@functools.cache
def _available() -> frozenset[str]:
    # Once per process: the providers of an ORT build do not change, and a missing ORT is
    # logged once rather than at every model load.
    try:
        import onnxruntime as ort
    except ImportError as exc:  # optional here: every provider is then missing, never fatal
        _log.warning("ONNX Runtime not importable, so no execution providers: %s", exc)
        return frozenset()
    return frozenset(ort.get_available_providers())


def onnx_providers(wanted: list[str]) -> tuple[list[str], list[str]]:
    """Split `wanted` ORT execution providers into (available in this build, missing)."""
    available = _available()
    return [p for p in wanted if p in available], [p for p in wanted if p not in available]


def provider_placement(model: str, wanted: list[str], entry: ModelFile) -> Placement | list[str]:
    """`entry` on the first available of `wanted` (CPU after them), or why none is there."""
    if not wanted:
        return ["no runtime.onnx_providers configured"]
    present, missing = onnx_providers(wanted)
    if not present:
        return [f"ONNX Runtime execution provider not available: {', '.join(missing)}"]
    if missing:
        _log.info("%s: providers not in this ORT build: %s", model, ", ".join(missing))
    return Placement("npu", entry, f"npu:{present[0]}", providers=(*present, CPU_PROVIDER))
