"""Derived metrics of one device: ``/api/v1/devices/<uid>/energy``, ``/volume`` and ``/statistics``.

Shapes follow the series API: ``{"start", "end", "interval", "series": [{"device", "metric", "unit", "columns",
"points"}]}`` with epoch-millisecond timestamps, plus a ``total`` per series. Views validate the parameters, call one
selector of ``apps.telemetry.selectors`` (which scopes the device to the user) and answer.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.telemetry.api.derived_serializers import DerivedBucketsSerializer, DerivedStatisticsSerializer
from apps.telemetry.derived import IntervalNeedsRaw
from apps.telemetry.selectors import (
    DeviceNotFound,
    MetricNotFound,
    MetricUnsuitable,
    device_energy_for_user,
    device_statistics_for_user,
    device_volume_for_user,
)


def _parameters(serializer_class, request) -> dict:
    """The validated query parameters. A refusal maps each parameter to one message (a string, not DRF's list),
    the shape these endpoints have always answered."""
    serializer = serializer_class(data=request.query_params)
    if not serializer.is_valid():
        raise ValidationError({name: messages[0] for name, messages in serializer.errors.items()})
    return serializer.validated_data


def _answer(read, *, field: str, **arguments) -> Response:
    """Call one selector; a device the user may not see is 404, a metric it lacks or of the wrong kind a 400 on
    ``field``."""
    try:
        return Response(read(**arguments))
    except DeviceNotFound:
        raise NotFound("No such device.") from None
    except MetricNotFound as error:
        raise ValidationError({field: f"Device {error.uid!r} has no metric {error.metric!r}."}) from None
    except MetricUnsuitable as error:
        raise ValidationError({field: str(error)}) from None
    except IntervalNeedsRaw as error:
        raise ValidationError({"interval": str(error)}) from None


class DeviceEnergyView(APIView):
    @extend_schema(
        operation_id="device_energy",
        summary="Energy (kWh) and CO2e per interval from a power metric (trapezoidal rule)",
        parameters=[DerivedBucketsSerializer],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, uid):
        parameters = _parameters(DerivedBucketsSerializer, request)
        return _answer(device_energy_for_user, field="metric", user=request.user, uid=uid, **parameters)


class DeviceVolumeView(APIView):
    @extend_schema(
        operation_id="device_volume",
        summary="Consumption per interval from a totalizer metric (counter resets handled)",
        parameters=[DerivedBucketsSerializer],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, uid):
        parameters = _parameters(DerivedBucketsSerializer, request)
        return _answer(device_volume_for_user, field="metric", user=request.user, uid=uid, **parameters)


class DeviceStatisticsView(APIView):
    @extend_schema(
        operation_id="device_statistics",
        summary="avg, min, max, count per metric over a range, plus total energy (power) or volume (totalizer)",
        parameters=[DerivedStatisticsSerializer],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, uid):
        parameters = _parameters(DerivedStatisticsSerializer, request)
        return _answer(device_statistics_for_user, field="metrics", user=request.user, uid=uid, **parameters)
