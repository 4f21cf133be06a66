from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.core import converters  # noqa: F401  (registers <segment:...>: a path segment without NUL)
from apps.telemetry.api.dead_letter_views import DeadLetterViewSet, DiscoveredDeviceViewSet
from apps.telemetry.api.derived_views import DeviceEnergyView, DeviceStatisticsView, DeviceVolumeView
from apps.telemetry.api.device_views import DeviceWithLatestViewSet
from apps.telemetry.api.export_views import ExportCreateView, ExportDetailView, ExportDownloadView, ExportRetryView
from apps.telemetry.api.query_views import DeviceLatestView, SeriesQueryView
from apps.telemetry.api.thingsboard import ThingsBoardAttributesView, ThingsBoardTelemetryView
from apps.telemetry.api.views import IngestView

# The device registry (apps/telemetry/api/device_views.py says why it is routed here).
router = SimpleRouter(trailing_slash=False)
router.register("devices", DeviceWithLatestViewSet, basename="device")
router.register("dead-letters", DeadLetterViewSet, basename="dead-letter")
router.register("discovered-devices", DiscoveredDeviceViewSet, basename="discovered-device")

urlpatterns = [
    path("ingest", IngestView.as_view(), name="ingest"),
    path("series", SeriesQueryView.as_view(), name="series-query"),
    path("devices/<segment:uid>/latest", DeviceLatestView.as_view(), name="device-latest"),
    path("devices/<segment:uid>/energy", DeviceEnergyView.as_view(), name="device-energy"),
    path("devices/<segment:uid>/volume", DeviceVolumeView.as_view(), name="device-volume"),
    path("devices/<segment:uid>/statistics", DeviceStatisticsView.as_view(), name="device-statistics"),
    path("exports", ExportCreateView.as_view(), name="export-create"),
    path("exports/<uuid:export_id>", ExportDetailView.as_view(), name="export-detail"),
    path("exports/<uuid:export_id>/download", ExportDownloadView.as_view(), name="export-download"),
    path("exports/<uuid:export_id>/retry", ExportRetryView.as_view(), name="export-retry"),
    # Before ThingsBoard's "<token>/...": a device named "telemetry" is a device, and no token is "devices".
    *router.urls,
    # ThingsBoard's device HTTP API, unchanged (the access token is the path's first segment).
    path("<segment:token>/telemetry", ThingsBoardTelemetryView.as_view(), name="thingsboard-telemetry"),
    path("<segment:token>/attributes", ThingsBoardAttributesView.as_view(), name="thingsboard-attributes"),
]
