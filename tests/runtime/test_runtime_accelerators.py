"""Accelerator selection on a machine without Coral or NPU: fallback warns once, strict fails.

The libraries and providers asked for are really absent here (real LiteRT, real ORT), so these
tests exercise the same code paths a misconfigured board would.
"""

from __future__ import annotations

import ctypes.util
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.config.runtime import ACCELERATORS, RuntimeConfig
from agent.errors import AcceleratorUnavailable, ModelError
from agent.runtime import accelerators as accel
from agent.runtime import load_model, pick_format, verify_folder
from agent.runtime.accelerators import discover, onnx_providers, providers
from agent.runtime.manifest import load_manifest

MISSING_LIB = "libedge_agent_no_such_delegate.so.1"


def settings(accelerator: str = "cpu", **keys: Any) -> RuntimeConfig:
    """The `[runtime]` settings class of `accelerator`, as the config file would build it."""
    return ACCELERATORS[accelerator](accelerator=accelerator, **keys)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _load(folder: Path, caplog: pytest.LogCaptureFixture, **runtime: Any) -> tuple[str, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.INFO), load_model(folder, settings(**runtime)) as m:
        return m.accelerator, _warnings(caplog)


def test_coral_without_library_falls_back_with_one_warning(
    with_edgetpu_variant: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acc, warned = _load(with_edgetpu_variant, caplog, accelerator="coral")
    assert acc == "cpu"
    assert len(warned) == 1
    assert "libedgetpu.so.1" in warned[0] and "edgetpu variant" not in warned[0]


def test_coral_without_variant_names_the_variant(
    model_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acc, warned = _load(model_copy, caplog, accelerator="coral")
    assert acc == "cpu"
    assert len(warned) == 1 and "_edgetpu.tflite" in warned[0]


def test_coral_strict_names_the_library(with_edgetpu_variant: Path) -> None:
    cfg = settings(accelerator="coral", strict=True, edgetpu_library=MISSING_LIB)
    with pytest.raises(AcceleratorUnavailable, match=MISSING_LIB.replace(".", r"\.")):
        load_model(with_edgetpu_variant, cfg)


def test_npu_delegate_missing(model_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    acc, warned = _load(model_copy, caplog, accelerator="npu", npu_delegate=MISSING_LIB)
    assert acc == "cpu"
    assert len(warned) == 1 and MISSING_LIB in warned[0]
    cfg = settings(accelerator="npu", npu_delegate=MISSING_LIB, strict=True)
    with pytest.raises(AcceleratorUnavailable, match="npu_delegate|" + MISSING_LIB):
        load_model(model_copy, cfg)


def test_npu_not_configured_strict(model_copy: Path) -> None:
    with pytest.raises(AcceleratorUnavailable, match="npu_delegate"):
        load_model(model_copy, settings(accelerator="npu", strict=True), fmt="tflite")


def test_a_library_that_is_no_delegate(model_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    libm = ctypes.util.find_library("m")
    assert libm is not None
    acc, warned = _load(model_copy, caplog, accelerator="npu", npu_delegate=libm)
    assert acc == "cpu"
    assert len(warned) == 1 and "tflite_plugin_create_delegate" in warned[0]


def test_onnx_provider_missing(model_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    acc, warned = _load(model_copy, caplog, accelerator="npu", onnx_providers=providers)
    assert acc == "cpu"
    assert len(warned) == 1 and "TensorrtExecutionProvider" in warned[0]
    cfg = settings(accelerator="npu", onnx_providers=providers, strict=True)
    with pytest.raises(AcceleratorUnavailable, match="TensorrtExecutionProvider"):
        load_model(model_copy, cfg)


def test_onnx_providers_choose_the_onnx_file(model_copy: Path) -> None:
    manifest = load_manifest(model_copy)
    cfg = settings(accelerator="npu", onnx_providers=["CUDAExecutionProvider"])
    assert pick_format(manifest, cfg) == "onnx"
    assert pick_format(manifest, RuntimeConfig()) == "tflite"


def test_auto_falls_back_quietly(
    with_edgetpu_variant: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acc, warned = _load(
        with_edgetpu_variant,
        caplog,
        accelerator="auto",
        npu_delegate=MISSING_LIB,
        onnx_providers=["TensorrtExecutionProvider"],
    )
    assert acc == "cpu"
    assert warned == []
    assert any("auto chose cpu" in r.getMessage() for r in caplog.records)


def test_auto_strict_still_runs_on_cpu(model_copy: Path) -> None:
    # strict forbids falling back from an explicit request; auto asks for nothing in particular.
    with load_model(model_copy, settings(accelerator="auto", strict=True)) as m:
        assert m.accelerator == "cpu"


def test_verify_skips_edgetpu_files_without_the_library(with_edgetpu_variant: Path) -> None:
    rows = {Path(r.file).name: r for r in verify_folder(with_edgetpu_variant)}
    row = rows["model_edgetpu.tflite"]
    assert row.result == "skipped" and "libedgetpu.so.1" in row.reason
    assert all(r.result == "ok" for n, r in rows.items() if n != "model_edgetpu.tflite")


def test_every_accelerator_module_has_its_settings_class() -> None:
    found = discover()
    assert set(found) == set(ACCELERATORS)
    for key, accelerator in found.items():
        assert issubclass(ACCELERATORS[key], accelerator.settings)


def test_a_module_that_fails_to_import_is_logged_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        found = discover(("cpu", "no_such_vendor_npu"))
    assert list(found) == ["cpu"]
    assert any("no_such_vendor_npu" in m for m in _warnings(caplog))


def test_a_key_without_its_module_falls_back_or_fails_under_strict(
    model_copy: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel, "accelerators", lambda: discover(("cpu",)))
    acc, warned = _load(model_copy, caplog, accelerator="npu", npu_delegate=MISSING_LIB)
    assert acc == "cpu" and len(warned) == 1 and "no accelerator module for 'npu'" in warned[0]
    with pytest.raises(AcceleratorUnavailable, match="no accelerator module"):
        load_model(model_copy, settings(accelerator="coral", strict=True))


def test_settings_of_another_class_are_refused(model_copy: Path) -> None:
    hand_built = RuntimeConfig.model_construct(accelerator="npu")  # skips the validator
    with pytest.raises(ModelError, match="needs NpuRuntime"):
        load_model(model_copy, hand_built)


def test_onnx_runtime_that_fails_to_import_is_logged_once_not_fatal(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    providers._available.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            assert onnx_providers(["CUDAExecutionProvider"]) == ([], ["CUDAExecutionProvider"])
            assert onnx_providers(["CPUExecutionProvider"]) == ([], ["CPUExecutionProvider"])
        assert len(_warnings(caplog)) == 1 and "ONNX Runtime not importable" in caplog.text
    finally:
        providers._available.cache_clear()
