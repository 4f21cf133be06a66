from django.urls import path

from apps.telemetry.api.query_views import DeviceLatestView, SeriesQueryView

urlpatterns = [
    path("series", SeriesQueryView.as_view(), name="series-query"),
    path("devices/<str:uid>/latest", DeviceLatestView.as_view(), name="device-latest"),
]
