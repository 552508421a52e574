"""How long a device waits for a group or fleet broadcast before pulling chunks itself.

A broadcast chunk reaches a device only after the broker has pushed it to the devices before it,
so the gap between chunks grows with the fleet (1,000 devices on one broker: seconds; 100,000:
tens of seconds), and before the first chunk the publisher waits until the devices it expects
have all said `receiving`. A fixed patience that suits one device (2 s) made every early device
of a large fleet pull the whole bundle for itself while the broadcast was still on its way
(docs/fleet.md). So a device's patience follows what it sees of this broadcast:

- it waits from its last *sign of life*: the first manifest; each chunk that brought new bytes;
  the publisher's repeated manifest while it is still gathering devices (before the first chunk,
  and only within `cap_s` of the first manifest, so a replayed manifest cannot hold a device
  forever, nor one that joined after the broadcast ended);
- for max(`floor_s`, `factor` x the longest gap between signs so far), at most `cap_s`;
- stretched by a random 0 to `jitter` share drawn once per device and transfer, so a thousand
  devices whose broadcast stalled do not all ask the operator at the same moment.

Nothing here needs the publisher's cooperation or a field in the signed manifest (which is signed
when the bundle is packed, before anyone knows how many devices it will go to). A chunk lost in a
broadcast is still asked for as soon as the last chunk arrives (agent/ota/mqtt.py); patience only
matters when the broadcast goes quiet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BroadcastPatience:
    """The device's rule for waiting on a broadcast (the defaults: agent/ota/mqtt.py)."""

    floor_s: float = 10.0
    """Waited at least: covers the publisher's manifest repeats (every 5 s) and its wait for the
    fleet to answer, at a size where the broadcast's own gaps do not say more yet."""
    cap_s: float = 30.0
    """Waited at most (before the jitter), and how long manifest repeats count as signs of life:
    so a device waiting on a broadcast pulls at the latest 2 x cap_s x (1 + jitter) after the
    manifest, or that long after the last chunk that brought new bytes."""
    factor: float = 3.0
    """Patience per second of the longest gap seen: a broadcast that went quiet for 3 x longer
    than it ever did has stopped."""
    jitter: float = 0.25
    """Up to this share more, per device: spreads the re-requests of a stalled broadcast."""


class BroadcastWatch:
    """What one device has seen of one broadcast so far; times are `time.monotonic()` values."""

    __slots__ = ("chunk_seen", "heard", "longest_gap", "rule", "started", "stretch")

    def __init__(self, rule: BroadcastPatience, now: float, *, rng: random.Random | None = None):
        self.rule = rule
        self.started = now
        self.heard = now
        """The broadcast's last sign of life."""
        self.longest_gap = 0.0
        self.chunk_seen = False
        self.stretch = 1.0 + (rng or random).uniform(0.0, rule.jitter)

    def chunk(self, now: float) -> None:
        """A broadcast chunk brought new bytes."""
        self.chunk_seen = True
        self._sign(now)

    def manifest(self, now: float) -> None:
        """The manifest came again on the shared topic: the publisher is still gathering devices,
        unless chunks have come already or it has repeated itself for longer than `cap_s`."""
        if not self.chunk_seen and now - self.started <= self.rule.cap_s:
            self._sign(now)

    def _sign(self, now: float) -> None:
        self.longest_gap = max(self.longest_gap, now - self.heard)
        self.heard = now

    @property
    def wait_s(self) -> float:
        """How long silence lasts before this device pulls what it lacks."""
        rule = self.rule
        return min(rule.cap_s, max(rule.floor_s, rule.factor * self.longest_gap)) * self.stretch

    def quiet(self, now: float) -> bool:
        """True once the broadcast has been silent for longer than `wait_s`."""
        return now - self.heard > self.wait_s
