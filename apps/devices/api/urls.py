from django.urls import path

from apps.core import converters  # noqa: F401  (registers <segment:...>: a path segment without NUL)
from apps.devices.api.views import ApiKeyRevokeView, ApiKeyRotateView, GatewayKeyIssueView

urlpatterns = [
    path("gateways/<segment:uid>/keys", GatewayKeyIssueView.as_view(), name="gateway-key-issue"),
    path("api-keys/<segment:prefix>/rotate", ApiKeyRotateView.as_view(), name="api-key-rotate"),
    path("api-keys/<segment:prefix>/revoke", ApiKeyRevokeView.as_view(), name="api-key-revoke"),
]
