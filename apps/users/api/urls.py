from django.urls import path

from apps.users.api.views import (
    ApiTokenListCreateView,
    ApiTokenRevokeView,
    OrganizationApiTokenListView,
    OrganizationApiTokenRevokeView,
)

urlpatterns = [
    path("tokens", ApiTokenListCreateView.as_view(), name="api-token-list"),
    path("tokens/<int:pk>", ApiTokenRevokeView.as_view(), name="api-token-detail"),
    path("organization/tokens", OrganizationApiTokenListView.as_view(), name="organization-token-list"),
    path("organization/tokens/<int:pk>", OrganizationApiTokenRevokeView.as_view(), name="organization-token-detail"),
]
