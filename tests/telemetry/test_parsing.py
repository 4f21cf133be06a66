"""Ingest parsing: bytes -> document -> RawRecords for device, gateway and HTTP payloads. Pure: no database."""

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.telemetry.choices import RejectReason
from apps.telemetry.ingest.parsing import (
    TimestampError,
    decode_payload,
    parse_device_payload,
    parse_gateway_payload,
    parse_http_payload,
    parse_timestamp,
)
from apps.telemetry.ingest.records import RawRecord, Rejection

RECEIVED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TS_MS = 1_740_830_400_000  # 2025-03-01T12:00:00Z
TS = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MAX_BYTES = 256 * 1024
MAX_RECORDS = 100


def as_json(document) -> bytes:
    return json.dumps(document).encode()


def as_msgpack(document) -> bytes:
    return msgpack.packb(document)


def device(document, *, uid="hp-1", max_records=MAX_RECORDS):
    return parse_device_payload(document, device_uid=uid, received_at=RECEIVED, max_records=max_records)


def gateway(document, *, max_records=MAX_RECORDS):
    return parse_gateway_payload(document, received_at=RECEIVED, max_records=max_records)


def http(document, *, max_records=MAX_RECORDS):
    return parse_http_payload(document, received_at=RECEIVED, max_records=max_records)


def rejection(call) -> Rejection:
    with pytest.raises(Rejection) as info:
        call()
    return info.value


def errors_by_index(parsed) -> dict:
    return {error.index: error for error in parsed.errors}


# --- decode_payload ---------------------------------------------------------------------------------------------


def test_decode_reads_json_object_and_array():
    assert decode_payload(b'{"temp": 21.5}', max_bytes=MAX_BYTES) == {"temp": 21.5}
    assert decode_payload(b'[{"temp": 1}]', max_bytes=MAX_BYTES) == [{"temp": 1}]


def test_decode_reads_json_after_leading_whitespace_and_utf8_bom():
    assert decode_payload(b' \r\n\t{"temp": 1}', max_bytes=MAX_BYTES) == {"temp": 1}
    assert decode_payload(b'\xef\xbb\xbf{"temp": 1}', max_bytes=MAX_BYTES) == {"temp": 1}


def test_decode_reads_messagepack_detected_by_content():
    document = {"ts": TS_MS, "values": {"temp": 21.5, "on": True}}
    assert decode_payload(as_msgpack(document), max_bytes=MAX_BYTES) == document
    assert decode_payload(as_msgpack([document]), max_bytes=MAX_BYTES) == [document]


def test_decode_rejects_payload_over_size_bound_stating_size_and_limit():
    payload = as_json({"temp": 1})
    assert decode_payload(payload, max_bytes=len(payload)) == {"temp": 1}
    error = rejection(lambda: decode_payload(payload, max_bytes=len(payload) - 1))
    assert error.reason == RejectReason.TOO_LARGE
    assert str(len(payload)) in error.detail
    assert str(len(payload) - 1) in error.detail


@pytest.mark.parametrize("payload", [b"", b"   ", b"\r\n\t"])
def test_decode_rejects_empty_payload(payload):
    error = rejection(lambda: decode_payload(payload, max_bytes=MAX_BYTES))
    assert (error.reason, error.detail) == (RejectReason.UNPARSEABLE, "empty payload")


def test_decode_reports_json_error_position_without_trying_messagepack():
    error = rejection(lambda: decode_payload(b'{"temp": 21.5,\n "x": }', max_bytes=MAX_BYTES))
    assert error.reason == RejectReason.UNPARSEABLE
    assert error.detail.startswith("invalid JSON:")
    assert "line 2 column 7" in error.detail


def test_decode_rejects_json_that_is_not_utf8():
    error = rejection(lambda: decode_payload(b'{"temp\xff": 1}', max_bytes=MAX_BYTES))
    assert error.reason == RejectReason.UNPARSEABLE
    assert "UTF-8" in error.detail


def test_decode_rejects_utf16_json_instead_of_guessing_the_encoding():
    error = rejection(lambda: decode_payload('{"temp": 1}'.encode("utf-16-le"), max_bytes=MAX_BYTES))
    assert error.reason == RejectReason.UNPARSEABLE


def test_decode_rejects_deeply_nested_json_without_recursion_error():
    error = rejection(lambda: decode_payload(b"[" * 100_000 + b"]" * 100_000, max_bytes=1_000_000))
    assert error.reason == RejectReason.UNPARSEABLE
    assert "nested too deeply" in error.detail


def test_decode_rejects_deeply_nested_messagepack():
    error = rejection(lambda: decode_payload(b"\x91" * 5000 + b"\x01", max_bytes=MAX_BYTES))
    assert error.reason == RejectReason.UNPARSEABLE
    assert "nested too deeply" in error.detail


def test_decode_rejects_json_integer_beyond_the_digit_limit():
    error = rejection(lambda: decode_payload(b'{"temp": ' + b"9" * 5000 + b"}", max_bytes=MAX_BYTES))
    assert error.reason == RejectReason.UNPARSEABLE


@pytest.mark.parametrize(
    "payload",
    [
        b"hello world",  # a msgpack integer followed by extra bytes
        b"\x82\xa4temp",  # truncated map
        b"\xc1",  # never-used type byte
        b"\x81\xa2\xff\xfe\x01",  # a key that is not UTF-8
        b"\x81\x91\x01\x02",  # a map key that is an array
        b'"temp"',  # a JSON string is not a supported JSON document, and not msgpack either
    ],
)
def test_decode_rejects_bytes_that_are_neither_json_nor_messagepack(payload):
    error = rejection(lambda: decode_payload(payload, max_bytes=MAX_BYTES))
    assert error.reason == RejectReason.UNPARSEABLE
    assert error.detail.startswith("neither JSON nor valid MessagePack")


def test_decode_passes_nan_and_infinity_literals_through_for_validation_to_refuse():
    document = decode_payload(b'{"a": NaN, "b": Infinity, "c": -Infinity}', max_bytes=MAX_BYTES)
    assert str(document["a"]) == "nan"
    assert document["b"] == float("inf")
    assert document["c"] == float("-inf")


SHAPES = [
    ("device", {"temp": 21.5, "on": True}),
    ("device", {"ts": TS_MS, "values": {"temp": 21.5}}),
    ("device", [{"ts": TS_MS, "values": {"temp": 21.5}}, {"temp": 22}, 7]),
    ("gateway", {"hp-1": [{"ts": TS_MS, "values": {"temp": 1}}], "hp-2": {"temp": 2}}),
    ("http", {"device": "hp-1", "ts": "2025-03-01T12:00:00Z", "values": {"temp": 1}}),
    ("http", [{"device": "hp-1", "ts": TS_MS, "values": {"temp": 1}}, {"device": 5, "values": {}}]),
]


@pytest.mark.parametrize(("kind", "document"), SHAPES)
def test_json_and_messagepack_of_the_same_structure_give_the_same_records(kind, document):
    parse = {"device": device, "gateway": gateway, "http": http}[kind]
    from_json = parse(decode_payload(as_json(document), max_bytes=MAX_BYTES))
    from_msgpack = parse(decode_payload(as_msgpack(document), max_bytes=MAX_BYTES))
    assert from_json == from_msgpack
    assert from_json.records


# --- parse_timestamp --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TS_MS, TS),
        (TS_MS + 123, TS + timedelta(milliseconds=123)),
        (float(TS_MS) + 0.5, TS + timedelta(microseconds=500)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        ("2025-03-01T12:00:00Z", TS),
        ("2025-03-01T12:00:00.250Z", TS + timedelta(milliseconds=250)),
        ("2025-03-01T13:30:00+01:30", TS),
        ("2025-03-01T12:00:00", TS),  # naive: taken as UTC
        ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
        ("2200-12-31T23:59:59Z", datetime(2200, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (msgpack.Timestamp.from_unix_nano(TS_MS * 1_000_000), TS),
        (None, RECEIVED),
    ],
)
def test_parse_timestamp_reads_epoch_milliseconds_and_iso8601_as_utc(value, expected):
    parsed = parse_timestamp(value, received_at=RECEIVED)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_parse_timestamp_converts_an_offset_to_utc_tzinfo():
    parsed = parse_timestamp("2025-03-01T14:00:00+02:00", received_at=RECEIVED)
    assert parsed.tzinfo is UTC
    assert parsed.hour == 12
    assert parsed.astimezone(timezone(timedelta(hours=2))).hour == 14


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        float("nan"),
        float("inf"),
        -1,
        -0.5,
        10**30,
        (datetime(2201, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1),
        "yesterday",
        "",
        "2025-13-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2201-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # would fall before year 1 in UTC
        "2025-03-01T12:00:00Z" + " " * 100,
        [TS_MS],
        {"ms": TS_MS},
    ],
)
def test_parse_timestamp_refuses_unreadable_and_absurd_values(value):
    with pytest.raises(TimestampError):
        parse_timestamp(value, received_at=RECEIVED)


# --- device payloads --------------------------------------------------------------------------------------------


def test_device_flat_form_is_stamped_with_the_time_of_receipt():
    parsed = device({"temp": 21.5, "on": True})
    assert parsed.records == [RawRecord(0, "hp-1", RECEIVED, {"temp": 21.5, "on": True})]
    assert parsed.errors == []


def test_device_timestamped_form_reads_ts_and_values():
    parsed = device({"ts": TS_MS, "values": {"temp": 21.5}})
    assert parsed.records == [RawRecord(0, "hp-1", TS, {"temp": 21.5})]


def test_device_timestamped_form_without_ts_uses_the_time_of_receipt():
    assert device({"values": {"temp": 1}}).records[0].ts == RECEIVED
    assert device({"ts": None, "values": {"temp": 1}}).records[0].ts == RECEIVED


def test_device_flat_form_treats_every_key_as_a_metric():
    # Only an object with "values" is in the timestamped form (as ThingsBoard reads it).
    parsed = device({"ts": TS_MS, "temp": 1})
    assert parsed.records == [RawRecord(0, "hp-1", RECEIVED, {"ts": TS_MS, "temp": 1})]


def test_device_batch_mixes_both_forms_in_document_order():
    parsed = device(
        [{"ts": TS_MS, "values": {"temp": 1}}, {"temp": 2}, {"ts": "2025-03-01T12:00:00Z", "values": {"a": 3}}]
    )
    assert [(r.index, r.ts, r.values) for r in parsed.records] == [
        (0, TS, {"temp": 1}),
        (1, RECEIVED, {"temp": 2}),
        (2, TS, {"a": 3}),
    ]


def test_device_passes_values_through_unvalidated():
    values = {"temp": "21.5", "mode": None, "list": [1], "nan": float("nan"), "big": 10**40}
    assert device({"values": values}).records[0].values == values


def test_device_batch_with_bad_elements_keeps_the_good_ones():
    parsed = device(
        [
            {"temp": 1},
            7,
            {"ts": TS_MS, "values": [1, 2]},
            {"ts": TS_MS, "values": {}},
            {},
            [{"temp": 2}],
            {"ts": "not a time", "values": {"temp": 3}},
            {"ts": True, "values": {"temp": 4}},
            {"ts": TS_MS, "values": {"temp": 5}},
        ]
    )
    assert [record.index for record in parsed.records] == [0, 8]
    errors = errors_by_index(parsed)
    assert sorted(errors) == [1, 2, 3, 4, 5, 6, 7]
    assert {i: errors[i].reason for i in (1, 2, 3, 4, 5)} == dict.fromkeys((1, 2, 3, 4, 5), RejectReason.INVALID_SHAPE)
    assert errors[1].detail == "expected an object, got a number"
    assert errors[2].detail == '"values" must be an object, got an array'
    assert errors[3].detail == errors[4].detail == "no values"
    assert errors[5].detail == "expected an object, got an array"
    assert errors[6].reason == errors[7].reason == RejectReason.INVALID_TIMESTAMP
    assert "not a time" in errors[6].detail
    assert all(error.device_uid == "hp-1" for error in parsed.errors)


def test_device_empty_batch_is_nothing_to_do():
    assert device([]).records == device([]).errors == []


@pytest.mark.parametrize(
    ("document", "kind"),
    [("temp=1", "a string"), (21.5, "a number"), (None, "null"), (True, "a boolean"), (b"\x01", "binary data")],
)
def test_device_document_of_the_wrong_type_is_rejected_whole(document, kind):
    error = rejection(lambda: device(document))
    assert error.reason == RejectReason.INVALID_SHAPE
    assert error.detail == f"expected an object or an array of objects, got {kind}"


def test_device_batch_over_the_record_bound_is_rejected_before_building_records():
    assert len(device([{"temp": 1}] * 3, max_records=3).records) == 3
    # Elements are not even looked at: the count alone decides.
    error = rejection(lambda: device([None] * 4, max_records=3))
    assert error.reason == RejectReason.TOO_MANY_RECORDS
    assert error.detail == "4 records, the limit is 3"


@pytest.mark.parametrize("uid", ["", "x" * 129, "hp\n1", "hp\ud8001"])
def test_device_with_an_invalid_topic_uid_refuses_each_record(uid):
    parsed = device([{"temp": 1}, {"temp": 2}], uid=uid)
    assert parsed.records == []
    assert [(e.index, e.reason, e.device_uid) for e in parsed.errors] == [
        (0, RejectReason.INVALID_SHAPE, ""),
        (1, RejectReason.INVALID_SHAPE, ""),
    ]


def test_device_uid_of_128_characters_is_accepted():
    assert device({"temp": 1}, uid="x" * 128).records[0].device_uid == "x" * 128


# --- gateway payloads -------------------------------------------------------------------------------------------


def test_gateway_payload_flattens_records_across_devices_in_document_order():
    parsed = gateway(
        {
            "hp-1": [{"ts": TS_MS, "values": {"temp": 1}}, {"ts": TS_MS + 1000, "values": {"temp": 2}}],
            "hp-2": {"ts": TS_MS, "values": {"temp": 3}},
            "hp-3": [{"temp": 4}],
        }
    )
    assert [(r.index, r.device_uid, r.values["temp"]) for r in parsed.records] == [
        (0, "hp-1", 1),
        (1, "hp-1", 2),
        (2, "hp-2", 3),
        (3, "hp-3", 4),
    ]
    assert parsed.records[1].ts == TS + timedelta(seconds=1)
    assert parsed.errors == []


def test_gateway_device_entry_of_the_wrong_type_is_refused_alone():
    parsed = gateway({"hp-1": [{"temp": 1}, 5], "hp-2": "on", "hp-3": [], "hp-4": {"temp": 2}})
    assert [(r.index, r.device_uid) for r in parsed.records] == [(0, "hp-1"), (3, "hp-4")]
    errors = errors_by_index(parsed)
    assert (errors[1].device_uid, errors[1].reason) == ("hp-1", RejectReason.INVALID_SHAPE)
    assert (errors[2].device_uid, errors[2].reason) == ("hp-2", RejectReason.INVALID_SHAPE)
    assert errors[2].detail == "expected an object or an array of objects for the device, got a string"


def test_gateway_invalid_device_uids_refuse_their_records_only():
    parsed = gateway({"": [{"temp": 1}, {"temp": 2}], "x" * 129: {"temp": 3}, "hp-1": {"temp": 4}})
    assert [(r.index, r.device_uid) for r in parsed.records] == [(3, "hp-1")]
    assert [(e.index, e.reason, e.device_uid) for e in parsed.errors] == [
        (0, RejectReason.INVALID_SHAPE, ""),
        (1, RejectReason.INVALID_SHAPE, ""),
        (2, RejectReason.INVALID_SHAPE, ""),
    ]
    assert parsed.errors[0].detail == "device uid is empty"
    assert parsed.errors[2].detail == "device uid is longer than 128 characters"


def test_gateway_messagepack_map_with_non_string_keys_refuses_those_devices():
    document = decode_payload(as_msgpack({1: {"temp": 1}, "hp-1": {"temp": 2}}), max_bytes=MAX_BYTES)
    parsed = gateway(document)
    assert [r.device_uid for r in parsed.records] == ["hp-1"]
    assert parsed.errors[0].detail == "device uid must be a string, got a number"


def test_gateway_record_bound_counts_records_of_all_devices():
    document = {"hp-1": [{"temp": 1}] * 2, "hp-2": {"temp": 2}, "hp-3": "garbage"}
    assert len(gateway(document, max_records=4).records) == 3
    error = rejection(lambda: gateway(document, max_records=3))
    assert error.reason == RejectReason.TOO_MANY_RECORDS
    assert error.detail == "4 records, the limit is 3"


@pytest.mark.parametrize("document", [[{"temp": 1}], "x", 5, None])
def test_gateway_document_that_is_not_an_object_is_rejected_whole(document):
    error = rejection(lambda: gateway(document))
    assert error.reason == RejectReason.INVALID_SHAPE
    assert error.detail.startswith("expected an object mapping device uids to payloads, got ")


# --- HTTP bodies ------------------------------------------------------------------------------------------------


def test_http_single_device_addressed_record():
    parsed = http({"device": "hp-1", "ts": "2025-03-01T12:00:00Z", "values": {"temp": 1}})
    assert parsed.records == [RawRecord(0, "hp-1", TS, {"temp": 1})]


def test_http_array_of_device_addressed_records_keeps_the_good_ones():
    parsed = http(
        [
            {"device": "hp-1", "ts": TS_MS, "values": {"temp": 1}},
            {"ts": TS_MS, "values": {"temp": 2}},
            {"device": 42, "values": {"temp": 3}},
            {"device": "hp-2", "ts": TS_MS},
            {"device": "hp-2", "values": "hot"},
            "hp-3",
            {"device": "", "values": {"temp": 4}},
            {"device": "hp-3", "values": {"temp": 5}},
        ]
    )
    assert [(r.index, r.device_uid, r.ts) for r in parsed.records] == [(0, "hp-1", TS), (7, "hp-3", RECEIVED)]
    errors = errors_by_index(parsed)
    assert sorted(errors) == [1, 2, 3, 4, 5, 6]
    assert all(error.reason == RejectReason.INVALID_SHAPE for error in parsed.errors)
    assert errors[1].detail == 'missing "device"'
    assert errors[2].detail == "device uid must be a string, got a number"
    assert (errors[3].device_uid, errors[3].detail) == ("hp-2", 'missing "values"')
    assert (errors[4].device_uid, errors[4].detail) == ("hp-2", '"values" must be an object, got a string')
    assert errors[5].detail == 'expected an object with "device" and "values", got a string'
    assert errors[6].detail == "device uid is empty"


def test_http_gateway_payload_is_read_like_a_gateway_topic():
    document = {"hp-1": [{"ts": TS_MS, "values": {"temp": 1}}], "hp-2": {"temp": 2}}
    assert http(document) == gateway(document)


def test_http_object_whose_device_is_not_a_string_is_read_as_a_gateway_payload():
    parsed = http({"device": 7, "values": {"temp": 1}})
    assert [r.device_uid for r in parsed.records] == ["values"]
    assert (parsed.errors[0].device_uid, parsed.errors[0].reason) == ("device", RejectReason.INVALID_SHAPE)


def test_http_record_bound_applies_to_arrays_and_gateway_payloads():
    assert rejection(lambda: http([{"device": "a", "values": {"t": 1}}] * 3, max_records=2)).reason == (
        RejectReason.TOO_MANY_RECORDS
    )
    assert rejection(lambda: http({"a": [{"t": 1}] * 3}, max_records=2)).reason == RejectReason.TOO_MANY_RECORDS
    assert http({"device": "a", "values": {"t": 1}}, max_records=1).records


@pytest.mark.parametrize(("document", "kind"), [("x", "a string"), (1, "a number"), (None, "null")])
def test_http_document_of_the_wrong_type_is_rejected_whole(document, kind):
    error = rejection(lambda: http(document))
    assert (error.reason, error.detail) == (
        RejectReason.INVALID_SHAPE,
        f"expected an object or an array of objects, got {kind}",
    )


# --- properties -------------------------------------------------------------------------------------------------

PARSERS = [
    lambda document: device(document),
    lambda document: gateway(document),
    lambda document: http(document),
]


def assert_indices_accounted_for(parsed) -> None:
    """Each flattened position is either a record or an error, once."""
    indices = sorted([r.index for r in parsed.records] + [e.index for e in parsed.errors])
    assert indices == list(range(len(indices)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise_anything_but_rejection(data):
    try:
        document = decode_payload(data, max_bytes=2048)
    except Rejection:
        return
    for parse in PARSERS:
        try:
            parsed = parse(document)
        except Rejection:
            continue
        assert_indices_accounted_for(parsed)


json_like = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_arbitrary_json_and_messagepack_encodings_never_raise_anything_but_rejection(document):
    payloads = [json.dumps(document).encode()]
    with contextlib.suppress(OverflowError):  # integers beyond 64 bits have no MessagePack encoding
        payloads.append(msgpack.packb(document))
    for payload in payloads:
        try:
            decoded = decode_payload(payload, max_bytes=1 << 20)
        except Rejection:
            continue
        for parse in PARSERS:
            with contextlib.suppress(Rejection):
                assert_indices_accounted_for(parse(decoded))
