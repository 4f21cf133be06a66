from django.urls import path

from apps.users.api.views import ApiTokenListCreateView, ApiTokenRevokeView

urlpatterns = [
    path("tokens", ApiTokenListCreateView.as_view(), name="api-token-list"),
    path("tokens/<int:pk>", ApiTokenRevokeView.as_view(), name="api-token-detail"),
]
