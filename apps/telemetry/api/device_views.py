"""``/api/v1/devices``: the devices app's registry viewset with each device's latest values, which are telemetry's.

Routed here rather than by the devices app because the latest values live above it (``core <- users <- devices <-
telemetry``); everything else (scope, filters, writes, import, export) is ``apps.devices.api.registry_views``.
"""

from drf_spectacular.utils import extend_schema_field, extend_schema_view
from rest_framework import serializers

from apps.devices.api.registry_serializers import DeviceSerializer
from apps.devices.api.registry_views import DeviceViewSet, device_list_schema
from apps.telemetry.api.query_serializers import LatestValueSerializer
from apps.telemetry.selectors import latest_values_for_devices


class DeviceWithLatestSerializer(DeviceSerializer):
    """A device with the latest value of each of its metrics, as ``GET /devices/<uid>/latest`` lists them."""

    latest = serializers.SerializerMethodField()

    class Meta(DeviceSerializer.Meta):
        fields = (*DeviceSerializer.Meta.fields, "latest")

    @extend_schema_field(LatestValueSerializer(many=True))
    def get_latest(self, device) -> list:
        latest = getattr(device, "latest_values", None)
        if latest is None:  # a single device (retrieve, create, change): one statement for it
            latest = latest_values_for_devices([device])[device.id]
        return latest


@extend_schema_view(list=device_list_schema(DeviceWithLatestSerializer))
class DeviceWithLatestViewSet(DeviceViewSet):
    serializer_class = DeviceWithLatestSerializer

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        if page is not None:
            latest = latest_values_for_devices(page)  # one statement for the whole page
            for device in page:
                device.latest_values = latest[device.id]
        return page
