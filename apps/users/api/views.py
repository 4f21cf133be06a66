"""Personal API tokens: a user lists, creates and revokes their own, never anyone else's."""

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response

from apps.users.api.serializers import ApiTokenCreatedSerializer, ApiTokenCreateSerializer, ApiTokenSerializer
from apps.users.selectors import api_token_list_for_user
from apps.users.services import api_token_create, api_token_revoke


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
        responses={201: ApiTokenCreatedSerializer},
        description="The answer holds the whole token in `token`; it is not stored and cannot be shown again.",
    )
    def post(self, request):
        serializer = ApiTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, plaintext = api_token_create(user=request.user, **serializer.validated_data)
        token.token = plaintext
        return Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)


class ApiTokenRevokeView(generics.GenericAPIView):
    serializer_class = ApiTokenSerializer

    @extend_schema(
        operation_id="api_tokens_revoke",
        summary="Revoke one of your API tokens",
        responses={204: None, 404: OpenApiResponse(description="No such token of yours")},
    )
    def delete(self, request, pk: int):
        # Another user's token is simply not in the caller's scope: 404, whether it exists or not.
        token = api_token_list_for_user(user=request.user).filter(pk=pk).first()
        if token is None:
            raise Http404
        api_token_revoke(token=token, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
