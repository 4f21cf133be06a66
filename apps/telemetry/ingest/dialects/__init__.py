"""Which dialect a message speaks, and the parser that turns it into raw records. Pure: no ORM, no settings, no I/O.

Every dialect ends in the same place: a ``ParsedPayload`` of ``RawRecord``s (device uid, instant, values) and
``RecordError``s, which the one ingest service validates and writes (``apps.telemetry.services``). A dialect is
known from the transport when the transport says so (an endpoint of its own, a topic tree of its own: the message's
``dialect``), otherwise from the content:

* ``native``: JSON (first non-blank byte ``{`` or ``[``) or MessagePack, in Fieldwatch's ThingsBoard-like shapes
  (``apps.telemetry.ingest.parsing``);
* ``sparkplug``: Sparkplug B 3.0 protobuf on the ``spBv1.0/...`` topic tree (only ever by transport), read against
  the edge node's birth state, which the ingest service passes in ``options`` and takes back from
  ``ParsedPayload.state`` (``apps.telemetry.ingest.dialects.sparkplug``);

A parser receives the payload and a ``Sender``: the device a device topic names (every record is that device's),
or nobody in particular (a gateway topic, the HTTP API: records name their devices, and validation checks that
each is on the gateway's site).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apps.telemetry.choices import Dialect
from apps.telemetry.ingest import parsing
from apps.telemetry.ingest.dialects import sparkplug
from apps.telemetry.ingest.records import ParsedPayload


@dataclass(frozen=True, slots=True)
class Sender:
    """Who the transport says sent a message. ``device_uid``: a device topic (records are this device's); None: a
    gateway or an API key (records name their devices). ``http``: the HTTP API's body shapes apply."""

    device_uid: str | None = None
    http: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)  # per-dialect settings (e.g. a precision)


@dataclass(frozen=True, slots=True)
class Limits:
    received_at: datetime
    max_bytes: int
    max_records: int


Parser = Callable[[bytes, Sender, Limits], ParsedPayload]


def parse_native(payload: bytes, sender: Sender, limits: Limits) -> ParsedPayload:
    document = parsing.decode_payload(payload, max_bytes=limits.max_bytes)
    bounds = {"received_at": limits.received_at, "max_records": limits.max_records}
    if sender.http:
        return parsing.parse_http_payload(document, **bounds)
    if sender.device_uid is None:
        return parsing.parse_gateway_payload(document, **bounds)
    return parsing.parse_device_payload(document, device_uid=sender.device_uid, **bounds)


def parse_sparkplug(payload: bytes, sender: Sender, limits: Limits) -> ParsedPayload:
    """``options``: ``topic`` (the MQTT topic), ``node`` (the edge node's NodeState, None when unknown) and
    ``uids`` (the UidTemplates of the device mapping)."""
    options = sender.options
    return sparkplug.parse_message(
        payload,
        sparkplug.parse_topic(options.get("topic", "")),
        options.get("node"),
        received_at=limits.received_at,
        max_bytes=limits.max_bytes,
        max_records=limits.max_records,
        uids=options.get("uids") or sparkplug.UidTemplates(),
    )


PARSERS: dict[str, Parser] = {
    Dialect.NATIVE: parse_native,
    Dialect.SPARKPLUG: parse_sparkplug,
}


def detect(payload: bytes, content_type: str = "") -> Dialect:
    """The dialect of a payload whose transport does not say: by Content-Type where one is given, else by content."""
    return Dialect.NATIVE


def dialect_of(payload: bytes, declared: str, options: Mapping[str, Any]) -> Dialect:
    """The transport's word when it has one, else what the content says."""
    return Dialect(declared) if declared else detect(payload, options.get("content_type", ""))


def parse(payload: bytes, dialect: Dialect, sender: Sender, limits: Limits) -> ParsedPayload:
    return PARSERS[dialect](payload, sender, limits)
