"""The on-disk versions of one model under `state_dir/models/<name>/`, and crash recovery.

Layout (agent/runtime/folders.py owns the names and resolves `active` for the loader):

    state_dir/models/<name>/
        active -> versions/<version>+<serial>   the committed version; absent: the shipped model
        versions/<version>+<serial>/            complete, hash-checked folders (manifest + files)
        staging/<serial>/                       a transfer in progress (deleted at start)
        ota.json                                replay guard, last update's state, history

Only three kinds of change touch the disk, each atomic: a folder renamed from staging into
`versions/` once complete and fsynced; the `active` symlink replaced by rename (the commit
point); `ota.json` replaced by rename. `recover` makes any mix of them that a crash leaves behind
consistent again, so the agent always starts on a complete version, old or new, or the shipped one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ModelError
from agent.ota.fsio import (
    TMP_PREFIX,
    atomic_symlink,
    atomic_write_json,
    fsync_dir,
    read_json,
    remove_link,
    remove_tree,
)
from agent.runtime.folders import ACTIVE, VERSIONS, check_folder, ota_dir

log = logging.getLogger(__name__)

STAGING = "staging"
RECORD = "ota.json"
ENVELOPE = "envelope.json"
SHIPPED = "shipped"
"""History entry and status value naming the model shipped in models_dir."""

TERMINAL = ("active", "rejected", "rolled_back")


@dataclass
class UpdateRecord:
    """What `ota.json` keeps for one model."""

    serial: int = 0
    """Highest accepted serial: a manifest with a lower one is a replay."""
    digest: str = ""
    """sha256 of the signed body with that serial (the same serial with other bytes is refused)."""
    version: str | None = None
    state: str = "idle"
    reason: str = ""
    code: str = ""
    """Why a refused or rolled-back update ended (`golden`, `hash_mismatch`, ...), else ""."""
    retryable: bool = False
    """The update with `serial` stopped for a transport reason and may be sent again as is."""
    history: list[str] = field(default_factory=list)
    """Committed version folders, oldest first; the last one is active."""

    @classmethod
    def from_json(cls, data: Any) -> UpdateRecord:
        """Parse `ota.json` content, ignoring unknown keys; defaults when absent or damaged."""
        if not isinstance(data, dict):
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            rec = cls(**known)
        except TypeError:
            return cls()
        rec.history = [h for h in rec.history if isinstance(h, str)]
        return rec


def version_dir_name(version: str, serial: int) -> str:
    """`<version>+<serial>`: a build of `version`, unique per signed bundle."""
    return f"{version}+{serial}"


class ModelVersions:
    """The versions of one model kept under `state_dir/models/<name>`."""

    def __init__(self, state_dir: Path, name: str) -> None:
        self.name = name
        self.root = ota_dir(state_dir, name)
        self.versions = self.root / VERSIONS
        self.staging = self.root / STAGING
        self.active_link = self.root / ACTIVE
        self.record_path = self.root / RECORD

    def ensure(self) -> None:
        """Create the folders (and make their entries durable)."""
        for d in (self.root, self.versions, self.staging):
            if not d.is_dir():
                d.mkdir(parents=True, exist_ok=True)
                fsync_dir(d.parent)

    # --- the record ------------------------------------------------------------------------------

    def record(self) -> UpdateRecord:
        """The current `ota.json` (defaults when there is none)."""
        return UpdateRecord.from_json(read_json(self.record_path))

    def save_record(self, rec: UpdateRecord) -> None:
        """Replace `ota.json` atomically."""
        self.ensure()
        atomic_write_json(self.record_path, asdict(rec))

    # --- versions and the active pointer ---------------------------------------------------------

    def active_name(self) -> str | None:
        """The version folder `active` points at, or None (the shipped model is active)."""
        try:
            target = os.readlink(self.active_link)
        except OSError:
            return None
        return Path(target).name

    def path(self, dir_name: str) -> Path:
        """The folder of a kept version."""
        return self.versions / dir_name

    def set_active(self, dir_name: str | None) -> None:
        """Point `active` at `versions/<dir_name>`, or remove it (shipped model); atomic."""
        if dir_name is None or dir_name == SHIPPED:
            remove_link(self.active_link)
        else:
            atomic_symlink(Path(VERSIONS) / dir_name, self.active_link)

    def new_staging(self, serial: int) -> Path:
        """An empty staging folder for the transfer of `serial` (older ones removed)."""
        self.ensure()
        self.clear_staging()
        folder = self.staging / str(serial)
        folder.mkdir()
        fsync_dir(self.staging)
        return folder

    def clear_staging(self) -> None:
        """Delete every transfer in progress."""
        if self.staging.is_dir():
            for child in self.staging.iterdir():
                shutil.rmtree(child, ignore_errors=True)
            fsync_dir(self.staging)

    def install(self, staged: Path, dir_name: str) -> Path:
        """Move a complete, fsynced folder into `versions/` under `dir_name` (one rename)."""
        self.ensure()
        target = self.versions / dir_name
        if target.exists():
            remove_tree(target)
        os.replace(staged, target)
        fsync_dir(self.versions)
        fsync_dir(staged.parent)
        return target

    def remove(self, dir_name: str) -> None:
        """Delete a kept version folder (never the active one)."""
        if dir_name != self.active_name():
            remove_tree(self.versions / dir_name)

    def prune(self, keep: int) -> list[str]:
        """Trim history to the last `keep` versions and delete every folder not in it."""
        rec = self.record()
        active = self.active_name()
        rec.history = rec.history[-keep:]
        if active is not None and active not in rec.history:
            rec.history.append(active)
        self.save_record(rec)
        removed = []
        if self.versions.is_dir():
            for child in sorted(self.versions.iterdir()):
                if child.name not in rec.history and child.name != active:
                    remove_tree(child)
                    removed.append(child.name)
        return removed

    def remove_leftovers(self) -> None:
        """Delete temp files and folders a crash left half-written."""
        for folder in (self.root, self.versions):
            if not folder.is_dir():
                continue
            for child in folder.iterdir():
                if child.name.startswith(TMP_PREFIX):
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            child.unlink()


def recover_model(state_dir: Path, name: str) -> str:
    """Make one model's folder consistent after a crash; return the version now active."""
    mv = ModelVersions(state_dir, name)
    mv.remove_leftovers()
    mv.clear_staging()
    rec = mv.record()
    active = mv.active_name()
    chosen = _first_valid(mv, [active, *reversed(rec.history)] if active else [])
    if chosen != active:
        log.warning(
            "ota: %s: active version %s is incomplete or damaged; now %s",
            name, active, chosen or SHIPPED,
        )  # fmt: skip
        mv.set_active(chosen)
    if chosen is not None and chosen not in rec.history:
        rec.history.append(chosen)  # the commit happened, the record update did not
    if active is not None and active != chosen and active in rec.history:
        rec.history.remove(active)
    if chosen is not None:
        # After a commit the active version is the newest kept one; anything after it was
        # rolled back from when the crash came, and is deleted below.
        rec.history = rec.history[: rec.history.index(chosen) + 1]
    if rec.state not in TERMINAL and rec.state != "idle":
        committed = rec.version is not None and chosen == version_dir_name(rec.version, rec.serial)
        if committed:
            rec.state, rec.reason, rec.code, rec.retryable = "active", "", "", False
        else:
            # Resending the same bundle may resume a cut transfer; but a model that was being
            # validated may itself have crashed the agent, so that one is not tried again.
            rec.retryable = rec.state == "receiving"
            rec.reason = f"interrupted by a restart while {rec.state}"
            rec.state, rec.code = "rejected", "interrupted"
    mv.save_record(rec)
    # Unreferenced folders: installed but never committed when the crash came.
    if mv.versions.is_dir():
        for child in mv.versions.iterdir():
            if child.name not in rec.history and child.name != chosen:
                remove_tree(child)
    return chosen or SHIPPED


def _first_valid(mv: ModelVersions, candidates: list[str | None]) -> str | None:
    seen: set[str] = set()
    for dir_name in candidates:
        if dir_name is None or dir_name in seen:
            continue
        seen.add(dir_name)
        folder = mv.path(dir_name)
        try:
            check_folder(folder)
        except ModelError as exc:
            log.warning("ota: %s: version %s unusable: %s", mv.name, dir_name, exc)
            continue
        return dir_name
    return None


def recover(state_dir: Path) -> dict[str, str]:
    """Call at start, before models load: clean every model's OTA folder after a crash.

    Deletes half-written staging slots and temp files, makes sure `active` names a complete,
    hash-checked version (else the previous kept one, else the shipped model) and reconciles
    `ota.json` with it. Returns the active version folder (or "shipped") per model.
    """
    root = Path(state_dir) / "models"
    if not root.is_dir():
        return {}
    return {d.name: recover_model(state_dir, d.name) for d in sorted(root.iterdir()) if d.is_dir()}
