"""MQTT topic names: ``<prefix>/devices/<device_uid>/telemetry`` and ``<prefix>/gateways/<gateway_uid>/telemetry``,
and the same with ``attributes`` (client attributes, ThingsBoard's ``v1/devices/me/attributes`` after the broker
plugin rewrote it), and Sparkplug B's own tree, ``spBv1.0/...`` (fixed by the specification, whatever the prefix)."""

import hmac
from dataclasses import dataclass

LEAVES = ("telemetry", "attributes")
SPARKPLUG_FILTER = "spBv1.0/#"  # apps.telemetry.ingest.dialects.sparkplug reads what arrives there


@dataclass(frozen=True, slots=True)
class TelemetryTopic:
    device_uid: str | None = None
    gateway_uid: str | None = None
    attributes: bool = False  # client attributes, not readings


def subscriptions(prefix: str, shared_group: str | None) -> list[str]:
    """The topic filters a listener subscribes to; with a group, as MQTT 5 shared subscriptions."""
    filters = [f"{prefix}/{kind}/+/{leaf}" for kind in ("devices", "gateways") for leaf in LEAVES]
    filters.append(SPARKPLUG_FILTER)
    return [f"$share/{shared_group}/{topic}" for topic in filters] if shared_group else filters


def private_share_group(group: str, secret: str | None) -> str:
    """``group`` suffixed with a digest of the listener's broker password: a shared-subscription group that only
    holders of that password can name, and so join. Without a password (a broker without auth), ``group`` itself.

    Why: Mosquitto 2.0's ACL file never checks a SUBSCRIBE (every filter is granted, ``$share`` ones included; only
    delivery is checked against read rights), and a group member that may not read a message is still handed its
    turn of it, which is then dropped rather than given to another member. Any credential that could join the
    listener's group would silently take a share of the stream. The name is therefore a capability derived from the
    listener's secret; an intruder subscribing under the configured name forms a group of its own and gets nothing.
    """
    if not secret:
        return group
    return f"{group}-{hmac.new(secret.encode(), b'fieldwatch-ingest-share-group', 'sha256').hexdigest()[:32]}"


def device_topic(prefix: str, device_uid: str) -> str:
    return f"{prefix}/devices/{device_uid}/telemetry"


def gateway_topic(prefix: str, gateway_uid: str) -> str:
    return f"{prefix}/gateways/{gateway_uid}/telemetry"


def sender_key(topic: str) -> str:
    """The segment of a topic that names its sender: the device or gateway uid, or a Sparkplug edge node's id (the
    gateway whose login alone may publish there). ``mqtt_listen --processes`` prepares all of one sender's messages
    in one process, so their order, and a Sparkplug node's birth and sequence state, never span two."""
    if topic.startswith("spBv1.0/"):
        parts = topic.split("/", 4)
        return parts[3] if len(parts) > 3 else topic
    parts = topic.rsplit("/", 2)
    return parts[-2] if len(parts) == 3 else topic


def parse_topic(topic: str, prefix: str) -> TelemetryTopic | None:
    """The device or gateway a topic addresses, or None for anything else."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) != 3 or parts[2] not in LEAVES or not parts[1]:
        return None
    attributes = parts[2] == "attributes"
    if parts[0] == "devices":
        return TelemetryTopic(device_uid=parts[1], attributes=attributes)
    if parts[0] == "gateways":
        return TelemetryTopic(gateway_uid=parts[1], attributes=attributes)
    return None
