"""The line protocol parser: the spec's own examples, what the InfluxDB client library writes, arbitrary bytes."""

import datetime

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

from apps.telemetry.choices import Dialect, RejectReason
from apps.telemetry.ingest.dialects import detect
from apps.telemetry.ingest.dialects.line_protocol import parse_line_protocol
from apps.telemetry.ingest.records import RawRecord, RecordError, Rejection

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
SPEC_TS = 1556813561098000000  # the spec's example timestamp (ns)
SPEC_TIME = datetime.datetime(2019, 5, 2, 16, 12, 41, 98000, tzinfo=datetime.UTC)


def parse(text: str | bytes, **options):
    data = text.encode() if isinstance(text, str) else text
    return parse_line_protocol(data, received_at=NOW, max_bytes=1 << 20, max_records=1000, **options)


def only_record(text: str, **options) -> RawRecord:
    parsed = parse(text, **options)
    assert len(parsed.records) == 1, parsed
    return parsed.records[0]


# --- the spec's examples (docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/), with a device tag ------


def test_the_spec_example_line_with_tags_fields_and_timestamp():
    parsed = parse(f'myMeasurement,tag1=value1,tag2=value2,device=d1 fieldKey="fieldValue",n=1i {SPEC_TS}')
    assert parsed.records == [RawRecord(0, "d1", SPEC_TIME, {"n": 1})]
    assert parsed.errors == [
        RecordError(0, "d1", RejectReason.UNSUPPORTED_VALUE, "string field 'fieldValue': readings are numbers or "
                    "booleans", "fieldKey")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("myField=1.0", 1.0),
        ("myField=1", 1.0),  # a float without a decimal point
        ("myField=-1.234456e+78", -1.234456e78),
        ("myField=1e-5", 1e-5),
        ("myField=12485903i", 12485903),
        ("myField=-12485903i", -12485903),
        ("myField=12485903u", 12485903),
        ("myField=9223372036854775807i", 2**63 - 1),
        ("myField=18446744073709551615u", 2**64 - 1),
        *[(f"myField={word}", True) for word in ("t", "T", "true", "True", "TRUE")],
        *[(f"myField={word}", False) for word in ("f", "F", "false", "False", "FALSE")],
    ],
)
def test_the_spec_field_value_types(field, value):
    record = only_record(f"myMeasurement,device=d {field} {SPEC_TS}")
    assert record.values == {"myField": value}
    assert type(record.values["myField"]) is type(value)


def test_escaped_spaces_commas_and_equals_signs_in_names_tags_and_field_keys():
    record = only_record(r"my\ Measurement,tag\ Key1=tag\ Value1,device=dev\,1 field\=Key=100")
    assert (record.device_uid, record.values) == ("dev,1", {"field=Key": 100.0})
    record = only_record(r"my\ Measurement,device=d f=1", metric_naming="measurement_field")
    assert record.values == {"my Measurement_f": 1.0}


def test_escaped_quotes_and_backslashes_in_string_fields_keep_the_fields_apart():
    parsed = parse(r'myMeasurement,device=d fieldKey="\"string\" within, a = string",other=2 ' + str(SPEC_TS))
    assert parsed.records == [RawRecord(0, "d", SPEC_TIME, {"other": 2.0})]
    assert "'\"string\" within, a = string'" in parsed.errors[0].detail


def test_backslashes_literal_and_escaping_per_the_spec():
    # "my\Measurement" and "my\\Measurement" are both the measurement my\Measurement.
    for line in (r"my\Measurement,device=d f=1", r"my\\Measurement,device=d f=1"):
        assert only_record(line, metric_naming="measurement_field").values == {"my\\Measurement_f": 1.0}


def test_quotes_in_a_measurement_or_tag_are_part_of_it():
    record = only_record('"myMeasurement",device="d" f=1', metric_naming="measurement_field")
    assert (record.device_uid, record.values) == ('"d"', {'"myMeasurement"_f': 1.0})


def test_comments_and_blank_lines_are_skipped_and_indexes_are_line_positions():
    parsed = parse("# a comment\n\ncpu,device=a x=1 1\r\n   \ncpu,device=b x=2\n")
    assert [(r.index, r.device_uid) for r in parsed.records] == [(2, "a"), (4, "b")]
    assert parsed.records[1].ts == NOW  # no timestamp: the time of receipt


@pytest.mark.parametrize(
    ("precision", "stamp", "expected"),
    [
        ("ns", 1_700_000_000_123_456_789, datetime.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=datetime.UTC)),
        ("us", 1_700_000_000_123_456, datetime.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=datetime.UTC)),
        ("ms", 1_700_000_000_123, datetime.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=datetime.UTC)),
        ("s", 1_700_000_000, datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)),
        ("h", 472_222, datetime.datetime(2023, 11, 14, 22, 0, tzinfo=datetime.UTC)),
    ],
)
def test_precision(precision, stamp, expected):
    assert only_record(f"m,device=d x=1 {stamp}", precision=precision).ts == expected


def test_device_tag_is_configurable_and_falls_back_to_host():
    assert only_record("cpu,sensor=s1,host=h x=1", device_tag="sensor").device_uid == "s1"
    assert only_record("cpu,host=h x=1", device_tag="sensor").device_uid == "h"
    assert only_record("cpu,host=h,device=d x=1").device_uid == "d"
    # On a device topic the topic names the device: Telegraf's host tag is the machine, not the device.
    assert only_record("cpu,host=h x=1", device_uid="hp-1").device_uid == "hp-1"
    parsed = parse("cpu,site=x x=1")
    assert [(e.reason, e.detail) for e in parsed.errors] == [
        (RejectReason.INVALID_SHAPE, "no 'device' tag (nor 'host') names the device")
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("cpu", RejectReason.INVALID_SYNTAX),  # no field set
        ("cpu,device=d", RejectReason.INVALID_SYNTAX),
        ("cpu,device=d x", RejectReason.INVALID_SYNTAX),
        ("cpu,device=d x=", RejectReason.INVALID_SYNTAX),
        ("cpu,device=d =1", RejectReason.INVALID_SYNTAX),
        ("cpu,device x=1", RejectReason.INVALID_SYNTAX),
        ("cpu,device=d x=1,", RejectReason.INVALID_SYNTAX),
        ("cpu,device=d x=1.2.3", RejectReason.INVALID_SYNTAX),
        ("cpu,device=d x=inf", RejectReason.INVALID_SYNTAX),
        ("cpu,device=d x=1_000", RejectReason.INVALID_SYNTAX),
        ("cpu,device=d x=9223372036854775808i", RejectReason.INVALID_SYNTAX),
        ("cpu,device=d x=-1u", RejectReason.INVALID_SYNTAX),
        ('cpu,device=d x="unterminated', RejectReason.INVALID_SYNTAX),
        ("cpu,device=d x=1 123 456", RejectReason.INVALID_SYNTAX),
        ("cpu,device=d x=1 12.5", RejectReason.INVALID_TIMESTAMP),
        ("cpu,device=d x=1 -1", RejectReason.INVALID_TIMESTAMP),  # before 1970
        ("cpu,device=d x=1 99999999999999999999", RejectReason.INVALID_TIMESTAMP),  # after 2200
    ],
)
def test_a_bad_line_is_refused_alone(line, reason):
    parsed = parse(f"cpu,device=ok x=1 {SPEC_TS}\n{line}\ncpu,device=ok y=2 {SPEC_TS}")
    assert [r.values for r in parsed.records] == [{"x": 1.0}, {"y": 2.0}]
    assert [(e.index, e.reason) for e in parsed.errors] == [(1, reason)]


def test_a_line_that_is_not_utf8_is_refused_alone():
    parsed = parse(b"cpu,device=a x=1\ncpu,device=\xff x=1\ncpu,device=b x=1")
    assert [r.device_uid for r in parsed.records] == ["a", "b"]
    assert [(e.index, e.reason) for e in parsed.errors] == [(1, RejectReason.INVALID_SYNTAX)]


def test_whole_payload_refusals():
    with pytest.raises(Rejection) as empty:
        parse("# only a comment\n\n")
    assert empty.value.reason == RejectReason.INVALID_SHAPE
    with pytest.raises(Rejection) as many:
        parse_line_protocol(b"m,device=d x=1\n" * 3, received_at=NOW, max_bytes=1000, max_records=2)
    assert many.value.reason == RejectReason.TOO_MANY_RECORDS
    with pytest.raises(Rejection) as large:
        parse_line_protocol(b"m,device=d x=1", received_at=NOW, max_bytes=5, max_records=2)
    assert large.value.reason == RejectReason.TOO_LARGE


# --- what a maintained client library writes ------------------------------------------------------------------------


def test_points_serialized_by_the_influxdb_client_library_round_trip():
    point = (
        Point("my meas,ure")
        .tag("device", "hp 1,=x")
        .tag("host", "h")
        .field("t e,m=p", 1.5)
        .field("count", 3)
        .field("on", True)
        .field("label", 'a "quoted" \\ string, with = signs')
        .time(1_700_000_000_123_456_789, WritePrecision.NS)
    )
    parsed = parse(point.to_line_protocol())
    assert parsed.records == [
        RawRecord(
            0,
            "hp 1,=x",
            datetime.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=datetime.UTC),
            {"t e,m=p": 1.5, "count": 3, "on": True},
        )
    ]
    assert [(e.metric, e.reason) for e in parsed.errors] == [("label", RejectReason.UNSUPPORTED_VALUE)]


# Printable text (a device uid must be), without the backslash the client cannot write at the end of a key.
NAMES = st.text(
    st.characters(categories=("L", "N", "P", "S"), include_characters=" ", exclude_characters="\\"),
    min_size=1,
    max_size=12,
)


@given(
    measurement=NAMES,
    device=NAMES,
    key=NAMES,
    value=st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.booleans()),
    stamp=st.integers(0, 2**62),
)
@settings(max_examples=300, deadline=None)
def test_any_point_the_client_library_writes_parses_back(measurement, device, key, value, stamp):
    # The client drops a tag or field key ending in a backslash (it cannot be escaped): no backslashes here.
    if measurement[0] == "#":
        return  # the client does not escape a leading "#" (and warns): InfluxDB reads the line as a comment
    line = Point(measurement).tag("device", device).field(key, value).time(stamp, WritePrecision.NS)
    text = line.to_line_protocol()
    if not text or measurement.strip() != measurement or device.strip() != device:
        return  # the client writes nothing for empty keys and trims spaces at the ends of tags
    parsed = parse(text)
    assert parsed.errors == []
    assert [(r.device_uid, r.values) for r in parsed.records] == [(device, {key: value})]
    assert type(parsed.records[0].values[key]) is type(value) or isinstance(value, float)


# --- arbitrary input ----------------------------------------------------------------------------------------------


@given(st.binary(max_size=300))
@settings(max_examples=1500, deadline=None)
def test_arbitrary_bytes_never_raise_anything_but_a_rejection(data):
    check_well_formed(data)


LP_ALPHABET = st.sampled_from(list('abc xyz,=\\"\n\r#-.0123456789iuteTF_'))


@given(st.lists(LP_ALPHABET, max_size=120).map("".join))
@settings(max_examples=3000, deadline=None)
def test_arbitrary_line_protocol_shaped_text_never_raises_anything_but_a_rejection(text):
    check_well_formed(text.encode())
    check_well_formed(f"m,device=d {text}".encode())


def check_well_formed(data: bytes) -> None:
    try:
        parsed = parse(data, precision="ms")
    except Rejection as rejection:
        assert isinstance(rejection.reason, RejectReason)
        return
    lines = data.split(b"\n")
    for record in parsed.records:
        assert 0 <= record.index < len(lines)
        assert type(record.device_uid) is str and record.device_uid and record.device_uid.isprintable()
        assert record.ts.tzinfo is not None
        assert record.values and all(type(v) in (int, float, bool) for v in record.values.values())
    for error in parsed.errors:
        assert isinstance(error.reason, RejectReason) and 0 <= error.index < len(lines)


# --- detection ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"cpu,host=a usage=1",
        b"cpu usage=1 1700000000000000000\ncpu usage=2",
        b"  \n_internal,device=d x=1i",
        b'weather,location=us-midwest temperature=82,desc="x y" 1465839830100400200',
    ],
)
def test_line_protocol_is_detected_by_content(payload):
    assert detect(payload) == Dialect.LINE_PROTOCOL


@pytest.mark.parametrize(
    "payload",
    [
        b'{"ts": 1, "values": {"t": 1}}',
        b'[{"device": "hp-1", "values": {"t": 1}}]',
        msgpack.packb({"hp-1": [{"ts": 1, "values": {"t": 1.5}}]}),
        msgpack.packb({"supply_temp": 1.0}),
        msgpack.packb("just a string"),
        b"\x00not a payload",
        b"cpu",  # no field set: not line protocol, refused as what it is (native garbage)
        b"cpu,host=a",
    ],
)
def test_native_payloads_are_not_taken_for_line_protocol(payload):
    assert detect(payload) == Dialect.NATIVE
