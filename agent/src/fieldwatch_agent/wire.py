"""Fieldwatch's wire contract, from the agent's side: payload shapes out, and pass-through documents in.

Out (what the platform parses, apps/telemetry/ingest/parsing.py on its side):

* device payload, on ``<prefix>/devices/<uid>/telemetry``: ``[{"ts": <epoch ms>, "values": {...}}, ...]``
* gateway payload, on ``<prefix>/gateways/<uid>/telemetry`` and as the body of ``POST /api/v1/ingest``:
  ``{"<device uid>": [{"ts": ..., "values": {...}}, ...], ...}``

Every reading the agent sends carries its own ``ts`` (the time of the poll), so a reading replayed an hour later
lands at the instant it was measured, and a resend after an unclear outcome is a duplicate the platform absorbs.
"""

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fieldwatch_agent.buffer import BufferedReading, Reading

_SEPARATORS = (",", ":")


@dataclass(frozen=True)
class Message:
    """One payload to send and the buffer rows it carries (deleted when it is acknowledged)."""

    payload: bytes
    ids: tuple[int, ...]
    readings: tuple[BufferedReading, ...]


def gateway_document(batch: list[BufferedReading] | tuple[BufferedReading, ...]) -> dict[str, list[dict]]:
    document: dict[str, list[dict]] = {}
    for item in batch:
        document.setdefault(item.reading.device, []).append({"ts": item.reading.ts, "values": item.reading.values})
    return document


def device_document(batch: list[BufferedReading] | tuple[BufferedReading, ...]) -> list[dict]:
    return [{"ts": item.reading.ts, "values": item.reading.values} for item in batch]


def encode(document: Any) -> bytes:
    return json.dumps(document, separators=_SEPARATORS, allow_nan=False).encode()


def messages(batch: list[BufferedReading], *, gateway: bool, per_message: int, max_bytes: int) -> Iterator[Message]:
    """Split ``batch`` (oldest first) into payloads of at most ``per_message`` readings and ``max_bytes`` bytes."""
    shape = gateway_document if gateway else device_document
    start = 0
    while start < len(batch):
        chunk = batch[start : start + per_message]
        payload = encode(shape(chunk))
        # Halve until it fits; one reading over the bound is sent anyway (and refused by the platform, visibly).
        while len(payload) > max_bytes and len(chunk) > 1:
            chunk = chunk[: len(chunk) // 2]
            payload = encode(shape(chunk))
        yield Message(payload, tuple(item.id for item in chunk), tuple(chunk))
        start += len(chunk)


# --- pass-through: documents from local publishers ----------------------------------------------------------------


class PayloadError(ValueError):
    """A pass-through document the agent cannot turn into readings (told to the publisher, not buffered)."""


def readings_from_device_payload(document: Any, device: str, received_ms: int) -> list[Reading]:
    """A device payload (object or array; timestamped ``{"ts", "values"}`` or flat ``{metric: value}``)."""
    items = document if isinstance(document, list) else [document]
    return [_reading(item, device, received_ms) for item in items]


def readings_from_ingest_body(document: Any, received_ms: int) -> list[Reading]:
    """What ``POST /api/v1/ingest`` takes: a gateway payload, a device-addressed object, or an array of those."""
    if isinstance(document, list):
        return [_addressed(item, received_ms) for item in document]
    if isinstance(document, dict):
        if isinstance(document.get("device"), str) and "values" in document:
            return [_addressed(document, received_ms)]
        readings = []
        for device, entry in document.items():
            readings += readings_from_device_payload(entry, device, received_ms)
        return readings
    raise PayloadError("expected an object or an array")


def _addressed(item: Any, received_ms: int) -> Reading:
    if not isinstance(item, dict) or not isinstance(item.get("device"), str) or "values" not in item:
        raise PayloadError('expected {"device": uid, "ts": ..., "values": {...}}')
    return _reading(item, item["device"], received_ms)


def _reading(item: Any, device: str, received_ms: int) -> Reading:
    if not isinstance(item, dict):
        raise PayloadError("a reading must be an object")
    values = item.get("values", item)  # timestamped or flat
    if not isinstance(values, dict) or not values:
        raise PayloadError('"values" must be a non-empty object')
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError(f"{key}: {value!r} is not finite")
    ts = item.get("ts") if "values" in item else None
    if ts is None:
        ts = received_ms  # stamped here, at receipt: a replay later must not restamp it
    elif isinstance(ts, bool) or not isinstance(ts, int | float):
        raise PayloadError("pass-through readings take ts as epoch milliseconds")
    return Reading(device, int(ts), values)
