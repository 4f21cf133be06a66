"""Personal API tokens: a user lists, creates and revokes their own; an organization admin lists and revokes the
tokens of their organization's members (``/organization/tokens``). Another organization's token is a 404."""

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from apps.users.api.serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenCreateSerializer,
    ApiTokenSerializer,
    OrganizationApiTokenSerializer,
)
from apps.users.models import ApiToken
from apps.users.permissions import IsOrganizationAdmin, TokenScopePermission
from apps.users.selectors import api_token_list_for_organization_admin, api_token_list_for_user
from apps.users.services import ApiTokenRefused, api_token_create, api_token_revoke


class ApiTokenListCreateView(generics.ListAPIView):
    serializer_class = ApiTokenSerializer

    def get_queryset(self):
        return api_token_list_for_user(user=self.request.user)

    @extend_schema(operation_id="api_tokens_list", summary="List your API tokens")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="api_tokens_create",
        summary="Create an API token",
        request=ApiTokenCreateSerializer,
        responses={
            201: ApiTokenCreatedSerializer,
            400: OpenApiResponse(description="Invalid input, or broader or longer-lived than the calling token"),
            403: OpenApiResponse(description="The calling token was itself created by a token"),
        },
        description=(
            "The answer holds the whole token in `token`; it is not stored and cannot be shown again.\n\n"
            "Called with a token (not a session), the new token may not have scopes the calling token lacks nor "
            "expire after it (omitted: the calling token's expiry); it is revoked together with the calling token. "
            "A token created this way cannot create tokens."
        ),
    )
    def post(self, request):
        serializer = ApiTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        parent = request.auth if isinstance(request.auth, ApiToken) else None
        try:
            token, plaintext = api_token_create(user=request.user, parent=parent, **serializer.validated_data)
        except ApiTokenRefused as refusal:
            if refusal.field is None:
                raise exceptions.PermissionDenied(refusal.message) from refusal
            raise serializers.ValidationError({refusal.field: [refusal.message]}) from refusal
        token.token = plaintext
        return Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)


class ApiTokenRevokeView(generics.GenericAPIView):
    serializer_class = ApiTokenSerializer

    @extend_schema(
        operation_id="api_tokens_revoke",
        summary="Revoke one of your API tokens (and the tokens it created)",
        responses={204: None, 404: OpenApiResponse(description="No such token of yours")},
    )
    def delete(self, request, pk: int):
        # Another user's token is simply not in the caller's scope: 404, whether it exists or not.
        token = api_token_list_for_user(user=request.user).filter(pk=pk).first()
        if token is None:
            raise Http404
        api_token_revoke(token=token, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OrganizationApiTokenListView(generics.ListAPIView):
    serializer_class = OrganizationApiTokenSerializer
    permission_classes = [IsAuthenticated, TokenScopePermission, IsOrganizationAdmin]

    def get_queryset(self):
        return api_token_list_for_organization_admin(user=self.request.user)

    @extend_schema(
        operation_id="organization_api_tokens_list",
        summary="List the API tokens of your organization's members (organization admins)",
        responses={200: OrganizationApiTokenSerializer(many=True), 403: OpenApiResponse(description="Not an admin")},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class OrganizationApiTokenRevokeView(generics.GenericAPIView):
    serializer_class = OrganizationApiTokenSerializer
    permission_classes = [IsAuthenticated, TokenScopePermission, IsOrganizationAdmin]

    @extend_schema(
        operation_id="organization_api_tokens_revoke",
        summary="Revoke a member's API token (and the tokens it created)",
        responses={
            204: None,
            403: OpenApiResponse(description="Not an organization admin"),
            404: OpenApiResponse(description="No such token in your organization"),
        },
    )
    def delete(self, request, pk: int):
        token = api_token_list_for_organization_admin(user=request.user).filter(pk=pk).first()
        if token is None:
            raise Http404
        api_token_revoke(token=token, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
