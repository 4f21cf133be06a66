"""MessagePack, the columnar layout and CSV renderings of query responses; JSON, and errors always JSON:
``apps.core.api.renderers``. ``SERIES_ENCODERS`` turns a series answer (``queries.SeriesData``) into the body of
each format the series view negotiates."""

import array
import csv
import io
import itertools
import math
import operator
import sys
import zoneinfo
from collections.abc import Callable, Iterator

import msgpack
from rest_framework.renderers import BaseRenderer

from apps.core.api.renderers import FastJSONRenderer
from apps.core.time import from_epoch_ms
from apps.telemetry.queries import SeriesColumns, SeriesData


class MessagePackRenderer(BaseRenderer):
    """The JSON structure as MessagePack: integers and floats travel as binary numbers instead of digits."""

    media_type = "application/msgpack"
    format = "msgpack"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return msgpack.packb(data, use_bin_type=True)


class XMessagePackRenderer(MessagePackRenderer):
    """The same rendering under ``application/x-msgpack``, the unregistered type many clients (the ACE seed's among
    them) still send; the response says the type the client asked for."""

    media_type = "application/x-msgpack"


MESSAGEPACK_RENDERERS = [MessagePackRenderer, XMessagePackRenderer]


def csv_rows(payload: dict, *, tz: str = "UTC") -> Iterator[str]:
    """A series response as CSV lines: ``device,metric,ts,<columns>``, ``ts`` ISO-8601 in ``tz``.

    One line per point and series, yielded a chunk at a time so a long response streams with bounded memory.
    """
    zone = zoneinfo.ZoneInfo(tz)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = payload["series"][0]["columns"] if payload["series"] else ["ts"]
    writer.writerow(["device", "metric", *columns])
    for series in payload["series"]:
        device, metric = series["device"], series["metric"]
        for point in series["points"]:
            moment = from_epoch_ms(point[0], tz=zone)
            writer.writerow([device, metric, moment.isoformat(), *point[1:]])
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


class CSVRenderer(BaseRenderer):
    """Negotiates ``format=csv`` / ``Accept: text/csv``; the series view streams ``csv_rows`` itself, so this
    renders a whole body only for other callers."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return "".join(csv_rows(data)).encode()


# ---------------------------------------------------------------------------------------------------------------------
# The columnar layout (docs/series-layout.md): per series a base timestamp, integer deltas and one binary column of
# numbers per value column, float32 where the metric's declared precision survives it, float64 otherwise
# ---------------------------------------------------------------------------------------------------------------------

SERIES_COLUMNS_MEDIA_TYPE = "application/vnd.fieldwatch.series.v2+msgpack"
SERIES_COLUMNS_LAYOUT = 2
INT32_MAX = 2**31 - 1
_FLOAT32_HALF_ULP = 2.0**-23  # relative: float32's rounding error is at most |v| * 2^-24 below the next power of two
# Aggregates that are whole numbers whatever the metric: they keep 0 decimal places.
_WHOLE_AGGREGATES = {"count"}


def _little_endian(values: array.array) -> bytes:
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def float32_keeps(values: list[float | None], precision: int | None) -> bool:
    """Whether every value of a column, sent as float32, stays within half a unit of the ``precision``-th decimal
    place (so rounding it to that place gives back the float64 value's rounding). Unknown precision: never."""
    if precision is None:
        return False
    finite = [value for value in values if value is not None] if None in values else values
    if not finite:
        return True
    return max(map(abs, finite)) * _FLOAT32_HALF_ULP <= 0.5 * 10.0**-precision


def _column_encode(values: list[float | None], precision: int | None) -> tuple[str, bytes]:
    """A value column as ``(type, little-endian bytes)``; a null (a one-reading bucket's stddev) travels as NaN."""
    kind = "f32" if float32_keeps(values, precision) else "f64"
    if None in values:
        values = [math.nan if value is None else value for value in values]
    return kind, _little_endian(array.array("f" if kind == "f32" else "d", values))


def _series_columns(series: SeriesColumns, columns: list[str]) -> dict:
    ts = series.ts
    deltas = list(map(operator.sub, itertools.islice(ts, 1, None), ts))  # ascending: never negative
    wide = bool(deltas) and max(deltas) > INT32_MAX  # a gap of more than 24.8 days between two readings
    types, blobs = [], []
    for name, values in zip(columns, series.values, strict=True):
        kind, blob = _column_encode(values, 0 if name in _WHOLE_AGGREGATES else series.ref.precision)
        types.append(kind)
        blobs.append(blob)
    return {
        "device": series.ref.device,
        "metric": series.ref.metric,
        "unit": series.ref.unit,
        "precision": series.ref.precision,
        "columns": columns,
        "types": types,
        "count": len(ts),
        "ts_base": ts[0] if ts else 0,
        "ts_delta_type": "f64" if wide else "i32",
        "ts_deltas": _little_endian(array.array("d" if wide else "i", deltas)),
        "values": blobs,
    }


def series_columns_encode(data: SeriesData) -> bytes:
    """A series answer in the columnar layout, as MessagePack."""
    return msgpack.packb(
        {
            "layout": SERIES_COLUMNS_LAYOUT,
            "start": data.start,
            "end": data.end,
            "interval": data.interval,
            "series": [_series_columns(series, data.columns) for series in data.series],
        },
        use_bin_type=True,
    )


class SeriesColumnsRenderer(BaseRenderer):
    """Negotiates the columnar layout for the series view, which encodes its answer itself (``SERIES_ENCODERS``)."""

    media_type = SERIES_COLUMNS_MEDIA_TYPE
    format = "columns"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        if isinstance(data, SeriesData):
            return series_columns_encode(data)
        return msgpack.packb(data, use_bin_type=True)


_json = FastJSONRenderer()

# Renderer format -> how the series view encodes an answer in it (CSV streams instead: ``csv_rows``).
SERIES_ENCODERS: dict[str, Callable[[SeriesData], bytes]] = {
    FastJSONRenderer.format: lambda data: _json.render(data.points_payload()),
    MessagePackRenderer.format: lambda data: msgpack.packb(data.points_payload(), use_bin_type=True),
    SeriesColumnsRenderer.format: series_columns_encode,
}
