"""SenML (RFC 8428) in JSON or CBOR -> RawRecords. Pure: no ORM, no I/O.

A pack is an array of records; base fields (``bn`` ``bt`` ``bu`` ``bv`` ``bs`` ``bver``) apply to the record they
are in and every later one until changed. Each record resolves as the RFC says (section 4.6): name = ``bn + n``,
time = ``bt + t`` in seconds (below 2**28 it is relative to the time of receipt: 0 is now, -5 five seconds ago),
unit = ``u`` or else ``bu``, value = ``v + bv`` (or ``vb``), sum = ``s + bs``.

Mapping (docs/dialects.md): the device is the resolved name up to its last ``:`` or ``/`` and the metric the rest
(``urn:dev:ow:10e2073a01080063:temp`` -> device ``urn:dev:ow:10e2073a01080063``, metric ``temp``); on a device
topic the topic names the device and the metric is what follows the last separator. ``v`` and ``vb`` are values
(``s`` too: a record with a sum and no value is that metric's reading, one with both stores the sum as
``<metric>_sum``); ``vs`` and ``vd`` are refused by the record (``unsupported_value``). The unit of a ``v`` goes
with the record (RawRecord.units), for validation to compare with the metric's.

JSON and CBOR are told apart by content: JSON starts with ``[``. CBOR uses the RFC's integer labels (section 6).
A record that cannot be resolved is refused by itself (``RecordError.index`` is its position in the pack;
consecutive records of one device at one instant make one RawRecord, at the first one's index); a pack
that cannot be decoded, is not an array, carries a must-understand label (ending in ``_``) or a malformed base
field (every later record would be resolved wrongly) is refused whole.
"""

import io
import math
from datetime import datetime, timedelta
from typing import Any

import cbor2

from apps.core.time import instant_in_range
from apps.telemetry.choices import RejectReason
from apps.telemetry.ingest.parsing import (
    TimestampError,
    check_size,
    decode_json,
    describe_value,
    parse_timestamp,
    uid_problem,
)
from apps.telemetry.ingest.records import ParsedPayload, RawRecord, RecordError, Rejection
from apps.telemetry.ingest.units import canonical_unit

__all__ = [
    "CBOR_LABELS",
    "JSON_LABELS",
    "decode_senml",
    "looks_like_senml_cbor",
    "looks_like_senml_json",
    "parse_senml",
]

# RFC 8428 section 6: the CBOR label of each field.
CBOR_LABELS = {-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs", 0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb"}
CBOR_LABELS |= {5: "s", 6: "t", 7: "ut", 8: "vd"}
JSON_LABELS = frozenset(CBOR_LABELS.values())
_BASE_LABELS = frozenset(("bn", "bt", "bu", "bv", "bs", "bver"))
_VALUE_LABELS = ("v", "vs", "vb", "vd")

SENML_VERSION = 10  # the version this parser implements (RFC 8428 section 4.4); a pack of a later one is refused
RELATIVE_TIME_LIMIT = 2**28  # resolved times below it are seconds relative to now (RFC 8428 section 4.5.3)
NAME_SEPARATORS = ":/"
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-:./_")
_CBOR_MAX_DEPTH = 16  # a pack is an array of maps of scalars: anything deeper is not SenML

_INVALID_SHAPE = RejectReason.INVALID_SHAPE


class _Tagged:
    """A CBOR value under a semantic tag (a date, a regex, a MIME message, ...): never a SenML field, and never
    decoded into one of those objects from untrusted bytes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "a tagged CBOR value"


_TAGGED = _Tagged()
# Every tag but the bignums (2, 3: plain integers) and the self-describe marker (55799: the value itself).
_CBOR_SEMANTIC = {tag: (lambda value, immutable: _TAGGED) for tag in range(65536) if tag not in (2, 3, 55799)}
_CBOR_SEMANTIC[55799] = lambda value, immutable: value


# --- detection ----------------------------------------------------------------------------------------------------


def looks_like_senml_json(payload: bytes) -> bool:
    """Whether a JSON payload starting with ``[`` is a SenML pack: its first record names something (``bn`` or
    ``n`` with a string). Decodes only when the first key is a SenML label, which no native payload's is (native
    records start with ``device``, ``ts``, ``values`` or a metric key)."""
    body = payload.lstrip(b"\xef\xbb\xbf \t\r\n")
    if body[:1] != b"[":
        return False
    first = body[1:].lstrip(b" \t\r\n")
    if first[:1] != b"{":
        return False
    key = first[1:].lstrip(b" \t\r\n")
    end = key.find(b'"', 1, 8)
    if key[:1] != b'"' or end < 0 or key[1:end].decode("ascii", "replace") not in JSON_LABELS:
        return False
    try:
        document = decode_json(payload, max_bytes=len(payload))
    except Rejection:
        return True  # it started like SenML: let the SenML parser say what is wrong with it
    return type(document) is list and bool(document) and _names_something(document[0])


def _names_something(record: Any) -> bool:
    return type(record) is dict and (type(record.get("bn")) is str or type(record.get("n")) is str)


def looks_like_senml_cbor(payload: bytes) -> bool:
    """Whether a binary payload is a SenML CBOR pack rather than native MessagePack, from its first bytes: a CBOR
    array (0x80-0x9f) whose first item is a non-empty CBOR map (0xa1-0xbf) whose first key is an RFC label, a small
    integer -6..8 (0x00-0x08, 0x20-0x25). MessagePack reads those bytes as a map or array holding a string whose
    first character is a control character or one of ``space ! " # $ %``: no native device uid or metric key."""
    if len(payload) < 3:
        return False
    head = payload[0]
    if not 0x80 <= head <= 0x9F or head in (0x9A, 0x9B, 0x9C, 0x9D, 0x9E):
        return False
    # Where the first record starts: after a 1- or 2-byte length (0x98, 0x99), else right after the head.
    at = 2 if head == 0x98 else 3 if head == 0x99 else 1
    if len(payload) < at + 2:
        return False
    map_head = payload[at]
    if not (0xA1 <= map_head <= 0xB7 or map_head in (0xB8, 0xB9, 0xBF)):
        return False
    key_at = at + (2 if map_head == 0xB8 else 3 if map_head == 0xB9 else 1)
    key = payload[key_at] if key_at < len(payload) else None
    return key is not None and (0x00 <= key <= 0x08 or 0x20 <= key <= 0x25)


# --- decoding -----------------------------------------------------------------------------------------------------


def decode_senml(payload: bytes, *, max_bytes: int) -> list:
    """A SenML payload -> its records (dicts with the JSON labels), JSON or CBOR by content."""
    check_size(payload, max_bytes=max_bytes)
    if payload.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"[":
        document = decode_json(payload, max_bytes=max_bytes)
        cbor = False
    else:
        document = _decode_cbor(payload)
        cbor = True
    if type(document) is not list:
        raise Rejection(_INVALID_SHAPE, f"a SenML pack is an array of records, got {describe_value(document)}")
    if cbor:  # integer labels to the JSON names; any other key stays as it is
        labels = CBOR_LABELS
        document = [
            {labels.get(key, key): value for key, value in record.items()} if type(record) is dict else record
            for record in document
        ]
    return document


def _decode_cbor(payload: bytes) -> Any:
    if not payload:
        raise Rejection(RejectReason.UNPARSEABLE, "empty payload")
    stream = io.BytesIO(payload)
    try:
        document = cbor2.CBORDecoder(stream, max_depth=_CBOR_MAX_DEPTH, semantic_decoders=_CBOR_SEMANTIC).decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise Rejection(RejectReason.UNPARSEABLE, f"not valid CBOR: {describe_value(str(exc))}") from None
    if stream.tell() != len(payload):
        raise Rejection(RejectReason.UNPARSEABLE, "not valid CBOR: extra bytes after the pack")
    return document


# --- resolution ---------------------------------------------------------------------------------------------------


def parse_senml(
    payload: bytes, *, received_at: datetime, max_bytes: int, max_records: int, device_uid: str | None = None
) -> ParsedPayload:
    """A SenML pack -> one RawRecord per record with a value. ``device_uid``: a device topic's device."""
    records = decode_senml(payload, max_bytes=max_bytes)
    if len(records) > max_records:
        raise Rejection(RejectReason.TOO_MANY_RECORDS, f"{len(records)} records, the limit is {max_records}")
    result = ParsedPayload()
    errors = result.errors
    base = _Base()
    # Consecutive records of one device at one instant (the usual pack: a device's metrics at one time) become one
    # RawRecord, as a native record holds them: validation then checks the device and the instant once.
    group: RawRecord | None = None
    for index, record in enumerate(records):
        if type(record) is not dict:
            errors.append(RecordError(index, "", _INVALID_SHAPE, f"expected a record, got {describe_value(record)}"))
            continue
        base.update(record, index)
        resolved = _resolve(record, index, base, received_at, device_uid, errors)
        if resolved is None:
            continue
        if (
            group is not None
            and group.device_uid == resolved.device_uid
            and group.ts == resolved.ts
            and group.values.keys().isdisjoint(resolved.values)
        ):
            group.values.update(resolved.values)
            if resolved.units:
                if group.units is None:
                    group = RawRecord(group.index, group.device_uid, group.ts, group.values, dict(resolved.units))
                    result.records[-1] = group
                else:
                    group.units.update(resolved.units)
            continue
        group = resolved
        result.records.append(resolved)
    return result


class _Base:
    """The base fields in force (RFC 8428 section 4.5)."""

    __slots__ = ("name", "names", "sum", "time", "times", "unit", "units", "value")

    def __init__(self):
        # What this pack resolved already: names -> (uid, metric, problem), (bt, t) -> instant, unit -> canonical.
        self.names: dict[str, tuple[str, str, str | None]] = {}
        self.times: dict[tuple, datetime] = {}
        self.units: dict[str, str] = {}
        self.name = ""
        self.time = 0.0
        self.unit = ""
        self.value = 0.0
        self.sum = 0.0

    def update(self, record: dict, index: int) -> None:
        for label in record:
            if type(label) is str and label[-1:] == "_":
                raise Rejection(_INVALID_SHAPE, f"record {index}: must-understand label {describe_value(label)}")
        if "bver" in record:
            version = record["bver"]
            if type(version) is not int or not 0 < version <= SENML_VERSION:
                raise Rejection(_INVALID_SHAPE, f"record {index}: unsupported SenML version {describe_value(version)}")
        if "bn" in record:
            self.name = _base_field(record, "bn", str, index)
        if "bt" in record:
            self.time = _base_field(record, "bt", float, index)
        if "bu" in record:
            self.unit = _base_field(record, "bu", str, index)
        if "bv" in record:
            self.value = _base_field(record, "bv", float, index)
        if "bs" in record:
            self.sum = _base_field(record, "bs", float, index)


def _base_field(record: dict, label: str, kind: type, index: int) -> Any:
    value = record[label]
    if kind is str and type(value) is str:
        return value
    if kind is float and _is_finite(value):
        return value
    expected = "a string" if kind is str else "a finite number"
    raise Rejection(_INVALID_SHAPE, f"record {index}: {label} must be {expected}, got {describe_value(value)}")


def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int


def _is_finite(value: Any) -> bool:
    """A number that converts to a finite float (math.isfinite would raise on a huge integer)."""
    if type(value) is int:
        return value.bit_length() < 1024
    return type(value) is float and math.isfinite(value)


def _resolve(
    record: dict, index: int, base: _Base, received_at: datetime, device_uid: str | None, errors: list[RecordError]
) -> RawRecord | None:
    """One record resolved to a RawRecord of its value(s), or None when it is refused (the reason in ``errors``) or
    holds base fields only."""
    present = [label for label in _VALUE_LABELS if label in record]
    if not present and "s" not in record:
        if "n" in record or not _BASE_LABELS.issuperset(record):
            errors.append(RecordError(index, "", _INVALID_SHAPE, "the record has no value (v, vb, vs, vd or s)"))
        return None  # a record of base fields only sets them for the records after it
    if len(present) > 1:
        detail = f"the record has more than one value: {', '.join(present)}"
        errors.append(RecordError(index, "", _INVALID_SHAPE, detail))
        return None

    name = record.get("n", "")
    if type(name) is not str:
        errors.append(RecordError(index, "", _INVALID_SHAPE, f"n must be a string, got {describe_value(name)}"))
        return None
    # Packs repeat a few names, instants and units: each is resolved once per pack.
    name = base.name + name
    resolved = base.names.get(name)
    if resolved is None:
        resolved = base.names[name] = _split_name(name, device_uid)
    uid, metric, problem = resolved
    if problem:
        errors.append(RecordError(index, uid, _INVALID_SHAPE, problem))
        return None

    offset = record.get("t", 0)
    when = base.times.get((base.time, offset)) if type(offset) is not bool else None
    if when is None:
        try:
            when = _instant(offset, base.time, received_at)
        except TimestampError as exc:
            errors.append(RecordError(index, uid, RejectReason.INVALID_TIMESTAMP, str(exc)))
            return None
        if type(offset) in (int, float):
            base.times[base.time, offset] = when

    label = present[0] if present else "s"
    raw = record[label]
    if label in ("vs", "vd"):
        kind = "string" if label == "vs" else "data"
        detail = f"a {kind} value ({label}): readings are numbers or booleans"
        errors.append(RecordError(index, uid, RejectReason.UNSUPPORTED_VALUE, detail, metric))
        return None
    if label == "vb":
        if type(raw) is not bool:
            detail = f"vb must be a boolean, got {describe_value(raw)}"
            errors.append(RecordError(index, uid, RejectReason.INVALID_VALUE, detail, metric))
            return None
        value: Any = raw
    elif not _is_number(raw):
        detail = f"{label} must be a number, got {describe_value(raw)}"
        errors.append(RecordError(index, uid, RejectReason.INVALID_VALUE, detail, metric))
        return None
    else:
        value = _plus(raw, base.value if label == "v" else base.sum)
    values = {metric: value}
    if present and "s" in record:  # a value and a sum: the sum beside it
        total = record["s"]
        if not _is_number(total):
            detail = f"s must be a number, got {describe_value(total)}"
            errors.append(RecordError(index, uid, RejectReason.INVALID_VALUE, detail, f"{metric}_sum"))
        else:
            values[f"{metric}_sum"] = _plus(total, base.sum)

    units = None
    if label == "v":
        unit = record.get("u", base.unit)
        if type(unit) is not str:
            errors.append(RecordError(index, uid, _INVALID_SHAPE, f"u must be a string, got {describe_value(unit)}"))
            return None
        if unit:
            canonical = base.units.get(unit)
            if canonical is None:
                canonical = base.units[unit] = canonical_unit(unit)
            units = {metric: canonical}
    return RawRecord(index, uid, when, values, units)


def _plus(value: int | float, base: float) -> int | float:
    """``value + base``, leaving an integer alone when there is no base (a huge one would not convert)."""
    if not base:
        return value
    try:
        return value + base
    except OverflowError:
        return math.inf  # refused by validation as not finite


def _split_name(name: str, device_uid: str | None) -> tuple[str, str, str | None]:
    """(device uid, metric, why the name cannot be used or None) of a resolved name; ``metric`` is empty when the
    problem is not the device's."""
    problem = _name_problem(name)
    if problem:
        return "", "", problem
    cut = max(name.rfind(":"), name.rfind("/"))
    if cut < 0 and device_uid is None:
        return "", "", f"the name {describe_value(name)} has no device part (device:metric or device/metric)"
    uid = device_uid or name[:cut]
    problem = uid_problem(uid) if uid else "the name has an empty device part"
    if problem:
        return "", "", problem
    metric = name[cut + 1 :]
    if not metric:
        return uid, "", f"the name {describe_value(name)} has no metric part after its last separator"
    return uid, metric, None


def _name_problem(name: str) -> str | None:
    """RFC 8428 section 4.5.1: letters, digits and ``- : . / _``, starting with a letter or digit."""
    if not name:
        return "the record has no name (bn + n is empty)"
    if not name[0].isascii() or not name[0].isalnum() or not _NAME_CHARS.issuperset(name):
        return f"the name {describe_value(name)} has characters SenML does not allow"
    return None


def _instant(offset: Any, base_time: float, received_at: datetime) -> datetime:
    """The record's time: ``bt + t`` seconds since the epoch, or relative to the time of receipt below 2**28."""
    if not _is_number(offset):
        raise TimestampError(f"t must be a number, got {describe_value(offset)}")
    try:
        seconds = float(base_time + offset)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise TimestampError(f"the time bt + t (t = {describe_value(offset)}) is not a finite number of seconds")
    if seconds >= RELATIVE_TIME_LIMIT:
        return parse_timestamp(seconds * 1000.0, received_at=received_at)
    try:
        moment = received_at + timedelta(seconds=seconds)
    except OverflowError:
        raise TimestampError(f"{seconds!r} seconds from now is out of range") from None
    if not instant_in_range(moment):
        raise TimestampError(f"{seconds!r} seconds from now is outside the years Fieldwatch accepts")
    return moment
