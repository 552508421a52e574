"""`models import` on the repository's own int8 files, and every refusal with its exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.cli.main import main
from agent.config.sections import CoralRuntime, CpuRuntime, NpuRuntime
from agent.modelimport.errors import ImportProblems
from agent.modelimport.importer import ImportRequest, import_model
from agent.runtime.manifest import load_manifest
from agent.runtime.verify import verify_folder
from tests.support.modelimport import FLOAT_TFLITE_WITH_NAN, WAVEFORM, External

RATE = ["--rate-hz", "1000"]


def _run(file: Path, out: Path, *extra: str, name: str = "m") -> int:
    return main(["models", "import", str(file), "--name", name, "--out", str(out), *RATE, *extra])


@pytest.mark.parametrize(
    ("file", "io", "written"),
    [
        ("model.onnx", "float32", "model.onnx"),
        ("model.tflite", "float32", "model.tflite"),
        ("model_int8io.tflite", "int8", "model_int8io.tflite"),
    ],
)
def test_int8_files_are_kept_as_they_are(
    file: str, io: str, written: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(WAVEFORM / file, tmp_path) == 0
    assert "int8, kept as is" in capsys.readouterr().out
    manifest = load_manifest(tmp_path / "m")
    assert [(f.path, f.io) for f in manifest.files] == [(written, io)]
    assert [r.result for r in verify_folder(tmp_path / "m")] == ["ok"]
    assert manifest.quality["calibration"] == "seeded"  # no npz: inputs in the int8 range
    if file.endswith(".tflite"):
        assert (tmp_path / "m" / written).read_bytes() == (WAVEFORM / file).read_bytes()


def test_a_float_tflite_is_refused_with_how_to_quantize_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(FLOAT_TFLITE_WITH_NAN, tmp_path) == 2
    err = capsys.readouterr().err
    assert "float TFLite model" in err and "representative_dataset" in err and "--float" in err
    assert not (tmp_path / "m").exists()


def test_a_model_that_outputs_nan_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(FLOAT_TFLITE_WITH_NAN, tmp_path, "--float") == 2
    assert "is NaN/inf on 64 of 64 seeded inputs" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # the staging folder went too


def _onnx_model(tmp_path: Path, dims: list[str | int | None], elem: int = 1) -> Path:
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", elem, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [x], [y])
    path = tmp_path / "tiny.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    np.savez(tmp_path / "c.npz", **arrays)  # type: ignore[arg-type]
    return tmp_path / "c.npz"


GOOD = np.zeros((10, 64), np.float32)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("corrupt_onnx", "not a valid ONNX model"),
        ("corrupt_tflite", "LiteRT cannot load it"),
        ("not_tflite", "no TFL3 magic"),
        ("missing_file", "no such file"),
        ("dynamic_axis", "input 'x' axis 1 is dynamic ('width')"),
        ("int_input", "input 'x' is tensor(int64)"),
        ("no_calibration", "pass --calibration DATA.npz"),
        ("npz_keys", "missing key(s) ['X']"),
        ("npz_extra_key", "unknown key(s) ['Z']"),
        ("npz_shape", "shape [10, 63], expected [N, 64]"),
        ("npz_nan", "1 NaN/inf value(s) in 1 sample(s), first at sample 3"),
        ("npz_targets", "[9] targets for 10 samples"),
        ("npz_strings", "dtype <U1 is not numeric"),
        ("npz_corrupt", "not a readable .npz"),
        ("bad_name", "--name 'Bad-Name'"),
        ("bad_version", "--version '1.0'"),
    ],
)
def test_each_problem_is_named_with_exit_2(
    case: str,
    expected: str,
    sklearn_digits: External,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, extra, name = sklearn_digits.model, ["--calibration"], "m"
    calib: Path | str = tmp_path / "c.npz"
    if case == "corrupt_onnx":
        model = tmp_path / "x.onnx"
        model.write_bytes(b"\x08\x07garbage" * 20)
    elif case == "corrupt_tflite":
        model = tmp_path / "x.tflite"
        model.write_bytes((WAVEFORM / "model.tflite").read_bytes()[:400])
    elif case == "not_tflite":
        model = tmp_path / "x.tflite"
        model.write_bytes(b"not a flatbuffer at all")
    elif case == "missing_file":
        model = tmp_path / "absent.onnx"
    elif case == "dynamic_axis":
        model = _onnx_model(tmp_path, ["batch", "width"])
    elif case == "int_input":
        model = _onnx_model(tmp_path, [1, 4], elem=7)
    elif case == "no_calibration":
        extra = []
    elif case == "npz_keys":
        _npz(tmp_path, Q=GOOD)
    elif case == "npz_extra_key":
        _npz(tmp_path, X=GOOD, Z=GOOD)
    elif case == "npz_shape":
        _npz(tmp_path, X=np.zeros((10, 63), np.float32))
    elif case == "npz_nan":
        bad = GOOD.copy()
        bad[3, 5] = np.nan
        _npz(tmp_path, X=bad)
    elif case == "npz_targets":
        _npz(tmp_path, X=GOOD, y=np.zeros(9, np.int64))
    elif case == "npz_strings":
        _npz(tmp_path, X=np.full((10, 64), "a"))
    elif case == "npz_corrupt":
        (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 truncated")
    elif case == "bad_name":
        _npz(tmp_path, X=GOOD)
        name = "Bad-Name"
    elif case == "bad_version":
        _npz(tmp_path, X=GOOD)
        extra = ["--version", "1.0", "--calibration"]
    argv = [*extra, str(calib)] if extra else []
    assert _run(model, tmp_path / "out", *argv, name=name) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (tmp_path / "out" / name).exists()


def test_every_problem_is_listed_at_once(
    sklearn_digits: External, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calib = _npz(tmp_path, X=np.zeros((10, 3), np.float32), y=np.zeros(4, np.int64), W=GOOD)
    (tmp_path / "out" / "m").mkdir(parents=True)
    argv = ["--calibration", str(calib), "--version", "x"]
    assert _run(sklearn_digits.model, tmp_path / "out", *argv) == 2
    err = capsys.readouterr().err
    for expected in ("--version 'x'", "out/m exists", "unknown key(s) ['W']", "shape [10, 3]"):
        assert expected in err


def test_the_configured_accelerator_names_what_it_cannot_run(
    sklearn_digits: External, tmp_path: Path
) -> None:
    coral = CoralRuntime()
    req = ImportRequest(WAVEFORM / "model.tflite", "w", tmp_path, runtime=coral, rate_hz=1000)
    notes = import_model(req).warnings
    assert any(n.startswith("coral: the file also needs edgetpu_compiler") for n in notes)
    req = ImportRequest(WAVEFORM / "model.onnx", "o", tmp_path, runtime=coral, rate_hz=1000)
    assert "coral: the Edge TPU runs .tflite files only" in " ".join(import_model(req).warnings)
    strict = NpuRuntime(strict=True, onnx_providers=["FooExecutionProvider"])
    req = ImportRequest(WAVEFORM / "model.onnx", "s", tmp_path, runtime=strict, rate_hz=1000)
    with pytest.raises(ImportProblems) as caught:
        import_model(req)
    assert "FooExecutionProvider not in this ONNX Runtime build" in caught.value.problems[0]
    assert "runtime.strict is set" in caught.value.problems[0]


def test_an_operator_the_edge_tpu_lacks_is_named() -> None:
    from agent.modelimport.accel import accelerator_findings
    from agent.modelimport.inspection import inspect_model

    info = inspect_model(FLOAT_TFLITE_WITH_NAN)  # its broken head divides: DIV
    assert "DIV" in info.ops and "DELEGATE" not in info.ops  # the file's own operators
    found = accelerator_findings(info, CoralRuntime())
    assert "coral: operator(s) the Edge TPU cannot run: DIV" in found
    assert any("int8 models only" in f for f in found)
    assert accelerator_findings(info, CpuRuntime()) == []
