"""TFLite external delegates (libedgetpu, an NPU vendor's library), loaded with a clear reason."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

from agent.errors import AcceleratorUnavailable, ModelError

_DELEGATE_SYMBOLS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")


def load_delegate(library: str, options: Mapping[str, str] | None = None) -> object:
    """Load a TFLite external delegate, raising AcceleratorUnavailable naming the library."""
    # Checked with plain ctypes first: LiteRT's own loader leaves a half-built Delegate whose
    # __del__ raises when the library is missing or is not a delegate.
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        raise AcceleratorUnavailable(f"delegate library not loadable: {exc}") from None
    for symbol in _DELEGATE_SYMBOLS:
        if not hasattr(lib, symbol):
            raise AcceleratorUnavailable(f"{library} is no TFLite external delegate (no {symbol})")
    from agent.runtime.tflite import interpreter_module

    try:
        module = interpreter_module()
    except ModelError as exc:  # no LiteRT here at all: the delegate has nothing to plug into
        raise AcceleratorUnavailable(exc.reason) from None
    try:
        return module.load_delegate(library, dict(options or {}))
    except (ValueError, OSError, RuntimeError) as exc:
        reason = str(exc).strip().replace("\n", " ")
        raise AcceleratorUnavailable(f"{library} failed to create a delegate: {reason}") from None
