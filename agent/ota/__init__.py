"""Over-the-air model updates: signed bundles, chunked transfer, validation, hot swap, rollback.

Operator side: `generate_keypair`, `pack_bundle`, `Bundle` (and `edge-agent ota publish`).
Device side: `recover` at start, then `OtaService` (one `OtaReceiver` per model) fed by any
transport, e.g. `OtaMqttAdapter` over the sync service.
"""

from __future__ import annotations

from agent.ota.bundle import Bundle, pack_bundle
from agent.ota.envelope import SignedUpdate, UpdateBody, verify_envelope
from agent.ota.keys import TrustedKeys, generate_keypair, load_private_key, load_public_key
from agent.ota.mqtt import OtaMqttAdapter
from agent.ota.receiver import OtaReceiver
from agent.ota.service import OtaService, RollbackArgs
from agent.ota.versions import active_model_dir, recover

__all__ = [
    "Bundle",
    "OtaMqttAdapter",
    "OtaReceiver",
    "OtaService",
    "RollbackArgs",
    "SignedUpdate",
    "TrustedKeys",
    "UpdateBody",
    "active_model_dir",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "pack_bundle",
    "recover",
    "verify_envelope",
]
