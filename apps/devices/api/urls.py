from django.urls import path

from apps.devices.api.views import ApiKeyRevokeView, ApiKeyRotateView, GatewayKeyIssueView

urlpatterns = [
    path("gateways/<str:uid>/keys", GatewayKeyIssueView.as_view(), name="gateway-key-issue"),
    path("api-keys/<str:prefix>/rotate", ApiKeyRotateView.as_view(), name="api-key-rotate"),
    path("api-keys/<str:prefix>/revoke", ApiKeyRevokeView.as_view(), name="api-key-revoke"),
]
