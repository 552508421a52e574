"""Model folders: the shipped ones, the active version an OTA update points to, file checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.errors import ModelError
from agent.runtime.folders import ModelStore, check_file, check_folder


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
    pointer.write_text("versions/0.0.0")  # a pointer format OTA never writes
    with pytest.raises(ModelError, match="not a symlink"):
        ModelStore(models, state).resolve(name)


def test_unknown_and_invalid_names(dirs: tuple[Path, Path, str]) -> None:
    models, state, _ = dirs
    store = ModelStore(models, state)
    with pytest.raises(ModelError, match="no model named"):
        store.resolve("nope")
    with pytest.raises(ModelError, match="invalid model name"):
        store.resolve("../etc")


def test_check_folder_names_the_file_that_does_not_match(dirs: tuple[Path, Path, str]) -> None:
    models, _, name = dirs
    folder = models / name
    manifest = check_folder(folder)
    entry = manifest.files[0]
    with open(folder / entry.path, "r+b") as f:
        f.seek(64)
        f.write(b"\x00\x01")
    with pytest.raises(ModelError, match="sha256 mismatch") as info:
        check_folder(folder)
    assert info.value.path == str(folder / entry.path)
    (folder / entry.path).unlink()
    with pytest.raises(ModelError, match="missing"):
        check_file(folder, entry)


def test_a_manifest_path_leaving_the_folder_is_refused(dirs: tuple[Path, Path, str]) -> None:
    models, _, name = dirs
    entry = check_folder(models / name).files[0].model_copy(update={"path": "../x.tflite"})
    with pytest.raises(ModelError, match="leaves the model folder"):
        check_file(models / name, entry)
