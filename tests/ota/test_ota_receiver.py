"""Device side without an engine: transfer, verification, validation, policy, rollback, recovery.

Every test runs the real pipeline: files assembled on disk, loaded by the real runtime, golden
vectors run; only the swap into running loops is left out (see test_ota_engine.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from agent.errors import OtaError, UpdateRejected
from agent.ota import Bundle, OtaService, load_private_key, recover
from agent.ota.envelope import sign_body
from agent.ota.versions import ModelVersions
from agent.runtime.folders import ModelStore
from agent.runtime.manifest import load_manifest
from tests.support.ota import NAME, NAN, SHIPPED, V1_1, W32, feed, pack, shipped_golden, variant

WAIT = 60.0


def _run(service: OtaService, bundle: Path, **kwargs: Any) -> dict[str, Any]:
    rx = service.receiver(NAME)
    status = feed(rx, bundle, **kwargs)
    if status["state"] in ("rejected", "active", "rolled_back") and not rx.busy:
        return status
    return rx.wait(WAIT)


def _active_version(config: AgentConfig) -> str:
    return load_manifest(ModelStore(config.models_dir, config.state_dir).resolve(NAME)).version


def test_a_valid_update_becomes_active(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService, statuses: list[Any]
) -> None:
    pack(V1_1, keys, tmp_path / "b.tar", chunk_size=4096)
    final = _run(service, tmp_path / "b.tar")
    assert final["state"] == "active", final
    assert (final["version"], final["active"]) == ("1.1.0", "1.1.0")
    states = [s["state"] for s in statuses]
    assert states == ["receiving", "verifying", "validating", "active"]
    # The runtime's model store now resolves the name to the new version.
    folder = ModelStore(config.models_dir, config.state_dir).resolve(NAME)
    assert load_manifest(folder).version == "1.1.0"
    assert (folder / "envelope.json").is_file()
    assert not any((config.state_dir / "models" / NAME / "staging").iterdir())


def test_a_flipped_byte_is_dropped_and_the_good_chunk_still_completes_it(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService
) -> None:
    pack(V1_1, keys, tmp_path / "b.tar", chunk_size=4096)

    def flip(n: int, data: bytes) -> bytes:
        return data if n != 1 else data[:100] + bytes([data[100] ^ 0x01]) + data[101:]

    rx = service.receiver(NAME)
    status = feed(rx, tmp_path / "b.tar", mutate=flip)
    assert status["state"] == "receiving"  # the forged chunk was dropped, not written
    assert (rx.chunks_bad, rx.missing()) == (1, [1])
    assert _active_version(config) == "1.0.0"
    with Bundle(tmp_path / "b.tar") as b:
        assert rx.on_chunk(1, b.chunk(1))
    assert rx.wait(WAIT)["state"] == "active"


def test_a_flipped_byte_in_the_bundle_file_is_found_before_sending(
    tmp_path: Path, keys: Path, service: OtaService
) -> None:
    body = pack(V1_1, keys, tmp_path / "b.tar")
    data = bytearray((tmp_path / "b.tar").read_bytes())
    first = (V1_1 / body.manifest.files[0].path).read_bytes()
    at = bytes(data).index(first[:64]) + 200  # inside the first model file's bytes
    data[at] ^= 0x80
    (tmp_path / "b.tar").write_bytes(bytes(data))
    with Bundle(tmp_path / "b.tar") as b, pytest.raises(UpdateRejected) as info:
        b.check()
    assert info.value.code == "bad_bundle" and "chunk 0" in info.value.reason
    rx = service.receiver(NAME)
    assert feed(rx, tmp_path / "b.tar")["state"] == "receiving"
    assert (rx.chunks_bad, rx.missing()) == (1, [0])  # the device never writes it


def test_a_whole_file_mismatch_is_retryable(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService
) -> None:
    # Every chunk matches its signed hash but the file's own sha256 does not (a packing bug, or
    # bytes changed on the device's disk): the update is refused, and may be sent again.
    pack(V1_1, keys, tmp_path / "b.tar")
    with Bundle(tmp_path / "b.tar") as b:
        body = json.loads(b.envelope)["body"]
    body["manifest"]["files"][0]["sha256"] = "0" * 64
    forged = sign_body(body, load_private_key(keys / "private.pem"))
    final = _run(service, tmp_path / "b.tar", manifest=forged)
    assert (final["state"], final["code"]) == ("rejected", "hash_mismatch")
    assert ModelVersions(config.state_dir, NAME).record().retryable


def test_wrong_key_and_missing_signature_are_reported(
    tmp_path: Path, keys: Path, other_keys: Path, service: OtaService, statuses: list[Any]
) -> None:
    pack(V1_1, other_keys, tmp_path / "o.tar")
    assert _run(service, tmp_path / "o.tar")["code"] == "untrusted_key"
    pack(V1_1, keys, tmp_path / "b.tar")
    with Bundle(tmp_path / "b.tar") as b:
        env = json.loads(b.envelope)
    del env["signature"]
    final = _run(service, tmp_path / "b.tar", manifest=json.dumps(env).encode())
    assert (final["state"], final["code"]) == ("rejected", "no_signature")
    env = json.loads(b.envelope)
    env["body"]["manifest"]["description"] = "edited"
    final = _run(service, tmp_path / "b.tar", manifest=json.dumps(env).encode())
    assert (final["state"], final["code"]) == ("rejected", "bad_signature")
    # Refused manifests never move the replay guard: the genuine one still installs.
    assert _run(service, tmp_path / "b.tar")["state"] == "active"


def test_a_model_with_the_wrong_input_shape_is_refused_at_validation(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService, statuses: list[Any]
) -> None:
    pack(W32, keys, tmp_path / "b.tar")
    final = _run(service, tmp_path / "b.tar")
    assert (final["state"], final["code"]) == ("rejected", "incompatible")
    assert "[[1, 32]]" in final["reason"] and "[[1, 16]]" in final["reason"]
    assert "validating" in [s["state"] for s in statuses]
    assert _active_version(config) == "1.0.0"


def test_a_model_failing_its_golden_vectors_is_refused(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService
) -> None:
    # The 1.1.0 files shipped with the 1.0.0 manifest's golden vectors: a packaging mistake.
    def old_golden(m: dict[str, Any]) -> None:
        m["golden"] = shipped_golden()

    folder = variant(V1_1, tmp_path / "m", old_golden)
    pack(folder, keys, tmp_path / "b.tar")
    final = _run(service, tmp_path / "b.tar")
    assert (final["state"], final["code"]) == ("rejected", "golden")
    assert "fails golden vector" in final["reason"]
    assert _active_version(config) == "1.0.0"
    # ota.json is the one record of the outcome: a restarted agent reports the same status,
    # and so does every other way of asking.
    assert OtaService(config, trusted=service.trusted).status(NAME) == final
    assert service.receiver(NAME).status() == final == service.status(NAME)


def test_a_model_emitting_nan_is_refused(tmp_path: Path, keys: Path, service: OtaService) -> None:
    pack(NAN, keys, tmp_path / "b.tar")
    final = _run(service, tmp_path / "b.tar")
    assert (final["state"], final["code"]) == ("rejected", "nan")
    assert "NaN" in final["reason"]


def test_downgrade_needs_the_signed_flag(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService
) -> None:
    pack(V1_1, keys, tmp_path / "new.tar")
    assert _run(service, tmp_path / "new.tar")["state"] == "active"
    pack(SHIPPED, keys, tmp_path / "old.tar")
    final = _run(service, tmp_path / "old.tar")
    assert (final["state"], final["code"]) == ("rejected", "downgrade")
    assert "not newer than the active 1.1.0" in final["reason"]
    pack(SHIPPED, keys, tmp_path / "old-ok.tar", allow_downgrade=True)
    assert _run(service, tmp_path / "old-ok.tar")["state"] == "active"
    assert _active_version(config) == "1.0.0"


def test_an_old_signed_manifest_replayed_is_refused(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService
) -> None:
    pack(V1_1, keys, tmp_path / "a.tar", serial=100)
    pack(SHIPPED, keys, tmp_path / "b.tar", serial=200, allow_downgrade=True)
    assert _run(service, tmp_path / "a.tar")["state"] == "active"
    assert _run(service, tmp_path / "b.tar")["state"] == "active"
    final = _run(service, tmp_path / "a.tar")
    assert (final["state"], final["code"]) == ("rejected", "replay")
    assert _active_version(config) == "1.0.0"
    # The guard is on disk: a restarted agent refuses it as well.
    fresh = OtaService(config)
    assert feed(fresh.receiver(NAME), tmp_path / "a.tar")["code"] == "replay"


def test_the_same_bundle_again_only_repeats_its_outcome(
    tmp_path: Path, keys: Path, service: OtaService, statuses: list[Any]
) -> None:
    pack(V1_1, keys, tmp_path / "b.tar")
    assert _run(service, tmp_path / "b.tar")["state"] == "active"
    n = len(statuses)
    again = service.receiver(NAME).on_manifest(Bundle(tmp_path / "b.tar").envelope)
    assert (again["state"], again["version"]) == ("active", "1.1.0")
    assert [s["state"] for s in statuses[n:]] == ["active"]


def test_a_cut_transfer_resumes_from_the_missing_chunks(
    tmp_path: Path, keys: Path, service: OtaService
) -> None:
    pack(V1_1, keys, tmp_path / "b.tar", chunk_size=1024)
    rx = service.receiver(NAME)
    with Bundle(tmp_path / "b.tar") as b:
        total = b.body.chunks
        feed(rx, tmp_path / "b.tar", skip={0, 5, total - 1})
        assert rx.missing() == [0, 5, total - 1]
        assert rx.missing(limit=2) == [0, 5]
        # The sender comes back and sends the manifest again: nothing restarts.
        assert rx.on_manifest(b.envelope)["state"] == "receiving"
        assert rx.missing() == [0, 5, total - 1]
        for n in rx.missing():
            rx.on_chunk(n, b.chunk(n))
    assert rx.wait(WAIT)["state"] == "active"


def test_a_chunk_of_the_wrong_size_is_dropped_and_the_transfer_goes_on(
    tmp_path: Path, keys: Path, service: OtaService
) -> None:
    pack(V1_1, keys, tmp_path / "b.tar", chunk_size=1024)
    rx = service.receiver(NAME)
    status = feed(rx, tmp_path / "b.tar", mutate=lambda n, d: d + b"x" if n == 2 else d)
    assert status["state"] == "receiving" and rx.missing() == [2] and rx.chunks_bad == 1
    with Bundle(tmp_path / "b.tar") as b:
        rx.on_chunk(2, b.chunk(2))
    assert rx.wait(WAIT)["state"] == "active"


def test_only_keep_versions_are_kept_and_rollback_walks_back(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService
) -> None:
    for i, version in enumerate(["1.1.1", "1.1.2", "1.1.3", "1.1.4"]):

        def bump(m: dict[str, Any], v: str = version) -> None:
            m["version"] = v

        folder = variant(V1_1, tmp_path / f"m{i}", bump)
        pack(folder, keys, tmp_path / f"{i}.tar", serial=10 + i)
        assert _run(service, tmp_path / f"{i}.tar")["state"] == "active"
    mv = ModelVersions(config.state_dir, NAME)
    kept = sorted(p.name for p in mv.versions.iterdir())
    assert kept == ["1.1.2+11", "1.1.3+12", "1.1.4+13"]  # keep_versions = 3
    assert service.rollback(NAME) == {
        "model": NAME,
        "from": "1.1.4",
        "to": "1.1.3",
        "state": "rolled_back",
    }
    assert _active_version(config) == "1.1.3"
    assert service.rollback(NAME)["to"] == "1.1.2"
    assert service.rollback(NAME)["to"] == "1.0.0"  # the shipped model
    assert _active_version(config) == "1.0.0"
    with pytest.raises(OtaError) as info:
        service.rollback(NAME)
    assert info.value.code == "no_previous"
    assert service.status(NAME)["state"] == "rolled_back"


def test_recover_cleans_staging_and_falls_back_from_a_damaged_version(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService
) -> None:
    pack(V1_1, keys, tmp_path / "a.tar", serial=1)
    assert _run(service, tmp_path / "a.tar")["state"] == "active"

    def bump(m: dict[str, Any]) -> None:
        m["version"] = "1.1.1"

    pack(variant(V1_1, tmp_path / "m", bump), keys, tmp_path / "b.tar", serial=2)
    assert _run(service, tmp_path / "b.tar")["state"] == "active"
    mv = ModelVersions(config.state_dir, NAME)
    # A crash mid-transfer leaves a staging slot and a temp file; the active version is damaged.
    half = mv.new_staging(3) / "files"
    half.mkdir()
    (half / "model.tflite").write_bytes(b"half")
    (mv.root / ".tmp-active.123").symlink_to("versions/nowhere")
    active = mv.path(mv.active_name() or "")
    with open(active / "model.tflite", "r+b") as f:
        f.seek(10)
        f.write(b"\xff")
    assert recover(config.state_dir) == {NAME: "1.1.0+1"}
    assert not any(mv.staging.iterdir())
    assert not (mv.root / ".tmp-active.123").is_symlink()
    assert _active_version(config) == "1.1.0"
    assert mv.record().history == ["1.1.0+1"]


def test_recover_with_nothing_valid_goes_back_to_the_shipped_model(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService
) -> None:
    pack(V1_1, keys, tmp_path / "a.tar")
    assert _run(service, tmp_path / "a.tar")["state"] == "active"
    mv = ModelVersions(config.state_dir, NAME)
    os.remove(mv.path(mv.active_name() or "") / "model.onnx")
    assert recover(config.state_dir) == {NAME: "shipped"}
    assert ModelStore(config.models_dir, config.state_dir).resolve(NAME) == SHIPPED


def test_an_interrupted_transfer_is_reported_and_may_be_resent(
    tmp_path: Path, keys: Path, config: AgentConfig, service: OtaService
) -> None:
    pack(V1_1, keys, tmp_path / "b.tar", chunk_size=1024)
    feed(service.receiver(NAME), tmp_path / "b.tar", skip={3})
    # The agent dies here; at the next start:
    recover(config.state_dir)
    fresh = OtaService(config)
    status = fresh.status(NAME)
    assert (status["state"], status["reason"]) == (
        "rejected",
        "interrupted by a restart while receiving",
    )
    rx = fresh.receiver(NAME)
    assert feed(rx, tmp_path / "b.tar")["state"] in (
        "receiving",
        "verifying",
        "validating",
        "active",
    )
    assert rx.wait(WAIT)["state"] == "active"
