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
* ``senml``: SenML (RFC 8428, ``dialects.senml``): Content-Type ``application/senml+json`` or ``+cbor``; else a JSON
  array whose first record names something (``bn`` or ``n``), or a CBOR array of maps keyed by the RFC's integer
  labels (no native MessagePack payload starts like one);
* ``line_protocol``: InfluxDB line protocol (``dialects.line_protocol``): its own HTTP endpoints; else a payload
  whose first non-blank byte is an ASCII letter or ``_`` (never a native payload's) and whose first line has a
  space followed by ``key=value``.

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
from apps.telemetry.ingest.dialects import line_protocol, senml, sparkplug
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


def parse_line_protocol(payload: bytes, sender: Sender, limits: Limits) -> ParsedPayload:
    options = sender.options
    return line_protocol.parse_line_protocol(
        payload,
        received_at=limits.received_at,
        max_bytes=limits.max_bytes,
        max_records=limits.max_records,
        device_uid=sender.device_uid,
        precision=options.get("precision") or "ns",
        device_tag=options.get("device_tag") or line_protocol.DEFAULT_DEVICE_TAG,
        metric_naming=options.get("metric_naming") or "field",
    )


def parse_senml(payload: bytes, sender: Sender, limits: Limits) -> ParsedPayload:
    return senml.parse_senml(
        payload,
        received_at=limits.received_at,
        max_bytes=limits.max_bytes,
        max_records=limits.max_records,
        device_uid=sender.device_uid,
    )


PARSERS: dict[str, Parser] = {
    Dialect.NATIVE: parse_native,
    Dialect.SPARKPLUG: parse_sparkplug,
    Dialect.LINE_PROTOCOL: parse_line_protocol,
    Dialect.SENML: parse_senml,
}

# Media types that name a dialect outright. Any other (application/json, text/plain, none) leaves it to the content.
MEDIA_TYPES = {
    "application/senml+json": Dialect.SENML,
    "application/senml+cbor": Dialect.SENML,
}

_BLANK = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"


def detect(payload: bytes, content_type: str = "") -> Dialect:
    """The dialect of a payload whose transport does not say: by Content-Type where one is given, else by content.

    Cheap for native payloads, which is nearly all of them: a look at the first bytes (SenML JSON is decoded once
    more only when its first key is a SenML label)."""
    if content_type:
        declared = MEDIA_TYPES.get(content_type.partition(";")[0].strip().lower())
        if declared is not None:
            return declared
    head = payload[:1]
    if head == b"{":  # the common case first: a native JSON object
        return Dialect.NATIVE
    body = payload[3:] if payload.startswith(_UTF8_BOM) else payload
    body = body.lstrip(_BLANK)
    head = body[:1]
    if head == b"[":
        return Dialect.SENML if senml.looks_like_senml_json(payload) else Dialect.NATIVE
    if head == b"{":
        return Dialect.NATIVE
    if senml.looks_like_senml_cbor(payload):
        return Dialect.SENML
    if _looks_like_line_protocol(body):
        return Dialect.LINE_PROTOCOL
    return Dialect.NATIVE


def _looks_like_line_protocol(body: bytes) -> bool:
    """``measurement[,tag=value...] field=value...`` on the first line of ``body`` (already stripped of leading
    blanks). Native payloads start with ``{``, ``[`` or a MessagePack container byte (0x80 and up): never a letter."""
    first = body[:1]
    if not (first.isalpha() or first == b"_"):  # bytes.isalpha is ASCII-only
        return False
    end = body.find(b"\n")
    line = body if end < 0 else body[:end]
    space = line.find(b" ")
    return space > 0 and line.find(b"=", space + 2) > 0


def dialect_of(payload: bytes, declared: str, options: Mapping[str, Any]) -> Dialect:
    """The transport's word when it has one, else what the content says."""
    return Dialect(declared) if declared else detect(payload, options.get("content_type", ""))


def parse(payload: bytes, dialect: Dialect, sender: Sender, limits: Limits) -> ParsedPayload:
    return PARSERS[dialect](payload, sender, limits)
