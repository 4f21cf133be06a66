"""The query API: ``GET /api/v1/series`` and ``GET /api/v1/devices/<uid>/latest``.

Views parse parameters, call one selector and shape the HTTP answer (status, format, caching headers); the reads
and their permission scoping live in ``apps.telemetry.selectors``.
"""

from django.http import HttpResponse, HttpResponseNotModified, StreamingHttpResponse
from django.utils.cache import patch_vary_headers
from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api.renderers import FastJSONRenderer, JSONErrorsMixin
from apps.telemetry.api.query_serializers import (
    DeviceLatestSerializer,
    SeriesQuerySerializer,
    SeriesResponseSerializer,
    TooManyRowsSerializer,
)
from apps.telemetry.api.renderers import (
    MESSAGEPACK_RENDERERS,
    SERIES_COLUMNS_MEDIA_TYPE,
    SERIES_ENCODERS,
    CSVRenderer,
    SeriesColumnsRenderer,
    csv_rows,
)
from apps.telemetry.queries import CACHE_TTL_SECONDS, TooManyRows
from apps.telemetry.selectors import (
    DeviceNotFound,
    MetricNotFound,
    latest_values_for_device,
    series_body,
    series_data,
    series_plan_for_user,
)

NOT_FOUND = "No such device among the devices you may see."

SERIES_DESCRIPTION = f"""
Readings or rollup aggregates of up to 50 series over `[start, end)`, in one response.

**Interval.** `raw` returns readings (`columns: ["ts", "value"]`). `1m`, `5m`, `1h`, `1d` return one point per
UTC bucket whose start lies in the range (`columns: ["ts", *agg]`, `ts` = bucket start). With `interval=1d` and a
`tz` other than UTC, days are local calendar days merged from `1h` rollups (23 or 25 hours on DST changes).
`auto` picks the finest of raw/1m/5m/1h/1d giving at most `max_points` points per series (raw only when every
series has at most `max_points` readings in the range; rollup resolutions past their retention are skipped).

**Aggregates.** `avg = sum / count`; `stddev` is the *sample* standard deviation (n - 1; null for one reading);
`first` / `last` are the earliest / latest reading of the bucket. Rollups cover closed buckets only, so the newest
minutes of a range ending now appear once the rollup job has run.

**Formats.** JSON by default; `Accept: application/msgpack` (or `application/x-msgpack`) returns the same
structure in MessagePack; `Accept: {SERIES_COLUMNS_MEDIA_TYPE}` (or `format=columns`) returns
the columnar layout: per series a base timestamp, int32 deltas and one little-endian float32 or float64 column per
aggregate, float32 only where the metric's declared `precision` survives it (`types` says which); `format=csv` (or
`Accept: text/csv`) streams `device,metric,ts,<columns>` with ISO-8601 `ts` in `tz`.

**Caching.** A range that ended over an hour ago answers with an `ETag` and `Cache-Control: private,
max-age=3600` (send `If-None-Match` for a `304`) and is cached server-side for an hour; other ranges are
`Cache-Control: no-store`. The tag changes when the parameters or the stored history under the range change.
"""


def _series_example():
    return {
        "start": 1774738800000,
        "end": 1774825200000,
        "interval": "1h",
        "series": [
            {
                "device": "hp-a-001",
                "metric": "supply_temp",
                "unit": "°C",
                "columns": ["ts", "avg", "max"],
                "points": [[1774738800000, 41.2, 43.0], [1774742400000, 40.8, 42.1]],
            }
        ],
    }


class SeriesQueryView(JSONErrorsMixin, APIView):
    """Series data for charts and analysis."""

    renderer_classes = [FastJSONRenderer, *MESSAGEPACK_RENDERERS, SeriesColumnsRenderer, CSVRenderer]

    @extend_schema(
        operation_id="series_query",
        summary="Query series",
        description=SERIES_DESCRIPTION,
        parameters=[
            SeriesQuerySerializer,
            OpenApiParameter(
                "format", OpenApiTypes.STR, enum=["json", "msgpack", "columns", "csv"], description="Override"
            ),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(
                SeriesResponseSerializer, examples=[OpenApiExample("hourly", value=_series_example())]
            ),
            (200, "application/msgpack"): OpenApiResponse(OpenApiTypes.BINARY, description="Same, MessagePack"),
            (200, SERIES_COLUMNS_MEDIA_TYPE): OpenApiResponse(
                OpenApiTypes.BINARY, description="The columnar layout, MessagePack (docs/series-layout.md)"
            ),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="device,metric,ts,<columns>"),
            304: OpenApiResponse(description="`If-None-Match` matched the ETag of a historical range"),
            400: OpenApiResponse(
                description="Invalid parameter (interval, agg, range, tz, over 50 series) or a metric the device "
                "does not have; the body names the parameter"
            ),
            404: OpenApiResponse(description="A device that does not exist or that you may not see"),
            413: OpenApiResponse(TooManyRowsSerializer, description="Raw request over the row bound, with options"),
        },
    )
    def get(self, request):
        serializer = SeriesQuerySerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        query = serializer.validated_data
        try:
            plan = series_plan_for_user(user=request.user, query=query)
        except DeviceNotFound:
            raise NotFound(NOT_FOUND) from None
        except MetricNotFound as error:
            field = "series" if "series" in request.query_params else "metrics"
            raise ValidationError({field: [f"Device {error.uid!r} has no metric {error.metric!r}."]}) from None

        renderer = request.accepted_renderer
        # The tag is the answer's version (parameters and the data's generation), known before any data is read.
        etag = f'"{plan.version[:40]}-{renderer.format}"' if plan.version else None
        try:
            if etag and etag in parse_etags(request.headers.get("If-None-Match", "")):
                response = HttpResponseNotModified()
            elif renderer.format == CSVRenderer.format:
                rows = csv_rows(series_data(plan=plan).points_payload(), tz=query.tz)
                response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
                response["Content-Disposition"] = 'inline; filename="series.csv"'
            else:
                body = series_body(plan=plan, encoding=renderer.format, encode=SERIES_ENCODERS[renderer.format])
                response = HttpResponse(body, content_type=renderer.media_type)
        except TooManyRows as error:
            return Response(error.as_dict(), status=413, headers={"Cache-Control": "no-store"})
        if etag:
            response["ETag"] = etag
            response["Cache-Control"] = f"private, max-age={CACHE_TTL_SECONDS}"
        else:
            response["Cache-Control"] = "no-store"
        patch_vary_headers(response, ["Accept"])
        return response


class DeviceLatestView(JSONErrorsMixin, APIView):
    """The current value of every metric of a device."""

    renderer_classes = [FastJSONRenderer, *MESSAGEPACK_RENDERERS]

    @extend_schema(
        operation_id="device_latest_values",
        summary="Latest values of a device",
        description="The most recent reading of each metric the device has reported, with its unit and name.",
        responses={
            200: DeviceLatestSerializer,
            404: OpenApiResponse(description="A device that does not exist or that you may not see"),
        },
    )
    def get(self, request, uid: str):
        try:
            data = latest_values_for_device(user=request.user, uid=uid)
        except DeviceNotFound:
            raise NotFound(NOT_FOUND) from None
        return Response(data, headers={"Cache-Control": "no-store"})
