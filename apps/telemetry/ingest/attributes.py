"""Client attributes (ThingsBoard's ``v1/devices/me/attributes``): facts a device reports about itself - firmware
version, serial number, configuration - stored on the device (``metadata["client_attributes"]``), not as readings.
Pure: no ORM, no I/O.

Shapes, as ThingsBoard's: on a device topic ``{"<key>": <any JSON value>, ...}``; on a gateway topic
``{"<device uid>": {"<key>": <value>, ...}, ...}``. Later values of a key replace earlier ones.
"""

from dataclasses import dataclass, field
from typing import Any

from apps.telemetry.choices import RejectReason
from apps.telemetry.ingest.records import RecordError, Rejection

ATTRIBUTE_KEY_MAX_LENGTH = 128
ATTRIBUTES_MAX_PER_MESSAGE = 500


@dataclass(slots=True)
class ParsedAttributes:
    updates: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)  # (index, device uid, attributes)
    errors: list[RecordError] = field(default_factory=list)


def parse_attributes(document: Any, *, device_uid: str | None) -> ParsedAttributes:
    """``document`` (decoded JSON or MessagePack) from a device topic (``device_uid``) or a gateway topic (None)."""
    if type(document) is not dict:
        raise Rejection(RejectReason.INVALID_SHAPE, "attributes must be a JSON object")
    parsed = ParsedAttributes()
    if device_uid is not None:
        _add(parsed, 0, device_uid, document)
        return parsed
    for index, (uid, attributes) in enumerate(document.items()):
        if type(attributes) is not dict:
            parsed.errors.append(RecordError(index, str(uid)[:128], RejectReason.INVALID_SHAPE, "expected an object"))
            continue
        _add(parsed, index, uid, attributes)
    return parsed


def _add(parsed: ParsedAttributes, index: int, uid: str, attributes: dict) -> None:
    if len(attributes) > ATTRIBUTES_MAX_PER_MESSAGE:
        detail = f"{len(attributes)} attributes; at most {ATTRIBUTES_MAX_PER_MESSAGE} per message"
        parsed.errors.append(RecordError(index, uid[:128], RejectReason.TOO_MANY_RECORDS, detail))
        return
    bad = next((key for key in attributes if not 0 < len(key) <= ATTRIBUTE_KEY_MAX_LENGTH), None)
    if bad is not None:
        detail = f"attribute names are 1 to {ATTRIBUTE_KEY_MAX_LENGTH} characters"
        parsed.errors.append(RecordError(index, uid[:128], RejectReason.INVALID_SHAPE, detail))
        return
    parsed.updates.append((index, uid, attributes))
