"""ModelStore: shipped folders, and the active version an OTA update points to."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.errors import ModelError
from agent.runtime import ModelStore


@pytest.fixture
def dirs(model_copy: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    state = tmp_path / "state"
    state.mkdir()
    return model_copy.parent, state, model_copy.name


def test_shipped_folder(dirs: tuple[Path, Path, str]) -> None:
    models, state, name = dirs
    store = ModelStore(models, state)
    assert store.resolve(name) == models / name
    assert store.names() == [name]
    assert store.manifest(name).name == name
    assert ModelStore(models, None).resolve(name) == models / name


def _installed(state: Path, models: Path, name: str) -> Path:
    version = state / "models" / name / "versions" / "9.9.9"
    shutil.copytree(models / name, version)
    return version


def test_active_symlink_wins(dirs: tuple[Path, Path, str]) -> None:
    models, state, name = dirs
    version = _installed(state, models, name)
    (state / "models" / name / "active").symlink_to(version)
    assert ModelStore(models, state).resolve(name) == version.resolve()


def test_active_pointer_file(dirs: tuple[Path, Path, str]) -> None:
    models, state, name = dirs
    version = _installed(state, models, name)
    (state / "models" / name / "active").write_text("versions/9.9.9\n")
    assert ModelStore(models, state).resolve(name) == version.resolve()


def test_model_only_installed_over_the_air(dirs: tuple[Path, Path, str]) -> None:
    models, state, name = dirs
    version = _installed(state, models, name)
    (state / "models" / name / "active").symlink_to(version)
    shutil.rmtree(models / name)
    store = ModelStore(models, state)
    assert store.names() == [name]
    assert store.resolve(name) == version.resolve()


def test_broken_pointers_are_errors(dirs: tuple[Path, Path, str]) -> None:
    models, state, name = dirs
    pointer = state / "models" / name / "active"
    pointer.parent.mkdir(parents=True)
    pointer.symlink_to(state / "nowhere")
    with pytest.raises(ModelError, match="points nowhere"):
        ModelStore(models, state).resolve(name)
    pointer.unlink()
    pointer.write_text("versions/0.0.0")
    with pytest.raises(ModelError, match="no manifest"):
        ModelStore(models, state).resolve(name)


def test_unknown_and_invalid_names(dirs: tuple[Path, Path, str]) -> None:
    models, state, _ = dirs
    store = ModelStore(models, state)
    with pytest.raises(ModelError, match="no model named"):
        store.resolve("nope")
    with pytest.raises(ModelError, match="invalid model name"):
        store.resolve("../etc")
