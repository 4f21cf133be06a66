from django.urls import path

from apps.telemetry.api.derived_views import DeviceEnergyView, DeviceStatisticsView, DeviceVolumeView
from apps.telemetry.api.export_views import ExportCreateView, ExportDetailView, ExportDownloadView, ExportRetryView

urlpatterns = [
    path("exports", ExportCreateView.as_view(), name="export-create"),
    path("exports/<uuid:export_id>", ExportDetailView.as_view(), name="export-detail"),
    path("exports/<uuid:export_id>/download", ExportDownloadView.as_view(), name="export-download"),
    path("exports/<uuid:export_id>/retry", ExportRetryView.as_view(), name="export-retry"),
    path("devices/<str:uid>/energy", DeviceEnergyView.as_view(), name="device-energy"),
    path("devices/<str:uid>/volume", DeviceVolumeView.as_view(), name="device-volume"),
    path("devices/<str:uid>/statistics", DeviceStatisticsView.as_view(), name="device-statistics"),
]
