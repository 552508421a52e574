"""Where a model runs: one module per `runtime.accelerator` value behind one seam (base.py).

`cpu` is LiteRT's default XNNPACK or ORT's CPU provider. `coral` needs the Edge TPU delegate
library and the manifest's `edgetpu` variant. `npu` needs the configured TFLite external delegate
(for .tflite) or one of the configured ONNX Runtime providers (for .onnx). `auto` tries coral, then
npu, then cpu, quietly. An explicit request that cannot be met falls back to CPU with one warning
naming what was missing, or raises AcceleratorUnavailable under `strict`.

Each module declares its key and its settings class (agent.config.runtime). A module that fails
to import (a vendor library missing) is logged and left out: its key then falls back like any
unavailable accelerator.
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import Any

from agent.config.runtime import RuntimeConfig
from agent.errors import ModelError
from agent.runtime.accelerators.base import (
    Accelerator,
    Format,
    Placement,
    cpu_file,
    unavailable,
)
from agent.runtime.accelerators.delegate import load_delegate
from agent.runtime.accelerators.providers import onnx_providers
from agent.runtime.manifest import Manifest

__all__ = [
    "Accelerator",
    "Format",
    "Placement",
    "accelerators",
    "cpu_file",
    "discover",
    "load_delegate",
    "onnx_providers",
    "place",
    "preferred_format",
    "unavailable",
]
_log = logging.getLogger(__name__)
MODULES = ("cpu", "coral", "npu", "auto")
"""The accelerator modules of this package, by module name."""


def discover(modules: tuple[str, ...] = MODULES) -> dict[str, Accelerator[Any]]:
    """Import each accelerator module; one that fails to import is logged and skipped."""
    found: dict[str, Accelerator[Any]] = {}
    for name in modules:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ImportError as exc:
            _log.warning("accelerator module %s not loaded: %s", name, exc)
            continue
        accelerator: Accelerator[Any] = module.ACCELERATOR
        found[accelerator.key] = accelerator
    return found


@functools.cache
def accelerators() -> dict[str, Accelerator[Any]]:
    """The accelerators of this installation, by key (imported once)."""
    return discover()


def place(
    manifest: Manifest, runtime: RuntimeConfig, fmt: Format, *, io: str | None = None
) -> Placement:
    """Choose file and accelerator for `manifest` under `runtime`, warning or raising per strict."""
    cpu = Placement("cpu", cpu_file(manifest, fmt, io), "cpu")
    found = _accelerator(runtime, manifest.name)
    if isinstance(found, list):
        unavailable(manifest.name, runtime, runtime.accelerator, found)
        return cpu
    placed = found.place(manifest, runtime, fmt, cpu)
    if isinstance(placed, Placement):
        return placed
    unavailable(manifest.name, runtime, runtime.accelerator, placed)
    return cpu


def preferred_format(manifest: Manifest, runtime: RuntimeConfig) -> Format | None:
    """The format the configured accelerator wants when the caller named none (None: no wish)."""
    found = _accelerator(runtime, manifest.name)
    return None if isinstance(found, list) else found.preferred_format(manifest, runtime)


def _accelerator(runtime: RuntimeConfig, model: str) -> Accelerator[Any] | list[str]:
    found = accelerators().get(runtime.accelerator)
    if found is None:
        return [f"no accelerator module for {runtime.accelerator!r} loaded (see the log)"]
    if not isinstance(runtime, found.settings):
        # A programming error, not a board's: the settings were built by hand with another class.
        raise ModelError(
            f"{model}: runtime settings {type(runtime).__name__} do not fit accelerator "
            f"{runtime.accelerator!r} (needs {found.settings.__name__})"
        )
    return found
