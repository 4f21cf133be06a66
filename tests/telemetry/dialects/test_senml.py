"""The SenML parser: RFC 8428's own examples in JSON and (encoded with its integer labels) CBOR, arbitrary bytes,
and detection beside native JSON and MessagePack."""

import datetime
import json

import cbor2
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.telemetry.choices import Dialect, RejectReason
from apps.telemetry.ingest.dialects import detect
from apps.telemetry.ingest.dialects.senml import CBOR_LABELS, parse_senml
from apps.telemetry.ingest.records import Rejection

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
LABELS = {name: label for label, name in CBOR_LABELS.items()}


def utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def as_cbor(pack: list[dict]) -> bytes:
    """A pack in SenML CBOR (RFC 8428 section 6): the same records with the integer labels."""
    return cbor2.dumps([{LABELS.get(key, key): value for key, value in record.items()} for record in pack])


def parse(data: bytes, **options):
    return parse_senml(data, received_at=NOW, max_bytes=1 << 20, max_records=1000, **options)


def both_encodings(text: str):
    """The RFC's JSON verbatim, and the same pack in CBOR: both must give the same result."""
    json_result = parse(text.encode())
    cbor_result = parse(as_cbor(json.loads(text)))
    assert cbor_result == json_result
    return json_result


# --- RFC 8428 section 5.1, verbatim ---------------------------------------------------------------------------------

SINGLE_DATAPOINT = """[
     {"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}
   ]"""

MULTIPLE_DATAPOINTS = """[
     {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
     {"n":"current","u":"A","v":1.2}
   ]"""

MULTIPLE_DATAPOINTS_WITH_TIME = """[
     {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
      "bu":"A","bver":5,
      "n":"voltage","u":"V","v":120.1},
     {"n":"current","t":-5,"v":1.2},
     {"n":"current","t":-4,"v":1.3},
     {"n":"current","t":-3,"v":1.4},
     {"n":"current","t":-2,"v":1.5},
     {"n":"current","t":-1,"v":1.6},
     {"n":"current","v":1.7}
   ]"""

MULTIPLE_MEASUREMENTS = """[
     {"bn":"urn:dev:ow:10e2073a01080063:","bt":1.320067464e+09,
      "bu":"%RH","v":20},
     {"u":"lon","v":24.30621},
     {"u":"lat","v":60.07965},
     {"t":60,"v":20.3},
     {"u":"lon","t":60,"v":24.30622},
     {"u":"lat","t":60,"v":60.07965},
     {"t":120,"v":20.7},
     {"u":"lon","t":120,"v":24.30623},
     {"u":"lat","t":120,"v":60.07966},
     {"u":"%EL","t":150,"v":98},
     {"t":180,"v":21.2},
     {"u":"lon","t":180,"v":24.30628},
     {"u":"lat","t":180,"v":60.07967}
   ]"""

RESOLVED_DATA = """[
     {"n":"urn:dev:ow:10e2073a01080063:voltage","t":1.276020076e+09,
      "u":"V","v":120.1},
     {"n":"urn:dev:ow:10e2073a01080063:current","t":1.276020076e+09,
      "u":"A","v":1.2}
   ]"""

MULTIPLE_DATA_TYPES = """[
     {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
     {"n":"label","vs":"Machine Room"},
     {"n":"open","vb":false},
     {"n":"nfc-reader","vd":"aGkgCg"}
   ]"""


def test_a_single_datapoint_splits_at_the_last_separator_of_its_name():
    parsed = both_encodings(SINGLE_DATAPOINT)
    record = parsed.records[0]
    assert (record.device_uid, record.values, record.units, record.ts) == ("urn:dev:ow", {"10e2073a01080063": 23.1},
                                                                          {"10e2073a01080063": "Cel"}, NOW)  # fmt: skip
    on_topic = parse(SINGLE_DATAPOINT.encode(), device_uid="hp-1")
    assert (on_topic.records[0].device_uid, on_topic.records[0].values) == ("hp-1", {"10e2073a01080063": 23.1})
    no_separator = parse(b'[{"n": "temp", "v": 1}]')
    assert no_separator.records == [] and "no device part" in no_separator.errors[0].detail
    assert parse(b'[{"n": "temp", "v": 1}]', device_uid="hp-1").records[0].values == {"temp": 1}


def test_multiple_datapoints_resolve_the_base_name():
    parsed = both_encodings(MULTIPLE_DATAPOINTS)
    assert parsed.errors == []
    # One device at one instant: one record of both values, as a native record holds them.
    assert [(r.index, r.device_uid, r.values, r.units, r.ts) for r in parsed.records] == [
        (0, "urn:dev:ow:10e2073a01080063", {"voltage": 120.1, "current": 1.2}, {"voltage": "V", "current": "A"}, NOW),
    ]


def test_multiple_datapoints_resolve_base_time_unit_and_relative_times():
    parsed = both_encodings(MULTIPLE_DATAPOINTS_WITH_TIME)
    assert parsed.errors == []
    base = 1.276020076001e09
    earlier = zip(range(-5, 0), (1.2, 1.3, 1.4, 1.5, 1.6), strict=True)
    assert [(r.values, r.units, r.ts) for r in parsed.records] == [
        ({"voltage": 120.1}, {"voltage": "V"}, utc(base)),
        *[({"current": v}, {"current": "A"}, utc(base + t)) for t, v in earlier],
        ({"current": 1.7}, {"current": "A"}, utc(base)),
    ]
    assert {r.device_uid for r in parsed.records} == {"urn:dev:ow:10e2073a0108006"}


def test_multiple_measurements_named_by_their_base_name_alone_have_no_metric_part():
    parsed = both_encodings(MULTIPLE_MEASUREMENTS)
    assert parsed.records == []
    assert len(parsed.errors) == 13
    assert {(e.reason, e.device_uid) for e in parsed.errors} == {
        (RejectReason.INVALID_SHAPE, "urn:dev:ow:10e2073a01080063")
    }
    assert "no metric part" in parsed.errors[0].detail


def test_resolved_data():
    parsed = both_encodings(RESOLVED_DATA)
    assert [(r.device_uid, r.values, r.ts) for r in parsed.records] == [
        ("urn:dev:ow:10e2073a01080063", {"voltage": 120.1, "current": 1.2}, utc(1.276020076e09)),
    ]


def test_multiple_data_types_keep_numbers_and_booleans_and_refuse_strings_and_data():
    parsed = both_encodings(MULTIPLE_DATA_TYPES)
    assert [(r.values, r.units) for r in parsed.records] == [({"temp": 23.1, "open": False}, {"temp": "Cel"})]
    assert [(e.index, e.reason, e.metric) for e in parsed.errors] == [
        (1, RejectReason.UNSUPPORTED_VALUE, "label"),
        (3, RejectReason.UNSUPPORTED_VALUE, "nfc-reader"),
    ]


# --- resolution rules ---------------------------------------------------------------------------------------------


def test_base_value_base_sum_and_sums():
    pack = [
        {"bn": "dev-1/", "bv": 100, "bs": 1000, "n": "level", "v": 5},
        {"n": "energy", "s": 20},  # a sum alone is the metric's reading
        {"n": "flow", "v": 1, "s": 2},  # a value and a sum: the sum beside it
    ]
    parsed = both_encodings(json.dumps(pack))
    assert [r.values for r in parsed.records] == [{"level": 105, "energy": 1020, "flow": 101, "flow_sum": 1002}]


def test_a_record_of_base_fields_only_sets_them_for_the_next_ones():
    pack = [{"bn": "dev-1:", "bt": 1.7e9}, {"n": "temp", "v": 20, "t": 1}]
    parsed = both_encodings(json.dumps(pack))
    assert parsed.errors == []
    assert [(r.values, r.ts) for r in parsed.records] == [({"temp": 20}, utc(1.7e9 + 1))]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"n": "dev:x"}, RejectReason.INVALID_SHAPE),  # no value
        ({"n": "dev:x", "v": 1, "vb": True}, RejectReason.INVALID_SHAPE),  # two values
        ({"n": "dev:x y", "v": 1}, RejectReason.INVALID_SHAPE),  # a character SenML names may not have
        ({"bn": "", "n": "-dev:x", "v": 1}, RejectReason.INVALID_SHAPE),  # must start with a letter or digit
        ({"bn": "", "n": ":x", "v": 1}, RejectReason.INVALID_SHAPE),
        ({"n": 5, "v": 1}, RejectReason.INVALID_SHAPE),
        ({"n": "dev:x", "v": "12"}, RejectReason.INVALID_VALUE),
        ({"n": "dev:x", "v": True}, RejectReason.INVALID_VALUE),
        ({"n": "dev:x", "vb": 1}, RejectReason.INVALID_VALUE),
        ({"n": "dev:x", "vs": "on"}, RejectReason.UNSUPPORTED_VALUE),
        ({"n": "dev:x", "v": 1, "t": "now"}, RejectReason.INVALID_TIMESTAMP),
        ({"n": "dev:x", "v": 1, "t": 1e300}, RejectReason.INVALID_TIMESTAMP),
        ({"n": "dev:x", "v": 1, "t": -1e12}, RejectReason.INVALID_TIMESTAMP),
        ({"n": "dev:x", "v": 1, "u": 5}, RejectReason.INVALID_SHAPE),
        ("not a record", RejectReason.INVALID_SHAPE),
    ],
)
def test_a_bad_record_is_refused_alone(record, reason):
    pack = [{"bn": "dev:", "n": "a", "v": 1, "t": -1}, record, {"bn": "dev:", "n": "b", "v": 2, "t": -2}]
    parsed = parse(json.dumps(pack).encode())
    assert [r.values for r in parsed.records] == [{"a": 1}, {"b": 2}]
    assert [(e.index, e.reason) for e in parsed.errors] == [(1, reason)]


@pytest.mark.parametrize(
    "payload",
    [
        b"[",
        b'{"bn": "x"}',
        b'[{"bn": "dev:", "n": "x", "v": 1, "v_": 2}]',  # must-understand label
        b'[{"bver": 11, "bn": "dev:", "n": "x", "v": 1}]',
        b'[{"bn": 7, "n": "x", "v": 1}]',  # a base field every later record would be resolved with
        b'[{"bn": "dev:", "bt": "yesterday", "n": "x", "v": 1}]',
        b"\x81\xa1\x00",  # truncated CBOR
        as_cbor([{"n": "dev:x", "v": 1}]) + b"\x00",  # extra bytes
        cbor2.dumps([{0: "dev:x", 2: cbor2.CBORTag(35, "a+")}]) + b"",  # fine: a tagged value is refused alone
    ][:-1],
)
def test_a_pack_that_cannot_be_resolved_is_refused_whole(payload):
    with pytest.raises(Rejection):
        parse(payload)


def test_tagged_cbor_values_are_never_decoded_into_objects():
    parsed = parse(cbor2.dumps([{0: "dev:x", 2: cbor2.CBORTag(35, "a+")}, {0: "dev:y", 2: cbor2.CBORTag(1, 1e9)}]))
    assert parsed.records == []
    assert [(e.reason, e.detail) for e in parsed.errors] == [
        (RejectReason.INVALID_VALUE, "v must be a number, got a tagged CBOR value"),
        (RejectReason.INVALID_VALUE, "v must be a number, got a tagged CBOR value"),
    ]


# --- arbitrary input ----------------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["dev:", "dev/", "urn:dev:x:", "temp", "Cel", "a:b"]),
)
SENML_KEYS = st.sampled_from([*sorted(LABELS), "x_", "other"])


@given(st.lists(st.dictionaries(SENML_KEYS, SCALARS, max_size=6) | SCALARS, max_size=8))
@settings(max_examples=1500, deadline=None)
def test_arbitrary_senml_shaped_packs_never_raise_anything_but_a_rejection(pack):
    for data in (json.dumps(pack).encode(), cbor2.dumps(pack)):
        check_well_formed(data)


@given(st.binary(max_size=200))
@settings(max_examples=1500, deadline=None)
def test_arbitrary_bytes_never_raise_anything_but_a_rejection(data):
    check_well_formed(data)
    check_well_formed(b"\x81\xa1" + data)  # past the CBOR detection's first bytes


def check_well_formed(data: bytes) -> None:
    try:
        parsed = parse(data)
    except Rejection as rejection:
        assert isinstance(rejection.reason, RejectReason)
        return
    for record in parsed.records:
        assert type(record.device_uid) is str and record.device_uid.isprintable()
        assert record.ts.tzinfo is not None
        assert record.values and all(type(v) in (int, float, bool) for v in record.values.values())
        assert record.units is None or set(record.units) <= set(record.values)
    for error in parsed.errors:
        assert isinstance(error.reason, RejectReason)


# --- detection ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [SINGLE_DATAPOINT, MULTIPLE_DATAPOINTS, MULTIPLE_DATA_TYPES, RESOLVED_DATA])
def test_senml_is_detected_by_content_in_json_and_cbor(text):
    assert detect(text.encode()) == Dialect.SENML
    assert detect(as_cbor(json.loads(text))) == Dialect.SENML


def test_senml_is_detected_by_content_type():
    assert detect(b"anything", "application/senml+json") == Dialect.SENML
    assert detect(b"anything", "application/senml+cbor; charset=binary") == Dialect.SENML


NATIVE_PAYLOADS = [
    b'{"hp-1": [{"ts": 1, "values": {"t": 1}}]}',
    b'[{"device": "hp-1", "values": {"t": 1}}]',
    b'[{"ts": 1, "values": {"t": 1}}]',
    b'[{"v": 230, "t": 1}]',  # a flat batch of metrics that happen to be named like SenML labels
    b'  [ {"n": 5} ]',
    msgpack.packb([{"device": "hp-1", "ts": 1, "values": {"t": 1}}]),
    msgpack.packb({"hp-1": [{"ts": 1, "values": {"supply_temp": 42.0}}]}),
    msgpack.packb([{"ts": 1, "values": {"t": 1}}] * 20),
    msgpack.packb([{"v": 1}]),
    msgpack.packb({"a": 1, "b": 2}),
]


@pytest.mark.parametrize("payload", NATIVE_PAYLOADS)
def test_native_json_and_messagepack_stay_native(payload):
    assert detect(payload) == Dialect.NATIVE
    assert detect(payload, "application/json") == Dialect.NATIVE


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )
)
@settings(max_examples=1000, deadline=None)
def test_no_messagepack_document_with_printable_keys_is_taken_for_senml_cbor(document):
    def printable(value):
        if isinstance(value, dict):
            return all(printable(k) for k in value) and all(printable(v) for v in value.values())
        if isinstance(value, list):
            return all(printable(v) for v in value)
        return not isinstance(value, str) or value[:1].isalnum()

    # Native keys are device uids and metric keys, which start with a letter or digit (and so do strings here).
    if printable(document):
        assert detect(msgpack.packb(document)) != Dialect.SENML
