"""The Sparkplug B parser, pure: topics, the metric-name normalisation, datatypes, the birth state, sequence numbers,
deaths. Payloads come from pysparkplug (an independent encoder); the decoder is fuzzed with hypothesis."""

import datetime

import pysparkplug as spb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.telemetry.choices import RejectReason
from apps.telemetry.ingest.dialects import sparkplug
from apps.telemetry.ingest.dialects.sparkplug import NodeState, UidTemplates, metric_key, parse_message, parse_topic, pb
from apps.telemetry.ingest.records import ParsedPayload, Rejection
from apps.telemetry.ingest.validation import is_valid_metric_key
from tests.telemetry.sparkplug.edge_node import metric

DT = spb.DataType
NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
TS = int(NOW.timestamp() * 1000) - 60_000


def read(payload: bytes, topic: str, node: NodeState | None = None, uids: UidTemplates | None = None):
    return parse_message(
        payload,
        parse_topic(topic),
        node,
        received_at=NOW,
        max_bytes=256 * 1024,
        max_records=1000,
        uids=uids or UidTemplates(),
    )


def born(*device_metrics, node_metrics=(), bd_seq=5) -> NodeState:
    """The state after an NBIRTH (seq 0) and a DBIRTH of ``pump`` (seq 1)."""
    bd = metric("bdSeq", DT.INT64, bd_seq, ts=TS)
    state = read(spb.NBirth(timestamp=TS, seq=0, metrics=(bd, *node_metrics)).encode(), "spBv1.0/g/NBIRTH/gw").state
    birth = spb.DBirth(timestamp=TS, seq=1, metrics=device_metrics).encode()
    return read(birth, "spBv1.0/g/DBIRTH/gw/pump", state.node).state.node


def values(parsed: ParsedPayload) -> dict:
    return {(r.device_uid, key): v for r in parsed.records for key, v in r.values.items()}


# --- topics and identity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["spBv1.0/g/NDATA", "spBv1.0/g/DDATA/gw", "spBv1.0/g/NDATA/gw/extra", "spBv1.0/g/NCMD/gw", "spBv1.0//NDATA/gw",
     "spBv1.0/STATE/host", "spAv1.0/g/NDATA/gw", "spBv1.0/g/DDATA/gw/dev/more"],
)  # fmt: skip
def test_topics_that_are_not_telemetry_are_refused(topic):
    with pytest.raises(Rejection) as refused:
        parse_topic(topic)
    assert refused.value.reason == RejectReason.INVALID_TOPIC


def test_commands_and_state_pass_through_the_listener_unread():
    assert sparkplug.is_passing_traffic("spBv1.0/g/NCMD/gw")
    assert sparkplug.is_passing_traffic("spBv1.0/g/DCMD/gw/dev")
    assert sparkplug.is_passing_traffic("spBv1.0/STATE/fieldwatch")
    assert not sparkplug.is_passing_traffic("spBv1.0/g/DDATA/gw/dev")


def test_device_uids_follow_the_configured_templates():
    state = born(metric("Temp", DT.FLOAT, 1.5, alias=2, ts=TS))
    payload = spb.DData(timestamp=TS, seq=2, metrics=(metric(None, DT.FLOAT, 2.5, alias=2, ts=TS),)).encode()
    assert values(read(payload, "spBv1.0/g/DDATA/gw/pump", state)) == {("gw.pump", "temp"): 2.5}
    custom = UidTemplates(node="{group_id}-{edge_node_id}", device="{device_id}")
    assert values(read(payload, "spBv1.0/g/DDATA/gw/pump", state, custom)) == {("pump", "temp"): 2.5}


@pytest.mark.parametrize(
    ("name", "key"),
    [("Inputs/Temperature", "inputs_temperature"), ("SupplyTemp", "supply_temp"), ("HTTPPort", "http_port"),
     ("Température °C", "temperature_c"), ("3 Phase/Current L1", "m_3_phase_current_l1"), ("a..b", "a_b"),
     ("___", None), ("温度", None), ("x" * 100, "x" * 63)],
)  # fmt: skip
def test_metric_names_normalise_to_metric_keys(name, key):
    assert metric_key(name) == key


@given(st.text(max_size=200))
def test_every_normalised_name_is_a_valid_metric_key(name):
    key = metric_key(name)
    assert key is None or is_valid_metric_key(key)


# --- datatypes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "value"),
    [(DT.INT8, -128), (DT.INT8, 127), (DT.INT16, -2), (DT.INT32, -(2**31)), (DT.INT64, -(2**63)), (DT.UINT8, 255),
     (DT.UINT16, 65535), (DT.UINT32, 2**32 - 1), (DT.UINT64, 2**64 - 1), (DT.FLOAT, 1.5), (DT.DOUBLE, -2.25),
     (DT.BOOLEAN, True), (DT.BOOLEAN, False)],
)  # fmt: skip
def test_numbers_and_booleans_become_readings_with_their_value(datatype, value):
    payload = spb.NBirth(timestamp=TS, seq=0, metrics=(metric("V", datatype, value, alias=1, ts=TS),)).encode()
    parsed = read(payload, "spBv1.0/g/NBIRTH/gw")
    assert parsed.errors == []
    assert values(parsed) == {("gw", "v"): value}


def test_a_datetime_becomes_epoch_seconds():
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    payload = spb.NBirth(timestamp=TS, seq=0, metrics=(metric("Last Service", DT.DATETIME, moment, ts=TS),)).encode()
    assert values(read(payload, "spBv1.0/g/NBIRTH/gw")) == {("gw", "last_service"): moment.timestamp()}


@pytest.mark.parametrize(
    ("datatype", "value"),
    [(DT.STRING, "on"), (DT.TEXT, "long text"), (DT.UUID, "0b1e-..."), (DT.BYTES, b"\x00\x01"),
     (DT.INT16_ARRAY, (1, 2)), (DT.STRING_ARRAY, ("a",))],
)  # fmt: skip
def test_strings_bytes_and_arrays_are_refused_per_metric(datatype, value):
    good = metric("Temp", DT.FLOAT, 3.5, ts=TS)
    payload = spb.NBirth(timestamp=TS, seq=0, metrics=(metric("Odd", datatype, value, ts=TS), good)).encode()
    parsed = read(payload, "spBv1.0/g/NBIRTH/gw")
    assert values(parsed) == {("gw", "temp"): 3.5}  # the neighbour goes through
    [error] = parsed.errors
    assert (error.reason, error.metric, error.index) == (RejectReason.SPARKPLUG_UNSUPPORTED_TYPE, "odd", 0)


def test_datasets_and_templates_are_refused_per_metric():
    message = pb.Payload(timestamp=TS, seq=0)
    message.metrics.add(name="Table", datatype=pb.DataType.Value("DataSet")).dataset_value.columns.append("a")
    message.metrics.add(name="Motor", datatype=pb.DataType.Value("Template")).template_value.version = "1"
    parsed = read(message.SerializeToString(), "spBv1.0/g/NBIRTH/gw")
    assert [(e.reason, e.metric) for e in parsed.errors] == [
        (RejectReason.SPARKPLUG_UNSUPPORTED_TYPE, "table"),
        (RejectReason.SPARKPLUG_UNSUPPORTED_TYPE, "motor"),
    ]


def test_null_values_and_protocol_metrics():
    message = pb.Payload(timestamp=TS, seq=0)
    message.metrics.add(name="bdSeq", datatype=pb.DataType.Value("Int64"), long_value=3)
    message.metrics.add(name="Node Control/Rebirth", datatype=pb.DataType.Value("Boolean"), boolean_value=False)
    message.metrics.add(name="Pressure", datatype=pb.DataType.Value("Float"), is_null=True)
    parsed = read(message.SerializeToString(), "spBv1.0/g/NBIRTH/gw")
    assert parsed.records == []  # bdSeq and Node Control/* are the protocol's, not readings
    assert [(e.reason, e.metric) for e in parsed.errors] == [(RejectReason.INVALID_VALUE, "pressure")]
    assert parsed.state.node.bd_seq == 3


# --- aliases, births and sequence numbers ---------------------------------------------------------------------------


def test_data_by_alias_resolves_through_the_birth_and_unknown_aliases_ask_for_a_rebirth():
    state = born(metric("Temp", DT.INT16, 20, alias=2, ts=TS), metric("On", DT.BOOLEAN, True, alias=3, ts=TS))
    assert state.devices == {"pump"} and state.seq == 1
    data = spb.DData(
        timestamp=TS,
        seq=2,
        metrics=(metric(None, DT.INT16, -3, alias=2, ts=TS + 1), metric(None, DT.INT16, 1, alias=99, ts=TS + 1)),
    ).encode()  # without datatypes, as pysparkplug (and the spec) send data
    parsed = read(data, "spBv1.0/g/DDATA/gw/pump", state)
    assert values(parsed) == {("gw.pump", "temp"): -3}
    [error] = parsed.errors
    assert (error.reason, error.metric) == (RejectReason.SPARKPLUG_UNKNOWN_ALIAS, "alias 99")
    assert parsed.state.rebirth and parsed.state.node.seq == 2


def test_an_alias_of_another_device_is_unknown_here():
    state = born(metric("Temp", DT.INT16, 20, alias=2, ts=TS))
    data = spb.DData(timestamp=TS, seq=2, metrics=(metric(None, DT.INT16, 1, alias=2, ts=TS),)).encode()
    birth = spb.DBirth(timestamp=TS, seq=2, metrics=()).encode()
    state = read(birth, "spBv1.0/g/DBIRTH/gw/fan", state).state.node
    parsed = read(data, "spBv1.0/g/DDATA/gw/fan", dataclasses_replace(state, seq=2))
    assert [e.reason for e in parsed.errors] == [RejectReason.SPARKPLUG_UNKNOWN_ALIAS]


def dataclasses_replace(state, **changes):
    import dataclasses

    return dataclasses.replace(state, **changes)


@pytest.mark.parametrize(
    ("state", "why"),
    [(None, "no current NBIRTH"), (NodeState(), "no current NBIRTH"), ("offline-device", "no current DBIRTH")],
)
def test_data_without_a_current_birth_is_refused_whole_and_asks_for_a_rebirth(state, why):
    if state == "offline-device":
        state = dataclasses_replace(born(metric("Temp", DT.INT16, 20, alias=2, ts=TS)), devices=frozenset())
    data = spb.DData(timestamp=TS, seq=2, metrics=(metric(None, DT.INT16, 5, alias=2, ts=TS),)).encode()
    parsed = read(data, "spBv1.0/g/DDATA/gw/pump", state)
    assert parsed.records == []
    [error] = parsed.errors
    assert error.reason == RejectReason.SPARKPLUG_UNKNOWN_ALIAS and why in error.detail
    assert why in parsed.state.rebirth


def test_a_sequence_gap_asks_for_a_rebirth_but_keeps_the_data_and_a_repeat_is_no_gap():
    state = born(metric("Temp", DT.INT16, 20, alias=2, ts=TS))
    gap = spb.DData(timestamp=TS, seq=5, metrics=(metric(None, DT.INT16, 7, alias=2, ts=TS),)).encode()
    parsed = read(gap, "spBv1.0/g/DDATA/gw/pump", state)
    assert "expected seq 2, got 5" in parsed.state.rebirth
    assert values(parsed) == {("gw.pump", "temp"): 7}
    repeat = spb.DBirth(timestamp=TS, seq=1, metrics=(metric("Temp", DT.INT16, 20, alias=2, ts=TS),)).encode()
    assert read(repeat, "spBv1.0/g/DBIRTH/gw/pump", state).state.rebirth == ""  # redelivered at least once


def test_the_sequence_wraps_at_256():
    state = dataclasses_replace(born(metric("Temp", DT.INT16, 20, alias=2, ts=TS)), seq=255)
    data = spb.DData(timestamp=TS, seq=0, metrics=(metric(None, DT.INT16, 7, alias=2, ts=TS),)).encode()
    assert read(data, "spBv1.0/g/DDATA/gw/pump", state).state.rebirth == ""


def test_an_nbirth_forgets_the_previous_session():
    state = born(metric("Temp", DT.INT16, 20, alias=2, ts=TS))
    again = read(spb.NBirth(timestamp=TS, seq=0, metrics=()).encode(), "spBv1.0/g/NBIRTH/gw", state).state
    assert again.node.devices == frozenset() and again.node.aliases == {} and again.defined


def test_state_survives_its_json_form():
    state = born(metric("Temp", DT.INT16, 20, alias=2, ts=TS), node_metrics=(metric("Up", DT.UINT32, 1, alias=1),))
    restored = NodeState.from_json(online=True, bd_seq=state.bd_seq, seq=state.seq, definitions=state.as_json())
    assert restored == state


# --- deaths ---------------------------------------------------------------------------------------------------------


def test_ndeath_takes_the_node_and_its_devices_offline_and_a_stale_one_is_ignored():
    state = born(metric("Temp", DT.INT16, 20, alias=2, ts=TS), bd_seq=5)
    stale = spb.NDeath(timestamp=None, bd_seq_metric=metric("bdSeq", DT.INT64, 4)).encode()
    ignored = read(stale, "spBv1.0/g/NDEATH/gw", state).state
    assert ignored.liveness == [] and ignored.node == state
    death = spb.NDeath(timestamp=None, bd_seq_metric=metric("bdSeq", DT.INT64, 5)).encode()
    effect = read(death, "spBv1.0/g/NDEATH/gw", state).state
    assert [(e.device_uid, e.alive) for e in effect.liveness] == [("gw", False), ("gw.pump", False)]
    assert not effect.node.online and effect.node.devices == frozenset()


def test_ddeath_takes_one_device_offline():
    state = born(metric("Temp", DT.INT16, 20, alias=2, ts=TS))
    effect = read(spb.DDeath(timestamp=TS, seq=2).encode(), "spBv1.0/g/DDEATH/gw/pump", state).state
    assert [(e.device_uid, e.alive) for e in effect.liveness] == [("gw.pump", False)]
    assert effect.node.devices == frozenset() and effect.rebirth == ""


# --- bounds and hostile bytes ----------------------------------------------------------------------------------------


def test_bounds():
    payload = spb.NBirth(timestamp=TS, seq=0, metrics=tuple(metric(f"m{i}", DT.FLOAT, 1.0) for i in range(3))).encode()
    with pytest.raises(Rejection) as refused:
        parse_message(payload, parse_topic("spBv1.0/g/NBIRTH/gw"), None, received_at=NOW, max_bytes=10, max_records=9,
                      uids=UidTemplates())  # fmt: skip
    assert refused.value.reason == RejectReason.TOO_LARGE
    with pytest.raises(Rejection) as refused:
        parse_message(payload, parse_topic("spBv1.0/g/NBIRTH/gw"), None, received_at=NOW, max_bytes=10**6,
                      max_records=2, uids=UidTemplates())  # fmt: skip
    assert refused.value.reason == RejectReason.TOO_MANY_RECORDS


def test_garbage_is_unparseable():
    with pytest.raises(Rejection) as refused:
        read(b'{"ts": 1, "values": {}}', "spBv1.0/g/NDATA/gw")
    assert refused.value.reason == RejectReason.SPARKPLUG_UNPARSEABLE


TOPICS = st.sampled_from(
    ["spBv1.0/g/NBIRTH/gw", "spBv1.0/g/NDATA/gw", "spBv1.0/g/NDEATH/gw", "spBv1.0/g/DBIRTH/gw/pump",
     "spBv1.0/g/DDATA/gw/pump", "spBv1.0/g/DDEATH/gw/pump"]
)  # fmt: skip
STATES = st.sampled_from([None, NodeState(), "born"])


def _state(choice):
    return born(metric("Temp", DT.INT16, 20, alias=2, ts=TS)) if choice == "born" else choice


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2048), TOPICS, STATES)
def test_arbitrary_bytes_never_raise_anything_but_a_rejection(payload, topic, state):
    try:
        parsed = read(payload, topic, _state(state))
    except Rejection as rejection:
        assert isinstance(rejection.reason, RejectReason)
        return
    assert isinstance(parsed, ParsedPayload)
    for record in parsed.records:
        assert all(is_valid_metric_key(key) for key in record.values)


_VALUE_FIELDS = {
    "int_value": st.integers(0, 2**32 - 1),
    "long_value": st.integers(0, 2**64 - 1),
    "float_value": st.floats(width=32, allow_nan=True),
    "double_value": st.floats(allow_nan=True),
    "boolean_value": st.booleans(),
    "string_value": st.text(max_size=20),
    "bytes_value": st.binary(max_size=20),
}


@st.composite
def metrics(draw):
    fields = {}
    if draw(st.booleans()):
        fields["name"] = draw(st.text(max_size=30))
    if draw(st.booleans()):
        fields["alias"] = draw(st.integers(0, 2**64 - 1))
    if draw(st.booleans()):
        fields["datatype"] = draw(st.integers(0, 40))
    if draw(st.booleans()):
        fields["timestamp"] = draw(st.integers(0, 2**64 - 1))
    if draw(st.booleans()):
        fields["is_null"] = draw(st.booleans())
    value_field = draw(st.sampled_from([None, *_VALUE_FIELDS]))
    if value_field:
        fields[value_field] = draw(_VALUE_FIELDS[value_field])
    return fields


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(metrics(), max_size=8),
    st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    st.one_of(st.none(), st.just(TS), st.integers(0, 2**64 - 1)),
    TOPICS,
    STATES,
)
def test_well_formed_payloads_with_arbitrary_metrics_never_raise_anything_but_a_rejection(
    fields, seq, timestamp, topic, state
):
    message = pb.Payload()
    if timestamp is not None:
        message.timestamp = timestamp
    if seq is not None:
        message.seq = seq
    for each in fields:
        message.metrics.add(**each)
    try:
        parsed = read(message.SerializeToString(), topic, _state(state))
    except Rejection:
        return
    for record in parsed.records:
        assert all(is_valid_metric_key(key) for key in record.values)
        assert all(type(value) in (int, float, bool) for value in record.values.values())
    assert all(isinstance(error.reason, RejectReason) for error in parsed.errors)
