"""`edge-agent models list | verify | info` and the bare-vs-fast measurement helper."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.cli.main import main
from agent.runtime.measure import bare_vs_fast
from tests.support.runtime import MODELS_DIR, REPO, committed_models, edit_manifest


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["models", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_committed_models(capsys: pytest.CaptureFixture[str]) -> None:
    if not committed_models():
        pytest.skip("no committed model")
    code, out, err = run(capsys, "verify", str(MODELS_DIR))
    assert code == 0, err
    for folder in committed_models():
        assert folder.name in out
    assert "FAIL" not in out
    # Each output's error is shown against its tolerance, with where that is set and why.
    assert "tolerance per output, from each model's manifest.json golden vectors" in out
    robot = [line for line in out.splitlines() if "robot_policy model.onnx output 0:" in line]
    if robot:
        assert re.search(
            r"max error [\d.]+ <= tolerance [\d.]+ \(golden\[\d\]\.tolerance\)", robot[0]
        )
        assert "% of that" in robot[0]


def test_verify_flipped_byte_exits_1_naming_the_file(
    model_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = model_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    code, out, err = run(capsys, "verify", str(model_copy.parent))
    assert code == 1
    assert f"FAIL {path}: sha256 mismatch" in err
    assert out.count(" ok ") >= 1  # the other files still verify


def test_verify_golden_mismatch_exits_1(
    model_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def shift(m: dict[str, Any]) -> None:
        out = m["golden"][0]["outputs"]
        out[0] = (np.asarray(out[0]) + 10.0 * m["golden"][0]["tolerance"] + 1.0).tolist()

    edit_manifest(model_copy, shift)
    code, out, err = run(capsys, "verify", str(model_copy))
    assert code == 1
    assert "golden vector 0 output 0: max error" in err
    assert re.search(r"model.onnx output 0: max error [\d.]+ > tolerance .*golden\[0\]", out)


def test_verify_names_a_per_output_tolerance_as_its_source(
    model_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def per_output(m: dict[str, Any]) -> None:
        for vector in m["golden"]:
            vector["tolerances"] = [vector["tolerance"] * 2]

    edit_manifest(model_copy, per_output)
    code, out, _ = run(capsys, "verify", str(model_copy))
    assert code == 0
    assert re.search(
        r"output 0: max error \S+ <= tolerance \S+ \(golden\[\d\]\.tolerances\[0\]\)", out
    )


def test_verify_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify", str(tmp_path))
    assert code == 1 and "no manifest.json" in err


def test_list(model_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--dir", str(model_copy.parent))
    assert code == 0
    assert model_copy.name in out and "tflite/float32" in out


def _config(tmp_path: Path, models: Path, runtime: str = "") -> Path:
    cfg = tmp_path / "board.toml"
    cfg.write_text(
        f'models_dir = "{models}"\nstate_dir = "{tmp_path / "state"}"\n[runtime]\n{runtime}\n'
    )
    return cfg


def test_info_prints_specs_and_accelerator(
    model_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, model_copy.parent, 'accelerator = "cpu"')
    code, out, _ = run(capsys, "info", model_copy.name, "--config", str(cfg))
    assert code == 0
    assert "accelerator  cpu" in out and "backend      tflite" in out
    assert "input" in out and "output" in out
    code, out, _ = run(capsys, "info", model_copy.name, "--config", str(cfg), "--format", "onnx")
    assert code == 0 and "backend      onnx" in out


def test_info_fails_when_the_model_cannot_load(
    model_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, model_copy.parent, 'accelerator = "coral"\nstrict = true')
    code, _, err = run(capsys, "info", model_copy.name, "--config", str(cfg))
    assert code == 1 and "coral unavailable" in err
    code, _, err = run(capsys, "info", "nope", "--config", str(cfg))
    assert code == 1 and "no model named" in err


def test_info_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[runtime]\naccelerator = "tpu"\n')
    code, _, err = run(capsys, "info", "x", "--config", str(cfg))
    assert code == 2 and "runtime.accelerator" in err


def test_console_script_exit_code(model_copy: Path) -> None:
    (model_copy / "model.tflite").write_bytes(b"garbage")
    exe = shutil.which("edge-agent", path=str(Path(sys.executable).parent)) or "edge-agent"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [exe, "models", "verify", str(model_copy)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert "model.tflite" in done.stderr and "size mismatch" in done.stderr


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_bare_vs_fast_reports_both_paths(model_copy: Path, fmt: Any) -> None:
    row = bare_vs_fast(model_copy, fmt, n=300)
    for key in ("bare_p50_us", "bare_p99_us", "fast_p50_us", "fast_p99_us"):
        assert row[key] > 0
    assert row["bare_p50_us"] <= row["bare_p99_us"]
    assert row["model"] == model_copy.name and row["n"] == 300
