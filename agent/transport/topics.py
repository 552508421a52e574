"""Every MQTT topic name the agent uses (sync, HAL, OTA), built in one place from the root and the
device id."""

from __future__ import annotations

from dataclasses import dataclass

HA_PREFIX = "homeassistant"
_READ_AS_ORDERS = ("cmd", "ota")
"""Topic levels under which a device reads commands or updates: never a reply's destination."""


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names for one device: `<root>/<device_id>/...` plus the fleet forms."""

    root: str
    device_id: str
    group: str

    @property
    def base(self) -> str:
        """`<root>/<device_id>`: the prefix of every per-device topic."""
        return f"{self.root}/{self.device_id}"

    @property
    def status(self) -> str:
        """Retained online/offline status (also the last will)."""
        return f"{self.base}/status"

    @property
    def state(self) -> str:
        """Retained description of plugins and models."""
        return f"{self.base}/state"

    @property
    def metrics(self) -> str:
        """Periodic loop and sync statistics."""
        return f"{self.base}/metrics"

    def telemetry(self, plugin: str) -> str:
        """Batched telemetry of one plugin."""
        return f"{self.base}/telemetry/{plugin}"

    def events(self, plugin: str) -> str:
        """Events of one plugin (QoS 1)."""
        return f"{self.base}/events/{plugin}"

    def reply(self, command: str) -> str:
        """Default reply topic of a command when the request named none."""
        return f"{self.base}/reply/{command}"

    def command_filters(self) -> tuple[str, str, str]:
        """Subscriptions for commands: this device, its group, the whole fleet."""
        return (
            f"{self.base}/cmd/+",
            f"{self.root}/group/{self.group}/cmd/+",
            f"{self.root}/all/cmd/+",
        )

    def fleet_forms(self, suffix: str) -> tuple[str, str, str]:
        """`suffix` under this device, its group and `all` (e.g. "ota/+/manifest" for OTA)."""
        return (
            f"{self.base}/{suffix}",
            f"{self.root}/group/{self.group}/{suffix}",
            f"{self.root}/all/{suffix}",
        )

    def response_topic_refusal(self, topic: str, reply_prefix: str) -> str:
        """Why a request's MQTT 5 response topic may not be used ('' when it may).

        A reply is published with the agent's own credentials: pointed at the agent's topics
        it would forge a status or an event, at a command or update topic it would be obeyed
        by a device, at Home Assistant's it would make entities.
        """
        levels = topic.split("/")
        if "+" in levels or "#" in levels or "\0" in topic:
            return "a response topic may not contain wildcards or NUL"
        if topic.startswith("$"):
            return "a response topic may not be a broker ($) topic"
        if any(level in _READ_AS_ORDERS for level in levels):
            return "a response topic may not contain a 'cmd' or 'ota' level (read as orders)"
        if levels[0] == HA_PREFIX:
            return f"a response topic may not be under {HA_PREFIX}/"
        if levels[0] == self.root:
            if topic.startswith((f"{self.root}/{reply_prefix}/", f"{self.base}/reply/")):
                return ""
            return (
                f"a response topic under {self.root}/ must be under "
                f"{self.root}/{reply_prefix}/ or {self.base}/reply/"
            )
        return ""

    def command_name(self, topic: str) -> str | None:
        """The command name if `topic` is one of our command topics, else None."""
        head, sep, name = topic.rpartition("/cmd/")
        if not sep or not name or "/" in name:
            return None
        if head in (self.base, f"{self.root}/group/{self.group}", f"{self.root}/all"):
            return name
        return None

    def ota_manifest_filters(self) -> tuple[str, str, str]:
        """OTA manifest subscriptions: this device, its group, the fleet."""
        return self.fleet_forms("ota/+/manifest")

    def ota_chunk_filters(self) -> tuple[str, str, str]:
        """OTA chunk subscriptions: answers to this device, and the group's or fleet's broadcast."""
        return self.fleet_forms("ota/+/chunk/+")

    def ota_refused(self, model: str) -> str:
        """Where a manifest refused without changing the update's state is answered (not
        retained, so it never hides the retained status of the update in progress)."""
        return f"{self.base}/ota/{model}/refused"

    def ota_status(self, model: str) -> str:
        """Retained status of `model`'s last update."""
        return f"{self.base}/ota/{model}/status"

    def ota_request(self, model: str) -> str:
        """Where the device asks for the chunks of `model`'s update."""
        return f"{self.base}/ota/{model}/request"

    def discovery(self, component: str, object_id: str) -> str:
        """Home Assistant discovery config topic of one entity."""
        return f"{HA_PREFIX}/{component}/{self.device_id}/{object_id}/config"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth/last-will topic."""
        return f"{HA_PREFIX}/status"
