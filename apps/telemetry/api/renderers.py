"""MessagePack and CSV renderings of query responses; JSON, and errors always JSON: ``apps.core.api.renderers``."""

import csv
import io
import zoneinfo
from collections.abc import Iterator

import msgpack
from rest_framework.renderers import BaseRenderer

from apps.core.time import from_epoch_ms


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
