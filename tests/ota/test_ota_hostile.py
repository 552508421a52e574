"""Attacks on OTA from outside (issue 13), each against a whole agent and a real Mosquitto: forged
chunks, models that crash or hang the runtime, junk topic names, a re-run after a failed
transfer, manifest edge cases."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.ota import Bundle, load_private_key
from agent.ota.envelope import canonical_bytes
from agent.ota.keys import key_id
from agent.ota.mqtt import frame_chunk
from agent.ota.publisher import BrokerOptions, Publisher, Target
from agent.ota.sandbox import SandboxLimits
from tests.support.ota import CRASH, HOG, LOOP, NAME, V1_1, Agent, agent_config, pack

WAIT = 90.0


@pytest.fixture
def agents(tmp_path: Path, broker: Any) -> Iterator[Callable[..., Agent]]:
    """`agents(device_id, public_keys, **kw)`: a started, connected agent on the test broker."""
    made: list[Agent] = []

    def make(device_id: str, public_keys: list[Path], **kw: Any) -> Agent:
        cfg = agent_config(tmp_path, broker.port, device_id, f"g{device_id}", public_keys)
        agent = Agent(cfg, **kw)
        made.append(agent)
        end = time.monotonic() + 30
        while not agent.sync.link.connected:
            assert time.monotonic() < end, "agent did not connect"
            time.sleep(0.05)
        time.sleep(0.3)  # the OTA subscriptions follow the connection
        return agent

    yield make
    for agent in made:
        agent.stop()


def _until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, what
        time.sleep(0.05)


def _publish(broker: Any, device: str, bundle: Path, **kw: Any) -> Any:
    with Bundle(bundle) as b:
        options = BrokerOptions("127.0.0.1", broker.port)
        return Publisher(b, options, Target("device", device), timeout_s=WAIT, **kw).run()[device]


def _in_background(broker: Any, device: str, bundle: Path) -> threading.Thread:
    """Publish `bundle` from a thread (until the device's final state, or WAIT)."""
    t = threading.Thread(target=_publish, args=(broker, device, bundle), daemon=True)
    t.start()
    return t


def test_a_keyless_publisher_cannot_block_a_signed_update(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str, agents: Callable[..., Agent],
    probe_factory: Callable[..., Any],
) -> None:  # fmt: skip
    device = agents(unique_id, [keys / "public.pem"])
    body = pack(V1_1, keys, tmp_path / "b.tar", chunk_size=1024)
    base = f"edge/{unique_id}/ota/{NAME}"
    stranger = probe_factory(broker)
    with Bundle(tmp_path / "b.tar") as b:
        stranger.publish(f"{base}/manifest", b.envelope)  # a genuine manifest, replayed
    _until(lambda: device.ota.existing(NAME) is not None, "the manifest was not taken")
    # The stranger answers first: one byte on chunk 0, then zeros of the right length for all.
    stranger.publish(f"{base}/chunk/0", frame_chunk(body.serial, b"\x00"))
    for n in range(body.chunks):
        stranger.publish(f"{base}/chunk/{n}", frame_chunk(body.serial, bytes(body.chunk_length(n))))
    rx = device.ota.existing(NAME)
    assert rx is not None
    _until(lambda: rx.chunks_bad >= body.chunks, "the forged chunks did not arrive")
    assert rx.status()["state"] == "receiving"  # nothing written, nothing refused
    progress = _publish(broker, unique_id, tmp_path / "b.tar")
    assert (progress.state, progress.code) == ("active", None), progress
    assert device.version == "1.1.0"


def test_a_model_that_crashes_the_runtime_is_refused_and_the_agent_lives_on(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str, agents: Callable[..., Agent]
) -> None:
    if not (CRASH / "model.tflite").is_file():
        pytest.skip("tests/ota/data/crash is missing: run tests/ota/data/make_hostile.py")
    device = agents(unique_id, [keys / "public.pem"])
    pack(CRASH, keys, tmp_path / "crash.tar", serial=10)
    progress = _publish(broker, unique_id, tmp_path / "crash.tar")
    assert (progress.state, progress.code) == ("rejected", "crashed"), progress
    assert "crashed the runtime" in progress.reason
    # The agent noticed nothing: still connected, still running 1.0.0, and takes the next one.
    assert device.sync.link.connected and device.version == "1.0.0"
    pack(V1_1, keys, tmp_path / "b.tar", serial=11)
    assert _publish(broker, unique_id, tmp_path / "b.tar").state == "active"


def test_a_model_that_never_finishes_is_refused_and_rollback_is_not_busy(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str, agents: Callable[..., Agent],
    probe_factory: Callable[..., Any],
) -> None:  # fmt: skip
    device = agents(unique_id, [keys / "public.pem"], limits=SandboxLimits(timeout_s=4.0))
    pack(V1_1, keys, tmp_path / "b.tar", serial=10)
    assert _publish(broker, unique_id, tmp_path / "b.tar").state == "active"
    pack(LOOP, keys, tmp_path / "loop.tar", serial=11)
    progress = _publish(broker, unique_id, tmp_path / "loop.tar")
    assert (progress.state, progress.code) == ("rejected", "timeout"), progress
    probe = probe_factory(broker)
    reply = probe.command(f"edge/{unique_id}", "model.rollback", {"model": NAME})
    assert reply["ok"], reply
    assert device.version == "1.0.0"


def test_a_model_that_needs_more_memory_than_allowed_is_refused_as_memory(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str, agents: Callable[..., Agent]
) -> None:
    device = agents(unique_id, [keys / "public.pem"], limits=SandboxLimits(memory_mb=256))
    pack(HOG, keys, tmp_path / "hog.tar", serial=10)
    progress = _publish(broker, unique_id, tmp_path / "hog.tar")
    assert (progress.state, progress.code) == ("rejected", "memory"), progress
    assert "allocate" in progress.reason
    assert device.sync.link.connected and device.version == "1.0.0"


def test_stopping_the_agent_mid_validation_kills_the_check(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str, agents: Callable[..., Agent]
) -> None:
    device = agents(unique_id, [keys / "public.pem"], limits=SandboxLimits(timeout_s=600.0))
    pack(LOOP, keys, tmp_path / "loop.tar")
    _in_background(broker, unique_id, tmp_path / "loop.tar")
    _until(lambda: device.ota.status(NAME)["state"] == "validating", "never validating")
    started = time.monotonic()
    device.ota.close(timeout=30.0)  # what SIGTERM does: must not wait for the endless loop
    assert time.monotonic() - started < 20.0
    assert device.ota.status(NAME)["code"] == "interrupted"


def test_junk_topic_names_make_no_receivers_and_overwrite_no_status(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str, agents: Callable[..., Agent],
    probe_factory: Callable[..., Any],
) -> None:  # fmt: skip
    device = agents(unique_id, [keys / "public.pem"])
    pack(V1_1, keys, tmp_path / "b.tar")
    assert _publish(broker, unique_id, tmp_path / "b.tar").state == "active"
    junk = probe_factory(broker)
    base = f"edge/{unique_id}/ota"
    for i in range(300):
        junk.publish(f"{base}/junk{i}/chunk/0", b"\x00" * 9)
        junk.publish(f"{base}/junk{i}/manifest", b'{"body": {}, "signature": null}')
    junk.publish(f"{base}/{NAME}/manifest", b'{"body": {"model": "x"}}')  # a real model's topic
    _until(lambda: device.adapter.chunks_orphaned >= 300, "the junk did not arrive")
    _until(lambda: device.adapter.refusals_muted >= 300, "the junk manifests were not refused")
    assert device.ota.receivers() == []
    watcher = probe_factory(broker)
    watcher.subscribe(f"{base}/+/status")
    assert watcher.wait_for(lambda: len(watcher.payloads(f"{base}/+/status")) >= 1)
    time.sleep(0.5)  # retained messages all come at once on subscribe; none may follow
    retained = watcher.payloads(f"{base}/+/status")
    assert [(s["model"], s["state"]) for s in retained] == [(NAME, "active")]


def test_republishing_after_a_failed_transfer_resumes_from_what_is_missing(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str, agents: Callable[..., Agent],
    probe_factory: Callable[..., Any],
) -> None:  # fmt: skip
    device = agents(unique_id, [keys / "public.pem"], give_up_s=1.5)
    body = pack(V1_1, keys, tmp_path / "b.tar", chunk_size=1024)
    half = body.chunks // 2
    base = f"edge/{unique_id}/ota/{NAME}"
    first = probe_factory(broker)  # a first publisher: the manifest and half, then it dies
    with Bundle(tmp_path / "b.tar") as b:
        first.publish(f"{base}/manifest", b.envelope)
        _until(lambda: device.ota.existing(NAME) is not None, "the manifest was not taken")
        for n in range(half):
            first.publish(f"{base}/chunk/{n}", frame_chunk(body.serial, b.chunk(n)))
    watcher = probe_factory(broker)  # the give-up must be on the broker, not only in memory
    watcher.subscribe(f"{base}/status")
    assert watcher.wait_for(
        lambda: any(
            p.get("reason", "").startswith("transfer stalled")
            for p in watcher.payloads(f"{base}/status")
        ),
        WAIT,
    ), "the device did not give up"
    # The retained status now says rejected (retryable) for this very serial: a re-run must not
    # take it as the answer, and must send only the second half.
    progress = _publish(broker, unique_id, tmp_path / "b.tar")
    assert progress.state == "active", progress
    assert progress.sent_chunks == set(range(half, body.chunks))


def _forged_envelope(keys: Path, edit: Callable[[dict[str, Any]], None], bundle: Path) -> bytes:
    """The bundle's envelope with its body edited and signed again, bypassing the schema."""
    with Bundle(bundle) as b:
        body = json.loads(b.envelope)["body"]
    edit(body)
    key = load_private_key(keys / "private.pem")
    signature = {
        "alg": "ed25519",
        "key_id": key_id(key.public_key()),
        "value": base64.b64encode(key.sign(canonical_bytes(body))).decode(),
    }
    return json.dumps({"body": body, "signature": signature}).encode()


@pytest.mark.parametrize(
    ("paths", "words"),
    [
        (["m", "m/model.tflite"], "both a file and a folder"),
        (["envelope.json", "model.tflite"], "reserved"),
    ],
)
def test_manifest_paths_that_clash_are_refused_with_a_reason(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str, agents: Callable[..., Agent],
    probe_factory: Callable[..., Any], paths: list[str], words: str,
) -> None:  # fmt: skip
    device = agents(unique_id, [keys / "public.pem"])
    pack(V1_1, keys, tmp_path / "b.tar")

    def rename(body: dict[str, Any]) -> None:
        files = body["manifest"]["files"]
        for f, p in zip(files, paths, strict=False):
            f["path"] = p

    envelope = _forged_envelope(keys, rename, tmp_path / "b.tar")
    probe = probe_factory(broker)
    probe.subscribe(f"edge/{unique_id}/ota/{NAME}/refused")
    probe.publish(f"edge/{unique_id}/ota/{NAME}/manifest", envelope)
    assert probe.wait_for(lambda: probe.count(f"edge/{unique_id}/ota/{NAME}/refused") >= 1)
    refusal = probe.payloads(f"edge/{unique_id}/ota/{NAME}/refused")[0]
    assert refusal["code"] == "bad_manifest" and words in refusal["reason"], refusal
    assert device.ota.status(NAME)["state"] == "idle"  # never "receiving"
    assert device.ota.receivers() == []


def test_a_busy_refusal_leaves_the_retained_status_of_the_update_in_progress(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str, agents: Callable[..., Agent],
    probe_factory: Callable[..., Any],
) -> None:  # fmt: skip
    device = agents(unique_id, [keys / "public.pem"], limits=SandboxLimits(timeout_s=600.0))
    pack(LOOP, keys, tmp_path / "loop.tar", serial=10)
    _in_background(broker, unique_id, tmp_path / "loop.tar")
    _until(lambda: device.ota.status(NAME)["state"] == "validating", "never validating")
    pack(V1_1, keys, tmp_path / "b.tar", serial=11)
    progress = _publish(broker, unique_id, tmp_path / "b.tar")
    assert (progress.state, progress.code) == ("rejected", "busy"), progress
    watcher = probe_factory(broker)
    watcher.subscribe(f"edge/{unique_id}/ota/{NAME}/status")
    status = watcher.wait_payload(f"edge/{unique_id}/ota/{NAME}/status")
    assert (status["serial"], status["state"]) == (10, "validating"), status
    device.ota.close(timeout=30.0)


def test_pack_stores_a_symlinked_file_by_content(tmp_path: Path, keys: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for f in V1_1.iterdir():
        (folder / f.name).symlink_to(f) if f.suffix != ".json" else (folder / f.name).write_bytes(
            f.read_bytes()
        )
    pack(folder, keys, tmp_path / "b.tar")
    import tarfile

    with tarfile.open(tmp_path / "b.tar") as tar:
        assert all(m.isfile() for m in tar.getmembers())
    with Bundle(tmp_path / "b.tar") as b:
        b.check()
    assert os.readlink(folder / "model.tflite")  # the source stays a link
