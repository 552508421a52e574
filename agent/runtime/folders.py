"""Model folders, the one place that knows their layout and checks their files.

A model folder holds `manifest.json` and the files it lists (size and sha256 each). The shipped
version of model `<name>` is `models_dir/<name>`; versions installed over the air live under
`state_dir/models/<name>/` (written by agent/ota/versions.py):

    active -> versions/<version>+<serial>   the committed version; absent: the shipped one is
    versions/<version>+<serial>/            complete, hash-checked model folders

`ModelStore.resolve` is the one answer to "which folder does `<name>` run from".
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from agent.errors import ModelError
from agent.runtime.manifest import MANIFEST_FILE, Manifest, ModelFile, load_manifest

ACTIVE = "active"
"""The symlink naming the committed OTA version of a model."""
VERSIONS = "versions"
"""The folder of a model's kept OTA versions."""
_NAME = re.compile(r"^[a-z0-9_]+$")
# Read size for hashing, below glibc's 128 KiB mmap threshold on purpose: a 1 MiB buffer is
# mmapped, and freeing it raises that threshold to 1 MiB and the heap's trim threshold to 2 MiB
# for the rest of the process, so up to 2 MB that start-up freed stayed resident (generic-x86
# agent after start: 75.5-77.3 MB with 1 MiB reads, 74.9-75.0 MB with 64 KiB; hashing as fast).
_CHUNK = 1 << 16


def ota_dir(state_dir: Path, name: str) -> Path:
    """Where the OTA versions of model `name` are kept."""
    return Path(state_dir) / "models" / name


def model_file_path(folder: Path, entry: ModelFile) -> Path:
    """`folder/entry.path`, refusing paths that leave the folder (manifests arrive over the air)."""
    rel = Path(entry.path)
    if rel.is_absolute() or ".." in rel.parts:
        raise ModelError(f"file path {entry.path!r} leaves the model folder", path=str(folder))
    return folder / rel


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(folder: Path, entry: ModelFile) -> Path:
    """Raise ModelError unless `folder/entry.path` exists with the manifest's size and sha256."""
    path = model_file_path(folder, entry)
    try:
        size = path.stat().st_size
        if size != entry.size:
            raise ModelError(
                f"size mismatch: manifest says {entry.size} bytes, file has {size}", path=str(path)
            )
        digest = sha256_file(path)
    except FileNotFoundError:
        raise ModelError("file listed in manifest.json is missing", path=str(path)) from None
    except OSError as exc:
        raise ModelError(f"unreadable: {exc.strerror}", path=str(path)) from None
    if digest != entry.sha256:
        raise ModelError(
            f"sha256 mismatch: manifest says {entry.sha256[:16]}..., file is {digest[:16]}...",
            path=str(path),
        )
    return path


def check_folder(folder: Path) -> Manifest:
    """The folder's manifest; ModelError unless it is valid and every file matches it."""
    manifest = load_manifest(folder)
    for entry in manifest.files:
        check_file(folder, entry)
    return manifest


def manifest_or_none(folder: Path) -> Manifest | None:
    """The manifest in `folder`, or None when it has none or it is invalid."""
    if not (folder / MANIFEST_FILE).is_file():
        return None
    try:
        return load_manifest(folder)
    except ModelError:
        return None


class ModelStore:
    """Resolves a model name to the folder of its active version: the OTA-committed one when
    `state_dir` has it, else the shipped one in `models_dir`."""

    def __init__(self, models_dir: Path, state_dir: Path | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.state_dir = Path(state_dir) if state_dir is not None else None

    def resolve(self, name: str) -> Path:
        """The folder of the active version of `name`; ModelError when there is none."""
        if not _NAME.match(name):
            raise ModelError(f"invalid model name {name!r} (lowercase letters, digits, _)")
        active = self.ota_active(name)
        if active is not None:
            return active
        shipped = self.shipped(name)
        if shipped is None:
            raise ModelError(f"no model named {name!r}", path=str(self.models_dir))
        return shipped

    def shipped(self, name: str) -> Path | None:
        """The shipped folder of `name`, None when the package has no such model."""
        folder = self.models_dir / name
        return folder if (folder / MANIFEST_FILE).is_file() else None

    def ota_active(self, name: str) -> Path | None:
        """The OTA-committed folder of `name`, None when the shipped one is active."""
        if self.state_dir is None:
            return None
        link = ota_dir(self.state_dir, name) / ACTIVE
        if link.is_dir():
            return link.resolve()
        if link.is_symlink():
            raise ModelError("active symlink points nowhere", path=str(link))
        if link.exists():  # OTA only ever writes a symlink there
            raise ModelError("not a symlink to a version folder", path=str(link))
        return None

    def names(self) -> list[str]:
        """Every model name, shipped or installed over the air, sorted."""
        found = set()
        if self.models_dir.is_dir():
            found |= {p.parent.name for p in self.models_dir.glob(f"*/{MANIFEST_FILE}")}
        if self.state_dir is not None and (self.state_dir / "models").is_dir():
            found |= {p.parent.name for p in (self.state_dir / "models").glob(f"*/{ACTIVE}")}
        return sorted(n for n in found if _NAME.match(n))

    def manifest(self, name: str) -> Manifest:
        """The manifest of the active version of `name`."""
        return load_manifest(self.resolve(name))
