"""Bytes -> document -> RawRecords, for the three ways readings arrive. Pure: no ORM, no settings, no I/O.

Wire contract (ThingsBoard-compatible shapes):

* device payload, on ``<prefix>/devices/<uid>/telemetry``: ``{"ts": <epoch ms | ISO-8601>, "values": {...}}``
  (the *timestamped* form), or ``{"<metric>": <value>, ...}`` (the *flat* form, stamped with the time of receipt),
  or an array of either (a batch). An object is in the timestamped form exactly when it has a ``"values"`` key.
* gateway payload, on ``<prefix>/gateways/<uid>/telemetry``: ``{"<device uid>": [<device payload object>, ...]}``;
  a single object may stand in for the list.
* HTTP body: a gateway payload, or ``{"device": "<uid>", "ts": ..., "values": {...}}`` (an object whose ``"device"``
  is a string and which has ``"values"``), or an array of such device-addressed objects.

JSON and MessagePack carry the same structure and are told apart by content: JSON starts with ``{`` or ``[``.

A payload that cannot be read at all, is too large, has too many records or is of the wrong type as a whole raises
``Rejection``. A bad element inside it becomes a ``RecordError`` at its index - the position of the record in the
flattened document order - and its neighbours go on. Values are passed through untouched: validation judges them.
"""

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import orjson

from apps.core.time import INSTANT_MAX_EPOCH_MS, INSTANT_MAX_YEAR, INSTANT_MIN_YEAR
from apps.telemetry.choices import RejectReason
from apps.telemetry.ingest.records import ParsedPayload, RawRecord, RecordError, Rejection

__all__ = [
    "TimestampError",
    "check_size",
    "decode_json",
    "decode_payload",
    "describe_value",
    "parse_device_payload",
    "parse_gateway_payload",
    "parse_http_payload",
    "parse_timestamp",
    "uid_problem",
]

DEVICE_UID_MAX_LENGTH = 128

_INVALID_SHAPE = RejectReason.INVALID_SHAPE
_INVALID_TIMESTAMP = RejectReason.INVALID_TIMESTAMP

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamps are accepted from 1970 through the year 2200 (apps.core.time, shared with the query API's instants).
_MIN_YEAR, _MAX_YEAR = INSTANT_MIN_YEAR, INSTANT_MAX_YEAR
_MAX_EPOCH_MS = INSTANT_MAX_EPOCH_MS
_MAX_ISO_LENGTH = 64

_UTF8_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = b" \t\r\n"
_JSON_OPENERS = (b"{", b"[")


# --- decoding ---------------------------------------------------------------------------------------------------


def decode_payload(data: bytes, *, max_bytes: int) -> Any:
    """Decode a payload to a document: JSON when its first non-blank byte is ``{`` or ``[``, else MessagePack.

    There is no fallback from one format to the other: JSON that fails to parse is reported with the JSON error.
    """
    check_size(data, max_bytes=max_bytes)
    body = data[3:] if data.startswith(_UTF8_BOM) else data
    # bytes.lstrip returns the object itself (no copy) when there is nothing to strip: the common case.
    head = body.lstrip(_JSON_WHITESPACE)[:1]
    if not head:
        raise Rejection(RejectReason.UNPARSEABLE, "empty payload")
    if head in _JSON_OPENERS:
        return _decode_json(body)
    return _decode_msgpack(data)


def decode_json(data: bytes, *, max_bytes: int) -> Any:
    """Decode a payload known to be JSON (its dialect or Content-Type says so), as ``decode_payload`` does."""
    check_size(data, max_bytes=max_bytes)
    return _decode_json(data[3:] if data.startswith(_UTF8_BOM) else data)


def check_size(data: bytes, *, max_bytes: int) -> None:
    """Refuse a payload over the size bound (TOO_LARGE), before anything decodes it."""
    size = len(data)
    if size > max_bytes:
        raise Rejection(RejectReason.TOO_LARGE, f"payload is {size} bytes, the limit is {max_bytes} bytes")


def _decode_json(body: bytes) -> Any:
    # orjson first: about four times faster than the standard library on payloads of this size, and equal on every
    # document it accepts. What it refuses - NaN/Infinity literals (which the standard library reads and validation
    # then refuses per value), integers beyond 64 bits, lone surrogates, malformed input - goes to the standard
    # library as before, so behaviour and error messages do not change.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(RejectReason.UNPARSEABLE, f"JSON is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        detail = f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
        raise Rejection(RejectReason.UNPARSEABLE, detail) from None
    except RecursionError:
        raise Rejection(RejectReason.UNPARSEABLE, "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise Rejection(RejectReason.UNPARSEABLE, f"invalid JSON: {_clip(str(exc))}") from None


def _decode_msgpack(data: bytes) -> Any:
    size = len(data)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            # No container or string can be longer than the payload itself; nesting is bounded by msgpack (1024).
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=size,
        )
    except msgpack.ExtraData:
        reason = "extra bytes after the first value"
    except msgpack.StackError:
        reason = "nested too deeply"
    except msgpack.FormatError:
        reason = "invalid type byte"
    except UnicodeDecodeError:
        reason = "a string is not valid UTF-8"
    except TypeError:  # a map key that is an array or a map
        reason = "a map key is not a scalar"
    except ValueError as exc:  # incomplete input, bad timestamp extension, ...
        reason = _clip(str(exc)) or "malformed input"
    raise Rejection(RejectReason.UNPARSEABLE, f"neither JSON nor valid MessagePack: {reason}")


# --- timestamps -------------------------------------------------------------------------------------------------


class TimestampError(ValueError):
    """A ``ts`` that cannot be read; the parse functions turn it into a RecordError(INVALID_TIMESTAMP)."""


def parse_timestamp(value: Any, *, received_at: datetime) -> datetime:
    """``ts`` as sent -> an aware UTC datetime: epoch milliseconds (int or float), ISO-8601, or None for receipt time.

    ISO strings may end in ``Z``; naive ones are taken as UTC. Only years 1970..2200 are accepted.
    """
    kind = type(value)
    if kind is int:  # the common case first: no float round-trip, exact to the millisecond
        if 0 <= value < _MAX_EPOCH_MS:
            return _EPOCH + timedelta(milliseconds=value)
        raise TimestampError(
            f"epoch milliseconds {describe_value(value)} are outside the years {_MIN_YEAR}..{_MAX_YEAR}"
        )
    if value is None:
        return received_at
    if kind is float:
        if not math.isfinite(value):
            raise TimestampError(f"epoch milliseconds {value!r} are not finite")
        if 0 <= value < _MAX_EPOCH_MS:
            return _EPOCH + timedelta(milliseconds=value)
        raise TimestampError(f"epoch milliseconds {value!r} are outside the years {_MIN_YEAR}..{_MAX_YEAR}")
    if kind is str:
        return _parse_iso(value)
    if kind is msgpack.Timestamp:  # MessagePack's own timestamp extension (type -1)
        return parse_timestamp(value.to_unix_nano() // 1_000_000, received_at=received_at)
    raise TimestampError(f"expected epoch milliseconds or an ISO-8601 string, got {_kind(value)}")


def _parse_iso(value: str) -> datetime:
    if len(value) > _MAX_ISO_LENGTH:
        raise TimestampError(f"not an ISO-8601 timestamp: {describe_value(value)}")
    try:
        # Python 3.11+ reads the full ISO-8601 profile we need, including a trailing "Z".
        parsed = datetime.fromisoformat(value)
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise TimestampError(f"not an ISO-8601 timestamp: {describe_value(value)}") from None
    if not _MIN_YEAR <= parsed.year <= _MAX_YEAR:
        raise TimestampError(f"{value!r} is outside the years {_MIN_YEAR}..{_MAX_YEAR}")
    return parsed


# --- payload shapes ---------------------------------------------------------------------------------------------


def parse_device_payload(document: Any, *, device_uid: str, received_at: datetime, max_records: int) -> ParsedPayload:
    """A device payload (one object or an array of them) published by the device ``device_uid`` itself."""
    if type(document) is dict:
        items: list | tuple = (document,)
    elif type(document) is list:
        items = document
    else:
        raise Rejection(_INVALID_SHAPE, f"expected an object or an array of objects, got {_kind(document)}")
    _check_count(len(items), max_records)
    result = ParsedPayload()
    uid_issue = uid_problem(device_uid)
    for index, item in enumerate(items):
        if uid_issue is None:
            _add_record(item, index, device_uid, received_at, result)
        else:
            result.errors.append(RecordError(index, "", _INVALID_SHAPE, uid_issue))
    return result


def parse_gateway_payload(document: Any, *, received_at: datetime, max_records: int) -> ParsedPayload:
    """A gateway payload: an object mapping device uids to a device payload object or an array of them."""
    if type(document) is not dict:
        raise Rejection(_INVALID_SHAPE, f"expected an object mapping device uids to payloads, got {_kind(document)}")
    _check_count(sum(len(entry) if type(entry) is list else 1 for entry in document.values()), max_records)
    result = ParsedPayload()
    errors = result.errors
    index = 0
    for uid, entry in document.items():
        uid_issue = uid_problem(uid)
        if type(entry) is list:
            items: list | tuple = entry
        elif type(entry) is dict:
            items = (entry,)
        else:
            label = uid if uid_issue is None else ""
            detail = f"expected an object or an array of objects for the device, got {_kind(entry)}"
            errors.append(RecordError(index, label, _INVALID_SHAPE, detail))
            index += 1
            continue
        for item in items:
            if uid_issue is None:
                _add_record(item, index, uid, received_at, result)
            else:
                errors.append(RecordError(index, "", _INVALID_SHAPE, uid_issue))
            index += 1
    return result


def parse_http_payload(document: Any, *, received_at: datetime, max_records: int) -> ParsedPayload:
    """An HTTP body: a device-addressed object, an array of them, or a gateway payload."""
    if type(document) is list:
        _check_count(len(document), max_records)
        result = ParsedPayload()
        for index, item in enumerate(document):
            _add_addressed_record(item, index, received_at, result)
        return result
    if type(document) is dict:
        if type(document.get("device")) is str and "values" in document:
            _check_count(1, max_records)
            result = ParsedPayload()
            _add_addressed_record(document, 0, received_at, result)
            return result
        return parse_gateway_payload(document, received_at=received_at, max_records=max_records)
    raise Rejection(_INVALID_SHAPE, f"expected an object or an array of objects, got {_kind(document)}")


def _check_count(count: int, max_records: int) -> None:
    if count > max_records:
        raise Rejection(RejectReason.TOO_MANY_RECORDS, f"{count} records, the limit is {max_records}")


def _add_addressed_record(item: Any, index: int, received_at: datetime, result: ParsedPayload) -> None:
    """``{"device": uid, "ts": ..., "values": {...}}`` -> a record or an INVALID_SHAPE error."""
    if type(item) is not dict:
        detail = f'expected an object with "device" and "values", got {_kind(item)}'
        result.errors.append(RecordError(index, "", _INVALID_SHAPE, detail))
        return
    uid = item.get("device")
    problem = 'missing "device"' if uid is None else uid_problem(uid)
    if problem is not None:
        result.errors.append(RecordError(index, "", _INVALID_SHAPE, problem))
    elif "values" not in item:
        result.errors.append(RecordError(index, uid, _INVALID_SHAPE, 'missing "values"'))
    else:
        _add_record(item, index, uid, received_at, result)


def _add_record(item: Any, index: int, uid: str, received_at: datetime, result: ParsedPayload) -> None:
    """One device payload object, timestamped or flat -> a RawRecord, or an INVALID_SHAPE/INVALID_TIMESTAMP error."""
    if type(item) is not dict:
        result.errors.append(RecordError(index, uid, _INVALID_SHAPE, f"expected an object, got {_kind(item)}"))
        return
    if "values" in item:
        values = item["values"]
        ts = item.get("ts")
        if type(values) is not dict:
            detail = f'"values" must be an object, got {_kind(values)}'
            result.errors.append(RecordError(index, uid, _INVALID_SHAPE, detail))
            return
    else:
        values = item
        ts = None
    if not values:
        result.errors.append(RecordError(index, uid, _INVALID_SHAPE, "no values"))
        return
    if ts is None:
        when = received_at
    else:
        try:
            when = parse_timestamp(ts, received_at=received_at)
        except TimestampError as exc:
            result.errors.append(RecordError(index, uid, _INVALID_TIMESTAMP, str(exc)))
            return
    result.records.append(RawRecord(index, uid, when, values))


def uid_problem(uid: Any) -> str | None:
    """Why ``uid`` cannot name a device, or None. Printable only, so it is safe in logs, errors and the database."""
    if type(uid) is not str:
        return f"device uid must be a string, got {_kind(uid)}"
    if not uid:
        return "device uid is empty"
    if len(uid) > DEVICE_UID_MAX_LENGTH:
        return f"device uid is longer than {DEVICE_UID_MAX_LENGTH} characters"
    if not uid.isprintable():
        return f"device uid has unprintable characters: {describe_value(uid)}"
    return None


# --- descriptions for error details -----------------------------------------------------------------------------

_KINDS = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
    bytes: "binary data",
}


def _kind(value: Any) -> str:
    """The JSON word for a value's type, for error details."""
    return _KINDS.get(type(value)) or f"a {type(value).__name__}"


def describe_value(value: Any) -> str:
    """A short, printable rendering of any decoded value, for error details.

    Never walks a container (it may be huge or deeply nested) nor prints a huge integer (which may not even convert).
    """
    if type(value) is int and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    if type(value) is dict:
        return f"an object of {len(value)} keys"
    if type(value) is list:
        return f"an array of {len(value)} items"
    if type(value) in (str, bytes):
        return repr(value[:80]) + ("..." if len(value) > 80 else "")
    return _clip(repr(value))


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
