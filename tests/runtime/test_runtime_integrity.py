"""A damaged, swapped or mis-described model file is a ModelError with a reason, never a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import RuntimeConfig
from agent.errors import ModelError
from agent.runtime import load_model
from tests.support.runtime import edit_manifest, file_entry

CPU = RuntimeConfig(accelerator="cpu")
FILES = [("tflite", "model.tflite"), ("onnx", "model.onnx")]


def _only(folder: Path, name: str, fmt: str) -> None:
    entry = file_entry(folder, name, fmt)
    edit_manifest(folder, lambda m: m.update(files=[entry]))


@pytest.mark.parametrize(("fmt", "name"), FILES)
def test_one_flipped_byte_is_a_sha256_mismatch(model_copy: Path, fmt: Any, name: str) -> None:
    path = model_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch") as err:
        load_model(model_copy, CPU, fmt=fmt)
    assert err.value.path == str(path)


@pytest.mark.parametrize(("fmt", "name"), FILES)
def test_truncated_file(model_copy: Path, fmt: Any, name: str) -> None:
    path = model_copy / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="size mismatch"):
        load_model(model_copy, CPU, fmt=fmt)
    with pytest.raises(ModelError, match="cannot load it") as err:
        load_model(model_copy, CPU, fmt=fmt, verify_hash=False)
    assert err.value.path == str(path)


@pytest.mark.parametrize(("fmt", "name"), FILES)
@pytest.mark.parametrize("garbage", [b"", b"TFL3" * 3, bytes(range(256)) * 40])
def test_garbage_file_with_a_matching_manifest(
    model_copy: Path, fmt: Any, name: str, garbage: bytes
) -> None:
    # The manifest vouches for the garbage, so only the runtime itself can refuse it.
    (model_copy / name).write_bytes(garbage or b"\0")
    _only(model_copy, name, fmt)
    with pytest.raises(ModelError, match="cannot load it"):
        load_model(model_copy, CPU, fmt=fmt)


def test_missing_file(model_copy: Path) -> None:
    (model_copy / "model.tflite").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(model_copy, CPU, fmt="tflite", io="float32")


def test_file_shapes_must_match_the_manifest(model_copy: Path) -> None:
    def grow(m: dict[str, Any]) -> None:
        m["inputs"][0]["shape"][-1] += 1

    edit_manifest(model_copy, grow)
    for fmt in ("tflite", "onnx"):
        with pytest.raises(ModelError, match="manifest says"):
            load_model(model_copy, CPU, fmt=fmt)


def test_io_type_must_match_the_manifest(model_copy: Path) -> None:
    def swap(m: dict[str, Any]) -> None:
        for f in m["files"]:
            if f["format"] == "tflite":
                f["io"] = "int8" if f["io"] == "float32" else "float32"

    edit_manifest(model_copy, swap)
    with pytest.raises(ModelError, match="io="):
        load_model(model_copy, CPU, fmt="tflite", io="float32")


def test_paths_may_not_leave_the_folder(model_copy: Path) -> None:
    def escape(m: dict[str, Any]) -> None:
        m["files"][0]["path"] = "../" + model_copy.name + "/" + m["files"][0]["path"]

    edit_manifest(model_copy, escape)
    with pytest.raises(ModelError, match="leaves the model folder"):
        load_model(model_copy, CPU, fmt="tflite", io="float32")


def test_missing_or_broken_manifest(tmp_path: Path, model_copy: Path) -> None:
    with pytest.raises(ModelError, match=r"no manifest\.json"):
        load_model(tmp_path, CPU)
    (model_copy / "manifest.json").write_text("{")
    with pytest.raises(ModelError, match="unreadable manifest"):
        load_model(model_copy, CPU)


def test_no_file_of_the_wanted_format(model_copy: Path) -> None:
    _only(model_copy, "model.onnx", "onnx")
    with pytest.raises(ModelError, match="no CPU tflite file"):
        load_model(model_copy, CPU, fmt="tflite")
    with load_model(model_copy, CPU) as m:  # fmt None falls back to what the manifest has
        assert m.backend == "onnx"
