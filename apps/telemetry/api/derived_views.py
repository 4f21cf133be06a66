"""Derived metrics of one device: ``/api/v1/devices/<uid>/energy``, ``/volume`` and ``/statistics``.

Shapes follow the series API: ``{"start", "end", "interval", "series": [{"device", "metric", "unit", "columns",
"points"}]}`` with epoch-millisecond timestamps, plus a ``total`` per series.
"""

import datetime
import zoneinfo

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.time import epoch_ms
from apps.devices.choices import MetricKind
from apps.devices.models import MetricDefinition
from apps.devices.selectors import device_get_for_user
from apps.telemetry.api.export_serializers import parse_instant
from apps.telemetry.derived import (
    DERIVED_INTERVALS,
    POWER_UNITS,
    energy_buckets,
    statistics_compute,
    volume_buckets,
)
from apps.telemetry.models import Series

MAX_BUCKETS = 10_000
DEFAULT_RANGE = datetime.timedelta(hours=24)

RANGE_PARAMETERS = [
    OpenApiParameter("start", OpenApiTypes.STR, description="Epoch ms or ISO-8601, inclusive (default: end - 24 h)"),
    OpenApiParameter("end", OpenApiTypes.STR, description="Epoch ms or ISO-8601, exclusive (default: now)"),
]
BUCKET_PARAMETERS = [
    *RANGE_PARAMETERS,
    OpenApiParameter("metric", OpenApiTypes.STR, required=True),
    OpenApiParameter("interval", OpenApiTypes.STR, enum=list(DERIVED_INTERVALS), description="Default 1h"),
    OpenApiParameter("tz", OpenApiTypes.STR, description="IANA zone for 1d buckets (default UTC)"),
]


def _range(request) -> tuple[datetime.datetime, datetime.datetime]:
    params = request.query_params
    end = parse_instant(params["end"], field="end") if params.get("end") else timezone.now()
    start = parse_instant(params["start"], field="start") if params.get("start") else end - DEFAULT_RANGE
    if start >= end:
        raise ValidationError({"end": "end must be after start."})
    return start, end


def _buckets(request, start, end) -> tuple[str, str]:
    params = request.query_params
    interval = params.get("interval", "1h")
    if interval not in DERIVED_INTERVALS:
        raise ValidationError({"interval": f"Use one of {', '.join(DERIVED_INTERVALS)}."})
    count = (end - start) / DERIVED_INTERVALS[interval]
    if count > MAX_BUCKETS:
        raise ValidationError(
            {"interval": f"{int(count)} buckets of {interval}; at most {MAX_BUCKETS}: choose a coarser interval."}
        )
    tz = params.get("tz", "UTC")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError({"tz": f"{tz!r} is not an IANA time zone."}) from None
    return interval, tz


def _device(request, uid):
    device = device_get_for_user(user=request.user, uid=uid)
    if device is None:
        raise NotFound("No such device.")
    return device


def _metric(device, key: str) -> tuple[int | None, MetricDefinition | None]:
    """The series id (None when the device never reported the metric) and its definition."""
    definition = MetricDefinition.objects.filter(device_type_id=device.device_type_id, key=key).first()
    series_id = Series.objects.filter(device=device, metric_key=key).values_list("id", flat=True).first()
    if definition is None and series_id is None:
        raise ValidationError({"metric": f"Device {device.uid!r} has no metric {key!r}."})
    return series_id, definition


def _required_metric(request) -> str:
    key = request.query_params.get("metric", "")
    if not key:
        raise ValidationError({"metric": "Give the metric: ?metric=<key>."})
    return key


class DeviceEnergyView(APIView):
    @extend_schema(
        operation_id="device_energy",
        summary="Energy (kWh) and CO2e per interval from a power metric (trapezoidal rule)",
        parameters=BUCKET_PARAMETERS,
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, uid):
        device = _device(request, uid)
        key = _required_metric(request)
        start, end = _range(request)
        interval, tz = _buckets(request, start, end)
        series_id, definition = _metric(device, key)
        unit = definition.unit if definition else ""
        if unit not in POWER_UNITS:
            raise ValidationError(
                {"metric": f"{key!r} is in {unit or 'no unit'!r}; energy needs a power metric in W, kW or MW."}
            )
        factor = float(device.site.emission_factor_kg_per_kwh)
        result = (
            energy_buckets(
                series_id=series_id, unit_factor=POWER_UNITS[unit], start=start, end=end, interval=interval, tz=tz
            )
            if series_id is not None
            else None
        )
        points = [[epoch_ms(bucket), kwh, kwh * factor] for bucket, kwh in (result.points if result else [])]
        total = result.total if result else 0.0
        return Response(
            {
                "start": epoch_ms(start),
                "end": epoch_ms(end),
                "interval": interval,
                "tz": tz if interval == "1d" else "UTC",
                "emission_factor_kg_per_kwh": factor,
                "series": [
                    {
                        "device": device.uid,
                        "metric": key,
                        "unit": "kWh",
                        "source_unit": unit,
                        "columns": ["ts", "energy_kwh", "co2e_kg"],
                        "points": points,
                        "total": {"energy_kwh": total, "co2e_kg": total * factor},
                    }
                ],
            }
        )


class DeviceVolumeView(APIView):
    @extend_schema(
        operation_id="device_volume",
        summary="Consumption per interval from a totalizer metric (counter resets handled)",
        parameters=BUCKET_PARAMETERS,
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, uid):
        device = _device(request, uid)
        key = _required_metric(request)
        start, end = _range(request)
        interval, tz = _buckets(request, start, end)
        series_id, definition = _metric(device, key)
        if definition is None or definition.kind != MetricKind.TOTALIZER:
            raise ValidationError({"metric": f"{key!r} is not a totalizer metric."})
        result = (
            volume_buckets(series_id=series_id, start=start, end=end, interval=interval, tz=tz)
            if series_id is not None
            else None
        )
        return Response(
            {
                "start": epoch_ms(start),
                "end": epoch_ms(end),
                "interval": interval,
                "tz": tz if interval == "1d" else "UTC",
                "series": [
                    {
                        "device": device.uid,
                        "metric": key,
                        "unit": definition.unit,
                        "columns": ["ts", "volume"],
                        "points": [[epoch_ms(bucket), volume] for bucket, volume in (result.points if result else [])],
                        "total": {"volume": result.total if result else 0.0},
                    }
                ],
            }
        )


class DeviceStatisticsView(APIView):
    @extend_schema(
        operation_id="device_statistics",
        summary="avg, min, max, count per metric over a range, plus total energy (power) or volume (totalizer)",
        parameters=[*RANGE_PARAMETERS, OpenApiParameter("metrics", OpenApiTypes.STR, required=True)],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, uid):
        device = _device(request, uid)
        keys = list(dict.fromkeys(key for key in request.query_params.get("metrics", "").split(",") if key))
        if not keys:
            raise ValidationError({"metrics": "Give the metrics: ?metrics=a,b."})
        start, end = _range(request)
        definitions = {
            definition.key: definition
            for definition in MetricDefinition.objects.filter(device_type_id=device.device_type_id, key__in=keys)
        }
        series_ids = dict(Series.objects.filter(device=device, metric_key__in=keys).values_list("metric_key", "id"))
        unknown = [key for key in keys if key not in definitions and key not in series_ids]
        if unknown:
            raise ValidationError({"metrics": f"Device {device.uid!r} has no metric {unknown[0]!r}."})
        stats = statistics_compute(series_ids=list(series_ids.values()), start=start, end=end) if series_ids else {}
        factor = float(device.site.emission_factor_kg_per_kwh)
        series = []
        for key in keys:
            definition, series_id = definitions.get(key), series_ids.get(key)
            unit = definition.unit if definition else ""
            row = stats.get(series_id, {"avg": None, "min": None, "max": None, "count": 0})
            item = {"device": device.uid, "metric": key, "unit": unit, **row}
            if unit in POWER_UNITS:
                energy = (
                    energy_buckets(
                        series_id=series_id, unit_factor=POWER_UNITS[unit], start=start, end=end, interval="1d"
                    ).total
                    if series_id is not None
                    else 0.0
                )
                item.update(energy_kwh=energy, co2e_kg=energy * factor)
            if definition is not None and definition.kind == MetricKind.TOTALIZER:
                item["volume"] = (
                    volume_buckets(series_id=series_id, start=start, end=end, interval="1d").total
                    if series_id is not None
                    else 0.0
                )
            series.append(item)
        return Response({"start": epoch_ms(start), "end": epoch_ms(end), "series": series})
