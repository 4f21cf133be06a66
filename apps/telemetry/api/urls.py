from django.urls import path

from apps.telemetry.api.views import IngestView

urlpatterns = [
    path("ingest", IngestView.as_view(), name="ingest"),
]
