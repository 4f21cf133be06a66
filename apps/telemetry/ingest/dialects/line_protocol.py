"""InfluxDB line protocol (what Telegraf and every InfluxDB client write) -> RawRecords. Pure: no ORM, no I/O.

One point per line: ``<measurement>[,<tag>=<value>...] <field>=<value>[,<field>=<value>...] [<timestamp>]``
(https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/). Escaping per the spec: a backslash
escapes ``,`` and space in a measurement, ``,`` ``=`` and space in tag keys, tag values and field keys, ``"`` in a
string field value, and a backslash itself everywhere; before any other character it is a literal backslash.
Lines are separated by ``\\n`` (a trailing ``\\r`` is dropped); blank lines and ``#`` comments are skipped.

Mapping (docs/dialects.md): each line is one record at its timestamp (in ``precision`` units, nanoseconds unless
the sender says; receipt time without one). The device is the sender's when a device topic says so, else the value
of the tag ``device_tag`` (a per-gateway setting, default ``device``), else of the ``host`` tag. The metric key is
the field key, or ``<measurement>_<field key>`` with ``metric_naming = "measurement_field"``. Floats, integers
(``1i``), unsigned integers (``1u``) and booleans are values; a string field is refused by itself
(``unsupported_value``). A line that does not parse is refused whole (``invalid_syntax``; ``invalid_timestamp`` for
its timestamp) and its neighbours go on.

``RecordError.index`` is the line's position in the payload, 0-based: line ``index + 1`` in InfluxDB's words.

Most lines have no backslash and no quote: they are split with ``str.split`` and ``str.partition`` (C speed). The
others go through a small scanner that knows the escapes and quoted strings.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from apps.core.time import INSTANT_MAX_EPOCH_MS, INSTANT_MAX_YEAR, INSTANT_MIN_YEAR
from apps.telemetry.choices import RejectReason
from apps.telemetry.ingest.parsing import TimestampError, check_size, describe_value, uid_problem
from apps.telemetry.ingest.records import ParsedPayload, RawRecord, RecordError, Rejection

__all__ = ["DEFAULT_DEVICE_TAG", "FALLBACK_DEVICE_TAG", "PRECISIONS", "parse_line_protocol"]

DEFAULT_DEVICE_TAG = "device"
FALLBACK_DEVICE_TAG = "host"  # what Telegraf adds to every metric
MEASUREMENT_FIELD = "measurement_field"  # apps.devices.choices.MetricNaming.MEASUREMENT_FIELD

# Nanoseconds per unit of each ``precision`` InfluxDB accepts: 2.x's names and 1.x's short ones.
PRECISIONS = {
    "ns": 1,
    "n": 1,
    "us": 1_000,
    "u": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_EPOCH_NS = INSTANT_MAX_EPOCH_MS * 1_000_000  # readings are accepted through the year 2200 (apps.core.time)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1
_MAX_DIGITS = 20  # the longest 64-bit integer; int() of anything longer is refused before it is attempted
_BOOLEANS = {
    "t": True,
    "T": True,
    "true": True,
    "True": True,
    "TRUE": True,
    "f": False,
    "F": False,
    "false": False,
    "False": False,
    "FALSE": False,
}
_FLOAT_CHARS = "0123456789.eE+-"
_FLOAT_FIRST = "0123456789.-"

# What a backslash escapes in each part of a line (a backslash before anything else is itself).
_MEASUREMENT_ESCAPES = ", \\"
_KEY_ESCAPES = ",= \\"
_STRING_ESCAPES = '"\\'


class _LineError(ValueError):
    """Why a line does not parse; becomes a RecordError(INVALID_SYNTAX) at the line's index."""


class _StringField:
    """A string field value: parsed (so the line's other fields are found), then refused as unsupported."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def parse_line_protocol(
    payload: bytes,
    *,
    received_at: datetime,
    max_bytes: int,
    max_records: int,
    device_uid: str | None = None,
    precision: str = "ns",
    device_tag: str = DEFAULT_DEVICE_TAG,
    metric_naming: str = "field",
) -> ParsedPayload:
    """A line protocol payload -> one RawRecord per line (its refused fields and unparseable lines as
    RecordErrors). ``device_uid``: a device topic's device, whose every line it is (tags then name nobody)."""
    check_size(payload, max_bytes=max_bytes)
    unit_ns = PRECISIONS.get(precision)
    if unit_ns is None:
        raise Rejection(RejectReason.INVALID_SHAPE, f"unknown precision {describe_value(precision)}")
    prefixed = metric_naming == MEASUREMENT_FIELD
    result = ParsedPayload()
    records = result.records
    errors = result.errors
    count = 0
    for index, line in enumerate(_lines(payload)):
        if type(line) is not str:  # the bytes of a line that is not UTF-8
            errors.append(RecordError(index, "", RejectReason.INVALID_SYNTAX, "the line is not valid UTF-8"))
            continue
        if line[-1:] == "\r":
            line = line[:-1]
        if not line or line.isspace() or line.lstrip()[:1] == "#":
            continue
        count += 1
        if count > max_records:
            raise Rejection(RejectReason.TOO_MANY_RECORDS, f"more than {max_records} lines, the limit is {max_records}")
        try:
            if "\\" in line or '"' in line:
                measurement, tags, fields, stamp = _scan(line)
            else:
                measurement, tags, fields, stamp = _split(line)
            when = received_at if not stamp else _instant(stamp, unit_ns)
        except _LineError as exc:
            errors.append(RecordError(index, "", RejectReason.INVALID_SYNTAX, str(exc)))
            continue
        except TimestampError as exc:
            errors.append(RecordError(index, "", RejectReason.INVALID_TIMESTAMP, str(exc)))
            continue

        uid = device_uid or tags.get(device_tag) or tags.get(FALLBACK_DEVICE_TAG)
        if uid is None:
            detail = f"no {device_tag!r} tag (nor {FALLBACK_DEVICE_TAG!r}) names the device"
            errors.append(RecordError(index, "", RejectReason.INVALID_SHAPE, detail))
            continue
        problem = uid_problem(uid)
        if problem is not None:
            errors.append(RecordError(index, "", RejectReason.INVALID_SHAPE, problem))
            continue
        values: dict[str, Any] = {}
        for key, value in fields:
            metric = f"{measurement}_{key}" if prefixed else key
            if type(value) is _StringField:
                detail = f"string field {describe_value(value.text)}: readings are numbers or booleans"
                errors.append(RecordError(index, uid, RejectReason.UNSUPPORTED_VALUE, detail, metric[:80]))
            else:
                values[metric] = value
        if values:
            records.append(RawRecord(index, uid, when, values))
    if not count and not errors:
        raise Rejection(RejectReason.INVALID_SHAPE, "no line protocol points in the payload")
    return result


def _lines(payload: bytes) -> list:
    """The payload's lines as text; a line that is not UTF-8 stays bytes (only that line is then refused)."""
    try:
        return payload.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        pass
    lines: list = []
    for raw in payload.split(b"\n"):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw)
    return lines


# --- the two ways to take a line apart ----------------------------------------------------------------------------


def _split(line: str) -> tuple[str, dict[str, str], list[tuple[str, Any]], str]:
    """A line without backslash or quote: nothing is escaped, so the separators are simply where they are."""
    parts = line.split(" ")
    if len(parts) > 3 or "" in parts:  # leading, trailing or repeated spaces between the sections
        parts = [part for part in parts if part]
    if len(parts) < 2:
        raise _LineError("missing field set (a line is 'measurement[,tag=value] field=value [timestamp]')")
    if len(parts) > 3:
        raise _LineError(f"unexpected {describe_value(parts[3])} after the timestamp")
    names = parts[0].split(",")
    measurement = names[0]
    if not measurement:
        raise _LineError("missing measurement")
    tags = {}
    for tag in names[1:]:
        key, equals, value = tag.partition("=")
        if not equals or not key or not value or "=" in value:
            raise _LineError(f"tag {describe_value(tag)} is not key=value")
        tags[key] = value
    fields = []
    for field in parts[1].split(","):
        key, equals, text = field.partition("=")
        if not equals or not key or not text or "=" in text:
            raise _LineError(f"field {describe_value(field)} is not key=value")
        fields.append((key, _field_value(text, key)))
    return measurement, tags, fields, parts[2] if len(parts) == 3 else ""


def _scan(line: str) -> tuple[str, dict[str, str], list[tuple[str, Any]], str]:
    """A line with escapes or quoted strings: walked character by character where it matters."""
    n = len(line)
    i = _skip_spaces(line, 0)
    start = i
    while i < n and line[i] != " ":
        i += 2 if line[i] == "\\" else 1
    names = _split_unescaped(line[start:i], ",")
    measurement = _unescape(names[0], _MEASUREMENT_ESCAPES)
    if not measurement:
        raise _LineError("missing measurement")
    tags = {}
    for tag in names[1:]:
        parts = _split_unescaped(tag, "=")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise _LineError(f"tag {describe_value(tag)} is not key=value")
        tags[_unescape(parts[0], _KEY_ESCAPES)] = _unescape(parts[1], _KEY_ESCAPES)

    i = _skip_spaces(line, i)
    if i >= n:
        raise _LineError("missing field set (a line is 'measurement[,tag=value] field=value [timestamp]')")
    fields = []
    while True:
        start = i
        while i < n and line[i] not in "=, ":
            i += 2 if line[i] == "\\" else 1
        if i >= n or line[i] != "=" or i == start:
            raise _LineError(f"field {describe_value(line[start:i])} is not key=value")
        key = _unescape(line[start:i], _KEY_ESCAPES)
        i += 1
        if i < n and line[i] == '"':
            start = i + 1
            i = start
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            if i >= n:
                raise _LineError(f"unterminated string in field {describe_value(key)}")
            value: Any = _StringField(_unescape(line[start:i], _STRING_ESCAPES))
            i += 1
        else:
            start = i
            while i < n and line[i] not in ", ":
                i += 1
            value = _field_value(line[start:i], key)
        fields.append((key, value))
        if i >= n or line[i] == " ":
            break
        if line[i] != ",":
            raise _LineError(f"unexpected {line[i]!r} after field {describe_value(key)}")
        i += 1

    stamp = line[_skip_spaces(line, i) :].rstrip(" ")
    if " " in stamp:
        raise _LineError(f"unexpected {describe_value(stamp.split(' ', 1)[1])} after the timestamp")
    return measurement, tags, fields, stamp


def _skip_spaces(line: str, i: int) -> int:
    n = len(line)
    while i < n and line[i] == " ":
        i += 1
    return i


def _split_unescaped(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` that no backslash escapes (the pieces still escaped)."""
    if "\\" not in text:
        return text.split(separator)
    pieces = []
    start = i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            i += 2
        elif char == separator:
            pieces.append(text[start:i])
            i += 1
            start = i
        else:
            i += 1
    pieces.append(text[start:])
    return pieces


def _unescape(text: str, escapable: str) -> str:
    if "\\" not in text:
        return text
    out = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in escapable:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


# --- values and timestamps ------------------------------------------------------------------------------------------


def _field_value(text: str, key: str) -> Any:
    """A field value that is not a string: an integer (``i``), an unsigned integer (``u``), a boolean or a float."""
    last = text[-1:]
    if last == "i" or last == "u":
        digits = text[:-1]
        unsigned = digits[1:] if digits[:1] == "-" and last == "i" else digits
        if not (unsigned.isascii() and unsigned.isdigit() and len(unsigned) <= _MAX_DIGITS):
            raise _LineError(f"field {describe_value(key)}: {describe_value(text)} is not an integer")
        number = int(digits)
        low, high = _INT64 if last == "i" else (0, _UINT64_MAX)
        if not low <= number <= high:
            kind = "a 64-bit integer" if last == "i" else "a 64-bit unsigned integer"
            raise _LineError(f"field {describe_value(key)}: {describe_value(text)} is out of range for {kind}")
        return number
    boolean = _BOOLEANS.get(text)
    if boolean is not None:
        return boolean
    # float() would also take "inf", "nan", "1_000" and surrounding spaces: only the spec's characters go to it.
    if text[:1] in _FLOAT_FIRST and not text.strip(_FLOAT_CHARS):
        try:
            return float(text)
        except ValueError:
            pass
    raise _LineError(f"field {describe_value(key)}: {describe_value(text)} is not a number or a boolean")


def _instant(stamp: str, unit_ns: int) -> datetime:
    digits = stamp[1:] if stamp[:1] == "-" else stamp
    if not (digits.isascii() and digits.isdigit() and len(digits) <= _MAX_DIGITS):
        raise TimestampError(f"timestamp {describe_value(stamp)} is not an integer")
    nanoseconds = int(stamp) * unit_ns
    if not 0 <= nanoseconds < _MAX_EPOCH_NS:
        raise TimestampError(f"timestamp {stamp} is outside the years {INSTANT_MIN_YEAR}..{INSTANT_MAX_YEAR}")
    return _EPOCH + timedelta(microseconds=nanoseconds // 1000)
