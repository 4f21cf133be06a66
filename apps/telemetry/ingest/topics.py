"""MQTT topic names: ``<prefix>/devices/<device_uid>/telemetry`` and ``<prefix>/gateways/<gateway_uid>/telemetry``."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TelemetryTopic:
    device_uid: str | None = None
    gateway_uid: str | None = None


def subscriptions(prefix: str, shared_group: str | None) -> list[str]:
    """The topic filters a listener subscribes to; with a group, as MQTT 5 shared subscriptions."""
    filters = [f"{prefix}/devices/+/telemetry", f"{prefix}/gateways/+/telemetry"]
    return [f"$share/{shared_group}/{topic}" for topic in filters] if shared_group else filters


def device_topic(prefix: str, device_uid: str) -> str:
    return f"{prefix}/devices/{device_uid}/telemetry"


def gateway_topic(prefix: str, gateway_uid: str) -> str:
    return f"{prefix}/gateways/{gateway_uid}/telemetry"


def parse_topic(topic: str, prefix: str) -> TelemetryTopic | None:
    """The device or gateway a topic addresses, or None for anything else."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) != 3 or parts[2] != "telemetry" or not parts[1]:
        return None
    if parts[0] == "devices":
        return TelemetryTopic(device_uid=parts[1])
    if parts[0] == "gateways":
        return TelemetryTopic(gateway_uid=parts[1])
    return None
