from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.core import converters  # noqa: F401  (registers <segment:...>: a path segment without NUL)
from apps.devices.api.registry_views import DeviceTypeViewSet, GatewayViewSet, SiteViewSet
from apps.devices.api.views import ApiKeyRevokeView, ApiKeyRotateView, GatewayKeyIssueView

# No trailing slash, like every route of the versioned API. Devices are routed by telemetry (its latest values).
router = SimpleRouter(trailing_slash=False)
router.register("sites", SiteViewSet, basename="site")
router.register("device-types", DeviceTypeViewSet, basename="device-type")
router.register("gateways", GatewayViewSet, basename="gateway")

urlpatterns = [
    path("gateways/<segment:uid>/keys", GatewayKeyIssueView.as_view(), name="gateway-key-issue"),
    path("api-keys/<segment:prefix>/rotate", ApiKeyRotateView.as_view(), name="api-key-rotate"),
    path("api-keys/<segment:prefix>/revoke", ApiKeyRevokeView.as_view(), name="api-key-revoke"),
    *router.urls,
]
