"""Register maps: the shipped ones load and validate; reads are coalesced into as few requests as the map allows."""

import pytest
from fieldwatch_agent.decoding import WordOrder
from fieldwatch_agent.registers import (
    Register,
    RegisterMap,
    RegisterTable,
    load_register_map,
    plan_reads,
    shipped_maps,
)
from pydantic import ValidationError


def test_the_seed_devices_maps_ship_with_the_package():
    assert {"nivus_flow", "energy_meter_3p", "heat_pump"} <= set(shipped_maps())
    flow = load_register_map("nivus_flow")
    assert {"flow_rate", "volume_m3", "water_temp", "status"} <= {
        r.metric for g in flow.poll_groups for r in g.registers
    }
    assert flow.order == "CDAB"
    assert load_register_map("energy_meter_3p").register("active_power_kw").scale == 0.001
    assert load_register_map("heat_pump").register("compressor_on").table == RegisterTable.DISCRETE


def _registers(*spec) -> tuple[Register, ...]:
    return tuple(Register(metric=f"m{i}", address=address, type=type_) for i, (address, type_) in enumerate(spec))


def test_adjacent_registers_are_one_request():
    spans = plan_reads(_registers((0, "float32"), (2, "float32"), (4, "uint16")), max_gap=0, max_per_read=125)
    assert [(s.start, s.count, len(s.registers)) for s in spans] == [(0, 5, 3)]


def test_a_gap_splits_unless_the_map_allows_reading_through_it():
    registers = _registers((0, "float32"), (10, "float32"))
    assert [(s.start, s.count) for s in plan_reads(registers, max_gap=0, max_per_read=125)] == [(0, 2), (10, 2)]
    assert [(s.start, s.count) for s in plan_reads(registers, max_gap=8, max_per_read=125)] == [(0, 12)]


def test_requests_stay_within_the_per_read_limit_and_tables_apart():
    registers = tuple(Register(metric=f"m{i}", address=2 * i, type="float32") for i in range(100))  # 200 registers
    spans = plan_reads(registers, max_gap=0, max_per_read=125)
    assert [(s.start, s.count) for s in spans] == [(0, 124), (124, 76)]  # a float32 is never cut in two
    mixed = (
        Register(metric="a", table="input", address=0, type="uint16"),
        Register(metric="b", table="holding", address=1, type="uint16"),
    )
    assert {(s.table, s.start) for s in plan_reads(mixed, max_gap=10, max_per_read=125)} == {
        (RegisterTable.HOLDING, 1),
        (RegisterTable.INPUT, 0),
    }


def test_slices_decode_each_member():
    registers = _registers((100, "uint16"), (101, "int32"))
    (span,) = plan_reads(registers, max_gap=0, max_per_read=125)
    words = [7, 0xFFFF, 0xFFFE]
    assert span.registers[0].decode(span.slice_for(span.registers[0], words), WordOrder.ABCD) == 7
    assert span.registers[1].decode(span.slice_for(span.registers[1], words), WordOrder.ABCD) == -2


def test_scale_and_offset_and_integer_noise():
    register = Register(metric="t", address=0, type="int16", scale=0.1, offset=-5)
    assert register.decode([455], WordOrder.ABCD) == 40.5  # not 40.50000000000001


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"metric": "Flow", "address": 0}, "String should match pattern"),
        ({"metric": "f", "address": 0, "table": "coil", "type": "float32"}, "holds bits"),
        ({"metric": "f", "address": 0, "table": "holding", "type": "bool"}, "holds registers"),
        ({"metric": "f", "address": 65535, "type": "float32"}, "runs past"),
    ],
)
def test_invalid_registers_are_refused(bad, message):
    with pytest.raises(ValidationError, match=message):
        Register.model_validate(bad)


def test_a_metric_mapped_twice_is_refused():
    group = {"name": "g", "interval_s": 1, "registers": [{"metric": "a", "address": 0}, {"metric": "a", "address": 2}]}
    with pytest.raises(ValidationError, match="mapped twice"):
        RegisterMap.model_validate({"model": "x", "poll_groups": [group]})
