"""Word and byte order: every data type decodes in every order, checked against an encoder written independently
(agent_servers.encode_registers places bytes by the letters of the order's name) and against pymodbus's own."""

import math
import struct

import pytest
from agent_servers import encode_registers
from fieldwatch_agent.decoding import DataType, WordOrder, decode_registers
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

ORDERS = st.sampled_from(list(WordOrder))
RANGES = {
    DataType.INT16: st.integers(-(2**15), 2**15 - 1),
    DataType.UINT16: st.integers(0, 2**16 - 1),
    DataType.INT32: st.integers(-(2**31), 2**31 - 1),
    DataType.UINT32: st.integers(0, 2**32 - 1),
    DataType.FLOAT32: st.floats(width=32, allow_nan=False),
    DataType.FLOAT64: st.floats(allow_nan=False),
}


@pytest.mark.parametrize("data_type", list(RANGES))
def test_every_type_round_trips_in_every_order(data_type):
    @given(value=RANGES[data_type], order=ORDERS)
    def round_trip(value, order):
        registers = encode_registers(value, data_type.value, order.value)
        assert len(registers) == data_type.registers
        assert decode_registers(registers, data_type, order) == value

    round_trip()


@given(value=st.floats(width=32, allow_nan=True), order=ORDERS)
def test_nan_stays_nan(value, order):
    decoded = decode_registers(encode_registers(value, "float32", order.value), DataType.FLOAT32, order)
    assert math.isnan(decoded) == math.isnan(value)


@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_pymodbus_big_and_little_word_order_are_abcd_and_cdab(value):
    """pymodbus's own encoder knows only the word order: its big is ABCD, its little is CDAB."""
    for word_order, order in (("big", WordOrder.ABCD), ("little", WordOrder.CDAB)):
        registers = ModbusClientMixin.convert_to_registers(value, ModbusClientMixin.DATATYPE.FLOAT32, word_order)
        assert decode_registers(registers, DataType.FLOAT32, order) == value


def test_1_23_stored_as_cdab_decodes_to_1_23_and_to_garbage_in_the_other_orders():
    registers = encode_registers(1.23, "float32", "CDAB")  # [0x70A4, 0x3F9D]
    as_float32 = struct.unpack(">f", struct.pack(">f", 1.23))[0]
    assert decode_registers(registers, DataType.FLOAT32, WordOrder.CDAB) == as_float32
    garbage = {order: decode_registers(registers, DataType.FLOAT32, order) for order in WordOrder}
    assert garbage[WordOrder.ABCD] == pytest.approx(4.0666e29, rel=1e-4)
    assert garbage[WordOrder.BADC] == pytest.approx(-5.2175e-17, rel=1e-4)
    assert garbage[WordOrder.DCBA] == pytest.approx(-2.5364e-21, rel=1e-4)


def test_known_layouts_by_hand():
    # 0x41200000 is 10.0 as float32: bytes A=41 B=20 C=00 D=00.
    assert decode_registers([0x4120, 0x0000], DataType.FLOAT32, WordOrder.ABCD) == 10.0
    assert decode_registers([0x0000, 0x4120], DataType.FLOAT32, WordOrder.CDAB) == 10.0
    assert decode_registers([0x2041, 0x0000], DataType.FLOAT32, WordOrder.BADC) == 10.0
    assert decode_registers([0x0000, 0x2041], DataType.FLOAT32, WordOrder.DCBA) == 10.0
    assert decode_registers([0xFFFE], DataType.INT16, WordOrder.ABCD) == -2
    assert decode_registers([0xFEFF], DataType.INT16, WordOrder.DCBA) == -2


def test_wrong_register_count_is_an_error():
    with pytest.raises(ValueError, match="spans 2 registers"):
        decode_registers([1], DataType.FLOAT32, WordOrder.ABCD)
    with pytest.raises(ValueError, match="not 16-bit"):
        decode_registers([0x10000, 0], DataType.UINT32, WordOrder.ABCD)
