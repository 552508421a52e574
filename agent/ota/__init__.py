"""Over-the-air model updates: signed bundles, chunked transfer, validation, hot swap, rollback.

Operator side: `generate_keypair`, `pack_bundle`, `Bundle` (and `edge-agent ota publish`).
Device side: `recover` at start, then `OtaService` (one `OtaReceiver` per model) fed by any
transport, e.g. `OtaMqttAdapter` over the sync service.

Importing the package imports none of its modules: each name is handed on from its module on
first use, so `from agent.ota import recover` does not load the receiver, MQTT or cryptography.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.ota.bundle import Bundle, pack_bundle
    from agent.ota.envelope import SignedUpdate, UpdateBody, verify_envelope
    from agent.ota.keys import TrustedKeys, generate_keypair, load_private_key, load_public_key
    from agent.ota.mqtt import OtaMqttAdapter
    from agent.ota.receiver import OtaReceiver
    from agent.ota.service import OtaService, RollbackArgs
    from agent.ota.versions import recover

_HOME = {
    "Bundle": "bundle",
    "pack_bundle": "bundle",
    "SignedUpdate": "envelope",
    "UpdateBody": "envelope",
    "verify_envelope": "envelope",
    "TrustedKeys": "keys",
    "generate_keypair": "keys",
    "load_private_key": "keys",
    "load_public_key": "keys",
    "OtaMqttAdapter": "mqtt",
    "OtaReceiver": "receiver",
    "OtaService": "service",
    "RollbackArgs": "service",
    "recover": "versions",
}

__all__ = [
    "Bundle",
    "OtaMqttAdapter",
    "OtaReceiver",
    "OtaService",
    "RollbackArgs",
    "SignedUpdate",
    "TrustedKeys",
    "UpdateBody",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "pack_bundle",
    "recover",
    "verify_envelope",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` on first use."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
