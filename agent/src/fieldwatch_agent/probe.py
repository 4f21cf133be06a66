"""Word order found, not guessed: read one multi-register value and decode it in all four orders.

The order whose value falls inside the metric's plausible range is the meter's. The range comes from the command
line, else from the register map (whose ranges are copied from the Fieldwatch device type: the platform's API has
no device-type endpoint a gateway key may read). A live value sits inside its range in exactly one order far more
often than not (tiny nonzero magnitudes, the typical garbage of a swap, do not count); when two orders fit (a
value near 0, or a byte-symmetric pattern) the probe says so - read again while the value moves.
"""

from dataclasses import dataclass

from fieldwatch_agent.decoding import DataType, WordOrder, decode_registers


@dataclass(frozen=True)
class ProbeResult:
    order: WordOrder
    value: float | int
    plausible: bool


def decode_all_orders(
    words: list[int],
    data_type: DataType,
    *,
    low: float | None,
    high: float | None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> list[ProbeResult]:
    results = []
    for order in WordOrder:
        value = decode_registers(words, data_type, order) * scale + offset
        plausible = _in_range(value, low, high) and not _denormal_garbage(value, low, high)
        results.append(ProbeResult(order, value, plausible))
    return results


def _in_range(value: float, low: float | None, high: float | None) -> bool:
    return value == value and (low is None or value >= low) and (high is None or value <= high)


def _denormal_garbage(value: float, low: float | None, high: float | None) -> bool:
    """A swapped float32 often lands at 1e-25 or 1e-41: inside a range from 0, yet no meter reports it. Nonzero
    magnitudes a million times below the range's scale are taken as garbage."""
    scale = max(abs(low or 0.0), abs(high or 0.0), 1.0)
    return value != 0 and abs(value) < scale * 1e-6


def verdict(results: list[ProbeResult]) -> str:
    fitting = [r.order for r in results if r.plausible]
    if len(fitting) == 1:
        return f"order: {fitting[0]}"
    if not fitting:
        return "no order gives a plausible value: check the address, the data type, the scale and the range"
    return f"ambiguous: {', '.join(fitting)} all fit the range; probe again while the value changes"
