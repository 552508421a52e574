"""A device's patience during a group broadcast (agent/ota/patience.py): it waits while the
broadcast is still on its way, however slow, and still asks for what it lacks once the
broadcast has ended or really stopped. A light device (OtaDevice over a bare MQTT link, the
agent's real receiver and protocol) against a real Mosquitto; a probe plays the publisher so
that the pace of the chunks is the test's."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from agent.ota import Bundle
from agent.ota.device import LinkTransport, OtaDevice
from agent.ota.mqtt import frame_chunk
from agent.ota.patience import BroadcastPatience, BroadcastWatch
from agent.transport.link import MqttLink
from tests.support.mqtt import MqttProbe
from tests.support.ota import MODELS, NAME, V1_1, pack
from tests.support.waiting import until

WAIT = 60.0
QUICK = BroadcastPatience(floor_s=0.5, cap_s=2.0, jitter=0.0)
"""A short patience, for the tests where the broadcast stops."""


# --- the rule alone --------------------------------------------------------------------------


def test_patience_starts_at_the_floor_and_grows_with_the_longest_gap() -> None:
    rule = BroadcastPatience(floor_s=10.0, cap_s=30.0, factor=3.0, jitter=0.0)
    watch = BroadcastWatch(rule, 100.0)
    assert watch.wait_s == 10.0
    assert not watch.quiet(109.0) and watch.quiet(110.5)
    watch.chunk(102.0)
    watch.chunk(106.0)  # a gap of 4 s: 12 s of patience, counted from the last chunk
    assert watch.wait_s == 12.0
    assert not watch.quiet(117.0) and watch.quiet(118.5)
    watch.chunk(107.0)  # a shorter gap does not shrink it
    assert watch.wait_s == 12.0
    watch.chunk(127.0)  # a gap of 20 s: capped
    assert watch.wait_s == 30.0


def test_manifest_repeats_count_only_while_the_publisher_gathers_devices() -> None:
    rule = BroadcastPatience(floor_s=10.0, cap_s=30.0, factor=3.0, jitter=0.0)
    gathering = BroadcastWatch(rule, 0.0)
    for t in (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0):
        gathering.manifest(t)
    # Only repeats within cap_s of the first manifest: a replayed manifest (or a publisher
    # inviting others long after the broadcast ended) cannot hold a device for ever.
    assert gathering.heard == 30.0
    assert gathering.quiet(45.5)
    started = BroadcastWatch(rule, 0.0)
    started.chunk(1.0)
    started.manifest(5.0)  # chunks came already: a repeat says nothing about them
    assert started.heard == 1.0


def test_the_jitter_stretches_each_device_differently_within_its_share() -> None:
    rule = BroadcastPatience(floor_s=10.0, jitter=0.25)
    rng = random.Random(7)
    waits = {BroadcastWatch(rule, 0.0, rng=rng).wait_s for _ in range(50)}
    assert len(waits) > 40
    assert all(10.0 <= w <= 12.5 for w in waits)


# --- a device and a broker -------------------------------------------------------------------


@contextmanager
def one_device(tmp: Path, port: int, dev: str, public_key: Path, **kw: Any) -> Iterator[OtaDevice]:
    """A connected light device of group `g<dev>`."""
    cfg = AgentConfig.model_validate(
        {
            "device": {"id": dev, "group": f"g{dev}"},
            "mqtt": {"host": "127.0.0.1", "port": port, "home_assistant": False},
            "state_dir": str(tmp / dev),
            "models_dir": str(MODELS),
            "ota": {"trusted_keys": [str(public_key)], "health_window_s": 1.0},
        }
    )
    link = MqttLink(cfg)
    link.start()
    device = OtaDevice(cfg, LinkTransport(link), **kw)
    try:
        device.start()
        assert until(lambda: link.connected, 30), "the device did not connect"
        time.sleep(0.5)  # the subscriptions follow the connection
        yield device
    finally:
        device.stop()
        link.stop()


class Broadcaster:
    """The publisher's side, by hand: the manifest and chunks on the group's topics, answers on
    the device's own; records the device's requests."""

    def __init__(self, probe: MqttProbe, bundle: Path, dev: str) -> None:
        self.probe = probe
        self.bundle = Bundle(bundle)
        self.body = self.bundle.body
        self.shared = f"edge/group/g{dev}/ota/{NAME}"
        self.own = f"edge/{dev}/ota/{NAME}"
        probe.subscribe(f"{self.own}/request")
        probe.subscribe(f"{self.own}/status")

    def manifest(self) -> None:
        self.probe.publish(f"{self.shared}/manifest", self.bundle.envelope)

    def chunk(self, n: int, *, to_device: bool = False) -> None:
        topic = f"{self.own if to_device else self.shared}/chunk/{n}"
        self.probe.publish(topic, frame_chunk(self.body.serial, self.bundle.chunk(n)))

    def requests(self) -> list[list[list[int]]]:
        return [p["missing"] for p in self.probe.payloads(f"{self.own}/request")]

    def wait_request(self) -> list[list[int]]:
        assert self.probe.wait_for(lambda: bool(self.requests()), WAIT), "the device never asked"
        return self.requests()[0]

    def answer(self, missing: list[list[int]]) -> None:
        for first, end in missing:
            for n in range(first, end):
                self.chunk(n, to_device=True)

    def wait_state(self, *states: str) -> dict[str, Any]:
        status: dict[str, Any] = self.probe.wait_payload(
            f"{self.own}/status", lambda p: p.get("state") in states, WAIT
        )
        return status


@pytest.fixture
def broadcast(
    tmp_path: Path, broker: Any, keys: Path, unique_id: str, probe_factory: Callable[..., Any]
) -> Iterator[Callable[..., Broadcaster]]:
    """`broadcast(**device_kw)`: a started device, and a broadcaster of a 4-chunk bundle to its
    group."""
    stack: list[Any] = []

    def make(**kw: Any) -> Broadcaster:
        body = pack(V1_1, keys, tmp_path / "b.tar", chunk_size=8192)
        assert body.chunks == 4
        cm = one_device(tmp_path, broker.port, unique_id, keys / "public.pem", **kw)
        cm.__enter__()
        stack.append(cm)
        caster = Broadcaster(probe_factory(broker), tmp_path / "b.tar", unique_id)
        stack.append(caster.bundle)
        return caster

    yield make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def test_a_slow_broadcast_completes_without_re_requests(
    broadcast: Callable[..., Broadcaster],
) -> None:
    # The agent's own patience; chunks 3 s apart, where a device used to pull after 2 s.
    caster = broadcast()
    caster.manifest()
    for n in range(4):
        if n:
            time.sleep(3.0)
        caster.chunk(n)
    assert caster.wait_state("active", "rejected")["state"] == "active"
    assert caster.requests() == []


def test_a_broadcast_that_slows_down_is_waited_for(
    broadcast: Callable[..., Broadcaster],
) -> None:
    # A floor of 1.5 s, and gaps that widen past it, each under 3 x the longest before it (with
    # 0.6 s or more to spare: a loaded machine may deliver a chunk late).
    rule = BroadcastPatience(floor_s=1.5, cap_s=20.0, factor=3.0, jitter=0.0)
    caster = broadcast(broadcast=rule)
    caster.manifest()
    caster.chunk(0)
    for n, gap in ((1, 0.9), (2, 2.0), (3, 4.0)):
        time.sleep(gap)
        caster.chunk(n)
    assert caster.wait_state("active", "rejected")["state"] == "active"
    assert caster.requests() == []


def test_manifest_repeats_hold_a_device_while_the_publisher_gathers(
    broadcast: Callable[..., Broadcaster],
) -> None:
    # The publisher repeats its manifest until every device it expects has answered, and
    # broadcasts only then: with a floor of 1.5 s, 4 s of repeats would have been a stall.
    rule = BroadcastPatience(floor_s=1.5, cap_s=20.0, factor=3.0, jitter=0.0)
    caster = broadcast(broadcast=rule)
    for _ in range(5):
        caster.manifest()
        time.sleep(0.8)
    for n in range(4):
        caster.chunk(n)
    assert caster.wait_state("active", "rejected")["state"] == "active"
    assert caster.requests() == []


def test_a_lost_chunk_is_asked_for_as_soon_as_the_broadcast_ends(
    broadcast: Callable[..., Broadcaster],
) -> None:
    caster = broadcast()  # the agent's patience (10 s and more) is not waited for here
    caster.manifest()
    for n in (0, 2, 3):
        caster.chunk(n)
    missing = caster.wait_request()
    assert missing == [[1, 2]]
    caster.answer(missing)
    assert caster.wait_state("active", "rejected")["state"] == "active"


def test_a_broadcast_that_stops_is_pulled_after_its_patience(
    broadcast: Callable[..., Broadcaster],
) -> None:
    caster = broadcast(broadcast=QUICK)
    caster.manifest()
    caster.chunk(0)
    caster.chunk(1)
    missing = caster.wait_request()  # the publisher died: the device asks for the rest
    assert missing == [[2, 4]]
    caster.answer(missing)
    assert caster.wait_state("active", "rejected")["state"] == "active"


def test_a_device_that_joins_after_the_broadcast_pulls_everything(
    broadcast: Callable[..., Broadcaster],
) -> None:
    caster = broadcast(broadcast=QUICK)
    caster.manifest()  # the publisher's repeat for late devices: the chunks went out before
    missing = caster.wait_request()
    assert missing == [[0, 4]]
    caster.answer(missing)
    assert caster.wait_state("active", "rejected")["state"] == "active"


def test_waiting_on_a_broadcast_does_not_use_up_the_give_up_time(
    broadcast: Callable[..., Broadcaster],
) -> None:
    # Giving up after 1 s without progress, waiting 2 s on the broadcast: the device asks first,
    # and gives up only when its own request brings nothing either.
    rule = BroadcastPatience(floor_s=2.0, cap_s=4.0, jitter=0.0)
    caster = broadcast(broadcast=rule, give_up_s=1.0)
    caster.manifest()
    assert caster.wait_request() == [[0, 4]]
    status = caster.wait_state("rejected")
    assert status["reason"].startswith("transfer stalled"), status
