"""The signed update manifest: the model manifest plus bundle metadata, and its ed25519 signature.

On the wire (the bundle's `envelope.json`, the MQTT manifest message) it is one JSON object:

    {"body": {...}, "signature": {"alg": "ed25519", "key_id": "<16 hex>", "value": "<base64>"}}

The signature covers the canonical bytes of `body`: JSON with sorted keys, no whitespace, UTF-8,
no NaN. Parsing and re-serializing never changes those bytes, so the device checks exactly what
the operator signed, and any edit to the body after signing breaks the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.errors import UpdateRejected
from agent.ota.keys import TrustedKeys, key_id
from agent.runtime.manifest import Manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FORMAT: Literal["edge-agent-ota/1"] = "edge-agent-ota/1"
MAX_ENVELOPE_BYTES = 1 << 20
"""A manifest message larger than this is refused before parsing."""
MIN_CHUNK, MAX_CHUNK = 1024, 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
RESERVED = frozenset({"manifest.json", "envelope.json"})
"""File names the agent writes into a version folder itself."""
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")


class UpdateBody(BaseModel):
    """What the operator signs: which model, which version, how it travels, and its manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["edge-agent-ota/1"] = FORMAT
    model: str = Field(pattern=r"^[a-z0-9_]+$", description="Model name (folder name)")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    serial: int = Field(ge=1, description="Grows with every bundle; older ones are replays")
    issued_at: float = Field(ge=0, description="Unix time the bundle was signed")
    allow_downgrade: bool = Field(False, description="May replace a higher active version")
    chunk_size: int = Field(ge=MIN_CHUNK, le=MAX_CHUNK, description="Bytes per transfer chunk")
    size: int = Field(ge=1, description="Bytes of all files, concatenated in manifest order")
    chunk_sha256: list[str] = Field(
        description="sha256 (hex) of every chunk: a forged chunk is dropped, not written"
    )
    manifest: Manifest

    @model_validator(mode="after")
    def _consistent(self) -> UpdateBody:
        m = self.manifest
        if m.name != self.model or m.version != self.version:
            raise ValueError(
                f"manifest is {m.name} {m.version}, body says {self.model} {self.version}"
            )
        paths = [f.path for f in m.files]
        bad = [p for p in paths if not _SAFE_PATH.match(p) or ".." in p.split("/")]
        if bad:
            raise ValueError(f"unsafe file paths: {bad}")
        if len(set(paths)) != len(paths):
            raise ValueError("file paths must be unique")
        reserved = sorted(set(paths) & RESERVED)
        if reserved:
            raise ValueError(f"file paths {reserved} are reserved for the agent's own files")
        dirs = {p.split("/", 1)[0] for p in paths if "/" in p}
        clash = sorted(dirs & set(paths))
        if clash:
            raise ValueError(f"{clash} are both a file and a folder")
        if sum(f.size for f in m.files) != self.size:
            raise ValueError("size is not the sum of the file sizes")
        if len(self.chunk_sha256) != self.chunks or not all(
            _SHA256.match(h) for h in self.chunk_sha256
        ):
            raise ValueError(f"chunk_sha256 must hold {self.chunks} lowercase hex sha256 digests")
        return self

    @property
    def chunks(self) -> int:
        """Number of chunks the files travel in."""
        return -(-self.size // self.chunk_size)

    def chunk_length(self, n: int) -> int:
        """Bytes in chunk `n` (the last one may be short)."""
        return min(self.chunk_size, self.size - n * self.chunk_size)

    def chunk_ok(self, n: int, data: bytes) -> bool:
        """True if `data` is exactly chunk `n` as signed (length and sha256)."""
        return len(data) == self.chunk_length(n) and (
            hashlib.sha256(data).hexdigest() == self.chunk_sha256[n]
        )


@dataclass(frozen=True, slots=True)
class SignedUpdate:
    """A verified envelope: the parsed body, its canonical bytes' digest and the raw payload."""

    body: UpdateBody
    body_json: dict[str, Any]
    digest: str
    raw: bytes

    @property
    def manifest_json(self) -> dict[str, Any]:
        """The model manifest exactly as signed (written to the version's manifest.json)."""
        m: dict[str, Any] = self.body_json["manifest"]
        return m


def canonical_bytes(obj: Any) -> bytes:
    """The bytes a signature covers: sorted keys, compact separators, UTF-8, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sign_body(body: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    """The envelope bytes for `body` signed with `key` (body checked against the schema first)."""
    UpdateBody.model_validate(body)
    data = canonical_bytes(body)
    sig = {
        "alg": "ed25519",
        "key_id": key_id(key.public_key()),
        "value": base64.b64encode(key.sign(data)).decode(),
    }
    return json.dumps({"body": body, "signature": sig}, indent=1).encode()


def _reject(reason: str, code: str) -> UpdateRejected:
    return UpdateRejected(reason, code=code)


def _split(payload: bytes) -> tuple[dict[str, Any], Any]:
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise _reject(f"manifest message of {len(payload)} bytes is too large", "too_large")
    try:
        env = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _reject(f"manifest is not JSON: {exc}", "bad_manifest") from None
    if not isinstance(env, dict) or not isinstance(env.get("body"), dict):
        raise _reject("manifest has no 'body' object", "bad_manifest")
    return env["body"], env.get("signature")


def _signature(sig: Any) -> tuple[str, bytes]:
    if not sig:
        raise _reject("manifest is not signed (no signature)", "no_signature")
    if not isinstance(sig, dict) or sig.get("alg") != "ed25519":
        raise _reject("signature must be an object with alg 'ed25519'", "bad_signature")
    kid, value = sig.get("key_id"), sig.get("value")
    if not isinstance(kid, str) or not isinstance(value, str) or not value:
        raise _reject("manifest is not signed (signature has no key_id or value)", "no_signature")
    try:
        return kid, base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _reject("signature value is not base64", "bad_signature") from None


def verify_envelope(payload: bytes, trusted: TrustedKeys) -> SignedUpdate:
    """Check the signature, then the schema; raise UpdateRejected naming the first problem."""
    body_json, sig = _split(payload)
    kid, signature = _signature(sig)
    try:
        data = canonical_bytes(body_json)
    except ValueError as exc:
        raise _reject(f"manifest body cannot be canonicalized: {exc}", "bad_manifest") from None
    trusted.verify(kid, signature, data)
    try:
        body = UpdateBody.model_validate(body_json)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "body"
        raise _reject(f"invalid manifest at {loc}: {first['msg']}", "bad_manifest") from None
    return SignedUpdate(body, body_json, hashlib.sha256(data).hexdigest(), payload)


def read_unverified(payload: bytes) -> UpdateBody:
    """Parse an envelope without checking the signature (operator side: the publisher)."""
    body_json, _ = _split(payload)
    try:
        return UpdateBody.model_validate(body_json)
    except ValidationError as exc:
        raise _reject(f"invalid manifest: {exc.errors()[0]['msg']}", "bad_manifest") from None
