"""RawRecords x DeviceRules -> ValidReadings, every refusal a RecordError with a RejectReason. Pure: no ORM, no I/O.

Record-level checks (device known, active, on the gateway's site; timestamp neither too new nor past retention;
the type's JSON Schema) refuse the whole record. Value-level checks (metric known, value a finite number or boolean,
in the metric's unit when the dialect sends units, within the metric's plausible range) refuse that one value only,
with ``metric`` set: its neighbours go through.

This runs for every reading on the ingest hot path, so the loop binds what it uses to locals, decides types with
``type(v) is ...`` rather than isinstance, and raises no exception for a good value.
"""

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from apps.telemetry.choices import RejectReason
from apps.telemetry.ingest.parsing import describe_value
from apps.telemetry.ingest.records import DeviceRule, RawRecord, RecordError, ValidReading

__all__ = ["device_refusal", "is_valid_metric_key", "validate_records"]

METRIC_KEY_MAX_LENGTH = 63


def is_valid_metric_key(key: Any) -> bool:
    """True when ``key`` matches ``[a-z][a-z0-9_]{0,62}``: the keys a lenient device type may create series for.

    Built from str methods implemented in C rather than a regex (this runs per value): ASCII identifiers are
    ``[A-Za-z_][A-Za-z0-9_]*``; ``islower`` rules out capitals, and the first character may not be ``_``.
    """
    return (
        type(key) is str
        and len(key) <= METRIC_KEY_MAX_LENGTH
        and key.isascii()
        and key.isidentifier()
        and key.islower()
        and key[0] != "_"
    )


def device_refusal(device: DeviceRule | None, *, gateway_site_id: int | None) -> tuple[RejectReason, str] | None:
    """Why a sender may not speak for ``device`` at all - unknown, deactivated, or (for a gateway) on another site -
    or None. For readings and client attributes alike."""
    if device is None:
        return RejectReason.UNKNOWN_DEVICE, "no device is registered with this uid"
    if not device.is_active:
        return RejectReason.INACTIVE_DEVICE, "the device is deactivated"
    if gateway_site_id is not None and device.site_id != gateway_site_id:
        # Deliberately vague: the gateway's owner need not learn which site the device is on.
        return RejectReason.WRONG_SITE, "the device is not on the gateway's site"
    return None


def validate_records(
    records: Iterable[RawRecord],
    *,
    devices: Mapping[str, DeviceRule],
    gateway_site_id: int | None,
    now: datetime,
    future_tolerance: timedelta,
    retention: timedelta,
) -> tuple[list[ValidReading], list[RecordError]]:
    """Check each record against its device's rules; return the accepted readings and the refusals, in order.

    ``gateway_site_id`` is the site of the gateway that sent the records (None for a device's own topic or HTTP):
    a gateway may only speak for devices on its site. ``retention`` applies unless the device has its own.
    """
    readings: list[ValidReading] = []
    errors: list[RecordError] = []
    add_reading = readings.append
    add_error = errors.append
    isfinite = math.isfinite
    valid_key = is_valid_metric_key
    latest = now + future_tolerance
    default_oldest = now - retention
    # A lenient type's undefined metric keys, checked once per call: batches repeat the same few keys.
    good_keys: set[str] = set()

    for record in records:
        index = record.index
        uid = record.device_uid
        device = devices.get(uid)
        if (
            device is None
            or not device.is_active
            or (gateway_site_id is not None and device.site_id != gateway_site_id)
        ):
            add_error(RecordError(index, uid, *device_refusal(device, gateway_site_id=gateway_site_id)))
            continue
        ts = record.ts
        if ts > latest:
            detail = f"{ts.isoformat()} is more than {_seconds(future_tolerance)} ahead of {now.isoformat()}"
            add_error(RecordError(index, uid, RejectReason.FUTURE_TIMESTAMP, detail))
            continue
        device_retention = device.raw_retention
        if ts < (now - device_retention if device_retention else default_oldest):
            kept = device_retention or retention
            detail = f"{ts.isoformat()} is older than the raw retention of {_seconds(kept)}"
            add_error(RecordError(index, uid, RejectReason.STALE_TIMESTAMP, detail))
            continue
        values = record.values
        check_schema = device.check_schema
        if check_schema is not None:
            message = check_schema(values)
            if message:
                add_error(RecordError(index, uid, RejectReason.SCHEMA_VIOLATION, message))
                continue

        metrics = device.metrics
        units = record.units
        strict = device.strict
        device_id = device.device_id
        for key, value in values.items():
            rule = metrics.get(key)
            if rule is None:
                if strict:
                    add_error(RecordError(index, uid, RejectReason.UNKNOWN_METRIC, _unknown_detail(key), _label(key)))
                    continue
                if key not in good_keys:
                    if not valid_key(key):
                        add_error(
                            RecordError(index, uid, RejectReason.UNKNOWN_METRIC, "invalid metric key", _label(key))
                        )
                        continue
                    good_keys.add(key)

            # From here on ``key`` is a defined metric or a valid key: safe to report as is.
            kind = type(value)
            if kind is float:
                if not isfinite(value):
                    add_error(RecordError(index, uid, RejectReason.INVALID_VALUE, f"{value!r} is not finite", key))
                    continue
                number = value
            elif kind is int:
                try:
                    number = float(value)
                except OverflowError:
                    detail = f"{describe_value(value)} is too large for a float"
                    add_error(RecordError(index, uid, RejectReason.INVALID_VALUE, detail, key))
                    continue
            elif kind is bool:
                number = 1.0 if value else 0.0
            else:
                detail = f"expected a number or a boolean, got {describe_value(value)}"
                add_error(RecordError(index, uid, RejectReason.INVALID_VALUE, detail, key))
                continue

            if rule is not None:
                # Only dialects that carry units set ``units``; a metric without a unit takes any.
                if units is not None and rule.unit:
                    sent = units.get(key)
                    if sent is not None and sent != rule.unit:
                        detail = f"sent in {sent!r}, the metric is in {rule.unit!r}"
                        add_error(RecordError(index, uid, RejectReason.UNIT_MISMATCH, detail, key))
                        continue
                low = rule.min_value
                high = rule.max_value
                if (low is not None and number < low) or (high is not None and number > high):
                    # Typically a Modbus register pair read in the wrong word order: 3.9e-35 for a COP of 3.9.
                    bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
                    detail = f"{number!r} outside {bounds} for {key}"
                    add_error(RecordError(index, uid, RejectReason.OUT_OF_RANGE, detail, key))
                    continue

            add_reading(ValidReading(device_id, key, ts, number))

    return readings, errors


def _label(key: Any) -> str:
    """A metric key fit for RecordError.metric (never empty): as sent when short and printable, else its repr."""
    if type(key) is str and 0 < len(key) <= 80 and key.isprintable():
        return key
    return describe_value(key)


def _unknown_detail(key: Any) -> str:
    return "metric is not defined for the device type" if is_valid_metric_key(key) else "invalid metric key"


def _seconds(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 86400 and seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day" if days == 1 else f"{days} days"
    return f"{seconds:g} s"
