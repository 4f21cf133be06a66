"""Ingest validation: RawRecords against DeviceRules -> ValidReadings and RecordErrors. Pure: no database."""

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.telemetry.choices import RejectReason
from apps.telemetry.ingest.parsing import (
    decode_payload,
    parse_device_payload,
    parse_gateway_payload,
    parse_http_payload,
)
from apps.telemetry.ingest.records import DeviceRule, MetricRule, RawRecord, Rejection, ValidReading
from apps.telemetry.ingest.validation import is_valid_metric_key, validate_records

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=5)
RETENTION = timedelta(days=90)
SITE = 1
OTHER_SITE = 2

HEAT_PUMP_METRICS = {
    "temp": MetricRule("temp", -50.0, 150.0),
    "cop": MetricRule("cop", 0.5, 10.0),
    "power": MetricRule("power", 0.0, None),
    "setpoint": MetricRule("setpoint", None, 80.0),
    "running": MetricRule("running", None, None),
}


def rule(uid="hp-1", *, device_id=10, site_id=SITE, is_active=True, strict=True, metrics=None, **extra) -> DeviceRule:
    metrics = HEAT_PUMP_METRICS if metrics is None else metrics
    return DeviceRule(device_id, uid, site_id, is_active, strict, metrics, **extra)


DEVICES = {
    "hp-1": rule("hp-1", device_id=10),
    "logger-1": rule("logger-1", device_id=20, strict=False, metrics={"temp": MetricRule("temp", -50.0, 150.0)}),
    "old-1": rule("old-1", device_id=30, is_active=False),
    "far-1": rule("far-1", device_id=40, site_id=OTHER_SITE),
}


def record(values, *, uid="hp-1", ts=NOW, index=0) -> RawRecord:
    return RawRecord(index, uid, ts, values)


def validate(records, *, devices=None, gateway_site_id=None, now=NOW):
    return validate_records(
        records,
        devices=DEVICES if devices is None else devices,
        gateway_site_id=gateway_site_id,
        now=now,
        future_tolerance=TOLERANCE,
        retention=RETENTION,
    )


def only_error(records, **kwargs):
    readings, errors = validate(records, **kwargs)
    assert readings == []
    assert len(errors) == 1
    return errors[0]


# --- accepted readings ------------------------------------------------------------------------------------------


def test_numbers_become_float_readings_with_the_record_timestamp():
    ts = NOW - timedelta(hours=1)
    readings, errors = validate([record({"temp": 21, "cop": 3.9}, ts=ts)])
    assert errors == []
    assert readings == [ValidReading(10, "temp", ts, 21.0), ValidReading(10, "cop", ts, 3.9)]
    assert all(type(reading.value) is float for reading in readings)


def test_booleans_become_one_and_zero():
    readings, _ = validate([record({"running": True}), record({"running": False}, index=1)])
    assert [(r.value, type(r.value)) for r in readings] == [(1.0, float), (0.0, float)]


def test_range_bounds_are_inclusive_and_may_be_one_sided():
    values = {"cop": 0.5, "temp": 150, "power": 1e9, "setpoint": -1e9}
    readings, errors = validate([record(values)])
    assert errors == []
    assert len(readings) == 4


# --- record-level refusals --------------------------------------------------------------------------------------


def test_unknown_device_refuses_the_record():
    error = only_error([record({"temp": 1}, uid="ghost", index=3)])
    assert (error.index, error.device_uid, error.reason, error.metric) == (3, "ghost", RejectReason.UNKNOWN_DEVICE, "")


def test_inactive_device_refuses_the_record():
    error = only_error([record({"temp": 1}, uid="old-1")])
    assert (error.device_uid, error.reason) == ("old-1", RejectReason.INACTIVE_DEVICE)


def test_gateway_may_only_send_for_devices_on_its_site():
    error = only_error([record({"temp": 1}, uid="far-1")], gateway_site_id=SITE)
    assert (error.device_uid, error.reason) == ("far-1", RejectReason.WRONG_SITE)
    # The detail does not tell the gateway where the device really is.
    assert str(OTHER_SITE) not in error.detail
    assert validate([record({"temp": 1}, uid="far-1")], gateway_site_id=OTHER_SITE)[1] == []


def test_site_is_not_checked_without_a_gateway():
    readings, errors = validate([record({"temp": 1}, uid="far-1")], gateway_site_id=None)
    assert errors == []
    assert readings[0].device_id == 40


def test_timestamp_beyond_the_future_tolerance_refuses_the_record():
    readings, errors = validate(
        [
            record({"temp": 1}, ts=NOW + TOLERANCE),
            record({"temp": 2}, ts=NOW + TOLERANCE + timedelta(seconds=1), index=1),
        ]
    )
    assert [r.value for r in readings] == [1.0]
    assert [(e.index, e.reason) for e in errors] == [(1, RejectReason.FUTURE_TIMESTAMP)]
    assert "300 s" in errors[0].detail


def test_timestamp_older_than_retention_refuses_the_record():
    readings, errors = validate(
        [
            record({"temp": 1}, ts=NOW - RETENTION),
            record({"temp": 2}, ts=NOW - RETENTION - timedelta(seconds=1), index=1),
        ]
    )
    assert [r.value for r in readings] == [1.0]
    assert [(e.index, e.reason) for e in errors] == [(1, RejectReason.STALE_TIMESTAMP)]
    assert "90 days" in errors[0].detail


@pytest.mark.parametrize(
    ("device_retention", "age", "accepted"),
    [
        (timedelta(days=365), timedelta(days=200), True),
        (timedelta(days=7), timedelta(days=8), False),
        (timedelta(days=7), timedelta(days=6), True),
        (None, timedelta(days=89), True),
        (None, timedelta(days=91), False),
    ],
)
def test_device_raw_retention_overrides_the_default(device_retention, age, accepted):
    devices = {"hp-1": rule(raw_retention=device_retention)}
    readings, errors = validate([record({"temp": 1}, ts=NOW - age)], devices=devices)
    assert bool(readings) is accepted
    assert [e.reason for e in errors] == ([] if accepted else [RejectReason.STALE_TIMESTAMP])


def test_schema_violation_refuses_the_whole_record():
    def check_schema(values):
        return None if "mode" not in values else "'mode' is not one of ['heat', 'cool']"

    devices = {"hp-1": rule(check_schema=check_schema)}
    readings, errors = validate([record({"temp": 1, "mode": "dry"}), record({"temp": 2}, index=1)], devices=devices)
    assert [r.value for r in readings] == [2.0]
    assert [(e.index, e.reason, e.detail, e.metric) for e in errors] == [
        (0, RejectReason.SCHEMA_VIOLATION, "'mode' is not one of ['heat', 'cool']", "")
    ]


def test_record_checks_stop_at_the_first_refusal():
    error = only_error([record({"temp": "x"}, uid="old-1", ts=NOW + timedelta(days=1))])
    assert error.reason == RejectReason.INACTIVE_DEVICE


# --- value-level refusals ---------------------------------------------------------------------------------------


def test_strict_type_refuses_an_undefined_metric_and_keeps_its_neighbours():
    readings, errors = validate([record({"temp": 1, "humidity": 40, "cop": 3}, index=5)])
    assert [r.metric_key for r in readings] == ["temp", "cop"]
    assert [(e.index, e.device_uid, e.reason, e.metric) for e in errors] == [
        (5, "hp-1", RejectReason.UNKNOWN_METRIC, "humidity")
    ]
    assert errors[0].as_dict() == {
        "index": 5,
        "device": "hp-1",
        "reason": "unknown_metric",
        "detail": "metric is not defined for the device type",
        "metric": "humidity",
    }


def test_lenient_type_accepts_undefined_metrics_without_range_checks():
    readings, errors = validate([record({"humidity": 1e12, "pump_2_state": True, "temp": 21}, uid="logger-1")])
    assert errors == []
    assert [(r.device_id, r.metric_key, r.value) for r in readings] == [
        (20, "humidity", 1e12),
        (20, "pump_2_state", 1.0),
        (20, "temp", 21.0),
    ]


def test_lenient_type_still_range_checks_its_defined_metrics():
    readings, errors = validate([record({"temp": 900, "other": 900}, uid="logger-1")])
    assert [r.metric_key for r in readings] == ["other"]
    assert [(e.reason, e.metric) for e in errors] == [(RejectReason.OUT_OF_RANGE, "temp")]


@pytest.mark.parametrize(
    "key", ["Temp", "1temp", "_temp", "temp-c", "temp c", "temp\n", "", "t" * 64, "température", "\uff54emp"]
)
def test_lenient_type_refuses_invalid_metric_keys(key):
    readings, errors = validate([record({key: 1, "ok": 2}, uid="logger-1")])
    assert [r.metric_key for r in readings] == ["ok"]
    assert [(e.reason, e.detail) for e in errors] == [(RejectReason.UNKNOWN_METRIC, "invalid metric key")]
    assert errors[0].metric


def test_strict_type_calls_an_invalid_key_invalid():
    error = only_error([record({"Temp\x00": 1})])
    assert (error.reason, error.detail) == (RejectReason.UNKNOWN_METRIC, "invalid metric key")
    assert error.metric == "'Temp\\x00'"


def test_metric_keys_that_are_not_strings_are_refused():
    readings, errors = validate([record({7: 1, "ok": 2}, uid="logger-1")])
    assert [r.metric_key for r in readings] == ["ok"]
    assert [(e.reason, e.metric) for e in errors] == [(RejectReason.UNKNOWN_METRIC, "7")]


@pytest.mark.parametrize(
    ("key", "valid"),
    [("t", True), ("temp_2", True), ("a" + "b" * 62, True), ("a" + "b" * 63, False), ("2a", False), ("a.b", False)],
)
def test_is_valid_metric_key(key, valid):
    assert is_valid_metric_key(key) is valid


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("21.5", "expected a number or a boolean, got '21.5'"),
        (None, "expected a number or a boolean, got None"),
        ([1, 2], "expected a number or a boolean, got an array of 2 items"),
        ({"v": 1}, "expected a number or a boolean, got an object of 1 keys"),
        (float("nan"), "nan is not finite"),
        (float("inf"), "inf is not finite"),
        (float("-inf"), "-inf is not finite"),
        (10**400, "an integer of 1329 bits is too large for a float"),
        ("x" * 500, "expected a number or a boolean, got '" + "x" * 80 + "'..."),
    ],
)
def test_invalid_values_are_refused_alone_with_a_detail_naming_them(value, detail):
    readings, errors = validate([record({"temp": value, "cop": 3}, uid="hp-1", index=2)])
    assert [r.metric_key for r in readings] == ["cop"]
    assert [(e.index, e.reason, e.metric, e.detail) for e in errors] == [
        (2, RejectReason.INVALID_VALUE, "temp", detail)
    ]


def test_nan_and_infinity_json_literals_end_as_invalid_values():
    document = decode_payload(b'{"temp": NaN, "cop": Infinity, "power": -Infinity, "setpoint": 45}', max_bytes=1024)
    parsed = parse_device_payload(document, device_uid="hp-1", received_at=NOW, max_records=10)
    readings, errors = validate(parsed.records)
    assert [r.metric_key for r in readings] == ["setpoint"]
    assert [(e.metric, e.reason) for e in errors] == [
        ("temp", RejectReason.INVALID_VALUE),
        ("cop", RejectReason.INVALID_VALUE),
        ("power", RejectReason.INVALID_VALUE),
    ]


def test_out_of_range_value_is_refused_with_value_bounds_and_metric():
    # 3.9 read from two Modbus registers in the wrong word order.
    readings, errors = validate([record({"cop": 3.9e-35, "temp": 21})])
    assert [r.metric_key for r in readings] == ["temp"]
    assert [(e.reason, e.metric, e.detail) for e in errors] == [
        (RejectReason.OUT_OF_RANGE, "cop", "3.9e-35 outside [0.5, 10.0] for cop")
    ]


def test_out_of_range_detail_shows_open_bounds_as_infinity():
    _, errors = validate([record({"power": -1, "setpoint": 81, "running": 1e300})])
    assert [e.detail for e in errors] == ["-1.0 outside [0.0, inf] for power", "81.0 outside [-inf, 80.0] for setpoint"]


def test_errors_keep_record_order_and_indices():
    records = [
        record({"temp": 1}, uid="ghost", index=0),
        record({"temp": 1, "cop": 99}, index=1),
        record({"temp": 2}, uid="old-1", index=2),
        record({"temp": 3}, index=3),
    ]
    readings, errors = validate(records)
    assert [r.value for r in readings] == [1.0, 3.0]
    assert [(e.index, e.reason) for e in errors] == [
        (0, RejectReason.UNKNOWN_DEVICE),
        (1, RejectReason.OUT_OF_RANGE),
        (2, RejectReason.INACTIVE_DEVICE),
    ]


def test_validate_accepts_any_iterable_of_records():
    readings, _ = validate(record({"temp": i}, index=i) for i in range(3))
    assert [r.value for r in readings] == [0.0, 1.0, 2.0]


# --- properties -------------------------------------------------------------------------------------------------

UIDS = ["hp-1", "logger-1", "old-1", "far-1", "ghost"]
NOW_MS = int(NOW.timestamp() * 1000)

json_like = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
timestamps = (
    st.none()
    | st.integers(min_value=NOW_MS - 100 * 86_400_000, max_value=NOW_MS + 600_000)
    | st.floats()
    | st.integers()
    | st.sampled_from(["2025-03-01T11:59:00Z", "2025-03-01T12:00:00+01:00", "2025-02-30", "now"])
    | json_like
)
metric_keys = st.sampled_from([*HEAT_PUMP_METRICS, "humidity", "Bad Key", "x" * 64]) | st.text(max_size=8)
scalars = st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8)
values = st.dictionaries(metric_keys, scalars | json_like, max_size=6) | json_like
device_objects = st.fixed_dictionaries({"values": values}, optional={"ts": timestamps}) | values
device_documents = device_objects | st.lists(device_objects | json_like, max_size=6) | json_like
gateway_documents = st.dictionaries(
    st.sampled_from(UIDS) | st.text(max_size=4),
    device_objects | st.lists(device_objects, max_size=4) | json_like,
    max_size=4,
)
addressed = st.fixed_dictionaries(
    {"device": st.sampled_from(UIDS) | json_like, "values": values}, optional={"ts": timestamps}
)
http_documents = addressed | st.lists(addressed | json_like, max_size=6) | gateway_documents | json_like


def check_pipeline(document, parse, gateway_site_id) -> None:
    try:
        parsed = parse(document)
    except Rejection:
        return
    readings, errors = validate(parsed.records, gateway_site_id=gateway_site_id)
    for reading in readings:
        assert type(reading.value) is float
        assert math.isfinite(reading.value)
        assert reading.device_id in {d.device_id for d in DEVICES.values()}
    for error in errors:
        assert isinstance(error.reason, RejectReason)
        json.dumps(error.as_dict())


@settings(max_examples=300, deadline=None)
@given(document=device_documents, uid=st.sampled_from(UIDS) | st.text(max_size=4))
def test_any_device_document_validates_to_finite_floats_or_refusals(document, uid):
    def parse(doc):
        return parse_device_payload(doc, device_uid=uid, received_at=NOW, max_records=50)

    check_pipeline(document, parse, None)


@settings(max_examples=300, deadline=None)
@given(document=gateway_documents, gateway_site_id=st.none() | st.just(SITE))
def test_any_gateway_document_validates_to_finite_floats_or_refusals(document, gateway_site_id):
    def parse(doc):
        return parse_gateway_payload(doc, received_at=NOW, max_records=50)

    check_pipeline(document, parse, gateway_site_id)


@settings(max_examples=300, deadline=None)
@given(document=http_documents)
def test_any_http_document_validates_to_finite_floats_or_refusals(document):
    def parse(doc):
        return parse_http_payload(doc, received_at=NOW, max_records=50)

    check_pipeline(document, parse, None)


@settings(max_examples=300, deadline=None)
@given(document=json_like, gateway_site_id=st.none() | st.just(SITE))
def test_any_json_like_document_validates_to_finite_floats_or_refusals(document, gateway_site_id):
    for parse in (
        lambda doc: parse_device_payload(doc, device_uid="hp-1", received_at=NOW, max_records=50),
        lambda doc: parse_gateway_payload(doc, received_at=NOW, max_records=50),
        lambda doc: parse_http_payload(doc, received_at=NOW, max_records=50),
    ):
        check_pipeline(document, parse, gateway_site_id)
