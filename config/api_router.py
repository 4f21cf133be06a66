"""The versioned REST API under /api/v1/: each app's ``api/urls.py``, included here in dependency order.

Each app routes its own views (a DRF router for its viewsets, plain paths for the rest); there is no shared router.
``api-root`` answers an authenticated probe of /api/v1/ and lists nothing: the OpenAPI document at /api/schema is
the index of the endpoints.
"""

from django.urls import include, path
from rest_framework.routers import APIRootView

app_name = "api"
urlpatterns = [
    path("", APIRootView.as_view(api_root_dict={}), name="api-root"),
    path("", include("apps.users.api.urls")),
    path("", include("apps.devices.api.urls")),
    path("", include("apps.telemetry.api.urls")),
    path("", include("apps.alerts.api.urls")),
]
