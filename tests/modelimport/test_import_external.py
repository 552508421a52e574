"""`edge-agent models import` on models from other tools, end to end through the CLI."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.runtime.manifest import load_manifest
from agent.runtime.verify import verify_folder
from tests.support.modelimport import External

RATE = ["--rate-hz", "1000"]  # paced latency over 0.2 s instead of 2 s


def _import(ext: External, out: Path, name: str, *extra: str) -> int:
    argv = ["models", "import", str(ext.model), "--name", name, "--out", str(out)]
    return main([*argv, "--calibration", str(ext.calibration), *RATE, *extra])


def _check_folder(folder: Path) -> dict[str, object]:
    """Loader, `models verify` and file layout agree with what import wrote."""
    manifest = load_manifest(folder)
    assert [r.result for r in verify_folder(folder)] == ["ok"] * len(manifest.files)
    assert all(len(g.tolerances or ()) == len(manifest.outputs) for g in manifest.golden)
    assert len(manifest.golden) == 8
    return manifest.quality


def test_a_scikit_learn_pipeline_is_quantized_and_keeps_its_accuracy(
    sklearn_digits: External, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(sklearn_digits, tmp_path, "digits_mlp") == 0
    out = capsys.readouterr().out
    print(out)  # the table, for -s runs and the report
    folder = tmp_path / "digits_mlp"
    quality = _check_folder(folder)
    manifest = load_manifest(folder)
    assert [f.path for f in manifest.files] == ["model.onnx"]
    assert (folder / "eval" / "float.onnx").is_file()  # kept for comparisons, not shipped
    assert [o.name for o in manifest.outputs] == ["probabilities"]  # int64 label dropped
    assert "output 'label' (tensor(int64)) dropped" in out
    assert manifest.inputs[0].shape == [1, 64]
    assert quality["task"] == "classification" and quality["metric"] == "accuracy"
    assert quality["int8"] >= 0.9 and quality["float"] >= 0.9  # type: ignore[operator]
    assert quality["top1_agreement"] >= 0.97  # type: ignore[operator]
    err = quality["outputs"]["probabilities"]  # type: ignore[index]
    assert 0 < err["mean_abs_error"] <= err["max_abs_error"] < err["tolerance"]
    assert quality["float_onnx_bytes"] > 0 and quality["int8_onnx_bytes"] > 0  # type: ignore[operator]
    assert set(quality["latency_us"]) == {"onnx int8", "onnx float (eval)"}  # type: ignore[call-overload]
    for header in ("max |int8-float|", "top-1 agreement", "accuracy", "tight p50", "@1000 Hz"):
        assert header in out


def test_a_torch_export_with_a_dynamic_batch_is_fixed_to_one_and_quantized(
    torch_digits: External, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(torch_digits, tmp_path, "digits_cnn") == 0
    out = capsys.readouterr().out
    print(out)
    assert "dynamic batch axis 'batch' fixed to 1" in out
    quality = _check_folder(tmp_path / "digits_cnn")
    manifest = load_manifest(tmp_path / "digits_cnn")
    assert manifest.inputs[0].shape == [1, 1, 8, 8] and manifest.outputs[0].shape == [1, 10]
    assert quality["int8"] >= 0.85 and quality["top1_agreement"] >= 0.95  # type: ignore[operator]
    assert quality["quantization"]["weights"] in ("per-tensor", "per-channel")  # type: ignore[index]


def test_a_regressor_is_scored_by_mae_against_its_targets(
    sklearn_diabetes: External, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(sklearn_diabetes, tmp_path, "diabetes") == 0
    assert "mae" in capsys.readouterr().out
    quality = _check_folder(tmp_path / "diabetes")
    assert quality["task"] == "regression" and quality["metric"] == "mae"
    assert "top1_agreement" not in quality
    assert abs(quality["int8"] - quality["float"]) < 0.1  # type: ignore[operator]


def test_a_float_onnx_is_kept_float_with_the_float_flag(
    sklearn_digits: External, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(sklearn_digits, tmp_path, "digits_float", "--float") == 0
    assert "float, kept as is" in capsys.readouterr().out
    quality = _check_folder(tmp_path / "digits_float")
    assert not (tmp_path / "digits_float" / "eval").exists()
    assert quality["kind"] == "float" and "float_onnx_bytes" in quality


def test_an_imported_model_goes_through_ota_pack_unchanged(
    sklearn_digits: External, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(sklearn_digits, tmp_path / "models", "digits_ota") == 0
    folder = tmp_path / "models" / "digits_ota"
    assert main(["ota", "keygen", "--out", str(tmp_path / "k")]) == 0
    key = str(tmp_path / "k" / "private.pem")
    assert main(["ota", "pack", str(folder), "--key", key, "--out", str(tmp_path / "b.tar")]) == 0
    capsys.readouterr()
    with tarfile.open(tmp_path / "b.tar") as tar:
        members = sorted(m.name for m in tar.getmembers())
        shipped = tar.extractfile("files/model.onnx")
        assert shipped is not None and shipped.read() == (folder / "model.onnx").read_bytes()
        envelope = json.loads(tar.extractfile("envelope.json").read())  # type: ignore[union-attr]
    assert members == ["envelope.json", "files/model.onnx"]  # eval/float.onnx stays home
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"][0]["sha256"] in json.dumps(envelope)
