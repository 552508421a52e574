"""The update bundle: one uncompressed tar holding `envelope.json` and `files/<path>` per file.

`tar tf BUNDLE` lists it and `tar xf` unpacks it with ordinary tools. The files travel as one
byte stream, concatenated in the manifest's order and cut into `chunk_size` chunks; `Bundle`
reads any chunk straight from the tar without unpacking it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import UpdateRejected
from agent.ota.envelope import FORMAT, UpdateBody, read_unverified, sign_body
from agent.ota.fsio import atomic_writer
from agent.runtime.folders import check_folder
from agent.runtime.manifest import MANIFEST_FILE

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ENVELOPE_MEMBER = "envelope.json"
FILES_PREFIX = "files/"
DEFAULT_CHUNK = 32 * 1024


def _checked_manifest(model_dir: Path) -> dict[str, Any]:
    """The folder's manifest as a dict, after checking every file against it."""
    check_folder(model_dir)
    raw: dict[str, Any] = json.loads((model_dir / MANIFEST_FILE).read_text())
    return raw


def pack_bundle(
    model_dir: Path,
    key: Ed25519PrivateKey,
    out: Path,
    *,
    serial: int | None = None,
    allow_downgrade: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    issued_at: float | None = None,
) -> UpdateBody:
    """Sign `model_dir` (a model folder with its manifest) into the bundle file `out`.

    `serial` defaults to the current time in nanoseconds, so later packs always win; devices
    refuse a serial lower than the highest they have seen for the model (replay protection).
    """
    manifest = _checked_manifest(model_dir)
    manifest["allow_downgrade"] = allow_downgrade
    paths = [model_dir / str(f["path"]) for f in manifest["files"]]
    body: dict[str, Any] = {
        "format": FORMAT,
        "model": manifest["name"],
        "version": manifest["version"],
        "serial": serial if serial is not None else time.time_ns(),
        "issued_at": round(issued_at if issued_at is not None else time.time(), 3),
        "allow_downgrade": allow_downgrade,
        "chunk_size": chunk_size,
        "size": sum(int(f["size"]) for f in manifest["files"]),
        "chunk_sha256": chunk_digests(paths, chunk_size),
        "manifest": manifest,
    }
    envelope = sign_body(body, key)
    with (
        atomic_writer(out) as f,
        tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        info = tarfile.TarInfo(ENVELOPE_MEMBER)
        info.size, info.mtime, info.mode = len(envelope), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(envelope))
        for f, path in zip(manifest["files"], paths, strict=True):
            _add_content(tar, path, FILES_PREFIX + f["path"], int(f["size"]))
    return UpdateBody.model_validate(body)


def _add_content(tar: tarfile.TarFile, path: Path, arcname: str, size: int) -> None:
    """Add `path` as a regular file holding its content: a symlink is followed, never kept (a
    link would carry a local path into the signed bundle and nothing a device could install)."""
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime, info.mode = size, int(time.time()), 0o644
    with open(path, "rb") as src:
        tar.addfile(info, src)


def chunk_digests(paths: list[Path], chunk_size: int) -> list[str]:
    """sha256 (hex) of every `chunk_size` piece of the files concatenated in order."""
    digests: list[str] = []
    h, filled = hashlib.sha256(), 0
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(chunk_size - filled):
                h.update(block)
                filled += len(block)
                if filled == chunk_size:
                    digests.append(h.hexdigest())
                    h, filled = hashlib.sha256(), 0
    if filled:
        digests.append(h.hexdigest())
    return digests


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    """Offset of the file in the concatenated stream."""
    size: int
    data_offset: int
    """Offset of the file's bytes inside the tar."""


class Bundle:
    """An open bundle file: the envelope bytes, its (unverified) body and random chunk access."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise UpdateRejected(f"cannot open bundle {path}: {exc}", code="bad_bundle") from None
        try:
            self.envelope, self.body, self._spans = self._index()
        except BaseException:
            os.close(self._fd)
            raise

    def _index(self) -> tuple[bytes, UpdateBody, list[_Span]]:
        try:
            with tarfile.open(self.path, mode="r:") as tar:
                members = {m.name: m for m in tar.getmembers() if m.isfile()}
                env_member = members.get(ENVELOPE_MEMBER)
                if env_member is None:
                    raise UpdateRejected(f"{self.path}: no {ENVELOPE_MEMBER}", code="bad_bundle")
                extracted = tar.extractfile(env_member)
                assert extracted is not None
                envelope = extracted.read()
        except tarfile.TarError as exc:
            raise UpdateRejected(f"{self.path} is not a bundle: {exc}", code="bad_bundle") from None
        body = read_unverified(envelope)
        spans, start = [], 0
        for f in body.manifest.files:
            m = members.get(FILES_PREFIX + f.path)
            if m is None or m.size != f.size:
                raise UpdateRejected(
                    f"{self.path}: {f.path} missing or of the wrong size", code="bad_bundle"
                )
            spans.append(_Span(start, f.size, m.offset_data))
            start += f.size
        return envelope, body, spans

    def chunk(self, n: int) -> bytes:
        """The bytes of chunk `n` of the file stream."""
        body = self.body
        if not 0 <= n < body.chunks:
            raise IndexError(f"chunk {n} out of range 0..{body.chunks - 1}")
        lo = n * body.chunk_size
        hi = lo + body.chunk_length(n)
        parts = []
        for s in self._spans:
            a, b = max(lo, s.start), min(hi, s.start + s.size)
            if a < b:
                parts.append(os.pread(self._fd, b - a, s.data_offset + a - s.start))
        return b"".join(parts)

    def check(self) -> None:
        """UpdateRejected (bad_bundle) unless every chunk matches its signed sha256: a bundle
        damaged on the operator's disk is found before any device waits for it."""
        for n in range(self.body.chunks):
            if not self.body.chunk_ok(n, self.chunk(n)):
                raise UpdateRejected(
                    f"{self.path}: chunk {n} does not match its signed sha256 (damaged bundle)",
                    code="bad_bundle",
                )

    def close(self) -> None:
        """Close the bundle file."""
        os.close(self._fd)

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
