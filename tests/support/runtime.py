"""Helpers for the runtime tests: the committed models and manifest editing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "models"


def committed_models() -> list[Path]:
    """Every model folder committed under models/ (one with a manifest.json)."""
    return sorted(p.parent for p in MODELS_DIR.glob("*/manifest.json"))


def variants() -> list[Any]:
    """(folder, format, io) for every CPU file of every committed model, as pytest params."""
    params = []
    for folder in committed_models():
        manifest = json.loads((folder / "manifest.json").read_text())
        for f in manifest["files"]:
            if f["accelerator"] == "cpu":
                params.append(
                    pytest.param((folder, f["format"], f["io"]), id=f"{folder.name}-{f['path']}")
                )
    return params


def edit_manifest(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply `change` to folder/manifest.json in place."""
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def file_entry(folder: Path, name: str, fmt: str, **extra: Any) -> dict[str, Any]:
    """A manifest `files` entry describing folder/name as it is on disk now."""
    data = (folder / name).read_bytes()
    return {
        "format": fmt,
        "path": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        **extra,
    }
