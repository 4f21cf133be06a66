"""The versioned REST API: every app registers its viewsets on one router under /api/v1/."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

router = DefaultRouter(trailing_slash=False)

app_name = "api"
urlpatterns = [
    path("", include("apps.telemetry.api.urls")),
    path("", include("apps.telemetry.api.query_urls")),
    path("", include("apps.telemetry.api.export_urls")),
    path("", include("apps.alerts.api.urls")),
    path("", include("apps.users.api.urls")),
    path("", include("apps.devices.api.urls")),
    path("", include(router.urls)),
]
