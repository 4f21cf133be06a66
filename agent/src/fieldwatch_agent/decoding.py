"""Modbus registers -> numbers, for every data type and every word/byte order a meter may use.

Modbus itself only defines 16-bit registers, sent big-endian. A 32- or 64-bit value spread over several registers
has no standard layout, so vendors differ; the four layouts are named after where the bytes ``A B C D`` of the
big-endian value end up in the register stream:

* ``ABCD``: words high first, bytes high first (big-endian, the "Modbus default")
* ``CDAB``: words low first, bytes high first (word-swapped: the most common surprise)
* ``BADC``: words high first, bytes low first (byte-swapped within each word)
* ``DCBA``: words low first, bytes low first (little-endian)

Read with the wrong order a float32 of 1.23 comes out as about 3.9e-35 or 1.7e+31; ``fieldwatch-agent probe``
decodes a register in all four to find the right one. A 16-bit value has only the byte order (``AB``/``BA``): the
word order of ABCD/CDAB and BADC/DCBA does not apply to it.
"""

import struct
from enum import StrEnum


class WordOrder(StrEnum):
    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"

    @property
    def words_low_first(self) -> bool:
        return self in (WordOrder.CDAB, WordOrder.DCBA)

    @property
    def bytes_low_first(self) -> bool:
        return self in (WordOrder.BADC, WordOrder.DCBA)


class DataType(StrEnum):
    BOOL = "bool"  # a coil or discrete input: one bit, not a register
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def registers(self) -> int:
        """16-bit registers the type spans (a bool spans one bit of a coil table, counted as one)."""
        return _LAYOUT[self][1]

    @property
    def is_float(self) -> bool:
        return self in (DataType.FLOAT32, DataType.FLOAT64)


# struct format of the big-endian value and registers it spans.
_LAYOUT = {
    DataType.BOOL: ("", 1),
    DataType.INT16: (">h", 1),
    DataType.UINT16: (">H", 1),
    DataType.INT32: (">i", 2),
    DataType.UINT32: (">I", 2),
    DataType.FLOAT32: (">f", 2),
    DataType.FLOAT64: (">d", 4),
}


def decode_registers(registers: list[int] | tuple[int, ...], data_type: DataType, order: WordOrder) -> int | float:
    """The value held by ``registers`` (as read, 0..65535 each) in ``data_type`` laid out in ``order``."""
    if data_type is DataType.BOOL:
        raise ValueError("a bool is read from a coil or discrete input, not decoded from registers")
    fmt, count = _LAYOUT[data_type]
    if len(registers) != count:
        raise ValueError(f"{data_type} spans {count} registers, got {len(registers)}")
    words = list(registers)
    if order.words_low_first:
        words.reverse()
    raw = bytearray()
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise ValueError(f"register value {word} is not 16-bit")
        high, low = word >> 8, word & 0xFF
        raw += bytes((low, high)) if order.bytes_low_first else bytes((high, low))
    return struct.unpack(fmt, bytes(raw))[0]
