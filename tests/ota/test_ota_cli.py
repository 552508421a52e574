"""`edge-agent ota keygen` and `pack`, as an operator runs them (publish: test_ota_mqtt.py)."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.ota import Bundle, TrustedKeys, load_public_key, verify_envelope
from tests.support.ota import V1_1


def test_keygen_pack_and_the_bundle_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ota", "keygen", "--out", str(tmp_path / "k")]) == 0
    assert stat.S_IMODE((tmp_path / "k" / "private.pem").stat().st_mode) == 0o600
    assert "key id:" in capsys.readouterr().out
    assert main(["ota", "keygen", "--out", str(tmp_path / "k")]) == 2  # never overwrites
    refused = capsys.readouterr().err
    assert "private.pem already exists" in refused and "pass --force" in refused
    assert "(got" not in refused
    bundle = tmp_path / "b.tar"
    argv = ["ota", "pack", str(V1_1), "--key", str(tmp_path / "k" / "private.pem")]
    assert main([*argv, "--out", str(bundle), "--serial", "42"]) == 0
    assert "waveform_classifier 1.1.0, serial 42" in capsys.readouterr().out
    trusted = TrustedKeys([load_public_key(tmp_path / "k" / "public.pem")])
    with Bundle(bundle) as b:
        signed = verify_envelope(b.envelope, trusted)
    assert (signed.body.serial, signed.body.allow_downgrade) == (42, False)


def test_pack_refuses_a_folder_whose_files_do_not_match(
    tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(V1_1, folder)
    with open(folder / "model.tflite", "r+b") as f:
        f.seek(64)
        f.write(b"\x00\x01")
    argv = ["ota", "pack", str(folder), "--key", str(keys / "private.pem")]
    assert main([*argv, "--out", str(tmp_path / "b.tar")]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err
    assert not (tmp_path / "b.tar").exists()


def test_pack_with_a_public_key_is_refused(
    tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ota", "pack", str(V1_1), "--key", str(keys / "public.pem")]
    assert main([*argv, "--out", str(tmp_path / "b.tar")]) == 2
    assert "private key" in capsys.readouterr().err


def test_publish_to_an_unreachable_broker_fails(
    tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(
        ["ota", "pack", str(V1_1), "--key", str(keys / "private.pem"), "--out", str(tmp_path / "b")]
    )
    code = main(["ota", "publish", str(tmp_path / "b"), "--broker", "127.0.0.1:1", "--all"])
    assert code == 1
    assert "broker 127.0.0.1:1" in capsys.readouterr().err


def test_the_cli_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from agent.cli.main import build_parser; build_parser(); "
        "import json; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('paho', 'cryptography', 'onnxruntime', 'ai_edge_litert', 'tensorflow'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
