"""Where model folders live: shipped ones in models_dir, OTA-installed ones under state_dir."""

from __future__ import annotations

import re
from pathlib import Path

from agent.errors import ModelError
from agent.runtime.manifest import MANIFEST_FILE, Manifest, load_manifest

ACTIVE = "active"
_NAME = re.compile(r"^[a-z0-9_]+$")


class ModelStore:
    """Resolves a model name to the folder of its active version.

    An OTA update writes `state_dir/models/<name>/active`, either a symlink to the version's
    folder or a pointer file holding that folder's path (relative to the pointer's directory or
    absolute); without it the shipped `models_dir/<name>` is active.
    """

    def __init__(self, models_dir: Path, state_dir: Path | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.state_dir = Path(state_dir) if state_dir is not None else None

    def resolve(self, name: str) -> Path:
        """The folder of the active version of `name`; ModelError when there is none."""
        if not _NAME.match(name):
            raise ModelError(f"invalid model name {name!r} (lowercase letters, digits, _)")
        active = self._active_pointer(name)
        if active is not None:
            return active
        shipped = self.models_dir / name
        if (shipped / MANIFEST_FILE).is_file():
            return shipped
        raise ModelError(f"no model named {name!r}", path=str(self.models_dir))

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

    def _active_pointer(self, name: str) -> Path | None:
        if self.state_dir is None:
            return None
        pointer = self.state_dir / "models" / name / ACTIVE
        if pointer.is_dir():  # a symlink to the version folder
            return pointer.resolve()
        if pointer.is_symlink() and not pointer.exists():
            raise ModelError("active symlink points nowhere", path=str(pointer))
        if not pointer.is_file():
            return None
        try:
            target = Path(pointer.read_text().strip())
        except OSError as exc:
            reason = f"unreadable active pointer: {exc.strerror}"
            raise ModelError(reason, path=str(pointer)) from None
        folder = target if target.is_absolute() else pointer.parent / target
        if not (folder / MANIFEST_FILE).is_file():
            reason = f"active pointer names {folder}, which has no manifest"
            raise ModelError(reason, path=str(pointer))
        return folder.resolve()
