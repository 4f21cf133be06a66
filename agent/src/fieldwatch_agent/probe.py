"""Word order found, not guessed: read one multi-register value and decode it in all four orders.

The order whose value falls inside the metric's plausible range is the meter's. The range comes from the command
line, else from the device's type in Fieldwatch (``--platform`` with a personal read token: the registry API, which
a gateway key may not read), else from the register map (whose ranges copy the shipped device types). A live
value sits inside its range in exactly one order far more often than not (tiny nonzero magnitudes, the typical
garbage of a swap, do not count); when two orders fit (a value near 0, or a byte-symmetric pattern) the probe says
so - read again while the value moves.
"""

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote

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


# --- the range from Fieldwatch ------------------------------------------------------------------------------------


class PlatformError(ValueError):
    """Fieldwatch could not say the metric's range: told to the technician as it is, nothing probed."""


def metric_range_from_platform(
    base_url: str, token: str, device: str, metric: str, *, timeout: float = 10.0, ca_file: str | None = None
) -> tuple[float | None, float | None]:
    """``metric``'s plausible range as the device's type defines it in Fieldwatch: ``GET /api/v1/devices/<uid>``
    for its type, then ``GET /api/v1/device-types/<id>`` for the metric definitions (a token with the read scope)."""
    context = ssl.create_default_context(cafile=ca_file) if base_url.startswith("https") else None
    api = base_url.rstrip("/") + "/api/v1"
    found = _get(f"{api}/devices/{quote(device, safe='')}", token, timeout, context, what=f"device {device}")
    type_id = found.get("device_type")
    device_type = _get(f"{api}/device-types/{type_id}", token, timeout, context, what=f"device type {type_id}")
    for definition in device_type.get("metrics") or []:
        if definition.get("key") == metric:
            return definition.get("min_value"), definition.get("max_value")
    raise PlatformError(f"device type {device_type.get('name', type_id)!r} in Fieldwatch defines no metric {metric!r}")


def _get(url: str, token: str, timeout: float, context, *, what: str) -> dict:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": "fieldwatch-agent"}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            document = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise PlatformError(f"Fieldwatch has no {what} this token may see (404)") from None
        if exc.code in (401, 403):
            reason = "it takes a personal API token with the read scope"
            raise PlatformError(f"Fieldwatch refused the token ({exc.code}): {reason}") from None
        raise PlatformError(f"GET {url} answered {exc.code}") from None
    except (OSError, urllib.error.URLError) as exc:
        raise PlatformError(f"cannot reach Fieldwatch at {url}: {exc}") from None
    except ValueError:
        raise PlatformError(f"GET {url} did not answer JSON") from None
    if not isinstance(document, dict):
        raise PlatformError(f"GET {url} answered an unexpected document")
    return document
