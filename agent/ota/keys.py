"""Ed25519 signing keys: the operator's private key signs bundles, devices trust public keys."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ConfigError, UpdateRejected

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

PRIVATE_FILE = "private.pem"
PUBLIC_FILE = "public.pem"


def key_id(public: Ed25519PublicKey) -> str:
    """A short stable name of a public key: the first 16 hex digits of its raw bytes' sha256."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new key pair as `out_dir/private.pem` (mode 0600) and `public.pem`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / PRIVATE_FILE, out_dir / PUBLIC_FILE
    if not overwrite and (private_path.exists() or public_path.exists()):
        raise ConfigError(
            [(str(out_dir), "a key pair is already there; refusing to replace it", "")]
        )
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, private_pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an unencrypted PEM ed25519 private key, or raise ConfigError saying why not."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError([(str(path), f"cannot read the private key: {exc}", "")]) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError([(str(path), "not an ed25519 private key", type(key).__name__)])
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a PEM ed25519 public key, or raise ConfigError saying why not."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError([("ota.trusted_keys", f"cannot read {path}: {exc}", str(path))]) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError([("ota.trusted_keys", f"{path} is not an ed25519 public key", "")])
    return key


class TrustedKeys:
    """The public keys a device accepts bundles from, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys = {key_id(k): k for k in keys}

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> TrustedKeys:
        """Load every file of `ota.trusted_keys`."""
        return cls(load_public_key(p) for p in paths)

    @property
    def ids(self) -> list[str]:
        """Key ids, sorted."""
        return sorted(self._keys)

    def verify(self, kid: str, signature: bytes, data: bytes) -> None:
        """Raise UpdateRejected unless `signature` over `data` checks with trusted key `kid`."""
        from cryptography.exceptions import InvalidSignature

        key = self._keys.get(kid)
        if key is None:
            raise UpdateRejected(
                f"signed by an untrusted key (key id {kid!r}; "
                f"trusted: {', '.join(self.ids) or 'none'})",
                code="untrusted_key",
            )
        try:
            key.verify(signature, data)
        except InvalidSignature:
            raise UpdateRejected(
                "bad signature: the manifest was altered after signing or signed by another key",
                code="bad_signature",
            ) from None
