"""Operator side: key pairs, signed bundles, and the signature checks a device makes."""

from __future__ import annotations

import json
import stat
import tarfile
from pathlib import Path

import pytest

from agent.errors import ConfigError, UpdateRejected
from agent.ota import Bundle, TrustedKeys, generate_keypair, load_public_key, verify_envelope
from agent.ota.envelope import canonical_bytes
from tests.support.ota import SHIPPED, V1_1, pack


def _trusted(keys: Path) -> TrustedKeys:
    return TrustedKeys([load_public_key(keys / "public.pem")])


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "k")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    assert b"PUBLIC KEY" in public.read_bytes()
    with pytest.raises(ConfigError, match="already there"):
        generate_keypair(tmp_path / "k")


def test_bundle_is_a_tar_of_envelope_and_files(tmp_path: Path, keys: Path) -> None:
    body = pack(V1_1, keys, tmp_path / "b.tar", serial=7, chunk_size=4096)
    with tarfile.open(tmp_path / "b.tar") as tar:
        names = tar.getnames()
    assert names[0] == "envelope.json"
    assert sorted(names[1:]) == sorted(f"files/{f.path}" for f in body.manifest.files)
    assert (body.model, body.version, body.serial) == ("waveform_classifier", "1.1.0", 7)
    # The chunks concatenate to the files in manifest order.
    with Bundle(tmp_path / "b.tar") as b:
        stream = b"".join(b.chunk(n) for n in range(b.body.chunks))
    expected = b"".join((V1_1 / f.path).read_bytes() for f in body.manifest.files)
    assert stream == expected
    assert body.chunks == -(-len(expected) // 4096)


def test_a_signed_envelope_verifies(tmp_path: Path, keys: Path) -> None:
    pack(SHIPPED, keys, tmp_path / "b.tar", serial=1)
    with Bundle(tmp_path / "b.tar") as b:
        signed = verify_envelope(b.envelope, _trusted(keys))
    assert signed.body.manifest.version == "1.0.0"
    assert signed.manifest_json["golden"]


def _envelope(tmp_path: Path, keys: Path) -> dict:  # type: ignore[type-arg]
    pack(V1_1, keys, tmp_path / "b.tar", serial=3)
    with Bundle(tmp_path / "b.tar") as b:
        return json.loads(b.envelope)  # type: ignore[no-any-return]


def test_a_manifest_edited_after_signing_is_refused(tmp_path: Path, keys: Path) -> None:
    env = _envelope(tmp_path, keys)
    env["body"]["manifest"]["golden"][0]["tolerance"] = 10.0
    with pytest.raises(UpdateRejected, match="bad signature") as info:
        verify_envelope(json.dumps(env).encode(), _trusted(keys))
    assert info.value.code == "bad_signature"


def test_a_raised_serial_is_an_edit_too(tmp_path: Path, keys: Path) -> None:
    env = _envelope(tmp_path, keys)
    env["body"]["serial"] += 1
    with pytest.raises(UpdateRejected) as info:
        verify_envelope(json.dumps(env).encode(), _trusted(keys))
    assert info.value.code == "bad_signature"


def test_another_key_is_refused(tmp_path: Path, keys: Path, other_keys: Path) -> None:
    env = _envelope(tmp_path, keys)
    with pytest.raises(UpdateRejected, match="untrusted key") as info:
        verify_envelope(json.dumps(env).encode(), _trusted(other_keys))
    assert info.value.code == "untrusted_key"


def test_a_signature_by_another_key_under_our_key_id_is_refused(
    tmp_path: Path, keys: Path, other_keys: Path
) -> None:
    mine = _envelope(tmp_path, keys)
    pack(V1_1, other_keys, tmp_path / "o.tar", serial=3)
    with Bundle(tmp_path / "o.tar") as b:
        theirs = json.loads(b.envelope)
    theirs["signature"]["key_id"] = mine["signature"]["key_id"]
    with pytest.raises(UpdateRejected) as info:
        verify_envelope(json.dumps(theirs).encode(), _trusted(keys))
    assert info.value.code == "bad_signature"


@pytest.mark.parametrize("signature", [None, {}, {"alg": "ed25519", "key_id": "x", "value": ""}])
def test_a_missing_signature_is_refused(tmp_path: Path, keys: Path, signature: object) -> None:
    env = _envelope(tmp_path, keys)
    if signature is None:
        del env["signature"]
    else:
        env["signature"] = signature
    with pytest.raises(UpdateRejected, match="not signed") as info:
        verify_envelope(json.dumps(env).encode(), _trusted(keys))
    assert info.value.code == "no_signature"


@pytest.mark.parametrize("payload", [b"", b"not json", b"[]", b'{"signature": {}}'])
def test_garbage_is_refused_as_a_bad_manifest(keys: Path, payload: bytes) -> None:
    with pytest.raises(UpdateRejected) as info:
        verify_envelope(payload, _trusted(keys))
    assert info.value.code == "bad_manifest"


def test_canonical_bytes_survive_a_round_trip(tmp_path: Path, keys: Path) -> None:
    body = _envelope(tmp_path, keys)["body"]
    data = canonical_bytes(body)
    assert canonical_bytes(json.loads(data)) == data
