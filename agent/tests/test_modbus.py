"""Polling a real Modbus TCP server (pymodbus's, on loopback) through the shipped register maps, with values
stored in every data type and word order: what the agent buffers is what the meter meant."""

import itertools
import math
import threading

import pytest
from agent_servers import encode_registers
from fieldwatch_agent.buffer import Buffer
from fieldwatch_agent.config import ModbusDeviceConfig, ModbusTcpSourceConfig
from fieldwatch_agent.decoding import DataType, WordOrder
from fieldwatch_agent.health import Health
from fieldwatch_agent.modbus import ModbusPoller
from fieldwatch_agent.registers import RegisterMap, load_register_map


def _poller(modbus, devices, buffer, maps, health=None):
    source = ModbusTcpSourceConfig(
        kind="modbus_tcp", name="test", host="127.0.0.1", port=modbus.port, timeout_s=0.5, retries=0, devices=devices
    )
    return ModbusPoller(source, maps, buffer, health or Health(), threading.Event())


@pytest.fixture
def buffer(tmp_path):
    buffer = Buffer(tmp_path / "buffer.sqlite3")
    yield buffer
    buffer.close()


def _poll_all(poller) -> dict:
    values = {}
    for planned in poller.groups:
        reading = poller.poll(planned)
        if reading is not None:
            values.setdefault(reading.device, {}).update(reading.values)
    return values


def test_shipped_maps_decode_the_seed_devices(modbus, buffer):
    # The Nivus-style transmitter (unit 1): CDAB floats, a float64 totalizer, a status word.
    for address, value in ((0, 12.5), (2, 0.82), (4, 0.41), (6, 14.25)):
        modbus.set_value("input", address, value, "float32", "CDAB", unit=1)
    modbus.set_value("input", 20, 123456.789, "float64", "CDAB", unit=1)
    modbus.set("holding", 100, [0b0001], unit=1)
    # The energy meter (unit 2): ABCD floats in W and Wh.
    for address, value in (
        (19000, 230.5),
        (19002, 231.0),
        (19004, 229.5),
        (19012, 12.0),
        (19014, 11.5),
        (19016, 12.5),
        (19026, 8312.0),
        (19050, 50.0),
        (19060, 1_234_567.0),
    ):
        modbus.set_value("holding", address, value, "float32", "ABCD", unit=2)
    # The heat pump (unit 3): int16 tenths, uint16 hundredths, a discrete input, a CDAB uint32.
    modbus.set_value("input", 500, 452, "int16", "ABCD", unit=3)
    modbus.set_value("input", 501, 387, "int16", "ABCD", unit=3)
    modbus.set_value("input", 502, -73, "int16", "ABCD", unit=3)
    modbus.set_value("input", 503, 312, "uint16", "ABCD", unit=3)
    modbus.set_value("input", 504, 405, "uint16", "ABCD", unit=3)
    modbus.set("discrete", 0, [1], unit=3)
    modbus.set_value("input", 3512, 98_765, "uint32", "CDAB", unit=3)

    maps = {name: load_register_map(name) for name in ("nivus_flow", "energy_meter_3p", "heat_pump")}
    devices = (
        ModbusDeviceConfig(uid="fm-a-001", unit_id=1, map="nivus_flow"),
        ModbusDeviceConfig(uid="em-a-001", unit_id=2, map="energy_meter_3p"),
        ModbusDeviceConfig(uid="hp-a-001", unit_id=3, map="heat_pump"),
    )
    health = Health()
    values = _poll_all(_poller(modbus, devices, buffer, maps, health))

    assert values["fm-a-001"] == {
        "flow_rate": 12.5,
        "flow_velocity_ms": pytest.approx(0.82),
        "level_m": pytest.approx(0.41),
        "water_temp": 14.25,
        "volume_m3": 123456.789,
        "status": 1,
    }
    assert values["em-a-001"] == pytest.approx(
        {
            "voltage_l1": 230.5,
            "voltage_l2": 231.0,
            "voltage_l3": 229.5,
            "current_l1": 12.0,
            "current_l2": 11.5,
            "current_l3": 12.5,
            "active_power_kw": 8.312,
            "frequency_hz": 50.0,
            "energy_import_kwh": 1234.567,
        }
    )
    assert values["hp-a-001"] == {
        "supply_temp": 45.2,
        "return_temp": 38.7,
        "outdoor_temp": -7.3,
        "power_kw": 3.12,
        "cop": 4.05,
        "compressor_on": 1,
        "energy_kwh": 98_765,
    }
    assert sum(health.poll_errors.values()) == 0
    assert buffer.stats().depth == 3 + 2 + 2  # one reading per poll group


VALUES = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123_456_789,
    "uint32": 3_456_789_012,
    "float32": 1.23,
    "float64": -9876.54321,
}


def test_every_type_in_every_order_through_a_real_server(modbus, buffer):
    registers, address = [], 0
    for (type_, value), order in itertools.product(VALUES.items(), WordOrder):
        metric = f"{type_}_{order.lower()}"
        registers.append(
            {"metric": metric, "table": "holding", "address": address, "type": type_, "order": order.value}
        )
        modbus.set_value("holding", address, value, type_, order.value)
        address += DataType(type_).registers
    register_map = RegisterMap.model_validate(
        {"model": "all", "poll_groups": [{"name": "all", "interval_s": 1, "registers": registers}]}
    )
    device = ModbusDeviceConfig(uid="dev-1", map="all")
    poller = _poller(modbus, (device,), buffer, {"all": register_map})
    assert len(poller.groups[0].spans) == 1  # 96 registers in one coalesced request

    values = _poll_all(poller)["dev-1"]
    for (type_, value), order in itertools.product(VALUES.items(), WordOrder):
        decoded = values[f"{type_}_{order.lower()}"]
        if type_ == "float32":
            assert math.isclose(decoded, value, rel_tol=1e-7), (type_, order, decoded)
        else:
            assert decoded == value, (type_, order, decoded)


def test_a_failed_span_costs_only_its_registers(modbus, buffer):
    register_map = RegisterMap.model_validate(
        {
            "model": "m",
            "poll_groups": [
                {
                    "name": "g",
                    "interval_s": 1,
                    "registers": [
                        {"metric": "good", "address": 0, "type": "uint16"},
                        {"metric": "beyond", "address": 30_000, "type": "uint16"},
                    ],
                }
            ],
        }
    )  # past the server's table
    modbus.set("holding", 0, [42])
    health = Health()
    poller = _poller(modbus, (ModbusDeviceConfig(uid="dev-1", map="m"),), buffer, {"m": register_map}, health)
    assert _poll_all(poller) == {"dev-1": {"good": 42}}
    assert health.poll_errors == {"dev-1": 1}


def test_nan_from_the_meter_is_counted_not_sent(modbus, buffer):
    register_map = RegisterMap.model_validate(
        {
            "model": "m",
            "poll_groups": [
                {
                    "name": "g",
                    "interval_s": 1,
                    "registers": [{"metric": "a", "address": 0}, {"metric": "b", "address": 2}],
                }
            ],
        }
    )
    modbus.set(
        "holding", 0, encode_registers(float("nan"), "float32", "ABCD") + encode_registers(2.5, "float32", "ABCD")
    )
    health = Health()
    poller = _poller(modbus, (ModbusDeviceConfig(uid="dev-1", map="m"),), buffer, {"m": register_map}, health)
    assert _poll_all(poller) == {"dev-1": {"b": 2.5}}
    assert health.poll_errors == {"dev-1": 1}


def test_an_unreachable_meter_is_counted_per_poll(buffer):
    class Nowhere:
        port = 1  # nothing listens on port 1 of loopback

    health = Health()
    register_map = load_register_map("heat_pump")
    poller = _poller(
        Nowhere, (ModbusDeviceConfig(uid="hp-1", map="heat_pump"),), buffer, {"heat_pump": register_map}, health
    )
    assert _poll_all(poller) == {}
    assert health.poll_errors["hp-1"] == sum(len(g.spans) for g in poller.groups)
    assert "hp-1" in health.failing
