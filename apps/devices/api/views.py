"""Manual issue, rotation and revocation of gateway API keys; organization admins only.

Objects outside the caller's sites answer 404 (their existence is not revealed); a user who can see the gateway
but is not an admin gets 403.
"""

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.devices.api.serializers import ApiKeyIssuedSerializer, ApiKeyIssueSerializer, ApiKeySerializer
from apps.devices.key_rotation import KeyNotRotatable, api_key_rotate
from apps.devices.selectors import api_key_list_for_user, gateway_list_for_user, user_manages_api_keys
from apps.devices.services import api_key_issue, api_key_revoke

NOT_FOUND = OpenApiResponse(description="Not among your sites' gateways or keys")
NOT_ADMIN = OpenApiResponse(description="You can see it but are not an organization admin")


def _found(queryset, **lookup):
    obj = queryset.filter(**lookup).first()
    if obj is None:
        raise Http404
    return obj


def _require_admin(user) -> None:
    if not user_manages_api_keys(user=user):
        raise PermissionDenied("Only organization admins manage gateway API keys.")


def _issued(api_key, plaintext: str, code: int = status.HTTP_201_CREATED) -> Response:
    api_key.key = plaintext
    return Response(ApiKeyIssuedSerializer(api_key).data, status=code)


class GatewayKeyIssueView(APIView):
    @extend_schema(
        operation_id="gateway_keys_issue",
        summary="Issue an API key for a gateway",
        request=ApiKeyIssueSerializer,
        responses={201: ApiKeyIssuedSerializer, 403: NOT_ADMIN, 404: NOT_FOUND},
    )
    def post(self, request, uid: str):
        gateway = _found(gateway_list_for_user(user=request.user), uid=uid)
        _require_admin(request.user)
        serializer = ApiKeyIssueSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, plaintext = api_key_issue(gateway=gateway, **serializer.validated_data)
        return _issued(api_key, plaintext)


class ApiKeyRotateView(APIView):
    @extend_schema(
        operation_id="api_keys_rotate",
        summary="Rotate a gateway API key",
        description="Issues a successor (shown once); the old key keeps working for the grace period, then is revoked.",
        request=None,
        responses={
            201: ApiKeyIssuedSerializer,
            403: NOT_ADMIN,
            404: NOT_FOUND,
            409: OpenApiResponse(description="Already rotated, or revoked/expired"),
        },
    )
    def post(self, request, prefix: str):
        api_key = _found(api_key_list_for_user(user=request.user), prefix=prefix)
        _require_admin(request.user)
        try:
            successor, plaintext = api_key_rotate(api_key=api_key)
        except KeyNotRotatable as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return _issued(successor, plaintext)


class ApiKeyRevokeView(APIView):
    @extend_schema(
        operation_id="api_keys_revoke",
        summary="Revoke a gateway API key",
        description="Takes effect on the gateway's next request: every ingest request reads the key row.",
        request=None,
        responses={200: ApiKeySerializer, 403: NOT_ADMIN, 404: NOT_FOUND},
    )
    def post(self, request, prefix: str):
        api_key = _found(api_key_list_for_user(user=request.user), prefix=prefix)
        _require_admin(request.user)
        api_key_revoke(api_key=api_key)
        return Response(ApiKeySerializer(api_key).data)
